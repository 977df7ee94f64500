"""`runyard cluster local up --hosts N`: hosts that share nothing but a bridge and a storage
folder, reached from this machine (the laptop) only through the Jobs API and MLflow.

The slow tests run real `ray start` nodes inside the hosts (conftest.namespaced_hosts); they are
skipped, with the reason, where namespaces cannot be made (not root, no iproute2).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from runyard_testing import (REPO, RUNYARD, finished, job_runs, laptop, leftovers_of,
                             namespaced_hosts_unavailable, processes_of, toy_sweep)

from runyard.errors import UserError
from runyard.launch import jobs_api, local_cluster, netns_hosts

# Run on the cluster as a job: where does each piece of work land, and what does it see?
PROBE = textwrap.dedent(
    """
    import json, os, socket, sys
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    checkout, storage, marker, hosts_dir = sys.argv[1:5]

    def look_around():
        import runyard
        name = socket.gethostname()
        with open(os.path.join(storage, f"written-by-{name}"), "w") as f:
            f.write(name)
        with open(f"/tmp/{marker}-{name}", "w") as f:
            f.write(name)
        return {"hostname": name, "netns": os.readlink("/proc/self/ns/net"),
                "node_ip": ray.util.get_node_ip_address(), "runyard": runyard.__file__,
                "checkout": sorted(os.listdir(checkout)) if os.path.isdir(checkout) else None,
                "hosts' folders": sorted(os.listdir(hosts_dir)),
                "storage": sorted(os.listdir(storage))}

    ray.init()
    workers = [n["NodeID"] for n in ray.nodes() if n["Alive"] and "gpu_node" in n["Resources"]]
    remote = ray.remote(num_cpus=1)(look_around)
    seen = ray.get([remote.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False)).remote()
                    for node in workers])
    print("PROBE " + json.dumps({"driver": look_around(), "workers": seen}))
    """
)


def http_status(url: str) -> int:
    """Status of an anonymous GET (no token, no password)."""
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def probe_result(log: str) -> dict:
    line = next(line for line in log.splitlines() if line.startswith("PROBE "))
    return json.loads(line[len("PROBE "):])


# ---------------------------------------------------------------- refused before anything is made


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"hosts": 0}, "--hosts: 0"),
        ({"hosts": 3, "workers": 2}, "give one"),
        ({"hosts": 3, "worker_cpus": 0}, "at least 1 logical CPU"),
    ],
)
def test_up_refuses_bad_host_arguments_before_making_anything(tmp_path, kwargs, message):
    if kwargs.get("hosts", 0) > 0 and namespaced_hosts_unavailable():
        pytest.skip(namespaced_hosts_unavailable())
    with pytest.raises(UserError, match=message):
        local_cluster.up(state_dir=tmp_path, echo=lambda _: None, **kwargs)
    assert not (tmp_path / local_cluster.STATE_FILE).exists()


def test_hosts_without_root_say_how_to_go_on(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(UserError, match=r"needs root.*--workers N"):
        local_cluster.up(hosts=3, state_dir=tmp_path, echo=lambda _: None)
    assert not (tmp_path / local_cluster.STATE_FILE).exists()


def test_hosts_root_that_a_host_hides_is_refused(tmp_path):
    if namespaced_hosts_unavailable():
        pytest.skip(namespaced_hosts_unavailable())
    with pytest.raises(UserError, match="--hosts-root: .* is under /tmp"):
        local_cluster.up(hosts=2, state_dir=tmp_path, hosts_root="/tmp/ry-hosts", echo=lambda _: None)
    assert not (tmp_path / local_cluster.STATE_FILE).exists()


def test_hosts_cli_refuses_hosts_with_workers(tmp_path):
    completed = subprocess.run([str(RUNYARD), "cluster", "local", "up", "--hosts", "3", "--workers", "2",
                                "--state-dir", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert completed.returncode == 2 and "--hosts N counts every host" in completed.stderr


# ---------------------------------------------------------------- on the hosts


@pytest.mark.slow
def test_work_on_each_worker_host_sees_its_own_machine(namespaced_hosts, tmp_path):
    cluster = namespaced_hosts.cluster
    (tmp_path / "probe.py").write_text(PROBE)
    marker = f"probe-{cluster.cluster_id}"
    submitted = jobs_api.submit(f"python probe.py {REPO} {namespaced_hosts.storage} {marker} {cluster.ray_temp_root}",
                                cluster.jobs_address, tmp_path, state_dir=cluster.state_dir)
    state = jobs_api.wait(submitted.job_id, cluster.jobs_address, timeout_s=180, state_dir=cluster.state_dir)
    log = "".join(jobs_api.logs(submitted.job_id, cluster.jobs_address, state_dir=cluster.state_dir))
    assert state == "SUCCEEDED", log[-4000:]
    seen = probe_result(log)
    driver, workers = seen["driver"], seen["workers"]
    root_netns = os.readlink("/proc/self/ns/net")

    # The driver runs on the head, each task on the worker it was pinned to: three machines.
    assert driver["hostname"] == "head" and driver["node_ip"] == cluster.nodes[0].address
    assert sorted(w["hostname"] for w in workers) == ["worker-1", "worker-2"]
    assert {w["node_ip"] for w in workers} == {n.address for n in cluster.nodes[1:]}
    assert socket.gethostname() not in {driver["hostname"], *(w["hostname"] for w in workers)}
    assert len({root_netns, driver["netns"], *(w["netns"] for w in workers)}) == 4
    # The checkout is an empty folder, but for the shared environment mounted back into it
    # where the venv lives in the checkout (as in a fresh clone).
    venv = Path(sys.prefix).resolve()
    mounted_back = [venv.relative_to(REPO).parts[0]] if venv.is_relative_to(REPO) else []
    for where in (driver, *workers):
        # runyard comes from the host's own install, and the checkout holds none of its files.
        assert where["runyard"].startswith(os.path.join(str(Path.home()), ".local", "runyard") + os.sep)
        assert not where["runyard"].startswith(str(REPO)), where
        assert where["checkout"] == mounted_back, where
        # Nor can a host read the others' /tmp through the folder they live in on this side.
        assert where["hosts' folders"] == [], where
    # Storage is one folder for all (the head saw both workers' files); /tmp is each host's own.
    assert {"written-by-worker-1", "written-by-worker-2"} <= set(driver["storage"])
    # (Other tests on the session's hosts keep their jobs' state in the same folder.)
    assert sorted(p.name for p in namespaced_hosts.storage.glob("written-by-*")) == [
        "written-by-head", "written-by-worker-1", "written-by-worker-2"]
    assert list(Path("/tmp").glob(f"{marker}-*")) == []

    # The laptop's two doors keep their locks: the Jobs API wants the token, MLflow a login;
    # and the token reached every host 0600.
    assert http_status(cluster.jobs_address + "/api/jobs/") == 401
    assert http_status(cluster.tracking_uri + "/api/2.0/mlflow/experiments/search?max_results=1") == 401
    token_mode = namespaced_hosts.on_host("worker-2", "stat", "-c", "%a", str(Path.home() / ".ray" / "auth_token"))
    assert token_mode.stdout.strip() == "600", token_mode.stderr

    # Logged in on a worker: the same view, and no route off the bridge.
    imported = namespaced_hosts.on_host("worker-1", "python", "-c", "import runyard; print(runyard.__file__)")
    assert imported.returncode == 0, imported.stderr
    assert not imported.stdout.strip().startswith(str(REPO)) and ".local/runyard" in imported.stdout
    for node in cluster.nodes:
        routes = subprocess.run(["ip", "-n", node.netns, "-4", "route", "show"], capture_output=True, text=True).stdout
        # One route, to the bridge's own subnet: no default route, nothing beyond the hosts.
        assert [line.split()[:3] for line in routes.strip().splitlines()] == [
            [cluster.network.subnet, "dev", "eth0"]], routes


# A checkpointing sweep with no preflight (that alone takes 20 s on a loaded machine); the same
# failure happens with jobs/digits_linear_sweep.yaml --set checkpoint.every=2.
CHECKPOINTING_SWEEP = toy_sweep("checkpointing", "hosts-storage", 0.2, 4)


@pytest.mark.slow
def test_checkpointing_sweep_submitted_to_worker_hosts_finishes(namespaced_hosts, tmp_path, monkeypatch):
    cluster = namespaced_hosts.cluster
    # The head has no CPU (as on the cloud cluster), so every 1-CPU trial runs on a worker host.
    assert cluster.nodes[0].num_cpus == 0
    project = tmp_path / "project"
    (project / "jobs").mkdir(parents=True)
    (project / "jobs" / "checkpointing.yaml").write_text(CHECKPOINTING_SWEEP)
    job_id = f"ckpt-{cluster.cluster_id[:6]}"
    submit = laptop(namespaced_hosts, project, "submit", "jobs/checkpointing.yaml", "--id", job_id)
    assert submit.returncode == 0, submit.stderr
    state, log = finished(namespaced_hosts, job_id, timeout_s=300)
    # Before jobs had a storage, Tune kept this state in the driver's working dir on the head
    # and the first checkpoint on a worker failed with Ray's "Unable to set up cluster storage
    # ... A local path on the head node is not accessible by worker nodes". The cluster's
    # RUNYARD_STORAGE (its shared folder) holds it now.
    assert "Unable to set up cluster storage" not in log
    assert state == "SUCCEEDED", log[-4000:]
    assert len(list((namespaced_hosts.storage / "ray_results" / job_id).glob("t000*/checkpoint_*"))) >= 2

    runs = job_runs(namespaced_hosts, monkeypatch, "hosts-storage", job_id)
    trials = [run for run in runs if run.data.tags.get("runyard.kind") == "trial"]
    assert len(trials) == 2 and {run.info.status for run in trials} == {"FINISHED"}


# ---------------------------------------------------------------- down


def machine_state() -> dict:
    """What `up` may add to the machine: network namespaces (named, and in use by a process),
    links, mount points. (Processes are compared through their namespaces: other clusters'
    hosts, such as the session's, start and end Ray workers all the time.)"""
    in_use = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                in_use.add(os.readlink(f"/proc/{entry}/ns/net"))
            except OSError:
                continue
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    return {
        "netns": netns_hosts.netns_names(),
        "network namespaces with a process": in_use,
        "links": {line.split(":")[1].strip().split("@")[0] for line in links.splitlines()},
        "mounts": {line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()},
    }


@pytest.mark.slow
def test_down_removes_every_namespace_link_mount_and_process_that_up_made(tmp_path):
    reason = namespaced_hosts_unavailable()
    if reason:
        pytest.skip(reason)
    state_dir = tmp_path / "state"
    before = machine_state()
    up = subprocess.run([str(RUNYARD), "cluster", "local", "up", "--hosts", "2", "--state-dir", str(state_dir)],
                        capture_output=True, text=True, timeout=300)
    cluster = local_cluster.LocalCluster.load(state_dir) if (state_dir / local_cluster.STATE_FILE).exists() else None
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        assert "2 hosts (head + 1 worker)" in up.stdout and cluster.jobs_address in up.stdout
        during = machine_state()
        assert during["netns"] - before["netns"] == {node.netns for node in cluster.nodes}
        assert during["links"] - before["links"] == {cluster.network.bridge, *(n.root_veth for n in cluster.nodes)}
        assert {f"/run/netns/{node.netns}" for node in cluster.nodes} <= during["mounts"]
        assert len(during["network namespaces with a process"] - before["network namespaces with a process"]) == 2
        assert all(netns_hosts.processes_in_netns(node.netns) for node in cluster.nodes)
        assert processes_of(cluster)
        down = subprocess.run([str(RUNYARD), "cluster", "local", "down", "--state-dir", str(state_dir)],
                              capture_output=True, text=True, timeout=120)
        assert down.returncode == 0, down.stdout + down.stderr
    finally:
        if cluster is not None and (state_dir / local_cluster.STATE_FILE).exists():
            local_cluster.down(cluster, echo=lambda _: None)
    assert machine_state() == before
    assert leftovers_of(cluster) == []
    # What the researcher keeps: the logs and the storage folder.
    assert (state_dir / "logs" / "head.out").exists() and (state_dir / "storage").is_dir()
