"""node.forwarding: writes forwarded to the leader in batches over one connection, each request
still checked on its own; a broken link fails its writes so that they are retried; without the
forwarder running, a write goes alone on its own connection. The leader answers only managers,
in their own names, as the connection's certificate and its state say. The network is real TLS
on 127.0.0.1 with certificates of a test CA (`tests.conftest.TestCA`); the leader's Raft is a
fake that commits every proposal at once."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, cast

import pytest
import trio

from swarmlet import crypto, off_loop
from swarmlet.certs import PeerIdentity
from swarmlet.errors import NoLeaderError, NotLeaderError
from swarmlet.node.forwarding import WriteForwarding
from swarmlet.raft.driver import MAX_PROPOSAL_BYTES, RaftDriver
from swarmlet.raft.types import ConfState
from swarmlet.security import peer_policy, propose_auth
from swarmlet.security.keyring import KeyRing
from swarmlet.state.commands import Command, CreateService, Once, UpdateNode
from swarmlet.state.machine import ApplyResult, ClusterState
from swarmlet.state.model import Node, Role, Service, ServiceSpec
from swarmlet.wire import codec as wire
from swarmlet.wire.peer_rpc import ProposeBatch, ProposeBatchReply, ProposeReply, ProposeRequest
from swarmlet.wire.protocol_version import ONCE_SINCE, PROTOCOL_VERSION
from swarmlet.wire.transport import Address, FramedStream, TlsConfig, Transport

if TYPE_CHECKING:
    from tests.conftest import TestCA

TIMEOUT_S = 30
HOST = "127.0.0.1"
LEADER = "leader"
MESSAGE_KEY = crypto.ClusterKeys(crypto.new_key()).message_key
MANAGERS = crypto.ManagerKeys(crypto.new_key())


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


class FakeRaft:
    """Leads (or follows `LEADER`); commits each proposal at once, counting them; applies it to
    `state` if it has one. Its group: the leader and the follower."""

    def __init__(self, *, leader: bool, state: ClusterState | None = None) -> None:
        self.is_leader = leader
        self.leader_id: str | None = None if leader else LEADER
        self.applied = 0
        self.proposed: list[bytes] = []
        self.batches_proposed: list[int] = []  # the size of each `propose_many`
        self.leader_changed = trio.Event()
        self.core = SimpleNamespace(conf=ConfState(voters=(LEADER, "follower")))
        self.state = state
        self.lose_lead_after_next_commit = False  # the lead lost as the entry commits

    async def propose(self, data: bytes) -> ApplyResult:
        if not self.is_leader:
            raise NotLeaderError(self.leader_id)
        await trio.lowlevel.checkpoint()
        self.applied += 1
        self.proposed.append(data)
        if self.state is not None:
            result = self.state.apply(wire.decode(data))
        else:
            result = ApplyResult(True, value=f"entry {self.applied}")
        if self.lose_lead_after_next_commit:
            # The entry committed (the next leader had it), but this leader lost the lead
            # before it learned so: what the driver answers is "lost".
            self.lose_lead_after_next_commit = False
            raise NotLeaderError(None)
        return result

    async def propose_many(self, datas: Sequence[bytes]) -> list[ApplyResult | NotLeaderError]:
        self.batches_proposed.append(len(datas))
        return [await self.propose(data) for data in datas]

    async def wait_applied(self, index: int) -> None:
        await trio.lowlevel.checkpoint()


class FakeKeyRing:
    managers = MANAGERS

    def require_managers(self) -> crypto.ManagerKeys:
        return MANAGERS


def cluster_state(cluster_id: str) -> ClusterState:
    """leader, follower, m2: managers; w1: a worker, once a manager (generation 1)."""
    state = ClusterState()
    state.cluster_id = cluster_id
    for node_id, role, generation in (
        (LEADER, Role.MANAGER, 0),
        ("follower", Role.MANAGER, 0),
        ("m2", Role.MANAGER, 0),
        ("w1", Role.WORKER, 1),
    ):
        state.nodes[node_id] = Node(
            node_id, node_id, f"{HOST}:1", HOST, role, cert_generation=generation
        )
    return state


def tls(
    ca: TestCA, state: ClusterState, node_id: str, role: str = "manager", generation: int = 0
) -> TlsConfig:
    """`node_id`'s side of the cluster channel, admitting peers as the agent does."""

    def admit(peer: PeerIdentity) -> PeerIdentity | str:
        return peer_policy.admit(peer, state, ca.cluster_id, time.time())

    return ca.tls(node_id, role=role, generation=generation, admit=admit)


