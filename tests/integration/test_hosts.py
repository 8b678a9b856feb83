"""The production topology in miniature (tests/integration/hosts.py): each agent in its own
network namespace with its own Docker Engine, hosts on one bridge, partitions cut between
namespaces. First the harness itself (isolation, cuts, a teardown that leaves nothing), then a
3-host cluster on it, checked on each host's own engine."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator, Sequence
from pathlib import Path

import docker
import pytest

from swarmlet.testing.images import BUSYBOX_IMAGE, WEB_IMAGE
from tests.integration.cluster import _alive, answer, docker_cli, docker_containers, get, wait_for
from tests.integration.hosts import (
    STATE_DIR,
    Host,
    HostCluster,
    Plan,
    Topology,
    host_cluster,
    host_topology,
    sweep_stale,
)

pytestmark = [pytest.mark.integration, pytest.mark.docker, pytest.mark.usefixtures("docker_images")]

WEB_PORT = 8080  # every host has its own addresses: production's ports need no offset


@pytest.fixture(scope="module")
def topology(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Topology]:
    """Three hosts with their engines, shared by this module's tests (the engines are what is
    slow to start); each cluster empties them again when it ends."""
    with host_topology(tmp_path_factory.mktemp("hosts")) as topo:
        yield topo


@pytest.fixture
def cluster(topology: Topology, tmp_path: Path) -> Iterator[HostCluster]:
    """Three managers, h1 (init), h2 and h3 (join with the manager token)."""
    with host_cluster(topology, tmp_path / "agents") as c:
        c.start(managers=3)
        yield c


def can_connect(src: Host, addr: str, port: int) -> bool:
    """Does a TCP connect from inside `src`'s namespace to addr:port succeed?"""
    # A cut link drops packets, so a failure takes the whole timeout: keep it short (a healthy
    # link on one bridge answers in well under a millisecond).
    code = f"import socket; socket.create_connection(({addr!r}, {port}), timeout=1).close()"
    return src.run([sys.executable, "-c", code], check=False).returncode == 0


def leftovers(plan: Plan, containers: Sequence[str] = ()) -> list[str]:
    """What of `plan` (and of its engines' `containers`) still exists on the machine, in words
    (empty: nothing)."""
    found = []
    netns = subprocess.run(["ip", "netns"], capture_output=True, text=True).stdout
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    rules = subprocess.run(["iptables", "-S"], capture_output=True, text=True).stdout
    with open("/proc/self/mountinfo") as f:
        mounts = f.read()
    for text, where in ((netns, "ip netns"), (links, "ip link"), (rules, "iptables -S")):
        found += [f"{where}: {line}" for line in text.splitlines() if plan.tag in line]
    for h in plan.hosts:
        found += [f"mount: {line}" for line in mounts.splitlines() if str(h.root) in line]
        for entry in Path("/proc").glob("[0-9]*"):
            if not _alive(int(entry.name)):  # a zombie: init reaps it
                continue
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if str(h.exec_root) in cmdline or str(h.root) in cmdline:
                found.append(f"process {entry.name}: {cmdline}")
            with contextlib.suppress(OSError):
                cgroups = (entry / "cgroup").read_text()
                if any(c in cgroups for c in containers):
                    found.append(f"process {entry.name} of a container: {cmdline}")
        if h.root.exists():
            found.append(f"directory {h.root}")
    if plan.record.exists():
        found.append(f"record {plan.record}")
    return found


# ---------------------------------------------------------------------------- the harness


def test_hosts_have_their_own_engines_and_addresses(topology: Topology) -> None:
    # Not `{{.ID}}`: dockerd 20.10 derives it from /etc/docker/key.json, the same for all.
    roots = {h.docker("info", "--format", "{{.DockerRootDir}}").strip() for h in topology.hosts}
    assert len(roots) == 3
    for h in topology.hosts:
        assert set(h.docker("images", "--format", "{{.Repository}}:{{.Tag}}").split()) >= {
            BUSYBOX_IMAGE,
            WEB_IMAGE,
        }
        addrs = h.run(["ip", "-o", "-4", "addr", "show", "eth0"]).stdout
        assert f"inet {h.addr}/24" in addrs
    # A container on h2's engine is not on h1's.
    h1, h2, _ = topology.hosts
    h2.docker("run", "-d", "--name", "probe", "-p", f"{h2.addr}:{WEB_PORT}:80", WEB_IMAGE)
    try:
        assert "probe" not in h1.docker("ps", "-a", "--format", "{{.Names}}")
        assert wait_for("the probe to answer", lambda: answer(h2.addr, WEB_PORT))
    finally:
        h2.docker("rm", "-f", "probe")


