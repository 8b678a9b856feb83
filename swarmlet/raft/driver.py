"""The trio driver of the Raft core: time, durable storage, the network and the state machine.

One loop owns the core. Messages from peers and local proposals land in two inboxes; each turn
of the loop ticks, steps every queued message, proposes every queued command as ONE batch
(`RaftNode.propose_batch`), and then, in etcd's order, takes a `Ready`, persists it (fsync, in a
worker thread), sends its messages, calls `advance`, hands its committed entries to the
`StateMachine` it was given, and answers waiting proposals and reads. Whatever arrives during
the fsync waits in the inboxes for the next turn, so all the proposals pending at a Ready share one
append, one fsync and one AppendEntries per follower (group commit). Batches are pipelined, but
only `max_batches_in_flight` of them may wait for their commit at once: meanwhile the next batch
grows. Each batch costs every member a fixed amount of work (messages, a Ready, an fsync, a
wake-up of whatever watches the state) whatever its size, so when the CPU, not the network, is
what limits writes, a few large batches commit more than many small ones; a lone write still
goes out at once. An idle loop sleeps through the ticks that would only count
(`RaftNode.idle_ticks`) and counts them when it wakes, before it steps what woke it.

Persist before send, with one exception (Raft thesis §10.2.1): a leader's appends may leave
before its own disk write, so that the followers' writes overlap it. That is safe because the
leader counts itself in a quorum only for entries on its disk: no message is stepped until the
write has returned (the core is stepped by this loop alone), so no acknowledgement can commit
an entry the leader has not persisted. The exception holds only when the Ready changes neither
term nor vote and installs no snapshot (what a vote or an acknowledgement promises must be on
disk first), and when nothing it carries as committed lies in its own unpersisted entries (a
one-voter group commits on append: its learners must not apply what its disk may lose).

A turn applies for `apply_budget_s` at most (and at least one entry), the rest in the next
turns, so that a restart's replay of thousands of entries lets the gossip through; an entry of
`DECODE_AHEAD_BYTES` or more is decoded in a thread first (`StateMachine.decode`), and the
turns apply up to it meanwhile. Applying can
be held (`applies_held`) while something reads the state machine from another thread (the
leader's orchestration pass): Raft goes on, and what commits meanwhile is applied, in order,
when the hold ends. Raft separates commit from apply, so either is a slow state machine and
nothing more: proposals and reads wait for their apply as always.

Compaction takes the state machine's snapshot on the loop and encodes it in a thread
(`off_loop`): at 100,000 tasks that is half a second of CPU, in which a leader on the loop sent
no heartbeat. It is due once `snapshot_every` entries were applied since the last snapshot and
their bytes reach `snapshot_growth` times that snapshot's size (the Raft thesis, 5.1.3), or at
`snapshot_max_entries` entries whatever they weigh. A snapshot costs what the state weighs, so
the log it replaces grows with the state too (at 100,000 tasks and every 2,000 small writes,
encoding snapshots took a quarter of every member's CPU); but a restart replays the log entry
by entry (a small write, 30-260 us), so its length has a ceiling: 20,000 entries, 0.6-5 s of
replay, where 160,000 tiny ones could take to weigh a 4.7 MB snapshot. The log is compacted
to the snapshot between two turns of the loop; one compaction at a time, and one a leader's
snapshot overtook meanwhile is dropped.

The core is only touched under `_core_lock` (the loop holds it from taking a Ready to
`advance`); local requests other than proposals (reads, membership changes, transfers) take it
for one call.

Peers are reached through per-peer sender tasks with bounded queues: a slow or dead peer drops
messages (Raft tolerates loss) instead of blocking the loop; a sender writes everything queued
for its peer with one system call. A message that does not encode is dropped, logged and
counted, and never stops a sender (issue #15: it used to stop the agent).

Streams are authenticated by the transport (`FramedStream.peer`, from the peer's certificate);
a stream's messages must all come from that peer, and those only a leader or a candidate sends
from a manager (`messages.sender_refusal` says why).

The driver replicates bytes. What they mean, and what applying them answers, belongs to the
state machine (`swarmlet.raft.state_machine`): a proposer gets back exactly the result the state
machine returned for its entry, whatever its type, and the driver knows no command or state.
"""

from __future__ import annotations

import collections
import contextlib
import heapq
import logging
import random
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Generic, TypeVar, cast

import trio

from swarmlet import off_loop
from swarmlet.errors import NotLeaderError, ProposalTooLargeError, RemoteProtocolError
from swarmlet.raft.core import RaftConfig, RaftNode
from swarmlet.raft.disk_thread import DiskThread
from swarmlet.raft.interface import Ready
from swarmlet.raft.messages import (
    AppendEntries,
    InstallSnapshot,
    Message,
    Role,
    SoftState,
    sender_refusal,
)
from swarmlet.raft.state_machine import StateMachine
from swarmlet.raft.storage import RaftStorage
from swarmlet.raft.types import ConfChange, Entry, EntryKind, Snapshot
from swarmlet.wire import catalog
from swarmlet.wire import codec as wire
from swarmlet.wire.histogram import PROPOSAL_BUCKETS_S, Histogram
from swarmlet.wire.protocol_version import COMMIT_ONLY_SINCE
from swarmlet.wire.transport import Address, FramedStream, Transport