def _forwarding(
    node_id: str,
    raft: FakeRaft,
    transport: Transport,
    state: ClusterState,
    leader_addr: Address,
    *,
    write_timeout_s: float = 5.0,
) -> WriteForwarding:
    async def propose(command: object) -> ApplyResult:
        return await raft.propose(wire.encode(command))

    return WriteForwarding(
        node_id=node_id,
        raft=cast(RaftDriver[ApplyResult], raft),
        propose=propose,
        keyring=cast(KeyRing, FakeKeyRing()),
        transport=transport,
        resolve=lambda _node_id: leader_addr,
        state=lambda: state,
        write_timeout_s=write_timeout_s,
    )


class Leader:
    """The leader's listener, run like the agent's: the first frame picks the handler.
    `certified_as`: the node its certificate names (the leader's, unless it is another node
    answering at the leader's address)."""

    def __init__(self, ca: TestCA, state: ClusterState, certified_as: str = LEADER) -> None:
        self.addr = (HOST, free_port())
        self.raft = FakeRaft(leader=True)
        self.transport = Transport(self.addr, MESSAGE_KEY, tls(ca, state, certified_as))
        self.forwarding = _forwarding(LEADER, self.raft, self.transport, state, self.addr)
        self.connections = 0
        self.batches = 0
        self.drop_first_connection = False
        self.answer_nothing_on_first_connection = False  # it commits the first batch, though

    async def on_stream(self, stream: FramedStream, addr: Address) -> None:
        self.connections += 1
        if self.drop_first_connection and self.connections == 1:
            await stream.receive()
            return  # the leader went away without answering (the listener closes it)
        first = await stream.receive()
        if self.answer_nothing_on_first_connection and self.connections == 1:
            assert isinstance(first, ProposeBatch)
            await self.forwarding._answer(stream.peer, first.requests)
            return  # committed, and gone before the answer (the listener closes the stream)
        if isinstance(first, ProposeRequest):
            await self.forwarding.serve_propose(stream, first, addr)
        elif isinstance(first, ProposeBatch):
            counting = _Counting(stream, self)
            await self.forwarding.serve_batches(cast(FramedStream, counting), first)


@asynccontextmanager
async def leader_serving(
    ca: TestCA, state: ClusterState, certified_as: str = LEADER
) -> AsyncIterator[Leader]:
    leader = Leader(ca, state, certified_as)

    async def no_join(*_args: object) -> None:
        return

    async with trio.open_nursery() as nursery:
        await nursery.start(leader.transport.serve_tcp, leader.on_stream, no_join)
        yield leader
        nursery.cancel_scope.cancel()


def follower_of(
    leader: Leader, ca: TestCA, state: ClusterState, *, write_timeout_s: float = 5.0
) -> WriteForwarding:
    transport = Transport((HOST, 0), MESSAGE_KEY, tls(ca, state, "follower"))
    raft = FakeRaft(leader=False)
    return _forwarding(
        "follower", raft, transport, state, leader.addr, write_timeout_s=write_timeout_s
    )


class _Counting:
    """A leader-side stream that counts the batches it reads."""

    def __init__(self, stream: FramedStream, leader: Leader) -> None:
        self._stream = stream
        self._leader = leader
        self.peer = stream.peer
        leader.batches += 1

    async def receive(self, **kwargs: Any) -> Any:
        msg = await self._stream.receive(**kwargs)
        if msg is not None:
            self._leader.batches += 1
        return msg

    async def send(self, msg: Any) -> None:
        await self._stream.send(msg)


