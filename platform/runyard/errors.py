"""Errors every layer may raise, and the exit codes the CLI turns them into.

UserError: the input is wrong (a spec, a flag, a path, a resource request no node can hold).
    Exit code 2. Raised before anything starts, so nothing is left half-made.
RunFailed: the input was fine but the work failed (a trial errored). Exit code 1.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INVALID = 2
EXIT_INTERRUPTED = 130  # Ctrl-C or SIGTERM, as a shell reports SIGINT


class UserError(Exception):
    """Invalid input. The message names the file/field, what was found, and the fix."""

    exit_code = EXIT_INVALID


class RunFailed(Exception):
    """The job ran and failed."""

    exit_code = EXIT_FAILED