log = logging.getLogger(__name__)

_PEER_QUEUE = 512
_INBOX_LIMIT = 4096  # messages from peers waiting for the loop; beyond it they are dropped
# ... of which one peer outside the voters may hold at most this many: a learner (a worker of an
# older release, a manager beyond the voters) that streamed messages kept the inbox full, and
# the voters' acknowledgements were dropped with its own (review). An honest one answers the
# leader's messages, a few a turn.
_NON_VOTER_INBOX_SHARE = 256
_SEND_BATCH = 256  # messages written to a peer in one system call, at most
_RECONNECT_BACKOFF_S = 0.2

ResultT = TypeVar("ResultT")

# The largest entry a proposal may make: well inside the storage's record limit (64 MiB) and an
# AppendEntries frame (64 MiB), which must carry at least one entry.
MAX_PROPOSAL_BYTES = 16 * 1024 * 1024

# A committed entry at least this large is decoded in a thread (`StateMachine.decode`) before
# the loop applies it; smaller ones on the loop, where a thread hop would cost more. At most
# DECODE_AHEAD_ENTRIES of them wait decoded at once: a decoded entry is several times its bytes
# (a 4 MB stack of 10,000 services, 25 MB), and a replay or a hold may have thousands waiting.
DECODE_AHEAD_BYTES = off_loop.HEAVY_BYTES
DECODE_AHEAD_ENTRIES = 2

# How `propose` calls ended (`RaftDriver.proposal_outcomes`): applied here; refused at once
# (this node did not lead); lost with the leadership before its entry committed; abandoned by a
# caller that stopped waiting (its entry may still commit).
PROPOSAL_OUTCOMES = ("committed", "not_leader", "lost", "abandoned")


@dataclass(frozen=True, slots=True)
class RaftStreamHello:
    """First frame of a connection that carries Raft messages from `from_id`."""

    from_id: str


WIRE_TYPES: tuple[type, ...] = (RaftStreamHello,)
wire.register_all(catalog.RAFT_STREAM, WIRE_TYPES)


@dataclass
class _Waiter(Generic[ResultT]):
    """A proposal waiting for its entry. When `done` is set, `committed` says whether the entry
    at its index is the proposed one (False: it was refused or lost with the leadership, and
    `leader_hint` names the leader to retry with, if known)."""

    term: int = 0
    done: trio.Event = field(default_factory=trio.Event)
    committed: bool = False
    result: ResultT | None = None  # what the state machine answered, for an entry with data
    leader_hint: str | None = None


@dataclass(frozen=True, slots=True)
class RaftStatus:
    role: str
    term: int
    leader_id: str | None
    commit_index: int
    applied_index: int
    voters: tuple[str, ...]
    learners: tuple[str, ...]