def _command(i: int) -> UpdateNode:
    return UpdateNode("n1", labels_add={"k": str(i)})


def signed(i: int, proposer: str = "follower") -> ProposeRequest:
    """A write with a valid MAC of the managers' key, from `proposer` to the leader."""
    return signed_data(wire.encode(_command(i)), proposer)


def signed_data(data: bytes, proposer: str) -> ProposeRequest:
    """`data` as a write with a valid MAC of the managers' key, from `proposer` to the leader."""
    return propose_auth.sign(
        MANAGERS,
        data,
        proposer=proposer,
        leader=LEADER,
        nonce=os.urandom(propose_auth.NONCE_BYTES),
        now=time.time(),
    )


async def test_concurrent_forwarded_writes_share_batches_on_one_connection(
    test_ca: TestCA,
) -> None:
    results: dict[int, ApplyResult] = {}
    state = cluster_state(test_ca.cluster_id)
    with trio.fail_after(TIMEOUT_S):
        async with leader_serving(test_ca, state) as leader, trio.open_nursery() as nursery:
            follower = follower_of(leader, test_ca, state)
            await nursery.start(follower.run)

            async def write(i: int) -> None:
                results[i] = await follower.write(_command(i))

            async with trio.open_nursery() as writers:
                for i in range(50):
                    writers.start_soon(write, i)
            nursery.cancel_scope.cancel()
    assert all(r.ok for r in results.values()) and len(results) == 50
    assert len({r.value for r in results.values()}) == 50  # each got its own entry's answer
    assert sorted(leader.raft.proposed) == sorted(wire.encode(_command(i)) for i in range(50))
    assert leader.connections == 1
    assert leader.batches < 50
    # The leader proposes each batch's writes with one call, not a task per write.
    assert len(leader.raft.batches_proposed) == leader.batches


async def test_each_request_of_a_batch_is_checked_on_its_own(test_ca: TestCA) -> None:
    state = cluster_state(test_ca.cluster_id)
    unsigned = ProposeRequest(
        wire.encode(_command(1)), "follower", LEADER, os.urandom(16), time.time()
    )
    client = Transport((HOST, 0), MESSAGE_KEY, tls(test_ca, state, "follower"))
    with trio.fail_after(TIMEOUT_S):
        async with leader_serving(test_ca, state) as leader:
            stream = await client.connect(leader.addr, LEADER)
            async with stream.stream:
                await stream.send(ProposeBatch(7, (signed(0), unsigned, signed(2))))
                reply = await stream.receive(expect=(ProposeBatchReply,))
    assert isinstance(reply, ProposeBatchReply) and reply.seq == 7
    assert [r.ok for r in reply.replies] == [True, False, True]
    assert "only managers may write" in reply.replies[1].error
    # The refused one was not proposed; the others go together, in the batch's order.
    assert leader.raft.proposed == [wire.encode(_command(0)), wire.encode(_command(2))]
    assert leader.raft.batches_proposed == [2]


async def test_a_broken_link_fails_its_writes_and_they_are_retried(test_ca: TestCA) -> None:
    state = cluster_state(test_ca.cluster_id)
    with trio.fail_after(TIMEOUT_S):
        async with leader_serving(test_ca, state) as leader, trio.open_nursery() as nursery:
            leader.drop_first_connection = True
            follower = follower_of(leader, test_ca, state)
            await nursery.start(follower.run)
            result = await follower.write(_command(1))
            nursery.cancel_scope.cancel()
    assert result.ok
    assert leader.connections == 2  # a new link, after the first broke
    assert commands_proposed(leader.raft) == [_command(1)]


def commands_proposed(raft: FakeRaft) -> list[Command]:
    """What `raft` was given to commit, each without its `Once`, if it came in one."""
    commands = [wire.decode(data) for data in raft.proposed]
    return [c.command if isinstance(c, Once) else c for c in commands]


def request_ids(raft: FakeRaft) -> list[bytes | None]:
    return [getattr(wire.decode(data), "request_id", None) for data in raft.proposed]


