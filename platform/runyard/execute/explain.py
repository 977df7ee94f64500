"""Why a job's trials are pending: its Tune state, its MLflow runs and, when the cluster can
be reached, what Ray has free, what waits for a placement group and what the autoscaler is
starting.

Tune's experiment state (written by the driver under the ledger's Tune paths) says which
trials exist and in which state; the trial runs in MLflow say which have started since that
state was last written. Each trial asks for the bundles of `plan.trial_bundles(spec)`; a
pending trial waits for one of (checked in this order):

  infeasible     no node of the cluster can ever hold its largest bundle
  concurrency    `sweep.max_concurrent` trials are running already
  autoscaler     the autoscaler is starting nodes that will hold it
  resources      the free resources do not cover the request: N running trials hold them
  scheduling     the resources are free: Tune is about to start it
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from runyard.execute.ledger import Ledger
from runyard.execute.payload import TrialPayload
from runyard.execute.planned import lineage
from runyard.ray_compat import autoscaler_pending, experiment_trials
from runyard.plan import trial_bundles
from runyard.plan.resources import describe
from runyard.spec import JobSpec
from runyard.tracking.tags import DRIVER, DRIVER_STARTED

ACTIVE = ("RUNNING", "PENDING", "PAUSED")
TUNE_STATUS = {"FINISHED": "TERMINATED", "FAILED": "ERROR"}  # of an ended trial's MLflow run


@dataclass
class PendingTrial:
    trial_id: str
    label: str
    request: dict[str, float]  # the sum of its bundles
    reason: str


@dataclass
class ClusterView:
    address: str
    total: dict[str, float]
    available: dict[str, float]
    nodes: list[dict[str, float]]  # total resources of each alive node
    pending_placement_groups: int
    autoscaler: list[str] = field(default_factory=list)  # "2 x gpu-node (launching)", ...


@dataclass
class Explanation:
    sweep_id: str
    states: dict[str, str]  # runyard trial id -> RUNNING, PENDING, PAUSED, TERMINATED, ERROR
    pending: list[PendingTrial]
    cluster: ClusterView | None
    notes: list[str]

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for state in self.states.values():
            counts[state] = counts.get(state, 0) + 1
        return counts


def tune_states(ledger: Ledger) -> dict[str, tuple[str, str]]:
    """runyard trial id -> (Tune status, label), from each segment's newest experiment state."""
    states: dict[str, tuple[str, str]] = {}
    for segment in ledger.segments:
        for trial, _ in experiment_trials(segment.tune_path):
            info = TrialPayload.of(trial["config"])
            states[info.trial_id] = (trial["status"], info.label)
    return states


def request_of(spec: JobSpec) -> tuple[dict[str, float], list[dict[str, float]]]:
    """What one trial asks for: the sum over its bundles, and the bundles."""
    bundles = trial_bundles(spec)
    total: dict[str, float] = {}
    for bundle in bundles:
        for name, amount in bundle.items():
            total[name] = total.get(name, 0.0) + amount
    return total, bundles


def cluster_view(address: str) -> ClusterView:
    """Join the cluster as a passive driver (it asks for no resources), read, leave."""
    import ray
    from ray.util import placement_group_table

    ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False)
    try:
        nodes = [dict(n["Resources"]) for n in ray.nodes() if n.get("Alive")]
        pending_groups = sum(1 for group in placement_group_table().values()
                             if group.get("state") in ("PENDING", "RESCHEDULING"))
        total = ray.cluster_resources()
        # Ray leaves out what is fully used: a resource with nothing free is listed at 0.
        available = {name: ray.available_resources().get(name, 0.0) for name in total}
        view = ClusterView(address, total, available, nodes, pending_groups)
        view.autoscaler = autoscaler_pending(ray.get_runtime_context().gcs_address)
        return view
    finally:
        ray.shutdown()


