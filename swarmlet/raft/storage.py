"""Durable storage of the Raft log, hard state and snapshots in one directory.

Owns `<data-dir>/raft/`; knows nothing of the Raft rules beyond log indexes and terms, and
nothing of trio: every call blocks on file I/O, and the driver calls it through
`trio.to_thread.run_sync`. One `RaftStorage` per directory and per process: an exclusive `flock` on
`LOCK` keeps a second agent out.

Layout::

    LOCK                              held (flock) while open
    hardstate                         one record: [term, vote, commit]
    snapshot-<index:020d>.snap        one record: [index, term, voters, learners, data]
    log-<first-index:020d>.seg        records, one per entry: [0, term, index, kind, data]
    *.tmp                             an atomic write in progress; removed on open

Record: ``[u32 length][u32 crc32 of payload][payload]`` (big-endian), payload msgpack
(``use_bin_type=True``, read with ``raw=False, strict_map_key=True``); never pickle. A length of 0,
above `max_record_bytes` or past the end of the file is rejected before anything is read or
allocated.

Invariants on disk (checked on open; `StorageCorruptError` when broken):
- Segments sorted by first index hold contiguous entries: a segment's first record has the index in
  its name, each record the next index, the next segment starts right after; terms never decrease.
- Only the last segment may end in a torn record: a segment is fsynced before the next is created.
- The snapshot covers everything before the first live segment; entries <= snapshot index that are
  still in the oldest segment (the one straddling the snapshot) are skipped on load.
- `hardstate.commit <= max(snapshot index, last log index)`: entries are fsynced before the hard
  state that commits them.

Decisions (where the issue left the choice to us):
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
  end, or a different term there) the whole log is discarded. The same rule is applied on open, so a
  crash between writing the snapshot and deleting the log recovers the same way.
- Snapshots: the newest two files are kept. If the newest is corrupt, open fails (a snapshot file
  appears only by rename after fsync, so damage is not a torn write, and the newer snapshot may have
  been acknowledged); the message names the older file: moving the corrupt one aside falls back to
  it, and the load then succeeds only if the log still covers the entries after the older snapshot.
- A corrupt record with a valid record after it (in the same or a later segment) is corruption, even
  though a crash between writes of one unfinished save could in theory leave such a hole when pages
  are written back out of order: we cannot tell the two apart, and stopping is the safe side.
- An OSError while writing leaves the files in an unknown state (and a failed fsync cannot be
  retried): the storage refuses every later call; the driver must stop the node and reopen.
"""

from __future__ import annotations

import array
import fcntl
import logging
import os
import re
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import msgpack

from swarmlet.errors import StorageCorruptError, UsageError
from swarmlet.raft.types import ConfState, Entry, EntryKind, HardState, Snapshot, SnapshotMeta

logger = logging.getLogger(__name__)

DEFAULT_SEGMENT_BYTES = 16 * 1024 * 1024  # roll to a new segment once the current one reaches this
DEFAULT_MAX_RECORD_BYTES = 64 * 1024 * 1024  # largest log record accepted, on write and on read
KEEP_SNAPSHOTS = 2  # the newest snapshot and the one before it
_MAX_U32 = 0xFFFFFFFF

_HEADER = struct.Struct(">II")  # payload length, crc32 of payload
HEADER_BYTES = _HEADER.size
_ENTRY_TAG = 0  # first element of a log record's payload; other values are reserved
_SEGMENT_RE = re.compile(r"^log-(\d{20})\.seg$")
_SNAPSHOT_RE = re.compile(r"^snapshot-(\d{20})\.snap$")
_HARD_STATE = "hardstate"
_LOCK = "LOCK"
_TMP_SUFFIX = ".tmp"
_ADVICE = (
    "Stop this agent; restore the raft directory from a backup, or remove it and rejoin this node "
    "to the cluster so that it receives the log from the leader."
)


@dataclass(frozen=True, slots=True)
class StorageStats:
    """For observability. `first_index` is the first index the log can return (snapshot + 1)."""

    segments: int
    log_bytes: int
    first_index: int
    last_index: int
    snapshot_index: int


class _BadRecordError(Exception):
    """No valid record at an offset; the message says why."""


def encode_record(payload: bytes) -> bytes:
    """Frame `payload` as ``[u32 length][u32 crc32][payload]``."""
    return _HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def read_record(buf: bytes, offset: int, max_record_bytes: int) -> tuple[memoryview, int]:
    """The payload of the record at `offset` and the offset after it; `_BadRecordError` if there is
    no valid record there. Nothing is allocated before the length is known to fit in `buf`."""
    remaining = len(buf) - offset
    if remaining < HEADER_BYTES:
        raise _BadRecordError(f"partial record header ({remaining} bytes)")
    length, crc = _HEADER.unpack_from(buf, offset)
    if length == 0 or length > max_record_bytes:
        raise _BadRecordError(f"record length {length} out of bounds")
    if length > remaining - HEADER_BYTES:
        raise _BadRecordError(f"record length {length} runs past the end of the file")
    start = offset + HEADER_BYTES
    payload = memoryview(buf)[start : start + length]
    if zlib.crc32(payload) != crc:
        raise _BadRecordError("checksum mismatch")
    return payload, start + length


