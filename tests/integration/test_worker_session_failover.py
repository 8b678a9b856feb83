"""A worker's session survives the death of the manager that serves it (issue #16), on hosts as
in production: each agent in its own network namespace with its own Docker Engine
(`tests/integration/hosts.py`).

Three managers and a worker. The manager serving the worker's session is killed with SIGKILL
(when it leads, the cluster elects another leader meanwhile): the worker's mesh keeps serving
the route it had throughout, the worker opens a session with another manager, and a service
created afterwards runs on the worker and is routed by it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from swarmlet.testing.images import WEB_IMAGE
from tests.integration.cluster import answer, wait_for
from tests.integration.hosts import Host, HostCluster, host_cluster, host_topology

pytestmark = [pytest.mark.integration, pytest.mark.docker]


def serving_manager(cluster: HostCluster, worker: Host) -> str | None:
    session = cluster.status(worker)["session"]
    assert session is not None, "the worker reads a Raft replica, not a session's view"
    manager: str | None = session["manager_id"]
    return manager


def pinned_service(cluster: HostCluster, via: Host, name: str, worker: Host, port: int) -> None:
    cluster.cli(
        via,
        "service",
        "create",
        "--name",
        name,
        "--constraint",
        f"node.hostname=={worker.name}",
        "-p",
        f"{port}:80",
        WEB_IMAGE,
        timeout=120,
    )


def test_a_worker_moves_its_session_when_its_manager_dies(
    tmp_path: Path, docker_images: None
) -> None:
    with (
        host_topology(tmp_path / "hosts", count=4, images=[WEB_IMAGE]) as topo,
        host_cluster(topo, tmp_path / "agents") as cluster,
    ):
        cluster.start(managers=3, workers=1)
        managers, worker = topo.hosts[:3], topo.hosts[3]
        cluster.wait_all_ready(managers[0])
        before_port, after_port = 8081, 8082
        pinned_service(cluster, managers[0], "before", worker, before_port)
        wait_for("the worker to route", lambda: bool(answer(worker.addr, before_port)), timeout=120)

        first = serving_manager(cluster, worker)
        assert first is not None
        victim = next(m for m in managers if cluster.node_id(m) == first)
        survivor = next(m for m in managers if m is not victim)
        cluster.kill(victim)
        # The route the worker holds keeps serving, whoever serves its session, leader or not.
        for _ in range(10):
            assert answer(worker.addr, before_port), "the worker's mesh stopped serving"

        def moved() -> bool:
            manager = serving_manager(cluster, worker)
            return manager is not None and manager != first

        wait_for("the worker's session to move to another manager", moved, timeout=60)
        pinned_service(cluster, survivor, "after", worker, after_port)
        wait_for(
            "the new service to run and be routed on the worker",
            lambda: bool(answer(worker.addr, after_port)),
            timeout=120,
        )
        assert topo.hosts[3].running("after") == 1
        assert answer(worker.addr, before_port)
