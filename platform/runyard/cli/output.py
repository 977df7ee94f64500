"""Where the CLI prints: on a terminal, tables fitted to its width; piped into a file or
another program, every line at its full length.

Rich lays a table out for the console's width, and a console that is not a terminal is 80
columns wide unless told otherwise: a long config was cut to `params.lr=0.0…` in a file,
hiding the very answer `runyard best` was asked for. Piped, the console is given a width no
line reaches, so a table keeps its columns aligned at their natural widths (what reads best
in a file or a pager) and no value is cut, folded or wrapped; plain lines are never broken.
"""

from __future__ import annotations

from rich.console import Console

PIPED_WIDTH = 100_000  # columns: wider than any table or line runyard prints


def console() -> Console:
    """The console for a command's output: the terminal's, or a wide one when piped."""
    terminal = Console()
    return terminal if terminal.is_terminal else Console(width=PIPED_WIDTH)
