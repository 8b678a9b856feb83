"""`--with-registry-auth` against a real registry that asks for a password (Debian's
`docker-registry` on loopback with htpasswd, as `test_registry` starts it).

The client's credential lives only in a DOCKER_CONFIG directory the test logs in to; the agents
and their shared Docker engine have no login. The service runs on the worker, so the credential
travels the whole path: sealed in the replicated state by the manager, delivered to the worker
that runs the task with its secrets, handed to Docker's pull there."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.cluster import LocalCluster, run_cli, services, tasks, wait_for
from tests.integration.test_registry import PASSWORD, USER, Registry, _serve_registry, _untag

pytestmark = [pytest.mark.integration, pytest.mark.docker, pytest.mark.usefixtures("docker_images")]


@pytest.fixture
def cluster_shape() -> tuple[int, int]:
    return (1, 1)


@pytest.fixture
def auth_registry(tmp_path: Path) -> Iterator[Registry]:
    with _serve_registry(tmp_path / "auth-registry", basic_auth=True) as served:
        yield served


def _running_on_worker(cluster: LocalCluster, name: str) -> bool:
    return any(t["state"] == "running" and t["node_name"] == "n2" for t in tasks(cluster, name))


def _files_holding(root: Path, needles: list[bytes]) -> list[str]:
    found = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            try:
                data = path.read_bytes()
            except OSError:
                continue  # a socket, a file gone meanwhile
            found += [f"{path}: {n!r}" for n in needles if n in data]
    return found


def test_a_private_image_runs_on_a_worker_with_the_client_s_credential_and_only_then(
    cluster: LocalCluster, auth_registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = cluster.agents[0].data_dir
    assert auth_registry.docker_config is not None
    digest = auth_registry.push("swarmlet/web:1", "private:v")
    ref = f"{auth_registry.host}/private:v"
    # Nothing of it stays in the engine under these names: every task must pull.
    _untag(ref, f"{auth_registry.host}/private@{digest}")
    worker = ["--constraint", "node.role==worker"]

    # Without the flag: the manager cannot pin the tag, and the worker's pull is refused.
    created = run_cli("service", "create", "-d", "--name", "anon", *worker, ref, data_dir=d)
    assert "asks for credentials" in created.stderr

    def anon_refused() -> bool:
        return any(
            "no basic auth credentials" in (t["error"] or "") for t in tasks(cluster, "anon")
        )

    wait_for("the anonymous pull to fail in service ps", anon_refused, timeout=60)
    ps = run_cli("service", "ps", "--no-trunc", "anon", data_dir=d).stdout
    assert "no basic auth credentials" in " ".join(ps.split())  # the table wraps its cells
    run_cli("service", "rm", "anon", data_dir=d)

    # With it, from the DOCKER_CONFIG that holds the login: pinned on the manager with the
    # credential, pulled on the worker with it.
    monkeypatch.setenv("DOCKER_CONFIG", str(auth_registry.docker_config))
    created = run_cli(
        "service",
        "create",
        "-d",
        "--with-registry-auth",
        "--name",
        "priv",
        *worker,
        ref,
        data_dir=d,
    )
    assert "warning" not in created.stderr
    assert services(cluster)["priv"]["image"] == f"{ref}@{digest}"
    wait_for("the private image to run on the worker", lambda: _running_on_worker(cluster, "priv"))

    # The password is nowhere in clear: not in any data dir (Raft log, snapshots, keys, the
    # agents' logs), not in `service inspect`.
    pair = f"{USER}:{PASSWORD}".encode()
    needles = [PASSWORD.encode(), base64.b64encode(pair)]
    for agent in cluster.agents:
        assert _files_holding(agent.data_dir, needles) == []
    inspected = run_cli("service", "inspect", "priv", data_dir=d).stdout
    assert PASSWORD not in inspected and base64.b64encode(pair).decode() not in inspected
    assert "registry_auth" not in json.dumps(json.loads(inspected))

    # An update without the flag, from a client with no login, keeps the stored credential:
    # the new task pulls again (the digest is gone from the engine) and runs.
    monkeypatch.setenv("DOCKER_CONFIG", str(auth_registry.docker_config.parent / "empty"))
    _untag(f"{auth_registry.host}/private@{digest}")  # other names keep the image itself
    updated = run_cli("service", "update", "-d", "--force", "priv", data_dir=d)
    assert "warning" not in updated.stderr  # the manager pinned with the stored credential
    wait_for(
        "the updated task to pull and run",
        lambda: any(
            t["spec_version"] == 2 and t["state"] == "running" and t["node_name"] == "n2"
            for t in tasks(cluster, "priv")
        ),
    )

    # With the flag and no login for that registry: refused, before anything changes.
    refused = run_cli("service", "update", "--with-registry-auth", "priv", data_dir=d, check=False)
    assert refused.returncode != 0
    assert f"no credential for {auth_registry.host}" in refused.stderr


def test_a_stack_deploys_a_private_image_with_the_flag(
    cluster: LocalCluster, auth_registry: Registry, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    d = cluster.agents[0].data_dir
    assert auth_registry.docker_config is not None
    digest = auth_registry.push("swarmlet/web:1", "stk:v")
    ref = f"{auth_registry.host}/stk:v"
    _untag(ref, f"{auth_registry.host}/stk@{digest}")
    compose = tmp_path / "stack.yml"
    compose.write_text(
        f"services:\n  app:\n    image: {ref}\n    deploy:\n      placement:\n"
        "        constraints: [node.role==worker]\n"
    )
    monkeypatch.setenv("DOCKER_CONFIG", str(auth_registry.docker_config))
    deploy = ["stack", "deploy", "-d", "--with-registry-auth", "-c", str(compose), "st"]
    deployed = run_cli(*deploy, data_dir=d)
    assert "Creating service st_app" in deployed.stdout and "warning" not in deployed.stderr
    assert services(cluster)["st_app"]["image"] == f"{ref}@{digest}"
    wait_for("the stack's private image to run", lambda: _running_on_worker(cluster, "st_app"))
    # The same credential again: nothing to change.
    again = run_cli(*deploy, data_dir=d)
    assert "Updating" not in again.stdout and "Creating" not in again.stdout
