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


# Each Slurm flag: its argparse dest, which is also its SlurmOptions field.
SLURM_FLAGS = ("nodes", "partition", "account", "qos", "time", "gpus_per_node", "cpus_per_node", "mem", "setup",
               "stop_lead_s")


def add_slurm(parser: argparse.ArgumentParser, what: str) -> None:
    """--slurm and what a job asks Slurm for: `what` is submitted with sbatch from the login
    node, as a batch script that starts the job's own Ray (needs --storage). Every flag
    defaults to None: a profile fills what the command line leaves out."""
    slurm = parser.add_argument_group("Slurm (from the login node; the job starts its own Ray)")
    slurm.add_argument("--slurm", action="store_true",
                       help=f"{what} with sbatch instead of a Ray cluster; needs --storage (or "
                            "RUNYARD_STORAGE): a folder every node mounts")
    slurm.add_argument("--slurm-profile", metavar="YAML",
                       help="defaults for the flags below, keys named as the flags without dashes "
                            "(default: ~/.config/runyard/slurm.yaml, or under $XDG_CONFIG_HOME, "
                            "when it exists); a flag given here wins")
    slurm.add_argument("--nodes", type=int, help="nodes to allocate (default 1)")
    slurm.add_argument("--partition", help="Slurm partition (default: the cluster's default)")
    slurm.add_argument("--account", help="account the job is charged to (default: yours)")
    slurm.add_argument("--qos", help="quality of service (default: the account's)")
    slurm.add_argument("--time", help="wall time, e.g. 01:30:00 (default: the partition's)")
    slurm.add_argument("--gpus-per-node", metavar="[TYPE:]N", help="GPUs on each node, e.g. 2 or a100:2")
    slurm.add_argument("--cpus-per-node", type=int, help="CPUs on each node (default: 1)")
    slurm.add_argument("--mem", help="memory on each node, e.g. 64G (default: the partition's)")
    slurm.add_argument("--setup", metavar="SHELL",
                       help='lines every node runs first, e.g. "module load cuda; source ~/venv/bin/activate"')
    slurm.add_argument("--stop-lead", dest="stop_lead_s", type=int, metavar="SECONDS",
                       help="stop the sweep resumably this long before the wall time and requeue the "
                            "job, which then resumes it (default 120; Slurm may signal up to 30 s earlier)")


def slurm_options(args: argparse.Namespace):
    """The Slurm request of the flags of add_slurm over the profile's defaults; UserError when
    they are given without --slurm."""
    from pathlib import Path

    from runyard.errors import UserError
    from runyard.launch import slurm_profile

    given = {name: getattr(args, name) for name in SLURM_FLAGS if getattr(args, name) is not None}
    if not args.slurm:
        if given or args.slurm_profile:
            named = ", ".join(f"--{name.removesuffix('_s').replace('_', '-')}" for name in given)
            raise UserError(f"{named or '--slurm-profile'}: Slurm options; add --slurm to submit with sbatch.")
        return None
    if getattr(args, "cluster_config", None) or (getattr(args, "address", None)):
        raise UserError("--address/--cluster-config: a Slurm job starts its own Ray on the nodes it "
                        "is given; leave them out with --slurm.")
    return slurm_profile.options(Path(args.slurm_profile) if args.slurm_profile else None, given)


def add_jobs_address(parser: argparse.ArgumentParser, help_text: str = JOBS_ADDRESS_HELP) -> None:
    """--address as a Jobs API URL: the commands that talk to a cluster's jobs."""
    parser.add_argument("--address", default=None, help=help_text)


def add_state_dir(parser: argparse.ArgumentParser, help_text: str | None = argparse.SUPPRESS) -> None:
    """--state-dir: where `runyard cluster local up` keeps its state (hidden unless a help
    text is given: only the local cluster's own commands show it)."""
    parser.add_argument("--state-dir", default=str(CLUSTER_STATE_DIR), help=help_text)