SERVICE = CreateService(
    Service(id="s1", spec=ServiceSpec(name="web", image="busybox"), created_at=1.0, updated_at=1.0)
)


async def test_a_write_committed_as_its_link_broke_is_retried_and_applied_once(
    test_ca: TestCA,
) -> None:
    """The leader commits the write and goes away before it answers: the follower cannot tell
    whether it committed, and writes it again, on a new link. Both copies commit; the second
    is answered with the first's result. A `service create` written twice used to fail with
    "name in use" although it had succeeded."""
    state = cluster_state(test_ca.cluster_id)
    replica = ClusterState()  # what the leader's Raft applies
    with trio.fail_after(TIMEOUT_S):
        async with leader_serving(test_ca, state) as leader, trio.open_nursery() as nursery:
            leader.raft.state = replica
            leader.answer_nothing_on_first_connection = True
            follower = follower_of(leader, test_ca, state)
            follower.transport.peer_protocols[LEADER] = PROTOCOL_VERSION  # from its Raft stream
            await nursery.start(follower.run)
            result = await follower.write(SERVICE)
            nursery.cancel_scope.cancel()
    assert result == ApplyResult(True, value="s1")
    assert commands_proposed(leader.raft) == [SERVICE, SERVICE]  # both copies committed
    first, second = request_ids(leader.raft)
    assert first is not None and first == second
    assert list(replica.services) == ["s1"] and list(replica.applied_requests) == [first]
    assert follower.transport.counters["writes_once"] == 2  # two attempts of one write


async def test_a_write_whose_lead_was_lost_as_it_committed_is_retried_and_applied_once() -> None:
    """On the leader: the driver answers "lost" for an entry that the next leader went on to
    commit (this node leads again here, and the entry is in its state)."""
    replica = ClusterState()
    raft = FakeRaft(leader=True, state=replica)
    raft.lose_lead_after_next_commit = True
    transport = Transport((HOST, 0), MESSAGE_KEY, cast(TlsConfig, None))
    transport.peer_protocols["follower"] = PROTOCOL_VERSION
    forwarding = _forwarding(LEADER, raft, transport, cluster_state("c"), (HOST, 1))
    with trio.fail_after(TIMEOUT_S):
        result = await forwarding.write(SERVICE)
    assert result == ApplyResult(True, value="s1")
    assert commands_proposed(raft) == [SERVICE, SERVICE]
    assert len(set(request_ids(raft))) == 1 and list(replica.services) == ["s1"]


@pytest.mark.parametrize("older", ["follower", "learner"])
async def test_a_leader_proposes_no_once_while_a_member_is_of_an_older_protocol(
    older: str,
) -> None:
    """A member of protocol 3 would refuse a `Once` on apply (an unknown command): replicas
    would differ. Its writes then go as the command itself (a retry may apply twice)."""
    raft = FakeRaft(leader=True)
    raft.core = SimpleNamespace(conf=ConfState(voters=(LEADER, "follower"), learners=("w1",)))
    transport = Transport((HOST, 0), MESSAGE_KEY, cast(TlsConfig, None))
    transport.peer_protocols.update({"follower": PROTOCOL_VERSION, "w1": PROTOCOL_VERSION})
    transport.peer_protocols["follower" if older == "follower" else "w1"] = ONCE_SINCE - 1
    forwarding = _forwarding(LEADER, raft, transport, cluster_state("c"), (HOST, 1))
    with trio.fail_after(TIMEOUT_S):
        assert (await forwarding.write(_command(1))).ok
        assert request_ids(raft) == [None]
        transport.peer_protocols.update({"follower": PROTOCOL_VERSION, "w1": PROTOCOL_VERSION})
        assert (await forwarding.write(_command(2))).ok
        assert request_ids(raft)[1] is not None
    assert transport.counters["writes_without_once"] == 1
    assert transport.counters["writes_once"] == 1


