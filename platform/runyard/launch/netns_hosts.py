"""Test hosts that share nothing but a network and a storage directory (Linux, root only).

`runyard cluster local up --hosts N` runs each Ray node of the local cluster as its own host,
the way the nodes of a real cluster are separate machines:

  network   a network namespace per host, its `eth0` a veth on a bridge that `up` makes, with a
            /24 from 198.18.0.0/15 (RFC 2544's benchmarking range, routed nowhere). The bridge's
            side in the root namespace is .1, the head .10, workers .11, .12, ... No host has a
            default route: traffic goes to the other hosts and to the root namespace, nothing else.
  hostname  a UTS namespace per host (`head`, `worker-1`, ...), listed in a shared /etc/hosts.
  files     a mount namespace per host with its own /tmp, home and /dev/shm. The project
            checkout (and the project that owns the editable install) is hidden under an
            empty tmpfs. Visible: the Python environment and the interpreter it was made from,
            read-only (a node's pre-installed packages; the hosts have no package index), and
            the storage directory, read-write at the same path on every host (NFS's stand-in).
  processes a PID namespace per host. Its init is a child of `unshare --kill-child`, so
            killing that one `unshare` process ends every process of the host.
  runyard   installed per host with `pip install --no-deps --target ~/.local/runyard` from a
            wheel built at `up`, as a node's setup command installs it; that directory is first
            on the host's PYTHONPATH, so the host never imports the checkout.

The root namespace plays the researcher's laptop: it reaches the cluster through the head's
Jobs API (http://<head>:8265) and the MLflow server, which `local_cluster` binds to the
bridge's root-side address. `NamespacedHosts` is the node backend (runyard.launch.nodes) that
`local_cluster`'s up/down sequence drives; the rest of this module is what it is made of.

Everything made here is recorded by the caller (local_cluster's state.json) before it is made,
so `remove_*` can undo a start that failed half-way. Nothing else is touched: no iptables rule,
no sysctl, no file outside the hosts' folder (except /run/netns, which `ip netns` needs; made
into a mount point by the first `ip netns add` on a machine, unmounted again by
`remove_network` when it was made here and no namespace is left in it).
"""

from __future__ import annotations

import ipaddress
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import psutil

from runyard.errors import UserError
from runyard.launch.nodes import OBJECT_STORE_BYTES, RAY_BIN, ClusterState, NodeRecord, NodeSize
from runyard.processes import signal_group, start_group, write_private

ADDRESS_RANGE = ipaddress.ip_network("198.18.0.0/15")
ROOT_HOST_NUMBER = 1  # the root namespace's address on the bridge: <subnet>.1
HEAD_HOST_NUMBER = 10  # head <subnet>.10, worker i <subnet>.(10 + i)
MAX_WORKER_HOSTS = 200
DEFAULT_HOSTS_ROOT = Path("/var/tmp/runyard-hosts")
NETNS_DIR = Path("/run/netns")
HOST_SHM_SIZE = "1g"  # an upper bound, not an allocation: tmpfs uses only what is written
# Ray's own default ports: every host has its own network namespace, so nothing collides.
GCS_PORT = 6379
DASHBOARD_PORT = 8265
REQUIRED_TOOLS = ("ip", "unshare", "nsenter", "mount", "hostname")
# Every host has its own network namespace: one fixed metrics port on every host.
RAY_METRICS_PORT = 8080
INSTALL_TIMEOUT_S = 180.0


@dataclass
class HostNetwork:
    """The bridge all hosts hang on, and what `up` had to create for it."""

    bridge: str
    subnet: str  # "198.18.7.0/24"
    made_netns_mount: bool = False  # /run/netns became a mount point because of this cluster

    @property
    def root_address(self) -> str:
        return self.address_of(ROOT_HOST_NUMBER)

    def address_of(self, host_number: int) -> str:
        return str(ipaddress.ip_network(self.subnet)[host_number])

    def node_address(self, index: int) -> str:
        """Address of node `index`: 0 is the head, i >= 1 is worker i (at most MAX_WORKER_HOSTS)."""
        return self.address_of(HEAD_HOST_NUMBER + index)


