"""The MLflow UI as a researcher meets it after a sweep, in a real browser (Playwright driving
Debian's chromium) on a real `runyard ui` over a real store: the link it prints opens the
experiment on its runs table, the sweep expands to its trials, "Group by" pools a config's
seeds, a trial's metric and system metric charts render, and the sweep's plots/ artifacts
open. Screenshots: the test's
tmp_path/screenshots."""

from __future__ import annotations

import signal
import socket
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import psutil
import pytest
from mlflow.tracking import MlflowClient
from playwright.sync_api import expect, sync_playwright

from runyard_testing import CTRL_C_AS_AT_A_TERMINAL, RUNYARD, run_cli, tracking_uri
from runyard.tracking.plots import OBJECTIVE_FILE
from runyard.tracking.tags import EXPERIMENT_KIND, MODEL_TRAINING, NOTE

pytestmark = pytest.mark.slow

# Playwright's own browser download is not reachable here: the system's chromium is used
# (`make system-deps` installs Debian's package).
CHROMIUM = Path("/usr/bin/chromium")

SWEEP = """\
name: ui-sweep
workload: toy.quadratic
config: {sleep_s: 0.2}
stop: {iterations: 6}
checkpoint: {every: 0}
tracking: {experiment: ui-sweep, system_metrics: 0.5}
sweep:
  samples: 2
  seeds: 2
  metric: score
  max_concurrent: 2
  space:
    config.x: {uniform: [0.0, 1.0]}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class UiProcess:
    """`runyard ui` in the background, its output collected line by line."""

    def __init__(self, workdir: Path, port: int):
        self.port = port
        self.process = subprocess.Popen([*CTRL_C_AS_AT_A_TERMINAL, str(RUNYARD), "ui", "--port", str(port)],
                                        cwd=workdir,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        text=True)
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def link_of(self, experiment: str) -> str:
        return next(line.split(": ", 1)[1] for line in self.lines
                    if line.strip().startswith(f"{experiment}: "))

    def wait_until_serving(self, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=5):
                    return
            except OSError:
                assert self.process.poll() is None, "\n".join(self.lines)
                assert time.monotonic() < deadline, "the MLflow UI did not come up"
                time.sleep(0.5)


def click_experiment_in_a_fresh_browser(browser, home: str, experiment: str, run_name: str,
                                        screenshot: Path, **context_options) -> None:
    """Open the UI's experiment list in a new browser context (no local storage), click the
    experiment's link, and check that its runs table is what opens."""
    context = browser.new_context(viewport={"width": 1400, "height": 900}, **context_options)
    page = context.new_page()
    page.set_default_timeout(30_000)
    page.goto(home + "#/experiments")
    # The experiment's name, a link to it, in the list (the table or the side list).
    page.locator('a[href^="#/experiments/"]').get_by_text(experiment, exact=True).first.click()
    run_row = page.get_by_role("row").filter(has=page.get_by_role("link", name=run_name, exact=True))
    expect(run_row).to_be_visible()
    assert "/runs" in page.url and "traces" not in page.url and "overview" not in page.url, page.url
    page.screenshot(path=screenshot)
    context.close()