async def test_a_new_leader_that_has_not_heard_from_a_member_proposes_a_once_if_one_applied() -> (
    None
):
    """Right after an election a leader may not know a member's protocol yet (a follower has
    no stream with the other followers). Unknown counts as older, unless the state has applied
    a `Once`: then every member speaks it (one that could not apply it would be behind, and is
    removed), and a retried write must stay one request."""
    raft = FakeRaft(leader=True)
    raft.core = SimpleNamespace(conf=ConfState(voters=(LEADER, "follower", "m2")))
    transport = Transport((HOST, 0), MESSAGE_KEY, cast(TlsConfig, None))
    transport.peer_protocols["follower"] = PROTOCOL_VERSION  # m2: not heard from yet
    state = cluster_state("c")
    forwarding = _forwarding(LEADER, raft, transport, state, (HOST, 1))
    with trio.fail_after(TIMEOUT_S):
        assert (await forwarding.write(_command(1))).ok
        assert request_ids(raft) == [None]
        assert state.apply(Once(b"r" * 16, UpdateNode("m2", labels_add={"k": "v"}))).ok
        assert (await forwarding.write(_command(3))).ok
    assert request_ids(raft)[1] is not None
    assert (transport.counters["writes_without_once"], transport.counters["writes_once"]) == (1, 1)


async def test_a_leader_unwraps_a_forwarded_once_while_a_member_is_of_an_older_protocol(
    test_ca: TestCA,
) -> None:
    """The follower and the leader speak `Once`, but m2, in the group, never said it does
    (it is of an older release, or has not connected): the leader proposes what is inside."""
    state = cluster_state(test_ca.cluster_id)
    with trio.fail_after(TIMEOUT_S):
        async with leader_serving(test_ca, state) as leader, trio.open_nursery() as nursery:
            leader.raft.core = SimpleNamespace(conf=ConfState(voters=(LEADER, "follower", "m2")))
            follower = follower_of(leader, test_ca, state)
            follower.transport.peer_protocols[LEADER] = PROTOCOL_VERSION  # from its Raft stream
            await nursery.start(follower.run)
            assert (await follower.write(_command(1))).ok
            nursery.cancel_scope.cancel()
    assert follower.transport.counters["writes_once"] == 1
    assert leader.raft.proposed == [wire.encode(_command(1))]
    assert leader.transport.counters["writes_once_unwrapped"] == 1


async def test_without_the_forwarder_a_write_goes_alone(test_ca: TestCA) -> None:
    state = cluster_state(test_ca.cluster_id)
    with trio.fail_after(TIMEOUT_S):
        async with leader_serving(test_ca, state) as leader:
            follower = follower_of(leader, test_ca, state)
            first = await follower.write(_command(1))
            second = await follower.write(_command(2))
    assert first.ok and second.ok
    assert leader.connections == 2 and leader.batches == 0


@pytest.mark.parametrize("with_forwarder", [False, True], ids=["alone", "linked"])
async def test_a_write_is_not_sent_to_another_node_at_the_leaders_address(
    test_ca: TestCA, with_forwarder: bool
) -> None:
    """m2, a manager of the same CA, answers at the address the leader resolves to: its
    certificate is not the leader's, so the follower sends it nothing and the write fails."""
    state = cluster_state(test_ca.cluster_id)
    with trio.fail_after(TIMEOUT_S):
        async with leader_serving(test_ca, state, "m2") as impostor, trio.open_nursery() as n:
            follower = follower_of(impostor, test_ca, state, write_timeout_s=0.5)
            if with_forwarder:
                await n.start(follower.run)
            with pytest.raises(NoLeaderError):
                await follower.write(_command(1))
            n.cancel_scope.cancel()
    assert follower.transport.counters["refused_peer_wrong_node"] >= 1
    assert impostor.raft.proposed == [] and impostor.batches == 0