@dataclass(frozen=True)
class SharedPath:
    """A root-namespace path that every host sees at the same path."""

    path: str
    read_only: bool


@dataclass(frozen=True)
class HostLayout:
    """Where one host's private files live on the root side, and what the host sees."""

    name: str
    netns: str
    address: str
    dir: str  # <hosts_root>/<cluster_id>/<name>: its /tmp, home, staging mounts, setup script
    home: str  # the home path inside the host (the same path as the caller's home)

    @property
    def tmp_dir(self) -> Path:
        return Path(self.dir) / "tmp"

    @property
    def home_dir(self) -> Path:
        return Path(self.dir) / "home"

    @property
    def site_dir_inside(self) -> str:
        """Where runyard's wheel is installed, as the host sees it."""
        return os.path.join(self.home, ".local", "runyard")

    @property
    def token_path_inside(self) -> str:
        return os.path.join(self.home, ".ray", "auth_token")

    def outside(self, inside_home_path: str) -> Path:
        """The root-side path of a file under the host's home."""
        return self.home_dir / os.path.relpath(inside_home_path, self.home)

    @property
    def ray_temp_dir_outside(self) -> str:
        """Ray's session folders (logs, sockets) of this host, read from the root side."""
        return str(self.tmp_dir / "ray")


def check_can_make_hosts() -> None:
    """Refuse, before anything is made, where namespaced hosts cannot be made."""
    if not sys.platform.startswith("linux"):
        raise UserError("--hosts: namespaced hosts need Linux network and mount namespaces; "
                        "use --workers N for the single-namespace local cluster.")
    if os.geteuid() != 0:
        raise UserError("--hosts: making network, mount and PID namespaces needs root (run it "
                        "with sudo); without root use --workers N, the single-namespace local "
                        "cluster.")
    missing = [tool for tool in REQUIRED_TOOLS if shutil.which(tool) is None]
    if missing:
        raise UserError(f"--hosts: {', '.join(missing)} not found; install iproute2 and "
                        "util-linux (`make system-deps`).")


def hidden_checkouts() -> list[str]:
    """Project checkouts a host must not see: the one runyard is imported from, and the one
    the environment's editable install of runyard points to (often the same)."""
    import runyard

    found = []
    source_root = Path(runyard.__file__).resolve().parents[2]
    if (source_root / "pyproject.toml").is_file():
        found.append(str(source_root))
    editable = _editable_project()
    if editable and editable not in found:
        found.append(editable)
    return found


def _editable_project() -> str | None:
    from importlib import metadata

    try:
        text = metadata.distribution("runyard").read_text("direct_url.json")
    except metadata.PackageNotFoundError:
        return None
    if not text:
        return None
    direct = json.loads(text)
    if not direct.get("dir_info", {}).get("editable") or not direct.get("url", "").startswith("file://"):
        return None
    return str(Path(direct["url"][len("file://"):]).resolve())


def python_environment() -> list[SharedPath]:
    """The environment (venv) and the interpreter installation it was made from, read-only."""
    paths = [SharedPath(str(Path(sys.prefix).resolve()), read_only=True)]
    base = str(Path(sys.base_prefix).resolve())
    if base not in (paths[0].path, "/"):
        paths.append(SharedPath(base, read_only=True))
    return paths


def check_hosts_root(hosts_root: Path, checkouts: list[str]) -> None:
    """The hosts' own folders must stay reachable after a host hides its /tmp, home and the
    checkouts (they are the sources of its mounts)."""
    for covered in [*checkouts, "/tmp", str(Path.home()), "/dev/shm"]:
        if hosts_root == Path(covered) or hosts_root.is_relative_to(covered):
            raise UserError(f"--hosts-root: {hosts_root} is under {covered}, which each host "
                            "hides; pick a folder elsewhere (default /var/tmp/runyard-hosts).")


# ---------------------------------------------------------------- network


def plan_network(bridge: str) -> HostNetwork:
    """Name and address a bridge (the first free /24 of ADDRESS_RANGE); nothing is made yet,
    so the caller can record it first."""
    return HostNetwork(bridge=bridge, subnet=str(_free_subnet()),
                       made_netns_mount=not _is_mount_point(NETNS_DIR))