def test_cut_drops_traffic_between_two_hosts_only_until_healed(topology: Topology) -> None:
    h1, h2, h3 = topology.hosts
    for h in (h1, h2):
        h.docker("run", "-d", "--name", "probe", "-p", f"{h.addr}:{WEB_PORT}:80", WEB_IMAGE)
    h1_probe = h1.docker("inspect", "--format", "{{.Config.Hostname}}", "probe").strip()
    h2.docker("run", "-d", "--name", "client", BUSYBOX_IMAGE, "sleep", "600")

    def from_a_container_on_h2() -> str:
        """What a container on h2's engine gets from h1's probe (masqueraded to h2's address)."""
        # nc, not wget: this static busybox's wget segfaults; -w bounds the wait.
        get = f"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 1 {h1.addr} {WEB_PORT}"
        out = h2.docker("exec", "client", "sh", "-c", get, check=False).strip()
        return out.splitlines()[-1] if out else ""

    try:
        wait_for("h1 to reach the probe on h2", lambda: can_connect(h1, h2.addr, WEB_PORT))
        wait_for("the client on h2 to reach h1's", lambda: from_a_container_on_h2() == h1_probe)
        topology.cut(h1, h2)
        assert not can_connect(h1, h2.addr, WEB_PORT)  # a published port (DNAT)
        assert not can_connect(h2, h1.addr, WEB_PORT)  # the other way
        assert from_a_container_on_h2() == ""  # containers' traffic
        assert can_connect(h3, h1.addr, WEB_PORT) and can_connect(h3, h2.addr, WEB_PORT)
        topology.heal()
        assert can_connect(h1, h2.addr, WEB_PORT) and can_connect(h2, h1.addr, WEB_PORT)
        assert from_a_container_on_h2() == h1_probe
    finally:
        topology.heal()
        h1.docker("rm", "-f", "probe")
        h2.docker("rm", "-f", "probe", "client")


def test_a_lossy_link_drops_a_share_of_the_packets(topology: Topology) -> None:
    h1, h2, _ = topology.hosts
    sent = 400
    code = textwrap.dedent(
        f"""
        import socket
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for _ in range({sent}):
            s.sendto(b"x", ({h2.addr!r}, 9))
        """
    )
    topology.cut(h1, h2, loss=0.5)
    try:
        h1.run([sys.executable, "-c", code])
        rules = h2.run(["iptables", "-t", "raw", "-L", "PREROUTING", "-v", "-x", "-n"]).stdout
    finally:
        topology.heal()
    (counters,) = [line.split() for line in rules.splitlines() if topology.plan.tag in line]
    dropped = int(counters[0])  # packets the rule matched, hence dropped
    assert 100 < dropped < 300, rules  # binomial(400, 0.5): 10 standard deviations either side


def test_the_container_listing_says_exited_once_docker_has_reported_the_exit() -> None:
    """Docker 20.10 sends a container's "die" event before `docker ps` shows it exited (its
    cleanup comes between): a job test once saw its last task complete and its container
    "running". The harness's listing reads the state as inspect has it: exited, at the event."""
    label = f"swarmlet.test-listing={os.getpid()}"
    client = docker.from_env()
    events = client.events(decode=True, filters={"event": "die", "label": label})
    try:
        container = client.containers.run(
            BUSYBOX_IMAGE, ["true"], detach=True, labels=dict([label.split("=")])
        )
        try:
            next(iter(events))  # it has exited: the agent would now report its task done
            listed = docker_containers(docker_cli, [f"label={label}"])
            assert [(c["id"], c["state"]) for c in listed] == [(container.id, "exited")]
        finally:
            container.remove(force=True)
    finally:
        events.close()


class FailingTest(Exception):
    pass


def test_teardown_after_a_failing_test_and_a_crashed_engine_leaves_nothing(tmp_path: Path) -> None:
    seen: list[Plan] = []
    containers: list[str] = []

    def failing_test() -> None:
        with host_topology(tmp_path / "t", count=1, images=[BUSYBOX_IMAGE]) as topo:
            seen.append(topo.plan)
            h1 = topo.hosts[0]
            containers.append(h1.docker("run", "-d", BUSYBOX_IMAGE, "sleep", "3600").strip())
            assert leftovers(topo.plan, containers)  # it sees a live topology (mounts, processes)
            # The engine dies (OOM, a bug): its shim, container and mounts stay behind.
            assert h1.dockerd is not None
            os.kill(h1.dockerd.pid, signal.SIGKILL)
            raise FailingTest

    with pytest.raises(FailingTest):
        failing_test()
    assert leftovers(seen[0], containers) == []