def explain(ledger: Ledger, spec: JobSpec, address: str | None) -> Explanation:
    ended = ended_explanation(ledger, spec)
    if ended is not None:
        return ended
    from runyard.tracking.reconcile import driver_alive
    from runyard.tracking.results import trial_results
    from runyard.tracking.store import client_for

    notes: list[str] = []
    known = tune_states(ledger)
    states = {trial_id: status for trial_id, (status, _) in known.items()}
    labels = {trial_id: label for trial_id, (_, label) in known.items()}
    if not states:
        notes.append("Tune has not written this job's experiment state yet (the driver writes "
                     "it a few seconds after it starts)")
    tags: dict[str, str] = {}
    if ledger.run_id:  # a new job's ledger learns its run a second or two after it starts
        client = client_for(ledger.tracking_uri)
        # Runs that exist in MLflow have started, whatever the last written Tune state says.
        for result in trial_results(client, ledger.run_id, None):
            if states.get(result.trial_id) in ("PENDING", None) and result.status == "RUNNING":
                states[result.trial_id] = "RUNNING"
        tags = client.get_run(ledger.run_id).data.tags
    active = any(state in ACTIVE for state in states.values())
    alive = driver_alive(tags.get(DRIVER, ""), tags.get(DRIVER_STARTED))
    if active and alive is False:
        notes.append(f"its driver ({tags[DRIVER]}) is gone, and with it an embedded "
                     f"Ray or the job's trials on a cluster: nothing of this job runs now; "
                     f"`runyard resume {ledger.sweep_id}` continues it")
    elif active and not address:
        notes.append("without --address (or RAY_ADDRESS) the job runs on an embedded Ray inside "
                     "its driver process, which no other process can join: cluster resources "
                     "are not shown")
    if spec.adaptive:
        unproposed = ledger.trial_count(spec) - len(states)
        if unproposed > 0:
            notes.append(f"{unproposed} trial(s) not proposed yet: TPE proposes each config when "
                         "one can start, from the seed means of the configs before it")
    if spec.population_based:
        notes.append(population_note(ledger, spec, states))
    cluster = cluster_view(address) if address else None
    request, bundles = request_of(spec)
    running = sum(1 for s in states.values() if s == "RUNNING")
    pending = [PendingTrial(trial_id, labels.get(trial_id, ""), request,
                            pending_reason(spec, bundles, request, running, cluster))
               for trial_id, status in sorted(states.items()) if status == "PENDING"]
    return Explanation(ledger.sweep_id, states, pending, cluster, notes)


def ended_explanation(ledger: Ledger, spec: JobSpec) -> Explanation | None:
    """A sweep whose last driver ended with every trial finished or failed has nothing
    pending: said from the scores it saved, without Tune's state or MLflow (which at thousands
    of trials take seconds to read). None for any other job."""
    final = ledger.final_results()
    if final is None or len(final.results) != ledger.trial_count(spec) or \
            any(result.status not in TUNE_STATUS for result in final.results):
        return None
    states = {result.trial_id: TUNE_STATUS[result.status] for result in final.results}
    return Explanation(ledger.sweep_id, states, [], None,
                       ["the job has ended: every trial finished or failed (`runyard best` ranks "
                        "them; `runyard rerun-failed` runs the failed ones again)"])


def population_note(ledger: Ledger, spec: JobSpec, states: dict[str, str]) -> str:
    """A population-based sweep: its populations, their exploits so far, and why members
    are PAUSED (which is no sign of trouble there)."""
    sweep = spec.sweep
    exploits = lineage([segment.tune_path for segment in ledger.segments], sweep.seeds)
    per_population = [sum(1 for e in exploits if e.population == k) for k in range(sweep.seeds)]
    paused = sum(1 for state in states.values() if state == "PAUSED")
    return (f"population-based: {sweep.seeds} population(s) of {sweep.samples} members, "
            f"exploits so far per population: {per_population} (a member copies another every "
            f"{sweep.pbt.interval} iterations at most); {paused} member(s) PAUSED: PBT pauses "
            "members so that more of them than fit at once take turns and meet at each interval")


def pending_reason(spec: JobSpec, bundles: list[dict[str, float]], request: dict[str, float],
                   running: int, cluster: ClusterView | None) -> str:
    limit = spec.sweep.max_concurrent if spec.sweep else None
    if cluster is not None:
        largest = max(bundles, key=lambda b: sum(b.values()))
        if not any(all(node.get(k, 0.0) >= v for k, v in largest.items()) for node in cluster.nodes):
            biggest = max(cluster.nodes, key=lambda n: n.get("CPU", 0.0), default={})
            return (f"no node can ever hold it: bundle {describe(largest)}; largest "
                    f"node has {describe(biggest)}")
    if limit is not None and running >= limit:
        return f"max_concurrent={limit} trials are running"
    if cluster is None:
        return f"waiting for resources held by {running} running trial(s) (cluster not inspected)"
    if cluster.autoscaler:
        return f"autoscaler starting nodes: {', '.join(cluster.autoscaler)}"
    short = {k: v for k, v in request.items() if cluster.available.get(k, 0.0) < v}
    if short:
        free = ", ".join(f"{k} {cluster.available.get(k, 0.0):g} of {cluster.total.get(k, 0.0):g} free"
                         for k in short)
        waiting = (f"; {cluster.pending_placement_groups} placement group(s) waiting"
                   if cluster.pending_placement_groups else "")
        return f"resources busy by {running} running trial(s): {free}{waiting}"
    if cluster.pending_placement_groups:
        return (f"placement group waiting ({cluster.pending_placement_groups} pending) although "
                "the resources look free: it is being placed")
    return "resources are free: Tune is about to start it"
