"""A service's registry credential (`--with-registry-auth`): sealed in the state, opened only
for the node that runs one of its tasks, delivered with the secrets on real sockets, used only
for its own registry. The world (manager m1, worker w1, service s1 with task t1 on w1 and t2 on
m1) is `test_secret_delivery`'s."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import trio

from swarmlet.errors import SecretsUnavailableError
from swarmlet.executor.registry_auth import (
    REGISTRY_AUTH_FILE,
    REGISTRY_AUTH_NAME,
    RegistryCredential,
    credential_for,
    registry_of,
)
from swarmlet.security.registry_auth import open_credential, seal_credential
from swarmlet.security.secret_access import grant_secrets
from swarmlet.state.commands import (
    CreateSecret,
    CreateService,
    PutTasks,
    SetRegistryAuth,
    UpdateService,
)
from swarmlet.state.model import FileRef, Secret, Service, ServiceSpec, Task
from tests.security.test_secret_delivery import MANAGERS, TIMEOUT_S, task, world

if TYPE_CHECKING:
    from tests.conftest import TestCA

CREDENTIAL = RegistryCredential("127.0.0.1:5000", "puller", "pw-not-in-clear")


def test_a_sealed_credential_opens_only_for_its_own_service() -> None:
    sealed = seal_credential(MANAGERS, "s1", CREDENTIAL)
    assert CREDENTIAL.password.encode() not in sealed
    assert open_credential(MANAGERS, "s1", sealed) == CREDENTIAL
    with pytest.raises(SecretsUnavailableError, match="does not open"):
        open_credential(MANAGERS, "s2", sealed)  # a blob moved to another service
    assert "pw-not-in-clear" not in repr(CREDENTIAL) + str(CREDENTIAL)


@pytest.mark.parametrize(
    ("image", "registry"),
    [
        ("127.0.0.1:5000/web:1", "127.0.0.1:5000"),
        ("127.0.0.1:5000/web:1@sha256:" + "a" * 64, "127.0.0.1:5000"),
        ("localhost/web", "localhost"),
        ("ghcr.io/a/b", "ghcr.io"),
        ("busybox", "docker.io"),
        ("swarmlet/web:1", "docker.io"),
    ],
)
def test_the_registry_of_an_image_follows_docker_s_rule(image: str, registry: str) -> None:
    assert registry_of(image) == registry


def test_a_credential_is_used_only_for_its_own_registry() -> None:
    files = {REGISTRY_AUTH_FILE: CREDENTIAL.to_bytes()}
    assert credential_for(files, "127.0.0.1:5000/web:1") == CREDENTIAL
    assert credential_for(files, "127.0.0.1:5001/web:1") is None
    assert credential_for(files, "web:1") is None
    assert credential_for({}, "127.0.0.1:5000/web:1") is None
    with pytest.raises(SecretsUnavailableError, match="damaged"):
        credential_for({REGISTRY_AUTH_FILE: b"garbage"}, "127.0.0.1:5000/web:1")


async def test_the_worker_running_the_task_receives_the_credential_with_the_secrets(
    tmp_path: Path, test_ca: TestCA
) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with world(tmp_path, test_ca) as w:
            sealed = seal_credential(MANAGERS, "s1", CREDENTIAL)
            assert w.state.apply(SetRegistryAuth("s1", sealed)).ok
            files = await w.worker.task_files(task("t1", "w1"))
    assert files[("api_key", False)] == b"s3cret"
    assert credential_for(files, "127.0.0.1:5000/web:1") == CREDENTIAL


async def test_a_service_with_a_credential_and_no_secret_still_asks_for_it(
    tmp_path: Path, test_ca: TestCA
) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with world(tmp_path, test_ca) as w:
            sealed = seal_credential(MANAGERS, "s2", CREDENTIAL)
            spec = ServiceSpec("private", "127.0.0.1:5000/web:1")
            assert w.state.apply(CreateService(Service("s2", spec, registry_auth=sealed))).ok
            assert w.state.apply(PutTasks((Task("t3", "s2", 1, 1, node_id="w1"),))).ok
            files = await w.worker.task_files(Task("t3", "s2", 1, 1, node_id="w1"))
    assert files == {REGISTRY_AUTH_FILE: CREDENTIAL.to_bytes()}


async def test_a_worker_asking_for_another_node_s_task_gets_no_credential(
    tmp_path: Path, test_ca: TestCA
) -> None:
    """The attack: w1, a member, asks the manager for t2's values (t2 runs on m1)."""
    with trio.fail_after(TIMEOUT_S):
        async with world(tmp_path, test_ca) as w:
            assert w.state.apply(
                SetRegistryAuth("s1", seal_credential(MANAGERS, "s1", CREDENTIAL))
            ).ok
            with pytest.raises(SecretsUnavailableError, match="not assigned to node w1"):
                await w.worker.task_files(task("t2", "w1"))
            assert w.manager.transport.counters["secrets_refused"] == 1


async def test_a_credential_sealed_for_another_service_is_refused(
    tmp_path: Path, test_ca: TestCA
) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with world(tmp_path, test_ca) as w:
            moved = seal_credential(MANAGERS, "elsewhere", CREDENTIAL)
            assert w.state.apply(SetRegistryAuth("s1", moved)).ok
            with pytest.raises(SecretsUnavailableError, match="does not open"):
                await w.worker.task_files(task("t1", "w1"))


async def test_a_secret_named_as_the_credential_is_never_delivered(
    tmp_path: Path, test_ca: TestCA
) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with world(tmp_path, test_ca) as w:
            fake = MANAGERS.seal_secret("x9", CREDENTIAL.to_bytes())
            assert w.state.apply(CreateSecret(Secret("x9", REGISTRY_AUTH_NAME, fake))).ok
            spec = w.state.services["s1"].spec
            refs = (*spec.secrets, FileRef(REGISTRY_AUTH_NAME, "x"))
            changed = UpdateService("s1", ServiceSpec("api", "img", secrets=refs), 1.0)
            assert w.state.apply(changed).ok
            with pytest.raises(SecretsUnavailableError, match="reserved"):
                await w.worker.task_files(task("t1", "w1"))


async def test_set_registry_auth_leaves_the_spec_and_its_version_alone(
    tmp_path: Path, test_ca: TestCA
) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with world(tmp_path, test_ca) as w:
            before = w.state.services["s1"]
            assert w.state.apply(SetRegistryAuth("s1", b"sealed")).ok
            after = w.state.services["s1"]
    assert (after.spec, after.version) == (before.spec, before.version)
    assert after.registry_auth == b"sealed"
    assert grant_secrets(w.state, "w1", "t1").registry_auth
    assert w.state.apply(SetRegistryAuth("s1", b"")).ok
    assert not grant_secrets(w.state, "w1", "t1").registry_auth
    assert not w.state.apply(SetRegistryAuth("nope", b"x")).ok
