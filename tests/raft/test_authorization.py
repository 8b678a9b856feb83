"""Issue #15 for Raft: who may send what, term bounds, and senders that survive their own bugs.

Pure tables for the classification (`messages.sender_refusal`) and the bounds
(`messages.is_well_formed`); the core's refusal of a forged huge term; the driver's receive side
(`RaftDriver.serve_stream`) fed a fake authenticated stream; its per-peer senders given a fake
transport."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest
import trio
import trio.testing

from swarmlet.certs import PeerIdentity
from swarmlet.errors import RemoteProtocolError
from swarmlet.raft.core import RaftConfig, RaftNode
from swarmlet.raft.driver import RaftDriver, RaftStreamHello
from swarmlet.raft.messages import (
    MESSAGES,
    AppendEntries,
    AppendResp,
    Heartbeat,
    HeartbeatResp,
    InstallSnapshot,
    Message,
    ReadIndexReq,
    ReadIndexResp,
    RequestVote,
    Role,
    TimeoutNow,
    VoteResp,
    is_well_formed,
    sender_refusal,
    sent_by_leader_or_candidate,
)
from swarmlet.raft.storage import RaftStorage
from swarmlet.raft.types import (
    MAX_INDEX,
    MAX_TERM,
    ConfState,
    Entry,
    HardState,
    Snapshot,
    SnapshotMeta,
)
from swarmlet.wire import codec as wire
from swarmlet.wire.protocol_version import COMMIT_ONLY_SINCE, PROTOCOL_VERSION
from swarmlet.wire.transport import Address, Counters, FramedStream, Transport

from .net import make_node, role

TIMEOUT_S = 30  # a hang fails the test; nothing here waits for more than a few ticks
HUGE = 2**64 - 1  # the forged term of issue #15: it encodes, its successor does not
ME = "n1"

# ---------------------------------------------------------------------------- classification

_SNAPSHOT = Snapshot(SnapshotMeta(2, 2, ConfState(voters=("n1", "n2"))), b"")

# One instance of every message type, and whether only a leader or a candidate sends it.
KINDS: list[tuple[Message, bool]] = [
    (AppendEntries("n2", ME, 2, 1, 1, (), 1), True),
    (Heartbeat("n2", ME, 2, 1), True),
    (InstallSnapshot("n2", ME, 2, _SNAPSHOT), True),
    (RequestVote("n2", ME, 2, 1, 1), True),
    (RequestVote("n2", ME, 2, 1, 1, pre_vote=True), True),
    (TimeoutNow("n2", ME, 2), True),
    (ReadIndexResp("n2", ME, 2, b"r", 1), True),
    (AppendResp("n2", ME, 2, 1), False),
    (HeartbeatResp("n2", ME, 2), False),
    (VoteResp("n2", ME, 2, True), False),
    (VoteResp("n2", ME, 2, True, pre_vote=True), False),
    (ReadIndexReq("n2", ME, 2, b"r"), False),
]


def test_every_message_type_is_classified() -> None:
    # A type appended to MESSAGES must be added here, and so to the classification, too.
    assert {type(msg) for msg, _ in KINDS} == set(MESSAGES)


@pytest.mark.parametrize(("msg", "leader_or_candidate"), KINDS)
def test_messages_only_a_leader_or_candidate_sends(msg: Message, leader_or_candidate: bool) -> None:
    assert sent_by_leader_or_candidate(msg) is leader_or_candidate


@pytest.mark.parametrize(("msg", "leader_or_candidate"), KINDS)
def test_a_worker_may_only_answer(msg: Message, leader_or_candidate: bool) -> None:
    expected = "not_manager" if leader_or_candidate else None
    assert (
        sender_refusal(msg, "n2", peer_may_lead=False, peer_in_group=True, current_term=msg.term)
        == expected
    )
    assert (
        sender_refusal(msg, "n2", peer_may_lead=True, peer_in_group=True, current_term=msg.term)
        is None
    )


@pytest.mark.parametrize(
    ("msg", "peer_id", "may_lead", "reason"),
    [
        (Heartbeat("n2", ME, 2, 1), "n3", True, "sender_not_peer"),  # n3 speaking as n2
        (AppendResp("n2", ME, 2, 1), "n3", False, "sender_not_peer"),
        (Heartbeat("n2", ME, HUGE, 0), "n2", True, "term_out_of_range"),
        (Heartbeat("n2", ME, MAX_TERM + 1, 0), "n2", True, "term_out_of_range"),
        (Heartbeat("n2", ME, MAX_TERM, 0), "n2", True, None),
        (VoteResp("n2", ME, HUGE, True), "n2", False, "term_out_of_range"),
        (Heartbeat("n2", ME, -1, 0), "n2", True, "term_out_of_range"),
        (RaftStreamHello("n2"), "n2", True, "not_raft"),
        # The sender is checked before the role: a worker forging a manager's heartbeat.
        (Heartbeat("n3", ME, 2, 1), "n2", False, "sender_not_peer"),
    ],
)
def test_sender_refusal(msg: object, peer_id: str, may_lead: bool, reason: str | None) -> None:
    assert (
        sender_refusal(
            msg, peer_id, peer_may_lead=may_lead, peer_in_group=True, current_term=MAX_TERM
        )
        == reason
    )


@pytest.mark.parametrize(
    "msg", [AppendResp("n2", ME, 8, 1), VoteResp("n2", ME, 8, True), Heartbeat("n2", ME, 8, 0)]
)
def test_a_worker_never_raises_the_term(msg: Message) -> None:
    # An answer at a higher term would make the leader step down: a worker could depose it.
    refusal = "term_from_non_manager" if not sent_by_leader_or_candidate(msg) else "not_manager"
    assert (
        sender_refusal(msg, "n2", peer_may_lead=False, peer_in_group=True, current_term=7)
        == refusal
    )
    assert sender_refusal(msg, "n2", peer_may_lead=False, peer_in_group=True, current_term=8) in (
        None,
        "not_manager",
    )
    assert sender_refusal(msg, "n2", peer_may_lead=True, peer_in_group=True, current_term=7) is None


# ---------------------------------------------------------------------------- bounds


@pytest.mark.parametrize(
    ("msg", "ok"),
    [
        (Heartbeat("n2", ME, MAX_TERM, 1), True),
        (Heartbeat("n2", ME, MAX_TERM + 1, 1), False),
        (Heartbeat("n2", ME, HUGE, 1), False),
        (RequestVote("n2", ME, HUGE, 1, 1), False),
        (AppendEntries("n2", ME, HUGE, 1, 1, (Entry(HUGE, 2),), 1), False),
        # Counters a node echoes back in its answer (a Heartbeat's commit becomes the index of
        # a short-log reject; its read_seq comes back in the HeartbeatResp): bounded too.
        (Heartbeat("n2", ME, 2, MAX_INDEX), True),
        (Heartbeat("n2", ME, 2, MAX_INDEX + 1), False),
        (Heartbeat("n2", ME, 2, 1, read_seq=HUGE), False),
        (AppendEntries("n2", ME, 2, HUGE, 1, (), 1), False),
        (AppendResp("n2", ME, 2, HUGE), False),
        (AppendResp("n2", ME, 2, 1, reject=True, hint_index=HUGE), False),
        (ReadIndexResp("n2", ME, 2, b"r", HUGE), False),
    ],
)
def test_terms_and_indexes_are_bounded(msg: Message, ok: bool) -> None:
    assert is_well_formed(msg, ME) is ok


def test_the_largest_term_leaves_room_to_campaign() -> None:
    # A node that reached MAX_TERM can still send MAX_TERM + 1 (its next campaign).
    assert wire.decode(wire.encode(VoteResp(ME, "n2", MAX_TERM + 1, True))).term == MAX_TERM + 1


def _state(node: RaftNode) -> tuple[object, ...]:
    return (node.term, node.vote, node.entries(), node.commit_index, role(node), node.leader_id)


def test_a_forged_huge_term_changes_nothing_in_a_follower() -> None:
    node = make_node(ME, term=3, vote="n2", entries=[Entry(2, 2), Entry(3, 3)])
    node.step(Heartbeat("n2", ME, 3, 1))  # n2 leads term 3
    while node.has_ready():
        node.advance(node.ready())
    before = _state(node)
    dropped = node.counters.get("dropped_invalid", 0)
    node.step(Heartbeat("n3", ME, HUGE, 3))
    node.step(AppendEntries("n3", ME, HUGE, 3, 3, (Entry(HUGE, 4, data=b"forged"),), 4))
    node.step(RequestVote("n3", ME, HUGE, 9, 9))
    assert _state(node) == before
    assert node.counters["dropped_invalid"] == dropped + 3
    assert not node.has_ready()  # nothing to persist, nothing to answer


def test_a_forged_huge_term_does_not_depose_a_leader() -> None:
    node = make_node(ME, voters=(ME,), config=RaftConfig(election_ticks=2))
    while role(node) is not Role.LEADER:
        node.tick()
    while node.has_ready():
        node.advance(node.ready())
    before = _state(node)
    node.step(Heartbeat("n2", ME, HUGE, 0))
    assert _state(node) == before
    assert not node.has_ready()


def test_a_message_at_the_largest_term_is_stepped() -> None:
    # The bound is inclusive: what the driver and the core accept agree.
    node = make_node(ME, term=3)
    node.step(Heartbeat("n2", ME, MAX_TERM, 1))
    assert node.term == MAX_TERM and node.leader_id == "n2"


# ---------------------------------------------------------------------------- the driver's fakes


@dataclass
class Journal:
    lines: list[bytes] = field(default_factory=list)

    def restore(self, data: bytes) -> None:
        self.lines = [data]

    def decode(self, data: bytes) -> object:
        return data

    def apply(self, index: int, data: bytes, decoded: object = None) -> str:
        self.lines.append(data)
        return str(index)

    def snapshot_later(self) -> Callable[[], bytes]:
        data = b"".join(self.lines)
        return lambda: data


class IncomingStream:
    """A Raft stream as the transport hands it over: authenticated as `peer`, with `frames`
    scripted (what the sender wrote after its hello)."""

    def __init__(self, peer: PeerIdentity | None, frames: list[object]) -> None:
        self.peer = peer
        self.frames = list(frames)
        self.read = 0
        self.allows_snapshots = False  # FramedStream's frame limit, raised for a leader's snapshot

    def allow_snapshots(self) -> None:
        self.allows_snapshots = True

    async def receive(self) -> object | None:
        if not self.frames:
            return None
        self.read += 1
        return self.frames.pop(0)


class OutgoingStream:
    """What a sender writes, encoded as FramedStream encodes it (every message of a batch before
    the write). `fail` raises once on the next send_many, as a broken stream might."""

    def __init__(self, transport: FakeTransport, node_id: str | None) -> None:
        self.transport = transport
        self.node_id = node_id
        self.fail: Exception | None = None
        self.closed = False
        self.hellos: list[object] = []
        self.peer_protocol = PROTOCOL_VERSION  # as the handshake settles it with this release

    async def send(self, msg: Any) -> None:  # the sender's hello
        await trio.lowlevel.checkpoint()
        self.hellos.append(wire.decode(wire.encode(msg)))

    async def send_many(self, msgs: list[Any]) -> None:
        await trio.lowlevel.checkpoint()
        encoded = [wire.encode(msg) for msg in msgs]
        if self.fail is not None:
            exc, self.fail = self.fail, None
            raise exc
        self.transport.sent.extend(wire.decode(frame) for frame in encoded)
        self.transport.changed.set()
        self.transport.changed = trio.Event()

    async def aclose(self) -> None:
        self.closed = True


class FakeTransport:
    """The driver's view of the transport: counters, and connect (which may be told to fail)."""

    def __init__(self) -> None:
        self.counters = Counters()
        self.streams: list[OutgoingStream] = []
        self.sent: list[object] = []
        self.changed = trio.Event()
        self.refuse_next: Exception | None = None
        self.first_fails: Exception | None = None
        self.peer_protocol = PROTOCOL_VERSION  # of the streams it opens

    async def connect(self, addr: Address, node_id: str | None = None) -> OutgoingStream:
        await trio.lowlevel.checkpoint()
        if self.refuse_next is not None:
            exc, self.refuse_next = self.refuse_next, None
            raise exc
        stream = OutgoingStream(self, node_id)
        stream.peer_protocol = self.peer_protocol
        if not self.streams and self.first_fails is not None:
            stream.fail = self.first_fails
        self.streams.append(stream)
        return stream

    async def wait_sent(self, msg: object) -> None:
        while msg not in self.sent:
            await self.changed.wait()


