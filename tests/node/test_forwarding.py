"""node.forwarding: writes forwarded to the leader in batches over one connection, each request
still checked on its own; a broken link fails its writes so that they are retried; without the
forwarder running, a write goes alone on its own connection. The network is trio's in-memory
streams; the leader's Raft is a fake that commits every proposal at once."""

from __future__ import annotations

import os
import time
from typing import Any, cast

import trio
import trio.testing

from swarmlet import crypto
from swarmlet.errors import NotLeaderError
from swarmlet.node.forwarding import WriteForwarding
from swarmlet.raft.driver import RaftDriver
from swarmlet.security import propose_auth
from swarmlet.security.keyring import KeyRing
from swarmlet.state.commands import UpdateNode
from swarmlet.state.machine import ApplyResult
from swarmlet.wire import codec as wire
from swarmlet.wire.peer_rpc import ProposeBatch, ProposeBatchReply, ProposeRequest
from swarmlet.wire.transport import Address, Counters, FramedStream, Transport

TIMEOUT_S = 30
LEADER = "leader"
MESSAGE_KEY = crypto.ClusterKeys(crypto.new_key()).message_key
MANAGERS = crypto.ManagerKeys(crypto.new_key())


class FakeRaft:
    """Leads (or follows `LEADER`); commits each proposal at once, counting them."""

    def __init__(self, *, leader: bool) -> None:
        self.is_leader = leader
        self.leader_id: str | None = None if leader else LEADER
        self.applied = 0
        self.proposed: list[bytes] = []
        self.leader_changed = trio.Event()

    async def propose(self, data: bytes) -> ApplyResult:
        if not self.is_leader:
            raise NotLeaderError(self.leader_id)
        await trio.lowlevel.checkpoint()
        self.applied += 1
        self.proposed.append(data)
        return ApplyResult(True, value=f"entry {self.applied}")

    async def wait_applied(self, index: int) -> None:
        await trio.lowlevel.checkpoint()


class _Counted:
    """The one part of a transport the leader's side uses."""

    counters = Counters()


class FakeKeyRing:
    managers = MANAGERS

    def require_managers(self) -> crypto.ManagerKeys:
        return MANAGERS


def _forwarding(node_id: str, raft: FakeRaft, transport: object) -> WriteForwarding:
    async def propose(command: object) -> ApplyResult:
        return await raft.propose(wire.encode(command))

    return WriteForwarding(
        node_id=node_id,
        raft=cast(RaftDriver[ApplyResult], raft),
        propose=propose,
        keyring=cast(KeyRing, FakeKeyRing()),
        transport=cast(Transport, transport),
        resolve=lambda _node_id: ("127.0.0.1", 1),
        write_timeout_s=5.0,
    )


class MemoryNetwork:
    """`connect` gives a framed in-memory connection to `serve`, run like the agent's listener:
    the first frame picks the handler."""

    def __init__(self, nursery: trio.Nursery, leader: WriteForwarding) -> None:
        self.nursery = nursery
        self.leader = leader
        self.counters = Counters()
        self.connections = 0
        self.batches = 0
        self.drop_first_connection = False

    async def connect(self, addr: Address) -> FramedStream:
        self.connections += 1
        near, far = trio.testing.memory_stream_pair()
        sealer = crypto.Sealer(MESSAGE_KEY)
        self.nursery.start_soon(
            self._serve, FramedStream(far, sealer, crypto.AAD_TCP, self.counters)
        )
        return FramedStream(near, sealer, crypto.AAD_TCP, self.counters)

    async def _serve(self, stream: FramedStream) -> None:
        if self.drop_first_connection and self.connections == 1:
            await stream.receive()
            await stream.aclose()  # the leader went away without answering
            return
        first = await stream.receive()
        if isinstance(first, ProposeRequest):
            await self.leader.serve_propose(stream, first, ("127.0.0.2", 1))
        elif isinstance(first, ProposeBatch):
            counting = _Counting(stream, self)
            await self.leader.serve_batches(cast(FramedStream, counting), first)
        await stream.aclose()


