"""Deterministic simulation of a Raft group: N RaftNodes in one process, a virtual clock, an
in-memory network with seeded loss, delay, duplication, reordering and partitions, crashes (with
and without losing unsynced writes) and restarts from the simulated storage, membership changes,
leadership transfers, compaction, a client that writes and reads.

Two storage faults cut a node's log short (drawn from their own rng, so that a run without them
replays as it did before they existed):
- lose the unsynced tail: a crash in the middle of a write keeps only part of it (a prefix of its
  entries, perhaps a torn record after them, no hard state). Legal: nothing in it was
  acknowledged. A torn record leaves a vote floor, as `swarmlet.raft.recovery` does, since a
  torn record cannot be told from an acknowledged one.
- lose an acknowledged tail: a disk that acknowledged fsyncs it did not keep; the node restarts
  with up to 5 fewer entries than it acknowledged (never below its persisted commit index, where
  the real storage refuses to start), and a vote floor naming the last of them. The invariants
  hold thanks to the core's rule for it; `--no-vote-floor` keeps the floor from the core, and
  leaders that lack committed entries get elected.
The floor names the last lost entry exactly (the real storage reads it off the torn record; a
disk that drops several whole records leaves it fewer to go by), and, as in the real storage,
none is left for an entry of a newer term than the hard state on disk (it was never
acknowledged), and floors merge into the later (`swarmlet.raft.recovery.later_floor`).
The fault model is the one the rule is built for, with liveness: a tail is lost only while no
other node is below a floor and while the membership is settled (every member's log, and the
node's cut log, hold the same configuration), and the membership does not change while a node is
below its floor; an acknowledged tail is never lost in a group of one voter (whose lost entries
had no other copy). Elsewhere a torn write is cut at a record boundary, which leaves no floor.

Safety invariants are checked after every event (Raft Figure 3):
- election safety: at most one leader per term;
- leader append-only: a leader never overwrites or deletes entries of its log;
- log matching: an (index, term) pair names one entry with one predecessor term, everywhere;
- leader completeness: a new leader holds every entry committed so far;
- committed entries never change or disappear (checked on commit, on restart, on apply);
- state machine safety: every node applies the same entry at each index, in order, so every
  applied sequence is a prefix of every other (snapshots included);
- linearizable reads: a ReadState's index covers everything committed before the read began.
After the chaos the network heals and every node restarts; liveness: a leader is elected, commits
a new write, and every member has applied every acknowledged write.

Run one seed: `python -m tests.raft.sim --seed 1234 -v`; a sweep: `python -m tests.raft.sim
--seeds 0-9999`. Everything derives from the seed: a failing seed replays exactly.
"""

from __future__ import annotations

import argparse
import functools
import heapq
import multiprocessing
import random
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from multiprocessing.pool import Pool
from typing import NoReturn

from swarmlet.errors import NoLeaderError, NotLeaderError
from swarmlet.raft.core import ConfChangeRefused, LeadershipTransferError, RaftConfig, RaftNode
from swarmlet.raft.messages import Message, Role
from swarmlet.raft.quorum import apply_conf_change, decode_conf_change
from swarmlet.raft.recovery import later_floor
from swarmlet.raft.types import (
    ConfChange,
    ConfChangeKind,
    ConfState,
    Entry,
    EntryKind,
    HardState,
    Snapshot,
    SnapshotMeta,
    VoteFloor,
)


class SimFailure(AssertionError):
    pass


@dataclass(frozen=True)
class SimParams:
    """The shape of a run; `from_seed` draws the fault rates from the seed."""

    voters: int = 3
    spares: int = 2  # nodes started outside the group, for membership changes
    chaos_ticks: int = 150
    heal_ticks: int = 250  # liveness deadline after healing
    loss: float = 0.05
    duplicate: float = 0.02
    max_delay_ticks: float = 1.5
    fault_rate: float = 0.06  # chance per tick of one fault (crash, partition, change, ...)
    write_rate: float = 0.5  # chance per tick of a client write
    read_rate: float = 0.1
    crash_mid_ready: float = 0.005  # chance that a Ready's fsync is interrupted by a crash
    storage_faults: bool = True  # lose unsynced and acknowledged tails (at fault_rate / 4)
    vote_floor: bool = True  # hand the storage's vote floor to the core (False: to show it matters)
    config: RaftConfig = field(default_factory=RaftConfig)

    @staticmethod
    def from_seed(rng: random.Random) -> SimParams:
        return SimParams(
            voters=rng.choice((1, 3, 3, 3, 5)),
            spares=rng.choice((1, 2)),
            loss=rng.choice((0.0, 0.02, 0.1, 0.2)),
            duplicate=rng.choice((0.0, 0.02, 0.05)),
            max_delay_ticks=rng.choice((0.2, 1.0, 3.0)),
            fault_rate=rng.choice((0.02, 0.06, 0.12)),
            config=RaftConfig(
                election_ticks=10,
                heartbeat_ticks=rng.choice((1, 2, 3)),
                pre_vote=rng.random() < 0.85,
                check_quorum=rng.random() < 0.85,
                max_entries_per_append=rng.choice((1, 4, 64)),
                max_inflight_appends=rng.choice((1, 4, 16)),
                snapshot_retry_ticks=rng.choice((5, 20)),
            ),
        )