def _driver(path: Path, transport: FakeTransport, voters: tuple[str, ...]) -> RaftDriver[str]:
    storage = RaftStorage.open(path)
    meta = SnapshotMeta(index=1, term=1, conf=ConfState(voters=voters))
    storage.save(HardState(term=1, vote=None, commit=1), [], Snapshot(meta, b"seed"))
    return RaftDriver(
        ME,
        storage,
        Journal(),
        cast(Transport, transport),
        lambda node_id: ("127.0.0.1", 1) if node_id == "n2" else None,
        config=RaftConfig(election_ticks=4, heartbeat_ticks=1),
        tick_interval_s=0.05,
    )


def _peer(node_id: str, role: str) -> PeerIdentity:
    return PeerIdentity(node_id, role, 1, 0.0, "cluster", b"")


async def _serve(driver: RaftDriver[str], stream: IncomingStream, hello: str) -> None:
    with trio.fail_after(TIMEOUT_S):
        await driver.serve_stream(cast(FramedStream, stream), RaftStreamHello(hello))


def _core_state(driver: RaftDriver[str]) -> tuple[object, ...]:
    """Steps what was delivered first: refused messages must not even reach the inbox."""
    driver._take_inputs()
    return (*_state(driver.core), driver.core.has_ready())


# ---------------------------------------------------------------------------- serve_stream

