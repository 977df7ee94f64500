#!/usr/bin/env bash
# The supervised GPU check (benchmarks/gpu_check.py): one command on a lent GPU machine,
# which needs only python and torch. Stops after 5 minutes whatever happens, so it fits a
# 15-minute slot with time to rerun. Extra arguments go to gpu_check.py, for example
#   benchmarks/gpu_check.sh --wrn-steps 100
#   PYTHON=/opt/venv/bin/python benchmarks/gpu_check.sh
#   benchmarks/gpu_check.sh --device cpu --tiny        # smoke test without a GPU
set -euo pipefail
cd "$(dirname "$0")/.."
exec timeout 300 "${PYTHON:-python3}" benchmarks/gpu_check.py "$@"