def test_the_ui_opens_a_sweep_on_its_runs_and_shows_trials_charts_and_plots(workdir: Path):
    assert CHROMIUM.exists(), "the browser test needs Debian's chromium: make system-deps"
    (workdir / "sweep.yaml").write_text(SWEEP)
    result = run_cli("run", "sweep.yaml", "--num-cpus", "2", cwd=workdir)
    assert result.returncode == 0, result.stdout + result.stderr

    client = MlflowClient(tracking_uri(workdir))
    experiment = client.get_experiment_by_name("ui-sweep")
    assert experiment.tags[EXPERIMENT_KIND] == MODEL_TRAINING
    runs = client.search_runs([experiment.experiment_id])
    parent = next(r for r in runs if r.data.tags["runyard.kind"] == "sweep")
    children = sorted((r for r in runs if r.data.tags["runyard.kind"] == "trial"),
                      key=lambda r: r.data.tags["runyard.trial_id"])
    assert len(children) == 4
    note = parent.data.tags[NOTE]
    best = parent.data.tags["runyard.best_trial_id"]
    for words in ("Random search", "`config.x` (uniform [0, 1])", "maximize `score`", best,
                  parent.data.tags["runyard.sweep_id"]):
        assert words in note, note
    # What "Group by" offers: the seed (param and tag), each hyperparameter, the config.
    assert {"seed", "config.x"} <= set(children[0].data.params)
    assert children[0].data.tags["runyard.config"] == children[0].info.run_name.rsplit(",seed=")[0]
    assert len({child.data.tags["runyard.config"] for child in children}) == 2

    shots = workdir / "screenshots"
    ui = UiProcess(workdir, free_port())
    try:
        ui.wait_until_serving()
        base = f"http://127.0.0.1:{ui.port}/#/experiments/{experiment.experiment_id}"
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM),
                                                 args=["--no-sandbox"])
            expect.set_options(timeout=30_000)
            # A fresh browser profile, clicking the experiment in the UI's list, as a person
            # who never used MLflow before does: it opens on the runs, not on GenAI traces.
            click_experiment_in_a_fresh_browser(browser, f"http://127.0.0.1:{ui.port}/",
                                                "ui-sweep", parent.info.run_name,
                                                shots / "0-clicked-in-a-fresh-browser.png")
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.set_default_timeout(30_000)

            # The link `runyard ui` printed opens the experiment on its runs table.
            page.goto(ui.link_of("ui-sweep"))
            parent_row = page.get_by_role("row").filter(
                has=page.get_by_role("link", name=parent.info.run_name, exact=True))
            expect(parent_row).to_be_visible()
            assert f"/experiments/{experiment.experiment_id}/runs" in page.url
            page.screenshot(path=shots / "1-runs-table.png")

            # The sweep's row expands to its four trials.
            parent_row.locator('button[data-component-id*="runnamecellrenderer"]').click()
            for child in children:
                expect(page.get_by_role("link", name=child.info.run_name, exact=True)).to_be_visible()
            page.screenshot(path=shots / "2-sweep-expanded.png")

            # "Group by" runyard.config: one group per config, holding its two seeds.
            page.get_by_role("button", name="Group by").click()
            page.get_by_role("menuitemcheckbox", name="runyard.config").click()
            page.keyboard.press("Escape")
            configs = {child.data.tags["runyard.config"] for child in children}
            for config in configs:
                group = page.get_by_role("row").filter(has_text=f"Group: {config}")
                expect(group).to_be_visible()
                cells = [text.strip() for text in group.inner_text().split("\n")]
                assert cells[cells.index(f"Group: {config}") + 1] == "2", cells  # its runs
            expect(page.get_by_role("row").filter(has_text="Group: ")).to_have_count(len(configs))
            page.screenshot(path=shots / "3-grouped-by-config.png")

            # A trial's metric chart renders, and its system metrics have charts too.
            page.get_by_role("link", name=children[0].info.run_name, exact=True).click()
            page.get_by_role("tab", name="Model metrics").click()
            expect(page.locator(".js-plotly-plot").first).to_be_visible()
            expect(page.get_by_text("score", exact=True).first).to_be_visible()
            page.screenshot(path=shots / "4-trial-metrics.png")
            page.get_by_role("tab", name="System metrics").click()
            expect(page.get_by_text("cpu_utilization_percentage").first).to_be_visible()
            expect(page.locator(".js-plotly-plot").first).to_be_visible()
            page.screenshot(path=shots / "5-trial-system-metrics.png")

            # The sweep's run page: its description, and its plots/ artifacts open.
            page.goto(f"{base}/runs/{parent.info.run_id}")
            expect(page.get_by_text("Random search").first).to_be_visible()
            page.get_by_role("tab", name="Artifacts").click()
            page.get_by_text("plots", exact=True).click()
            page.get_by_text(OBJECTIVE_FILE, exact=True).click()
            image = page.locator(f'img[src*="{OBJECTIVE_FILE}"], img[src^="blob:"]').first
            expect(image).to_be_visible()
            assert image.evaluate("img => img.naturalWidth") > 300
            page.screenshot(path=shots / "6-sweep-plots.png")
            browser.close()
        started = psutil.Process(ui.process.pid).children(recursive=True)
        ui.process.send_signal(signal.SIGINT)  # Ctrl-C
        assert ui.process.wait(timeout=60) == 0
    finally:
        if ui.process.poll() is None:
            ui.process.kill()
    gone, alive = psutil.wait_procs(started, timeout=10)
    assert not alive, [p.cmdline() for p in alive]


def test_the_tracking_servers_ui_opens_a_clicked_experiment_on_its_runs(workdir: Path,
                                                                        monkeypatch):
    """`runyard tracking serve`'s server (basic-auth, what a cluster runs), in a fresh
    browser that logs in and clicks an experiment."""
    from runyard.tracking.server import serve

    assert CHROMIUM.exists(), "the browser test needs Debian's chromium: make system-deps"
    password = "ui-test-password-1"
    server = serve(f"sqlite:///{workdir / 'server.db'}", str(workdir / "artifacts"),
                   state_dir=workdir / "tracking", username="admin", password=password)
    try:
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
        client = MlflowClient(server.uri)
        experiment_id = client.create_experiment("team-sweep")
        run = client.create_run(experiment_id, run_name="lr=0.01,seed=0")
        client.log_metric(run.info.run_id, "score", 0.5, step=1)
        client.set_terminated(run.info.run_id)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM),
                                                 args=["--no-sandbox"])
            expect.set_options(timeout=30_000)
            click_experiment_in_a_fresh_browser(
                browser, server.uri + "/", "team-sweep", "lr=0.01,seed=0",
                workdir / "screenshots" / "tracking-server-clicked.png",
                http_credentials={"username": "admin", "password": password})
            browser.close()
    finally:
        server.stop()
