"""A tracking server that wants credentials the researcher did not give: one clear line that
names the server and the variables to set, exit 2, no traceback. Against a real basic-auth
MLflow server."""

from __future__ import annotations

from pathlib import Path

import pytest

from runyard_testing import run_cli
from runyard.tracking.server import serve


@pytest.mark.slow
def test_a_server_that_refuses_the_request_gets_one_line_naming_the_variables(workdir: Path):
    server = serve(f"sqlite:///{workdir / 'server.db'}", str(workdir / "artifacts"),
                   state_dir=workdir / "tracking", username="admin", password="right-password-1")
    try:
        for credentials, words in [({}, "needs credentials: set MLFLOW_TRACKING_USERNAME"),
                                   ({"MLFLOW_TRACKING_USERNAME": "admin",
                                     "MLFLOW_TRACKING_PASSWORD": "wrong-password"},
                                    "rejected the credentials in MLFLOW_TRACKING_USERNAME")]:
            result = run_cli("ls", "--tracking-uri", server.uri, cwd=workdir,
                             env={"MLFLOW_TRACKING_USERNAME": "", "MLFLOW_TRACKING_PASSWORD": "",
                                  **credentials})
            assert result.returncode == 2, result.stdout + result.stderr
            assert f"runyard: error: {server.uri} {words}" in result.stderr
            assert "HTTP 401" in result.stderr and "Traceback" not in result.stderr
        # A run opens the store while Tune starts its first trial: refused there, the job
        # stops with the same line, and nothing of it is kept.
        (workdir / "toy.yaml").write_text("name: toy\nworkload: toy.quadratic\n"
                                          "stop: {iterations: 2}\n")
        refused = run_cli("run", "toy.yaml", "--tracking-uri", server.uri, cwd=workdir,
                          env={"MLFLOW_TRACKING_USERNAME": "admin",
                               "MLFLOW_TRACKING_PASSWORD": "wrong-password"})
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert f"runyard: error: {server.uri} rejected the credentials" in refused.stderr
        assert "Traceback" not in refused.stderr
        assert list((workdir / ".runyard").rglob("*.json")) == []  # no ledger, no Tune state
        fine = run_cli("ls", "--tracking-uri", server.uri, cwd=workdir,
                       env={"MLFLOW_TRACKING_USERNAME": "admin",
                            "MLFLOW_TRACKING_PASSWORD": "right-password-1"})
        assert fine.returncode == 0, fine.stdout + fine.stderr
    finally:
        server.stop()
