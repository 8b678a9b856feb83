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


def test_services_call_each_other_by_name_across_nodes_and_their_networks_go_with_the_stack(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    d = cluster.agents[0].data_dir
    api_node, client_node = cluster.node_id(cluster.agents[0]), cluster.node_id(cluster.agents[2])
    stack = tmp_path / "talk.yml"
    stack.write_text(
        'version: "3.8"\n'
        "services:\n"
        "  api:\n"
        "    image: swarmlet/web:1\n"
        "    networks: {back: {aliases: [backend]}}\n"
        "    deploy:\n"
        "      replicas: 2\n"
        f"      placement: {{constraints: [node.id=={api_node}]}}\n"
        "  client:\n"
        "    image: swarmlet/busybox:1\n"
        "    command: [sleep, '3600']\n"
        "    networks: [back]\n"
        "    deploy:\n"
        f"      placement: {{constraints: [node.id=={client_node}]}}\n"
        "networks:\n"
        "  back: {}\n"
    )
    run_cli("stack", "deploy", "-c", str(stack), "talk", data_dir=d, timeout=120)
    wait_for("both services running", lambda: _running(cluster, talk_api=2, talk_client=1))
    (client,) = [c["id"] for c in cluster.containers(service="talk_client")]
    api_hosts = {c["id"][:12] for c in cluster.containers(service="talk_api")}

    def call(name: str) -> str:
        """GET http://NAME/ from inside the client container (the web image answers with its
        hostname, i.e. its container id prefix). nc -w bounds the wait (this busybox's wget
        crashes with -T)."""
        request = f"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {name} 80"
        proc = subprocess.run(
            ["docker", "exec", client, "sh", "-c", request], capture_output=True, text=True
        )
        lines = proc.stdout.strip().splitlines()
        return lines[-1].strip() if lines else ""

    # The client runs on another node than both replicas: the name resolves to a VIP on the
    # client node's bridge, whose proxy forwards to the replicas on the api node.
    wait_for("the client to reach api by name", lambda: call("api") in api_hosts)
    assert {call("api") for _ in range(8)} == api_hosts  # round robin over both replicas
    assert call("talk_api") in api_hosts and call("backend") in api_hosts
    nodes_with_bridges = {n.rsplit(".", 1)[1] for n in cluster.networks(stack="talk")}
    assert nodes_with_bridges == {api_node[:12], client_node[:12]}

    run_cli("stack", "rm", "talk", data_dir=d)
    wait_for("nothing labelled with the stack", lambda: not _stack_containers("talk"))
    wait_for("no network labelled with the stack", lambda: not cluster.networks(stack="talk"))


def _running(cluster: LocalCluster, **replicas: int) -> bool:
    listed = services(cluster)
    return all(
        name in listed and listed[name]["replicas_running"] == n for name, n in replicas.items()
    )


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