class RaftDriver(Generic[ResultT]):
    def __init__(
        self,
        node_id: str,
        storage: RaftStorage,
        state_machine: StateMachine[ResultT],
        transport: Transport,
        resolve: Callable[[str], Address | None],
        *,
        config: RaftConfig,
        tick_interval_s: float,
        snapshot_every: int = 2000,
        snapshot_growth: float = 1.0,
        snapshot_max_entries: int = 20_000,
        max_batches_in_flight: int = 2,
        apply_budget_s: float = 0.02,
        on_soft_state: Callable[[SoftState], None] | None = None,
        on_applied: Callable[[], None] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.node_id = node_id
        self.storage = storage
        self.state_machine = state_machine
        self.transport = transport
        self.resolve = resolve
        self.tick_interval_s = tick_interval_s
        self.snapshot_every = snapshot_every
        self.snapshot_growth = snapshot_growth
        self.snapshot_max_entries = snapshot_max_entries
        self.apply_budget_s = apply_budget_s
        self._compacting = False
        self._step_downs_seen = (0, 0)  # the core's step-down counters at the last soft state
        # Bytes of entries applied (since start), and at the last snapshot, and its size.
        self._applied_bytes = 0
        self._snapshot_at_bytes = 0
        self._snapshot_bytes = 0
        self._disk = DiskThread()  # the storage's saves and compactions, in order, off the loop
        self._on_soft_state = on_soft_state
        # Called once a turn of the loop has applied what it applies (a Ready's committed
        # entries, or a snapshot, or the part of them its budget allows), before anyone waiting
        # on them runs: one wake-up of whatever follows the state per turn, not per entry. Not
        # during the start's replay (`_replaying`): those are older states than the one the node
        # stopped with (a keyring would drop the managers' key of a node promoted later in the
        # log); once, when the replay is through.
        self._on_applied = on_applied
        hard_state, snapshot, entries = storage.load()
        state_machine.restore(snapshot.data)
        self.applied = snapshot.meta.index
        self._snapshot_bytes = len(snapshot.data)
        # What this node knew to be committed when it stopped: its state is not "as before the
        # restart" until it has applied at least this far.
        self.startup_commit = hard_state.commit
        # The last entry of the log at the start, (index, term): the replay is through once it
        # is applied. Not `startup_commit`: the commit index on disk is rewritten only with the
        # term or vote, so it may lag far behind what the node had applied when it stopped, and
        # the rest commits again only once a leader says so. None once through.
        last = entries[-1] if entries else None
        self._replay_end: tuple[int, int] | None = (
            (last.index, last.term) if last is not None and last.index > self.applied else None
        )
        self._persisted_term_vote = (hard_state.term, hard_state.vote)
        self.core = RaftNode(
            node_id,
            config,
            rng or random.Random(),
            hard_state=hard_state,
            snapshot=snapshot,
            entries=entries,
            applied=snapshot.meta.index,
            vote_floor=storage.vote_floor,
        )
        self._core_lock = trio.Lock()
        self._wake = trio.Event()
        self._reachable: set[str] = set()  # peers gossip saw come up, for the loop to tell
        # `wait_applied` callers: one event per index awaited, released in index order once
        # applied reaches it (a heap, so an apply wakes only those whose index it reached).
        self._applied_events: dict[int, trio.Event] = {}
        self._applied_heap: list[int] = []
        # What committed (and a snapshot that came) and is not applied yet, in order: while
        # `applies_held` holders are inside, and beyond a turn's `apply_budget_s`. Only the
        # loop applies (an error applying stops the driver, whoever waits). For a holder that
        # waits for what committed before it came: `_applied_more` is set at each turn that
        # applied, `_holds_ended` each time the last holder leaves.
        self._apply_holds = 0
        self._unapplied: collections.deque[Entry | Snapshot] = collections.deque()
        # Large entries among them, decoded in a thread before their turn (`_decode_ahead`), in
        # log order: those still to decode, and index -> what `StateMachine.decode` answered.
        # The loop applies no further than the first large entry not decoded yet.
        self._to_decode: collections.deque[Entry] = collections.deque()
        self._decoded: dict[int, object] = {}
        self._decode_wanted = trio.Event()  # set when either of the two changes
        self._applied_more = trio.Event()
        self._holds_ended = trio.Event()
        self._inbox: list[Message] = []  # from peers, stepped by the loop in arrival order
        self._inbox_of_non_voters: collections.Counter[str] = collections.Counter()
        self._too_large_logged: dict[str, int] = {}  # peer -> index of the snapshot not sent
        self._proposals: list[tuple[bytes, _Waiter[ResultT]]] = []  # proposed as one batch
        self._batch_ends: collections.deque[int] = collections.deque()  # last index of each
        self.max_batches_in_flight = max_batches_in_flight
        self._waiters: dict[int, _Waiter[ResultT]] = {}
        self._reads: dict[bytes, tuple[trio.Event, list[int]]] = {}
        self._read_seq = 0
        self._peers: dict[str, trio.MemorySendChannel[Message]] = {}
        self._nursery: trio.Nursery | None = None
        self.soft_state = SoftState(Role.FOLLOWER, None, hard_state.term)
        self.leader_changed = trio.Event()
        # Read by `node.metrics` at scrape time: `propose` calls by outcome, and the seconds from
        # `propose` to its entry applied on this node (committed ones only).
        self.proposal_outcomes = dict.fromkeys(PROPOSAL_OUTCOMES, 0)
        self.proposal_latency = Histogram(PROPOSAL_BUCKETS_S)
        # Times this node learnt of a new leader (as etcd's leader_changes_seen_total).
        self.leader_changes_seen = 0

    # ------------------------------------------------------------------------ observation

    @property
    def is_leader(self) -> bool:
        return self.core.role is Role.LEADER

    @property
    def leader_caught_up(self) -> bool:
        """Leads, and has applied an entry of its own term (its no-op): its state holds
        everything committed before its election. Until then a new leader's state may lag its
        log, a restarted node's by much (it applied only what its disk knew as committed, and
        the commit index is not saved at every write). What decides from the state (the
        leader's duties) waits for this, as swarmkit's orchestrators wait for its leader to
        have caught up before it signals leadership."""
        return self.core.role is Role.LEADER and self.core.term_at(self.applied) == self.core.term

    @property
    def leader_id(self) -> str | None:
        return self.core.leader_id

    def status(self) -> RaftStatus:
        conf = self.core.conf
        return RaftStatus(
            role=self.core.role.name.lower(),
            term=self.core.term,
            leader_id=self.core.leader_id,
            commit_index=self.core.commit_index,
            applied_index=self.applied,
            voters=tuple(conf.voters),
            learners=tuple(conf.learners),
        )

    # ------------------------------------------------------------------------ inputs

    def deliver(self, msg: Message) -> None:
        """Queue a message from a peer for the loop (dropped, and counted, if the loop is that
        far behind: Raft tolerates loss)."""
        if len(self._inbox) >= _INBOX_LIMIT:
            self.transport.counters["raft_dropped_inbox_full"] += 1
            return
        if msg.from_id not in self.core.conf.voters:
            held = self._inbox_of_non_voters[msg.from_id]
            if held >= _NON_VOTER_INBOX_SHARE:
                self.transport.counters["raft_dropped_inbox_share"] += 1
                return
            self._inbox_of_non_voters[msg.from_id] = held + 1
        self._inbox.append(msg)
        self._wake.set()

    async def propose(self, data: bytes) -> ResultT:
        """Propose `data` on this node (the leader), wait until it is applied here, and return
        what the state machine answered for it. Concurrent proposals share one append.

        Raises NotLeaderError (with the hint) if this node is not the leader, or if leadership
        was lost before the entry committed (the caller may retry with the new leader).
        """
        (outcome,) = await self.propose_many((data,))
        if isinstance(outcome, NotLeaderError):
            raise outcome
        return outcome

    async def propose_many(self, datas: Sequence[bytes]) -> list[ResultT | NotLeaderError]:
        """Propose each of `datas`, in order and in one append with whatever else is pending,
        and wait until each is applied here or lost. Per entry: what the state machine
        answered, or the NotLeaderError (with the hint) of an entry lost with the leadership.
        One caller for a whole batch (a follower's forwarded writes), not a task per entry.

        Raises NotLeaderError at once if this node is not the leader.
        """
        if not all(datas):
            raise ValueError("an entry without data is Raft's own no-op: propose some data")
        if not datas:
            return []
        largest = max(map(len, datas))
        if largest > MAX_PROPOSAL_BYTES:
            # Refused here, with a reason, rather than by the storage's record limit in the
            # disk thread (which stops the node) or the transport's frame limit (which stalls
            # replication).
            raise ProposalTooLargeError(
                f"a write of {largest} bytes is over the limit of {MAX_PROPOSAL_BYTES} bytes"
            )
        if not self.is_leader:
            self.proposal_outcomes["not_leader"] += len(datas)
            raise NotLeaderError(self.core.leader_id)
        waiters = [_Waiter[ResultT]() for _ in datas]
        self._proposals.extend(zip(datas, waiters, strict=True))
        self._wake.set()
        started = time.perf_counter()  # real time (not a test's MockClock), cheaper than trio's
        outcomes: list[ResultT | NotLeaderError] = []
        try:
            for waiter in waiters:  # applied in order: after the first wait, most are done
                if not waiter.done.is_set():
                    await waiter.done.wait()
                if not waiter.committed:
                    self.proposal_outcomes["lost"] += 1
                    outcomes.append(NotLeaderError(waiter.leader_hint))
                    continue
                self.proposal_outcomes["committed"] += 1
                self.proposal_latency.observe(time.perf_counter() - started)
                # A committed NORMAL entry with data always went through the state machine.
                outcomes.append(cast(ResultT, waiter.result))
        except trio.Cancelled:
            self.proposal_outcomes["abandoned"] += len(waiters) - len(outcomes)
            raise
        return outcomes

    async def propose_conf_change(self, change: ConfChange) -> None:
        async with self._core_lock:
            index = self.core.propose_conf_change(change)
            waiter = _Waiter[ResultT](term=self.core.term)
            self._waiters[index] = waiter
        self._wake.set()
        await waiter.done.wait()
        if not waiter.committed:
            raise NotLeaderError(self.core.leader_id)

    async def read_barrier(self) -> None:
        """Wait until this node's state reflects every write committed before the call
        (ReadIndex, Raft thesis §6.4). Raises NotLeaderError-free; callers bound it in time."""
        self._read_seq += 1
        ctx = f"{self.node_id}/{self._read_seq}".encode()
        event = trio.Event()
        slot: list[int] = []
        self._reads[ctx] = (event, slot)
        try:
            async with self._core_lock:
                self.core.read_index(ctx)
            self._wake.set()
            await event.wait()
            await self.wait_applied(slot[0])
        finally:
            self._reads.pop(ctx, None)

    async def wait_applied(self, index: int) -> None:
        if self.applied >= index:
            return
        event = self._applied_events.get(index)
        if event is None:
            event = self._applied_events[index] = trio.Event()
            heapq.heappush(self._applied_heap, index)
        await event.wait()

    def _release_applied(self) -> None:
        heap = self._applied_heap
        while heap and heap[0] <= self.applied:
            self._applied_events.pop(heapq.heappop(heap)).set()

    def peer_reachable(self, peer: str) -> None:
        """`peer` has just come up (gossip says): the loop tells the core, whose leader then
        probes it at once (`RaftNode.peer_reachable`)."""
        self._reachable.add(peer)
        self._wake.set()

    async def transfer_leadership(self, to: str) -> None:
        async with self._core_lock:
            self.core.transfer_leadership(to)
        self._wake.set()

    # ------------------------------------------------------------------------ the network

    async def serve_stream(self, stream: FramedStream, hello: RaftStreamHello) -> None:
        """An incoming connection from a peer's sender: queue every message it carries that its
        authenticated peer may send (refused ones are counted as `raft_refused_<reason>`).
        Returning refuses the rest of the stream: the transport closes it."""
        peer = stream.peer
        if peer is None:  # the join channel has no identity, and carries no Raft
            self.transport.counters["raft_refused_unauthenticated"] += 1
            return
        if hello.from_id != peer.node_id:
            self.transport.counters["raft_refused_hello_not_peer"] += 1
            return
        # A leader's InstallSnapshot is the whole state in one frame; any other frame, and one
        # from a peer that is not a manager, is still refused at the usual sizes.
        stream.allow_snapshots()
        while True:
            try:
                msg = await stream.receive()
            except RemoteProtocolError:
                return
            if msg is None:
                return
            # A manager's certificate, not a voter of our configuration (see sender_refusal), as
            # admitted at this frame: a demotion applied meanwhile lowers `stream.peer`'s role.
            admitted = stream.peer
            may_lead = admitted is not None and admitted.is_manager
            conf = self.core.conf
            reason = sender_refusal(
                msg,
                peer.node_id,
                peer_may_lead=may_lead,
                peer_in_group=peer.node_id in conf.voters or peer.node_id in conf.learners,
                current_term=self.core.term,
            )
            if reason is not None:
                self.transport.counters[f"raft_refused_{reason}"] += 1
                continue
            self.deliver(msg)

    def _send(self, msg: Message) -> None:
        to = msg.to_id
        if isinstance(msg, InstallSnapshot) and len(msg.snapshot.data) > wire.MAX_SNAPSHOT_BYTES:
            # No member would take it: sent, it would be refused after every byte of it. The core
            # retries every `snapshot_retry_ticks`: counted each time, logged once a snapshot.
            self.transport.counters["raft_dropped_snapshot_too_large"] += 1
            if self._too_large_logged.get(to) != msg.snapshot.meta.index:
                self._too_large_logged[to] = msg.snapshot.meta.index
                log.error(
                    "raft: the state (%d bytes) is over %d: %s cannot be sent a snapshot",
                    len(msg.snapshot.data),
                    wire.MAX_SNAPSHOT_BYTES,
                    to,
                )
            return
        channel = self._peers.get(to)
        if channel is None:
            assert self._nursery is not None
            channel, receive = trio.open_memory_channel[Message](_PEER_QUEUE)
            self._peers[to] = channel
            self._nursery.start_soon(self._sender, to, receive)
        try:
            channel.send_nowait(msg)
        except trio.WouldBlock:
            self.transport.counters["raft_dropped_peer_queue_full"] += 1

    async def _sender(self, peer: str, queue: trio.MemoryReceiveChannel[Message]) -> None:
        stream: FramedStream | None = None
        async for first in queue:
            batch = [first]
            while len(batch) < _SEND_BATCH:
                try:
                    batch.append(queue.receive_nowait())
                except trio.WouldBlock:
                    break
            reconnects = 1  # after a broken stream; then drop: Raft retransmits what matters
            while batch:
                if stream is None:
                    addr = self.resolve(peer)
                    if addr is None:
                        self.transport.counters["raft_dropped_unknown_peer"] += 1
                        break
                    try:
                        # The transport checks that the node at `addr` is `peer` (its
                        # certificate), so a stale address book cannot send our log elsewhere;
                        # it raises RemoteProtocolError if not, or if `peer` is not admitted.
                        stream = await self.transport.connect(addr, node_id=peer)
                        await stream.send(RaftStreamHello(self.node_id))
                    except (
                        OSError,
                        trio.TooSlowError,
                        trio.BrokenResourceError,
                        RemoteProtocolError,
                    ):
                        stream = None
                        self.transport.counters["raft_connect_failures"] += 1
                        await trio.sleep(_RECONNECT_BACKOFF_S)
                        break
                try:
                    await stream.send_many(_as_spoken(batch, stream.peer_protocol))
                    break
                except (
                    OSError,
                    trio.BrokenResourceError,
                    trio.ClosedResourceError,
                    RemoteProtocolError,  # the peer was refused (revoked) since it connected
                ):
                    broken = True
                except Exception:
                    # Whatever else goes wrong, a sender never stops (it would stop the agent).
                    good = self._encodable(peer, batch)
                    broken = len(good) == len(batch)
                    if broken:
                        log.exception("raft: sending to %s failed", peer)
                        self.transport.counters["raft_send_errors"] += 1
                    # Else the rest goes out on the same stream, intact: a message that does not
                    # encode is never partly written (those before it may be sent twice, which
                    # Raft tolerates).
                    batch = good
                if broken:
                    await stream.aclose()
                    stream = None
                    if not reconnects:
                        break
                    reconnects -= 1

    def _encodable(self, peer: str, batch: list[Message]) -> list[Message]:
        """The messages of `batch` that encode; the others are logged and counted. A message of
        our own that does not encode is a bug (the core keeps terms and indexes far below the
        wire's limits), but one message must not stop a sender, let alone the agent."""
        good = []
        for msg in batch:
            try:
                wire.encode(msg)
            except Exception:
                log.exception(
                    "raft: dropped a %s to %s: it does not encode", type(msg).__name__, peer
                )
                self.transport.counters["raft_send_errors_encode"] += 1
            else:
                good.append(msg)
        return good

    # ------------------------------------------------------------------------ the loop

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._decode_ahead)
            task_status.started()
            next_tick = trio.current_time() + self.tick_interval_s
            if self.core.has_ready():
                self._wake.set()  # the log's committed entries: replayed without waiting
            while True:
                # Ticks the loop slept through on purpose, to be counted when it wakes (issue
                # #20): the core says how many only count (`idle_ticks`), so an idle follower
                # wakes at its election timeout or for a message, not at every tick.
                slept_ticks = 1
                if not (
                    self._inbox or self._reachable or self._may_propose() or self._releasable()
                ):
                    slept_ticks = self.core.idle_ticks()
                    wake_at = next_tick + (slept_ticks - 1) * self.tick_interval_s
                    with trio.move_on_at(wake_at):
                        await self._wake.wait()
                self._wake = trio.Event()
                busy = True
                while busy:  # until the inboxes are empty and the core has nothing to do
                    async with self._core_lock:  # released between turns: reads wait one turn
                        now = trio.current_time()
                        if now >= next_tick:
                            # The ticks due, in order, before any message that came meanwhile
                            # is stepped: as if the loop had woken for each. Beyond those it
                            # slept through, ticks missed while the loop was busy are dropped,
                            # not replayed in a burst (as etcd's ticker drops them): a burst
                            # would age every timer at once, and check-quorum would depose a
                            # leader that was only slow to read its followers' answers.
                            # (+1e-6: a wake-up at a deadline computed from `next_tick` counts
                            # as that tick in spite of rounding.)
                            due = 1 + int((now - next_tick) / self.tick_interval_s + 1e-6)
                            for _ in range(min(due, slept_ticks)):
                                self.core.tick()
                            next_tick += min(due, slept_ticks) * self.tick_interval_s
                            if next_tick <= now:
                                next_tick = now + self.tick_interval_s
                        slept_ticks = 1
                        self._take_inputs()
                        busy = self.core.has_ready()
                        if busy:
                            await self._handle_ready()
                        if self._releasable():
                            self._apply_some(self.apply_budget_s)
                        busy = busy or self._releasable()

    def _may_propose(self) -> bool:
        """Whether queued proposals go into the log now: when fewer than
        `max_batches_in_flight` earlier batches wait for their commit (else they wait, and the
        next batch grows), or at once when this node no longer leads (they are refused)."""
        if not self._proposals:
            return False
        if self.core.role is not Role.LEADER:
            self._batch_ends.clear()
            return True
        commit = self.core.commit_index
        while self._batch_ends and self._batch_ends[0] <= commit:
            self._batch_ends.popleft()
        return len(self._batch_ends) < self.max_batches_in_flight

    def _take_inputs(self) -> None:
        """Step what the peers sent, then propose everything queued as one batch."""
        if self._inbox:
            inbox, self._inbox = self._inbox, []
            self._inbox_of_non_voters.clear()
            for msg in inbox:
                self.core.step(msg)
        if self._reachable:
            reachable, self._reachable = self._reachable, set()
            for peer in sorted(reachable):
                self.core.peer_reachable(peer)
        if self._may_propose():
            batch, self._proposals = self._proposals, []
            try:
                indexes = self.core.propose_batch([data for data, _ in batch])
            except NotLeaderError as exc:
                for _, waiter in batch:
                    waiter.leader_hint = exc.leader_hint
                    waiter.done.set()
                return
            for index, (_, waiter) in zip(indexes, batch, strict=True):
                waiter.term = self.core.term
                self._waiters[index] = waiter
            self._batch_ends.append(indexes[-1])

    def _may_send_before_persist(self, rd: Ready) -> bool:
        """Thesis §10.2.1, with the conditions of the module docstring."""
        if self.core.role is not Role.LEADER or rd.snapshot is not None:
            return False
        hs = rd.hard_state
        if hs is not None and (hs.term, hs.vote) != self._persisted_term_vote:
            return False
        return not rd.entries or self.core.commit_index < rd.entries[0].index

    async def _handle_ready(self) -> None:
        rd = self.core.ready()
        hard_state = rd.hard_state
        if (
            hard_state is not None
            and rd.snapshot is None
            and (hard_state.term, hard_state.vote) == self._persisted_term_vote
        ):
            # Only the commit index moved. It is volatile state (Raft Figure 2): a restarted node
            # relearns it from the leader, and an older persisted value is a safe lower bound.
            # Skipping this save spares an atomic rewrite (two fsyncs) on most Readys.
            hard_state = None
        early = self._may_send_before_persist(rd)
        if early:
            for msg in rd.messages:
                self._send(msg)
        if hard_state is not None or rd.entries or rd.snapshot is not None:
            # Durable before anything that depends on it leaves this node (Raft Figure 2).
            await self._disk.run_sync(self.storage.save, hard_state, list(rd.entries), rd.snapshot)
            if hard_state is not None:
                self._persisted_term_vote = (hard_state.term, hard_state.vote)
        if not early:
            for msg in rd.messages:
                self._send(msg)
        # Applied after this (`_apply_some`), in order; the snapshot too (it replaces the state
        # whole).
        if rd.snapshot is not None:
            self._unapplied.append(rd.snapshot)
        self._unapplied.extend(rd.committed_entries)
        large = [e for e in rd.committed_entries if _decodes_ahead(e)]
        if large:
            self._to_decode.extend(large)
            self._decode_wanted.set()
        for read in rd.read_states:
            pending = self._reads.get(read.ctx)
            if pending is not None:
                pending[1].append(read.index)
                pending[0].set()
        if rd.soft_state is not None:
            self._set_soft_state(rd.soft_state)
        self.core.advance(rd)

    @contextlib.asynccontextmanager
    async def applies_held(self) -> AsyncIterator[None]:
        """While inside, nothing is applied to the state machine, so another thread may read
        it (the leader's orchestration pass, a large listing: `node.agent`). Raft goes on:
        ticks, messages, appends, commits. What commits meanwhile (and a snapshot that comes)
        is applied, in order, once the last holder has left; proposals and reads wait for that,
        as for any apply. Entered between two turns of the loop (under the core's lock), never
        in the middle of an apply, and never while something held back waits for its apply:
        holds that overlap one another would otherwise keep applying off for as long as they
        kept coming. What had committed when the holder came and the loop had yet to apply
        (beyond its budget: a replay) is applied first, by the loop's turns; what commits
        after may wait for the hold, or a stream of writes could keep the holder out. A holder
        must not wait for an apply itself."""
        # By index, not by what the loop has queued: what committed may not be queued yet (the
        # start's replay before the loop's first turn, a Ready's entries while it is saved).
        committed = self.core.commit_index
        while True:
            async with self._core_lock:
                if self.applied >= committed and (not self._unapplied or not self._apply_holds):
                    self._apply_holds += 1
                    break
                wait_for = self._holds_ended if self._apply_holds else self._applied_more
            await wait_for.wait()
        try:
            yield
        finally:
            self._apply_holds -= 1
            if not self._apply_holds:
                self._wake.set()
                self._holds_ended.set()
                self._holds_ended = trio.Event()

    def _releasable(self) -> bool:
        return bool(self._unapplied) and not self._apply_holds and self._decoded_if_large()

    def _decoded_if_large(self) -> bool:
        """Whether the next item to apply is not a large entry still waiting for its decode."""
        item = self._unapplied[0]
        return not (
            isinstance(item, Entry)
            and _decodes_ahead(item)
            and item.index > self.applied
            and item.index not in self._decoded
        )

    async def _decode_ahead(self) -> None:
        """Decode the large committed entries in a thread, in log order, each before the loop
        comes to apply it (see `DECODE_AHEAD_BYTES`); the loop meanwhile sends heartbeats and
        applies what comes before. No wedge: the entry the loop waits for is the first of
        `_to_decode`, and the decoded ones waiting all come after it, so there are none."""
        while True:
            while self._to_decode and self._to_decode[0].index <= self.applied:
                self._to_decode.popleft()  # a snapshot came past it
            if not self._to_decode or len(self._decoded) >= DECODE_AHEAD_ENTRIES:
                await self._decode_wanted.wait()
                self._decode_wanted = trio.Event()
                continue
            entry = self._to_decode.popleft()
            decoded = await off_loop.run(partial(self.state_machine.decode, entry.data))
            if entry.index > self.applied:  # else a snapshot came past it meanwhile
                self._decoded[entry.index] = decoded
                self._wake.set()

    def _apply_some(self, budget_s: float) -> None:
        """Apply what committed and is not applied yet, in order (the core advanced past it):
        at least one item and then until `budget_s` has passed, the rest in the loop's next
        turns. A restarted manager applies up to 20,000 entries of its log at once
        (`snapshot_max_entries`): applied in one turn, that held the event loop for seconds, in
        which the node answered no gossip probe and the others could declare it dead; between
        turns, everything else on the loop runs."""
        queue = self._unapplied
        deadline = time.perf_counter() + budget_s
        while queue and self._decoded_if_large():
            item = queue.popleft()
            if isinstance(item, Snapshot):
                self._restore(item)
            else:
                self._apply(item)
            if time.perf_counter() >= deadline:
                break
        if self._on_applied is not None and not self._replaying():
            self._on_applied()
        self._release_applied()
        self._maybe_compact()
        self._applied_more.set()
        self._applied_more = trio.Event()

    @property
    def replaying(self) -> bool:
        """Whether the state machine still holds an older state than the one this node stopped
        with: the start's replay is under way (`_replaying`)."""
        return self._replaying()

    def _replaying(self) -> bool:
        """Whether the start's replay is still under way: until the log's last entry at the
        start is applied, or, if a leader cut it from the log (it was never committed), until
        what is committed is applied, once the commit index has reached an entry of the current
        term (before, a new leader's commit index may lag what this node had applied when it
        stopped; after, it holds every committed entry)."""
        if self._replay_end is None:
            return False
        index, term = self._replay_end
        core = self.core
        cut = core.term_at(index) != term and index > core.snapshot_meta.index
        current = core.term_at(core.commit_index) == core.term
        if self.applied >= index or (cut and current and not self._unapplied):
            self._replay_end = None
            return False
        return True

    def _set_soft_state(self, soft: SoftState) -> None:
        old = self.soft_state
        self.soft_state = soft
        if soft.role is not Role.LEADER or soft.term != old.term:
            # The batches in flight were this leadership's: another leader may have cut them
            # from the log, and their ends, never committed, would count against the next
            # leadership's batches for good (no proposal would be appended again).
            self._batch_ends.clear()
        if soft.role is not Role.LEADER:
            # Proposals of a lost leadership may never commit: fail them so callers can retry.
            # Not those among the committed entries not applied yet: they will be, and `_apply`
            # answers them (or fails one whose index another leader's entry took); failed here,
            # their callers would write them a second time.
            held = {item.index for item in self._unapplied if isinstance(item, Entry)}
            for index, waiter in list(self._waiters.items()):
                if index in held:
                    continue
                if waiter.term != soft.term or old.role is Role.LEADER:
                    del self._waiters[index]
                    waiter.leader_hint = soft.leader_id
                    waiter.done.set()
        if soft.leader_id is not None and soft.leader_id != old.leader_id:
            self.leader_changes_seen += 1
        self._log_leadership(old, soft)
        if (old.leader_id, old.term) != (soft.leader_id, soft.term):
            self.leader_changed.set()
            self.leader_changed = trio.Event()
        if self._on_soft_state is not None:
            self._on_soft_state(soft)

    def _log_leadership(self, old: SoftState, soft: SoftState) -> None:
        """A line for each change of leader: rare, and what an operator asks about first."""
        if soft.role is Role.LEADER and old.role is not Role.LEADER:
            log.info("this node leads, term %d", soft.term)
        elif old.role is Role.LEADER and soft.role is not Role.LEADER:
            quorum_lost, handed_over = self._step_down_counts()
            why = "a higher term"
            if quorum_lost > self._step_downs_seen[0]:
                why = "no majority answered within an election timeout (check-quorum)"
            elif handed_over > self._step_downs_seen[1]:
                why = "the lead was handed over"
            log.info("this node no longer leads (term %d): %s", soft.term, why)
        elif soft.leader_id is not None and soft.leader_id != old.leader_id:
            log.info("the leader is %s, term %d", soft.leader_id, soft.term)
        self._step_downs_seen = self._step_down_counts()

    def _step_down_counts(self) -> tuple[int, int]:
        counts = self.core.counters
        return counts.get("check_quorum_step_downs", 0), counts.get("transfers_started", 0)

    def _restore(self, snapshot: Snapshot) -> None:
        self.state_machine.restore(snapshot.data)
        self.applied = snapshot.meta.index
        self._decoded = {i: d for i, d in self._decoded.items() if i > self.applied}
        self._decode_wanted.set()
        self._snapshot_at_bytes, self._snapshot_bytes = self._applied_bytes, len(snapshot.data)
        log.info("restored state from snapshot at index %d", snapshot.meta.index)

    def _apply(self, entry: Entry) -> None:
        decoded = self._decoded.pop(entry.index, None)
        if decoded is not None:
            self._decode_wanted.set()  # room for the next
        if entry.index <= self.applied:
            return
        self.applied = entry.index
        self._applied_bytes += len(entry.data)
        result: ResultT | None = None
        if entry.kind is EntryKind.NORMAL and entry.data:
            result = self.state_machine.apply(entry.index, entry.data, decoded)
        waiter = self._waiters.pop(entry.index, None)
        if waiter is not None:
            # Our proposal's slot was taken by another leader's entry: it was lost.
            waiter.committed = entry.term == waiter.term
            waiter.result = result if waiter.committed else None
            waiter.leader_hint = self.core.leader_id
            waiter.done.set()

    def _maybe_compact(self) -> None:
        """Start a compaction at the applied index if one is due and none is under way."""
        entries = self.applied - self.storage.snapshot_index
        weight = self._applied_bytes - self._snapshot_at_bytes
        if (
            self._compacting
            or entries < self.snapshot_every
            or (
                weight < self.snapshot_growth * self._snapshot_bytes
                and entries < self.snapshot_max_entries
            )
        ):
            return
        assert self._nursery is not None
        self._compacting = True
        self._nursery.start_soon(
            self._compact, self.applied, self._applied_bytes, self.state_machine.snapshot_later()
        )

    async def _compact(self, index: int, at_bytes: int, encode: Callable[[], bytes]) -> None:
        try:
            data = await off_loop.run(encode)
            async with self._core_lock:  # between two turns of the loop
                if index > self.core.snapshot.meta.index:  # else a leader's snapshot came since
                    snapshot = self.core.compact(index, data)
                    await self._disk.run_sync(self.storage.compact, snapshot)
                    self._snapshot_at_bytes, self._snapshot_bytes = at_bytes, len(data)
        finally:
            self._compacting = False
        async with self._core_lock:
            self._maybe_compact()  # what was applied meanwhile may make the next one due


def _as_spoken(batch: list[Message], protocol: int | None) -> Sequence[Message]:
    """`batch` as a peer of `protocol` takes it: one older than `COMMIT_ONLY_SINCE` refuses an
    append with `commit_only` set, and answers it as any other instead."""
    if (protocol or 0) >= COMMIT_ONLY_SINCE:
        return batch
    return [
        replace(m, commit_only=False) if isinstance(m, AppendEntries) and m.commit_only else m
        for m in batch
    ]


def _decodes_ahead(entry: Entry) -> bool:
    return entry.kind is EntryKind.NORMAL and len(entry.data) >= DECODE_AHEAD_BYTES