THREE = (ME, "n2", "n3")
# Messages of n2 that would change n1's term, log or commit if stepped.
LEADING = [
    Heartbeat("n2", ME, 5, 1),
    AppendEntries("n2", ME, 5, 1, 1, (Entry(5, 2, data=b"forged"),), 2),
    InstallSnapshot("n2", ME, 5, Snapshot(SnapshotMeta(9, 5, ConfState(voters=("n2",))), b"x")),
    RequestVote("n2", ME, 5, 9, 5),
    TimeoutNow("n2", ME, 1),
    ReadIndexResp("n2", ME, 1, b"r", 1),
]


async def test_a_stream_without_an_identity_is_refused(tmp_path: Path) -> None:
    transport = FakeTransport()
    driver = _driver(tmp_path, transport, THREE)
    before = _core_state(driver)
    stream = IncomingStream(None, [Heartbeat("n2", ME, 5, 1)])
    await _serve(driver, stream, "n2")
    assert transport.counters["raft_refused_unauthenticated"] == 1
    assert stream.read == 0 and _core_state(driver) == before
    assert not stream.allows_snapshots


async def test_a_hello_from_another_node_than_the_peer_closes_the_stream(tmp_path: Path) -> None:
    transport = FakeTransport()
    driver = _driver(tmp_path, transport, THREE)
    before = _core_state(driver)
    # n3, a worker, says it is n2 (the field the sender fills); its certificate says n3.
    stream = IncomingStream(_peer("n3", "manager"), [Heartbeat("n2", ME, 5, 1)])
    await _serve(driver, stream, "n2")
    assert transport.counters["raft_refused_hello_not_peer"] == 1
    assert stream.read == 0 and _core_state(driver) == before
    assert not stream.allows_snapshots


