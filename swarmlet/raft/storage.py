"""Durable storage of the Raft log, hard state and snapshots in one directory: `RaftStorage`, what
the driver opens, saves each Ready through and compacts.

Owns `<data-dir>/raft/`; knows nothing of the Raft rules beyond log indexes and terms, and
nothing of trio: every call blocks on file I/O, and the driver calls it through
`raft.disk_thread`. One `RaftStorage` per directory and per process: an exclusive `flock` on
`LOCK` keeps a second agent out. The bytes of each file are `disk_format`'s; reading the directory
back at open, and repairing it, is `recovery`'s.

Invariants of the write path (what `recovery` relies on):
- A save is durable before it returns, in this order: a received snapshot (temp file, fsync,
  rename, directory fsync) before any entry it covers is deleted; entries (fdatasync of each
  segment written) before the hard state that commits them; a new segment's name (directory fsync)
  before the hard state.
- A segment is fdatasynced before the next one is created, so only the last can end in a torn
  record.

Decisions, and why:
- Suffix overwrite REWRITES instead of appending a truncation marker: delete the segments after the
  one holding the first overwritten index (fsync the directory), `ftruncate` that segment at the
  entry's offset (fsync, so no write can land before the cut), then append. Overwrites are rare
  (only after a leader change), and it keeps the load rule strict: an index out of sequence is
  corruption.
- The hard state is written with temp file + fsync + rename + directory fsync (as snapshots), and
  only when it changed. A save that changes both entries and hard state thus costs three fsyncs
  (log, hardstate.tmp, directory); a flip in the file is an error, never a silent rollback of a
  vote.
- A received snapshot (`save(snapshot=...)`) follows Raft §7: if the log holds an entry at the
  snapshot's index with the snapshot's term, the entries after it are kept; otherwise (beyond the
  end, or a different term there) the whole log is discarded. `recovery` applies the same rule on
  open.
- Snapshots: the newest two files are kept, so a corrupt newest one can be moved aside by hand.
- The vote floor (`recovery` writes it when it cuts a torn tail; `vote_floor` reports it to the
  driver, which hands it to the core) is deleted by the save that takes the log past it. That
  deletion is not fsynced: if a crash undoes it, the floor comes back, which only delays votes.
- An OSError while writing leaves the files in an unknown state (and a failed fsync cannot be
  retried): the storage refuses every later call; the driver must stop the node and reopen.
- Encryption at rest (issue #18): opened with a `cipher` (the node's data key,
  `swarmlet.security.at_rest`), every record it writes has its body sealed (`disk_format`), and
  every sealed record it reads is opened at open (and at each re-load), so a wrong key, an altered
  or a moved record stops the open with `StorageCorruptError`, before Raft sees anything. Old
  plaintext records are still read and are NOT rewritten: they go with the segments a snapshot
  compacts away (a snapshot is written sealed), so a log written before encryption becomes
  sealed through normal compaction. A sealed record read without a cipher is refused.
"""

from __future__ import annotations

import array
import fcntl
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from swarmlet.errors import RemoteProtocolError, StorageCorruptError, UsageError
from swarmlet.raft.disk_format import (
    HARD_STATE_NAME,
    HEADER_BYTES,
    LOCK_NAME,
    SNAPSHOT_RE,
    VOTE_FLOOR_NAME,
    RecordCipher,
    encode_entry,
    encode_hard_state,
    encode_snapshot,
    is_sealed,
    open_entry,
    open_snapshot,
    segment_name,
    snapshot_name,
)
from swarmlet.raft.recovery import (
    Loaded,
    Segment,
    floor_reached,
    fsync_dir,
    numbered_files,
    recover,
    write_atomic,
)
from swarmlet.raft.types import Entry, HardState, Snapshot, SnapshotMeta, VoteFloor

DEFAULT_SEGMENT_BYTES = 16 * 1024 * 1024  # roll to a new segment once the current one reaches this
DEFAULT_MAX_RECORD_BYTES = 64 * 1024 * 1024  # largest log record accepted, on write and on read
KEEP_SNAPSHOTS = 2  # the newest snapshot and the one before it


@dataclass(frozen=True, slots=True)
class StorageStats:
    """For observability. `first_index` is the first index the log can return (snapshot + 1)."""

    segments: int
    log_bytes: int
    first_index: int
    last_index: int
    snapshot_index: int


