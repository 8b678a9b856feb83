"""A manager restarted with an old replica serves no worker a view before it has caught up.

Found under load: the only manager of a cluster, restarted, served its worker the state its
disk held before its last writes (a restarted replica applies what it knew was committed, and
the commit index is not kept at every write); the worker took that view in, and its executor
stopped the replicas it lacked, which were then replaced. Here the stale manager cannot catch
up at all: the two managers that committed the service while it was down are killed, so no
leader answers its read barrier.
"""

from __future__ import annotations

import pytest

from tests.integration.cluster import AgentHandle, LocalCluster, run_cli, services, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.docker, pytest.mark.usefixtures("docker_images")]


@pytest.fixture
def cluster_shape() -> tuple[int, int]:
    return (3, 1)


def counter(cluster: LocalCluster, agent: AgentHandle, name: str) -> int:
    value: int = cluster.status(agent)["counters"].get(name, 0)
    return value


def test_a_restarted_manager_that_cannot_catch_up_serves_no_view_and_the_worker_keeps_its_replicas(
    cluster: LocalCluster,
) -> None:
    stale, m2, m3, worker = cluster.agents
    cluster.kill(stale)  # its disk misses everything from here on
    run_cli(
        "service",
        "create",
        "--name",
        "web",
        "--replicas",
        "2",
        "--constraint",
        "node.role==worker",
        "swarmlet/web:1",
        data_dir=m2.data_dir,
        timeout=120,
    )

    def running() -> set[str]:
        return {c["id"] for c in cluster.containers(service="web") if c["state"] == "running"}

    replicas = running()
    assert len(replicas) == 2

    cluster.kill(m2)
    cluster.kill(m3)
    cluster.restart(stale)  # alone: no quorum, so no leader to catch up with
    wait_for(
        "the worker to ask the stale manager for a session and be refused",
        lambda: counter(cluster, stale, "worker_sessions_refused_behind") >= 1,
        timeout=60,
    )
    assert counter(cluster, stale, "worker_sessions_served") == 0
    assert cluster.status(worker)["session"]["manager_id"] is None
    assert running() == replicas

    cluster.restart(m2)
    cluster.restart(m3)
    wait_for(
        "the worker's session with a manager that caught up",
        lambda: cluster.status(worker)["session"]["manager_id"] is not None,
        timeout=60,
    )
    # m2 counts the worker's replicas once its own gossip has the worker back in its view
    # (a status is believed only of a node it observes), which may come after the session.
    wait_for(
        "the restarted managers to count the worker's two replicas",
        lambda: services(cluster, via=1)["web"]["replicas_running"] == 2,
        timeout=60,
    )
    assert running() == replicas
