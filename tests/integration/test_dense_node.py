"""A node that runs many tasks (issue #16). A node's gossip metadata used to carry every task's
status; at about 137 tasks it outgrew gossip's limit, the agent raised out of `set_meta` and died,
and did again after every restart. Now statuses go to the leader as reports and are committed
through Raft, and the gossip record has the same size whatever the node runs.

Here 150 real containers are placed on one worker of a three-node cluster (a constraint pins
them there): all run, every agent keeps its process (no crash, no restart), every node's gossip
record is as large as before the service, and the leader and the other worker see all 150
running. A benchmark takes the same to 300 (`bench/dense_node.py`).

Opt-in (`SWARMLET_DENSE_TEST=1`): 150 containers take about two minutes of a CI run that has a
30-minute limit. Unset, the test is skipped and says how to run it; set, nothing is skipped: a
missing Docker Engine or image fails it, and a value other than 1 (or 0) is refused.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.cluster import local_cluster, run_cli, services, tasks, wait_for
from tests.integration.opt_in import require_opt_in

pytestmark = [pytest.mark.integration, pytest.mark.docker]

DENSE = 150  # above the ~137 tasks that crash-looped an agent
DENSE_SWITCH = "SWARMLET_DENSE_TEST"


@pytest.fixture(scope="session")  # session scope: before `docker_images` builds anything
def dense_opt_in() -> None:
    """Skips unless `SWARMLET_DENSE_TEST=1`; a value it cannot honour is an error, not a skip."""
    require_opt_in(DENSE_SWITCH, "150 real containers, about 2 min")


def test_a_node_runs_150_tasks_and_every_agent_stays_up(
    dense_opt_in: None, tmp_path: Path, docker_images: None
) -> None:
    with local_cluster(tmp_path) as cluster:
        cluster.start(managers=1, workers=2)
        leader, dense, _ = cluster.agents
        wait_for(
            "three ready nodes",
            lambda: (
                all(n["status"] == "ready" for n in cluster.node_ls(leader))
                and len(cluster.node_ls(leader)) == 3
            ),
        )
        pids = {a.index: a.pid() for a in cluster.agents}
        meta_bytes = {a.index: cluster.status(a)["gossip"]["meta_bytes"] for a in cluster.agents}
        run_cli(
            "service",
            "create",
            "--name",
            "dense",
            "--replicas",
            str(DENSE),
            "--constraint",
            f"node.hostname==n{dense.index}",
            "swarmlet/busybox:1",
            "sleep",
            "36000",
            data_dir=leader.data_dir,
            timeout=120,
        )

        def all_running(via: int) -> bool:
            return services(cluster, via)["dense"]["replicas_running"] == DENSE

        wait_for(f"{DENSE} replicas to run", lambda: all_running(0), timeout=600, interval=2.0)
        wait_for("the other worker to see them", lambda: all_running(2), timeout=30)
        on_nodes = {t["node_name"] for t in tasks(cluster, "dense") if t["state"] == "running"}
        assert on_nodes == {f"n{dense.index}"}
        running = [c for c in cluster.containers(service="dense") if c["state"] == "running"]
        assert len(running) == DENSE  # in the Docker Engine, not only in swarmlet's view

        assert {a.index: a.pid() for a in cluster.agents} == pids  # no agent died or restarted
        for a in cluster.agents:
            status = cluster.status(a)
            # The same record, give or take a changed load figure's encoding.
            assert abs(status["gossip"]["meta_bytes"] - meta_bytes[a.index]) <= 8, a.index
            assert status["counters"].get("gossip_meta_too_large", 0) == 0
        assert all(n["status"] == "ready" for n in cluster.node_ls(leader))
