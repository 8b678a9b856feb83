"""The in-memory Raft log: a snapshot (everything up to `snapshot.meta.index`, compacted) followed
by the entries after it.

Invariants: entries are contiguous, entries[0].index == snapshot.meta.index + 1, terms never
decrease along the log. The log knows nothing of commit, persistence or roles: RaftNode keeps
committed entries from being overwritten and tracks what is not yet durable.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from swarmlet.raft.types import Entry, Snapshot, SnapshotMeta


class RaftLog:
    def __init__(self, snapshot: Snapshot, entries: Sequence[Entry]) -> None:
        self.snapshot = snapshot
        self._entries: list[Entry] = []
        self.append(entries)

    @property
    def snapshot_index(self) -> int:
        return self.snapshot.meta.index

    @property
    def first_index(self) -> int:
        """The first index still held as an entry (may be last_index + 1 when empty)."""
        return self.snapshot.meta.index + 1

    @property
    def last_index(self) -> int:
        return self.snapshot.meta.index + len(self._entries)

    @property
    def last_term(self) -> int:
        return self._entries[-1].term if self._entries else self.snapshot.meta.term

    def term_at(self, index: int) -> int | None:
        """The term of the entry at `index`; None if it is compacted away or beyond the end."""
        offset = self.snapshot.meta.index
        if index == offset:
            return self.snapshot.meta.term
        if offset < index <= self.last_index:
            return self._entries[index - offset - 1].term
        return None

    def entry(self, index: int) -> Entry:
        return self._entries[index - self.snapshot.meta.index - 1]

    def slice(self, lo: int, hi: int) -> list[Entry]:
        """Entries with lo <= index < hi; lo must be >= first_index."""
        offset = self.snapshot.meta.index + 1
        if lo < offset:
            raise IndexError(f"entries before {offset} are compacted (asked from {lo})")
        return self._entries[lo - offset : hi - offset]

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """Raft §5.4.1: a log ending at (last_term, last_index) is as up to date as ours."""
        return last_term > self.last_term or (
            last_term == self.last_term and last_index >= self.last_index
        )

    def find_conflict(self, entries: Sequence[Entry]) -> int:
        """The index of the first entry in `entries` that we lack or hold with another term; 0 if
        we hold them all. Entries at or below the snapshot are taken as matching (committed)."""
        for e in entries:
            if e.index <= self.snapshot.meta.index:
                continue
            if self.term_at(e.index) != e.term:
                return e.index
        return 0

    def first_index_of_term_at(self, index: int, floor: int) -> int:
        """The first index of the run of entries of the same term as `index`, not below `floor`
        (Raft §5.3 back-off hint)."""
        term = self.term_at(index)
        i = index
        while i - 1 > max(floor, self.snapshot.meta.index) and self.term_at(i - 1) == term:
            i -= 1
        return i

    def last_index_of_term(self, term: int, below: int) -> int:
        """The last index < `below` whose entry has `term`; 0 if none is held (Raft §5.3)."""
        i = min(below - 1, self.last_index)
        while i > self.snapshot.meta.index:
            t = self.entry(i).term
            if t == term:
                return i
            if t < term:
                return 0
            i -= 1
        return 0

    def append(self, entries: Sequence[Entry]) -> None:
        """Append `entries`, first truncating our log from entries[0].index if it overlaps."""
        if not entries:
            return
        start = entries[0].index
        if start <= self.snapshot.meta.index or start > self.last_index + 1:
            raise ValueError(
                f"append at {start} does not fit log ({self.first_index}, {self.last_index})"
            )
        for a, b in itertools.pairwise(entries):
            if b.index != a.index + 1 or b.term < a.term:
                raise ValueError("entries are not contiguous or their terms decrease")
        prev_term = self.term_at(start - 1)
        if prev_term is not None and entries[0].term < prev_term:
            raise ValueError("entry terms would decrease")
        del self._entries[start - self.snapshot.meta.index - 1 :]
        self._entries.extend(entries)

    def compact(self, snapshot: Snapshot) -> None:
        """Drop the entries up to `snapshot.meta.index`, which we hold, and keep the snapshot."""
        index = snapshot.meta.index
        if not self.snapshot.meta.index < index <= self.last_index:
            raise ValueError(f"cannot compact at {index}")
        del self._entries[: index - self.snapshot.meta.index]
        self.snapshot = snapshot

    def restore(self, snapshot: Snapshot) -> None:
        """Replace the whole log with `snapshot` (Raft §7: a follower discards its entire log)."""
        self.snapshot = snapshot
        self._entries = []

    def snapshot_meta(self) -> SnapshotMeta:
        return self.snapshot.meta

    def entries(self) -> tuple[Entry, ...]:
        return tuple(self._entries)
