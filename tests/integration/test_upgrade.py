"""Upgrades across releases (issue #18): the previous release, built from git history into its own
virtualenv, beside this tree, in one cluster.

A 3-manager cluster starts on the previous release, and a worker of this release joins it; the
managers are upgraded one at a time (stop, start this tree's agent on the same data dir), and
after each step a service is scaled, the leader is killed (failover) and the published port is
checked through every node's mesh. The streams speak protocol 1 to old agents and this release's
between new ones (the agents' counters say so); writes are sent as a `Once` only once every
member is of this release. The worker is a Raft learner while old managers lead, and
leaves the group for a session's view (issue #16) once every manager is of this release. The
data dirs the old release made are migrated when the new agent starts; a data dir of a newer
format is refused, with a message that names it.

About 45 s in all (the build takes 4-7 s), so it runs with the other integration tests. The
build installs the release with pip, whose isolated build fetches setuptools from the package
index; git history or a build that is missing fails the test, nothing is skipped.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from swarmlet.security.datadir_format import DATA_FORMAT, FORMAT_FILE_NAME
from swarmlet.wire.protocol_version import PROTOCOL_VERSION
from tests.integration.cluster import (
    AgentHandle,
    LocalCluster,
    get,
    local_cluster,
    run_cli,
    services,
    use_release,
    wait_for,
)

PREVIOUS_RELEASE = "f1dfba5"  # the last commit before data dir and protocol versions
REPO = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.integration,
    pytest.mark.docker,
    pytest.mark.usefixtures("docker_images"),
]


@pytest.fixture(scope="module")
def previous_python(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The python of a virtualenv holding the previous release (pip-installed from `git
    archive`, no worktree: nothing in the repository changes). Its dependencies are this
    environment's (a .pth file, not --system-site-packages: this tree's editable install must
    not be seen), so only swarmlet itself differs."""
    root = tmp_path_factory.mktemp("previous-release")
    tree, venv = root / "tree", root / "venv"
    tree.mkdir()
    started = time.monotonic()
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", PREVIOUS_RELEASE], capture_output=True, check=True
    )
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    ours = [p for p in sys.path if p.endswith("site-packages")]  # with what .pth files add
    (site / "_this_environment.pth").write_text("".join(f"{p}\n" for p in ours))
    pip = [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q"]
    subprocess.run([*pip, str(tree)], capture_output=True, check=True, timeout=300)
    where = subprocess.run(
        [str(python), "-P", "-c", "import swarmlet; print(swarmlet.__file__)"],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    ).stdout.strip()
    assert where.startswith(str(venv)), f"the previous release's python imports {where}"
    print(f"previous release {PREVIOUS_RELEASE} built in {time.monotonic() - started:.1f} s")
    return str(python)


@pytest.fixture
def cluster_of_releases(tmp_path: Path) -> Iterator[LocalCluster]:
    with local_cluster(tmp_path) as cluster:
        try:
            yield cluster
        finally:
            for i in range(1, 10):
                use_release(cluster.handle(i).data_dir, None)


def stop(a: AgentHandle) -> None:
    """A clean stop, as an operator's `systemctl stop` (SIGTERM: hand over, leave, exit)."""
    pid = a.pid()
    assert pid is not None, f"agent {a.index} has no pid file"
    os.kill(pid, signal.SIGTERM)
    wait_for(f"agent {a.index} to stop", lambda: not Path(f"/proc/{pid}").exists(), timeout=30)


def data_format(a: AgentHandle) -> int | None:
    try:
        number: int = json.loads((a.data_dir / FORMAT_FILE_NAME).read_text())["format"]
    except FileNotFoundError:
        return None
    return number


def streams_by_protocol(cluster: LocalCluster, a: AgentHandle) -> dict[int, bool]:
    """Whether the agent has made or accepted streams of protocol 1 and of this release's."""
    counters = cluster.status(a)["counters"]
    return {v: counters.get(f"streams_protocol_{v}", 0) > 0 for v in (1, PROTOCOL_VERSION)}


def writes(cluster: LocalCluster, a: AgentHandle) -> dict[str, int]:
    counters = cluster.status(a)["counters"]
    return {k: counters.get(k, 0) for k in ("writes_once", "writes_without_once")}


def desired_replicas(cluster: LocalCluster, a: AgentHandle) -> int:
    """The replicas of `web` as agent `a`'s replica of the state says."""
    count: int = services(cluster, via=cluster.agents.index(a))["web"]["replicas_desired"]
    return count


def leader_seen_by(cluster: LocalCluster, a: AgentHandle) -> str | None:
    try:
        return cluster.leader_of(a)
    except AssertionError:  # CommandFailed: no answer yet
        return None


def wait_for_all_ready(cluster: LocalCluster, running: list[AgentHandle]) -> None:
    for a in running:

        def every_node_ready(a: AgentHandle = a) -> bool:
            nodes = cluster.node_ls(a)
            return len(nodes) == len(cluster.agents) and all(n["status"] == "ready" for n in nodes)

        wait_for(f"n{a.index} to see every node ready", every_node_ready, timeout=60)


def check_mesh(cluster: LocalCluster, port: int, replicas: int) -> None:
    """Every node's proxy answers on the published port and reaches every replica."""
    wait_for(
        f"{replicas} replicas running",
        lambda: services(cluster)["web"]["replicas_running"] == replicas,
        timeout=90,
    )
    for a in cluster.agents:

        def routes_to_every_replica(a: AgentHandle = a) -> bool:
            return len({get(a.host, port) for _ in range(3 * replicas)}) == replicas

        wait_for(f"{a.host}:{port} to route to {replicas}", routes_to_every_replica, timeout=60)


def fail_over(cluster: LocalCluster) -> None:
    """Kill the leader's agent; a new leader is elected among the rest; the old one comes back
    (on whatever release it runs)."""
    leader_id = cluster.leader_of(cluster.agents[0])
    assert leader_id is not None
    victim = cluster.agent_by_node_id(leader_id)
    cluster.kill(victim)
    survivor = next(a for a in cluster.agents[:3] if a is not victim)  # a manager
    wait_for(
        "a new leader",
        lambda: leader_seen_by(cluster, survivor) not in (None, leader_id),
        timeout=60,
    )
    cluster.restart(victim)
    wait_for_all_ready(cluster, cluster.agents)


def test_a_cluster_keeps_working_while_its_agents_are_upgraded_one_at_a_time(
    cluster_of_releases: LocalCluster, previous_python: str
) -> None:
    cluster = cluster_of_releases
    for i in (1, 2, 3):
        use_release(cluster.handle(i).data_dir, previous_python)
    started = time.monotonic()
    cluster.start(managers=3)
    assert [data_format(a) for a in cluster.agents] == [None, None, None]  # the old release's
    # A worker of this release joins through a manager of the previous one (the join channel
    # carries no version: protocol 1's messages, unchanged), and is served by old managers.
    worker = cluster.join("worker")
    assert data_format(worker) == DATA_FORMAT
    managers = cluster.agents[:3]
    wait_for_all_ready(cluster, cluster.agents)
    assert streams_by_protocol(cluster, worker) == {1: True, PROTOCOL_VERSION: False}
    worker_id = cluster.node_id(worker)
    wait_for(  # the old leader's voter policy: every node learns the log
        "the worker to be a learner",
        lambda: worker_id in cluster.status(cluster.agents[0])["raft"]["learners"],
    )
    port = cluster.port + 300
    run_cli(
        "service",
        "create",
        "--name",
        "web",
        "--replicas",
        "3",
        "-p",
        f"{port}:80",
        "swarmlet/web:1",
        data_dir=cluster.agents[0].data_dir,
        timeout=120,
    )
    check_mesh(cluster, port, 3)
    # Followers first, the leader last (README, "Upgrading"): one leadership change per round.
    leader_id = cluster.leader_of(cluster.agents[0])
    order = sorted(managers, key=lambda a: cluster.node_id(a) == leader_id)
    for step, a in enumerate(order, start=1):
        # A clean stop, as `systemctl stop` does: the node leaves gossip, and the new release
        # reaches the state's members again by itself once restarted (`node.reconnect`).
        stop(a)
        use_release(a.data_dir, None)
        cluster.restart(a)
        wait_for_all_ready(cluster, cluster.agents)
        assert data_format(a) == DATA_FORMAT, f"n{a.index} was not migrated"
        # Writes through the upgraded node (forwarded to a leader of either release).
        replicas = 3 + step % 2
        run_cli("service", "scale", f"web={replicas}", data_dir=a.data_dir, timeout=120)
        # Every manager applied it, of either release: a member of the old one refuses a
        # `Once` (an unknown command), so none is in the log while one is in the group (a
        # leader of this release takes the command out of it). Once none is left, writes go
        # as a `Once`.
        for m in managers:
            wait_for(
                f"n{m.index} to have applied the scale to {replicas}",
                lambda m=m, want=replicas: desired_replicas(cluster, m) == want,
                timeout=30,
            )
        if step == len(order):
            sent = writes(cluster, a)  # since its restart: this write's attempts
            assert sent["writes_once"] >= 1 and sent["writes_without_once"] == 0, sent
        check_mesh(cluster, port, replicas)
        fail_over(cluster)
        check_mesh(cluster, port, replicas)
        for m in order[step:]:  # still of the old release: it was sent nothing it refuses
            assert cluster.status(m)["counters"].get("dropped_frame_invalid", 0) == 0, m.index
        print(f"upgrade step {step} done at {time.monotonic() - started:.1f} s")
    assert [data_format(a) for a in cluster.agents] == [DATA_FORMAT] * 4
    for a in cluster.agents:  # every agent now speaks this release's protocol to the others
        assert streams_by_protocol(cluster, a)[PROTOCOL_VERSION], f"n{a.index}: no new stream"
        assert cluster.status(a)["counters"].get("refused_peer_protocol", 0) == 0
    for a in managers:  # a write through each manager (leader and followers) is a `Once`
        before = writes(cluster, a)
        run_cli("node", "update", "--label-add", f"upgraded=n{a.index}", "n1", data_dir=a.data_dir)
        after = writes(cluster, a)
        assert after["writes_once"] > before["writes_once"], (before, after)
        assert after["writes_without_once"] == before["writes_without_once"], (before, after)
    # The worker left the Raft group and reads a view a manager serves it.
    raft = cluster.status(cluster.agents[0])["raft"]
    assert worker_id not in raft["voters"] + raft["learners"]
    assert cluster.status(worker)["counters"].get("worker_view_updates_applied", 0) > 0


def test_an_old_data_dir_is_migrated_and_a_newer_one_is_refused(
    cluster_of_releases: LocalCluster, previous_python: str
) -> None:
    cluster = cluster_of_releases
    a = cluster.handle(1)
    use_release(a.data_dir, previous_python)
    cluster.init()
    stop(a)
    assert data_format(a) is None  # what every release before versions wrote

    use_release(a.data_dir, None)
    cluster.restart(a)
    assert data_format(a) == DATA_FORMAT
    assert [n["hostname"] for n in cluster.node_ls(a)] == ["n1"]  # the same node, its state
    stop(a)

    (a.data_dir / FORMAT_FILE_NAME).write_text('{"format": 99, "written_by": "9.9.9"}\n')
    refused = run_cli("agent", data_dir=a.data_dir, check=False)
    assert refused.returncode == 2, refused
    assert "format 99" in refused.stderr and "swarmlet 9.9.9" in refused.stderr, refused.stderr
    # Refused, never rewritten: the newer release's data dir is as it left it.
    assert json.loads((a.data_dir / FORMAT_FILE_NAME).read_text())["format"] == 99