async def test_messages_from_another_node_than_the_peer_are_dropped(tmp_path: Path) -> None:
    transport = FakeTransport()
    driver = _driver(tmp_path, transport, THREE)
    before = _core_state(driver)
    stream = IncomingStream(_peer("n3", "manager"), [Heartbeat("n2", ME, 5, 1)])
    await _serve(driver, stream, "n3")
    assert transport.counters["raft_refused_sender_not_peer"] == 1
    assert _core_state(driver) == before


async def test_a_worker_may_not_lead_or_campaign(tmp_path: Path) -> None:
    transport = FakeTransport()
    driver = _driver(tmp_path, transport, THREE)
    before = _core_state(driver)
    await _serve(driver, IncomingStream(_peer("n2", "worker"), list(LEADING)), "n2")
    assert transport.counters["raft_refused_not_manager"] == len(LEADING)
    assert _core_state(driver) == before


async def test_a_worker_may_answer(tmp_path: Path) -> None:
    # A learner answers the leader: its answers reach the core (and a later refusal on the
    # same stream does not end it).
    transport = FakeTransport()
    driver = _driver(tmp_path, transport, THREE)
    answers: list[object] = [
        Heartbeat("n2", ME, 5, 1),
        AppendResp("n2", ME, 1, 1),
        VoteResp("n2", ME, 1, False),
        HeartbeatResp("n2", ME, 1),
        ReadIndexReq("n2", ME, 1, b"r"),
    ]
    await _serve(driver, IncomingStream(_peer("n2", "worker"), answers), "n2")
    assert transport.counters["raft_refused_not_manager"] == 1
    assert driver._inbox == answers[1:]


