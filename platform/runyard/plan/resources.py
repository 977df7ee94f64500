"""What each trial asks the cluster for, and whether any node can ever hold it.

A trial is a Ray placement group: one bundle for the trial's driver process (its CPUs, GPUs,
memory and custom resources) plus one bundle per rollout worker or helper process (RLlib's env
runners). Those helpers share `resources.cpus_per_trial` with the trial's process rather than
adding to it (see workloads/rl/layout.py), so the trial holds what its spec says. Ray would
leave a request no node can hold PENDING forever; runyard refuses it up front and says which
node came closest.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from runyard import workloads
from runyard.errors import UserError
from runyard.plan.trials import Trial
from runyard.spec import JobSpec
from runyard.workloads.blocks import ResourcesSpec
from runyard.workloads.rl.layout import DRIVER_CPUS, LayoutError, resolve_layout

Bundle = dict[str, float]
GIB = 1024**3


# A data-parallel trial's own process only waits on its Ray Train workers.
DDP_DRIVER_BUNDLE: Bundle = {"CPU": 0.01}


def process_bundle(res: ResourcesSpec) -> Bundle:
    """What one process of a trial holds (its own, or each data-parallel worker's): CPUs,
    GPUs, memory and custom resources."""
    bundle: Bundle = {"CPU": res.cpus_per_trial}
    if res.gpus_per_trial:
        bundle["GPU"] = res.gpus_per_trial
    if res.memory_gb:
        bundle["memory"] = res.memory_gb * GIB
    bundle.update(res.custom)
    return bundle


def trial_bundles(spec: JobSpec) -> list[Bundle]:
    """What one trial of this spec holds: its process's bundle (CPUs, GPUs, memory, custom
    resources) and one bundle per rollout actor or workload helper, whose CPUs are taken out
    of `cpus_per_trial` rather than added to it; or with `resources.workers` > 1 one bundle
    per data-parallel worker (each holding cpus_per_trial and gpus_per_trial) after a small
    bundle for the process that drives them."""
    res = spec.resources
    head = process_bundle(res)
    if res.workers > 1:
        return [dict(DDP_DRIVER_BUNDLE)] + [dict(head) for _ in range(res.workers)]
    workload_cls = workloads.get(spec.workload)
    helpers = workload_cls.helper_bundles(workload_cls.Config.model_validate(spec.config))
    if spec.rollout is not None:
        try:
            layout = resolve_layout(spec.rollout, res.cpus_per_trial)
        except LayoutError as error:
            raise UserError(f"{spec.name}: {error}") from None
        if layout.backend == "ray":
            helpers += [{"CPU": layout.cpus_per_worker} for _ in range(layout.workers)]
    helper_cpus = sum(bundle.get("CPU", 0) for bundle in helpers)
    if helper_cpus > res.cpus_per_trial - DRIVER_CPUS + 1e-9:
        raise UserError(
            f"{spec.name}: resources.cpus_per_trial: {res.cpus_per_trial:g} CPUs cannot hold the "
            f"{len(helpers)} helper process(es) {spec.workload} starts ({helper_cpus:g} CPUs) and "
            f"the trial's own process; raise resources.cpus_per_trial to at least {helper_cpus + 1:g}"
        )
    head["CPU"] = max(DRIVER_CPUS, res.cpus_per_trial - helper_cpus)
    return [head] + helpers


def trial_request(spec: JobSpec) -> Bundle:
    """Everything one trial of this spec holds, its bundles added up."""
    total: Bundle = {}
    for bundle in trial_bundles(spec):
        for name, amount in bundle.items():
            total[name] = total.get(name, 0) + amount
    return total


def describe(resources: dict[str, float]) -> str:
    shown = []
    for name, amount in sorted(resources.items()):
        if name.startswith("node:") or name.endswith("_group") or "_group_" in name:
            continue
        if name in ("memory", "object_store_memory"):
            shown.append(f"{name}={amount / GIB:.1f}GiB")
        else:
            shown.append(f"{name}={amount:g}")
    return "{" + ", ".join(shown) + "}"


def cluster_config_nodes(path: str | Path) -> list[dict[str, float]]:
    """Every node a Ray cluster launcher config (cluster.yaml) can grow to: each entry of
    `available_node_types`, its `resources`, once for the head and `max_workers` times for
    the others. What an autoscaling cluster can hold, before any of it is running."""
    path = Path(path)
    fix = ("give every node type its resources, e.g. resources: {CPU: 8, GPU: 1} "
           "(the autoscaler accepts them as written)")
    try:
        config = yaml.safe_load(path.read_text())
    except OSError as error:
        raise UserError(f"{path}: cannot read the cluster config: {error.strerror}") from None
    except yaml.YAMLError as error:
        raise UserError(f"{path}: not valid YAML: {error}") from None
    node_types = config.get("available_node_types") if isinstance(config, dict) else None
    if not isinstance(node_types, dict) or not node_types:
        raise UserError(f"{path}: available_node_types: missing; expected a Ray cluster "
                        "launcher config that names its node types")
    nodes = []
    for name, node_type in node_types.items():
        resources = (node_type or {}).get("resources")
        if not isinstance(resources, dict) or "CPU" not in resources:
            raise UserError(f"{path}: available_node_types.{name}.resources: found "
                            f"{resources!r}; expected the node's CPU count at least: {fix}")
        count = 1 if name == config.get("head_node_type") else int(node_type.get("max_workers", 0))
        nodes += [{key: float(amount) for key, amount in resources.items()}] * count
    return nodes


CLUSTER_REMEDY = "or run on a cluster that has such a node (--address)"


def check_feasible(spec: JobSpec, trials: list[Trial], nodes: list[dict[str, float]],
                   remedy: str = CLUSTER_REMEDY) -> None:
    """Raise UserError if some trial's request can never be scheduled on these nodes; the
    error's last advice is `remedy` (where bigger nodes come from)."""
    if not nodes:
        raise UserError("the Ray cluster reports no alive nodes; is it running? (ray status)")
    bundles = trial_bundles(spec)
    largest = max(nodes, key=lambda node: (node.get("GPU", 0), node.get("CPU", 0)))
    for bundle in bundles:
        if not any(fits(bundle, node) for node in nodes):
            raise UserError(_explain(spec, trials, bundle, largest, len(nodes), "no node can hold",
                                     remedy))
    total = trial_request(spec)
    cluster = {name: sum(node.get(name, 0) for node in nodes) for name in total}
    if not fits(total, cluster):
        raise UserError(_explain(spec, trials, total, cluster, len(nodes),
                                 "the whole cluster together cannot hold", remedy))


def fits(request: dict[str, float], available: dict[str, Any]) -> bool:
    return all(available.get(name, 0) + 1e-9 >= amount for name, amount in request.items())


def _explain(spec: JobSpec, trials: list[Trial], request: Bundle, best: dict[str, float],
             node_count: int, verdict: str, remedy: str) -> str:
    which = trials[0].trial_id + (f" (and the other {len(trials) - 1} trials)" if len(trials) > 1 else "")
    missing = [name for name, amount in request.items() if best.get(name, 0) + 1e-9 < amount]
    return (
        f"trial {which} of {spec.name!r} asks for {describe(request)}, and {verdict} it: "
        f"the largest of the cluster's {node_count} node(s) has {describe(best)} "
        f"(short of: {', '.join(missing)}). It would wait forever as PENDING, so nothing was "
        "started. Lower resources.cpus_per_trial / gpus_per_trial / memory_gb / custom "
        f"(rollout actors share cpus_per_trial), {remedy}."
    )
