"""Every MLflow tag runyard writes or reads, by name. Runs are found again by these tags (a
resumed job re-attaches to its runs through TRIAL_ID and JOB_ID), so a name changes here or
nowhere."""

from __future__ import annotations

# MLflow's own
PARENT = "mlflow.parentRunId"  # what nests a child run under its parent
NOTE = "mlflow.note.content"  # a run's Description in the MLflow UI (markdown)
# MLflow 3's kind of an experiment: "custom_model_development" is what its UI writes when one
# picks "Machine learning" (the other kind, "genai_development", opens on traces). UIs that
# read it open such an experiment on its runs table; without it they guess from its contents.
# MLflow >= 3.10's UI follows its GenAI / Model training switch instead: see cli/ui.py.
EXPERIMENT_KIND, MODEL_TRAINING = "mlflow.experimentKind", "custom_model_development"

# What a run is and where it came from
KIND = "runyard.kind"  # run (a plain job), sweep (a sweep's parent), trial, preflight
JOB_ID = "runyard.sweep_id"  # the runyard job id, on the job's run and every trial run
TRIAL_ID = "runyard.trial_id"  # t0000 ...: the trial's key, stable across resumes
SEED = "runyard.seed"
SAMPLE = "runyard.sample"  # which sampled config; a config's seeds share it
# What chose a sweep's configs: random, grid, tpe (proposed as it ran) or pbt (changed as it ran)
SEARCH = "runyard.search"
WORKLOAD = "runyard.workload"
SPEC_NAME = "runyard.spec_name"
SPEC_HASH = "runyard.spec_hash"
GIT_COMMIT = "runyard.git_commit"
VERSION = "runyard.version"

# Who writes the job now (the reconciler marks runs of a dead driver FAILED)
DRIVER = "runyard.driver"  # host:pid
DRIVER_STARTED = "runyard.driver_started"  # the process's start time, against pid reuse
RAY_JOB = "runyard.ray_job"  # the Jobs API submission whose driver writes the job, if any

# How it ended
ERROR = "runyard.error"  # the last line of the traceback
HOST = "runyard.host"  # the node a trial runs on, "hostname (ip)"; follows it to a new one
STOPPED_BY = "runyard.stopped_by"  # why a trial ended early, e.g. "time budget"
FAILED_TRIALS = "runyard.failed_trials"
NOT_STARTED = "runyard.not_started"  # trials a time budget left unstarted
TRIAL_COUNTS = "runyard.trials"  # "finished/all" trials when a sweep's driver ended (runyard ls)
BEST_TRIAL_ID = "runyard.best_trial_id"
BEST_RUN_ID = "runyard.best_run_id"
BEST_CONFIG = "runyard.best_config"
CONFIG = "runyard.config"  # a trial's config without its seed: "Group by" pools its seeds
# A population-based sweep's member: how often it copied another member, and the last time
PBT_EXPLOITS = "runyard.pbt.exploits"
PBT_LAST_EXPLOIT = "runyard.pbt.last_exploit"
PREFLIGHT_CHECK = "runyard.preflight.{check}"  # pass | FAIL, per preflight check