async def test_a_worker_outside_the_group_may_not_even_answer(tmp_path: Path) -> None:
    """Its answers were dropped by the core, but only after taking places in the one inbox
    (4,096 messages) that the managers' acknowledgements need: a flood could crowd them out."""
    transport = FakeTransport()
    driver = _driver(tmp_path, transport, THREE)
    answers: list[object] = [AppendResp("n9", ME, 1, 1), HeartbeatResp("n9", ME, 1)]
    await _serve(driver, IncomingStream(_peer("n9", "worker"), answers), "n9")
    assert transport.counters["raft_refused_not_in_group"] == 2
    assert driver._inbox == []


async def test_a_manager_leads(tmp_path: Path) -> None:
    # The same messages a worker may not send change the follower when a manager sends them:
    # the refusals above are not vacuous.
    transport = FakeTransport()
    driver = _driver(tmp_path, transport, THREE)
    stream = IncomingStream(_peer("n2", "manager"), LEADING[:2])
    await _serve(driver, stream, "n2")
    assert stream.allows_snapshots  # the frames of a state past 64 MiB (the transport's tests)
    assert not any(k.startswith("raft_refused") for k in transport.counters)
    driver._take_inputs()
    assert driver.core.term == 5 and driver.core.leader_id == "n2"
    assert driver.core.entry_at(2) == Entry(5, 2, data=b"forged")


async def test_a_forged_huge_term_is_dropped_before_the_core(tmp_path: Path) -> None:
    transport = FakeTransport()
    driver = _driver(tmp_path, transport, THREE)
    before = _core_state(driver)
    frames: list[object] = [
        Heartbeat("n2", ME, HUGE, 1),
        AppendEntries("n2", ME, HUGE, 1, 1, (Entry(HUGE, 2, data=b"forged"),), 2),
        AppendResp("n2", ME, HUGE, 1),
    ]
    await _serve(driver, IncomingStream(_peer("n2", "manager"), frames), "n2")
    assert transport.counters["raft_refused_term_out_of_range"] == 3
    assert driver._inbox == []
    assert _core_state(driver) == before  # term, vote, log, commit; nothing to persist


async def test_a_stream_of_other_messages_is_dropped(tmp_path: Path) -> None:
    transport = FakeTransport()
    driver = _driver(tmp_path, transport, THREE)
    stream = IncomingStream(_peer("n2", "manager"), [RaftStreamHello("n2")])
    await _serve(driver, stream, "n2")
    assert transport.counters["raft_refused_not_raft"] == 1 and driver._inbox == []


# ---------------------------------------------------------------------------- senders


async def test_a_message_that_does_not_encode_stops_nothing(tmp_path: Path) -> None:
    transport = FakeTransport()
    driver = _driver(tmp_path, transport, (ME,))
    unencodable = AppendResp(ME, "n2", 2**64, 0)  # an int msgpack cannot hold
    before, after = HeartbeatResp(ME, "n2", 1, read_seq=1), HeartbeatResp(ME, "n2", 1, read_seq=2)
    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            await nursery.start(driver.run)
            driver._send(before)
            driver._send(unencodable)  # the same batch: the rest of it still goes out
            driver._send(after)
            await transport.wait_sent(after)
            later = HeartbeatResp(ME, "n2", 1, read_seq=3)
            driver._send(later)  # and the sender goes on
            await transport.wait_sent(later)
            while not driver.is_leader:
                await driver.leader_changed.wait()
            assert await driver.propose(b"x")  # and so does the driver
            nursery.cancel_scope.cancel()
    assert transport.sent == [before, after, later]
    assert transport.counters["raft_send_errors_encode"] == 1
    assert len(transport.streams) == 1 and not transport.streams[0].closed  # no reconnect
    assert transport.streams[0].node_id == "n2"  # the transport checks whom it reached


async def _run_senders(driver: RaftDriver[str], transport: FakeTransport, *msgs: Message) -> None:
    """Send `msgs` one at a time, each once the previous one arrived, without the driver's loop."""
    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            driver._nursery = nursery
            for msg in msgs:
                sent = len(transport.sent)
                driver._send(msg)
                while len(transport.sent) == sent:
                    await transport.changed.wait()
            nursery.cancel_scope.cancel()


