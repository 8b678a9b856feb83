"""The replicated state machine as the Raft driver sees it: opaque bytes in, an opaque result out.

Raft decides the order of entries and when they are committed; what an entry means belongs to
its user, as in etcd's raft, which hands committed entries to the application to apply. So the
driver holds a `StateMachine` and never looks inside an entry's data or a result:

- `restore(data)` replaces the whole state with a snapshot's bytes (at start, and when the
  leader sends a snapshot); empty bytes mean the empty state.
- `decode(data)` reads an entry's data into what `apply` works on, without the state: the
  driver calls it in a thread for a large entry before applying it (decoding a batch of 10,000
  service specs is seconds of CPU, which on the event loop stopped Raft's heartbeats on every
  member at once), while the state moves on. Pure: it must not raise either (it answers what
  `apply` then refuses).
- `apply(index, data, decoded)` applies one committed NORMAL entry that carries data, in log
  order and once per index on this node; `decoded` is `decode(data)`, or None when the driver
  did not decode ahead. What it returns goes back unchanged to the proposer waiting on that
  entry, so its type is the user's (`ResultT_co`). It must not raise for data it cannot
  understand: every replica applies the same entries, so it answers with a result that says so
  and leaves the state as every other replica leaves it.
- `snapshot_later()` takes the state as of the last applied entry, for log compaction, and
  returns what serialises it. The driver calls that in a thread while the state moves on (at
  100,000 tasks an encoding is half a second of CPU, which on the event loop would stop Raft's
  heartbeats and the gossip), so what it reads must not change: a copy, or immutable records.

Implementations must be deterministic: the same entries on the same state give the same state
and the same results on every replica. This module knows no command, codec or state type.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, TypeVar

ResultT_co = TypeVar("ResultT_co", covariant=True)


class StateMachine(Protocol[ResultT_co]):
    """What the Raft driver applies committed entries to."""

    def restore(self, data: bytes) -> None: ...

    def decode(self, data: bytes) -> object: ...

    def apply(self, index: int, data: bytes, decoded: object = None) -> ResultT_co: ...

    def snapshot_later(self) -> Callable[[], bytes]: ...
