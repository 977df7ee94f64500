"""The `runyard` command: the top layer, which strings spec → plan → launch → execute together.

Exit codes scripts can rely on: 0 success, 1 the job ran and failed, 2 invalid input
(nothing was started), 130 interrupted (runs marked KILLED).
"""

from __future__ import annotations

import argparse
import atexit
import os
import sys
import threading
from typing import Callable

from runyard import __version__
from runyard.cli import cluster, data, explain, jobs, queue, sweeps, ui, workloads
from runyard.errors import EXIT_INVALID, RunFailed, UserError

Handler = Callable[[argparse.Namespace], int]


class Commands:
    """Adds subcommands that share one look: a description, examples, a handler."""

    def __init__(self, subparsers: argparse._SubParsersAction):
        self.subparsers = subparsers

    def add(self, name: str, help_text: str, epilog: str, func: Handler) -> argparse.ArgumentParser:
        sub = self.subparsers.add_parser(name, help=help_text, description=help_text,
                                         epilog=epilog,
                                         formatter_class=argparse.RawDescriptionHelpFormatter)
        sub.set_defaults(func=func)
        return sub


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="runyard",
        description="Run ML experiments from YAML job specs on Ray, tracked in MLflow.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Start with `runyard run jobs/digits_linear.yaml`, then `runyard ls` and "
               "`runyard ui`.\nEach command has its own --help with examples.",
    )
    parser.add_argument("--version", action="version", version=f"runyard {__version__}")
    commands = Commands(parser.add_subparsers(dest="command", metavar="COMMAND"))
    for module in (jobs, sweeps, queue, explain, workloads, ui):
        module.add_commands(commands)
    cluster.add_cluster_commands(commands.subparsers)
    data.add_data_commands(commands.subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return EXIT_INVALID
    os.environ.setdefault("PYTHONWARNINGS", "ignore::DeprecationWarning")
    try:
        return args.func(args)
    except (UserError, RunFailed) as error:
        print(f"runyard: error: {error}", file=sys.stderr)
        return error.exit_code
    except Exception as error:
        refused = _refused_by_tracking_server(error, getattr(args, "tracking_uri", None))
        if refused is None:
            raise
        print(f"runyard: error: {refused}", file=sys.stderr)
        return EXIT_INVALID


def entry() -> None:
    """The `runyard` console script: main(), then an exit without the interpreter's teardown.

    Freeing the modules a run loaded (Ray's, Tune's, MLflow's, torch's) and their native state
    took ~0.85 s after a short run's last line, every time, and none of it writes anything.
    What an exit must do still happens: the atexit handlers run (Ray's shutdown, logging's
    flush, temporary folders), and a non-daemon thread still running is waited for by the
    ordinary exit instead. An exception leaves through the ordinary exit too."""
    code = main()
    if any(thread.is_alive() and not thread.daemon and thread is not threading.main_thread()
           for thread in threading.enumerate()):
        sys.exit(code)
    atexit._run_exitfuncs()  # CPython's own runner of the atexit handlers (what sys.exit runs)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _refused_by_tracking_server(error: Exception, uri: str | None) -> str | None:
    if "mlflow" not in sys.modules:  # nothing talked to a tracking server
        return None
    from runyard.tracking.store import refused_for_credentials

    return refused_for_credentials(error, uri)


if __name__ == "__main__":
    entry()