def _find_valid_record(buf: bytes, start: int, max_record_bytes: int) -> int | None:
    """The first offset >= `start` where a valid record begins (used to tell a torn tail from a
    hole in the middle). Linear in the bytes left; runs only when a record is bad."""
    for offset in range(start, len(buf) - HEADER_BYTES + 1):
        length = int.from_bytes(buf[offset : offset + 4], "big")
        if 0 < length <= min(max_record_bytes, len(buf) - offset - HEADER_BYTES):
            try:
                read_record(buf, offset, max_record_bytes)
            except _BadRecordError:
                continue
            return offset
    return None


def _pack(obj: object) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def _unpack(payload: memoryview | bytes) -> Any:
    try:
        return msgpack.unpackb(payload, raw=False, strict_map_key=True)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise ValueError(f"undecodable payload: {exc}") from exc


def _is_int(value: object, minimum: int) -> bool:
    return type(value) is int and value >= minimum


def encode_entry(entry: Entry) -> bytes:
    return encode_record(_pack([_ENTRY_TAG, entry.term, entry.index, int(entry.kind), entry.data]))


def decode_entry(payload: memoryview | bytes) -> Entry:
    obj = _unpack(payload)
    if not (isinstance(obj, list) and len(obj) == 5 and obj[0] == _ENTRY_TAG):
        raise ValueError("not an entry record")
    _, term, index, kind, data = obj
    if not (_is_int(term, 1) and _is_int(index, 1) and type(kind) is int):
        raise ValueError("bad term, index or kind")
    if not isinstance(data, bytes):
        raise ValueError("entry data is not bytes")
    return Entry(term=term, index=index, kind=EntryKind(kind), data=data)


def _encode_hard_state(hs: HardState) -> bytes:
    return encode_record(_pack([hs.term, hs.vote, hs.commit]))


def _decode_hard_state(payload: memoryview) -> HardState:
    obj = _unpack(payload)
    if not (isinstance(obj, list) and len(obj) == 3):
        raise ValueError("not a hard state record")
    term, vote, commit = obj
    if not (_is_int(term, 0) and _is_int(commit, 0) and (vote is None or isinstance(vote, str))):
        raise ValueError("bad term, vote or commit")
    return HardState(term=term, vote=vote, commit=commit)


def _encode_snapshot(snap: Snapshot) -> bytes:
    meta = snap.meta
    conf = [list(meta.conf.voters), list(meta.conf.learners)]
    return encode_record(_pack([meta.index, meta.term, *conf, snap.data]))


def _decode_snapshot(payload: memoryview) -> Snapshot:
    obj = _unpack(payload)
    if not (isinstance(obj, list) and len(obj) == 5):
        raise ValueError("not a snapshot record")
    index, term, voters, learners, data = obj
    ok = _is_int(index, 1) and _is_int(term, 1) and isinstance(data, bytes)
    ok = ok and all(
        isinstance(ids, list) and all(isinstance(i, str) for i in ids) for ids in (voters, learners)
    )
    if not ok:
        raise ValueError("bad snapshot fields")
    conf = ConfState(voters=tuple(voters), learners=tuple(learners))
    return Snapshot(meta=SnapshotMeta(index=index, term=term, conf=conf), data=data)


def _segment_name(first_index: int) -> str:
    return f"log-{first_index:020d}.seg"


def _snapshot_name(index: int) -> str:
    return f"snapshot-{index:020d}.snap"


@dataclass(slots=True)
class _Segment:
    """What the storage remembers of one segment file: where each entry starts and its term."""

    first_index: int
    path: Path
    offsets: array.array[int]
    terms: array.array[int]
    size_bytes: int

    @property
    def last_index(self) -> int:
        return self.first_index + len(self.offsets) - 1


@dataclass(slots=True)
class _Loaded:
    hard_state: HardState
    snapshot: Snapshot
    entries: list[Entry]
    segments: list[_Segment]


def _corrupt(path: Path, offset: int | None, what: str) -> StorageCorruptError:
    where = f"{path}" if offset is None else f"{path} at offset {offset}"
    return StorageCorruptError(f"{where}: {what}. {_ADVICE}")


def _read_hard_state(path: Path) -> HardState:
    if not path.exists():
        return HardState()
    buf = path.read_bytes()
    try:
        payload, end = read_record(buf, 0, _MAX_U32)
        if end != len(buf):
            raise _BadRecordError(f"{len(buf) - end} bytes after the record")
        return _decode_hard_state(payload)
    except (_BadRecordError, ValueError) as exc:
        raise _corrupt(path, None, f"hard state (term, vote, commit) is unreadable: {exc}") from exc


