"""Workers hold only their part of the state (issue #16), on real agents and real replicas.

A worker is not in the Raft group: a manager serves it its view over a session
(`node.worker_sessions`). What a view holds is `state.worker_view`'s; here the claims are checked
where they matter, on hosts each with its own network namespace and Docker Engine: the worker's
memory and data dir hold no other service's environment or config (while they do hold its own:
the search can find what is there), its mesh still routes to every published service, and its
CLI says what needs a manager. On loopback: a promotion and a demotion move a node between the
two ways of holding the state.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from pathlib import Path

import pytest

from swarmlet.testing.images import WEB_IMAGE
from tests.integration.cluster import (
    AgentHandle,
    CommandFailed,
    LocalCluster,
    answer,
    get,
    run_cli,
    services,
    wait_for,
)
from tests.integration.hosts import Host, host_cluster, host_topology

pytestmark = [pytest.mark.integration, pytest.mark.docker, pytest.mark.usefixtures("docker_images")]


@pytest.fixture
def cluster_shape() -> tuple[int, int]:
    return (1, 2)  # the loopback cluster of the promotion test


def process_memory_holds(pid: int, needle: bytes) -> bool:
    """Whether any readable mapping of process `pid` contains `needle` now."""
    found = False
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb", 0) as mem:
        for line in maps:
            span, perms = line.split()[:2]
            if not perms.startswith("r"):
                continue
            start, end = (int(x, 16) for x in span.split("-"))
            try:
                mem.seek(start)
                chunk = mem.read(end - start)
            except (OSError, ValueError, OverflowError):
                continue  # [vvar] and the like
            if needle in chunk:
                found = True
                break
    return found


def data_dir_holds(data_dir: Path, needle: bytes) -> list[str]:
    hits = []
    for root, _, files in os.walk(data_dir):
        for name in files:
            path = Path(root, name)
            try:
                if needle in path.read_bytes():
                    hits.append(str(path))
            except OSError:
                continue
    return hits


def create(cluster: LocalCluster, *args: str) -> None:
    run_cli("service", "create", *args, data_dir=cluster.agents[0].data_dir, timeout=120)


def raft_members(cluster: LocalCluster) -> set[str]:
    raft = cluster.status(cluster.agents[0])["raft"]
    return set(raft["voters"]) | set(raft["learners"])


def running(cluster: LocalCluster, name: str) -> bool:
    s = services(cluster).get(name)
    return s is not None and s["replicas_running"] == s["replicas_desired"]


def test_a_worker_holds_its_own_tasks_specs_and_routes_nothing_more(
    tmp_path: Path, docker_images: None
) -> None:
    """On hosts as in production: each agent in its own network namespace with its own Docker
    Engine (`tests/integration/hosts.py`); h1 manages, h2 and h3 work."""
    with (
        host_topology(tmp_path / "hosts", images=[WEB_IMAGE]) as topo,
        host_cluster(topo, tmp_path / "agents") as cluster,
    ):
        cluster.start(managers=1, workers=2)
        manager, w1, w2 = topo.hosts
        cluster.wait_all_ready(manager)
        other_env = f"OTHER_{secrets.token_hex(8)}".encode()
        own_env = f"OWN_{secrets.token_hex(8)}".encode()
        other_config = f"CONFIG_{secrets.token_hex(8)}".encode()
        config_file = tmp_path / "other.conf"
        config_file.write_bytes(other_config)
        cluster.cli(manager, "config", "create", "other-conf", str(config_file))
        port = 8090
        for name, env, where, extra in (
            (
                "other",
                other_env,
                "node.role==manager",
                ["--config", "source=other-conf,target=/other.conf", "-p", f"{port}:80"],
            ),
            ("own", own_env, f"node.hostname=={w1.name}", []),
        ):
            cluster.cli(
                manager,
                "service",
                "create",
                "--name",
                name,
                "--env",
                f"MARKER={env.decode()}",
                "--constraint",
                where,
                *extra,
                WEB_IMAGE,
                timeout=120,
            )

        def runs(name: str) -> bool:
            s = cluster.services(manager).get(name)
            return s is not None and s["replicas_running"] == s["replicas_desired"] == 1

        wait_for("both services running", lambda: runs("other") and runs("own"), timeout=120)
        assert w1.running("own") == 1 and manager.running("other") == 1  # each host's engine

        # Neither worker is in the Raft group; each is served by a session.
        raft = cluster.status(manager)["raft"]
        members = set(raft["voters"]) | set(raft["learners"])
        assert not {cluster.node_id(w1), cluster.node_id(w2)} & members
        for w in (w1, w2):
            counters = cluster.status(w)["counters"]
            assert counters.get("worker_view_updates_applied", 0) > 0, (w.name, counters)

        # Every worker's mesh routes to the service it holds only redacted (no replica there).
        for w in (w1, w2):
            wait_for(f"{w.name} to route {port}", lambda w=w: bool(answer(w.addr, port)))

        def pid(host: Host) -> int:
            found = cluster.agent_pid(host)
            assert found is not None, f"{host.name} has no agent"
            return found

        # w1 runs `own`: its spec is in w1's memory (so the search finds what is there) ...
        wait_for(
            "w1 to hold its own task's environment", lambda: process_memory_holds(pid(w1), own_env)
        )
        # ... and nothing of `other`, in memory or on disk; w2 holds neither service's.
        for w in (w1, w2):
            for needle in (other_env, other_config):
                assert not process_memory_holds(pid(w), needle), f"{w.name} holds {needle!r}"
                assert not data_dir_holds(cluster.data_dir(w), needle), f"{w.name}: {needle!r}"
        assert not process_memory_holds(pid(w2), own_env)
        assert process_memory_holds(pid(manager), other_env)  # the same search, on a manager

        # A worker's CLI answers what its view holds, and says what needs a manager.
        by_name = {n["hostname"]: n for n in cluster.node_ls(w1)}
        assert by_name[manager.name]["leader"] is True
        assert by_name[w1.name]["tasks"] == 1 and by_name[manager.name]["tasks"] is None
        for command in (("service", "ls"), ("service", "ps", "own"), ("config", "ls")):
            proc = cluster.cli(w1, *command, check=False)
            assert proc.returncode != 0, command
            assert f"run this on a manager ({manager.name})" in proc.stderr, proc.stderr


def test_a_promoted_worker_joins_raft_and_a_demoted_manager_leaves_it(
    cluster: LocalCluster,
) -> None:
    manager, w1, _ = cluster.agents
    w1_id = cluster.node_id(w1)
    with pytest.raises(CommandFailed, match="run this on a manager"):
        run_cli("service", "ls", data_dir=w1.data_dir)

    run_cli("node", "promote", "n2", data_dir=manager.data_dir)
    wait_for("n2 to replicate through Raft", lambda: w1_id in raft_members(cluster))
    wait_for("n2 to read its Raft replica", lambda: _serves_reads(w1))
    assert (
        json.loads(run_cli("service", "ls", "--format", "json", data_dir=w1.data_dir).stdout) == []
    )

    run_cli("node", "demote", "n2", data_dir=manager.data_dir)
    wait_for("n2 to leave the Raft group", lambda: w1_id not in raft_members(cluster))
    wait_for("n2 to read a view again", lambda: not _serves_reads(w1))
    port = cluster.port + 301
    create(
        cluster,
        "--name",
        "after",
        "--constraint",
        "node.hostname==n2",
        "-p",
        f"{port}:80",
        "swarmlet/web:1",
    )
    wait_for("a task on the demoted node", lambda: running(cluster, "after"))
    wait_for("the demoted node to route", lambda: bool(get(w1.host, port)))


def _serves_reads(a: AgentHandle) -> bool:
    try:
        run_cli("service", "ls", data_dir=a.data_dir)
    except CommandFailed as exc:
        if re.search("run this on a manager", str(exc)):
            return False
        raise
    return True
