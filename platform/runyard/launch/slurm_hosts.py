"""A real Slurm cluster on this machine, for tests and for trying `--slurm` (Linux, root).

`runyard cluster local up --hosts N --slurm` makes the namespaced hosts of
runyard.launch.netns_hosts (own network on the bridge, hostname, /tmp, home, processes; the
checkout hidden; the Python environment read-only; the storage folder shared) but runs no Ray
on them: Slurm hands out the nodes and each job starts its own Ray. This machine is the login
node:

  controller  munged and slurmctld, process groups of this machine (the node record
              "controller"); slurmctld listens on a free port, reached by the hosts at the
              bridge's root-side address.
  n1 .. nN    a munged and a slurmd per host (`slurmd -D -N nI`), slurmd's spool and the
              host munged's pid and seed files in the host's own /tmp.

Slurm's files live in <state_dir>/slurm: slurm.conf, cgroup.conf, the munge key, slurmctld's
state, and munge/, which holds this machine's munged socket. Every host sees that folder
read-only at the same path, with its own folder mounted over munge/: all daemons read one
slurm.conf (Slurm compares its hash between nodes), and each machine's Slurm reaches its own
munged at the path AuthInfo names, as on a real cluster. (One munged shared by all hosts
would see each job credential decoded once per node: "replayed".) The commands of this
machine find the config through SLURM_CONF (`slurm_env`); nothing is written under /etc.
`down` stops the daemons and removes the folder with the hosts; the daemons' logs stay in
<state_dir>/logs like the Ray nodes'.

What Slurm 22.05 needs on a machine like this one (cgroup v1 controllers under a tmpfs
/sys/fs/cgroup, which must not be mounted over; every host sees the same cores):
proctrack/linuxproc and task/none (no cgroup confinement), cgroup/v1 named in cgroup.conf,
SlurmctldHost equal to this machine's hostname, and every node described with the cores
`slurmd -C` finds here (a node that claims more is drained).
"""

from __future__ import annotations

import os
import shlex
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

from runyard.errors import UserError
from runyard.launch.netns_hosts import (HEAD_HOST_NUMBER, MAX_WORKER_HOSTS, HostLayout, HostRecord,
                                        NamespacedHosts, SharedPath, host_command, host_env,
                                        make_host_dirs, make_network, plan_network)
from runyard.launch.nodes import ClusterState, NodeRecord, NodeSize
from runyard.launch.process_nodes import free_ports
from runyard.processes import group_alive, start_group, stop_group, wait_until, write_private

REQUIRED_PROGRAMS = ("munged", "mungekey", "slurmctld", "slurmd", "srun", "sbatch", "sinfo")
SLURM_DIR = "slurm"  # under the cluster's state dir
CONTROLLER = "controller"
PARTITION = "debug"
# Job credentials live this long, and a requeued job waits as long before it starts again.
CRED_EXPIRE_S = 10
# A unix socket's path holds at most 107 bytes.
MAX_SOCKET_PATH = 100
# slurmctld saves its state on SIGTERM; a throwaway cluster's state goes with `down` anyway.
DAEMON_STOP_GRACE_S = 10.0
# Slurm marks a node usable once its slurmd registered: "idle" (or allocated / mixed / completing).
SERVING_STATES = ("idle", "alloc", "mix", "comp")


@dataclass
class SlurmRecord(HostRecord):
    """A Slurm host, or the controller (no network namespace: it runs on this machine, whose
    munged is kept as a second process group)."""

    munged_pid: int = 0


def check_can_make_slurm() -> None:
    """Refuse, before anything is made, where the Slurm daemons are not installed."""
    missing = [program for program in REQUIRED_PROGRAMS if shutil.which(program) is None]
    if missing:
        raise UserError(f"--slurm: {', '.join(missing)} not found; install Debian's slurmctld, "
                        "slurmd, slurm-client and munge (`make system-deps` as root does).")


def slurm_dir(cluster: ClusterState) -> Path:
    return Path(cluster.state_dir) / SLURM_DIR


def munge_socket(cluster: ClusterState) -> Path:
    """Where each machine's Slurm finds its own munged (AuthInfo): the same path everywhere."""
    return slurm_dir(cluster) / "munge" / "munge.socket"