def _list(dirpath: Path, pattern: re.Pattern[str]) -> list[tuple[int, Path]]:
    found = []
    for child in dirpath.iterdir():
        match = pattern.match(child.name)
        if match:
            found.append((int(match.group(1)), child))
    return sorted(found)


def _read_snapshot(dirpath: Path) -> Snapshot:
    snapshots = _list(dirpath, _SNAPSHOT_RE)
    if not snapshots:
        return Snapshot()
    index, path = snapshots[-1]
    buf = path.read_bytes()
    try:
        payload, end = read_record(buf, 0, _MAX_U32)
        if end != len(buf):
            raise _BadRecordError(f"{len(buf) - end} bytes after the record")
        snap = _decode_snapshot(payload)
        if snap.meta.index != index:
            raise ValueError(f"holds index {snap.meta.index}, not the one in its name")
    except (_BadRecordError, ValueError) as exc:
        older = (
            f" Moving it aside falls back to {snapshots[-2][1].name}, which works only if the log "
            "still holds the entries after it."
            if len(snapshots) > 1
            else ""
        )
        raise _corrupt(path, None, f"snapshot is unreadable: {exc}.{older}") from exc
    return snap


class RaftStorage:
    """The Raft log, hard state and snapshots of one node. Create with `RaftStorage.open`."""

    def __init__(
        self,
        dirpath: Path,
        lock_fd: int,
        loaded: _Loaded,
        *,
        segment_bytes: int,
        max_record_bytes: int,
    ) -> None:
        self._dir = dirpath
        self._lock_fd: int | None = lock_fd
        self._segment_bytes = segment_bytes
        self._max_record_bytes = max_record_bytes
        self._hard_state = loaded.hard_state
        self._snapshot_meta = loaded.snapshot.meta
        self._segments = loaded.segments
        self._loaded: _Loaded | None = loaded  # handed out by the first load(), then dropped
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
    ) -> RaftStorage:
        """Open (creating if needed) the raft directory `path`, lock it, and recover it: remove
        temp files, cut a torn tail off the last segment (with a warning), drop segments the
        snapshot covers. Raises `StorageCorruptError` for damage that could lose committed data."""
        dirpath = Path(path)
        dirpath.mkdir(parents=True, exist_ok=True)
        lock_fd = os.open(dirpath / _LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(lock_fd)
            raise UsageError(
                f"{dirpath} is in use by another process (it holds the lock on {_LOCK}); stop it "
                "or use another data directory"
            ) from None
        try:
            loaded = _recover(dirpath, max_record_bytes)
        except BaseException:
            os.close(lock_fd)
            raise
        return cls(
            dirpath,
            lock_fd,
            loaded,
            segment_bytes=segment_bytes,
            max_record_bytes=max_record_bytes,
        )

    def load(self) -> tuple[HardState, Snapshot, list[Entry]]:
        """(hard state, snapshot, entries after the snapshot). Before any save() or compact(), the
        first call returns what open() read; otherwise it reads the directory again."""
        self._check_usable()
        loaded = self._loaded
        self._loaded = None
        if loaded is None:
            self._close_active()
            loaded = _recover(self._dir, self._max_record_bytes)
            self._segments = loaded.segments
            self._hard_state = loaded.hard_state
            self._snapshot_meta = loaded.snapshot.meta
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
                self._write_atomic(_HARD_STATE, _encode_hard_state(hard_state))
                self._hard_state = hard_state
                self._fsync_dir()
            elif created_segment:
                self._fsync_dir()
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
            record = encode_entry(entry)
            if len(record) - HEADER_BYTES > self._max_record_bytes:
                raise ValueError(f"entry {entry.index} exceeds {self._max_record_bytes} bytes")
            records.append(record)
        return records

    def _install_snapshot(self, snapshot: Snapshot, *, keep_log: bool) -> None:
        index = snapshot.meta.index
        self._write_atomic(_snapshot_name(index), _encode_snapshot(snapshot))
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
            doomed = list(self._segments)
            self._segments.clear()
        for seg in doomed:  # oldest first: what is left is always contiguous
            seg.path.unlink()
        for _, old in _list(self._dir, _SNAPSHOT_RE)[:-KEEP_SNAPSHOTS]:
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
                path = self._dir / _segment_name(entry.index)
                self._active_fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                seg = _Segment(entry.index, path, array.array("Q"), array.array("Q"), 0)
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
        tmp = self._dir / (name + _TMP_SUFFIX)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self._dir / name)

    def _fsync_dir(self) -> None:
        fd = os.open(self._dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _recover(dirpath: Path, max_record_bytes: int) -> _Loaded:
    """Read the directory and repair what a crash may leave; raise where committed data is lost.
    Every check runs before the first repair, so a failed open changes nothing but temp files."""
    for child in dirpath.iterdir():
        if child.name.endswith(_TMP_SUFFIX):
            logger.warning("raft storage: removing %s left by an interrupted atomic write", child)
            child.unlink()
    hard_state = _read_hard_state(dirpath / _HARD_STATE)
    snapshot = _read_snapshot(dirpath)
    snap_index = snapshot.meta.index
    listed = _list(dirpath, _SEGMENT_RE)
    base = max((i for i, (first, _) in enumerate(listed) if first <= snap_index + 1), default=None)
    if listed and base is None:
        first, path = listed[0]
        raise _corrupt(
            path,
            None,
            f"the log starts at index {first} but the snapshot ends at {snap_index}: "
            f"entries {snap_index + 1}..{first - 1} are missing",
        )
    obsolete = [path for _, path in listed[:base]]
    live = listed[base:] if base is not None else []

    segments: list[_Segment] = []
    entries: list[Entry] = []
    cut: tuple[Path, int, int, str] | None = None  # path, offset, bytes dropped, reason
    expected = live[0][0] if live else snap_index + 1
    last_term = 0
    for pos, (first, path) in enumerate(live):
        is_last = pos == len(live) - 1
        if first != expected:
            raise _corrupt(path, None, f"starts at index {first}, expected {expected} (a gap)")
        buf = path.read_bytes()
        seg = _Segment(first, path, array.array("Q"), array.array("Q"), len(buf))
        offset = 0
        while offset < len(buf):
            try:
                payload, after = read_record(buf, offset, max_record_bytes)
            except _BadRecordError as bad:
                later = _find_valid_record(buf, offset + 1, max_record_bytes)
                if later is not None or not is_last:
                    follows = f"offset {later}" if later is not None else "the next segment"
                    raise _corrupt(
                        path, offset, f"bad record ({bad}) with a valid record at {follows}"
                    ) from None
                cut = (path, offset, len(buf) - offset, str(bad))
                seg.size_bytes = offset
                break
            try:
                entry = decode_entry(payload)
            except ValueError as exc:
                raise _corrupt(path, offset, f"checksum ok but not a log entry: {exc}") from None
            if entry.index != expected:
                raise _corrupt(path, offset, f"holds index {entry.index}, expected {expected}")
            if entry.term < last_term:
                raise _corrupt(path, offset, f"term {entry.term} after term {last_term}")
            seg.offsets.append(offset)
            seg.terms.append(entry.term)
            if entry.index > snap_index:
                entries.append(entry)
            last_term = entry.term
            expected += 1
            offset = after
        if not is_last and not seg.offsets:
            raise _corrupt(path, None, "an empty segment before the last one")
        segments.append(seg)

    # Raft §7, as in save(): a log without the snapshot's last entry is discarded.
    log_last = expected - 1
    at_snap = next((s for s in segments if s.first_index <= snap_index <= s.last_index), None)
    reset = snap_index > 0 and (
        log_last < snap_index
        or (
            at_snap is not None
            and at_snap.terms[snap_index - at_snap.first_index] != snapshot.meta.term
        )
    )
    if reset:
        entries = []
    last_index = max(snap_index, entries[-1].index if entries else 0)
    if hard_state.commit > last_index:
        if cut is not None:
            path, offset, dropped, reason = cut
            what = (
                f"a torn tail ({reason}, {dropped} bytes) would cut the log to index {last_index}"
            )
            raise _corrupt(path, offset, f"{what}, below the commit index {hard_state.commit}")
        raise _corrupt(
            dirpath / _HARD_STATE,
            None,
            f"commit index {hard_state.commit} is beyond the last stored index {last_index}",
        )

    # Repairs: nothing below changes what the checks above accepted.
    dir_changed = False
    if cut is not None:
        path, offset, dropped, reason = cut
        logger.warning(
            "raft log %s: torn tail at offset %d (%s): dropped %d bytes",
            path,
            offset,
            reason,
            dropped,
        )
        fd = os.open(path, os.O_WRONLY)
        try:
            os.ftruncate(fd, offset)
            os.fdatasync(fd)
        finally:
            os.close(fd)
    for path in obsolete:
        logger.info("raft log: removing %s, covered by the snapshot at %d", path, snap_index)
        path.unlink()
        dir_changed = True
    if reset:
        logger.warning(
            "raft log %s: the log does not hold the snapshot's entry %d (term %d); discarding it",
            dirpath,
            snap_index,
            snapshot.meta.term,
        )
        for seg in segments:
            seg.path.unlink()
        segments = []
        dir_changed = True
    if dir_changed:
        fd = os.open(dirpath, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    return _Loaded(hard_state, snapshot, entries, segments)