def test_a_killed_run_is_swept_by_the_next(tmp_path: Path) -> None:
    """A test process killed with SIGKILL runs no teardown: the next topology removes what the
    record of the dead process names."""
    script = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from tests.integration.hosts import host_topology
        with host_topology(Path({str(tmp_path / "killed")!r}), count=1, images=[]) as topo:
            print(topo.plan.record, flush=True)
            time.sleep(600)
        """
    )
    with subprocess.Popen(
        [sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parents[2],
    ) as proc:
        try:
            assert proc.stdout is not None
            record = Path(proc.stdout.readline().strip())
            assert record.parent == STATE_DIR and record.exists()
            plan = Plan.load(record)
        finally:
            os.kill(proc.pid, signal.SIGKILL)
    assert leftovers(plan)  # the engine, its namespace and bridge outlive the killed process
    assert plan.tag in sweep_stale()
    assert leftovers(plan) == []


# ---------------------------------------------------------------------------- a cluster on it


def runs_inside(pid: int, host: Host) -> bool:
    """Is process `pid` in `host`'s network namespace, with `host`'s engine as DOCKER_HOST?"""
    same_netns = (
        os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat(f"/run/netns/{host.plan.netns}").st_ino
    )
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return same_netns and f"DOCKER_HOST={host.docker_host}".encode() in environ


def test_three_hosts_form_a_cluster(cluster: HostCluster, topology: Topology) -> None:
    for observer in topology.hosts:
        nodes = {n["hostname"]: n for n in cluster.node_ls(observer)}
        assert sorted(nodes) == ["h1", "h2", "h3"]
        assert all(n["status"] == "ready" for n in nodes.values())
        for h in topology.hosts:
            assert nodes[h.name]["addr"].split(":")[0] == h.addr
    for h in topology.hosts:
        pid = cluster.agent_pid(h)
        assert pid is not None and runs_inside(pid, h)


def test_a_killed_agent_is_down_then_restarts_inside_its_host(
    cluster: HostCluster, topology: Topology
) -> None:
    h1, h2, _ = topology.hosts
    node_id = cluster.node_id(h2)
    cluster.kill(h2)
    wait_for("h1 to see h2 down", lambda: cluster.node_status(h1)["h2"] == "down")
    cluster.restart(h2)
    wait_for("h1 to see h2 ready", lambda: cluster.node_status(h1)["h2"] == "ready")
    pid = cluster.agent_pid(h2)
    assert pid is not None and runs_inside(pid, h2)
    assert cluster.node_id(h2) == node_id


def test_three_replicas_run_one_on_each_hosts_own_engine(
    cluster: HostCluster, topology: Topology
) -> None:
    h1 = topology.hosts[0]
    cluster.cli(
        h1, "service", "create", "--name", "web", "--replicas", "3", "-p", f"{WEB_PORT}:80",
        WEB_IMAGE, timeout=120,
    )  # fmt: skip
    assert cluster.running_per_host("web") == {"h1": 1, "h2": 1, "h3": 1}
    for h in topology.hosts:  # each engine runs its own node's task, not another's
        (container,) = h.containers(service="web")
        assert container["node"] == cluster.node_id(h)
    assert cluster.services(topology.hosts[2])["web"]["replicas_running"] == 3
    # The mesh on h1 reaches the replicas on the other hosts' engines.
    names = {
        h.docker("inspect", "--format", "{{.Config.Hostname}}", c["id"]).strip()
        for h in topology.hosts
        for c in h.containers(service="web")
    }
    seen = {get(h1.addr, WEB_PORT) for _ in range(12)}
    assert seen == names


def test_a_host_cut_off_is_declared_down_and_its_replica_moves(
    cluster: HostCluster, topology: Topology
) -> None:
    h1, h2, h3 = topology.hosts
    cluster.cli(h1, "service", "create", "--name", "web", "--replicas", "3", WEB_IMAGE, timeout=120)
    assert cluster.running_per_host("web") == {"h1": 1, "h2": 1, "h3": 1}
    topology.isolate(h3)
    wait_for(
        "h1 and h2 to see h3 down",
        lambda: all(cluster.node_status(o)["h3"] == "down" for o in (h1, h2)),
    )
    wait_for(
        "3 replicas on h1's and h2's engines",
        lambda: h1.running("web") + h2.running("web") == 3,
    )
    survivors = [t for t in cluster.tasks("web", via=h1) if t["state"] == "running"]
    assert {t["node_name"] for t in survivors} <= {"h1", "h2"}, json.dumps(survivors)
    topology.heal()
    wait_for("h1 to see h3 ready", lambda: cluster.node_status(h1)["h3"] == "ready", timeout=60)
    wait_for(
        "3 replicas in all, none left stale on h3",
        lambda: sum(cluster.running_per_host("web").values()) == 3,
        timeout=90,
    )