def munged_command(cluster: ClusterState, files: Path) -> list[str]:
    """munged in the foreground, serving munge_socket, its pid and seed files in `files`.

    --force: munged refuses a socket that not every user can reach; under a private state dir
    (a 0700 home or temp folder) only its owner (root) can, which is whom this cluster
    serves, so that refusal is only a warning here."""
    return ["munged", "--foreground", "--force", "--key-file", str(slurm_dir(cluster) / "munge.key"),
            "--socket", str(munge_socket(cluster)), "--pid-file", str(files / "munged.pid"),
            "--seed-file", str(files / "munged.seed")]


def slurm_env(cluster: ClusterState) -> dict[str, str]:
    """What srun, sbatch, squeue and sinfo need to reach this cluster."""
    return {"SLURM_CONF": str(slurm_dir(cluster) / "slurm.conf")}


class SlurmHosts(NamespacedHosts):
    """`up(hosts=N, slurm=True)`: node 0 is the controller on this machine, nodes 1..N the
    Slurm hosts n1..nN. `prepare` writes the configuration and makes the hosts; `start_node`
    starts munged and slurmctld, then a slurmd on each host; `wait_for_nodes` waits until
    Slurm calls every node idle."""

    kind = "slurm"
    record = SlurmRecord
    ray_nodes = False

    def prepare(self, cluster: ClusterState, sizes: list[NodeSize]) -> None:
        directory = slurm_dir(cluster)
        socket_path = munge_socket(cluster)
        if len(str(socket_path)) > MAX_SOCKET_PATH:
            raise UserError(f"--state-dir: {cluster.state_dir} is too long for munged's socket "
                            f"({socket_path}: a unix socket path holds at most {MAX_SOCKET_PATH} "
                            "characters); pick a shorter folder.")
        if len(sizes) - 1 > MAX_WORKER_HOSTS:
            raise UserError(f"--hosts: at most {MAX_WORKER_HOSTS} Slurm hosts fit on one bridge.")
        Path(cluster.ray_temp_root).mkdir(parents=True)
        cluster.network = plan_network(f"ry{cluster.cluster_id[:6]}br")  # at most 15 characters
        logs = Path(cluster.state_dir) / "logs"
        cluster.nodes.append(SlurmRecord(CONTROLLER, 0, 0, {}, str(directory), str(logs / "slurmctld.out"),
                                         0, address=cluster.network.root_address))
        cluster.save()
        (directory / "state").mkdir(parents=True)
        (directory / "munge").mkdir()
        # munged refuses a key that others may read; 1024 bits is mungekey's default size.
        subprocess.run(["mungekey", "--create", "--keyfile", str(directory / "munge.key")],
                       check=True, capture_output=True)
        os.chmod(directory / "munge.key", 0o600)
        write_private(directory / "cgroup.conf", "CgroupPlugin=cgroup/v1\n")
        cores = hardware()
        write_private(directory / "slurm.conf", slurm_conf(cluster, len(sizes) - 1, cores))
        make_network(cluster.network)
        for _ in sizes[1:]:
            # What Slurm offers on each host: this machine's CPUs; Ray's custom resources
            # mean nothing here.
            self._make_host(cluster, NodeSize(int(cores["CPUs"]), {}))

    def _provision(self, cluster: ClusterState, layout: HostLayout) -> None:
        """Only the host's folders: nothing to install, as a Slurm job brings its own code and
        starts its own Ray."""
        make_host_dirs(layout)
        (Path(layout.dir) / "munge").mkdir()
        (layout.tmp_dir / "slurmd").mkdir()

    def _private_paths(self, cluster: ClusterState, layout: HostLayout) -> list[tuple[str, str]]:
        return [(str(Path(layout.dir) / "munge"), str(slurm_dir(cluster) / "munge"))]

    def _shared_paths(self, cluster: ClusterState) -> list[SharedPath]:
        return [SharedPath(str(slurm_dir(cluster)), read_only=True)]

    @staticmethod
    def layout(cluster: ClusterState, index: int) -> HostLayout:
        name = f"n{index}"
        return HostLayout(name=name, netns=f"runyard-{cluster.cluster_id}-{name}",
                          address=cluster.network.node_address(index),
                          dir=os.path.join(cluster.ray_temp_root, name), home=str(Path.home()))

    def start_node(self, cluster: ClusterState, size: NodeSize) -> NodeRecord:
        node = next(n for n in cluster.nodes if not n.pid)
        if node.name == CONTROLLER:
            self._start_controller(cluster, node)
        else:
            self._start_slurmd(cluster, node)
        return node

    def _start_controller(self, cluster: ClusterState, node: SlurmRecord) -> None:
        directory = slurm_dir(cluster)
        logs = Path(cluster.state_dir) / "logs"
        env = {**cluster.node_env(), **slurm_env(cluster)}
        with open(logs / "munged.out", "ab") as out:
            munged = start_group(munged_command(cluster, directory / "munge"), env=env, stdout=out,
                                 stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        node.munged_pid = munged.pid
        cluster.save()

        def listening() -> bool:
            if not group_alive(munged.pid):
                raise RuntimeError(f"munged exited during start; see {logs / 'munged.out'}")
            return munge_socket(cluster).is_socket()

        wait_until(listening, 30.0, lambda: f"munged made no socket within 30 s; see {logs / 'munged.out'}")
        with open(node.log, "ab") as out:
            # -D: stay in the foreground, logging to its output; -i: go on past the state
            # files a fresh cluster does not have yet.
            controller = start_group(["slurmctld", "-D", "-i"], env=env, stdout=out,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=str(directory))
        node.pid = controller.pid
        cluster.save()

    def _start_slurmd(self, cluster: ClusterState, node: SlurmRecord) -> None:
        layout = self.layout(cluster, cluster.nodes.index(node))
        # The host's munged first (its socket must be there before slurmd talks to anyone);
        # its pid and seed files go in the host's own /tmp.
        q = shlex.quote
        socket_path = q(str(munge_socket(cluster)))
        script = (f"{shlex.join(munged_command(cluster, Path('/tmp')))} &\n"
                  f"i=0; while [ ! -S {socket_path} ] && [ $i -lt 150 ]; do sleep 0.2; i=$((i + 1)); done\n"
                  f"exec slurmd -D -N {q(node.name)}\n")
        command = ["sh", "-c", script]
        with open(node.log, "ab") as out:
            process = start_group(host_command(layout, Path(layout.dir) / "setup.sh", command),
                                  env=host_env(layout, {**cluster.cluster_env(), **slurm_env(cluster)}),
                                  stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        node.pid = process.pid
        cluster.save()

    def wait_for_nodes(self, cluster: ClusterState, timeout_s: float) -> None:
        """Until every host's slurmd registered and Slurm calls it usable."""
        hosts = [node.name for node in cluster.nodes if node.name != CONTROLLER]
        states: dict[str, str] = {}

        def all_serving() -> bool:
            for node in cluster.nodes:
                if not group_alive(node.pid) or (node.munged_pid and not group_alive(node.munged_pid)):
                    raise RuntimeError(f"{node.name} exited during start; see {node.log}")
            states.update(node_states(cluster))
            return all(_serving(states.get(name, "")) for name in hosts)

        wait_until(all_serving, timeout_s,
                  lambda: f"Slurm nodes not usable within {timeout_s:.0f} s: {states}; see {cluster.state_dir}/logs")

    def count_serving(self, cluster: ClusterState) -> int:
        """The controller, when it answers, and every host Slurm can give jobs to."""
        states = node_states(cluster)
        return (1 if states else 0) + sum(_serving(state) for state in states.values())

    def stop_node(self, cluster: ClusterState, node: NodeRecord, timeout_s: float = 30.0) -> int:
        if node.name != CONTROLLER:
            return super().stop_node(cluster, node, timeout_s)
        # slurmctld first: it talks to munged until it has gone.
        ended = stop_group(node.pid, DAEMON_STOP_GRACE_S) if node.pid else 0
        if node.munged_pid:
            ended += stop_group(node.munged_pid, DAEMON_STOP_GRACE_S)
        return ended

    def remove(self, cluster: ClusterState) -> str:
        hosts = len(cluster.nodes) - 1
        super().remove(cluster)
        shutil.rmtree(slurm_dir(cluster), ignore_errors=True)
        bridge = cluster.network.bridge if cluster.network is not None else "-"
        return f", {max(hosts, 0)} Slurm hosts, their configuration and bridge {bridge} removed"

    def describe(self, cluster: ClusterState) -> list[str]:
        hosts = cluster.nodes[1:]
        conf = slurm_env(cluster)["SLURM_CONF"]
        return [f"local Slurm cluster up: slurmctld and munged here (the login node), "
                f"{len(hosts)} host{'s' if len(hosts) != 1 else ''} with a slurmd each, partition "
                f"{PARTITION}, on bridge {cluster.network.bridge} ({cluster.network.subnet})",
                *(f"  {node.name:10s} {node.address:15s}" for node in hosts),
                f"  Slurm commands: export SLURM_CONF={conf}"]


def slurm_conf(cluster: ClusterState, hosts: int, cores: dict[str, str]) -> str:
    """slurm.conf for the controller here and `hosts` nodes n1..nN on the bridge, each with
    `cores` (hardware())."""
    directory = slurm_dir(cluster)
    controller_port = free_ports(1)[0]
    described = " ".join(f"{key}={value}" for key, value in cores.items())
    nodes = [f"NodeName=n{i} NodeAddr={cluster.network.address_of(HEAD_HOST_NUMBER + i)} {described} State=UNKNOWN"
             for i in range(1, hosts + 1)]
    lines = [
        f"ClusterName=ry{cluster.cluster_id}",
        # slurmctld only runs where this is its own hostname; the hosts reach it on the bridge.
        f"SlurmctldHost={socket.gethostname().split('.')[0]}({cluster.network.root_address})",
        f"SlurmctldPort={controller_port}",
        "SlurmUser=root",
        "AuthType=auth/munge",
        "CredType=cred/munge",
        # cred_expire: a requeued job waits this long (+1 s) before it may start again (Slurm's
        # default, 120 s, would hold up every wall-time continuation for two minutes here).
        f"AuthInfo=socket={munge_socket(cluster)},cred_expire={CRED_EXPIRE_S}",
        f"StateSaveLocation={directory / 'state'}",
        f"SlurmctldPidFile={directory / 'slurmctld.pid'}",
        # Inside each host: its own /tmp.
        "SlurmdSpoolDir=/tmp/slurmd",
        "SlurmdPidFile=/tmp/slurmd.pid",
        # No cgroup confinement: this machine's cgroup v1 tree is not ours to change.
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none",
        "MpiDefault=none",
        # Jobs share nodes by cores, as on a lab's cluster (two jobs on the same two nodes).
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core",
        # A node whose slurmd restarts (a host that lost power) comes back by itself.
        "ReturnToService=2",
        "MailProg=/bin/true",
        # Pending jobs (a requeued one, once its cred_expire has passed) start within seconds
        # rather than at the next minute's scheduling pass.
        "SchedulerParameters=sched_interval=5,bf_interval=2",
        *nodes,
        f"PartitionName={PARTITION} Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
    ]
    return "\n".join(lines) + "\n"


def hardware() -> dict[str, str]:
    """This machine's CPUs and memory as slurm.conf describes a node: what every host's
    slurmd finds (`slurmd -C`), since the hosts share this machine's cores."""
    described = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, timeout=30, check=True).stdout
    fields = dict(word.split("=", 1) for word in described.split() if "=" in word)
    return {key: fields[key] for key in
            ("CPUs", "Boards", "SocketsPerBoard", "CoresPerSocket", "ThreadsPerCore", "RealMemory")
            if key in fields}


def node_states(cluster: ClusterState) -> dict[str, str]:
    """Slurm's state of each node ("idle", "alloc", "down*", ...); empty while slurmctld does
    not answer."""
    try:
        listing = subprocess.run(["sinfo", "--noheader", "--Node", "--format", "%N %t"], capture_output=True,
                                 text=True, timeout=30, env={**os.environ, **slurm_env(cluster)})
    except subprocess.TimeoutExpired:
        return {}
    if listing.returncode != 0:
        return {}
    return dict(line.split() for line in listing.stdout.splitlines() if len(line.split()) == 2)


def _serving(state: str) -> bool:
    """Slurm gives the node jobs: idle, allocated, mixed or completing, with none of sinfo's
    suffixes but "-" (planned by the backfill scheduler); "idle*" is not responding."""
    return state.rstrip("-") in SERVING_STATES
