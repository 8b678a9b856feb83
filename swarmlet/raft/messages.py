"""The messages Raft peers exchange, and the small value types of a `Ready`.

Wire contract: every message is a frozen, slotted dataclass of plain values (swarmlet/wire.py);
the generic msgpack codec numbers them by their position in `MESSAGES`: only append to it.
Every message carries `from_id`, `to_id` and the sender's `term` (Raft Figure 2).

Names follow the Raft paper (AppendEntries, RequestVote, InstallSnapshot) and etcd/raft
(Heartbeat, TimeoutNow, ReadIndex). This module holds data and their structural validation
(`is_well_formed`), no protocol rules.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from swarmlet.raft.quorum import decode_conf_change
from swarmlet.raft.types import Entry, EntryKind, Snapshot
from swarmlet.wire import catalog, codec


@dataclass(frozen=True, slots=True)
class AppendEntries:
    """Raft §5.3: entries after (`prev_index`, `prev_term`); `commit`: the leader's commit index."""

    from_id: str
    to_id: str
    term: int
    prev_index: int
    prev_term: int
    entries: tuple[Entry, ...]
    commit: int


@dataclass(frozen=True, slots=True)
class AppendResp:
    """Success: the follower's log matches the leader's up to `index`.

    Reject: `index` is the `prev_index` that did not match; the hint (Raft §5.3, the optimisation at
    the end of the section) is the follower's term at `prev_index` (`hint_term`, 0 if its log is
    shorter) and the first index of that term in its log (`hint_index`; last index + 1 if shorter).
    A follower also answers a Heartbeat whose `commit` is beyond its log with such a reject
    (`index` = that commit): its log lost entries it had acknowledged (see RaftNode). A reject
    with `hint_index` 0 only tells a stale leader the current term.
    """

    from_id: str
    to_id: str
    term: int
    index: int
    reject: bool = False
    hint_index: int = 0
    hint_term: int = 0


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """Leader liveness (Raft §5.2). `commit` is min(the follower's match, the leader's commit), so a
    follower never commits an entry it may not hold; `read_seq` numbers ReadIndex rounds (§6.4)."""

    from_id: str
    to_id: str
    term: int
    commit: int
    read_seq: int = 0


@dataclass(frozen=True, slots=True)
class HeartbeatResp:
    from_id: str
    to_id: str
    term: int
    read_seq: int = 0


@dataclass(frozen=True, slots=True)
class RequestVote:
    """Raft §5.2, or a pre-vote (thesis §9.6) when `pre_vote`: then `term` is the term the sender
    would campaign in and the receiver does not adopt it. `transfer` marks an election started by
    TimeoutNow (thesis §3.10): receivers then ignore leader stickiness."""

    from_id: str
    to_id: str
    term: int
    last_index: int
    last_term: int
    pre_vote: bool = False
    transfer: bool = False


@dataclass(frozen=True, slots=True)
class VoteResp:
    from_id: str
    to_id: str
    term: int
    granted: bool
    pre_vote: bool = False


@dataclass(frozen=True, slots=True)
class InstallSnapshot:
    """Raft §7, sent whole in one message (limit: the cluster state must fit in one frame)."""

    from_id: str
    to_id: str
    term: int
    snapshot: Snapshot


@dataclass(frozen=True, slots=True)
class TimeoutNow:
    """Leadership transfer (thesis §3.10): the target starts an election at once."""

    from_id: str
    to_id: str
    term: int


@dataclass(frozen=True, slots=True)
class ReadIndexReq:
    """A follower forwards a linearizable read (thesis §6.4) to the leader."""

    from_id: str
    to_id: str
    term: int
    ctx: bytes


@dataclass(frozen=True, slots=True)
class ReadIndexResp:
    """The leader's answer: the follower may serve `ctx` once it has applied `index`."""

    from_id: str
    to_id: str
    term: int
    ctx: bytes
    index: int


Message = (
    AppendEntries
    | AppendResp
    | Heartbeat
    | HeartbeatResp
    | RequestVote
    | VoteResp
    | InstallSnapshot
    | TimeoutNow
    | ReadIndexReq
    | ReadIndexResp
)

# Only append to this tuple: the wire codec numbers message types by position.
MESSAGES: tuple[type, ...] = (
    AppendEntries,
    AppendResp,
    Heartbeat,
    HeartbeatResp,
    RequestVote,
    VoteResp,
    InstallSnapshot,
    TimeoutNow,
    ReadIndexReq,
    ReadIndexResp,
)
codec.register_all(catalog.RAFT_MESSAGES, MESSAGES)


def _nat(*values: object) -> bool:
    return all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values)


def is_well_formed(msg: Message, node_id: str) -> bool:
    """Structural checks of a message received by `node_id`, done before anything changes (so
    illegal input leaves a node's state as it was)."""
    if not isinstance(msg, MESSAGES):
        return False
    if msg.to_id != node_id or not msg.from_id or msg.from_id == node_id:
        return False
    if not _nat(msg.term):
        return False
    if isinstance(msg, AppendEntries):
        if not _nat(msg.prev_index, msg.prev_term, msg.commit) or msg.prev_term > msg.term:
            return False
        prev_index, prev_term = msg.prev_index, msg.prev_term
        for e in msg.entries:
            if not isinstance(e, Entry) or e.index != prev_index + 1:
                return False
            if not prev_term <= e.term <= msg.term or not isinstance(e.kind, EntryKind):
                return False
            if e.kind == EntryKind.CONF_CHANGE:
                try:
                    decode_conf_change(e.data)
                except (ValueError, UnicodeDecodeError):
                    return False
            prev_index, prev_term = e.index, e.term
        return True
    if isinstance(msg, AppendResp):
        return _nat(msg.index, msg.hint_index, msg.hint_term)
    if isinstance(msg, RequestVote):
        return _nat(msg.last_index, msg.last_term) and msg.last_term <= msg.term
    if isinstance(msg, Heartbeat):
        return _nat(msg.commit, msg.read_seq)
    if isinstance(msg, HeartbeatResp):
        return _nat(msg.read_seq)
    if isinstance(msg, InstallSnapshot):
        meta = msg.snapshot.meta
        return (
            _nat(meta.index, meta.term)
            and meta.index >= 1
            and 1 <= meta.term <= msg.term
            and bool(meta.conf.voters)
        )
    if isinstance(msg, ReadIndexResp):
        return _nat(msg.index)
    return True


class Role(enum.IntEnum):
    FOLLOWER = 0
    PRE_CANDIDATE = 1
    CANDIDATE = 2
    LEADER = 3


@dataclass(frozen=True, slots=True)
class SoftState:
    """Volatile state worth showing: who leads, and what this node is."""

    role: Role
    leader_id: str | None
    term: int


@dataclass(frozen=True, slots=True)
class ReadState:
    """A linearizable read may be served now: the state machine has applied `index` (§6.4)."""

    ctx: bytes
    index: int