async def propose_as(
    leader: Leader, sender: TlsConfig, request: ProposeRequest, *, batched: bool
) -> ProposeReply:
    """`request` sent to the leader over a connection made with `sender`'s certificate, alone or
    in a batch."""
    client = Transport((HOST, 0), MESSAGE_KEY, sender)
    stream = await client.connect(leader.addr, LEADER)
    async with stream.stream:
        if not batched:
            await stream.send(request)
            reply = await stream.receive(expect=(ProposeReply,))
            assert isinstance(reply, ProposeReply)
            return reply
        await stream.send(ProposeBatch(1, (request,)))
        batch = await stream.receive(expect=(ProposeBatchReply,))
        assert isinstance(batch, ProposeBatchReply)
        [reply] = batch.replies
        return reply


@pytest.mark.parametrize("batched", [False, True], ids=["alone", "batched"])
@pytest.mark.parametrize(
    ("node_id", "role", "generation"),
    [
        ("w1", "worker", 1),  # a worker's certificate
        ("w1", "manager", 0),  # a demoted manager's old certificate: taken as a worker's
        ("m9", "manager", 0),  # a manager's certificate for a node the leader does not know
    ],
    ids=["worker", "demoted-manager", "unknown-node"],
)
async def test_a_write_with_a_valid_mac_from_a_non_manager_is_refused_and_counted(
    test_ca: TestCA, node_id: str, role: str, generation: int, batched: bool
) -> None:
    """Whoever holds the managers' key (a demoted manager that kept it) makes a valid MAC:
    the sender's certificate and the leader's state decide who is a manager."""
    state = cluster_state(test_ca.cluster_id)
    sender = tls(test_ca, state, node_id, role, generation)
    with trio.fail_after(TIMEOUT_S):
        async with leader_serving(test_ca, state) as leader:
            reply = await propose_as(leader, sender, signed(1, node_id), batched=batched)
    assert not reply.ok and reply.error == "write refused: the sender is not a manager"
    assert leader.transport.counters["propose_refused"] == 1
    assert leader.raft.proposed == []


@pytest.mark.parametrize("batched", [False, True], ids=["alone", "batched"])
async def test_a_write_in_another_managers_name_is_refused_and_counted(
    test_ca: TestCA, batched: bool
) -> None:
    """m2 is a manager, but the request names `follower` as its proposer (a valid MAC: m2 holds
    the managers' key): a write is taken only in the sender's own name."""
    state = cluster_state(test_ca.cluster_id)
    with trio.fail_after(TIMEOUT_S):
        async with leader_serving(test_ca, state) as leader:
            m2 = tls(test_ca, state, "m2")
            reply = await propose_as(leader, m2, signed(1, "follower"), batched=batched)
            own_name = await propose_as(leader, m2, signed(2, "m2"), batched=batched)
    assert not reply.ok
    assert reply.error == "write refused: the sender is m2, not the proposer it names"
    assert leader.transport.counters["propose_refused"] == 1
    assert own_name.ok  # the same sender in its own name is taken
    assert leader.raft.proposed == [wire.encode(_command(2))]


@pytest.mark.parametrize("batched", [False, True], ids=["alone", "batched"])
async def test_a_write_over_the_size_of_one_entry_is_refused_before_it_is_proposed(
    test_ca: TestCA, batched: bool
) -> None:
    state = cluster_state(test_ca.cluster_id)
    huge = signed_data(b"\x00" * (MAX_PROPOSAL_BYTES + 1), "m2")
    with trio.fail_after(TIMEOUT_S):
        async with leader_serving(test_ca, state) as leader:
            m2 = tls(test_ca, state, "m2")
            reply = await propose_as(leader, m2, huge, batched=batched)
            after = await propose_as(leader, m2, signed(2, "m2"), batched=batched)
    assert not reply.ok and f"over {MAX_PROPOSAL_BYTES} bytes" in reply.error
    assert after.ok and leader.raft.proposed == [wire.encode(_command(2))]


