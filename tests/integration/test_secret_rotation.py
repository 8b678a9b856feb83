"""Rotating a secret on a running service from the command line (issue #17), on real Docker with
real agents: `service update --secret-rm OLD --secret-add source=NEW,target=OLD` replaces the
replicas one by one while the mesh keeps answering, and every new replica reads the new value
under the old file name."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.integration.cluster import (
    LocalCluster,
    RequestLoop,
    get,
    run_cli,
    services,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.docker, pytest.mark.usefixtures("docker_images")]


def secret_file_in(container_id: str, name: str) -> str:
    return subprocess.run(
        ["docker", "exec", container_id, "cat", f"/run/secrets/{name}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def test_secret_rotation_under_traffic_fails_no_request(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    port = cluster.port + 900
    d = cluster.agents[0].data_dir
    for name, value in (("db_pw_v1", "first-password\n"), ("db_pw_v2", "second-password\n")):
        path = tmp_path / name
        path.write_text(value)
        run_cli("secret", "create", name, str(path), data_dir=d)
    run_cli(
        "service",
        "create",
        "--name",
        "web",
        "--replicas",
        "2",
        "-p",
        f"{port}:80",
        "--secret",
        "source=db_pw_v1,target=db_pw",
        "--update-order",
        "start-first",
        "swarmlet/web:1",
        data_dir=d,
        timeout=120,
    )
    before = {c["id"] for c in cluster.containers(service="web") if c["state"] == "running"}
    assert len(before) == 2
    assert {secret_file_in(cid, "db_pw") for cid in before} == {"first-password\n"}
    wait_for("the mesh to serve", lambda: get(cluster.agents[1].host, port))

    with RequestLoop(cluster.agents[1].host, port) as loop:
        wait_for("some traffic", lambda: loop.ok > 20)
        run_cli(
            "service",
            "update",
            "--secret-rm",
            "db_pw_v1",
            "--secret-add",
            "source=db_pw_v2,target=db_pw",
            "web",
            data_dir=d,
            timeout=180,
        )
        served = loop.ok
        wait_for("traffic after the update", lambda: loop.ok > served + 20)
    assert loop.failures == []

    spec: dict[str, Any] = json.loads(run_cli("service", "inspect", "web", data_dir=d).stdout)[0][
        "spec"
    ]
    assert [(s["name"], s["target"]) for s in spec["secrets"]] == [("db_pw_v2", "db_pw")]
    assert services(cluster)["web"]["replicas_running"] == 2
    after = {c["id"] for c in cluster.containers(service="web") if c["state"] == "running"}
    assert len(after) == 2 and not after & before  # every replica was replaced
    assert {secret_file_in(cid, "db_pw") for cid in after} == {"second-password\n"}
