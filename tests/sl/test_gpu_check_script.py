"""benchmarks/gpu_check.py works before a GPU is lent: end to end on the CPU at smoke-test
sizes, importing nothing but torch (and runyard's torch-only nets.py, by path)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.py"
RUN = f"""
import runpy, sys
sys.argv = ["gpu_check.py", "--device", "cpu", "--tiny"]
try:
    runpy.run_path({str(SCRIPT)!r}, run_name="__main__")
except SystemExit as done:
    status = done.code
others = {{"runyard", "pydantic", "ray", "mlflow", "pyarrow"}}
print("IMPORTED", sorted({{m.split(".")[0] for m in sys.modules}} & others))
sys.exit(status)
"""


@pytest.mark.slow
def test_gpu_check_runs_on_cpu_with_torch_alone(tmp_path):
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env["OMP_NUM_THREADS"] = "1"
    result = subprocess.run([sys.executable, "-c", RUN], capture_output=True, text=True,
                            cwd=tmp_path, env=env, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "IMPORTED []" in out
    for row in ("linear 64x64 (seed)    resident", "linear 64x64 (seed)    streamed",
                "WRN-12-0.5 64x64       resident  bf16", "WRN-12-0.5 64x64       streamed  fp32"):
        assert row in out, out
    assert "loss curve" in out and "RNG state save/restore on cpu: PASS" in out