class SimStorage:
    """A disk: what was synced survives any crash; what was written but not synced survives
    only a process crash (the OS still holds the page cache), not a machine crash."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.hard_state = HardState()
        self.snapshot = snapshot
        self.entries: list[Entry] = []
        self.vote_floor = VoteFloor()  # as swarmlet.raft.recovery reports it
        self._unsynced: tuple[HardState | None, tuple[Entry, ...], Snapshot | None] | None = None

    @property
    def last_index(self) -> int:
        return self.snapshot.meta.index + len(self.entries)

    @property
    def last_term(self) -> int:
        return self.entries[-1].term if self.entries else self.snapshot.meta.term

    def conf(self) -> ConfState:
        conf = self.snapshot.meta.conf
        for e in self.entries:
            if e.kind == EntryKind.CONF_CHANGE:
                conf = apply_conf_change(conf, decode_conf_change(e.data))
        return conf

    def _lose_tail(self, keep: int, lost: Entry) -> None:
        """Keep entries up to index `keep`; `lost` is the last entry the log may have held. Its
        index and term are the vote floor (the real storage reads them off a torn record)."""
        del self.entries[keep - self.snapshot.meta.index :]
        if lost.term <= self.hard_state.term:  # else never acknowledged (see recovery)
            self.vote_floor = later_floor(self.vote_floor, VoteFloor(lost.index, lost.term))
        self._lift_floor()

    def _lift_floor(self) -> None:
        f = self.vote_floor
        if f.index and (self.last_index >= f.index or self.last_term > f.term):
            self.vote_floor = VoteFloor()

    def conf_upto(self, index: int) -> ConfState:
        conf = self.snapshot.meta.conf
        for e in self.entries:
            if e.index <= index and e.kind == EntryKind.CONF_CHANGE:
                conf = apply_conf_change(conf, decode_conf_change(e.data))
        return conf

    def tear(self, rng: random.Random, allow_floor: Callable[[Entry], bool]) -> bool:
        """A crash during the unsynced write: a snapshot in it is whole (it is renamed into
        place), its entries are cut after a random prefix (the truncation of an overwritten
        suffix came first, and is durable), the hard state (written last) is lost. Returns
        whether a torn record was left (and a vote floor with it)."""
        if self._unsynced is None:
            return False
        _, entries, snapshot = self._unsynced
        self._unsynced = None
        if snapshot is not None:
            self.snapshot = snapshot
            self.entries = []
        if not entries:
            return False
        del self.entries[entries[0].index - self.snapshot.meta.index - 1 :]
        keep = rng.randrange(len(entries))
        self.entries.extend(entries[:keep])
        if rng.random() < 0.5 or not allow_floor(entries[keep]):
            return False  # cut at a record boundary: nothing to see
        self._lose_tail(self.last_index, entries[keep])
        return True

    def lose_acknowledged(self, lost: int) -> None:
        """The disk did not keep the last `lost` synced entries although it said it had."""
        self.sync()
        self._lose_tail(self.last_index - lost, self.entries[-1])

    def write(
        self, hard_state: HardState | None, entries: tuple[Entry, ...], snapshot: Snapshot | None
    ) -> None:
        self._unsynced = (hard_state, entries, snapshot)

    def sync(self) -> None:
        if self._unsynced is None:
            return
        hard_state, entries, snapshot = self._unsynced
        self._unsynced = None
        if snapshot is not None:
            self.snapshot = snapshot
            self.entries = []
        if entries:
            del self.entries[entries[0].index - self.snapshot.meta.index - 1 :]
            self.entries.extend(entries)
        if hard_state is not None:
            self.hard_state = hard_state
        self._lift_floor()

    def crash(self, *, lose_unsynced: bool) -> None:
        if lose_unsynced:
            self._unsynced = None
        else:
            self.sync()

    def compact(self, snapshot: Snapshot) -> None:
        drop = snapshot.meta.index - self.snapshot.meta.index
        self.snapshot = snapshot
        del self.entries[:drop]


def encode_values(values: list[bytes]) -> bytes:
    return b",".join(values)


def decode_values(data: bytes) -> list[bytes]:
    return data.split(b",") if data else []


@dataclass
class SimNode:
    node_id: str
    storage: SimStorage
    raft: RaftNode | None = None
    values: list[bytes] = field(default_factory=list)  # the state machine: applied writes
    applied: int = 0
    checked_commit: int = 0
    incarnation: int = 0
    down_until: float = -1.0


class Simulation:
    def __init__(
        self,
        seed: int,
        params: SimParams | None = None,
        *,
        verbose: bool = False,
        chaos_ticks: int | None = None,
        storage_faults: bool = True,
        vote_floor: bool = True,
    ):
        self.seed = seed
        self.rng = random.Random(seed)
        self.storage_rng = random.Random(f"{seed}/storage")
        self.params = params if params is not None else SimParams.from_seed(self.rng)
        self.replay = f"python -m tests.raft.sim --seed {seed} -v"
        if chaos_ticks is not None:
            self.params = replace(self.params, chaos_ticks=chaos_ticks)
            self.replay += f" --chaos-ticks {chaos_ticks}"
        if not storage_faults:
            self.params = replace(self.params, storage_faults=False)
            self.replay += " --no-storage-faults"
        if not vote_floor:
            self.params = replace(self.params, vote_floor=False)
            self.replay += " --no-vote-floor"
        self.verbose = verbose
        self.now = 0.0
        self._queue: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = 0
        self.partition: dict[str, int] = {}
        self.loss = self.params.loss
        self.duplicate = self.params.duplicate
        self.chaos = True
        voters = tuple(f"n{i}" for i in range(1, self.params.voters + 1))
        spares = tuple(
            f"n{i}"
            for i in range(self.params.voters + 1, self.params.voters + self.params.spares + 1)
        )
        boot = Snapshot(SnapshotMeta(index=1, term=1, conf=ConfState(voters=voters)), b"")
        self.nodes: dict[str, SimNode] = {}
        for nid in voters + spares:
            self.nodes[nid] = SimNode(nid, SimStorage(boot if nid in voters else Snapshot()))
            self._start(nid)
        # Invariant state.
        self.leaders: dict[int, str] = {}
        self.leader_last: dict[tuple[str, int], int] = {}  # last index after the last Ready
        self.leader_checked: set[tuple[str, int]] = set()
        self.seen: dict[tuple[int, int], tuple[EntryKind, bytes, int]] = {}
        self.committed: dict[int, tuple[int, EntryKind, bytes]] = {1: (1, EntryKind.NORMAL, b"")}
        # Index -> the term of the member first seen to commit it: the committing leader's own,
        # or (a follower's, a restart's) a term at least that high, never lower.
        self.commit_term: dict[int, int] = {1: 1}
        self.max_committed = 1
        self.history: list[bytes] = []  # the longest applied sequence of writes seen
        # Client state.
        self.next_write = 0
        self.pending: dict[str, dict[int, tuple[int, bytes]]] = {}
        self.tear_next: set[str] = set()  # crash during the next write of entries, tearing it
        self.stats: dict[str, int] = {}  # faults injected, and the core's counters that matter
        self.acked: dict[bytes, int] = {}
        self.reads: dict[bytes, int] = {}
        self.reads_served = 0
        self.final_write: bytes | None = None
        self.heal_mark = -1  # sum of applied indexes, to detect progress after healing
        self.heal_progress_at = 0.0
        self.events = 0

    # ------------------------------------------------------------------ plumbing

    def log(self, text: str) -> None:
        if self.verbose:
            print(f"[{self.now:8.2f}] {text}")

    def fail(self, text: str) -> NoReturn:
        raise SimFailure(f"seed {self.seed} at t={self.now:.2f}: {text}\nreplay: {self.replay}")

    def at(self, when: float, action: Callable[[], None]) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (when, self._seq, action))

    def _start(self, nid: str) -> None:
        node = self.nodes[nid]
        st = node.storage
        node.incarnation += 1
        rng = random.Random(f"{self.seed}/{nid}/{node.incarnation}")
        node.raft = RaftNode(
            nid,
            self.params.config,
            rng,
            hard_state=st.hard_state,
            snapshot=st.snapshot,
            entries=list(st.entries),
            vote_floor=st.vote_floor if self.params.vote_floor else VoteFloor(),
        )
        node.values = decode_values(st.snapshot.data)
        node.applied = st.snapshot.meta.index
        node.checked_commit = st.snapshot.meta.index
        phase = self.rng.random()
        incarnation = node.incarnation
        self.at(self.now + phase, lambda: self._tick(nid, incarnation))

    def _tick(self, nid: str, incarnation: int) -> None:
        node = self.nodes[nid]
        if node.raft is None or node.incarnation != incarnation:
            return
        node.raft.tick()
        self.after(nid)
        self.at(self.now + 1.0, lambda: self._tick(nid, incarnation))

    def connected(self, a: str, b: str) -> bool:
        return self.partition.get(a, 0) == self.partition.get(b, 0)

    def send(self, msg: Message) -> None:
        if not self.connected(msg.from_id, msg.to_id) or self.rng.random() < self.loss:
            return
        copies = 2 if self.rng.random() < self.duplicate else 1
        for _ in range(copies):
            delay = 0.01 + self.rng.random() * self.params.max_delay_ticks
            self.at(self.now + delay, functools.partial(self.deliver, msg))

    def deliver(self, msg: Message) -> None:
        node = self.nodes[msg.to_id]
        if node.raft is None or not self.connected(msg.from_id, msg.to_id):
            return
        node.raft.step(msg)
        self.after(msg.to_id)

    # ------------------------------------------------------------------ Ready handling

    def after(self, nid: str) -> None:
        """Drain the node's Readies as a driver would, checking the invariants."""
        self.events += 1
        node = self.nodes[nid]
        raft = node.raft
        assert raft is not None
        while raft.has_ready():
            rd = raft.ready()
            self.check_entries(nid, raft, rd.entries)
            node.storage.write(rd.hard_state, rd.entries, rd.snapshot)
            if self.chaos and rd.entries and nid in self.tear_next:
                self.tear_next.discard(nid)
                torn = node.storage.tear(
                    self.storage_rng,
                    lambda e: (
                        e.kind != EntryKind.CONF_CHANGE
                        and self.may_lose_tail(nid, e.index - 1, min_voters=1)
                    ),
                )
                self.count("unsynced_tails_lost")
                if torn:
                    self.count("torn_records")
                self.crash(nid, lose_unsynced=True, why=f"mid-write (torn record: {torn})")
                return
            if self.chaos and self.rng.random() < self.params.crash_mid_ready:
                self.crash(nid, lose_unsynced=self.rng.random() < 0.5, why="during fsync")
                return
            node.storage.sync()
            # A leader counts once the Ready that made it one is on disk: one whose vote for
            # itself a crash lost before anything was sent (a lone voter elects itself within
            # one Ready) led nothing, and may vote for another in that term after its restart.
            self.check_leader(nid, raft)
            for m in rd.messages:
                self.send(m)
            if rd.snapshot is not None:
                node.values = decode_values(rd.snapshot.data)
                node.applied = rd.snapshot.meta.index
                self.check_values(nid, node.values)
                self.log(f"{nid} restored snapshot at {node.applied}")
            self.check_commit(nid, raft)
            for e in rd.committed_entries:
                self.apply(nid, node, e)
            for rs in rd.read_states:
                lo = self.reads.get(rs.ctx)
                if lo is None:
                    self.fail(f"{nid} served unknown read {rs.ctx!r}")
                elif rs.index < lo:
                    self.fail(f"{nid} read {rs.ctx!r} at {rs.index} < committed {lo} at start")
                if node.applied < rs.index:
                    self.fail(f"{nid} read {rs.ctx!r} served before applying {rs.index}")
                self.reads_served += 1
            if rd.soft_state is not None:
                self.log(f"{nid} is {rd.soft_state.role.name} term {rd.soft_state.term}")
            raft.advance(rd)
        self.check_leader(nid, raft)
        self.check_commit(nid, raft)
        if raft.role == Role.LEADER:
            self.leader_last[(nid, raft.term)] = raft.last_index

    def apply(self, nid: str, node: SimNode, e: Entry) -> None:
        if e.index != node.applied + 1:
            self.fail(f"{nid} applied {e.index} after {node.applied}")
        want = self.committed.get(e.index)
        if want != (e.term, e.kind, e.data):
            self.fail(f"{nid} applied {e} but committed at {e.index} is {want}")
        node.applied = e.index
        if e.kind == EntryKind.NORMAL and e.data:
            node.values.append(e.data)
            k = len(node.values) - 1
            if k < len(self.history):
                if self.history[k] != e.data:
                    self.fail(f"{nid} applied {e.data!r} as write #{k}, others {self.history[k]!r}")
            else:
                self.history.append(e.data)
        mine = self.pending.get(nid, {})
        if mine.get(e.index) == (e.term, e.data):
            del mine[e.index]
            self.acked[e.data] = e.index
            self.log(f"ack {e.data!r} at {e.index}")

    # ------------------------------------------------------------------ invariants

    def check_leader(self, nid: str, raft: RaftNode) -> None:
        if raft.role != Role.LEADER:
            return
        holder = self.leaders.setdefault(raft.term, nid)
        if holder != nid:
            self.fail(f"election safety: {holder} and {nid} both lead term {raft.term}")
        key = (nid, raft.term)
        if key not in self.leader_checked:
            self.leader_checked.add(key)
            # Leader completeness (Raft §5.4): the new leader holds every entry committed in an
            # earlier term. One committed in a later term it need not hold: a vote delayed past
            # a newer leader's commit can still make a leader of an older term (which can commit
            # nothing: a majority has moved on). Such leaders are counted, not failed.
            behind = False
            for i in range(raft.snapshot_meta.index + 1, self.max_committed + 1):
                if self.commit_term.get(i, 0) >= raft.term:
                    behind = True
                    continue
                e = raft.entry_at(i)
                if e is None or self.committed.get(i) != (e.term, e.kind, e.data):
                    self.fail(f"leader completeness: {nid} (term {raft.term}) lacks entry {i}")
            if behind:
                self.count("leaders_elected_behind_a_later_term")

    def check_entries(self, nid: str, raft: RaftNode, entries: tuple[Entry, ...]) -> None:
        if not entries:
            return
        if raft.role == Role.LEADER:
            before = self.leader_last.get((nid, raft.term))
            if before is not None and entries[0].index <= before:
                self.fail(f"leader append-only: {nid} rewrote from {entries[0].index}")
        prev_term = raft.term_at(entries[0].index - 1)
        if prev_term is None:
            self.fail(f"{nid} wrote entries at {entries[0].index} without a predecessor")
        for e in entries:
            # Log matching (Raft §5.3): one (index, term) pair, one entry, one predecessor.
            val = (e.kind, e.data, prev_term)
            got = self.seen.setdefault((e.index, e.term), val)
            if got != val:
                self.fail(f"log matching: {nid} has ({e.index}, {e.term}) = {val}, seen {got}")
            c = self.committed.get(e.index)
            if e.index <= raft.commit_index and c is not None and c != (e.term, e.kind, e.data):
                self.fail(f"{nid} overwrote committed entry {e.index} {c} with {e}")
            prev_term = e.term

    def check_commit(self, nid: str, raft: RaftNode) -> None:
        node = self.nodes[nid]
        if raft.commit_index < node.checked_commit:
            self.fail(f"{nid} commit index went back to {raft.commit_index}")
        for i in range(
            max(node.checked_commit + 1, raft.snapshot_meta.index + 1), raft.commit_index + 1
        ):
            e = raft.entry_at(i)
            assert e is not None
            val = (e.term, e.kind, e.data)
            got = self.committed.setdefault(i, val)
            if got != val:
                self.fail(f"{nid} committed {e} at {i}, committed before: {got}")
            self.commit_term.setdefault(i, raft.term)
        node.checked_commit = raft.commit_index
        self.max_committed = max(self.max_committed, raft.commit_index)

    def check_values(self, nid: str, values: list[bytes]) -> None:
        n = min(len(values), len(self.history))
        if values[:n] != self.history[:n]:
            self.fail(f"{nid}'s state machine is not a prefix of the others'")
        self.history.extend(values[n:])

    def check_restart(self, nid: str) -> None:
        st = self.nodes[nid].storage
        if st.hard_state.commit > st.snapshot.meta.index + len(st.entries):
            self.fail(f"{nid} restarted without its committed entries")
        for e in st.entries:
            if e.index <= st.hard_state.commit:
                # A crash during an fsync may have made a commit durable that was not yet checked.
                val = (e.term, e.kind, e.data)
                if self.committed.setdefault(e.index, val) != val:
                    self.fail(f"{nid} restarted with {e}, committed: {self.committed[e.index]}")
                self.commit_term.setdefault(e.index, st.hard_state.term)

    # ------------------------------------------------------------------ faults and clients

    def leader(self) -> RaftNode | None:
        best: RaftNode | None = None
        for node in self.nodes.values():
            r = node.raft
            if r is not None and r.role == Role.LEADER and (best is None or r.term > best.term):
                best = r
        return best

    def count(self, name: str, n: int = 1) -> None:
        self.stats[name] = self.stats.get(name, 0) + n

    def collect_counters(self, raft: RaftNode) -> None:
        for name in (
            "votes_withheld_below_floor",
            "vote_floor_reached",
            "short_log_reported",
            "short_logs_probed",
            "short_logs_repaired",
        ):
            if name in raft.counters:
                self.count(name, raft.counters[name])

    def floored(self, besides: str) -> bool:
        """Whether a node other than `besides` may have lost entries it acknowledged."""
        for nid, node in self.nodes.items():
            if nid == besides:
                continue
            if node.storage.vote_floor.index or (
                node.raft is not None and node.raft.vote_floor is not None
            ):
                return True
        return False

    def may_lose_tail(self, nid: str, keep: int, *, min_voters: int) -> bool:
        """The fault model of lost tails (see the module docstring): node `nid` may lose its
        entries after `keep` if no other node is below a vote floor, and the membership is
        settled: every member's log, and `nid`'s both whole and cut, holds the same
        configuration, of at least `min_voters` voters."""
        st = self.nodes[nid].storage
        if self.floored(besides=nid):
            return False
        conf = st.conf()
        if len(conf.voters) < min_voters or st.conf_upto(keep) != conf:
            return False
        return all(self.nodes[m].storage.conf() == conf for m in conf.voters + conf.learners)

    def lose_acknowledged_tail(self, nid: str) -> None:
        """A disk that acknowledged fsyncs it did not keep (see the module docstring)."""
        node = self.nodes[nid]
        st = node.storage
        if node.raft is not None:
            self.crash(nid, lose_unsynced=self.storage_rng.random() < 0.5, why="(its disk lies)")
        st.sync()  # what the disk claims to hold (the unsynced write, if kept, was fsynced)
        # Never below the persisted commit index: the real storage refuses to start there.
        keep = max(st.last_index - self.storage_rng.randint(1, 5), st.hard_state.commit)
        keep = max(keep, st.snapshot.meta.index)
        # Not a lone voter: its lost entries had no other copy, and no rule brings them back.
        if keep == st.last_index or not self.may_lose_tail(nid, keep, min_voters=2):
            return
        self.log(f"{nid} loses acknowledged entries {keep + 1}..{st.last_index}")
        st.lose_acknowledged(st.last_index - keep)
        self.count("acknowledged_tails_lost")

    def crash(self, nid: str, *, lose_unsynced: bool, why: str = "") -> None:
        node = self.nodes[nid]
        node.storage.crash(lose_unsynced=lose_unsynced)
        if node.raft is not None:
            self.collect_counters(node.raft)
        node.raft = None
        node.incarnation += 1
        self.pending.pop(nid, None)
        self.log(f"crash {nid} {why} (lose unsynced: {lose_unsynced})")
        node.down_until = self.now + 2 + self.rng.random() * 30
        if self.chaos:
            self.at(node.down_until, lambda: self.restart(nid))

    def restart(self, nid: str) -> None:
        if self.nodes[nid].raft is not None:
            return
        self.check_restart(nid)
        self._start(nid)
        self.check_values(nid, self.nodes[nid].values)
        self.log(f"restart {nid}")

    def write(self, at: str | None = None) -> bytes | None:
        live = [n for n in self.nodes.values() if n.raft is not None]
        if not live:
            return None
        node = self.nodes[at] if at is not None else self.rng.choice(live)
        raft = node.raft
        assert raft is not None
        self.next_write += 1
        data = b"w%d" % self.next_write
        for _ in range(2):  # one redirect, as a client would
            try:
                index = raft.propose(data)
            except NotLeaderError as e:
                hint = self.nodes.get(e.leader_hint or "")
                if hint is None or hint.raft is None:
                    return None
                node, raft = hint, hint.raft
                continue
            self.pending.setdefault(node.node_id, {})[index] = (raft.term, data)
            self.after(node.node_id)
            return data
        return None

    def read(self) -> None:
        live = [n for n in self.nodes.values() if n.raft is not None]
        if not live:
            return
        node = self.rng.choice(live)
        assert node.raft is not None
        ctx = b"r%d" % self.rng.randrange(1 << 30)
        lo = max(
            (n.raft.commit_index for n in self.nodes.values() if n.raft is not None), default=0
        )
        lo = max(lo, self.max_committed)
        try:
            node.raft.read_index(ctx)
        except NoLeaderError:
            return
        self.reads[ctx] = lo
        self.after(node.node_id)

    def fault(self) -> None:
        kind = self.rng.choice(
            (
                "crash",
                "crash_leader",
                "partition",
                "isolate_leader",
                "heal",
                "change",
                "change",
                "change",
                "transfer",
                "compact",
            )
        )
        live = [nid for nid, n in self.nodes.items() if n.raft is not None]
        leader = self.leader()
        if kind == "crash" and live:
            self.crash(self.rng.choice(live), lose_unsynced=self.rng.random() < 0.5)
        elif kind == "crash_leader" and leader is not None:
            self.crash(leader.id, lose_unsynced=self.rng.random() < 0.5)
        elif kind == "isolate_leader" and leader is not None:
            self.partition = {leader.id: 1}
            self.log(f"isolate {leader.id}")
        elif kind == "partition":
            self.partition = {nid: self.rng.randrange(2) for nid in self.nodes}
            self.log(f"partition {self.partition}")
        elif kind == "heal":
            self.partition = {}
            self.log("heal partition")
        elif kind == "change":
            self.change()
        elif kind == "transfer":
            if leader is not None and leader.conf.voters:
                to = self.rng.choice(leader.conf.voters)
                try:
                    leader.transfer_leadership(to)
                except (NotLeaderError, LeadershipTransferError):
                    return
                self.log(f"transfer {leader.id} -> {to}")
                self.after(leader.id)
        elif kind == "compact" and live:
            nid = self.rng.choice(live)
            node = self.nodes[nid]
            raft = node.raft
            assert raft is not None
            if node.applied > raft.snapshot_meta.index:
                snap = raft.compact(node.applied, encode_values(node.values))
                node.storage.compact(snap)
                self.log(f"compact {nid} at {node.applied}")

    def storage_fault(self) -> None:
        """One of the two faults that cut a log short (see the module docstring)."""
        rng = self.storage_rng
        if rng.random() < 0.5:
            live = sorted(nid for nid, n in self.nodes.items() if n.raft is not None)
            if live:
                nid = rng.choice(live)
                self.tear_next.add(nid)
                self.log(f"{nid} will crash in its next write")
        else:
            self.lose_acknowledged_tail(rng.choice(sorted(self.nodes)))

    def change(self) -> None:
        leader = self.leader()
        if leader is None or self.floored(besides=""):
            # The fault model: membership holds still while a node is below its vote floor (a
            # change then, even a stale leader's that never commits, can make the floored node's
            # vote the one every election needs; see swarmlet.raft.core).
            return
        conf = leader.conf
        others = [nid for nid in self.nodes if nid not in conf.voters + conf.learners]
        options: list[ConfChange] = []
        options += [ConfChange(ConfChangeKind.ADD_LEARNER, n) for n in others]
        options += [ConfChange(ConfChangeKind.ADD_VOTER, n) for n in conf.learners]
        options += [ConfChange(ConfChangeKind.REMOVE, n) for n in conf.learners]
        if len(conf.voters) > 1:
            options += [ConfChange(ConfChangeKind.REMOVE, n) for n in conf.voters]
            options += [ConfChange(ConfChangeKind.ADD_LEARNER, n) for n in conf.voters]
        if not options:
            return
        change = self.rng.choice(options)
        if conf.learners and self.rng.random() < 0.5:
            # Promotions are the interesting case (learner -> voter): make them common.
            change = ConfChange(ConfChangeKind.ADD_VOTER, self.rng.choice(conf.learners))
        try:
            leader.propose_conf_change(change)
        except (NotLeaderError, ConfChangeRefused) as e:
            self.log(f"change {change} refused: {e}")
            return
        self.log(f"change {change.kind.name} {change.node_id} at {leader.id}")
        self.after(leader.id)

    # ------------------------------------------------------------------ run

    def run_until(self, end: float, each_tick: Callable[[], bool] | None = None) -> bool:
        next_tick = self.now
        while self._queue:
            when, _, action = self._queue[0]
            if when > end:
                break
            if when >= next_tick:
                # Once per virtual tick: the client and the fault injector.
                self.now = next_tick
                next_tick += 1.0
                if each_tick is not None and each_tick():
                    return True
                continue
            heapq.heappop(self._queue)
            self.now = when
            action()
        self.now = end
        return False

    def chaos_tick(self) -> bool:
        p = self.params
        if self.rng.random() < p.write_rate:
            self.write()
        if self.rng.random() < p.read_rate:
            self.read()
        if self.rng.random() < p.fault_rate:
            self.fault()
        # Drawn apart, so that without storage faults a seed replays as it did before they
        # existed.
        if p.storage_faults and self.storage_rng.random() < p.fault_rate / 4:
            self.storage_fault()
        return False

    def heal_tick(self) -> bool:
        # Liveness: fail when nothing is replicated or applied anywhere for heal_ticks (a slow
        # but steady catch-up, e.g. one entry per round trip, is progress).
        leader = self.leader()
        mark = sum(n.applied for n in self.nodes.values())
        if leader is not None:
            mark += sum(pr.match for pr in map(leader.progress, self.nodes) if pr is not None)
        if mark != self.heal_mark:
            self.heal_mark, self.heal_progress_at = mark, self.now
        elif self.now - self.heal_progress_at > self.params.heal_ticks:
            self.liveness_failure()
        leader = self.leader()
        if leader is None or leader.id not in leader.conf.voters:
            return False
        if self.final_write is None or self.final_write not in self.acked:
            if self.final_write is None or int(self.now) % 5 == 0:
                self.final_write = self.write(at=leader.id) or self.final_write
            return False
        top = max(self.acked.values(), default=0)
        members = leader.conf.voters + leader.conf.learners
        return all(self.nodes[m].applied >= top for m in members if m in self.nodes)

    def run(self) -> None:
        p = self.params
        self.log(f"params {p}")
        self.run_until(p.chaos_ticks, self.chaos_tick)
        # Heal: no more faults or loss; every node comes back.
        self.chaos = False
        self.partition = {}
        self.loss = 0.0
        self.duplicate = 0.0
        self.log("=== heal ===")
        for nid, node in self.nodes.items():
            if node.raft is None:
                self.restart(nid)
        self.heal_mark, self.heal_progress_at = -1, self.now
        if not self.run_until(self.now + 10 * p.heal_ticks, self.heal_tick):
            self.liveness_failure()
        # Final full check: every committed entry still in every log that covers it.
        for nid, node in self.nodes.items():
            raft = node.raft
            assert raft is not None
            self.collect_counters(raft)
            for e in raft.entries():
                c = self.committed.get(e.index)
                if e.index <= raft.commit_index and c != (e.term, e.kind, e.data):
                    self.fail(f"{nid} holds {e} but committed at {e.index} is {c}")

    def liveness_failure(self) -> NoReturn:
        p = self.params
        leader = self.leader()
        state = {
            nid: (
                n.raft.role.name,
                n.raft.term,
                n.raft.commit_index,
                n.applied,
                n.raft.conf,
                n.raft.last_index,
                n.raft.last_term,
                n.raft.vote_floor,
            )
            if n.raft is not None
            else None
            for nid, n in self.nodes.items()
        }
        self.fail(
            f"liveness: no progress for {p.heal_ticks} ticks after healing; leader "
            f"{leader.id if leader else None} conf {leader.conf if leader else None}; "
            f"nodes (role, term, commit, applied, conf, last index, last term, vote floor): {state}"
        )


