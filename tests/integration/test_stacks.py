"""Stacks and secrets with real agents and real Docker: deploy, reach, re-deploy, remove."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from swarmlet.testing.images import ensure_test_images
from tests.integration.cluster import LocalCluster, local_cluster, run_cli, wait_for
from tests.integration.test_services import services, tasks

pytestmark = [pytest.mark.integration, pytest.mark.docker]

STACKS = Path(__file__).resolve().parents[2] / "stacks"


@pytest.fixture(scope="module", autouse=True)
def _images() -> None:
    ensure_test_images()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    with local_cluster(tmp_path) as c:
        c.start(managers=2, workers=1)
        yield c


def _stack_file(tmp_path: Path, name: str, **replace: str) -> Path:
    """A copy of an example stack with its published ports moved out of the way of a demo."""
    text = (STACKS / name).read_text()
    for old, new in replace.items():
        text = text.replace(old, new)
    target = tmp_path / name
    target.write_text(text)
    for extra in ("api_key.txt",):
        if (STACKS / extra).exists():
            shutil.copy(STACKS / extra, tmp_path / extra)
    return target


def get(host: str, port: int) -> str:
    with urllib.request.urlopen(f"http://{host}:{port}/", timeout=5) as response:
        body: bytes = response.read()
        return body.decode().strip()


def test_web_stack_deploys_answers_through_the_mesh_redeploys_idempotently_and_is_removed(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    port = cluster.port + 500
    stack = _stack_file(tmp_path, "web.yml", **{'"8080:80"': f'"{port}:80"'})
    d = cluster.agents[0].data_dir
    run_cli("stack", "deploy", "-c", str(stack), "web", data_dir=d, timeout=120)
    assert services(cluster)["web_app"]["replicas_running"] == 6
    for a in cluster.agents:
        wait_for(f"{a.host} to serve", lambda a=a: len({get(a.host, port) for _ in range(18)}) == 6)
    again = run_cli("stack", "deploy", "-c", str(stack), "web", data_dir=d, timeout=120)
    assert "Updating" not in again.stdout and "Creating" not in again.stdout
    version = json.loads(run_cli("service", "inspect", "web_app", data_dir=d).stdout)[0]["version"]
    assert version == 1
    stack.write_text(stack.read_text().replace("replicas: 6", "replicas: 3"))
    changed = run_cli("stack", "deploy", "-c", str(stack), "web", data_dir=d, timeout=120)
    assert "Updating service web_app" in changed.stdout
    wait_for("3 replicas", lambda: services(cluster)["web_app"]["replicas_running"] == 3)
    listed = json.loads(run_cli("stack", "ls", "--format", "json", data_dir=d).stdout)
    assert listed == [{"name": "web", "services": 1}]
    run_cli("stack", "rm", "web", data_dir=d)
    wait_for("nothing labelled with the stack", lambda: not _stack_containers("web"))
    assert services(cluster) == {}


def _stack_containers(stack: str) -> list[str]:
    out = subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"label=swarmlet.stack={stack}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return out.split()


def test_a_stack_that_fails_to_load_changes_nothing(cluster: LocalCluster, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text(
        "services:\n  app:\n    image: swarmlet/web:1\n    deploy:\n      replicas: three\n"
    )
    proc = run_cli(
        "stack", "deploy", "-c", str(bad), "bad", data_dir=cluster.agents[0].data_dir, check=False
    )
    assert proc.returncode != 0
    assert "bad.yml" in proc.stderr and "services.app.deploy.replicas" in proc.stderr
    assert services(cluster) == {}


def test_a_secret_is_readable_in_the_container_and_nowhere_in_plain_text(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    port = cluster.port + 600
    stack = _stack_file(tmp_path, "secret.yml", **{'"8081:80"': f'"{port}:80"'})
    value = (tmp_path / "api_key.txt").read_text().strip()
    d = cluster.agents[0].data_dir
    run_cli("stack", "deploy", "-c", str(stack), "sec", data_dir=d, timeout=120)
    task = next(t for t in tasks(cluster, "sec_api") if t["state"] == "running")
    cid = task["container_id"]
    inside = subprocess.run(
        ["docker", "exec", cid, "cat", "/run/secrets/api_key"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert inside == value
    inspect = subprocess.run(
        ["docker", "inspect", cid], capture_output=True, text=True, check=True
    ).stdout
    assert value not in inspect
    for a in cluster.agents:
        for path in a.data_dir.rglob("*"):
            if path.is_file() and path.suffix != ".sock":
                assert value.encode() not in path.read_bytes(), path
    secret = json.loads(run_cli("secret", "inspect", "sec_api_key", data_dir=d).stdout)[0]
    assert secret["services"] == ["sec_api"] and "data" not in secret
    proc = run_cli("secret", "rm", "sec_api_key", data_dir=d, check=False)
    assert proc.returncode != 0 and "in use" in proc.stderr
    run_cli("stack", "rm", "sec", data_dir=d)
    assert json.loads(run_cli("secret", "ls", "--format", "json", data_dir=d).stdout) == []
