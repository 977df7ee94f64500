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


def add_slurm(parser: argparse.ArgumentParser, what: str) -> None:
    """--slurm and what a job asks Slurm for: `what` is submitted with sbatch from the login
    node, as a batch script that starts the job's own Ray (needs --storage)."""
    slurm = parser.add_argument_group("Slurm (from the login node; the job starts its own Ray)")
    slurm.add_argument("--slurm", action="store_true",
                       help=f"{what} with sbatch instead of a Ray cluster; needs --storage (or "
                            "RUNYARD_STORAGE): a folder every node mounts")
    slurm.add_argument("--nodes", type=int, default=1, help="nodes to allocate (default 1)")
    slurm.add_argument("--partition", help="Slurm partition (default: the cluster's default)")
    slurm.add_argument("--time", help="wall time, e.g. 01:30:00 (default: the partition's)")
    slurm.add_argument("--cpus-per-node", type=int, help="CPUs on each node (default: 1)")
    slurm.add_argument("--setup", default="", metavar="SHELL",
                       help='lines every node runs first, e.g. "module load cuda; source ~/venv/bin/activate"')
    slurm.add_argument("--stop-lead", type=int, metavar="SECONDS",
                       help="stop the sweep resumably this long before the wall time and requeue the "
                            "job, which then resumes it (default 120; Slurm may signal up to 30 s earlier)")


def slurm_options(args: argparse.Namespace):
    """The Slurm request the flags of add_slurm make; UserError when they are given without
    --slurm."""
    from runyard.errors import UserError
    from runyard.launch.slurm import SlurmOptions

    given = (any(value is not None for value in (args.partition, args.time, args.cpus_per_node, args.stop_lead))
             or args.setup or args.nodes != 1)
    if not args.slurm:
        if given:
            raise UserError("--nodes/--partition/--time/--cpus-per-node/--setup/--stop-lead: Slurm options; add "
                            "--slurm to submit with sbatch.")
        return None
    if getattr(args, "cluster_config", None) or (getattr(args, "address", None)):
        raise UserError("--address/--cluster-config: a Slurm job starts its own Ray on the nodes it "
                        "is given; leave them out with --slurm.")
    lead = {} if args.stop_lead is None else {"stop_lead_s": args.stop_lead}
    return SlurmOptions(nodes=args.nodes, partition=args.partition, time=args.time,
                        cpus_per_node=args.cpus_per_node, setup=args.setup, **lead)


def add_jobs_address(parser: argparse.ArgumentParser, help_text: str = JOBS_ADDRESS_HELP) -> None:
    """--address as a Jobs API URL: the commands that talk to a cluster's jobs."""
    parser.add_argument("--address", default=None, help=help_text)


def add_state_dir(parser: argparse.ArgumentParser, help_text: str | None = argparse.SUPPRESS) -> None:
    """--state-dir: where `runyard cluster local up` keeps its state (hidden unless a help
    text is given: only the local cluster's own commands show it)."""
    parser.add_argument("--state-dir", default=str(CLUSTER_STATE_DIR), help=help_text)
