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
- Every message of a stale term is answered with the current term (Raft Figure 2), vote requests
  included; etcd answers only some. A node that its own log makes a learner never campaigns and
  so never spreads its term; without the answer, a candidate of a lower term that needed its vote
  never learned that term and a group stayed leaderless for good (found by the simulation).
- Learning a higher term from a vote request or answer does not restart the election timer
  (Raft Figure 2: only a leader's message or a granted vote does; etcd restarts it), so that a
  candidate that cannot win does not keep those that could from ever timing out first.

Lost tails. Raft assumes that a node's log keeps what it acknowledged. A torn write cut off at
open, or a disk that reported an fsync done and did not keep the bytes, breaks that: the node
restarts with fewer entries than it acknowledged. Two rules repair it:
- The leader notices. Its heartbeat carries min(match, commit); a follower whose log ends below
  that answers with the reject an append there would get, and the leader lowers `match` to the
  follower's log and sends the entries again (probing at `match` first, so that a reject the
  network merely delayed costs one round trip). etcd never lowers `match` (its disks keep their
  fsyncs) and so leaves such a follower without the entries forever.
- The vote floor. Leader Completeness (Raft §5.4.3) rests on every voter of a commit's majority
  still holding the entry when it votes: one of them is in every election's majority and refuses
  a candidate without it (§5.4.1). A node that lost entries it acknowledged may be that one. So
  its storage reports a `VoteFloor(index, term)`, the last entry it may have held, and until its
  own log is at least as far along (`_log_covers`: it reached `index`, or holds an entry of a
  newer term), the node votes, pre-votes included, only for a candidate whose log is at least
  as up to date as that lost log (`_candidate_covers`: the §5.4.3 argument then holds for the
  lost log itself), and never for itself (it does not campaign). It may vote again once its log
  reaches the floor: its log then matches, up to the floor, that of a leader elected without its
  vote (or with a vote the rule allowed), which holds every committed entry.
  The floor holds in configurations of three voters or more. With one or two, every commit needs
  every voter: the other voter holds every committed entry and refuses a candidate without it by
  the ordinary rule, and a lone voter has no one to wait for; the floor would only leave a
  two-voter group whose leader lost entries no one else had without a leader for good. This
  trusts the configuration in what is left of the log: a lost tail that held a committed change
  growing a group of one or two voters is beyond the rule.
  The price: until it catches up the node cannot help elect a leader that lacks what it may have
  held, and when every election needs its vote and no candidate covers its floor, the group
  waits. That happens when a majority lost their tails at once (a power cut across the group),
  or when a membership change made while the node was below its floor (even a stale leader's
  change, never to be committed, in the log of the node that would win) leaves no majority
  without it. The group then waits for an operator (swarmlet.raft.recovery says how to lift a
  floor); the simulation keeps membership still while a node is below its floor. Without the
  floor, the simulation's lost acknowledged tails elect leaders that lack committed entries
  (tests/raft/test_sim.py shows it).