async def test_a_batch_larger_than_any_forwarder_sends_closes_the_link_unanswered(
    test_ca: TestCA,
) -> None:
    """Each request of a batch is checked (a MAC, a decode, a reply): a peer sending batches of
    millions of requests had the leader's loop do all of that, and log each refusal."""
    state = cluster_state(test_ca.cluster_id)
    with trio.fail_after(TIMEOUT_S):
        async with leader_serving(test_ca, state) as leader:
            client = Transport((HOST, 0), MESSAGE_KEY, tls(test_ca, state, "w1", "worker", 1))
            stream = await client.connect(leader.addr, LEADER)
            async with stream.stream:
                await stream.send(ProposeBatch(1, tuple(signed(i, "w1") for i in range(257))))
                assert await stream.receive() is None  # closed, nothing answered
            assert leader.transport.counters["propose_refused_oversized_batch"] == 1
            assert leader.transport.counters["propose_refused"] == 0  # none was even checked
            m2 = tls(test_ca, state, "m2")
            assert (await propose_as(leader, m2, signed(2, "m2"), batched=True)).ok


async def test_a_once_inside_a_once_is_refused_before_it_is_proposed(test_ca: TestCA) -> None:
    """`write` never nests them. A leader that unwraps a forwarded `Once` for a group with an
    older member (`_without_once`) would have logged the inner `Once`, applied by the members
    that know it and refused by the others: replicas apart (found by a review)."""
    state = cluster_state(test_ca.cluster_id)
    nested = signed_data(wire.encode(Once(b"a" * 16, Once(b"b" * 16, _command(1)))), "m2")
    with trio.fail_after(TIMEOUT_S):
        async with leader_serving(test_ca, state) as leader:
            reply = await propose_as(leader, tls(test_ca, state, "m2"), nested, batched=True)
    assert not reply.ok and "a Once inside a Once" in reply.error
    assert leader.raft.proposed == []


@pytest.mark.parametrize("batched", [False, True], ids=["alone", "batched"])
async def test_a_large_write_is_checked_in_a_thread_as_a_small_one_is(
    test_ca: TestCA, batched: bool
) -> None:
    """From `off_loop.HEAVY_BYTES` on, the leader decodes a forwarded command in a thread: an
    undecodable one and a nested `Once` are refused there as on the loop, a valid one proposed
    byte for byte."""
    state = cluster_state(test_ca.cluster_id)
    padding = "x" * off_loop.HEAVY_BYTES
    valid = wire.encode(UpdateNode("n1", labels_add={"pad": padding}))
    garbage = b"\xc1" * off_loop.HEAVY_BYTES  # 0xc1: never used by msgpack
    nested = wire.encode(
        Once(b"a" * 16, Once(b"b" * 16, UpdateNode("n1", labels_add={"p": padding})))
    )
    with trio.fail_after(TIMEOUT_S):
        async with leader_serving(test_ca, state) as leader:
            m2 = tls(test_ca, state, "m2")
            bad = await propose_as(leader, m2, signed_data(garbage, "m2"), batched=batched)
            twice = await propose_as(leader, m2, signed_data(nested, "m2"), batched=batched)
            good = await propose_as(leader, m2, signed_data(valid, "m2"), batched=batched)
    assert not bad.ok and "invalid command" in bad.error
    assert not twice.ok and "a Once inside a Once" in twice.error
    assert good.ok and leader.raft.proposed == [valid]


async def test_a_write_the_leader_never_answers_fails_at_the_timeout_saying_its_fate_is_unknown(
    test_ca: TestCA,
) -> None:
    """It was an internal error: trio's TooSlowError reached the API (found by a review)."""
    state = cluster_state(test_ca.cluster_id)
    with trio.fail_after(TIMEOUT_S):
        async with leader_serving(test_ca, state) as leader, trio.open_nursery() as nursery:
            leader.raft.propose = _never_answered  # type: ignore[method-assign]
            follower = follower_of(leader, test_ca, state, write_timeout_s=1.0)
            await nursery.start(follower.run)
            with pytest.raises(NoLeaderError, match="may still be applied"):
                await follower.write(_command(1))
            nursery.cancel_scope.cancel()


async def _never_answered(data: bytes) -> ApplyResult:
    await trio.sleep_forever()
    raise AssertionError("unreachable")