def run_seed(
    seed: int,
    *,
    verbose: bool = False,
    params: SimParams | None = None,
    chaos_ticks: int | None = None,
    storage_faults: bool = True,
    vote_floor: bool = True,
) -> Simulation:
    sim = Simulation(
        seed,
        params,
        verbose=verbose,
        chaos_ticks=chaos_ticks,
        storage_faults=storage_faults,
        vote_floor=vote_floor,
    )
    sim.run()
    return sim


def _parse_range(text: str) -> range:
    lo, _, hi = text.partition("-")
    return range(int(lo), int(hi or lo) + 1)


def _run_one(
    seed: int,
    verbose: bool = False,
    chaos_ticks: int | None = None,
    storage_faults: bool = True,
    vote_floor: bool = True,
) -> tuple[int, str | None, str, dict[str, int]]:
    try:
        sim = run_seed(
            seed,
            verbose=verbose,
            chaos_ticks=chaos_ticks,
            storage_faults=storage_faults,
            vote_floor=vote_floor,
        )
    except SimFailure as e:
        return seed, str(e), "", {}
    summary = (
        f"seed {seed} ok: {sim.events} events, {len(sim.acked)} writes acked, "
        f"{sim.reads_served} reads, {len(sim.leaders)} terms with a leader, {sim.stats}"
    )
    return seed, None, summary, sim.stats


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.raft.sim", description=__doc__)
    ap.add_argument("--seed", type=int, help="run one seed")
    ap.add_argument("--seeds", type=_parse_range, help="run a range of seeds, e.g. 0-9999")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every event")
    ap.add_argument("--max-seconds", type=float, default=0.0, help="stop a sweep after this")
    ap.add_argument("--chaos-ticks", type=int, help="override the length of the chaos phase")
    ap.add_argument("-j", "--jobs", type=int, default=1, help="worker processes for a sweep")
    ap.add_argument(
        "--no-storage-faults",
        action="store_true",
        help="no lost tails (replays a seed as it ran before these faults existed)",
    )
    ap.add_argument(
        "--no-vote-floor",
        action="store_true",
        help="do not tell the core about lost acknowledged tails (safety then breaks)",
    )
    args = ap.parse_args(argv)
    seeds = [args.seed] if args.seed is not None else list(args.seeds or range(100))
    started = time.monotonic()
    failures = 0
    ran = 0
    totals: dict[str, int] = {}
    results: Iterator[tuple[int, str | None, str, dict[str, int]]]
    pool: Pool | None = None
    work = functools.partial(
        _run_one,
        verbose=args.verbose,
        chaos_ticks=args.chaos_ticks,
        storage_faults=not args.no_storage_faults,
        vote_floor=not args.no_vote_floor,
    )
    if args.jobs > 1:
        pool = multiprocessing.Pool(args.jobs)
        results = pool.imap_unordered(work, seeds, chunksize=16)
    else:
        results = map(work, seeds)
    try:
        for _seed, error, summary, stats in results:
            ran += 1
            for name, n in stats.items():
                totals[name] = totals.get(name, 0) + n
            if error is not None:
                failures += 1
                print(f"FAIL {error}", flush=True)
            elif args.verbose or len(seeds) == 1:
                print(summary)
            if ran % 1000 == 0:
                elapsed = time.monotonic() - started
                print(f"... {ran} seeds, {failures} failed, {elapsed:.0f} s", flush=True)
            if args.max_seconds and time.monotonic() - started > args.max_seconds:
                break
    finally:
        if pool is not None:
            pool.terminate()
    print(f"{ran} seeds, {failures} failed, {time.monotonic() - started:.1f} s")
    if totals:
        print("totals: " + ", ".join(f"{k} {v}" for k, v in sorted(totals.items())))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
