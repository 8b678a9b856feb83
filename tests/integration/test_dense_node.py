"""A node that runs many tasks (issue #16). A node's gossip metadata used to carry every task's
status; at about 137 tasks it outgrew gossip's limit, the agent raised out of `set_meta` and died,
and did again after every restart. Now statuses go to the leader as reports and are committed
through Raft, and the gossip record has the same size whatever the node runs.

Here 150 real containers are placed on one worker of a three-host cluster (a constraint pins
them there), each agent in its own network namespace with its own Docker Engine, as in production
(`tests/integration/hosts.py`): all run on that host's engine and on no other, every agent keeps
its process (no crash, no restart), every node's gossip record is as large as before the service,
and the manager sees all 150 running, the dense worker counts them as its own, and the other
worker holds none of them (a worker's view holds its own tasks only, issue #16). A benchmark
takes the same to 300 on loopback (`bench/dense_node.py`).

It ran in 31 s on a quiet 2-core machine (three engines started, 150 containers), so it runs in
every CI run; it was opt-in while it ran on loopback against the machine's one engine.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from swarmlet.testing.images import BUSYBOX_IMAGE
from tests.integration.cluster import wait_for
from tests.integration.hosts import Host, host_cluster, host_topology

pytestmark = [pytest.mark.integration, pytest.mark.docker]

DENSE = 150  # above the ~137 tasks that crash-looped an agent


def test_a_node_runs_150_tasks_and_every_agent_stays_up(
    tmp_path: Path, docker_images: None
) -> None:
    with (
        host_topology(tmp_path / "hosts", images=[BUSYBOX_IMAGE]) as topo,
        host_cluster(topo, tmp_path / "agents") as cluster,
    ):
        cluster.start(managers=1, workers=2)
        manager, dense, other = topo.hosts
        cluster.wait_all_ready(manager)
        hosts = (manager, dense, other)
        pids = {h.name: cluster.agent_pid(h) for h in hosts}
        meta_bytes = {h.name: cluster.status(h)["gossip"]["meta_bytes"] for h in hosts}
        cluster.cli(
            manager,
            "service",
            "create",
            "--name",
            "dense",
            "--replicas",
            str(DENSE),
            "--constraint",
            f"node.hostname=={dense.name}",
            BUSYBOX_IMAGE,
            "sleep",
            "36000",
            timeout=120,
        )

        def all_running(via: Host) -> bool:
            return bool(cluster.services(via)["dense"]["replicas_running"] == DENSE)

        wait_for(
            f"{DENSE} replicas to run", lambda: all_running(manager), timeout=600, interval=2.0
        )

        # The dense worker's view holds its 150 tasks (its `node ls` counts its own); the
        # other worker's holds none of them (issue #16: the service publishes nothing).
        def own_tasks(host: Host) -> int:
            return int(next(n["tasks"] for n in cluster.node_ls(host) if n["self"]))

        wait_for("the dense worker to count them", lambda: own_tasks(dense) == DENSE, timeout=30)
        assert own_tasks(other) == 0
        on_nodes = {
            t["node_name"] for t in cluster.tasks("dense", manager) if t["state"] == "running"
        }
        assert on_nodes == {dense.name}
        # The ground truth: each host's own engine.
        assert cluster.running_per_host("dense") == {
            manager.name: 0,
            dense.name: DENSE,
            other.name: 0,
        }

        assert {h.name: cluster.agent_pid(h) for h in hosts} == pids  # no agent died or restarted
        for h in hosts:
            status = cluster.status(h)
            # The same record, give or take a changed load figure's encoding.
            assert abs(status["gossip"]["meta_bytes"] - meta_bytes[h.name]) <= 8, h.name
            assert status["counters"].get("gossip_meta_too_large", 0) == 0
        assert list(cluster.node_status(manager).values()) == ["ready"] * 3
