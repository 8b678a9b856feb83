"""Secret deliveries across a rotation of the managers' key, on real sockets: a manager that
applied the rotation signs under the new key before the worker has applied it; the worker waits
for its log and checks again, and never takes a signature under the retired key. The world
(manager m1, worker w1, secret api_key, task t1 on w1) is `test_secret_delivery`'s."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import trio

from swarmlet.errors import SecretsUnavailableError
from swarmlet.security.datadir import DataDir
from swarmlet.security.keyring import KeyRing
from swarmlet.security.managers_key_rotation import rotation
from swarmlet.security.secret_delivery import SecretDelivery
from swarmlet.state.commands import RotateToken
from swarmlet.state.machine import ClusterState
from swarmlet.state.model import Role
from swarmlet.wire.peer_rpc import SecretsReply, SecretsRequest
from swarmlet.wire.transport import Transport
from tests.security.test_secret_delivery import (
    CLUSTER_KEY,
    HOST,
    MANAGERS,
    TIMEOUT_S,
    FakeLog,
    World,
    free_port,
    impostor_at,
    task,
    values_for,
    world,
)

if TYPE_CHECKING:
    from tests.conftest import TestCA


def rotate(w: World) -> ClusterState:
    """Rotate the managers' key in the manager's state (m1 stays the only manager); returns a
    copy of the state from before, as a worker that has not applied the rotation holds it."""
    for role in (Role.WORKER, Role.MANAGER):  # the world has no tokens: a rotation seals them
        assert w.state.apply(RotateToken(role, MANAGERS.seal_token(role.value, "t"))).ok
    before = w.state.copy()
    assert w.state.apply(rotation(w.state, MANAGERS, managers=["m1"])).ok
    assert w.manager.keyring.managers != MANAGERS  # m1 signs under the new key from now on
    return before


def lagging_worker(w: World, root: Path, box: list[ClusterState], log: FakeLog) -> SecretDelivery:
    """w1 over its own replica `box[0]`, which the test advances."""
    return SecretDelivery(
        node_id="w1",
        keyring=KeyRing(DataDir(root / "w1"), "w1", lambda: box[0], cluster_id="c"),
        state=lambda: box[0],
        raft=log,
        commit_index=lambda: log.commit_index,
        transport=Transport((HOST, 0), CLUSTER_KEY, w.ca.tls("w1", role="worker")),
        resolve=w.addrs.get,
        is_ready=lambda _node_id: True,
    )


async def test_a_worker_behind_a_rotation_catches_up_and_takes_the_new_signature(
    tmp_path: Path, test_ca: TestCA
) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with world(tmp_path, test_ca) as w:
            box = [rotate(w)]
            log = FakeLog()
            worker = lagging_worker(w, tmp_path, box, log)

            async def catch_up() -> None:
                await trio.sleep(0.2)
                box[0] = w.state.copy()  # the worker applies the rotation
                log.advance(11)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(catch_up)
                files = await worker.task_files(task("t1", "w1"))
    assert files[("api_key", False)] == b"s3cret"
    assert worker.transport.counters["secrets_delivery_rechecked"] == 1


async def test_a_worker_that_does_not_catch_up_refuses_the_delivery(
    tmp_path: Path, test_ca: TestCA
) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with world(tmp_path, test_ca) as w:
            worker = lagging_worker(w, tmp_path, [rotate(w)], FakeLog())
            with pytest.raises(SecretsUnavailableError, match="m1 sent an invalid answer"):
                await worker.task_files(task("t1", "w1"))


async def test_a_delivery_signed_with_the_retired_key_is_refused(
    tmp_path: Path, test_ca: TestCA
) -> None:
    """A demoted manager that kept the old key, answering in a manager's place (with a
    certificate naming it, e.g. one it minted with the CA key it kept)."""

    async def answer(request: SecretsRequest) -> SecretsReply:
        return values_for(w, request, request.nonce, MANAGERS)

    with trio.fail_after(TIMEOUT_S):
        async with world(tmp_path, test_ca) as w:
            rotate(w)
            w.addrs["m1"] = (HOST, free_port())
            async with impostor_at(w.addrs["m1"], answer, test_ca.tls("m1")):
                with pytest.raises(SecretsUnavailableError, match="m1 sent an invalid answer"):
                    await w.worker.task_files(task("t1", "w1"))
