"""Value types shared by the Raft core, its storage and its driver.

All are frozen dataclasses of plain values, so they can be persisted and sent on the wire as they
are. Node ids are strings (the swarmlet node id). Indexes and terms start at 1; 0 means "none".
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from swarmlet.wire import catalog, codec

# The largest term a peer may send (issue #15); a message above it is dropped unread. Far beyond
# any real count of elections (one a millisecond for 285,000 years), yet far below msgpack's
# 2**64, so that term + 1 always encodes (a forged term 2**64 - 1, once adopted, left its holder a
# next term it could not send, and the agent stopped), and within the integers a double holds
# exactly, for JSON readers of the API.
MAX_TERM = 2**53
# The same bound on indexes and the other counters of a message (commit, hints, read numbers),
# which a node may echo back in its answer: a log never grows near it.
MAX_INDEX = 2**53


class EntryKind(enum.IntEnum):
    """What an entry's `data` holds. Only append to this list (it is persisted)."""

    NORMAL = 0  # an opaque command for the state machine (may be empty: the leader's no-op)
    CONF_CHANGE = 1  # an encoded ConfChange


@dataclass(frozen=True, slots=True)
class Entry:
    term: int
    index: int
    kind: EntryKind = EntryKind.NORMAL
    data: bytes = b""


@dataclass(frozen=True, slots=True)
class HardState:
    """What must be on disk before any message that depends on it is sent (Raft Figure 2)."""

    term: int = 0
    vote: str | None = None
    commit: int = 0


@dataclass(frozen=True, slots=True)
class VoteFloor:
    """What this node's log may have held before its storage lost a tail it had perhaps
    acknowledged (a torn write cut off at open; a disk that did not keep an fsync): entries up to
    `index`, of terms <= `term`. Until its log is at least that far along, the node votes only for
    candidates whose log is (see swarmlet.raft.core). `VoteFloor()` (index 0): nothing was lost.
    Persisted by the storage in its own format; never sent."""

    index: int = 0
    term: int = 0


class ConfChangeKind(enum.IntEnum):
    """Single-server membership changes. Only append to this list."""

    ADD_VOTER = 0  # add a voter, or promote a learner to voter
    ADD_LEARNER = 1  # add a non-voting replica, or demote a voter to learner
    REMOVE = 2  # remove a voter or a learner


@dataclass(frozen=True, slots=True)
class ConfChange:
    kind: ConfChangeKind
    node_id: str


@dataclass(frozen=True, slots=True)
class ConfState:
    """The membership of the group: voters take part in elections and quorums; learners only
    receive the log."""

    voters: tuple[str, ...] = ()
    learners: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class SnapshotMeta:
    index: int = 0
    term: int = 0
    conf: ConfState = field(default_factory=ConfState)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The state machine as of `meta.index`; `data` is opaque to Raft."""

    meta: SnapshotMeta = field(default_factory=SnapshotMeta)
    data: bytes = b""


# Append only: ids are persisted in the Raft log.
WIRE_TYPES: tuple[type, ...] = (Entry, HardState, ConfChange, ConfState, SnapshotMeta, Snapshot)
codec.register_all(catalog.RAFT_TYPES, WIRE_TYPES)
