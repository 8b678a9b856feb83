"""A worker restarted while no manager answers starts from the view it kept on its disk
(`node.view_store`): its mesh routes to its replicas, which keep running, and once a manager is
back its session brings a live view and the worker runs what is created afterwards."""

from __future__ import annotations

import pytest

from swarmlet.node.view_store import ViewStore
from swarmlet.security import at_rest
from swarmlet.security.datadir import DataDir
from swarmlet.state.model import TaskState
from swarmlet.wire.transport import Counters
from tests.integration.cluster import (
    AgentHandle,
    LocalCluster,
    answer,
    run_cli,
    services,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.docker, pytest.mark.usefixtures("docker_images")]


@pytest.fixture
def cluster_shape() -> tuple[int, int]:
    return (1, 1)


def stored_endpoints(cluster: LocalCluster, worker: AgentHandle) -> int:
    """Running tasks with endpoints in the view the worker keeps on its disk, opened as the
    agent opens it, with its data key (`read`: the agent's file is left as it is)."""
    key = at_rest.read_data_key(worker.data_dir)
    assert key is not None
    path = DataDir(worker.data_dir).worker_view_file
    cipher = at_rest.AtRest.cipher_of(key)
    stored = ViewStore(path, cipher, cluster.node_id(worker), Counters()).read()
    if stored is None:
        return 0
    statuses = stored.state.task_status.values()
    return sum(1 for s in statuses if s.state is TaskState.RUNNING and s.endpoints)


def test_a_worker_restarted_without_managers_routes_and_keeps_its_replicas(
    cluster: LocalCluster,
) -> None:
    manager, worker = cluster.agents
    port = cluster.port + 300
    run_cli(
        "service",
        "create",
        "--name",
        "web",
        "--replicas",
        "2",
        "--constraint",
        "node.role==worker",
        "-p",
        f"{port}:80",
        "swarmlet/web:1",
        data_dir=manager.data_dir,
        timeout=120,
    )
    replicas = {c["id"] for c in cluster.containers(service="web")}
    assert len(replicas) == 2

    def reaches_both() -> bool:
        return len({answer(worker.host, port) for _ in range(6)} - {""}) == 2

    wait_for("the worker's mesh to reach both replicas", reaches_both)
    # Saved at most every 2 s: a worker killed sooner after a change starts without it.
    wait_for("the worker to keep both replicas", lambda: stored_endpoints(cluster, worker) == 2)

    cluster.kill(manager)
    cluster.kill(worker)
    assert answer(worker.host, port) == ""  # nothing listens: the agent is down
    cluster.restart(worker)
    # From the stored view alone: no manager is up to serve one.
    wait_for("the restarted worker's mesh to reach both replicas", reaches_both)
    assert {c["id"] for c in cluster.containers(service="web") if c["state"] == "running"} == (
        replicas
    )
    session = cluster.status(worker)["session"]
    assert (session["manager_id"], session["live"]) == (None, False)
    assert session["index"] > 0  # the index the stored view reflects
    # A worker's reads name the managers to ask, as before (it serves no cluster reads).
    refused = run_cli("service", "ls", data_dir=worker.data_dir, check=False)
    assert refused.returncode != 0

    cluster.restart(manager)
    wait_for(
        "the manager to see the worker ready",
        lambda: {n["hostname"]: n["status"] for n in cluster.node_ls(manager)}.get("n2") == "ready",
        timeout=60,
    )
    run_cli(
        "service",
        "create",
        "--name",
        "after",
        "--constraint",
        "node.role==worker",
        "swarmlet/web:1",
        data_dir=manager.data_dir,
        timeout=120,
    )
    assert services(cluster)["after"]["replicas_running"] == 1
    assert services(cluster)["web"]["replicas_running"] == 2
    assert {c["id"] for c in cluster.containers(service="web") if c["state"] == "running"} == (
        replicas
    )


def test_a_promoted_worker_drops_its_view_and_a_leftover_one_is_never_read(
    cluster: LocalCluster,
) -> None:
    """Promoted, the node reads its Raft replica and removes the view; a view file left beside
    a manager's data (a crash between the two) is removed at its next start, never loaded,
    even with no other manager up to correct it: a stale view would make it take itself for
    a worker (and drop the managers' key)."""
    manager, worker = cluster.agents
    data = DataDir(worker.data_dir)
    path = data.worker_view_file
    wait_for("the worker to keep its view", path.exists)
    leftover = path.read_bytes()
    run_cli("node", "promote", "n2", data_dir=manager.data_dir)
    wait_for("the promoted node to read its Raft replica", lambda: not path.exists())
    assert cluster.status(worker)["session"] is None
    wait_for("the managers' key on the promoted node", data.manager_key_file.exists)

    cluster.kill(manager)
    cluster.kill(worker)
    path.write_bytes(leftover)
    cluster.restart(worker)  # alone: no manager serves it a view that would correct one
    status = wait_for("the restarted node to answer", lambda: cluster.status(worker))
    assert status["session"] is None, status["session"]  # its Raft replica, not the view
    assert not path.exists()
    assert data.manager_key_file.exists()

    cluster.restart(manager)
    wait_for("a leader again", lambda: cluster.status(worker)["raft"]["leader_id"] is not None)
    nodes = {n["hostname"]: n for n in cluster.node_ls(worker)}  # read from its replica
    assert nodes["n2"]["role"] == "manager", nodes["n2"]