@pytest.mark.parametrize("protocol", [COMMIT_ONLY_SINCE - 1, COMMIT_ONLY_SINCE])
async def test_a_peer_that_does_not_know_commit_notices_is_sent_plain_appends(
    tmp_path: Path, protocol: int
) -> None:
    # An older peer refuses a message with a field it does not know: it would refuse every
    # commit notice, and learn the commit index only from the next entries or heartbeat.
    transport = FakeTransport()
    transport.peer_protocol = protocol
    driver = _driver(tmp_path, transport, (ME,))
    notice = AppendEntries(ME, "n2", 1, 1, 1, (), 1, commit_only=True)
    after = HeartbeatResp(ME, "n2", 1, read_seq=1)
    await _run_senders(driver, transport, notice, after)
    (sent, _) = transport.sent
    assert isinstance(sent, AppendEntries)
    assert sent == dataclasses.replace(notice, commit_only=protocol >= COMMIT_ONLY_SINCE)


async def test_a_snapshot_no_member_would_take_is_not_sent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Sent, it would be refused after all its bytes, again at every retry of the snapshot.
    monkeypatch.setattr(wire, "MAX_SNAPSHOT_BYTES", 100)
    transport = FakeTransport()
    driver = _driver(tmp_path, transport, (ME,))
    conf = ConfState(voters=(ME, "n2"))

    def snapshot(size: int) -> InstallSnapshot:
        return InstallSnapshot(ME, "n2", 1, Snapshot(SnapshotMeta(3, 1, conf), b"s" * size))

    with caplog.at_level(logging.ERROR, logger="swarmlet.raft.driver"):
        driver._send(snapshot(101))
        driver._send(snapshot(101))  # the core's retry: counted, not logged again
        await _run_senders(driver, transport, snapshot(100))
    assert transport.sent == [snapshot(100)]
    assert transport.counters["raft_dropped_snapshot_too_large"] == 2
    assert [r.getMessage() for r in caplog.records] == [
        "raft: the state (101 bytes) is over 100: n2 cannot be sent a snapshot"
    ]


async def test_a_sender_reconnects_after_an_unexpected_error(tmp_path: Path) -> None:
    transport = FakeTransport()
    transport.first_fails = RuntimeError("a bug below the driver")
    driver = _driver(tmp_path, transport, (ME,))
    msgs = [HeartbeatResp(ME, "n2", 1, read_seq=i) for i in (1, 2)]
    await _run_senders(driver, transport, *msgs)
    assert transport.sent == msgs  # the first batch again, on a new stream
    assert transport.counters["raft_send_errors"] == 1
    assert [s.closed for s in transport.streams] == [True, False]


async def test_a_sender_goes_on_after_its_peer_is_refused(tmp_path: Path) -> None:
    # The transport raises RemoteProtocolError when the node at the address is not the one
    # expected, or is not admitted (revoked): the sender backs off and tries again later.
    transport = FakeTransport()
    transport.refuse_next = RemoteProtocolError("127.0.0.1:1 is n9, not n2")
    driver = _driver(tmp_path, transport, (ME,))
    later = HeartbeatResp(ME, "n2", 1, read_seq=2)
    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            driver._nursery = nursery
            driver._send(HeartbeatResp(ME, "n2", 1, read_seq=1))  # dropped with the connection
            while not transport.counters["raft_connect_failures"]:
                await trio.testing.wait_all_tasks_blocked()
            driver._send(later)
            await transport.wait_sent(later)
            nursery.cancel_scope.cancel()
    assert transport.sent == [later]
    assert [s.hellos for s in transport.streams] == [[RaftStreamHello(ME)]]


async def test_a_sender_goes_on_when_a_connected_peer_is_refused(tmp_path: Path) -> None:
    # A peer revoked while connected: FramedStream refuses the next frame.
    transport = FakeTransport()
    transport.first_fails = RemoteProtocolError("peer n2 is refused: revoked")
    driver = _driver(tmp_path, transport, (ME,))
    msg = HeartbeatResp(ME, "n2", 1, read_seq=1)
    await _run_senders(driver, transport, msg)
    assert transport.sent == [msg]
    assert transport.counters["raft_send_errors"] == 0  # an expected refusal, not logged
    assert [s.closed for s in transport.streams] == [True, False]
