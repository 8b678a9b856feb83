"""The messages Raft peers exchange, and the small value types of a `Ready`.

Wire contract: every message is a frozen, slotted dataclass of plain values (swarmlet/wire.py);
the generic msgpack codec numbers them by their position in `MESSAGES`: only append to it.
Every message carries `from_id`, `to_id` and the sender's `term` (Raft Figure 2).

Names follow the Raft paper (AppendEntries, RequestVote, InstallSnapshot) and etcd/raft
(Heartbeat, TimeoutNow, ReadIndex). This module holds data, their structural validation
(`is_well_formed`) and who may send them (`sender_refusal`), no protocol rules.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from swarmlet.raft.quorum import decode_conf_change
from swarmlet.raft.types import MAX_INDEX, MAX_TERM, Entry, EntryKind, Snapshot
from swarmlet.wire import catalog, codec


@dataclass(frozen=True, slots=True)
class AppendEntries:
    """Raft §5.3: entries after (`prev_index`, `prev_term`); `commit`: the leader's commit index.

    `commit_only`: the leader sends no entries and needs no answer, only to tell a follower it
    already replicates to that the commit index moved (`RaftNode._send_commit`). The follower
    answers it only to refuse it. Protocol 5 (`wire.protocol_version`): never set to an older
    peer, which would refuse the field (the driver clears it)."""

    from_id: str
    to_id: str
    term: int
    prev_index: int
    prev_term: int
    entries: tuple[Entry, ...]
    commit: int
    commit_only: bool = codec.appended(since=5, default=False)


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
    """Raft §7, sent whole in one message (of up to `wire.codec.MAX_SNAPSHOT_BYTES` of state)."""

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
    """Indexes and counters: naturals a node may echo back in its answers, so bounded."""
    return all(
        isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= MAX_INDEX for v in values
    )


def _term_in_range(term: object) -> bool:
    return isinstance(term, int) and not isinstance(term, bool) and 0 <= term <= MAX_TERM


def is_well_formed(msg: Message, node_id: str) -> bool:
    """Structural checks of a message received by `node_id`, done before anything changes (so
    illegal input leaves a node's state as it was)."""
    if not isinstance(msg, MESSAGES):
        return False
    if msg.to_id != node_id or not msg.from_id or msg.from_id == node_id:
        return False
    if not _term_in_range(msg.term):
        return False  # every other term in a message is bounded by its own (entries, snapshot)
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


# Sent only by a leader (appends, heartbeats, snapshots, a transfer's TimeoutNow, the answer to a
# forwarded read) or by a (pre-)candidate (vote requests). The rest are answers, or a follower's
# request (a forwarded read), which any member may send: a learner only answers.
LEADER_OR_CANDIDATE_MESSAGES: tuple[type, ...] = (
    AppendEntries,
    Heartbeat,
    InstallSnapshot,
    RequestVote,
    TimeoutNow,
    ReadIndexResp,
)


def sent_by_leader_or_candidate(msg: object) -> bool:
    return isinstance(msg, LEADER_OR_CANDIDATE_MESSAGES)


def sender_refusal(
    msg: object, peer_id: str, *, peer_may_lead: bool, peer_in_group: bool, current_term: int
) -> str | None:
    """Why a message that arrived on a stream authenticated as node `peer_id` is refused, or None.
    `peer_may_lead`: the peer is a manager as `security.peer_policy.admit` takes its certificate
    (issue #15: the authenticated identity judged by the replicated state, never a field the
    sender fills).

    Leader and candidate messages need a manager, not a voter of the receiver's configuration:
    that configuration may be stale (a node catching up, a new node with an empty log) and a
    server must accept appends from a leader not in its latest configuration (Raft thesis
    §4.2.2), so a strict voter check would keep such a node from ever catching up. Demotion and
    revocation are enforced by the transport instead: a removed node is refused, and a
    manager's certificate counts as a worker's unless the receiver's state, log or known
    members back it (`peer_policy.admit`; minted ones included: the CA key outlives demotions).
    Which voters count is the core's business.

    A non-manager's answers never raise the receiver's term (`current_term`): any message with
    a higher term makes a Raft server step down, so a worker's answer at term+1 would depose
    the leader at will. A learner only ever learns its term from managers' messages, so an
    honest one never holds a term that no manager has.

    A non-manager answers only as a learner of the group (`peer_in_group`: a voter or learner of
    the receiver's configuration): any other worker's answers would be dropped by the core
    anyway, after taking places in the inbox the managers' acknowledgements need."""
    if not isinstance(msg, Message):
        return "not_raft"
    if msg.from_id != peer_id:
        return "sender_not_peer"
    if not peer_may_lead and sent_by_leader_or_candidate(msg):
        return "not_manager"
    if not peer_may_lead and not peer_in_group:
        return "not_in_group"
    if not _term_in_range(msg.term):
        return "term_out_of_range"
    if not peer_may_lead and msg.term > current_term:
        return "term_from_non_manager"
    return None


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
