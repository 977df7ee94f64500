"""RayRolloutPool: the rollout pool of the RL workloads on Ray actors.

Same constructor and interface as runyard.workloads.rl.rollout.LocalRolloutPool, so the
executor can hand `RayRolloutPool` (or a functools.partial of it) to a workload as
context.parallel["rollout_pool"]. Ray core only: actors, the object store, ray.wait.

- W actors, each wrapping one RolloutWorker (K envs that live across batches, and a policy
  copy); actor w always runs task w, so its envs continue where its last batch ended.
- Policy weights are put into the object store once per call (ray.put) and every actor
  reads them from there; trajectories come back as numpy arrays.
- Each actor's random streams start from worker_seed(job seed, call, w), never from which
  process it is: an actor that dies mid-iteration is replaced by one reseeded from (job
  seed, this call, w), its task is resubmitted, and the iteration completes deterministically.
"""

from __future__ import annotations

import dataclasses

import ray
import torch

from runyard.workloads.blocks import EnvSpec
from runyard.workloads.rl.policy_spec import PolicySpec
from runyard.workloads.rl.rollout import Batch, RolloutPool, RolloutWorker, Task, run_task, worker_seed


class RolloutActor:
    """The remote side: one RolloutWorker. Its emulators get the actor's CPUs as threads; the
    policy's forward pass is small and batched over the envs, so one torch thread."""

    def __init__(self, env_spec: EnvSpec, policy_spec: PolicySpec, envs_per_worker: int, seed: int,
                 threads: int):
        torch.set_num_threads(1)
        self.worker = RolloutWorker(env_spec, policy_spec, envs_per_worker, seed, threads)

    def run(self, weights, task: Task) -> Batch:
        return run_task(self.worker, task, weights)

    def reseed(self, seed: int) -> None:
        self.worker.reseed(seed)


class RayRolloutPool(RolloutPool):
    """W Ray actors. `num_cpus_per_actor` is the logical CPU each actor reserves."""

    max_attempts = 3  # per task: a task whose actor died this many times fails the call

    def __init__(self, env_spec: EnvSpec, policy_spec: PolicySpec, seed: int, workers: int,
                 envs_per_worker: int, threads_per_worker: int = 1, *, num_cpus_per_actor: float = 1.0):
        super().__init__(env_spec, policy_spec, seed, workers, envs_per_worker, threads_per_worker)
        self._actor_class = ray.remote(num_cpus=num_cpus_per_actor, max_restarts=0)(RolloutActor)
        self.actors = [self._start_actor(w) for w in range(workers)]
        self.replaced_actors = 0

    def _start_actor(self, slot: int):
        return self._actor_class.remote(self.env_spec, self.policy_spec, self.envs_per_worker,
                                        worker_seed(self.seed, self.calls, slot), self.threads_per_worker)

    def put_weights(self, weights):
        return ray.put(weights)

    def _submit(self, task: Task, slot: int):
        actor = self.actors[slot]
        # The weights travel as a top-level argument: Ray resolves only those object refs.
        return actor.run.remote(task.weights, dataclasses.replace(task, weights=None)), actor

    def run_tasks(self, tasks: list[Task]) -> list[Batch]:
        results: list[Batch | None] = [None] * len(tasks)
        attempts = [1] * len(tasks)
        pending = {}  # object ref -> (task index, the actor it was sent to)
        for i, task in enumerate(tasks):
            ref, actor = self._submit(task, i % self.workers)
            pending[ref] = (i, actor)
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            i, actor = pending.pop(ready[0])
            try:
                results[i] = ray.get(ready[0])
            except ray.exceptions.RayActorError:
                if attempts[i] >= self.max_attempts:
                    raise
                slot = i % self.workers
                if self.actors[slot] is actor:  # the first of its failed tasks replaces it
                    self.actors[slot] = self._start_actor(slot)
                    self.replaced_actors += 1
                attempts[i] += 1
                ref, new_actor = self._submit(tasks[i], slot)
                pending[ref] = (i, new_actor)
        return results

    def reseed_workers(self) -> None:
        ray.get([actor.reseed.remote(worker_seed(self.seed, self.calls, w)) for w, actor in enumerate(self.actors)])

    def close(self) -> None:
        for actor in self.actors:
            ray.kill(actor)
        self.actors = []
