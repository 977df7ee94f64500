"""The command line's shared flags, each declared once: the spec overrides (--set), the
tracking URI, the cluster a command reaches (--address: a GCS address that this process joins
as the driver, or a Jobs API URL), the job's storage, a cluster launcher config, and the local
cluster's state dir."""

from __future__ import annotations

import argparse

from runyard.paths import CLUSTER_STATE_DIR

JOBS_ADDRESS_HELP = "Jobs API URL (default: RAY_ADDRESS if http, else the local cluster)"


def add_set(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE",
                        help="override a spec field by dotted key, e.g. --set config.lr=3e-4 "
                             "(repeatable; values are read as YAML)")


def add_tracking(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: "
                                               "MLFLOW_TRACKING_URI, else .runyard/mlflow.db)")


def add_cluster_config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cluster-config", metavar="YAML",
                        help="a Ray cluster launcher config (e.g. cluster.yaml): check trials "
                             "against the node types it can start too, not only live nodes")


def add_cluster(parser: argparse.ArgumentParser, continues: bool = False) -> None:
    where = ("; or its Jobs API URL http://HEAD:8265, to continue the job on the cluster "
             "from the cluster's storage" if continues else "")
    parser.add_argument("--address", help="the Ray cluster: its GCS address host:6379 joins it "
                                          f"with this process as the driver{where} (default: "
                                          "RAY_ADDRESS, else an embedded Ray in this process)")
    parser.add_argument("--num-cpus", type=int, help="CPUs of the embedded Ray (default: all)")
    add_storage(parser)
    add_tracking(parser)


def add_storage(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--storage", metavar="PATH_OR_URI",
                        help="where the job's state lives (ledger, Tune state, checkpoints): a "
                             "path every node mounts, or s3://bucket/prefix (default: "
                             "RUNYARD_STORAGE, else .runyard/ here)")


def add_jobs_address(parser: argparse.ArgumentParser, help_text: str = JOBS_ADDRESS_HELP) -> None:
    """--address as a Jobs API URL: the commands that talk to a cluster's jobs."""
    parser.add_argument("--address", default=None, help=help_text)


def add_state_dir(parser: argparse.ArgumentParser, help_text: str | None = argparse.SUPPRESS) -> None:
    """--state-dir: where `runyard cluster local up` keeps its state (hidden unless a help
    text is given: only the local cluster's own commands show it)."""
    parser.add_argument("--state-dir", default=str(CLUSTER_STATE_DIR), help=help_text)