class RaftStorage:
    """The Raft log, hard state and snapshots of one node. Create with `RaftStorage.open`."""

    def __init__(
        self,
        dirpath: Path,
        lock_fd: int,
        loaded: Loaded,
        *,
        segment_bytes: int,
        max_record_bytes: int,
        cipher: RecordCipher | None = None,
    ) -> None:
        self._dir = dirpath
        self._cipher = cipher
        self._lock_fd: int | None = lock_fd
        self._segment_bytes = segment_bytes
        self._max_record_bytes = max_record_bytes
        self._hard_state = loaded.hard_state
        self._snapshot_meta = loaded.snapshot.meta
        self._segments = loaded.segments
        self._vote_floor = loaded.vote_floor
        self._loaded: Loaded | None = loaded  # handed out by the first load(), then dropped
        self._active_fd: int | None = None  # O_APPEND descriptor of the last segment
        self._failed: BaseException | None = None

    # -- opening and loading ------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
        cipher: RecordCipher | None = None,
    ) -> RaftStorage:
        """Open (creating if needed) the raft directory `path`, lock it, and recover it: remove
        temp files, cut a torn tail off the last segment (with a warning), drop segments the
        snapshot covers. Raises `StorageCorruptError` for damage that could lose committed data,
        and for a sealed record that does not open with `cipher` (or is read without one)."""
        dirpath = Path(path)
        try:
            dirpath.mkdir(parents=True)
        except FileExistsError:
            pass
        else:
            fsync_dir(dirpath.parent)  # its name as durable as the first vote saved in it
        lock_fd = os.open(dirpath / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(lock_fd)
            raise UsageError(
                f"{dirpath} is in use by another process (it holds the lock on {LOCK_NAME}); "
                "stop it or use another data directory"
            ) from None
        try:
            loaded = _opened(dirpath, recover(dirpath, max_record_bytes), cipher)
        except BaseException:
            os.close(lock_fd)
            raise
        return cls(
            dirpath,
            lock_fd,
            loaded,
            segment_bytes=segment_bytes,
            max_record_bytes=max_record_bytes,
            cipher=cipher,
        )

    def load(self) -> tuple[HardState, Snapshot, list[Entry]]:
        """(hard state, snapshot, entries after the snapshot). Before any save() or compact(), the
        first call returns what open() read; otherwise it reads the directory again."""
        self._check_usable()
        loaded = self._loaded
        self._loaded = None
        if loaded is None:
            self._close_active()
            loaded = _opened(self._dir, recover(self._dir, self._max_record_bytes), self._cipher)
            self._segments = loaded.segments
            self._hard_state = loaded.hard_state
            self._snapshot_meta = loaded.snapshot.meta
            self._vote_floor = loaded.vote_floor
        return loaded.hard_state, loaded.snapshot, loaded.entries

    # -- queries ----------------------------------------------------------------------------

    @property
    def snapshot_index(self) -> int:
        return self._snapshot_meta.index

    @property
    def last_index(self) -> int:
        """The index of the last entry, or the snapshot's index if the log has none after it."""
        last = self._segments[-1].last_index if self._segments else 0
        return max(last, self._snapshot_meta.index)

    @property
    def vote_floor(self) -> VoteFloor:
        """What the log may have held before open cut a torn tail off it, while the log is not
        that far again (`VoteFloor()` otherwise): the Raft core's `vote_floor` (see recovery)."""
        return self._vote_floor

    def term_at(self, index: int) -> int | None:
        """The term of the entry at `index` (the snapshot's term at its index; 0 at index 0), or
        None if the storage does not know it."""
        if index == self._snapshot_meta.index:
            return self._snapshot_meta.term
        if index == 0:
            return 0
        for seg in reversed(self._segments):
            if seg.first_index <= index:
                return seg.terms[index - seg.first_index] if index <= seg.last_index else None
        return None

    def stats(self) -> StorageStats:
        return StorageStats(
            segments=len(self._segments),
            log_bytes=sum(seg.size_bytes for seg in self._segments),
            first_index=self._snapshot_meta.index + 1,
            last_index=self.last_index,
            snapshot_index=self._snapshot_meta.index,
        )

    # -- writing ----------------------------------------------------------------------------

    def save(
        self,
        hard_state: HardState | None,
        entries: Sequence[Entry] = (),
        snapshot: Snapshot | None = None,
    ) -> None:
        """Persist one Ready, durably, before returning: first `snapshot` (received from the
        leader; Raft §7), then `entries` (which overwrite the log from entries[0].index on), then
        `hard_state` (None or unchanged: not written). Invalid input (a bug of the caller) raises
        ValueError before anything is written. An empty `Snapshot()` (index 0) counts as None.
        Not thread-safe: the driver makes one call at a time."""
        self._check_usable()
        if snapshot is not None and snapshot.meta.index == 0:
            snapshot = None
        keep_log = snapshot is None or self._log_matches(snapshot.meta)
        if snapshot is not None:
            self._check_snapshot_index(snapshot.meta)
        snap_index = snapshot.meta.index if snapshot is not None else self._snapshot_meta.index
        log_last = self.last_index if keep_log else snap_index
        records = self._check_entries(entries, snap_index, max(log_last, snap_index), snapshot)
        if entries:
            log_last = entries[-1].index
        write_hs = hard_state is not None and hard_state != self._hard_state
        if hard_state is not None and write_hs:
            if hard_state.term < self._hard_state.term:
                raise ValueError(
                    f"term goes back from {self._hard_state.term} to {hard_state.term}"
                )
            if hard_state.commit > max(log_last, snap_index):
                raise ValueError(f"commit {hard_state.commit} is beyond the log's end {log_last}")
        self._loaded = None  # load() must now read the directory
        try:
            if snapshot is not None:
                self._install_snapshot(snapshot, keep_log=keep_log)
            created_segment = False
            if entries:
                if entries[0].index <= self.last_index:
                    self._truncate_from(entries[0].index)
                created_segment = self._append(entries, records)
            if hard_state is not None and write_hs:
                if created_segment:  # the new segment's name is durable before the commit index
                    self._fsync_dir()
                self._write_atomic(HARD_STATE_NAME, encode_hard_state(hard_state))
                self._hard_state = hard_state
                self._fsync_dir()
            elif created_segment:
                self._fsync_dir()
            self._maybe_lift_vote_floor()
        except OSError as exc:
            self._failed = exc
            raise

    def compact(self, snapshot: Snapshot) -> None:
        """Persist `snapshot` (made by the local state machine at an index the log holds), then
        delete the segments holding only entries <= its index."""
        self._check_usable()
        meta = snapshot.meta
        self._check_snapshot_index(meta)
        if meta.index > self.last_index:
            raise ValueError(
                f"cannot compact at {meta.index}: the log ends at {self.last_index} (a snapshot "
                "from the leader goes through save(snapshot=...))"
            )
        if self.term_at(meta.index) != meta.term:
            raise ValueError(
                f"snapshot term {meta.term} differs from the log's term "
                f"{self.term_at(meta.index)} at index {meta.index}"
            )
        self._loaded = None
        try:
            self._install_snapshot(snapshot, keep_log=True)
        except OSError as exc:
            self._failed = exc
            raise

    def close(self) -> None:
        """Release the files and the lock. Idempotent."""
        self._close_active()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> RaftStorage:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- internals --------------------------------------------------------------------------

    def _maybe_lift_vote_floor(self) -> None:
        floor = self._vote_floor
        if floor.index == 0:
            return
        last = self.last_index
        if floor_reached(last, self.term_at(last) or 0, floor):
            (self._dir / VOTE_FLOOR_NAME).unlink(missing_ok=True)
            self._vote_floor = VoteFloor()

    def _check_usable(self) -> None:
        if self._lock_fd is None:
            raise RuntimeError(f"raft storage {self._dir} is closed")
        if self._failed is not None:
            raise RuntimeError(
                f"raft storage {self._dir} failed earlier ({self._failed}); reopen it"
            ) from self._failed

    def _check_snapshot_index(self, meta: SnapshotMeta) -> None:
        if meta.index < 1 or meta.term < 1:
            raise ValueError(f"snapshot index {meta.index} and term {meta.term} must be >= 1")
        if meta.index < self._snapshot_meta.index:
            raise ValueError(
                f"snapshot at {meta.index} is older than the stored one at "
                f"{self._snapshot_meta.index}"
            )

    def _log_matches(self, meta: SnapshotMeta) -> bool:
        # Raft §7: keep the entries after the snapshot only if the log has its last entry.
        return meta.index <= self.last_index and self.term_at(meta.index) == meta.term

    def _check_entries(
        self,
        entries: Sequence[Entry],
        snap_index: int,
        log_last: int,
        snapshot: Snapshot | None,
    ) -> list[bytes]:
        if not entries:
            return []
        first = entries[0].index
        if not snap_index < first <= log_last + 1:
            raise ValueError(
                f"entries start at {first}; they must start in {snap_index + 1}..{log_last + 1}"
            )
        if first - 1 == snap_index and snapshot is not None:
            prev_term = snapshot.meta.term
        else:
            prev_term = self.term_at(first - 1) or 0
        records = []
        for expected, entry in enumerate(entries, start=first):
            if entry.index != expected:
                raise ValueError(f"entries are not contiguous: {entry.index} after {expected - 1}")
            if entry.term < max(prev_term, 1):
                raise ValueError(f"entry {entry.index}: term {entry.term} below {prev_term}")
            prev_term = entry.term
            record = encode_entry(entry, self._cipher)
            if len(record) - HEADER_BYTES > self._max_record_bytes:
                raise ValueError(f"entry {entry.index} exceeds {self._max_record_bytes} bytes")
            records.append(record)
        return records

    def _install_snapshot(self, snapshot: Snapshot, *, keep_log: bool) -> None:
        index = snapshot.meta.index
        self._write_atomic(snapshot_name(index), encode_snapshot(snapshot, self._cipher))
        self._fsync_dir()  # the snapshot is durable before any entry it covers is deleted
        self._snapshot_meta = snapshot.meta
        if keep_log:
            covered = 0
            while covered + 1 < len(self._segments):
                if self._segments[covered + 1].first_index > index + 1:
                    break
                covered += 1
            doomed = self._segments[:covered]
            del self._segments[:covered]
        else:
            self._close_active()
            doomed = self._segments[::-1]
            self._segments.clear()
        # Covered segments go oldest first, a discarded log newest first: a crash between two
        # unlinks leaves a log recovery opens (one that starts at or below the snapshot's next
        # index; a discarded log's remains are found not to hold the snapshot's entry and are
        # discarded again), never one with a gap after the snapshot.
        for seg in doomed:
            seg.path.unlink()
        for _, old in numbered_files(self._dir, SNAPSHOT_RE)[:-KEEP_SNAPSHOTS]:
            old.unlink()
        self._fsync_dir()

    def _truncate_from(self, index: int) -> None:
        """Drop entries >= index (index in the log, after the snapshot)."""
        self._close_active()
        pos = max(i for i, seg in enumerate(self._segments) if seg.first_index <= index)
        doomed = self._segments[pos + 1 :]
        for seg in reversed(doomed):
            seg.path.unlink()
        if doomed:
            self._fsync_dir()  # no later segment can reappear after the cut below
        del self._segments[pos + 1 :]
        seg = self._segments[pos]
        keep = index - seg.first_index
        offset = seg.offsets[keep]
        fd = os.open(seg.path, os.O_WRONLY | os.O_APPEND)
        self._active_fd = fd
        os.ftruncate(fd, offset)
        os.fdatasync(fd)  # the cut is durable before anything is appended after it
        del seg.offsets[keep:]
        del seg.terms[keep:]
        seg.size_bytes = offset

    def _append(self, entries: Sequence[Entry], records: list[bytes]) -> bool:
        """Append, rolling segments; fsync every segment written. True if a segment was created."""
        created = False
        pending = bytearray()
        for entry, record in zip(entries, records, strict=True):
            seg = self._segments[-1] if self._segments else None
            if seg is None or (seg.size_bytes >= self._segment_bytes and len(seg.offsets) > 0):
                if pending:
                    self._write_active(pending)
                    pending.clear()
                self._close_active()  # after the fsync in _write_active: sealed before the next
                path = self._dir / segment_name(entry.index)
                self._active_fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                seg = Segment(entry.index, path, array.array("Q"), array.array("Q"), 0)
                self._segments.append(seg)
                created = True
            elif self._active_fd is None:
                self._active_fd = os.open(seg.path, os.O_WRONLY | os.O_APPEND)
            seg.offsets.append(seg.size_bytes)
            seg.terms.append(entry.term)
            seg.size_bytes += len(record)
            pending += record
        if pending:
            self._write_active(pending)
        return created

    def _write_active(self, data: bytearray) -> None:
        assert self._active_fd is not None
        view = memoryview(data)
        while view:
            written = os.write(self._active_fd, view)
            view = view[written:]
        os.fdatasync(self._active_fd)

    def _close_active(self) -> None:
        if self._active_fd is not None:
            fd, self._active_fd = self._active_fd, None
            os.close(fd)

    def _write_atomic(self, name: str, data: bytes) -> None:
        """Write temp, fsync, rename over `name`. The caller fsyncs the directory."""
        write_atomic(self._dir, name, data)

    def _fsync_dir(self) -> None:
        fsync_dir(self._dir)


def _opened(dirpath: Path, loaded: Loaded, cipher: RecordCipher | None) -> Loaded:
    """`loaded` with every sealed body opened; StorageCorruptError if one does not open."""
    snapshot = loaded.snapshot
    where = f"raft storage {dirpath}"
    try:
        if is_sealed(snapshot.data):
            what = f"the snapshot at index {snapshot.meta.index}"
            if cipher is None:
                raise StorageCorruptError(f"{where}: {what} is encrypted and no data key was given")
            snapshot = open_snapshot(snapshot, cipher)
        entries = []
        for entry in loaded.entries:
            if is_sealed(entry.data):
                what = f"the entry at index {entry.index} (term {entry.term})"
                if cipher is None:
                    raise StorageCorruptError(
                        f"{where}: {what} is encrypted and no data key was given"
                    )
                entry = open_entry(entry, cipher)
            entries.append(entry)
    except RemoteProtocolError:
        raise StorageCorruptError(
            f"{where}: {what} does not open with this node's data key: it was altered or moved "
            "from another place in the log, or the data key file is not this directory's; "
            "restore the data dir from a backup, or remove it and join this node again"
        ) from None
    return Loaded(loaded.hard_state, snapshot, entries, loaded.segments, loaded.vote_floor)
