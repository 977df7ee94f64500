"""Run preparation jobs in parallel processes and show their progress.

On a terminal: a rich progress bar (images done, rate, time left). Piped or in a log file:
one plain line every few seconds, so logs stay readable.
"""

from __future__ import annotations

import multiprocessing
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import Any, Callable, Sequence


class _PlainProgress:
    def __init__(self, description: str, total: int, every_s: float = 5.0):
        self.description, self.total, self.every_s = description, total, every_s
        self.done, self.start, self.last = 0, time.monotonic(), 0.0

    def advance(self, amount: int) -> None:
        self.done += amount
        now = time.monotonic()
        if now - self.last >= self.every_s or self.done >= self.total:
            self.last = now
            rate = self.done / max(now - self.start, 1e-9)
            print(f"{self.description}: {self.done}/{self.total} images "
                  f"({100 * self.done / max(self.total, 1):.0f}%, {rate:.0f} images/s)",
                  flush=True)


def run_jobs(jobs: Sequence[tuple[Callable[..., Any], tuple, int]], workers: int,
             description: str) -> list[Any]:
    """Run (function, args, images) jobs, `workers` at a time in worker processes (inline if
    workers == 1), and return their results in job order. The first job that raises stops
    the run: queued jobs are cancelled and its exception propagates; finished jobs stay done."""
    total = sum(images for _, _, images in jobs)
    results: list[Any] = [None] * len(jobs)
    if sys.stdout.isatty():
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeRemainingColumn)

        bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                       TextColumn("images"), TimeRemainingColumn())
        bar.start()
        task = bar.add_task(description, total=total)
        advance = lambda amount: bar.advance(task, amount)  # noqa: E731
    else:
        bar = None
        advance = _PlainProgress(description, total).advance
    try:
        if workers <= 1:
            for index, (function, args, images) in enumerate(jobs):
                results[index] = function(*args)
                advance(images)
            return results
        # fork where it exists: workers need no re-import of the caller's __main__ (spawn would
        # re-run a script without a main guard); they use numpy, PIL and pyarrow only.
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        context = multiprocessing.get_context(method)
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            pending = {pool.submit(function, *args): (index, images)
                       for index, (function, args, images) in enumerate(jobs)}
            try:
                while pending:
                    finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for future in finished:
                        index, images = pending.pop(future)
                        results[index] = future.result()
                        advance(images)
            except BaseException:
                for future in pending:
                    future.cancel()
                raise
        return results
    finally:
        if bar is not None:
            bar.stop()
