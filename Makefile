# Two commands on a bare machine:  `make demo`  and  `make test`.
# Both create .venv, install torch (the CPU wheel where no NVIDIA GPU is present) and then
# runyard with its dependencies, and then do their job.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.runyard-installed
TORCH_CPU := torch==2.13.0

.PHONY: install system-deps demo test test-fast benchmarks clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# A bare `torch` from PyPI pulls gigabytes of CUDA packages: without a GPU, take the CPU wheel first.
	if ! command -v nvidia-smi >/dev/null 2>&1; then $(BIN)/python -m pip install --quiet $(TORCH_CPU); fi
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The cluster tests start a throwaway PostgreSQL (the cluster's tracking backend): Debian's
# package, installed here when missing (as root, as on CI; otherwise say what to run).
# The browser test drives Debian's chromium, installed the same way (Playwright's own browser
# download is not reachable from these machines).
system-deps:
	@if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; \
	  else echo "The tests need PostgreSQL: sudo apt-get install postgresql"; exit 1; fi; \
	fi
	@# The namespaced test hosts (`cluster local up --hosts N`) need ip (iproute2), unshare,
	@# nsenter and mount (util-linux).
	@if ! command -v ip >/dev/null 2>&1 || ! command -v nsenter >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iproute2 util-linux; \
	  else echo "The namespaced-host tests need root and: sudo apt-get install iproute2 util-linux"; fi; \
	fi
	@# The local Slurm cluster (`cluster local up --hosts N --slurm`) runs Debian's Slurm
	@# daemons and munge with a config of its own (nothing under /etc is used).
	@if ! command -v slurmctld >/dev/null 2>&1 || ! command -v slurmd >/dev/null 2>&1 || \
	    ! command -v sbatch >/dev/null 2>&1 || ! command -v munged >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurmctld slurmd slurm-client munge; \
	  else echo "The local Slurm tests need root and: sudo apt-get install slurmctld slurmd slurm-client munge"; fi; \
	fi
	@if ! test -x /usr/bin/chromium; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	  else echo "The tests need Chromium: sudo apt-get install chromium"; exit 1; fi; \
	fi

demo: $(STAMP)
	$(BIN)/runyard validate jobs/*.yaml
	$(BIN)/runyard run jobs/digits_linear.yaml
	$(BIN)/runyard run jobs/digits_linear_sweep.yaml
	$(BIN)/runyard ls
	@echo
	@echo "Open these runs in the MLflow UI:  $(BIN)/runyard ui   (then the link it prints for an experiment)"

test: $(STAMP) system-deps
	$(BIN)/python -m pytest

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow"

benchmarks: $(STAMP)
	$(BIN)/python benchmarks/sweep_overhead.py
	$(BIN)/python benchmarks/tracking_overhead.py

clean:
	rm -rf $(VENV) .runyard .pytest_cache