def make_network(network: HostNetwork) -> None:
    """Make the bridge; the root namespace gets the subnet's .1 on it."""
    name = network.bridge
    ip("link", "add", name, "type", "bridge")
    # Where br_netfilter is loaded, bridged frames would go through the machine's iptables
    # FORWARD chain (DROP under Docker); this bridge's traffic is between test hosts only.
    # A per-bridge setting, so no machine-wide sysctl changes; kernels without it skip it.
    subprocess.run(["ip", "link", "set", "dev", name, "type", "bridge", "nf_call_iptables", "0",
                    "nf_call_ip6tables", "0", "nf_call_arptables", "0"], capture_output=True)
    prefix = ipaddress.ip_network(network.subnet).prefixlen
    ip("addr", "add", f"{network.root_address}/{prefix}", "dev", name)
    ip("link", "set", name, "up")


def remove_network(network: HostNetwork) -> None:
    _delete_link(network.bridge)
    if network.made_netns_mount and _is_mount_point(NETNS_DIR) and not any(NETNS_DIR.iterdir()):
        subprocess.run(["umount", str(NETNS_DIR)], capture_output=True)


def add_host_network(network: HostNetwork, netns: str, root_veth: str, address: str) -> None:
    """A network namespace whose eth0 is cabled to the bridge, with `address` and no default
    route."""
    ip("netns", "add", netns)
    ip("link", "add", root_veth, "type", "veth", "peer", "name", "eth0", "netns", netns)
    ip("link", "set", root_veth, "master", network.bridge, "up")
    prefix = ipaddress.ip_network(network.subnet).prefixlen
    ip("-n", netns, "addr", "add", f"{address}/{prefix}", "dev", "eth0")
    ip("-n", netns, "link", "set", "eth0", "up")
    ip("-n", netns, "link", "set", "lo", "up")


def remove_host_network(netns: str, root_veth: str) -> None:
    """Delete the namespace (its eth0 and so the veth pair go with it once no process is
    left in it), and the root-side veth if the namespace never got its peer."""
    if netns in netns_names():
        ip("netns", "del", netns)
    _delete_link(root_veth)


def netns_names() -> set[str]:
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in listing.splitlines() if line.strip()}


def ip(*args: str) -> None:
    completed = subprocess.run(["ip", *args], capture_output=True, text=True)
    if completed.returncode != 0:
        raise RuntimeError(f"`ip {' '.join(args)}` failed: {completed.stderr.strip()}")


def _delete_link(name: str) -> None:
    """Delete a link if it is there. The kernel removes a veth pair on its own, a moment after
    its namespace is deleted, so a link seen a moment ago may be gone by the time `ip` runs:
    that is success, any other failure is not."""
    if not _link_exists(name):
        return
    completed = subprocess.run(["ip", "link", "del", name], capture_output=True, text=True)
    if completed.returncode != 0 and _link_exists(name):
        raise RuntimeError(f"`ip link del {name}` failed: {completed.stderr.strip()}")


def _link_exists(name: str) -> bool:
    return subprocess.run(["ip", "link", "show", "dev", name], capture_output=True).returncode == 0