class _Counting:
    """A leader-side stream that counts the batches it reads."""

    def __init__(self, stream: FramedStream, network: MemoryNetwork) -> None:
        self._stream = stream
        self._network = network
        network.batches += 1

    async def receive(self, **kwargs: Any) -> Any:
        msg = await self._stream.receive(**kwargs)
        if msg is not None:
            self._network.batches += 1
        return msg

    async def send(self, msg: Any) -> None:
        await self._stream.send(msg)


def _command(i: int) -> UpdateNode:
    return UpdateNode("n1", labels_add={"k": str(i)})


async def test_concurrent_forwarded_writes_share_batches_on_one_connection() -> None:
    results: dict[int, ApplyResult] = {}
    leader_raft = FakeRaft(leader=True)
    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            network = MemoryNetwork(nursery, _forwarding(LEADER, leader_raft, _Counted()))
            follower = _forwarding("follower", FakeRaft(leader=False), network)
            await nursery.start(follower.run)

            async def write(i: int) -> None:
                results[i] = await follower.write(_command(i))

            async with trio.open_nursery() as writers:
                for i in range(50):
                    writers.start_soon(write, i)
            nursery.cancel_scope.cancel()
    assert all(r.ok for r in results.values()) and len(results) == 50
    assert len({r.value for r in results.values()}) == 50  # each got its own entry's answer
    assert sorted(leader_raft.proposed) == sorted(wire.encode(_command(i)) for i in range(50))
    assert network.connections == 1
    assert network.batches < 50


async def test_each_request_of_a_batch_is_checked_on_its_own() -> None:
    leader_raft = FakeRaft(leader=True)
    leader = _forwarding(LEADER, leader_raft, _Counted())

    def signed(i: int) -> ProposeRequest:
        return propose_auth.sign(
            MANAGERS,
            wire.encode(_command(i)),
            proposer="follower",
            leader=LEADER,
            nonce=os.urandom(propose_auth.NONCE_BYTES),
            now=time.time(),
        )

    forged = ProposeRequest(wire.encode(_command(1)), "worker", LEADER, os.urandom(16), time.time())
    near, far = trio.testing.memory_stream_pair()
    sealer = crypto.Sealer(MESSAGE_KEY)
    client = FramedStream(near, sealer, crypto.AAD_TCP, Counters())
    server = FramedStream(far, sealer, crypto.AAD_TCP, Counters())
    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                leader.serve_batches, server, ProposeBatch(7, (signed(0), forged, signed(2)))
            )
            reply = await client.receive(expect=(ProposeBatchReply,))
            nursery.cancel_scope.cancel()
    assert isinstance(reply, ProposeBatchReply) and reply.seq == 7
    assert [r.ok for r in reply.replies] == [True, False, True]
    assert "only managers may write" in reply.replies[1].error
    # The refused one was not proposed (the others go together, in no particular order).
    assert sorted(leader_raft.proposed) == sorted(
        [wire.encode(_command(0)), wire.encode(_command(2))]
    )


async def test_a_broken_link_fails_its_writes_and_they_are_retried() -> None:
    leader_raft = FakeRaft(leader=True)
    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            network = MemoryNetwork(nursery, _forwarding(LEADER, leader_raft, _Counted()))
            network.drop_first_connection = True
            follower = _forwarding("follower", FakeRaft(leader=False), network)
            await nursery.start(follower.run)
            result = await follower.write(_command(1))
            nursery.cancel_scope.cancel()
    assert result.ok
    assert network.connections == 2  # a new link, after the first broke
    assert leader_raft.proposed == [wire.encode(_command(1))]


async def test_without_the_forwarder_a_write_goes_alone() -> None:
    leader_raft = FakeRaft(leader=True)
    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            network = MemoryNetwork(nursery, _forwarding(LEADER, leader_raft, _Counted()))
            follower = _forwarding("follower", FakeRaft(leader=False), network)
            first = await follower.write(_command(1))
            second = await follower.write(_command(2))
            nursery.cancel_scope.cancel()
    assert first.ok and second.ok
    assert network.connections == 2 and network.batches == 0
