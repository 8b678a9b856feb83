"""The pure Raft core: election, replication, membership, snapshots, reads. No I/O.

Shape (etcd/raft): the driver calls `tick()` every tick_interval_s, `step(msg)` for each message
received, `propose*`/`read_index`/`transfer_leadership`/`compact` for local requests; then, while
`has_ready()`, takes `ready()`, carries out its obligations in order (see `Ready`) and calls
`advance(ready)`. Exactly one Ready may be outstanding; `step`/`tick` may be called while it is.

Owns: the in-memory log (swarmlet.raft.log), terms and votes, roles, per-peer progress
(swarmlet.raft.progress), the configuration, pending reads. Does not know: sockets, files, time,
the state machine's contents (entries and snapshot data are opaque bytes).

Decisions where the sources leave a choice:
- Configuration takes effect ON APPEND (thesis §4.1), not on apply (etcd): a node uses the latest
  configuration in its log, committed or not, and falls back to the previous one if that entry is
  truncated away. With one change at a time this keeps every majority of the old and the new
  configuration overlapping; the leader accepts a change only once an entry of its own term is
  committed and the previous change is committed (Ongaro, raft-dev 2015, "bug in single-server
  membership changes"). A leader that removes (or demotes) itself keeps leading without counting
  itself until the change commits, then steps down (thesis §4.2.2). A node that a not yet
  committed change removes or demotes may still campaign (votes counted in the new
  configuration): the change may yet be rolled back, and without this a two-voter group whose
  leader demoted itself and crashed has no electable candidate (found by the simulation).
- Learners never campaign and never count for a quorum (elections, commit, check-quorum, reads).
  Any node, learners included, answers vote requests on log freshness alone, as etcd does: a
  learner whose promotion is in its leader's log but not yet in its own must still be able to help
  elect that leader, else a two-voter group that promotes a third could deadlock.
- Proposals during a leadership transfer raise NotLeaderError(hint=the transfer target).
- Pending reads are dropped when leadership is lost; the caller times out and retries.
- A brand-new group starts every initial voter from the same Snapshot at index >= 1 (e.g.
  SnapshotMeta(index=1, term=1, conf=ConfState(voters=...))), so that a node joining later (started
  from the empty `Snapshot()`) receives the initial configuration by InstallSnapshot.
- Snapshots travel whole in one InstallSnapshot message: the cluster state must fit in a frame.

Timing defaults, in ticks (driver tick_interval_s ~ 0.05): a follower times out after a random
[election_ticks, 2*election_ticks) = [10, 20) ticks = 0.5-1.0 s without hearing from the leader,
then takes a pre-vote round, a vote round and one replication round for the new leader's no-op,
each a LAN round trip (~1 ms): a new leader commits within ~0.5-1.0 s of the old one's death
(mean ~0.75 s). Use tick_interval_s <= 0.05 s to meet the 1 s goal; at 0.1 s it is 1-2 s.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from swarmlet.errors import NoLeaderError, NotLeaderError, StorageCorruptError
from swarmlet.raft.interface import ConfChangeRefused, LeadershipTransferError, RaftConfig, Ready
from swarmlet.raft.log import RaftLog
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
    ReadState,
    RequestVote,
    Role,
    SoftState,
    TimeoutNow,
    VoteResp,
    is_well_formed,
)
from swarmlet.raft.progress import Progress, ProgressState
from swarmlet.raft.quorum import (
    apply_conf_change,
    committed_index,
    decode_conf_change,
    encode_conf_change,
    has_quorum,
    quorum_size,
    refusal_reason,
)
from swarmlet.raft.types import (
    ConfChange,
    ConfState,
    Entry,
    EntryKind,
    HardState,
    Snapshot,
    SnapshotMeta,
)

__all__ = [
    "MESSAGES",
    "ConfChangeRefused",
    "LeadershipTransferError",
    "Message",
    "RaftConfig",
    "RaftNode",
    "ReadState",
    "Ready",
    "Role",
    "SoftState",
]


@dataclass(slots=True)
class _PendingRead:
    seq: int
    ctx: bytes
    requester: str | None  # None: this node's own read; else the follower that forwarded it
    index: int


class RaftNode:
    """One member of a Raft group. Not thread-safe; one driver owns it."""

    def __init__(
        self,
        node_id: str,
        config: RaftConfig,
        rng: random.Random,
        *,
        hard_state: HardState,
        snapshot: Snapshot,
        entries: Sequence[Entry],
        applied: int = 0,
    ) -> None:
        if not node_id:
            raise ValueError("node_id must not be empty")
        meta = snapshot.meta
        if meta.index == 0 and (meta.conf.voters or meta.conf.learners):
            raise ValueError(
                "bootstrap a new group from a Snapshot at index >= 1 "
                "(e.g. SnapshotMeta(index=1, term=1, conf=...)), not at index 0"
            )
        self.id = node_id
        self.config = config
        self._rng = rng
        try:
            self._log = RaftLog(snapshot, entries)
        except (ValueError, IndexError) as e:
            raise StorageCorruptError(f"stored log does not follow its snapshot: {e}") from e
        if entries and entries[0].index != meta.index + 1:
            raise StorageCorruptError(
                f"stored log starts at {entries[0].index}, snapshot ends at {meta.index}"
            )
        self.term = max(hard_state.term, self._log.last_term)
        self.vote: str | None = hard_state.vote if hard_state.term == self.term else None
        self.commit_index = max(hard_state.commit, meta.index)
        if self.commit_index > self._log.last_index:
            raise StorageCorruptError(
                f"commit index {self.commit_index} beyond the stored log ({self._log.last_index})"
            )
        if applied > self.commit_index:
            raise ValueError(f"applied {applied} beyond commit index {self.commit_index}")
        self.applied_index = max(applied, meta.index)
        self._applying = self.applied_index  # highest index handed out in committed_entries
        self._unstable_from = self._log.last_index + 1
        self._pending_snapshot: Snapshot | None = None
        self._prev_hard = hard_state  # as loaded: a normalised state differs and gets persisted
        self.role = Role.FOLLOWER
        self.leader_id: str | None = None
        self._prev_soft = SoftState(self.role, None, self.term)
        self._msgs: list[Message] = []
        self._ready_reads: list[ReadState] = []  # waiting for commit (hence apply) to reach index
        self.counters: dict[str, int] = {}
        self._election_elapsed = 0
        self._heartbeat_elapsed = 0
        self._randomized_timeout = self.config.election_ticks
        self._votes: dict[str, bool] = {}
        self._progress: dict[str, Progress] = {}
        self._transferee: str | None = None
        self._read_seq = 0
        self._pending_reads: list[_PendingRead] = []
        self._deferred_reads: list[tuple[bytes, str | None]] = []
        self._outstanding = False
        self.conf = ConfState()
        self._prev_conf = ConfState()  # the configuration before the latest change in the log
        self._conf_index = 0
        self._recompute_conf()
        self._reset_timers()

    # ---------------------------------------------------------------- observation

    @property
    def last_index(self) -> int:
        return self._log.last_index

    @property
    def last_term(self) -> int:
        return self._log.last_term

    @property
    def snapshot_meta(self) -> SnapshotMeta:
        return self._log.snapshot.meta

    @property
    def snapshot(self) -> Snapshot:
        """The latest snapshot this node holds (from `compact` or received from the leader)."""
        return self._log.snapshot

    def term_at(self, index: int) -> int | None:
        """The term of the entry at `index`; None if compacted away or beyond the end."""
        return self._log.term_at(index)

    def entry_at(self, index: int) -> Entry | None:
        """The entry at `index`; None if compacted away or beyond the end."""
        if self._log.first_index <= index <= self._log.last_index:
            return self._log.entry(index)
        return None

    def entries(self) -> tuple[Entry, ...]:
        """The entries after the snapshot (for tests and diagnostics)."""
        return self._log.entries()

    def progress(self, peer: str) -> Progress | None:
        """The leader's view of `peer` (for tests and diagnostics); None if not leading it."""
        return self._progress.get(peer)

    def _count(self, name: str) -> None:
        self.counters[name] = self.counters.get(name, 0) + 1

    # ---------------------------------------------------------------- local requests

    def tick(self) -> None:
        if self.role == Role.LEADER:
            self._tick_leader()
        else:
            self._tick_election()

    def propose(self, data: bytes) -> int:
        """Append a command; returns its index. It is committed when it appears in
        `Ready.committed_entries` (with the term it was proposed in)."""
        self._check_leader()
        return self._append_entry(EntryKind.NORMAL, data)

    def propose_conf_change(self, change: ConfChange) -> int:
        """Append a single-server membership change (thesis §4.1); returns its index."""
        self._check_leader()
        # Thesis §4.1 + Ongaro's 2015 fix: one change at a time, and only once this leader has
        # committed an entry of its own term (its no-op), so that no uncommitted change of an
        # earlier leader can be superseded.
        if self._log.term_at(self.commit_index) != self.term:
            raise ConfChangeRefused("the leader has not yet committed an entry of its term")
        if self._conf_index > self.commit_index:
            raise ConfChangeRefused(f"the change at index {self._conf_index} is not committed yet")
        reason = refusal_reason(self.conf, change)
        if reason is not None:
            raise ConfChangeRefused(reason)
        return self._append_entry(EntryKind.CONF_CHANGE, encode_conf_change(change))

    def read_index(self, ctx: bytes) -> None:
        """Start a linearizable read (thesis §6.4); `ReadState(ctx, index)` appears in a later
        Ready once the state machine has applied `index`. Raises NoLeaderError if no leader is
        known. A read may be silently dropped if leadership changes: retry after a timeout."""
        if self.role == Role.LEADER:
            self._leader_read([(ctx, None)])
        elif self.leader_id is not None:
            self._send(ReadIndexReq(self.id, self.leader_id, self.term, ctx))
        else:
            raise NoLeaderError("no leader is known; retry the read later")

    def transfer_leadership(self, to: str) -> None:
        """Hand leadership to voter `to` (thesis §3.10): bring its log up to date, then send it
        TimeoutNow. Proposals are refused meanwhile; the transfer is abandoned after
        election_ticks. This leader steps down when `to` wins (a message of a higher term)."""
        self._check_leader(allow_transfer=True)
        if to == self.id:
            return
        if to not in self.conf.voters:
            raise LeadershipTransferError(f"{to} is not a voter of the group")
        if self._transferee == to:
            return
        self._transferee = to
        self._election_elapsed = 0  # the transfer times out with one election timeout
        self._count("transfers_started")
        pr = self._progress[to]
        if pr.match == self._log.last_index:
            self._send(TimeoutNow(self.id, to, self.term))
        else:
            self._send_append(to, allow_empty=True)

    def compact(self, index: int, data: bytes) -> Snapshot:
        """The state machine's snapshot `data` is as of `index` (<= applied_index): keep it and
        drop the log up to `index`. Returns the Snapshot (meta filled in) for the driver to
        persist (storage: save it, then drop its entries <= index)."""
        if index > self.applied_index:
            raise ValueError(f"cannot compact at {index}: only {self.applied_index} is applied")
        if index <= self._log.snapshot_index:
            raise ValueError(f"already compacted up to {self._log.snapshot_index}")
        term = self._log.term_at(index)
        assert term is not None
        snap = Snapshot(SnapshotMeta(index=index, term=term, conf=self._conf_at(index)), data)
        self._log.compact(snap)
        self._count("compactions")
        return snap

    # ---------------------------------------------------------------- Ready / advance

    def has_ready(self) -> bool:
        return bool(
            self._msgs
            or self._pending_snapshot is not None
            or self._unstable_from <= self._log.last_index
            or self.commit_index > self._applying
            or any(r.index <= self.commit_index for r in self._ready_reads)
            or self._hard_state() != self._prev_hard
            or self._soft_state() != self._prev_soft
        )

    def ready(self) -> Ready:
        if self._outstanding:
            raise RuntimeError("advance() the previous Ready before taking another")
        hs = self._hard_state()
        soft = self._soft_state()
        last = self._log.last_index
        entries = tuple(self._log.slice(self._unstable_from, last + 1))
        committed: tuple[Entry, ...] = ()
        if self.commit_index > self._applying:
            committed = tuple(self._log.slice(self._applying + 1, self.commit_index + 1))
        reads = tuple(r for r in self._ready_reads if r.index <= self.commit_index)
        self._ready_reads = [r for r in self._ready_reads if r.index > self.commit_index]
        rd = Ready(
            hard_state=hs if hs != self._prev_hard else None,
            entries=entries,
            snapshot=self._pending_snapshot,
            messages=tuple(self._msgs),
            committed_entries=committed,
            read_states=reads,
            soft_state=soft if soft != self._prev_soft else None,
        )
        self._msgs = []
        self._prev_hard = hs
        self._prev_soft = soft
        self._unstable_from = last + 1
        self._pending_snapshot = None
        if committed:
            self._applying = committed[-1].index
        self._outstanding = True
        return rd

    def advance(self, ready: Ready) -> None:
        if not self._outstanding:
            raise RuntimeError("advance() without an outstanding Ready")
        self._outstanding = False
        if ready.snapshot is not None:
            self.applied_index = max(self.applied_index, ready.snapshot.meta.index)
        if ready.committed_entries:
            self.applied_index = max(self.applied_index, ready.committed_entries[-1].index)

    def _hard_state(self) -> HardState:
        return HardState(self.term, self.vote, self.commit_index)

    def _soft_state(self) -> SoftState:
        return SoftState(self.role, self.leader_id, self.term)

    # ---------------------------------------------------------------- roles

    def _reset_timers(self) -> None:
        self._election_elapsed = 0
        self._heartbeat_elapsed = 0
        # Raft §5.2: randomized election timeouts in [election_ticks, 2*election_ticks).
        self._randomized_timeout = self.config.election_ticks + self._rng.randrange(
            self.config.election_ticks
        )

    def _reset_leader_state(self) -> None:
        self._votes = {}
        self._progress = {}
        self._transferee = None
        if self._pending_reads or self._deferred_reads:
            self.counters["reads_dropped"] = (
                self.counters.get("reads_dropped", 0)
                + len(self._pending_reads)
                + len(self._deferred_reads)
            )
        self._pending_reads = []
        self._deferred_reads = []

    def _become_follower(self, term: int, leader: str | None) -> None:
        if term < self.term:
            raise AssertionError(f"term would go back from {self.term} to {term}")
        if term > self.term:
            self.term = term
            self.vote = None
        self.role = Role.FOLLOWER
        self.leader_id = leader
        self._reset_timers()
        self._reset_leader_state()

    def _become_pre_candidate(self) -> None:
        if self.role == Role.LEADER:
            raise AssertionError("a leader cannot become a pre-candidate")
        self.role = Role.PRE_CANDIDATE
        self.leader_id = None
        self._reset_timers()
        self._reset_leader_state()
        self._count("pre_votes_started")
        if self._poll(self.id, True) is True:
            self._become_candidate(transfer=False)
            return
        for v in self.conf.voters:
            if v != self.id:
                self._send(
                    RequestVote(
                        self.id, v, self.term + 1, self._log.last_index, self._log.last_term, True
                    )
                )

    def _become_candidate(self, *, transfer: bool) -> None:
        if self.role == Role.LEADER:
            raise AssertionError("a leader cannot become a candidate")
        self.term += 1
        self.vote = self.id
        self.role = Role.CANDIDATE
        self.leader_id = None
        self._reset_timers()
        self._reset_leader_state()
        self._count("elections_started")
        if self._poll(self.id, True) is True:
            self._become_leader()
            return
        for v in self.conf.voters:
            if v != self.id:
                self._send(
                    RequestVote(
                        self.id,
                        v,
                        self.term,
                        self._log.last_index,
                        self._log.last_term,
                        pre_vote=False,
                        transfer=transfer,
                    )
                )

    def _become_leader(self) -> None:
        if self.role != Role.CANDIDATE:
            raise AssertionError("only a candidate can become leader")
        self.role = Role.LEADER
        self.leader_id = self.id
        self._reset_timers()
        self._reset_leader_state()
        self._read_seq = 0
        nxt = self._log.last_index + 1
        for p in self._members():
            if p != self.id:
                self._progress[p] = Progress(next=nxt)
        self._count("became_leader")
        # Raft §8 / thesis §6.4: a no-op of the new term lets the leader learn (and commit) what
        # is committed; §5.4.2 forbids committing older entries by counting alone.
        self._append_entry(EntryKind.NORMAL, b"")

    def _poll(self, voter: str, granted: bool) -> bool | None:
        """Record a (pre-)vote; True if won, False if lost, None while undecided."""
        if voter not in self.conf.voters:
            return None  # learners' and strangers' votes never count
        self._votes.setdefault(voter, granted)
        yes = sum(1 for v in self.conf.voters if self._votes.get(v) is True)
        no = sum(1 for v in self.conf.voters if self._votes.get(v) is False)
        q = quorum_size(len(self.conf.voters))
        if yes >= q:
            return True
        if no > len(self.conf.voters) - q:
            return False
        return None

    def _promotable(self) -> bool:
        """Whether this node may start an election. Voters of the latest configuration may; so
        may a voter of the previous one while the change that removed or demoted it is not yet
        committed: that change may still be rolled back, and without this a two-voter group whose
        leader demoted itself and crashed would have no candidate the other voter could elect.
        Votes are counted in the latest configuration (thesis §4.1) either way."""
        if self.id in self.conf.voters:
            return True
        return self._conf_index > self.commit_index and self.id in self._prev_conf.voters

    def _campaign(self, *, transfer: bool) -> None:
        if not self._promotable():
            return  # learners and removed nodes never campaign
        if self.config.pre_vote and not transfer:
            self._become_pre_candidate()
        else:
            self._become_candidate(transfer=transfer)

    # ---------------------------------------------------------------- ticks

    def _tick_election(self) -> None:
        self._election_elapsed += 1
        if self._election_elapsed >= self._randomized_timeout and self._promotable():
            self._campaign(transfer=False)

    def _tick_leader(self) -> None:
        self._heartbeat_elapsed += 1
        self._election_elapsed += 1
        if self._election_elapsed >= self.config.election_ticks:
            self._election_elapsed = 0
            if self.config.check_quorum and not self._quorum_active():
                # Check-quorum (thesis §6.2): without a quorum for an election timeout, step down
                # so that clients find the real leader.
                self._count("check_quorum_step_downs")
                self._become_follower(self.term, None)
                return
            if self._transferee is not None:
                self._count("transfers_aborted")
                self._transferee = None
        for peer, pr in self._progress.items():
            if pr.state == ProgressState.SNAPSHOT:
                pr.snapshot_elapsed_ticks += 1
                if pr.snapshot_elapsed_ticks >= self.config.snapshot_retry_ticks:
                    pr.become_probe()
                    self._send_append(peer, allow_empty=True)
        if self._heartbeat_elapsed >= self.config.heartbeat_ticks:
            self._heartbeat_elapsed = 0
            self._broadcast_heartbeat()

    def _quorum_active(self) -> bool:
        active = {p for p, pr in self._progress.items() if pr.recent_active}
        active.add(self.id)
        for pr in self._progress.values():
            pr.recent_active = False
        return has_quorum(self.conf.voters, active)

    # ---------------------------------------------------------------- step

    def step(self, msg: Message) -> None:
        """Handle one message from a peer. Stale or invalid messages are dropped and counted
        (`dropped_stale`, `dropped_invalid`, `dropped_unexpected`); they change nothing."""
        if not is_well_formed(msg, self.id):
            self._count("dropped_invalid")
            return
        if msg.term > self.term:
            if isinstance(msg, RequestVote):
                # Leader stickiness (thesis §4.2.3 with check-quorum): ignore (pre-)votes while a
                # leader is known to be alive, unless the leader itself asked (TimeoutNow).
                in_lease = (
                    self.config.check_quorum
                    and self.leader_id is not None
                    and self._election_elapsed < self.config.election_ticks
                )
                if in_lease and not msg.transfer:
                    self._count("votes_ignored_in_lease")
                    return
            if isinstance(msg, RequestVote) and msg.pre_vote:
                pass  # thesis §9.6: a pre-vote does not change our term
            elif isinstance(msg, VoteResp) and msg.pre_vote and msg.granted:
                pass  # granted pre-votes carry the term the pre-candidate will use
            else:
                leader = (
                    msg.from_id
                    if isinstance(msg, AppendEntries | Heartbeat | InstallSnapshot)
                    else None
                )
                self._become_follower(msg.term, leader)
        elif msg.term < self.term:
            self._count("dropped_stale")
            if isinstance(msg, AppendEntries | Heartbeat) and (
                self.config.check_quorum or self.config.pre_vote
            ):
                # A stale leader that cannot get a higher term from votes (they are ignored or
                # pre-votes) learns it here and steps down (etcd/raft).
                self._send(AppendResp(self.id, msg.from_id, self.term, 0, reject=True))
            elif isinstance(msg, RequestVote) and msg.pre_vote:
                self._send(VoteResp(self.id, msg.from_id, self.term, False, pre_vote=True))
            return
        self._dispatch(msg)

    def _dispatch(self, msg: Message) -> None:
        if isinstance(msg, RequestVote):
            self._handle_vote_request(msg)
        elif isinstance(msg, VoteResp):
            self._handle_vote_response(msg)
        elif isinstance(msg, AppendEntries | Heartbeat | InstallSnapshot):
            if self.role == Role.LEADER:
                self._count("dropped_unexpected")  # two leaders in one term: impossible
                return
            if self.role != Role.FOLLOWER:
                self._become_follower(msg.term, msg.from_id)
            self.leader_id = msg.from_id
            self._election_elapsed = 0
            if isinstance(msg, AppendEntries):
                self._handle_append(msg)
            elif isinstance(msg, Heartbeat):
                self._commit_to(min(msg.commit, self._log.last_index))
                self._send(HeartbeatResp(self.id, msg.from_id, self.term, msg.read_seq))
            else:
                self._handle_snapshot(msg)
        elif isinstance(msg, TimeoutNow):
            if self.role == Role.FOLLOWER and self._promotable():
                self._count("timeout_now_received")
                self._campaign(transfer=True)
            else:
                self._count("dropped_unexpected")
        elif isinstance(msg, ReadIndexResp):
            if self.role == Role.LEADER:
                self._count("dropped_unexpected")
                return
            self._ready_reads.append(ReadState(msg.ctx, msg.index))
        elif self.role != Role.LEADER or msg.from_id not in self._progress:
            self._count("dropped_unexpected")
        elif isinstance(msg, AppendResp):
            self._handle_append_response(msg)
        elif isinstance(msg, HeartbeatResp):
            self._handle_heartbeat_response(msg)
        else:
            self._leader_read([(msg.ctx, msg.from_id)])

    # ---------------------------------------------------------------- elections

    def _handle_vote_request(self, msg: RequestVote) -> None:
        # Raft §5.2, §5.4.1: one vote per term, only for a log at least as up to date as ours.
        up_to_date = self._log.is_up_to_date(msg.last_index, msg.last_term)
        can_vote = self.vote == msg.from_id or (self.vote is None and self.leader_id is None)
        if msg.pre_vote:
            can_vote = can_vote or msg.term > self.term
        if can_vote and up_to_date:
            if not msg.pre_vote:
                self.vote = msg.from_id
                self._election_elapsed = 0
            term = msg.term if msg.pre_vote else self.term
            self._send(VoteResp(self.id, msg.from_id, term, True, msg.pre_vote))
        else:
            self._send(VoteResp(self.id, msg.from_id, self.term, False, msg.pre_vote))

    def _handle_vote_response(self, msg: VoteResp) -> None:
        if msg.pre_vote:
            if self.role != Role.PRE_CANDIDATE or (msg.granted and msg.term != self.term + 1):
                self._count("dropped_unexpected")
                return
        elif self.role != Role.CANDIDATE:
            self._count("dropped_unexpected")
            return
        result = self._poll(msg.from_id, msg.granted)
        if result is True:
            if self.role == Role.PRE_CANDIDATE:
                self._become_candidate(transfer=False)
            else:
                self._become_leader()
        elif result is False:
            self._become_follower(self.term, None)

    # ---------------------------------------------------------------- follower side

    def _handle_append(self, msg: AppendEntries) -> None:
        prev_index, prev_term, entries = msg.prev_index, msg.prev_term, msg.entries
        if prev_index < self.commit_index:
            # Our log matches the leader's up to our commit index (committed entries are never
            # overwritten); skip the part of the message we already hold committed.
            skip = self.commit_index - prev_index
            if skip >= len(entries):
                self._send(AppendResp(self.id, msg.from_id, self.term, self.commit_index))
                return
            prev_index, prev_term = entries[skip - 1].index, entries[skip - 1].term
            entries = entries[skip:]
        if self._log.term_at(prev_index) != prev_term:
            self._count("appends_rejected")
            # Raft §5.3 optimisation: tell the leader the conflicting term and its first index.
            if prev_index > self._log.last_index:
                hint_term, hint_index = 0, self._log.last_index + 1
            else:
                hint_term = self._log.term_at(prev_index) or 0
                hint_index = self._log.first_index_of_term_at(prev_index, self.commit_index)
            self._send(
                AppendResp(
                    self.id,
                    msg.from_id,
                    self.term,
                    msg.prev_index,
                    reject=True,
                    hint_index=hint_index,
                    hint_term=hint_term,
                )
            )
            return
        conflict = self._log.find_conflict(entries)
        if conflict:
            if conflict <= self.commit_index:
                self._count("dropped_invalid")  # would overwrite a committed entry
                return
            new = entries[conflict - entries[0].index :]
            self._truncate_and_append(new)
        last_new = prev_index + len(entries)
        self._commit_to(min(msg.commit, last_new))
        self._send(AppendResp(self.id, msg.from_id, self.term, last_new))

    def _truncate_and_append(self, entries: Sequence[Entry]) -> None:
        start = entries[0].index
        truncated_conf = start <= self._conf_index
        self._log.append(entries)
        self._unstable_from = min(self._unstable_from, start)
        if truncated_conf or any(e.kind == EntryKind.CONF_CHANGE for e in entries):
            self._recompute_conf()

    def _handle_snapshot(self, msg: InstallSnapshot) -> None:
        meta = msg.snapshot.meta
        if meta.index <= self.commit_index:
            self._send(AppendResp(self.id, msg.from_id, self.term, self.commit_index))
            return
        if self._log.term_at(meta.index) == meta.term:
            # We hold the entry the snapshot ends with: the logs match up to it (Raft §7).
            self._commit_to(meta.index)
        else:
            # Raft §7: discard the entire log and take the snapshot.
            self._log.restore(msg.snapshot)
            self._pending_snapshot = msg.snapshot
            self._unstable_from = meta.index + 1
            self.commit_index = meta.index
            self._applying = max(self._applying, meta.index)
            self._recompute_conf()
            self._count("snapshots_installed")
        self._send(AppendResp(self.id, msg.from_id, self.term, meta.index))

    def _commit_to(self, index: int) -> None:
        if index > self.commit_index:
            self.commit_index = index

    # ---------------------------------------------------------------- leader side

    def _check_leader(self, *, allow_transfer: bool = False) -> None:
        if self.role != Role.LEADER:
            raise NotLeaderError(self.leader_id)
        if self._transferee is not None and not allow_transfer:
            raise NotLeaderError(self._transferee)

    def _members(self) -> tuple[str, ...]:
        return self.conf.voters + self.conf.learners

    def _append_entry(self, kind: EntryKind, data: bytes) -> int:
        index = self._log.last_index + 1
        self._log.append([Entry(self.term, index, kind, data)])
        if kind == EntryKind.CONF_CHANGE:
            # Thesis §4.1: the configuration takes effect as soon as it is in the log.
            self._prev_conf = self.conf
            self.conf = apply_conf_change(self.conf, decode_conf_change(data))
            self._conf_index = index
            self._sync_progress()
        self._maybe_commit()
        self._broadcast_append()
        return index

    def _sync_progress(self) -> None:
        members = set(self._members())
        for p in list(self._progress):
            if p not in members:
                del self._progress[p]
        for p in members:
            if p != self.id and p not in self._progress:
                self._progress[p] = Progress(next=self._log.last_index)
        if self._transferee is not None and self._transferee not in self.conf.voters:
            self._transferee = None

    def _maybe_commit(self) -> bool:
        if self.role != Role.LEADER:
            return False
        match = {p: pr.match for p, pr in self._progress.items()}
        match[self.id] = self._log.last_index
        index = committed_index(match, self.conf.voters)
        # Raft §5.4.2: only entries of the current term are committed by counting replicas.
        if index <= self.commit_index or self._log.term_at(index) != self.term:
            return False
        self.commit_index = index
        if self._deferred_reads:
            deferred, self._deferred_reads = self._deferred_reads, []
            self._leader_read(deferred)
        self._broadcast_append()
        if self._conf_index <= self.commit_index and self.id not in self.conf.voters:
            # Thesis §4.2.2: a leader that is no longer a voter steps down once that is committed.
            self._count("removed_leader_step_downs")
            self._become_follower(self.term, None)
        return True

    def _broadcast_append(self) -> None:
        for p in list(self._progress):
            self._send_append(p, allow_empty=True)

    def _broadcast_heartbeat(self) -> None:
        for p, pr in self._progress.items():
            commit = min(pr.match, self.commit_index)
            self._send(Heartbeat(self.id, p, self.term, commit, self._read_seq))

    def _send_append(self, to: str, *, allow_empty: bool) -> bool:
        pr = self._progress[to]
        if pr.is_paused(self.config.max_inflight_appends):
            return False
        pr.next = min(pr.next, self._log.last_index + 1)
        prev = pr.next - 1
        prev_term = self._log.term_at(prev)
        if prev_term is None:
            # Raft §7: what the follower needs is compacted away; send the snapshot.
            self._send(InstallSnapshot(self.id, to, self.term, self._log.snapshot))
            pr.become_snapshot(self._log.snapshot_index)
            self._count("snapshots_sent")
            return True
        hi = min(self._log.last_index + 1, pr.next + self.config.max_entries_per_append)
        entries = tuple(self._log.slice(pr.next, hi))
        if not entries and not allow_empty:
            return False
        self._send(
            AppendEntries(self.id, to, self.term, prev, prev_term, entries, self.commit_index)
        )
        if pr.state == ProgressState.REPLICATE:
            if entries:
                pr.next = entries[-1].index + 1
                pr.inflight.append(entries[-1].index)
        else:
            pr.probe_sent = True
        return True

    def _handle_append_response(self, msg: AppendResp) -> None:
        pr = self._progress[msg.from_id]
        pr.recent_active = True
        if msg.reject:
            if msg.hint_term == 0:
                guess = msg.hint_index
            else:
                found = self._log.last_index_of_term(msg.hint_term, msg.index)
                guess = found + 1 if found else msg.hint_index
            if pr.maybe_decrease(msg.index, guess):
                self._send_append(msg.from_id, allow_empty=True)
            return
        if msg.index > self._log.last_index:
            self._count("dropped_invalid")
            return
        if not pr.maybe_update(msg.index):
            return
        if pr.state == ProgressState.PROBE or (
            pr.state == ProgressState.SNAPSHOT and pr.match >= pr.pending_snapshot
        ):
            pr.become_replicate()
        if not self._maybe_commit() and self.role == Role.LEADER:
            while self._send_append(msg.from_id, allow_empty=False):
                pass
        if (
            self.role == Role.LEADER
            and msg.from_id == self._transferee
            and pr.match == self._log.last_index
        ):
            self._send(TimeoutNow(self.id, msg.from_id, self.term))

    def _handle_heartbeat_response(self, msg: HeartbeatResp) -> None:
        pr = self._progress[msg.from_id]
        pr.recent_active = True
        pr.probe_sent = False
        if pr.state == ProgressState.REPLICATE and len(pr.inflight) >= (
            self.config.max_inflight_appends
        ):
            pr.inflight.popleft()  # an append may be lost: let one more through
        if pr.match < self._log.last_index:
            self._send_append(msg.from_id, allow_empty=True)
        if msg.read_seq > pr.read_ack_seq:
            pr.read_ack_seq = msg.read_seq
            self._release_confirmed_reads()

    # ---------------------------------------------------------------- reads (thesis §6.4)

    def _leader_read(self, reads: list[tuple[bytes, str | None]]) -> None:
        if self._log.term_at(self.commit_index) != self.term:
            # Thesis §6.4 step 1: until an entry of its term is committed, the leader does not
            # know the commit index of its predecessors; defer.
            self._deferred_reads.extend(reads)
            return
        self._read_seq += 1
        for ctx, requester in reads:
            self._pending_reads.append(
                _PendingRead(self._read_seq, ctx, requester, self.commit_index)
            )
        if has_quorum(self.conf.voters, {self.id}):
            self._release_confirmed_reads()  # a group of one confirms itself
        else:
            self._broadcast_heartbeat()

    def _release_confirmed_reads(self) -> None:
        while self._pending_reads:
            read = self._pending_reads[0]
            acks = {p for p, pr in self._progress.items() if pr.read_ack_seq >= read.seq}
            acks.add(self.id)
            if not has_quorum(self.conf.voters, acks):
                return
            self._pending_reads.pop(0)
            if read.requester is None:
                self._ready_reads.append(ReadState(read.ctx, read.index))
            else:
                self._send(ReadIndexResp(self.id, read.requester, self.term, read.ctx, read.index))

    # ---------------------------------------------------------------- configuration

    def _recompute_conf(self) -> None:
        """The configuration in force: the latest in the log (thesis §4.1)."""
        conf = prev = self._log.snapshot.meta.conf
        conf_index = self._log.snapshot_index
        for e in self._log.entries():
            if e.kind == EntryKind.CONF_CHANGE:
                prev = conf
                conf = apply_conf_change(conf, decode_conf_change(e.data))
                conf_index = e.index
        self.conf = conf
        self._prev_conf = prev
        self._conf_index = conf_index
        if self.role == Role.LEADER:
            self._sync_progress()

    def _conf_at(self, index: int) -> ConfState:
        conf = self._log.snapshot.meta.conf
        for e in self._log.slice(self._log.first_index, index + 1):
            if e.kind == EntryKind.CONF_CHANGE:
                conf = apply_conf_change(conf, decode_conf_change(e.data))
        return conf

    def _send(self, msg: Message) -> None:
        self._msgs.append(msg)
