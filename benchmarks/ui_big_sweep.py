"""How the MLflow UI copes with a big sweep: `runyard ui` over a project whose sweep has
thousands of child runs (make one with `readback.py --trials 5000 --project DIR`), opened in
Debian's chromium through Playwright, as tests/test_ui_browser.py drives it. Timed, from a
fresh browser context each round: the experiment's runs table until the sweep's parent row is
visible, and expanding that row until its first trial's row is visible.

    python benchmarks/ui_big_sweep.py --project DIR [--rounds 3]
"""

from __future__ import annotations

import argparse
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from _machine import CTRL_C_AS_AT_A_TERMINAL, describe

RUNYARD = str(Path(sys.executable).parent / "runyard")
CHROMIUM = "/usr/bin/chromium"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_serving(port: int, ui: subprocess.Popen, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5):
                return
        except OSError:
            if ui.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("runyard ui did not come up")
            time.sleep(0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--project", type=Path, required=True, help="a project with a big sweep")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    from mlflow.tracking import MlflowClient
    from playwright.sync_api import expect, sync_playwright

    client = MlflowClient(f"sqlite:///{args.project / '.runyard' / 'mlflow.db'}")
    parents = client.search_runs([e.experiment_id for e in client.search_experiments()],
                                 filter_string="tags.`runyard.kind` = 'sweep'",
                                 order_by=["attributes.start_time DESC"], max_results=1)
    if not parents:
        raise SystemExit(f"{args.project}: no sweep in its .runyard/mlflow.db")
    parent = parents[0]
    children = parent.data.tags.get("runyard.trials", "?")
    port = free_port()
    ui = subprocess.Popen([*CTRL_C_AS_AT_A_TERMINAL, RUNYARD, "ui", "--port", str(port)], cwd=args.project,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    table_s, expand_s = [], []
    try:
        wait_until_serving(port, ui)
        runs = f"http://127.0.0.1:{port}/#/experiments/{parent.info.experiment_id}/runs"
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            expect.set_options(timeout=120_000)
            for _ in range(args.rounds):
                context = browser.new_context(viewport={"width": 1400, "height": 900})
                page = context.new_page()
                page.set_default_timeout(120_000)
                started = time.perf_counter()
                page.goto(runs)
                row = page.get_by_role("row").filter(
                    has=page.get_by_role("link", name=parent.info.run_name, exact=True))
                expect(row).to_be_visible()
                table_s.append(time.perf_counter() - started)
                started = time.perf_counter()
                row.locator('button[data-component-id*="runnamecellrenderer"]').click()
                expect(page.get_by_role("row").nth(2)).to_be_visible()
                expand_s.append(time.perf_counter() - started)
                context.close()
            browser.close()
    finally:
        ui.send_signal(signal.SIGINT)
        try:
            ui.wait(timeout=60)
        except subprocess.TimeoutExpired:
            ui.kill()
    print(describe())
    print(f"sweep {parent.data.tags.get('runyard.sweep_id')}: {children} trials, "
          f"median of {args.rounds} fresh browser contexts")
    print(f"  runs table until the sweep's row shows   {statistics.median(table_s):6.2f} s  "
          f"({', '.join(f'{s:.2f}' for s in table_s)})")
    print(f"  the sweep's row expanded to its trials    {statistics.median(expand_s):6.2f} s  "
          f"({', '.join(f'{s:.2f}' for s in expand_s)})")


if __name__ == "__main__":
    main()
