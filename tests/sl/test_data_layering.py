"""runyard.data is a leaf: it must not pull in Tune, MLflow or another runyard layer (only
runyard.errors and runyard.fsio, the leaf modules below every layer)."""

from __future__ import annotations

import subprocess
import sys


def test_data_package_imports_no_other_layer():
    code = ("import sys, runyard.data, runyard.data.imagenet, runyard.data.npz, "
            "runyard.data.inspect, runyard.data.synth, runyard.data.stored; "
            "print(sorted(m for m in sys.modules if m.startswith(('runyard', 'ray', 'mlflow'))))")
    modules = eval(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                  check=True).stdout)
    outside = [m for m in modules if not (m in ("runyard", "runyard.errors", "runyard.fsio") or
                                          m == "runyard.data" or m.startswith("runyard.data."))]
    assert outside == []
