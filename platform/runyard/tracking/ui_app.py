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
has no choice stored yet, it stores "machine_learning", before the page's own scripts read
it. A choice the researcher makes later in the UI is theirs and stays. Nothing else changes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

WORKFLOW_KEY = "mlflow.workflowType_v1"
RUNS_FIRST = (
    "<script>try{if(localStorage.getItem(%r)===null)"
    "localStorage.setItem(%r,JSON.stringify('machine_learning'))}catch(e){}</script>"
    % (WORKFLOW_KEY, WORKFLOW_KEY))


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
