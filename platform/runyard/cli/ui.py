"""`runyard ui`: the MLflow UI on runyard's embedded store, with as few processes as MLflow
allows, all of them stopped when the command is.

`mlflow ui` starts, by default, a uvicorn supervisor with 4 workers, MLflow's job runner and
its huey consumers (about 3 GB): machinery for GenAI jobs (scorers, trace rollups) that a
viewer of runs never uses. MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false leaves out the job
runner and consumers, `--workers 1` makes uvicorn serve from one process with no supervisor:
two processes remain, `mlflow server` and the uvicorn it waits on. They run in a process
group of their own, which Ctrl-C or SIGTERM on `runyard ui` ends as a whole.

MLflow >= 3.10's UI opens an experiment on traces or on runs by its "GenAI / Model training"
switch, which the browser remembers (it defaults to GenAI), not by the experiment's kind
tag; since 3.15 a `workflowType=machine_learning` query in the link sets it for that visit.
So the links printed here open each experiment on its runs table, and the page itself (the
`runyard` server app, tracking/ui_app.py) stores that choice in a browser that has none, so
a plain click on an experiment opens its runs too.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from runyard.cli.common import add_tracking
from runyard.errors import EXIT_OK, UserError
from runyard.processes import sigterm_as_interrupt, start_group, stop_group

if TYPE_CHECKING:
    from runyard.cli.main import Commands

VIEWER_ENV = {
    "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",  # no job runner, no huey consumers
    "MLFLOW_DISABLE_TELEMETRY": "true",  # a local viewer reports nothing anywhere
}
RUNS_VIEW = "workflowType=machine_learning"  # MLflow's "Model training" switch, in a link
STOP_GRACE_S = 15.0  # then the group is killed outright


def add_commands(commands: Commands) -> None:
    ui = commands.add(
        "ui", "open the MLflow UI on runyard's tracking store",
        "examples:\n  runyard ui\n  runyard ui --port 5001\n\n"
        "Prints a link per recent experiment that opens on its runs table. Serves the\n"
        "embedded store (.runyard/mlflow.db) with one MLflow server process; Ctrl-C stops it.\n",
        cmd_ui)
    ui.add_argument("--host", default="127.0.0.1",
                    help="address to listen on (default: 127.0.0.1, this machine only)")
    ui.add_argument("--port", type=int, default=5000)
    add_tracking(ui)


def cmd_ui(args: argparse.Namespace) -> int:
    from runyard.tracking.store import artifact_root, is_embedded, resolve_tracking_uri

    uri = resolve_tracking_uri(args.tracking_uri, Path.cwd())
    if not is_embedded(uri):
        raise UserError(f"{uri} is a tracking server already: open it in a browser")
    base = f"http://{args.host}:{args.port}"
    print(f"MLflow UI on {uri}\n  {base}   (Ctrl-C to stop)", flush=True)
    for name, link in experiment_links(uri, base):
        print(f"  {name}: {link}", flush=True)
    # runyard's app: MLflow's, its page opening experiments on their runs (tracking/ui_app.py)
    command = [sys.executable, "-m", "mlflow", "server", "--app-name", "runyard",
               "--backend-store-uri", uri, "--default-artifact-root", artifact_root(uri),
               "--host", args.host, "--port", str(args.port), "--workers", "1"]
    # Ends with `runyard ui` however it ends (a SIGKILL too): no orphan server keeps the port.
    server = start_group(command, end_with_parent=True, env={**os.environ, **VIEWER_ENV})
    try:
        with sigterm_as_interrupt():  # stopped like Ctrl-C: the group goes too
            return server.wait()
    except KeyboardInterrupt:
        return EXIT_OK
    finally:
        stop_group(server.pid, STOP_GRACE_S, leader=server)


def experiment_links(uri: str, base: str, limit: int = 5) -> list[tuple[str, str]]:
    """(name, link to its runs table) of runyard's experiments updated last; none if the
    store does not exist yet (the server creates it)."""
    from runyard.tracking.store import client_for
    from runyard.tracking.tags import EXPERIMENT_KIND, MODEL_TRAINING

    if not Path(uri.removeprefix("sqlite:///")).exists():
        return []
    experiments = client_for(uri).search_experiments(
        max_results=limit, order_by=["last_update_time DESC"],
        filter_string=f"tags.`{EXPERIMENT_KIND}` = '{MODEL_TRAINING}'")
    return [(e.name, f"{base}/#/experiments/{e.experiment_id}/runs?{RUNS_VIEW}")
            for e in experiments]
