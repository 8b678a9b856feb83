"""`Once`: a write applied at most once however often it is committed (a writer's retries of a
write whose fate it could not learn), answered each time with its first result."""

from __future__ import annotations

import dataclasses

import msgpack
import pytest

from swarmlet.errors import RemoteProtocolError
from swarmlet.state import machine
from swarmlet.state.commands import Batch, Command, CreateService, Once, RemoveService
from swarmlet.state.machine import ApplyResult, ClusterState
from swarmlet.state.model import Service
from swarmlet.wire import codec as wire
from tests.state.test_machine import cluster, spec  # noqa: F401 (a fixture)

RID = b"r" * 16


def create(name: str) -> CreateService:
    return CreateService(Service(f"id-{name}", spec(name)))


def test_a_request_committed_twice_applies_once_and_both_copies_get_the_first_answer(
    cluster: ClusterState,  # noqa: F811
) -> None:
    once = Once(RID, create("api"))
    first = cluster.apply(once)
    after_first = cluster.snapshot()
    second = cluster.apply(once)
    assert first == second == ApplyResult(True, value="id-api")
    assert cluster.snapshot() == after_first
    # Without the Once, the second copy would have been refused as a name in use.
    assert not cluster.apply(create("api")).ok


def test_a_refused_request_is_answered_alike_even_once_it_would_pass(
    cluster: ClusterState,  # noqa: F811
) -> None:
    """A copy is answered as the first was, whatever the state is by then: the writer gets one
    answer for one write."""
    remove = Once(RID, RemoveService("id-api", 2.0))
    refused = cluster.apply(remove)
    assert not refused.ok and "no service" in refused.error
    cluster.apply(create("api"))
    assert cluster.apply(remove) == refused
    assert "id-api" in cluster.services


def test_a_batch_in_a_once_is_all_or_nothing_and_a_once_in_a_batch_is_refused(
    cluster: ClusterState,  # noqa: F811
) -> None:
    assert cluster.apply(Once(RID, Batch((create("a"), create("b"))))).ok
    assert {"id-a", "id-b"} <= cluster.services.keys()
    before = cluster.snapshot()
    for command, reason in (
        (Batch((create("c"), Once(b"x" * 16, create("d")))), "never a part of a batch"),
        (Once(b"y" * 16, Once(b"z" * 16, create("e"))), "a Once inside a Once"),
        (Once(b"", create("f")), "1 to 32 bytes"),
        (Once(b"i" * 33, create("g")), "1 to 32 bytes"),
    ):
        result = cluster.apply(command)
        assert not result.ok and reason in result.error
    assert cluster.snapshot() == before


def test_the_oldest_requests_are_forgotten_past_the_bound_and_the_same_on_every_replica(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(machine, "REMEMBERED_REQUESTS", 3)
    replicas = [ClusterState(), ClusterState()]
    log: list[Command] = [Once(bytes([i]) * 16, create(f"s{i}")) for i in range(5)]
    for replica in replicas:
        for command in log:
            replica.apply(command)
    ids = [bytes([i]) * 16 for i in (2, 3, 4)]
    assert [list(r.applied_requests) for r in replicas] == [ids, ids]
    # Forgotten: a copy of the oldest applies again (here refused, as a name now in use).
    assert not replicas[0].apply(log[0]).ok
    assert replicas[1].apply(log[4]) == ApplyResult(True, value="id-s4")  # remembered


def test_what_is_remembered_survives_a_snapshot_and_a_copy_is_independent(
    cluster: ClusterState,  # noqa: F811
) -> None:
    once = Once(RID, create("api"))
    first = cluster.apply(once)
    restored = ClusterState.restore(cluster.snapshot())
    assert restored.applied_requests == {RID: first}
    assert restored.apply(once) == first and "id-api" in restored.services
    # A copy computes commands (the orchestrator's, a batch's scratch): it shares the memory,
    # and a Once is not applied to it.
    scratch = cluster.copy()
    refused = scratch.apply(Once(b"s" * 16, create("other")))
    assert not refused.ok and "not a copy" in refused.error
    assert list(cluster.applied_requests) == [RID] and "id-other" not in scratch.services


@pytest.mark.parametrize(
    "blob",
    [
        msgpack.packb([[b"r" * 16, True, "", 7]]),  # a value that is not a string
        msgpack.packb([[b"r" * 16, True, ""]]),  # a field short
        msgpack.packb({"r": 1}),
        b"\xc1",  # not msgpack
    ],
)
def test_a_snapshot_whose_request_memory_is_malformed_is_refused(
    cluster: ClusterState,  # noqa: F811
    blob: bytes,
) -> None:
    snap = dataclasses.replace(cluster.snapshot_record(), applied_requests=blob)
    with pytest.raises(RemoteProtocolError, match=r"applied_requests|undecodable msgpack"):
        ClusterState.restore(wire.encode(snap))
