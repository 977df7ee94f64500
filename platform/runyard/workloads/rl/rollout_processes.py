"""ProcessRolloutPool: the rollout workers in processes of their own, one per CPU, no Ray.

Why: on a small machine neither in-process sampling nor Ray actors keep the cores emulating.
ale-py's emulator threads scale poorly (1.1-1.3x one env on 2 threads) and the trial's Python
waits while they step; a process per core, each stepping its own envs and running its own
copy of the policy, keeps every core busy and pays no object-store trip.

- W processes (fresh interpreters, started with runyard.processes.start_group: the trial's
  process holds threads, which fork would copy mid-state, and multiprocessing's spawn would
  re-run the trial process's main module), each one RolloutWorker of K envs on one emulator thread and one torch thread. Worker w runs
  tasks w, w + W, ... in order, exactly as LocalRolloutPool does, so the same seed gives the
  same batches as the in-process pool with the same W and K.
- Weights travel through shared memory: one block per weights dict of a call, written once
  by the pool, read by every worker; only a small handle (block name, layout) goes down
  the connection (a socket pair). Batches come back through it as numpy arrays.
- A worker that dies (killed, out of memory) is replaced by a process reseeded from
  worker_seed(job seed, this call, w) and its task is run again: the call completes, and
  deterministically, as with Ray actors.
- No process outlives the pool: close() ends them (asked, then SIGTERM, then SIGKILL); a
  worker whose pool's process is gone reads end-of-file and exits; on Linux, a pool built on
  the main thread also has the kernel end its workers when it dies (start_group's
  end_with_parent).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from multiprocessing import connection, resource_tracker, shared_memory

import numpy as np

from runyard.processes import start_group, stop_processes
from runyard.workloads.blocks import EnvSpec
from runyard.workloads.rl.policy_spec import PolicySpec
from runyard.workloads.rl.rollout import Batch, RolloutPool, RolloutWorker, Task, run_task, worker_seed

# Spawned workers import torch, gymnasium and ale-py afresh: seconds on a loaded machine.
START_TIMEOUT_S = 300.0
STOP_GRACE_S = 5.0


@dataclass(frozen=True)
class SharedWeights:
    """Where a weights dict lies in shared memory: the block's name and, per tensor, its
    (name, dtype, shape, byte offset)."""

    block: str
    layout: tuple[tuple[str, str, tuple[int, ...], int], ...]


def weights_layout(weights: dict[str, np.ndarray]) -> tuple[tuple[tuple[str, str, tuple[int, ...], int], ...], int]:
    """(layout, bytes): each array at an offset aligned to 8 bytes (float64 buffers)."""
    layout, offset = [], 0
    for name, array in weights.items():
        layout.append((name, array.dtype.str, tuple(array.shape), offset))
        offset += -(-array.nbytes // 8) * 8
    return tuple(layout), max(offset, 8)


def read_weights(buffer, layout) -> dict[str, np.ndarray]:
    """Views of the arrays a block holds (load_weights copies them into the policy)."""
    return {name: np.ndarray(shape, np.dtype(dtype), buffer=buffer, offset=offset)
            for name, dtype, shape, offset in layout}


def attach(name: str) -> shared_memory.SharedMemory:
    """Open the pool's block without owning it. Python 3.11 registers every block it opens
    with this process's resource tracker, which would unlink it when this worker ends,
    under the pool and its other workers: the pool alone unlinks it."""
    block = shared_memory.SharedMemory(name=name)
    resource_tracker.unregister(block._name, "shared_memory")  # noqa: SLF001 (the tracker's key)
    return block


def serve(conn) -> None:
    """A worker process: build a RolloutWorker from the first message (env spec, policy
    spec, K, seed), then answer the pool's messages until it says close or the connection
    ends. Messages: ("run", Task with SharedWeights), ("reseed", seed); answers: ("ok",
    result) or ("error", traceback text)."""
    import torch

    torch.set_num_threads(1)
    blocks: dict[str, shared_memory.SharedMemory] = {}
    try:
        worker = RolloutWorker(*conn.recv(), threads=1)
    except Exception:
        conn.send(("error", traceback.format_exc()))
        return
    conn.send(("ok", None))
    try:
        while True:
            try:
                kind, payload = conn.recv()
            except EOFError:  # the pool's process is gone: end with it
                return
            if kind == "close":
                return
            try:
                if kind == "reseed":
                    worker.reseed(payload)
                    result = None
                else:
                    handle: SharedWeights = payload.weights
                    if handle.block not in blocks:
                        blocks[handle.block] = attach(handle.block)
                    result = run_task(worker, payload, read_weights(blocks[handle.block].buf, handle.layout))
                conn.send(("ok", result))
            except Exception:
                conn.send(("error", traceback.format_exc()))
    except (BrokenPipeError, ConnectionResetError):
        return
    finally:
        for block in blocks.values():
            block.close()
        worker.close()


class WorkerDied(Exception):
    """A worker process ended without answering."""


class ProcessRolloutPool(RolloutPool):
    """W worker processes of K envs each (see the module docstring)."""

    max_attempts = 3  # per task: a task whose worker died this many times fails the call

    def __init__(self, env_spec: EnvSpec, policy_spec: PolicySpec, seed: int, workers: int,
                 envs_per_worker: int, threads_per_worker: int = 1):
        super().__init__(env_spec, policy_spec, seed, workers, envs_per_worker, threads_per_worker)
        self._blocks: list[shared_memory.SharedMemory] = []
        self._blocks_used = 0  # blocks handed out in the current call
        self.replaced_workers = 0
        self.processes: list = [None] * workers
        self.conns: list = [None] * workers
        try:
            for w in range(workers):
                self._start(w)
            for w in range(workers):
                self._receive(w, START_TIMEOUT_S)
        except BaseException:
            self.close()
            raise

    # ---------------------------------------------------------------- processes

    def _start(self, slot: int) -> None:
        """Start worker `slot` (reseeded from this call) without waiting for it to be ready."""
        ours, theirs = socket.socketpair()
        # The worker imports runyard from where this process did (a test may have put it on
        # sys.path rather than PYTHONPATH).
        env = os.environ | {"PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        try:
            process = start_group(
                [sys.executable, "-m", __name__, str(theirs.fileno())],
                end_with_parent=True, pass_fds=[theirs.fileno()], env=env, stdin=subprocess.DEVNULL,
            )
        finally:
            theirs.close()  # only the worker holds its end: its death is our end-of-file
        conn = connection.Connection(ours.detach())
        self.processes[slot], self.conns[slot] = process, conn
        conn.send((self.env_spec, self.policy_spec, self.envs_per_worker, worker_seed(self.seed, self.calls, slot)))

    def _replace(self, slot: int) -> None:
        self._stop(slot)
        self._start(slot)
        self._receive(slot, START_TIMEOUT_S)
        self.replaced_workers += 1

    def _stop(self, slot: int) -> None:
        """Ask worker `slot` to close, then make sure: SIGTERM, a grace, SIGKILL."""
        process, conn = self.processes[slot], self.conns[slot]
        if process is None:
            return
        try:
            conn.send(("close", None))
        except OSError:  # it is gone already
            pass
        conn.close()
        try:
            process.wait(STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            stop_processes([process], STOP_GRACE_S)
        self.processes[slot] = self.conns[slot] = None

    def _send(self, slot: int, message) -> None:
        try:
            self.conns[slot].send(message)
        except (BrokenPipeError, ConnectionResetError) as error:
            raise WorkerDied(slot) from error

    def _receive(self, slot: int, timeout_s: float):
        """The worker's next answer; WorkerDied if it ends first, TimeoutError past timeout_s."""
        conn = self.conns[slot]
        if not conn.poll(timeout_s):
            raise TimeoutError(f"rollout worker {slot} gave no answer in {timeout_s:.0f} s")
        try:
            status, result = conn.recv()
        except (EOFError, ConnectionResetError) as error:
            raise WorkerDied(slot) from error
        if status == "error":
            raise RuntimeError(f"rollout worker {slot} failed:\n{result}")
        return result

    # ---------------------------------------------------------------- the pool interface

    def put_weights(self, weights: dict[str, np.ndarray]) -> SharedWeights:
        """Write `weights` into this call's next shared block (blocks are reused across calls:
        CEM puts one per candidate, the others one per call)."""
        layout, size = weights_layout(weights)
        index = self._blocks_used
        if index == len(self._blocks) or self._blocks[index].size < size:
            block = shared_memory.SharedMemory(create=True, size=size)
            if index == len(self._blocks):
                self._blocks.append(block)
            else:
                self._blocks[index].close()
                self._blocks[index].unlink()
                self._blocks[index] = block
        block = self._blocks[index]
        for (name, _, _, _), view in zip(layout, read_weights(block.buf, layout).values()):
            view[...] = weights[name]
        self._blocks_used += 1
        return SharedWeights(block.name, layout)

    def run_tasks(self, tasks: list[Task], timeout_s: float = 3600.0) -> list[Batch]:
        """Each worker runs its tasks in order; all workers at once. A worker that dies is
        replaced and the task it held runs again (at most max_attempts times)."""
        try:
            return self._run_tasks(tasks, timeout_s)
        finally:
            self._blocks_used = 0  # the call is over: its blocks may be overwritten

    def _run_tasks(self, tasks: list[Task], timeout_s: float) -> list[Batch]:
        deadline = time.monotonic() + timeout_s
        queues = [[i for i in range(len(tasks)) if i % self.workers == w] for w in range(self.workers)]
        results: list[Batch | None] = [None] * len(tasks)
        attempts = [0] * len(tasks)
        running: dict[int, int] = {}  # worker slot -> the task it is running

        def submit(slot: int) -> None:
            # Bounded: each failure here replaces the worker and counts an attempt.
            while queues[slot]:
                i = queues[slot][0]
                attempts[i] += 1
                try:
                    self._send(slot, ("run", tasks[i]))
                    running[slot] = i
                    return
                except WorkerDied:
                    self._retry_or_raise(slot, i, attempts)

        for slot in range(self.workers):
            submit(slot)
        while running:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"rollout tasks still running after {timeout_s:.0f} s")
            ready = connection.wait([self.conns[slot] for slot in running], timeout=left)
            for conn in ready:
                slot = self.conns.index(conn)
                i = running.pop(slot)
                try:
                    results[i] = self._receive(slot, 0)
                    queues[slot].pop(0)
                except WorkerDied:
                    self._retry_or_raise(slot, i, attempts)
                submit(slot)
        return results

    def _retry_or_raise(self, slot: int, task: int, attempts: list[int]) -> None:
        if attempts[task] >= self.max_attempts:
            raise WorkerDied(f"rollout worker {slot} died {attempts[task]} times running task {task}")
        self._replace(slot)

    def reseed_workers(self) -> None:
        asked = []
        for w in range(self.workers):
            try:
                self._send(w, ("reseed", worker_seed(self.seed, self.calls, w)))
                asked.append(w)
            except WorkerDied:
                self._replace(w)  # a new worker starts from this very seed
        for w in asked:
            try:
                self._receive(w, START_TIMEOUT_S)
            except WorkerDied:
                self._replace(w)

    def close(self) -> None:
        for slot in range(self.workers):
            self._stop(slot)
        for block in self._blocks:
            block.close()
            block.unlink()
        self._blocks = []


if __name__ == "__main__":
    serve(connection.Connection(int(sys.argv[1])))
