"""The MLflow server apps runyard serves its UI with: MLflow's own, opening on runs.

MLflow >= 3.10's UI opens a clicked experiment on its GenAI overview (traces, token usage)
unless the browser remembers the "Model training" choice: the page keeps it in local storage
under `mlflow.workflowType_v1` (a JSON string, default "genai"), and a query in the link
(`workflowType=machine_learning`, since 3.15) sets it only for that visit. A researcher who
opens the team's server in a new browser, and clicks an experiment, lands on traces.

MLflow loads server apps by name from the `mlflow.app` entry-point group (`mlflow server
--app-name NAME`, as basic-auth is loaded). runyard registers two (pyproject.toml):
  runyard             the plain server (`runyard ui`),
  runyard-basic-auth  MLflow's basic-auth app (`runyard tracking serve`, a cluster's server).
Each serves MLflow's own page with one script put first in its <head>: where the browser
has no choice stored yet, it stores "machine_learning" (and leaves the assistant pane shut),
before the page's own scripts read it. A choice the researcher makes later in the UI is
theirs and stays. Nothing else changes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# Local-storage keys of MLflow's page and the values runyard's page stores where the browser
# has none: the "Model training" view, and the assistant pane (an LLM chat that opens by
# itself on a first visit and takes a third of the screen) left closed until asked for.
FIRST_VISIT = {
    "mlflow.workflowType_v1": "machine_learning",
    "mlflow.assistant.fab.autoOpenedOnFirstLoad_v1": True,
    "mlflow.assistant.panelOpen_v1": False,
}
RUNS_FIRST = "<script>try{%s}catch(e){}</script>" % "".join(
    f"if(localStorage.getItem({json.dumps(key)})===null)"
    f"localStorage.setItem({json.dumps(key)},{json.dumps(json.dumps(value))});"
    for key, value in FIRST_VISIT.items())


def create_app() -> Any:
    """The plain MLflow server, its page opening experiments on their runs."""
    from mlflow.server import app
    from mlflow.server.fastapi_app import app as fastapi_app  # serves the Flask app inside

    _open_on_runs(app)
    return fastapi_app


def create_auth_app() -> Any:
    """MLflow's basic-auth server, its page opening experiments on their runs."""
    from mlflow.server import app
    from mlflow.server.auth import create_app as create_basic_auth_app

    _open_on_runs(app)
    return create_basic_auth_app(app)


def _open_on_runs(flask_app: Any) -> None:
    """Serve the UI's page (MLflow's view `serve`, for "/") with RUNS_FIRST in its head."""
    from flask import Response

    page = Path(flask_app.static_folder) / "index.html"
    served = flask_app.view_functions["serve"]

    def serve() -> Any:
        if not page.is_file():
            return served()  # MLflow's own answer for an installation without its page
        html = page.read_text()
        return Response(html.replace("<head>", "<head>" + RUNS_FIRST, 1), mimetype="text/html")

    flask_app.view_functions["serve"] = serve
