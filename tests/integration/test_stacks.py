"""Stacks and secrets with real agents and real Docker: deploy, reach, re-deploy, remove."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from swarmlet.crypto import ManagerKeys
from swarmlet.errors import RemoteProtocolError, UsageError
from swarmlet.raft.storage import RaftStorage
from swarmlet.raft.types import EntryKind
from swarmlet.security import at_rest
from swarmlet.state.machine import ClusterState
from swarmlet.state.model import Role
from swarmlet.wire import codec as wire
from tests.integration.cluster import LocalCluster, get, run_cli, services, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.docker, pytest.mark.usefixtures("docker_images")]

STACKS = Path(__file__).resolve().parents[2] / "stacks"


@pytest.fixture
def cluster_shape() -> tuple[int, int]:
    return (2, 1)  # n3 is a worker: it holds no managers' key


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

    # A service added by a later deploy is reachable by name from the running client, which the
    # deploy does not restart (its spec did not change).
    stack.write_text(
        stack.read_text().replace(
            "networks:\n  back: {}\n",
            "  late:\n    image: swarmlet/web:1\n    environment: [NAME=late]\n"
            "    networks: [back]\n"
            "networks:\n  back: {}\n",
        )
    )
    run_cli("stack", "deploy", "-c", str(stack), "talk", data_dir=d, timeout=120)
    wait_for("the running client to reach the new service", lambda: call("late") == "late")
    assert [c["id"] for c in cluster.containers(service="talk_client")] == [client]

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
    """One replica per node, so one runs on the worker (n3), which holds no managers' key and
    gets the secret from a manager, sealed to it. It holds no copy of the replicated state (a
    manager serves it its view), and a manager's copy holds the secret and the manager token
    sealed, which the worker's keys cannot open; promoting it brings the key, demoting it takes
    it."""
    port = cluster.port + 600
    stack = _stack_file(
        tmp_path,
        "secret.yml",
        **{
            '"8081:80"': f'"{port}:80"',
            "replicas: 2": "replicas: 3\n      placement:\n        max_replicas_per_node: 1",
        },
    )
    value = (tmp_path / "api_key.txt").read_text().strip()
    d = cluster.agents[0].data_dir
    worker = cluster.agents[2]
    worker_id = cluster.node_id(worker)
    run_cli("stack", "deploy", "-c", str(stack), "sec", data_dir=d, timeout=120)

    def running() -> dict[str, str]:
        containers = cluster.containers(service="sec_api")
        return {c["node"]: c["id"] for c in containers if c["state"] == "running"}

    by_node = wait_for("a running replica on each node", lambda: len(running()) == 3 and running())
    assert worker_id in by_node
    for cid in by_node.values():
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
    manager_token = cluster.token("manager")
    for a in cluster.agents:
        for path in a.data_dir.rglob("*"):
            if path.is_file() and path.suffix != ".sock":
                content = path.read_bytes()
                assert value.encode() not in content, path
                assert manager_token.encode() not in content, path
    managers_keys = {(a.data_dir / "managers.key").read_bytes() for a in cluster.agents[:2]}
    assert len(managers_keys) == 1  # n2 joined as a manager: it received the key
    assert not (worker.data_dir / "managers.key").exists()
    proc = run_cli("join-token", "-q", "manager", data_dir=worker.data_dir, check=False)
    assert proc.returncode != 0 and "managers' key" in proc.stderr
    # Nor can it write: a service mounting the secret on it, or its own promotion.
    for write in (("service", "scale", "sec_api=4"), ("node", "promote", "n3")):
        proc = run_cli(*write, data_dir=worker.data_dir, check=False)
        assert proc.returncode != 0 and "this node is not a manager" in proc.stderr, proc.stderr

    # The worker is no Raft replica (issue #16): its storage holds nothing of the state, not
    # even the secret and the tokens sealed.
    cluster.kill(worker)
    held = wait_for("the worker's storage lock", lambda: _replicated_state(worker.data_dir))
    assert held.secret_by_name("sec_api_key") is None and not held.sealed_token(Role.MANAGER)
    cluster.restart(worker)
    # A manager's replica holds them sealed: neither the worker's cluster key nor its node key
    # opens them; the managers' key does.
    follower = cluster.agents[1]
    cluster.kill(follower)
    state = wait_for("n2's storage lock", lambda: _replicated_state(follower.data_dir))
    cluster.restart(follower)
    sealed = state.secret_by_name("sec_api_key")
    assert sealed is not None and value.encode() not in sealed.data
    for name in ("cluster.key", "node.key"):
        guess = ManagerKeys((worker.data_dir / name).read_bytes())
        with pytest.raises(RemoteProtocolError):
            guess.open_secret(sealed.id, sealed.data)
        with pytest.raises(RemoteProtocolError):
            guess.open_token("manager", state.sealed_token(Role.MANAGER))
    managers = ManagerKeys(managers_keys.pop())
    assert managers.open_secret(sealed.id, sealed.data).decode().strip() == value
    assert managers.open_token("manager", state.sealed_token(Role.MANAGER)) == manager_token

    run_cli("node", "promote", "n3", data_dir=d)
    wait_for("n3 to receive the managers' key", (worker.data_dir / "managers.key").exists)
    token = run_cli("join-token", "-q", "manager", data_dir=worker.data_dir).stdout.strip()
    assert token == manager_token
    run_cli("node", "demote", "n3", data_dir=d)
    wait_for(
        "n3 to delete the managers' key", lambda: not (worker.data_dir / "managers.key").exists()
    )

    secret = json.loads(run_cli("secret", "inspect", "sec_api_key", data_dir=d).stdout)[0]
    assert secret["services"] == ["sec_api"] and "data" not in secret
    proc = run_cli("secret", "rm", "sec_api_key", data_dir=d, check=False)
    assert proc.returncode != 0 and "in use" in proc.stderr
    run_cli("stack", "rm", "sec", data_dir=d)
    assert json.loads(run_cli("secret", "ls", "--format", "json", data_dir=d).stdout) == []


def _replicated_state(data_dir: Path) -> ClusterState | None:
    """What a stopped node's Raft storage holds: its snapshot, then every entry of its log,
    opened with the node's data key (a worker's lies in clear beside its log: `at_rest`).
    None while the storage is still locked (a killed agent's last threads are still exiting)."""
    data_key = at_rest.read_data_key(data_dir)
    assert data_key is not None
    try:
        storage = RaftStorage.open(data_dir / "raft", cipher=at_rest.AtRest.cipher_of(data_key))
    except UsageError:
        return None
    with storage:
        _, snapshot, entries = storage.load()
    state = ClusterState.restore(snapshot.data)
    for entry in entries:
        if entry.kind is EntryKind.NORMAL and entry.data:
            state.apply(wire.decode(entry.data))
    return state
