"""Generic resources on real agents and the real Docker Engine: a worker advertises two named
GPUs when it joins; a service reserving one GPU per task runs two replicas there, each with its
own id in DOCKER_RESOURCE_GPU, and the third pends saying why. A manager's agent, restarted
with a new list, records it."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.integration.cluster import AgentHandle, local_cluster, run_cli, tasks, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.docker, pytest.mark.usefixtures("docker_images")]


def inspect_node(via: AgentHandle, name: str) -> dict[str, Any]:
    [node] = json.loads(run_cli("node", "inspect", name, data_dir=via.data_dir).stdout)
    result: dict[str, Any] = node
    return result


def container_env(container_id: str, name: str) -> str:
    out = subprocess.run(
        ["docker", "exec", container_id, "sh", "-c", f'echo "${name}"'],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return out.stdout.strip()


def test_two_tasks_get_one_gpu_each_and_the_third_pends_saying_why(tmp_path: Path) -> None:
    with local_cluster(tmp_path) as cluster:
        manager = cluster.init()
        cluster.join("worker", extra=("--generic-resource", "gpu=g1,g2"))
        assert inspect_node(manager, "n2")["generic_resources"] == ["gpu=g1", "gpu=g2"]
        assert inspect_node(manager, "n1")["generic_resources"] == []
        run_cli(
            "service",
            "create",
            "--detach",
            "--name",
            "cuda",
            "--generic-resource",
            "gpu=1",
            "--replicas",
            "3",
            "--constraint",
            "node.hostname==n2",
            "swarmlet/web:1",
            data_dir=manager.data_dir,
            timeout=120,
        )

        def settled() -> list[dict[str, Any]] | None:
            current = tasks(cluster, "cuda")
            running = [t for t in current if t["state"] == "running" and t["container_id"]]
            pending = [t for t in current if t["state"] == "pending"]
            return current if len(running) == 2 and len(pending) == 1 else None

        current = wait_for("two cuda tasks running, one pending", settled, timeout=90)
        running = [t for t in current if t["state"] == "running"]
        given = sorted(
            (t["generic_resources"], container_env(t["container_id"], "DOCKER_RESOURCE_GPU"))
            for t in running
        )
        assert given == [(["gpu=g1"], "g1"), (["gpu=g2"], "g2")]
        [waiting] = [t for t in current if t["state"] == "pending"]
        assert "insufficient generic resources gpu" in waiting["message"]
        assert waiting["node"] == ""


def test_a_restarted_manager_records_the_list_its_agent_is_given(tmp_path: Path) -> None:
    with local_cluster(tmp_path) as cluster:
        manager = cluster.init()
        cluster.kill(manager)
        run_cli(
            "agent",
            "--detach",
            "--generic-resource",
            "ssd=2",
            data_dir=manager.data_dir,
            timeout=60,
        )
        wait_for(
            "the manager's record to list ssd=2",
            lambda: inspect_node(manager, "n1")["generic_resources"] == ["ssd=2"],
            timeout=60,
        )
