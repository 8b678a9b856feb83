"""Rolling updates, health checks and rollbacks with real agents, real replicas and the mesh."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest

from tests.integration.cluster import (
    LocalCluster,
    RequestLoop,
    get,
    run_cli,
    services,
    tasks,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.docker, pytest.mark.usefixtures("docker_images")]


def inspect(cluster: LocalCluster, name: str) -> dict[str, Any]:
    out = run_cli("service", "inspect", name, data_dir=cluster.agents[0].data_dir).stdout
    result: dict[str, Any] = json.loads(out)[0]
    return result


def test_start_first_rolling_update_through_the_mesh_fails_no_request(
    cluster: LocalCluster,
) -> None:
    port = cluster.port + 700
    d = cluster.agents[0].data_dir
    run_cli(
        "service",
        "create",
        "--name",
        "web",
        "--replicas",
        "4",
        "-p",
        f"{port}:80",
        "--update-order",
        "start-first",
        "--update-parallelism",
        "1",
        "swarmlet/web:1",
        data_dir=d,
        timeout=120,
    )
    wait_for("the mesh to serve v1", lambda: not get(cluster.agents[1].host, port).startswith("v2"))
    with RequestLoop(cluster.agents[1].host, port) as loop:
        wait_for("some traffic", lambda: loop.ok > 20)
        run_cli("service", "update", "--image", "swarmlet/web:2", "web", data_dir=d, timeout=180)
        wait_for(
            "every answer from v2",
            lambda: all(get(cluster.agents[2].host, port).startswith("v2") for _ in range(8)),
            timeout=60,
        )
        before = loop.ok
        wait_for("traffic after the update", lambda: loop.ok > before + 20)
    assert loop.failures == []
    assert inspect(cluster, "web")["update_status"]["state"] == "completed"
    running = [t for t in tasks(cluster, "web") if t["state"] == "running"]
    assert len(running) == 4


def test_an_update_whose_health_check_fails_rolls_back_by_itself(cluster: LocalCluster) -> None:
    d = cluster.agents[0].data_dir
    run_cli(
        "service",
        "create",
        "--name",
        "web",
        "--replicas",
        "2",
        "swarmlet/web:1",
        data_dir=d,
        timeout=120,
    )
    proc = run_cli(
        "service",
        "update",
        "--image",
        "swarmlet/web:2",
        "--health-cmd",
        "exit 1",
        "--health-interval",
        "500ms",
        "--health-retries",
        "1",
        "--update-failure-action",
        "rollback",
        "--update-monitor",
        "3s",
        "web",
        data_dir=d,
        timeout=180,
        check=False,
    )
    assert proc.returncode != 0  # the update failed: like docker, the command says so
    wait_for(
        "the rollback to complete",
        lambda: inspect(cluster, "web")["update_status"]["state"] == "rollback_completed",
        timeout=90,
    )
    spec = inspect(cluster, "web")["spec"]
    assert spec["image"] == "swarmlet/web:1"
    wait_for("2 healthy v1 replicas", lambda: services(cluster)["web"]["replicas_running"] == 2)


def test_an_unhealthy_replica_is_replaced_and_gets_no_traffic(cluster: LocalCluster) -> None:
    port = cluster.port + 800
    d = cluster.agents[0].data_dir
    # Healthy until /tmp/sick exists; the check runs every 500 ms.
    run_cli(
        "service",
        "create",
        "--name",
        "web",
        "--replicas",
        "2",
        "-p",
        f"{port}:80",
        "--health-cmd",
        "test ! -e /tmp/sick",
        "--health-interval",
        "500ms",
        "--health-retries",
        "1",
        "swarmlet/web:1",
        data_dir=d,
        timeout=120,
    )
    victim = next(t for t in tasks(cluster, "web") if t["state"] == "running")
    subprocess.run(["docker", "exec", victim["container_id"], "touch", "/tmp/sick"], check=True)
    wait_for(
        "the unhealthy task to be replaced",
        lambda: (
            any(t["id"] == victim["id"] and t["state"] == "failed" for t in tasks(cluster, "web"))
            and services(cluster)["web"]["replicas_running"] == 2
        ),
        timeout=60,
    )
    names = {get(cluster.agents[0].host, port) for _ in range(10)}
    assert victim["container_id"][:12] not in names