Timing defaults, in ticks (driver tick_interval_s ~ 0.05): a follower times out after a random
[election_ticks, 2*election_ticks) = [10, 20) ticks = 0.5-1.0 s without hearing from the leader,
then takes a pre-vote round, a vote round and one replication round for the new leader's no-op,
each a LAN round trip (~1 ms): a new leader commits within ~0.5-1.0 s of the old one's death
(mean ~0.75 s). Use tick_interval_s <= 0.05 s to meet the 1 s goal; at 0.1 s it is 1-2 s.
Learners, which never campaign, get a heartbeat every election_ticks // 2 ticks (rounded to
whole heartbeat rounds) instead of every heartbeat_ticks: in a cluster of workers they were most
of the heartbeats, and at rest a heartbeat is most of what an agent does (issue #20). For the
same reason a follower answers every other heartbeat, unless it carries news (`_must_answer`),
and an append that only moves the commit index to a follower in REPLICATE is not answered
(`AppendEntries.commit_only`) unless refused.
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
    VoteFloor,
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


_NO_FLOOR = VoteFloor()


def _log_covers(last_index: int, last_term: int, floor: VoteFloor) -> bool:
    """Whether this node's own log, ending at (last_term, last_index), again holds every entry it
    may have acknowledged before losing a tail up to `floor`. After the loss its log grows only by
    appends from leaders (and snapshots), each of a term >= floor.term that holds every committed
    entry (Raft §5.4.1, Leader Completeness); a log that matches such a leader's up to floor.index,
    or that ends in an entry of a newer term than floor.term (written after that leader's
    election, so after every entry committed before it), holds every committed entry the lost
    tail held."""
    return floor.index == 0 or last_index >= floor.index or last_term > floor.term


def _candidate_covers(last_index: int, last_term: int, floor: VoteFloor) -> bool:
    """Whether a candidate's log, ending at (last_term, last_index), is at least as up to date
    (Raft §5.4.1) as every log this node may have held before losing its tail: one ending at
    floor.index with a last term <= floor.term. The §5.4.3 argument then holds for the lost log:
    a candidate at least as up to date as a log holding a committed entry holds that entry."""
    return last_term > floor.term or (last_term == floor.term and last_index >= floor.index)


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
        vote_floor: VoteFloor = _NO_FLOOR,
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
        self._vote_floor: VoteFloor | None = None
        if not _log_covers(self._log.last_index, self._log.last_term, vote_floor):
            self._vote_floor = vote_floor
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
        self._heartbeat_rounds = 0  # learners get every `_learner_heartbeat_every`-th round
        # The last heartbeat answered, as (term, leader, read_seq), and whether one came since
        # unanswered: a follower answers every other heartbeat at least (`_must_answer`).
        self._answered: tuple[int, str, int] | None = None
        self._skipped_heartbeat = False
        self._randomized_timeout = self.config.election_ticks
        self._votes: dict[str, bool] = {}
        self._progress: dict[str, Progress] = {}
        self._transferee: str | None = None
        self._read_seq = 0
        # Reads started since the last heartbeat went out share its next round: one heartbeat
        # to every member confirms them all, sent with the Ready (a heartbeat per read request
        # let one learner's stream of them make the leader send thousands a turn: review). A
        # heartbeat sent, for any reason, closes the round: one sent before a read arrived
        # must not confirm it.
        self._read_round_open = False
        self._pending_reads: list[_PendingRead] = []
        self._deferred_reads: list[tuple[bytes, str | None]] = []
        self._outstanding = False
        # A commit index the followers have not been sent yet, and what each was last sent.
        self._commit_unsent = False
        self._sent_commit: dict[str, int] = {}
        self.conf = ConfState()
        self._prev_conf = ConfState()  # the configuration before the latest change in the log
        self._conf_index = 0
        self._recompute_conf()
        self._reset_timers()
        if self.conf.voters == (self.id,):
            # The only voter campaigns at its first tick: no other node can lead its
            # configuration, so there is no leader to wait for (`init`, and a lone manager's
            # restart, waited 0.4-0.8 s for nothing). At the start only, as etcd fast-forwards
            # a booting node's ticks: once it has heard from a leader or granted a vote, its
            # timer runs whole (one that fired whenever it knew of no leader deposed the leader
            # it had just voted for: simulation seed 4287).
            self._election_elapsed = self._randomized_timeout - 1

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

    @property
    def vote_floor(self) -> VoteFloor | None:
        """What this node may have acknowledged and lost, while its log is not that far along:
        it withholds its vote from candidates whose log is not either, and does not campaign."""
        return self._vote_floor

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

    def idle_ticks(self) -> int:
        """How many ticks from now the next one that may act is (>= 1): the ticks before it only
        count. A driver may sleep until then, provided that it calls `tick` once for each tick
        that passed before it steps anything that arrived meanwhile (issue #20: an idle agent
        woke at every tick, 20 times a second, mostly only to count). A leader's tick acts at its
        next heartbeat or check-quorum (at every tick while a snapshot may need resending); a
        follower's at its election timeout, if it may campaign; one that may not (a learner)
        only counts, and is given a bound all the same."""
        if self.role == Role.LEADER:
            if any(pr.state == ProgressState.SNAPSHOT for pr in self._progress.values()):
                return 1
            heartbeat = self.config.heartbeat_ticks - self._heartbeat_elapsed
            return max(1, min(heartbeat, self.config.election_ticks - self._election_elapsed))
        if not self._promotable():
            return 2 * self.config.election_ticks
        return max(1, self._randomized_timeout - self._election_elapsed)

    def propose(self, data: bytes) -> int:
        """Append a command; returns its index. It is committed when it appears in
        `Ready.committed_entries` (with the term it was proposed in)."""
        self._check_leader()
        return self._append_entry(EntryKind.NORMAL, data)

    def propose_batch(self, batch: Sequence[bytes]) -> range:
        """Append several commands at once (group commit): one append to the log, one round of
        messages to the followers. Returns their indexes, in the order of `batch`."""
        self._check_leader()
        first = self._log.last_index + 1
        self._log.append(
            [Entry(self.term, first + i, EntryKind.NORMAL, data) for i, data in enumerate(batch)]
        )
        self._maybe_commit()
        self._broadcast_append()
        return range(first, first + len(batch))

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

    def peer_reachable(self, peer: str) -> None:
        """The node learned, outside Raft, that `peer` has just come up (gossip saw it join or
        come back). What a leader sent it while it was down is lost, and its next heartbeat
        round may be far off (a learner's comes every few rounds): probe it now from what is
        known to match (etcd's ReportUnreachable, the other way round), so that a joining
        node's snapshot, or a returning one's catch-up, starts at once. Else nothing."""
        pr = self._progress.get(peer) if self.role == Role.LEADER else None
        if pr is not None:
            pr.become_probe()
            self._send_append(peer, allow_empty=True)

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
            or self._commit_to_send()
            or self._read_round_open
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
        self._send_commit()
        if self._read_round_open:
            self._broadcast_heartbeat()
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
        self._read_round_open = False
        self._commit_unsent = False
        self._sent_commit = {}

    def _become_follower(self, term: int, leader: str | None, *, keep_timer: bool = False) -> None:
        if term < self.term:
            raise AssertionError(f"term would go back from {self.term} to {term}")
        if term > self.term:
            self.term = term
            self.vote = None
        self.role = Role.FOLLOWER
        self.leader_id = leader
        if keep_timer:
            self._heartbeat_elapsed = 0
        else:
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
        if self._floor_applies() is not None:
            return False  # its own log is not as up to date as the one it may have lost
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
            self._heartbeat_rounds += 1
            learners = self._heartbeat_rounds % self._learner_heartbeat_every() == 0
            self._broadcast_heartbeat(learners=learners)

    def _learner_heartbeat_every(self) -> int:
        """Heartbeat rounds per heartbeat to a peer that cannot campaign (issue #20: most of an
        idle cluster's heartbeats went to workers, which are learners). Their period stays within
        half an election timeout, so a learner still counts a live leader as such (`in_lease`)
        and a lost append to it is still retried soon; what they learn from appends (entries,
        the commit index: `_send_commit`) goes out at once as before. Voters, and those that may
        still campaign (`_may_campaign`), get every round: their election timers depend on it."""
        period = max(self.config.heartbeat_ticks, self.config.election_ticks // 2)
        return max(1, period // self.config.heartbeat_ticks)

    def _may_campaign(self, peer: str) -> bool:
        """`_promotable` as seen from the leader, vote floor aside (the peer's own business)."""
        if peer in self.conf.voters:
            return True
        return self._conf_index > self.commit_index and peer in self._prev_conf.voters

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
                # Raft Figure 2: a follower's election timer restarts when it hears from a leader
                # or grants a vote, not when it merely learns a higher term (etcd restarts it).
                # Otherwise a candidate that cannot win (a log too short) restarts the timers of
                # the nodes that could, every time it campaigns, and may keep them from ever
                # timing out first.
                self._become_follower(msg.term, leader, keep_timer=leader is None)
        elif msg.term < self.term:
            self._count("dropped_stale")
            # Raft Figure 2: every reply carries currentTerm, "for the leader (candidate) to
            # update itself". etcd/raft answers stale appends only with check-quorum or pre-vote
            # and never answers a stale vote request, trusting that the node with the higher
            # term will campaign and so spread its term. Here it may not: a node that its own
            # log makes a learner (or removes) never campaigns, yet a candidate whose longer
            # log makes it a voter needs its vote. Found by the simulation: such a learner,
            # pushed to ever higher terms by a removed node's vote requests, silently dropped
            # the real candidate's requests of lower terms, and no leader was ever elected.
            if isinstance(msg, AppendEntries | Heartbeat):
                self._send(AppendResp(self.id, msg.from_id, self.term, 0, reject=True))
            elif isinstance(msg, RequestVote):
                self._send(VoteResp(self.id, msg.from_id, self.term, False, msg.pre_vote))
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
                if self._must_answer(msg):
                    self._send(HeartbeatResp(self.id, msg.from_id, self.term, msg.read_seq))
                    self._answered = (self.term, msg.from_id, msg.read_seq)
                    self._skipped_heartbeat = False
                else:
                    self._skipped_heartbeat = True
                if msg.commit > self._log.last_index:
                    self._report_short_log(msg.from_id, msg.commit)
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
        floor = self._floor_applies()
        if (
            up_to_date
            and floor is not None
            and not _candidate_covers(msg.last_index, msg.last_term, floor)
        ):
            # The vote floor (see the module docstring): this node may have acknowledged
            # entries the candidate lacks, then lost them; its vote could be the one that lets
            # a candidate without a committed entry win.
            self._count("votes_withheld_below_floor")
            up_to_date = False
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
        if msg.commit_only and not msg.entries:
            return  # the leader asked for no answer (see AppendEntries); a refusal is answered
        self._send(AppendResp(self.id, msg.from_id, self.term, last_new))

    def _must_answer(self, msg: Heartbeat) -> bool:
        """Whether to answer this heartbeat. The leader needs answers for three things: to
        know that a quorum still follows it (check-quorum, over election_ticks), to confirm a
        read round (a new `read_seq`, answered at once), and to resend what a follower may not
        have received. Every other heartbeat does for the first and the last: with
        heartbeat_ticks <= election_ticks / 4, two answers or more per election timeout.
        Skipping the rest halves what an idle follower sends and its leader receives (issue
        #20). Counted in heartbeats, not ticks: the answers follow the leader's clock."""
        if self._answered != (self.term, msg.from_id, msg.read_seq):
            return True  # a new leader, or a read round waits for us
        if 4 * self.config.heartbeat_ticks > self.config.election_ticks:
            return True  # heartbeats too far apart to skip any
        return self._skipped_heartbeat

    def _report_short_log(self, leader: str, index: int) -> None:
        """The leader's heartbeat carries min(our match, its commit) (see Heartbeat): `index`
        above our last index means our log lost entries we acknowledged (a torn write cut off
        at open, a disk that did not keep an fsync) and the leader does not know. Say so with
        the reject an append at `index` would get; the leader then lowers our match and sends
        the entries again."""
        self._count("short_log_reported")
        last = self._log.last_index
        self._send(
            AppendResp(
                self.id, leader, self.term, index, reject=True, hint_index=last + 1, hint_term=0
            )
        )

    def _truncate_and_append(self, entries: Sequence[Entry]) -> None:
        start = entries[0].index
        truncated_conf = start <= self._conf_index
        self._log.append(entries)
        self._unstable_from = min(self._unstable_from, start)
        if truncated_conf or any(e.kind == EntryKind.CONF_CHANGE for e in entries):
            self._recompute_conf()
        self._check_vote_floor()

    def _floor_applies(self) -> VoteFloor | None:
        """The vote floor, where it must hold: in a configuration of three voters or more. With
        one or two voters every commit needs every voter: the other voter, if any, holds every
        committed entry and refuses a candidate without it by the ordinary rule (§5.4.1), and a
        lone voter has no one to recover from; the floor would only leave such a group without
        a leader for good (a two-voter group whose leader lost entries that only it held)."""
        self._check_vote_floor()  # a leader's own appends may have taken its log past it
        if self._vote_floor is not None and len(self.conf.voters) >= 3:
            return self._vote_floor
        return None

    def _check_vote_floor(self) -> None:
        floor = self._vote_floor
        if floor is not None and _log_covers(self._log.last_index, self._log.last_term, floor):
            self._vote_floor = None
            self._count("vote_floor_reached")

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
        self._check_vote_floor()
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
        self._check_vote_floor()
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
        # The followers learn the new commit index at the next Ready (`_send_commit`), from
        # the appends that carry what was proposed meanwhile, or from an append of its own.
        self._commit_unsent = True
        if self._conf_index <= self.commit_index and self.id not in self.conf.voters:
            # Thesis §4.2.2: a leader that is no longer a voter steps down once that is committed.
            self._count("removed_leader_step_downs")
            self._become_follower(self.term, None)
        return True

    def _broadcast_append(self) -> None:
        for p in list(self._progress):
            self._send_append(p, allow_empty=True)

    def _commit_to_send(self) -> bool:
        return (
            self._commit_unsent
            and self.role == Role.LEADER
            and any(self._sent_commit.get(p, 0) < self.commit_index for p in self._progress)
        )

    def _send_commit(self) -> None:
        """An append (empty if need be) to each follower not yet sent the commit index: one
        message per follower and Ready, however many acknowledgements moved it (a follower
        whose appends are paused learns it later, from an append or a heartbeat)."""
        if self._commit_to_send():
            for p in list(self._progress):
                if self._sent_commit.get(p, 0) < self.commit_index:
                    self._send_append(p, allow_empty=True, commit_only=True)
        self._commit_unsent = False

    def _broadcast_heartbeat(self, *, learners: bool = True) -> None:
        self._read_round_open = False
        for p, pr in self._progress.items():
            if not learners and not self._may_campaign(p):
                continue
            commit = min(pr.match, self.commit_index)
            self._send(Heartbeat(self.id, p, self.term, commit, self._read_seq))

    def _send_append(self, to: str, *, allow_empty: bool, commit_only: bool = False) -> bool:
        """Send `to` what it lacks of the log (or a snapshot), if its progress allows. With
        `commit_only`, an append that carries no entries to a follower in REPLICATE asks for no
        answer: the leader learns nothing from one (its match does not move, and the follower's
        heartbeat answers keep it active), and at one write at a time the two answers were two
        of the five messages a write brought the leader (issue #20). The price: an entry's
        acknowledgement that is lost (a broken stream, a full queue) is no longer repeated by
        the notice's answer, and waits for a heartbeat's (a round later)."""
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
        entries = self._within_budget(self._log.slice(pr.next, hi))
        if not entries and not allow_empty:
            return False
        unanswered = commit_only and not entries and pr.state == ProgressState.REPLICATE
        self._send(
            AppendEntries(
                self.id, to, self.term, prev, prev_term, entries, self.commit_index, unanswered
            )
        )
        self._sent_commit[to] = self.commit_index
        if pr.state == ProgressState.REPLICATE:
            if entries:
                pr.next = entries[-1].index + 1
                pr.inflight.append(entries[-1].index)
        else:
            pr.probe_sent = True
        return True

    def _within_budget(self, entries: list[Entry]) -> tuple[Entry, ...]:
        """The first entries whose data fit `max_bytes_per_append`; the first always goes."""
        budget = self.config.max_bytes_per_append
        for i, entry in enumerate(entries):
            budget -= len(entry.data)
            if budget < 0 and i > 0:
                return tuple(entries[:i])
        return tuple(entries)

    def _handle_append_response(self, msg: AppendResp) -> None:
        pr = self._progress[msg.from_id]
        pr.recent_active = True
        if msg.reject:
            if msg.hint_term == 0 and 0 < msg.hint_index <= pr.match:
                self._handle_short_log(msg.from_id, pr, msg)
                return
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
            if pr.state == ProgressState.PROBE and msg.index == pr.match:
                # The probe at `match` succeeded (etcd/raft does the same): pipeline again.
                pr.become_replicate()
                while self._send_append(msg.from_id, allow_empty=False):
                    pass
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

    def _handle_short_log(self, peer: str, pr: Progress, msg: AppendResp) -> None:
        """A reject says the follower's log ends at hint_index - 1, below what it acknowledged
        (`match`). It lost a tail (see _report_short_log), or the reject is an old one that the
        network delivered after the ack. etcd/raft ignores it as stale (MaybeDecrTo: match never
        goes back on a disk that keeps its fsyncs), which leaves a follower that did lose its tail
        without the entries forever. Here: from REPLICATE, probe at `match` first (an old
        reject then costs one round trip and no more); a reject of that very probe is fresh, and
        `match` goes back to what the follower holds. Lowering `match` is safe in any case: it
        only ever lets the leader commit, and commit_index itself never goes back."""
        if pr.state == ProgressState.REPLICATE:
            self._count("short_logs_probed")
            pr.become_probe()
            self._send_append(peer, allow_empty=True)
        elif pr.state == ProgressState.PROBE and msg.index == pr.next - 1:
            self._count("short_logs_repaired")
            pr.regress(msg.hint_index - 1)
            self._send_append(peer, allow_empty=True)

    def _handle_heartbeat_response(self, msg: HeartbeatResp) -> None:
        pr = self._progress[msg.from_id]
        pr.recent_active = True
        pr.probe_sent = False
        if pr.state == ProgressState.REPLICATE and len(pr.inflight) >= (
            self.config.max_inflight_appends
        ):
            pr.inflight.popleft()  # an append may be lost: let one more through
        if pr.match < self._log.last_index or pr.state == ProgressState.PROBE:
            # In PROBE, even with nothing beyond `match` (etcd/raft does the same): `match` may
            # be more than the follower still holds (see _handle_short_log), and only an answer
            # to a probe can say so once the last probe was lost.
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
        if not self._read_round_open:
            self._read_seq += 1
        for ctx, requester in reads:
            self._pending_reads.append(
                _PendingRead(self._read_seq, ctx, requester, self.commit_index)
            )
        if has_quorum(self.conf.voters, {self.id}):
            self._release_confirmed_reads()  # a group of one confirms itself
        else:
            self._read_round_open = True  # its heartbeat goes with the Ready

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
