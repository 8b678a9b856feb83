"""The control API refuses cluster writes on a node that is not a manager (as Swarm does). A
worker that holds a Raft replica (a learner kept by an older leader) serves reads; one that
holds only its view (issue #16) serves what the view answers (nodes, status) and refuses reads of
services, tasks, stacks, secrets and configs, naming the managers. The agent is a stand-in
holding a real KeyRing and ClusterState; a write handler that got past the refusal would touch
what the stand-in lacks and fail otherwise."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import trio

from swarmlet import crypto
from swarmlet.api.control_socket import Handler
from swarmlet.api.logs import ServiceLogs
from swarmlet.api.nodes import Control
from swarmlet.api.secrets import SecretControl
from swarmlet.api.services import ServiceControl
from swarmlet.api.stacks import StackControl
from swarmlet.errors import UsageError
from swarmlet.security.datadir import DataDir, Identity
from swarmlet.security.keyring import KeyRing
from swarmlet.state.machine import ApplyResult, ClusterState
from swarmlet.state.model import Node, Role
from swarmlet.wire.protocol_version import ONCE_SINCE

WRITES = {
    "node.update",
    "node.role",
    "node.rm",
    "service.create",
    "service.update",
    "service.rollback",
    "service.scale",
    "service.rm",
    "stack.deploy",
    "stack.rm",
    "secret.create",
    "secret.rm",
}


READS_OF_THE_CLUSTER = {
    "service.ls",
    "service.inspect",
    "service.spec",
    "service.ps",
    "stack.ls",
    "secret.ls",
    "secret.inspect",
}


@dataclass
class StandIn:
    keyring: KeyRing
    state: ClusterState = field(default_factory=ClusterState)
    stream_handlers: dict[type, Any] = field(default_factory=dict)
    view: bool = False  # whether `state` is a worker's view
    # What this node's streams tell of each node's release.
    transport: Any = field(default_factory=lambda: SimpleNamespace(peer_protocols={}))

    async def read_barrier(self) -> bool:
        return True

    def reads_view(self) -> bool:
        return self.view


def handlers(tmp_path: Path, *, manager: bool, view: bool = False) -> dict[str, Handler]:
    return handlers_of(stand_in(tmp_path, manager=manager, view=view))


def stand_in(tmp_path: Path, *, manager: bool, view: bool = False) -> Any:
    d = DataDir(tmp_path / "n1")
    d.write_identity(
        Identity("n1", "c", "n1", "127.0.0.1", 1, "127.0.0.1", "worker"),
        crypto.new_key(),
        crypto.new_node_key(),
    )
    if manager:
        d.write_manager_key(crypto.new_key())
    agent = StandIn(KeyRing(d, "n1", ClusterState, cluster_id="c1"), view=view)
    agent.state.nodes["m1"] = Node("m1", "m1", "127.0.0.1:1", "127.0.0.1", Role.MANAGER)
    return agent


def handlers_of(agent: Any) -> dict[str, Handler]:
    table: dict[str, Handler] = {}
    for control in (Control, ServiceControl, StackControl, SecretControl):
        table |= control(agent).handlers()
    return table


@pytest.mark.parametrize("op", sorted(WRITES))
async def test_a_worker_refuses_every_cluster_write(tmp_path: Path, op: str) -> None:
    handler = handlers(tmp_path, manager=False)[op]
    with (
        trio.fail_after(5),
        pytest.raises(UsageError, match="this node is not a manager: run it on a manager"),
    ):
        await handler({})


async def outcome(handler: Handler, args: dict[str, Any] | None = None) -> str:
    try:
        await handler(args or {})
    except UsageError as exc:  # the write's own checks of its (empty) arguments
        return str(exc)
    except AttributeError as exc:  # it reached what the stand-in lacks: past any refusal
        return str(exc)
    return "done"


@pytest.mark.parametrize("op", sorted(WRITES))
async def test_a_manager_goes_on_to_the_write(tmp_path: Path, op: str) -> None:
    with trio.fail_after(5):
        result = await outcome(handlers(tmp_path, manager=True)[op])
    assert "not a manager" not in result


@pytest.mark.parametrize("op", ["stack.ls", "secret.ls"])
async def test_a_worker_with_a_raft_replica_serves_reads(tmp_path: Path, op: str) -> None:
    with trio.fail_after(5):
        result = await handlers(tmp_path, manager=False)[op]({})
    assert result is not None


@pytest.mark.parametrize("op", sorted(READS_OF_THE_CLUSTER))
async def test_a_worker_reading_its_view_refuses_reads_of_the_cluster(
    tmp_path: Path, op: str
) -> None:
    with (
        trio.fail_after(5),
        pytest.raises(UsageError, match=r"this node is a worker: .* run this on a manager \(m1\)"),
    ):
        await handlers(tmp_path, manager=False, view=True)[op]({})


def test_every_read_of_the_cluster_is_listed(tmp_path: Path) -> None:
    """A new read of services, tasks, stacks or secrets must be guarded on a worker's view."""
    guarded = {
        op
        for op, handler in handlers(tmp_path, manager=False).items()
        if handler.__qualname__.startswith("cluster_reads.")
    }
    assert guarded == READS_OF_THE_CLUSTER


def test_every_write_is_listed(tmp_path: Path) -> None:
    """A new write operation must be guarded: this list, and the tests above, must know it."""
    writes = set()
    for op, handler in handlers(tmp_path, manager=False).items():
        if handler.__qualname__.startswith("managers_only."):
            writes.add(op)
    assert writes == WRITES


async def test_a_worker_reading_its_view_refuses_service_logs(tmp_path: Path) -> None:
    """`service logs` is a stream, not a handler: refused up front all the same (the nodes it
    would ask serve logs to managers only)."""
    agent: Any = StandIn(keyring=None, view=True)  # type: ignore[arg-type] (not reached)
    agent.state.nodes["m1"] = Node("m1", "m1", "127.0.0.1:1", "127.0.0.1", Role.MANAGER)
    emitted: list[Any] = []

    async def emit(item: Any) -> None:
        emitted.append(item)

    logs = ServiceLogs(agent).streams()["service.logs"]
    with trio.fail_after(5), pytest.raises(UsageError, match=r"run this on a manager \(m1\)"):
        await logs({"targets": ["web"]}, emit)
    assert emitted == []


@pytest.mark.parametrize("upgraded", [False, True], ids=["before-any-once", "after-a-once"])
async def test_a_node_of_an_older_release_is_not_promoted_once_the_log_holds_a_once(
    tmp_path: Path, upgraded: bool
) -> None:
    """Its replica would refuse every `Once` of the log, and the voter policy leaves it out of
    the group: a manager in name only. Refused, with what to do (found by a review)."""
    agent = stand_in(tmp_path, manager=True)
    agent.state.nodes["w1"] = Node("w1", "w1", "127.0.0.1:2", "127.0.0.1", Role.WORKER)
    agent.transport.peer_protocols["w1"] = ONCE_SINCE - 1
    if upgraded:
        agent.state.applied_requests[b"r" * 16] = ApplyResult(True)
    with trio.fail_after(5):
        result = await outcome(handlers_of(agent)["node.role"], {"node": "w1", "role": "manager"})
    if upgraded:
        assert result == (
            f"cannot promote w1: it runs an older release (protocol {ONCE_SINCE - 1}), "
            "which cannot apply this cluster's log; upgrade it first"
        )
    else:
        assert "older release" not in result  # on to the write
