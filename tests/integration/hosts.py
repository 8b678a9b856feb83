"""Real hosts in miniature (tier 4 of DESIGN.md's tests): each host is a network namespace with
its own Docker Engine and its own address on a private bridge, and each swarmlet agent runs inside
its host, reaching its engine through DOCKER_HOST, as in production.

    with host_topology(root) as topo:             # namespaces, bridge, engines, test images
        with host_cluster(topo, root / "c") as c:  # agents: init on h1, join on the others
            c.start(managers=3)
            topo.hosts[0].docker("ps")
            topo.cut(topo.hosts[2], topo.hosts[0])  # iptables inside both namespaces
            c.kill(topo.hosts[2])

How these machines want it (found the hard way, see issue 16):
- each `dockerd` gets its own --data-root, --exec-root, --pidfile, -H unix:// socket and its own
  --config-file: the machine's /etc/docker/daemon.json sets data-root, which clashes with the flag;
- it enters the namespace with `nsenter --net=`, never `ip netns exec`, which remounts /sys and
  dockerd then fails on "Devices cgroup isn't mounted";
- each engine gets its own --bip, so container addresses never repeat between hosts;
- with bridge-nf-call-iptables the hosts' traffic crosses the root namespace's FORWARD chain, whose
  policy is DROP once Docker runs there: one ACCEPT rule for the bridge lets it through;
- there is no registry: the test images are copied from the machine's engine (`docker save` into
  each engine's `docker load`).

Names and the subnet derive from the pid and a counter (and the subnet is checked against the
routes in use), so parallel test runs never meet. What a topology creates is written down (`Plan`,
in /run/swarmlet-test-hosts) before it is created, and teardown works from that record alone: it
runs after a failing test, and the next topology of any run sweeps what a killed run (SIGKILL,
OOM) left behind.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from swarmlet.testing.images import TEST_IMAGES
from tests.integration.cluster import (
    SWARMLET,
    CommandFailed,
    _alive,
    docker_containers,
    remove_secret_files,
    wait_for,
)

AGENT_PORT = 7946  # the default: every host has its own address, as in production
STATE_DIR = Path("/run/swarmlet-test-hosts")  # records of live topologies, for the sweep
_SUBNETS = ipaddress.IPv4Network("10.128.0.0/9")  # one /24 per topology
_BRIDGE_ADDR_INDEX = 254  # the root namespace's address on the bridge: the tests' vantage point
_DOCKERD_READY_S = 60.0
_DOCKERD_STOP_S = 15.0

_counter = [0]


# ---------------------------------------------------------------------------- the record


@dataclass
class HostPlan:
    """Everything one host owns, by name, so teardown needs nothing else."""

    index: int
    netns: str
    veth: str  # the root namespace's end; the other end is `eth0` inside the namespace
    addr: str
    root: Path  # the engine's data root, config, log and socket
    exec_root: Path  # short: containerd's sockets live under it
    bip: str

    @property
    def name(self) -> str:
        return f"h{self.index}"

    @property
    def docker_host(self) -> str:
        return f"unix://{self.root / 'docker.sock'}"

    @property
    def pidfile(self) -> Path:
        return self.root / "docker.pid"


@dataclass
class Plan:
    tag: str
    owner_pid: int
    bridge: str
    subnet: str  # e.g. 10.131.7.0/24
    forward_rule: list[str]  # `iptables -A` arguments (chain first) that let the bridge through
    hosts: list[HostPlan]

    @property
    def record(self) -> Path:
        return STATE_DIR / f"{self.tag}.json"

    def save(self) -> None:
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        text = json.dumps(dataclasses.asdict(self), default=str, indent=1)
        self.record.write_text(text)

    @classmethod
    def load(cls, path: Path) -> Plan:
        data = json.loads(path.read_text())
        hosts = []
        for h in data.pop("hosts"):
            hosts.append(
                HostPlan(**{**h, "root": Path(h["root"]), "exec_root": Path(h["exec_root"])})
            )
        return cls(**data, hosts=hosts)


def _free_subnet(seed: int) -> ipaddress.IPv4Network:
    """A /24 of 10.128.0.0/9 chosen by `seed` that no route of the root namespace overlaps (a
    parallel run's bridge has one), so two runs never share a subnet."""
    routes = _run(["ip", "-4", "-j", "route", "show", "table", "all"]).stdout
    taken: list[ipaddress.IPv4Network] = []
    for r in json.loads(routes or "[]"):
        dst = r.get("dst", "")
        if dst and dst != "default" and r.get("type", "unicast") in ("unicast", "local"):
            with contextlib.suppress(ValueError):
                taken.append(ipaddress.IPv4Network(dst, strict=False))
    subnets = list(_SUBNETS.subnets(new_prefix=24))
    for i in range(len(subnets)):
        candidate = subnets[(seed + i) % len(subnets)]
        if not any(candidate.overlaps(t) for t in taken):
            return candidate
    raise AssertionError(f"no free /24 in {_SUBNETS} for a test topology")


def make_plan(root: Path, count: int) -> Plan:
    assert 1 <= count <= 9, "host names and interface names allow 1 to 9 hosts"
    _counter[0] += 1
    pid = os.getpid()
    tag = f"swl{pid:x}{_counter[0]:x}"  # interface names: 15 bytes at most
    subnet = _free_subnet(pid * 16 + _counter[0])
    bridge = f"{tag}br"
    chain = (
        "DOCKER-USER"
        if _run(["iptables", "-S", "DOCKER-USER"], check=False).returncode == 0
        else "FORWARD"
    )
    rule = [chain, "-i", bridge, "-o", bridge, "-m", "comment", "--comment", tag, "-j", "ACCEPT"]
    hosts = [
        HostPlan(
            index=i,
            netns=f"{tag}h{i}",
            veth=f"{tag}h{i}",
            addr=str(subnet.network_address + i),
            root=root / f"h{i}",
            exec_root=Path("/run") / tag / f"h{i}",
            bip=f"10.{i}.0.1/24",  # inside the namespace only; never routed between hosts
        )
        for i in range(1, count + 1)
    ]
    return Plan(tag, pid, bridge, str(subnet), rule, hosts)


# ---------------------------------------------------------------------------- hosts


@dataclass
class Host:
    """One host: a namespace, an address on the bridge and its own Docker Engine."""

    plan: HostPlan
    dockerd: subprocess.Popen[bytes] | None = None

    @property
    def name(self) -> str:
        return self.plan.name

    @property
    def addr(self) -> str:
        return self.plan.addr

    @property
    def docker_host(self) -> str:
        return self.plan.docker_host

    def env(self) -> dict[str, str]:
        return {**os.environ, "DOCKER_HOST": self.docker_host}

    def run(
        self,
        argv: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        check: bool = True,
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[str]:
        """Run `argv` in this host's network namespace, with its engine as DOCKER_HOST."""
        cmd = ["nsenter", f"--net=/run/netns/{self.plan.netns}", *argv]
        return _run(cmd, env={**self.env(), **(env or {})}, check=check, timeout=timeout)

    def docker(self, *args: str, check: bool = True, timeout: float = 60) -> str:
        """`docker -H <this engine> ARGS`; its stdout."""
        cmd = ["docker", "-H", self.docker_host, *args]
        return _run(cmd, check=check, timeout=timeout).stdout

    def containers(self, **labels: str) -> list[dict[str, str]]:
        """Swarmlet's containers on this engine (running or not), as {id, node, task, service,
        state}, filtered by swarmlet labels (`service="web"` is `swarmlet.service=web`)."""
        filters = ["label=swarmlet.task"]
        filters += [f"label=swarmlet.{key}={value}" for key, value in labels.items()]
        return docker_containers(self.docker, filters)

    def running(self, service: str) -> int:
        """How many containers of `service` this engine runs (the ground truth)."""
        return sum(c["state"] == "running" for c in self.containers(service=service))

    def dockerd_log_tail(self, lines: int = 30) -> str:
        try:
            text = (self.plan.root / "dockerd.log").read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


@dataclass
class Topology:
    """The hosts on their bridge, and the cuts between them. The test process itself stands on
    the bridge (address .254), so it reaches every host's published ports directly."""

    plan: Plan
    hosts: list[Host]
    _cuts: list[tuple[Host, list[str]]] = field(default_factory=list)

    def cut(self, a: Host, b: Host, *, loss: float = 1.0) -> None:
        """Drop the traffic between hosts `a` and `b`, both ways: all of it, or each packet with
        probability `loss` (iptables' `statistic` match; there is no netem here). Each namespace
        drops what arrives from the other in the raw table's PREROUTING, before Docker's DNAT:
        that cuts the agents, the published ports and the containers' traffic alike (what
        leaves a container is masqueraded to its host's address), and counts each packet once."""
        assert 0.0 < loss <= 1.0, loss
        drop = ["-j", "DROP"]
        if loss < 1.0:
            drop = ["-m", "statistic", "--mode", "random", "--probability", f"{loss}", *drop]
        for here, there in ((a, b), (b, a)):
            rule = ["PREROUTING", "-s", there.addr, "-m", "comment", "--comment", self.plan.tag]
            rule += drop
            here.run(["iptables", "-t", "raw", "-I", *rule])
            self._cuts.append((here, rule))

    def isolate(self, victim: Host, *, loss: float = 1.0) -> None:
        """Cut `victim` off from every other host."""
        for other in self.hosts:
            if other is not victim:
                self.cut(victim, other, loss=loss)

    def heal(self) -> None:
        """Remove every cut."""
        while self._cuts:
            host, rule = self._cuts.pop()
            host.run(["iptables", "-t", "raw", "-D", *rule], check=False)

    def reset(self) -> None:
        """Back to empty engines with a whole network, for the next cluster: heals, removes every
        container and the networks agents created (the engines and images stay)."""
        self.heal()

        def empty(host: Host) -> None:
            ids = host.docker("ps", "-aq", check=False).split()
            if ids:
                host.docker("rm", "-f", *ids, check=False, timeout=120)
            host.docker("network", "prune", "-f", check=False)

        _each(self.hosts, empty)


@contextlib.contextmanager
def host_topology(
    root: Path,
    count: int = 3,
    images: Sequence[str] = TEST_IMAGES,
    engine_config: Mapping[str, Any] | None = None,
) -> Iterator[Topology]:
    """`count` hosts h1..hN in namespaces on one bridge, each with its own running engine holding
    `images` (copied from the machine's engine, which must have them) and configured with
    `engine_config` (daemon.json's keys) too. Everything is removed on exit, whatever happened."""
    sweep_stale()
    plan = make_plan(root, count)
    topo = Topology(plan, [Host(h) for h in plan.hosts])
    plan.save()  # before creating anything: the sweep must know what to remove
    try:
        _create_network(plan)
        _each(topo.hosts, partial(_start_dockerd, config=engine_config or {}))
        _load_images(topo, images, root / "images.tar")
        yield topo
    finally:
        try:
            teardown(plan)
        finally:
            for host in topo.hosts:  # reap them: a zombie engine would still show in `ps`
                if host.dockerd is not None:
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        host.dockerd.wait(timeout=10)


def _create_network(plan: Plan) -> None:
    subnet = ipaddress.ip_network(plan.subnet)
    _run(["ip", "link", "add", plan.bridge, "type", "bridge"])
    bridge_addr = f"{subnet.network_address + _BRIDGE_ADDR_INDEX}/{subnet.prefixlen}"
    _run(["ip", "addr", "add", bridge_addr, "dev", plan.bridge])
    _run(["ip", "link", "set", plan.bridge, "up"])
    _run(["iptables", "-I", *plan.forward_rule])
    for h in plan.hosts:
        _run(["ip", "netns", "add", h.netns])
        _run(["ip", "link", "add", h.veth, "type", "veth", "peer", "name", f"{h.veth}p"])
        _run(["ip", "link", "set", h.veth, "master", plan.bridge, "up"])
        _run(["ip", "link", "set", f"{h.veth}p", "netns", h.netns])
        ns = ["ip", "-n", h.netns]
        _run([*ns, "link", "set", f"{h.veth}p", "name", "eth0"])
        _run([*ns, "addr", "add", f"{h.addr}/{subnet.prefixlen}", "dev", "eth0"])
        _run([*ns, "link", "set", "eth0", "up"])
        _run([*ns, "link", "set", "lo", "up"])


def _start_dockerd(host: Host, config: Mapping[str, Any]) -> None:
    p = host.plan
    p.root.mkdir(parents=True, exist_ok=True)
    p.exec_root.mkdir(parents=True, exist_ok=True)
    config_file = p.root / "daemon.json"
    # Short shutdown: teardown removes the containers first anyway.
    config_file.write_text(json.dumps({"shutdown-timeout": 2, "log-level": "warn", **config}))
    cmd = [
        "nsenter",
        f"--net=/run/netns/{p.netns}",
        "dockerd",
        "--config-file",
        str(config_file),
        "--data-root",
        str(p.root / "data"),
        "--exec-root",
        str(p.exec_root),
        "--pidfile",
        str(p.pidfile),
        "-H",
        p.docker_host,
        "--bip",
        p.bip,
    ]
    with open(p.root / "dockerd.log", "ab") as log:
        # nsenter execs dockerd: this pid is the engine's.
        host.dockerd = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def ready() -> bool:
        assert host.dockerd is not None
        if host.dockerd.poll() is not None:
            raise AssertionError(
                f"dockerd of {host.name} exited {host.dockerd.returncode}:\n"
                f"{host.dockerd_log_tail()}"
            )
        docker = ["docker", "-H", host.docker_host, "version", "--format", "{{.Server.Version}}"]
        return _run(docker, check=False).returncode == 0

    wait_for(f"the engine of {host.name}", ready, timeout=_DOCKERD_READY_S)


def _load_images(topo: Topology, images: Sequence[str], tar: Path) -> None:
    """One `docker save` from the machine's engine, loaded into every host's engine."""
    if not images:
        return
    _run(["docker", "save", "-o", str(tar), *images], timeout=120)
    try:
        _each(topo.hosts, lambda h: h.docker("load", "-q", "-i", str(tar), timeout=120))
    finally:
        tar.unlink(missing_ok=True)


# ---------------------------------------------------------------------------- teardown


def teardown(plan: Plan) -> None:
    """Remove everything `plan` names, in an order that leaves nothing behind. Every step runs
    whatever the previous ones did (their errors are raised together at the end); safe to run
    twice, and on a half-built topology."""
    errors: list[str] = []

    def attempt(step: Callable[[], object], what: str) -> None:
        try:
            step()
        except Exception as exc:  # keep going: the next steps free the rest
            errors.append(f"{what}: {exc!r}")

    with ThreadPoolExecutor(len(plan.hosts)) as pool:
        stops = [(h, pool.submit(_stop_engine, h)) for h in plan.hosts]
    for h, stop in stops:
        attempt(stop.result, f"stopping the engine of {h.name}")
    for h in plan.hosts:
        # Deleting the namespace's name frees the namespace, and with it its end of the veth
        # pair, hence the pair, once no process is left inside: not at once.
        attempt(partial(_run, ["ip", "netns", "del", h.netns], check=False), h.netns)
    for link in [h.veth for h in plan.hosts] + [plan.bridge]:
        attempt(partial(_delete_link, link), link)
    while _run(["iptables", "-D", *plan.forward_rule], check=False).returncode == 0:
        pass
    for h in plan.hosts:
        attempt(partial(_unmount_under, h.root), f"mounts under {h.root}")
        attempt(partial(_unmount_under, h.exec_root), f"mounts under {h.exec_root}")
        shutil.rmtree(h.root, ignore_errors=True)
    shutil.rmtree(Path("/run") / plan.tag, ignore_errors=True)
    plan.record.unlink(missing_ok=True)
    if errors:
        raise AssertionError(f"tearing down test topology {plan.tag}: " + "; ".join(errors))


def _stop_engine(h: HostPlan) -> None:
    """Remove the containers, stop dockerd (SIGTERM, then SIGKILL), then kill whatever of its own
    survived: its containerd and shims (the exec root is in their command line) and the processes
    of its containers (in a cgroup named after a container of its data root). Nothing of another
    engine is touched."""
    containers = {d.name for d in (h.root / "data" / "containers").glob("*")}
    if (h.root / "docker.sock").exists():
        docker = ["docker", "-H", h.docker_host]
        ids = _run([*docker, "ps", "-aq"], check=False, timeout=30).stdout.split()
        if ids:
            _run([*docker, "rm", "-f", *ids], check=False, timeout=120)
    pid = _read_pid(h.pidfile)
    if pid is not None and _is_dockerd_of(pid, h):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + _DOCKERD_STOP_S
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    leftovers = _leftover_processes(str(h.exec_root), containers)
    for leftover in leftovers:
        with contextlib.suppress(ProcessLookupError):
            os.kill(leftover, signal.SIGKILL)
    wait_for(
        f"the processes of {h.name}'s engine to die",
        lambda: not any(_alive(p) for p in leftovers),
        timeout=10,
    )


def _is_dockerd_of(pid: int, h: HostPlan) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"dockerd" in cmdline and str(h.pidfile).encode() in cmdline


def _leftover_processes(exec_root: str, containers: set[str]) -> list[int]:
    needle = exec_root.encode()
    cgroups = tuple(f"/docker/{c}" for c in containers)
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if needle in (entry / "cmdline").read_bytes() or (
                cgroups and any(c in (entry / "cgroup").read_text() for c in cgroups)
            ):
                pids.append(int(entry.name))
    return pids


def _unmount_under(path: Path) -> None:
    """Detach every mount at or below `path` (overlay layers, shm, netns files of a killed
    engine), deepest first, so that removing the directory removes only ours."""
    prefix = str(path)
    mounts = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4].replace("\\040", " ")
            if point == prefix or point.startswith(prefix + "/"):
                mounts.append(point)
    for point in sorted(mounts, key=len, reverse=True):
        _run(["umount", "-l", point], check=False)


def _link_exists(name: str) -> bool:
    return _run(["ip", "link", "show", name], check=False).returncode == 0


def _delete_link(name: str) -> None:
    """Delete link `name` if it still exists, whoever else is deleting it meanwhile."""
    if _link_exists(name):
        _run(["ip", "link", "del", name], check=False)
    wait_for(f"link {name} to go", lambda: not _link_exists(name), timeout=10)


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def sweep_stale() -> list[str]:
    """Tear down the topologies whose test process is gone (killed before its teardown ran);
    the tags it removed."""
    removed = []
    for record in sorted(STATE_DIR.glob("swl*.json")) if STATE_DIR.is_dir() else ():
        try:
            plan = Plan.load(record)
        except (OSError, ValueError, TypeError, KeyError):
            continue
        if not _alive(plan.owner_pid):
            teardown(plan)
            removed.append(plan.tag)
    return removed


# ---------------------------------------------------------------------------- agents


@dataclass
class HostCluster:
    """swarmlet agents on a topology, one per host, each started inside its host. The CLI runs
    inside the host it names too ("host-b$ swarmlet ..."), though the control socket in the data
    dir would answer from anywhere (the filesystem is shared)."""

    topology: Topology
    root: Path  # the agents' data dirs: root/h1, root/h2, ...
    port: int = AGENT_PORT
    members: list[Host] = field(default_factory=list)
    cluster_id: str = ""

    def data_dir(self, host: Host) -> Path:
        return self.root / host.name

    def cli(
        self, host: Host, *args: str, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """`swarmlet ARGS` on `host` (its data dir, its namespace, its engine)."""
        env = {"SWARMLET_DATA_DIR": str(self.data_dir(host))}
        return host.run([*SWARMLET, *args], env=env, check=check, timeout=timeout)

    def _agent_args(self, host: Host) -> list[str]:
        return [
            "--advertise-addr",
            host.addr,
            "--port",
            str(self.port),
            "--publish-addr",
            host.addr,
            "--name",
            host.name,
        ]

    def init(self, host: Host) -> None:
        self.cli(host, "init", *self._agent_args(host))
        self.members.append(host)
        self.cluster_id = self.status(host)["cluster_id"]

    def token(self, role: str) -> str:
        return self.cli(self.members[0], "join-token", "-q", role).stdout.strip()

    def join(self, host: Host, role: str, via: Host | None = None) -> None:
        via = via or self.members[0]
        token = self.token(role)
        self.cli(host, "join", "--token", token, *self._agent_args(host), f"{via.addr}:{self.port}")
        self.members.append(host)

    def start(self, managers: int, workers: int = 0) -> None:
        """init on h1, then managers and workers join in host order."""
        hosts = self.topology.hosts
        assert managers >= 1 and managers + workers <= len(hosts)
        self.init(hosts[0])
        for h in hosts[1:managers]:
            self.join(h, "manager")
        for h in hosts[managers : managers + workers]:
            self.join(h, "worker")

    # ------------------------------------------------------------------ observation

    def status(self, host: Host) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self.cli(host, "status").stdout)
        return result

    def node_ls(self, host: Host) -> list[dict[str, Any]]:
        out = self.cli(host, "node", "ls", "--format", "json", timeout=30).stdout
        result: list[dict[str, Any]] = json.loads(out)
        return result

    def node_status(self, observer: Host) -> dict[str, str]:
        """{hostname: status} as `observer` sees it."""
        return {n["hostname"]: n["status"] for n in self.node_ls(observer)}

    def wait_all_ready(self, observer: Host, timeout: float = 60) -> None:
        """Until `observer` sees every member of this cluster ready."""
        count = len(self.members)
        wait_for(
            f"{count} ready nodes",
            lambda: list(self.node_status(observer).values()) == ["ready"] * count,
            timeout=timeout,
        )

    def node_id(self, host: Host) -> str:
        node_id: str = self.status(host)["node_id"]
        return node_id

    def services(self, via: Host) -> dict[str, dict[str, Any]]:
        out = self.cli(via, "service", "ls", "--format", "json").stdout
        return {s["name"]: s for s in json.loads(out)}

    def tasks(self, name: str, via: Host) -> list[dict[str, Any]]:
        out = self.cli(via, "service", "ps", name, "--format", "json").stdout
        result: list[dict[str, Any]] = json.loads(out)
        return result

    def running_per_host(self, service: str) -> dict[str, int]:
        """{host name: running containers of `service` on its own engine}."""
        return {h.name: h.running(service) for h in self.topology.hosts}

    # ------------------------------------------------------------------ faults

    def agent_pid(self, host: Host) -> int | None:
        return _read_pid(self.data_dir(host) / "agent.pid")

    def kill(self, host: Host) -> None:
        """SIGKILL the agent of `host` (its engine and containers keep running)."""
        pid = self.agent_pid(host)
        assert pid is not None, f"the agent of {host.name} has no pid file"
        os.kill(pid, signal.SIGKILL)
        wait_for(f"the agent of {host.name} to die", lambda: not _alive(pid), timeout=10)

    def restart(self, host: Host) -> None:
        self.cli(host, "agent", "--detach")

    def cleanup(self) -> None:
        for host in self.topology.hosts:
            pid = self.agent_pid(host)
            if pid is not None and _alive(pid) and _is_agent(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        self.topology.reset()
        for host in self.topology.hosts:  # the namespaces share this machine's tmpfs
            remove_secret_files(self.data_dir(host))


def _is_agent(pid: int) -> bool:
    try:
        return b"swarmlet" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


@contextlib.contextmanager
def host_cluster(topology: Topology, root: Path) -> Iterator[HostCluster]:
    """An empty cluster on `topology` (call `start`); on exit its agents are killed and the
    engines emptied, so the next cluster finds clean hosts."""
    cluster = HostCluster(topology, root)
    try:
        yield cluster
    finally:
        cluster.cleanup()


# ---------------------------------------------------------------------------- helpers


def _run(
    cmd: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    check: bool = True,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        list(cmd), capture_output=True, text=True, timeout=timeout, check=False, env=env
    )
    if check and proc.returncode != 0:
        raise CommandFailed(
            f"{' '.join(cmd)} exited {proc.returncode}\n"
            f"stdout: {proc.stdout}\nstderr: {proc.stderr}"
        )
    return proc


def _each(hosts: Sequence[Host], action: Callable[[Host], object]) -> None:
    """`action(host)` for every host at once (engines start and load in parallel); the first
    failure is raised after all have finished."""
    with ThreadPoolExecutor(max(1, len(hosts))) as pool:
        for future in [pool.submit(action, h) for h in hosts]:
            future.result()