def _free_subnet() -> ipaddress.IPv4Network:
    listing = subprocess.run(["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True).stdout
    routes = subprocess.run(["ip", "-4", "route", "show", "table", "all"], capture_output=True, text=True).stdout
    used = []
    for word in (listing + " " + routes).split():
        try:
            used.append(ipaddress.ip_network(word, strict=False))
        except ValueError:
            continue
    for subnet in ADDRESS_RANGE.subnets(new_prefix=24):
        if not any(subnet.overlaps(other) for other in used if other.prefixlen > 0):
            return subnet
    raise RuntimeError(f"no free /24 left in {ADDRESS_RANGE} on this machine")


def _is_mount_point(path: Path) -> bool:
    wanted = str(path)
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        if line.split()[4] == wanted:
            return True
    return False


# ---------------------------------------------------------------- files and processes


def build_runyard_wheel(dest: Path) -> Path:
    """Build runyard's wheel from the checkout it is imported from (a copy of its sources, so
    the build leaves nothing in the checkout). Uses the environment's setuptools: no index."""
    import runyard

    source_root = Path(runyard.__file__).resolve().parents[2]
    if not (source_root / "pyproject.toml").is_file():
        raise UserError(f"--hosts: runyard at {source_root} is not a checkout (no pyproject.toml); "
                        "namespaced hosts install runyard from a wheel built from the checkout.")
    with tempfile.TemporaryDirectory(prefix="ry-wheel-") as scratch:
        copy = Path(scratch) / "src"
        copy.mkdir()
        for name in ("pyproject.toml", "README.md"):
            shutil.copy2(source_root / name, copy / name)
        shutil.copytree(source_root / "platform", copy / "platform",
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
        dest.mkdir(parents=True, exist_ok=True)
        _pip("wheel", "--no-deps", "--no-build-isolation", "--wheel-dir", str(dest), str(copy))
    wheels = sorted(dest.glob("runyard-*.whl"))
    if len(wheels) != 1:
        raise RuntimeError(f"expected one runyard wheel in {dest}, found {[w.name for w in wheels]}")
    return wheels[0]


def make_host_dirs(layout: HostLayout) -> None:
    """The host's private folders: its /tmp, its home, the staging points of its mounts."""
    for folder in (layout.tmp_dir, layout.home_dir, Path(layout.dir) / "stage"):
        folder.mkdir(parents=True, exist_ok=True)
    os.chmod(layout.tmp_dir, 0o1777)


def prepare_host(layout: HostLayout, wheel: Path, token: str) -> subprocess.Popen:
    """Make the host's private folders and its copy of the token; start installing runyard
    into its home. Returns the pip process (the caller waits, so hosts install in parallel)."""
    make_host_dirs(layout)
    write_private(layout.outside(layout.token_path_inside), token)
    target = layout.outside(layout.site_dir_inside)
    return subprocess.Popen(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--quiet",
         "--disable-pip-version-check", "--target", str(target), str(wheel)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def write_etc_hosts(path: Path, names_and_addresses: list[tuple[str, str]]) -> None:
    """The hosts' shared /etc/hosts. Rewritten in place (same inode), so the hosts' bind
    mounts of it see a worker added later."""
    lines = ["127.0.0.1 localhost", *(f"{address} {name}" for name, address in names_and_addresses)]
    with open(path, "a+") as f:
        f.seek(0)
        f.truncate()
        f.write("\n".join(lines) + "\n")


def host_env(layout: HostLayout, extra: dict[str, str]) -> dict[str, str]:
    """The whole environment of a host's processes: built from nothing, so the root side's
    PYTHONPATH (the checkout) or VIRTUAL_ENV never leak in."""
    site = layout.site_dir_inside
    env = {
        "PATH": os.pathsep.join([os.path.join(site, "bin"), str(Path(sys.executable).parent),
                                 "/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin",
                                 "/sbin", "/bin"]),
        "PYTHONPATH": site,
        "HOME": layout.home,
        "HOSTNAME": layout.name,
        "LANG": "C.UTF-8",
        "RAY_AUTH_TOKEN_PATH": layout.token_path_inside,
    }
    env.update(extra)
    return env


def setup_script(layout: HostLayout, shared: list[SharedPath], hidden: list[str], etc_hosts: Path,
                 hosts_dir: Path, private: Sequence[tuple[str, str]] = ()) -> str:
    """The shell script that turns a fresh mount/UTS/PID namespace into the host, then runs
    its command ("$@") as a child, so the host lives exactly as long as that command.

    hidden: folders covered by an empty tmpfs (the checkouts, the laptop's state folder).
    hosts_dir: the folder of all hosts' private files; covered last, so no host reads
        another's /tmp through it.
    private: (folder on this side, existing path inside a shared path): the host's own folder
        at a path that is otherwise shared (a daemon's socket where every host's config says).
    Order matters: the shared paths are bind-mounted to staging points first (their sources
    may lie under what is hidden next: the venv under the checkout, pyenv's Python under
    home), then /tmp, home, /dev/shm and the hidden folders are covered, then the staged
    mounts are moved to their own paths, outermost first, then the hosts' folder is covered.
    """
    home = layout.home
    stage = Path(layout.dir) / "stage"
    q = shlex.quote
    lines = ["set -eu", f"hostname {q(layout.name)}"]
    staged = []
    for number, item in enumerate(shared):
        point = stage / str(number)
        option = " -o ro" if item.read_only else ""
        lines.append(f"mkdir -p {q(str(point))}")
        lines.append(f"mount --bind{option} {q(item.path)} {q(str(point))}")
        staged.append((item.path, point))
    covers = [("bind", str(layout.tmp_dir), "/tmp"), ("bind", str(layout.home_dir), home),
              ("tmpfs", f"size={HOST_SHM_SIZE},mode=1777", "/dev/shm")]
    for folder in sorted(hidden, key=lambda path: len(Path(path).parts)):
        if not any(Path(folder).is_relative_to(target) for _, _, target in covers):
            covers.append(("tmpfs", "size=1m,mode=0755", folder))
    for kind, source, target in sorted(covers, key=lambda c: len(Path(c[2]).parts)):
        lines.append(f"mkdir -p {q(target)}")
        if kind == "bind":
            lines.append(f"mount --bind {q(source)} {q(target)}")
        else:
            lines.append(f"mount -t tmpfs -o {source} runyard-hidden {q(target)}")
    lines.append(f"mount --bind -o ro {q(str(etc_hosts))} /etc/hosts")
    for path, point in sorted(staged, key=lambda s: len(Path(s[0]).parts)):
        lines.append(f"mkdir -p {q(path)}")
        lines.append(f"mount --move {q(str(point))} {q(path)}")
    for source, target in private:
        lines.append(f"mount --bind {q(source)} {q(target)}")
    # sh keeps this script open, so it reads on after its folder is covered.
    lines.append(f"mount -t tmpfs -o size=1m,mode=0755 runyard-hidden {q(str(hosts_dir))}")
    lines.append(f"cd {q(home)}")
    lines.append('"$@"')
    return "\n".join(lines) + "\n"


def host_command(layout: HostLayout, script: Path, command: list[str]) -> list[str]:
    """argv that runs `command` on the host: enter its network namespace, make its mount,
    UTS and PID namespaces, set them up, run. `--kill-child`: when this `unshare` dies, the
    host's init gets SIGKILL, and with it every process in the host's PID namespace."""
    return ["ip", "netns", "exec", layout.netns,
            "unshare", "--mount", "--uts", "--pid", "--fork", "--kill-child", "--mount-proc",
            "--propagation", "private", "--",
            "sh", str(script), *command]


def wait_for_installs(installs: list[tuple[str, subprocess.Popen]], timeout_s: float) -> None:
    for name, process in installs:
        try:
            output, _ = process.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            raise RuntimeError(f"installing runyard on host {name} took over {timeout_s:.0f} s")
        if process.returncode != 0:
            raise RuntimeError(f"installing runyard on host {name} failed:\n{output}")


def _pip(*args: str) -> None:
    completed = subprocess.run([sys.executable, "-m", "pip", *args, "--quiet",
                                "--disable-pip-version-check"],
                               capture_output=True, text=True, timeout=300)
    if completed.returncode != 0:
        raise RuntimeError(f"pip {args[0]} failed:\n{completed.stdout}{completed.stderr}")


# ---------------------------------------------------------------- the node backend


@dataclass
class HostRecord(NodeRecord):
    """A node that is a namespaced host: its network namespace, the bridge side of its veth,
    and its private folder (/tmp, home) on the root side."""

    netns: str = ""
    root_veth: str = ""
    host_dir: str = ""


class NamespacedHosts:
    """`up(hosts=N)`: every Ray node its own host. `prepare` makes the bridge, builds the
    wheel and makes every host, whose runyard installs run side by side while the tracking
    server starts; `start_node` boots the next made host (or makes one more: a worker added
    later) once its install is done."""

    kind = "hosts"
    record = HostRecord
    ray_nodes = True

    def __init__(self, hosts_root: Path = DEFAULT_HOSTS_ROOT):
        self.hosts_root = Path(hosts_root).resolve()
        self.installs: dict[str, subprocess.Popen] = {}  # host name -> its pip install

    def temp_root(self, cluster_id: str) -> str:
        # Every host's private /tmp and home, the wheel and the shared /etc/hosts.
        return str(self.hosts_root / cluster_id)

    def prepare(self, cluster: ClusterState, sizes: list[NodeSize]) -> None:
        Path(cluster.ray_temp_root).mkdir(parents=True)
        # Recorded before it is made, so that a failure half-way is undone by down().
        cluster.network = plan_network(f"ry{cluster.cluster_id[:6]}br")  # at most 15 characters
        cluster.save()
        make_network(cluster.network)
        build_runyard_wheel(Path(cluster.ray_temp_root) / "wheel")
        for size in sizes:
            self._make_host(cluster, size)

    def tracking_host(self, cluster: ClusterState) -> str:
        return cluster.network.root_address

    def start_node(self, cluster: ClusterState, size: NodeSize) -> NodeRecord:
        node = next((n for n in cluster.nodes if not n.pid), None) or self._make_host(cluster, size)
        install = self.installs.pop(node.name, None)
        if install is not None:
            wait_for_installs([(node.name, install)], timeout_s=INSTALL_TIMEOUT_S)
        self._boot(cluster, node)
        return node

    def stop_node(self, cluster: ClusterState, node: NodeRecord, timeout_s: float = 30.0) -> int:
        """SIGKILL every process of the host at once, as if the machine lost power; return how
        many there were. Its namespace stays (remove() deletes it)."""
        victims = processes_in_netns(node.netns)
        if node.pid:
            # The host's init dies with this `unshare` (--kill-child), and the kernel then
            # kills everything else in its PID namespace.
            try:
                os.kill(node.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            signal_group(node.pid, signal.SIGKILL)
            try:
                os.waitpid(node.pid, os.WNOHANG)  # our own child: no zombie left
            except ChildProcessError:
                pass
        deadline = time.monotonic() + timeout_s
        while processes_in_netns(node.netns):
            if time.monotonic() > deadline:
                raise RuntimeError(f"host {node.name}: processes {processes_in_netns(node.netns)} "
                                   f"still alive {timeout_s:.0f} s after SIGKILL")
            time.sleep(0.1)
        return len(victims)

    def remove(self, cluster: ClusterState) -> str:
        for install in self.installs.values():
            install.kill()
            install.wait()
        self.installs.clear()
        for node in reversed(cluster.nodes):
            remove_host_network(node.netns, node.root_veth)
        if cluster.network is not None:
            remove_network(cluster.network)
        shutil.rmtree(cluster.ray_temp_root, ignore_errors=True)
        try:
            # The hosts root itself, once no other cluster's hosts live there.
            Path(cluster.ray_temp_root).parent.rmdir()
        except OSError:
            pass
        bridge = cluster.network.bridge if cluster.network is not None else "-"
        return f", {len(cluster.nodes)} hosts and bridge {bridge} removed"

    def describe(self, cluster: ClusterState) -> list[str]:
        workers = len(cluster.nodes) - 1
        lines = [f"local cluster up: {1 + workers} hosts (head + {workers} worker{'s' if workers != 1 else ''}), "
                 f"each with its own network, mount, UTS and PID namespaces on bridge "
                 f"{cluster.network.bridge} ({cluster.network.subnet}); token auth on"]
        lines += [f"  {node.name:10s} {node.address:15s} cpus={node.num_cpus} resources={json.dumps(node.resources)}"
                  for node in cluster.nodes]
        return lines

    @staticmethod
    def layout(cluster: ClusterState, index: int) -> HostLayout:
        """Where host `index` (0: the head) lives and what it sees."""
        name = "head" if index == 0 else f"worker-{index}"
        return HostLayout(
            name=name,
            netns=f"runyard-{cluster.cluster_id}-{name}",
            address=cluster.network.node_address(index),
            dir=os.path.join(cluster.ray_temp_root, name),
            home=str(Path.home()),
        )

    def _make_host(self, cluster: ClusterState, size: NodeSize) -> HostRecord:
        """Record and make the next host: its network namespace, folders and setup script;
        start installing runyard into it."""
        index = len(cluster.nodes)
        if index > MAX_WORKER_HOSTS:
            raise UserError(f"at most {MAX_WORKER_HOSTS} worker hosts fit on one bridge.")
        layout = self.layout(cluster, index)
        hosts_dir = Path(cluster.ray_temp_root)
        log = Path(cluster.state_dir) / "logs" / f"{layout.name}.out"
        node = self.record(layout.name, 0, size.num_cpus, size.resources, layout.ray_temp_dir_outside,
                          str(log), RAY_METRICS_PORT, address=layout.address, netns=layout.netns,
                          root_veth=f"ry{cluster.cluster_id[:6]}n{index}", host_dir=layout.dir)
        cluster.nodes.append(node)
        cluster.save()
        add_host_network(cluster.network, layout.netns, node.root_veth, layout.address)
        etc_hosts = hosts_dir / "etc-hosts"
        write_etc_hosts(etc_hosts, [(n.name, n.address) for n in cluster.nodes if n.netns])
        self._provision(cluster, layout)
        shared = [*python_environment(), SharedPath(cluster.storage_dir, read_only=False),
                  *self._shared_paths(cluster)]
        hidden = [*hidden_checkouts(), cluster.state_dir]
        Path(layout.dir, "setup.sh").write_text(setup_script(layout, shared, hidden, etc_hosts, hosts_dir,
                                                             self._private_paths(cluster, layout)))
        return node

    def _provision(self, cluster: ClusterState, layout: HostLayout) -> None:
        """Give a made host what its node program needs before it boots: here the Ray token
        and runyard (installing in the background; start_node waits for it)."""
        wheel = next((Path(cluster.ray_temp_root) / "wheel").glob("runyard-*.whl"))
        self.installs[layout.name] = prepare_host(layout, wheel, Path(cluster.token_path).read_text().strip())

    def _shared_paths(self, cluster: ClusterState) -> list[SharedPath]:
        """Paths every host sees besides the Python environment and the storage."""
        return []

    def _private_paths(self, cluster: ClusterState, layout: HostLayout) -> list[tuple[str, str]]:
        """setup_script's `private`: the host's own folders inside the shared paths."""
        return []

    def _boot(self, cluster: ClusterState, node: HostRecord) -> None:
        """Start the made host: its setup script, then `ray start --block` as its one
        long-lived command (the head's first, so the workers have a GCS to join)."""
        index = cluster.nodes.index(node)
        layout = self.layout(cluster, index)
        head = cluster.network.node_address(0)
        command = [RAY_BIN, "start", "--block", "--node-ip-address", layout.address,
                   "--num-cpus", str(node.num_cpus), "--num-gpus", "0",
                   "--resources", json.dumps(node.resources),
                   "--metrics-export-port", str(RAY_METRICS_PORT),
                   "--object-store-memory", str(OBJECT_STORE_BYTES), "--disable-usage-stats"]
        if index == 0:
            command += ["--head", "--port", str(GCS_PORT), "--include-dashboard", "true",
                        "--dashboard-host", "0.0.0.0", "--dashboard-port", str(DASHBOARD_PORT)]
            cluster.gcs_address = f"{head}:{GCS_PORT}"
            cluster.jobs_address = f"http://{head}:{DASHBOARD_PORT}"
        else:
            command += ["--address", cluster.gcs_address]
        with open(node.log, "ab") as out:
            process = start_group(host_command(layout, Path(layout.dir) / "setup.sh", command),
                                  env=host_env(layout, cluster.cluster_env()), stdout=out,
                                  stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        node.pid = process.pid
        cluster.save()


def processes_in_netns(netns: str) -> list[psutil.Process]:
    """Live processes (not zombies) in the named network namespace."""
    try:
        wanted = f"net:[{os.stat(NETNS_DIR / netns).st_ino}]"
    except FileNotFoundError:
        return []
    found = []
    for process in psutil.process_iter():
        try:
            if os.readlink(f"/proc/{process.pid}/ns/net") == wanted and process.status() != psutil.STATUS_ZOMBIE:
                found.append(process)
        except (OSError, psutil.NoSuchProcess):
            continue
    return found
