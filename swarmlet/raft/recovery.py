"""Reading the Raft directory back at open: the hard state, the newest snapshot and the log
segments, checked against each other, with the repairs a crash may call for (temp files removed, a
torn tail cut off the last segment, segments the snapshot covers deleted).

Invariants on disk (checked here; `StorageCorruptError` when broken):
- Segments sorted by first index hold contiguous entries: a segment's first record has the index in
  its name, each record the next index, the next segment starts right after; terms never decrease.
- Only the last segment may end in a torn record: a segment is fsynced before the next is created.
- The snapshot covers everything before the first live segment; entries <= snapshot index that are
  still in the oldest segment (the one straddling the snapshot) are skipped on load.
- `hardstate.commit <= max(snapshot index, last log index)`: entries are fsynced before the hard
  state that commits them.
- `votefloor`, when present, names what the log may have held before a tail was cut (see below);
  it is written, fsynced and renamed into place before the cut, so no crash loses it.

Every check runs before the first repair, so a failed open changes nothing but temp files. A cut
tail is fdatasynced, and the directory is fsynced after segments are deleted, before `recover`
returns.

Decisions, and why:
- Raft §7 on open, as `RaftStorage.save(snapshot=...)` does: a log that does not hold the
  snapshot's last entry (with its term) is discarded, so a crash between writing a received
  snapshot and deleting the log recovers the same way.
- Snapshots: only the newest file is read. If it is corrupt, open fails (a snapshot file appears
  only by rename after fsync, so damage is not a torn write, and the newer snapshot may have been
  acknowledged); the message names the older file: moving the corrupt one aside falls back to it,
  and the load then succeeds only if the log still covers the entries after the older snapshot.
- A torn tail is cut, but the node may have acknowledged the entry it held: a disk that reports
  an fsync done before the bytes are safe tears records that were acknowledged, and nothing on
  disk tells that apart from a write cut short before its fsync returned. So the cut also
  leaves a vote floor (`VoteFloor`): the torn record's index and term, with which the Raft core
  withholds its vote from any candidate whose log does not reach that far, until its own log
  does (see swarmlet.raft.core); `RaftStorage` then deletes the file. The term is read from the
  torn record's first bytes when they decode to the expected index (a torn write keeps the
  start of what it wrote, and the term is in its first dozen bytes); otherwise the hard state's
  term bounds it, a looser bound after elections that added no entry, which holds the floor
  longer. A torn record of a newer term than the hard state's leaves no floor: acknowledging an
  entry takes a save that left a hard state of its term on disk (this trusts the hard state,
  written with rename and fsyncs; a disk that loses it may also forget a vote, which no log
  rule can make up for). Floors of successive cuts merge into the later in Raft's order of logs
  (`later_floor`). The floor is exact when the disk lost only (part of) the last record, which
  is what a torn write leaves; a disk that drops whole records after it leaves nothing to count
  them by. An operator may delete `votefloor` to let the node vote at once, accepting that an
  acknowledged write may be lost.
- A corrupt record with a valid record after it (in the same or a later segment) is corruption, even
  though a crash between writes of one unfinished save could in theory leave such a hole when pages
  are written back out of order: we cannot tell the two apart, and stopping is the safe side.

Its warnings go to the "swarmlet.raft.storage" logger, the one operators watch for the storage.
It knows nothing of writing the log (that is `storage`'s), of the lock, or of trio: every call
blocks on file I/O.
"""

from __future__ import annotations

import array
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from swarmlet.errors import StorageCorruptError
from swarmlet.raft.disk_format import (
    HARD_STATE_NAME,
    SEGMENT_RE,
    SNAPSHOT_RE,
    TMP_SUFFIX,
    VOTE_FLOOR_NAME,
    BadRecordError,
    decode_entry,
    decode_hard_state,
    decode_snapshot,
    decode_vote_floor,
    encode_vote_floor,
    find_valid_record,
    peek_torn_entry,
    read_record,
    read_single_record,
)
from swarmlet.raft.types import Entry, HardState, Snapshot, VoteFloor

logger = logging.getLogger("swarmlet.raft.storage")

_ADVICE = (
    "Stop this agent; restore the raft directory from a backup, or remove it and rejoin this node "
    "to the cluster so that it receives the log from the leader."
)


@dataclass(slots=True)
class Segment:
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
class Loaded:
    """A recovered directory: what `RaftStorage.load` returns, and the segments it appends to."""

    hard_state: HardState
    snapshot: Snapshot
    entries: list[Entry]
    segments: list[Segment]
    vote_floor: VoteFloor  # VoteFloor() when nothing was lost, or the log is that far again


def numbered_files(dirpath: Path, pattern: re.Pattern[str]) -> list[tuple[int, Path]]:
    """The files of `dirpath` whose name matches `pattern`, with the index in their name, sorted."""
    found = []
    for child in dirpath.iterdir():
        match = pattern.match(child.name)
        if match:
            found.append((int(match.group(1)), child))
    return sorted(found)


def fsync_dir(dirpath: Path) -> None:
    fd = os.open(dirpath, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _corrupt(path: Path, offset: int | None, what: str) -> StorageCorruptError:
    where = f"{path}" if offset is None else f"{path} at offset {offset}"
    return StorageCorruptError(f"{where}: {what}. {_ADVICE}")


def _read_hard_state(path: Path) -> HardState:
    if not path.exists():
        return HardState()
    try:
        return decode_hard_state(read_single_record(path.read_bytes()))
    except (BadRecordError, ValueError) as exc:
        raise _corrupt(path, None, f"hard state (term, vote, commit) is unreadable: {exc}") from exc


def _read_vote_floor(path: Path) -> VoteFloor:
    if not path.exists():
        return VoteFloor()
    try:
        return decode_vote_floor(read_single_record(path.read_bytes()))
    except (BadRecordError, ValueError) as exc:
        raise _corrupt(
            path,
            None,
            f"vote floor is unreadable: {exc}. It records that this node lost entries it may have "
            "acknowledged; deleting it lets the node vote at once, at the risk of losing such a "
            "write",
        ) from exc


def floor_reached(last_index: int, last_term: int, floor: VoteFloor) -> bool:
    """Whether a log ending at (last_term, last_index) is past `floor` (the core's rule: it reached
    the index, or holds an entry of a newer term than any that was lost)."""
    return floor.index == 0 or last_index >= floor.index or last_term > floor.term


def later_floor(a: VoteFloor, b: VoteFloor) -> VoteFloor:
    """The floor that stands for both: the later in Raft's order of logs (§5.4.1: last term,
    then last index). A candidate at least as up to date as the later is as up to date as the
    other, and a log that reaches the later holds what either lost (see swarmlet.raft.core)."""
    if a.index == 0:
        return b
    if b.index == 0:
        return a
    return max(a, b, key=lambda f: (f.term, f.index))


def write_atomic(dirpath: Path, name: str, data: bytes) -> None:
    """Write temp, fsync, rename over `name`. The caller fsyncs the directory."""
    tmp = dirpath / (name + TMP_SUFFIX)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, dirpath / name)


def _read_snapshot(dirpath: Path) -> Snapshot:
    snapshots = numbered_files(dirpath, SNAPSHOT_RE)
    if not snapshots:
        return Snapshot()
    index, path = snapshots[-1]
    buf = path.read_bytes()
    try:
        snap = decode_snapshot(read_single_record(buf))
        if snap.meta.index != index:
            raise ValueError(f"holds index {snap.meta.index}, not the one in its name")
    except (BadRecordError, ValueError) as exc:
        older = (
            f" Moving it aside falls back to {snapshots[-2][1].name}, which works only if the log "
            "still holds the entries after it."
            if len(snapshots) > 1
            else ""
        )
        raise _corrupt(path, None, f"snapshot is unreadable: {exc}.{older}") from exc
    return snap


def recover(dirpath: Path, max_record_bytes: int) -> Loaded:
    """Read the directory and repair what a crash may leave; raise where committed data is lost.
    Every check runs before the first repair, so a failed open changes nothing but temp files."""
    for child in dirpath.iterdir():
        if child.name.endswith(TMP_SUFFIX):
            logger.warning("raft storage: removing %s left by an interrupted atomic write", child)
            child.unlink()
    hard_state = _read_hard_state(dirpath / HARD_STATE_NAME)
    stored_floor = _read_vote_floor(dirpath / VOTE_FLOOR_NAME)
    snapshot = _read_snapshot(dirpath)
    snap_index = snapshot.meta.index
    listed = numbered_files(dirpath, SEGMENT_RE)
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

    segments: list[Segment] = []
    entries: list[Entry] = []
    cut: tuple[Path, int, int, str] | None = None  # path, offset, bytes dropped, reason
    cut_index = 0  # the index of the torn record
    cut_term: int | None = None  # its term, if its first bytes say
    expected = live[0][0] if live else snap_index + 1
    last_term = 0
    for pos, (first, path) in enumerate(live):
        is_last = pos == len(live) - 1
        if first != expected:
            raise _corrupt(path, None, f"starts at index {first}, expected {expected} (a gap)")
        buf = path.read_bytes()
        seg = Segment(first, path, array.array("Q"), array.array("Q"), len(buf))
        offset = 0
        while offset < len(buf):
            try:
                payload, after = read_record(buf, offset, max_record_bytes)
            except BadRecordError as bad:
                later = find_valid_record(buf, offset + 1, max_record_bytes)
                if later is not None or not is_last:
                    follows = f"offset {later}" if later is not None else "the next segment"
                    raise _corrupt(
                        path, offset, f"bad record ({bad}) with a valid record at {follows}"
                    ) from None
                cut = (path, offset, len(buf) - offset, str(bad))
                cut_index = expected
                peeked = peek_torn_entry(buf, offset)
                if peeked is not None and peeked[1] == expected and peeked[0] >= last_term:
                    cut_term = peeked[0]
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

    # Raft §7, as in save(): a log without the snapshot's last entry is discarded. Where that
    # entry was in a segment already removed, a log that continues the snapshot has no entry
    # of an older term after it; the remains of a log whose discard a crash interrupted do
    # (`RaftStorage` removes its segments newest first, the one holding the snapshot's entry
    # last, but an older release removed them oldest first).
    log_last = expected - 1
    at_snap = next((s for s in segments if s.first_index <= snap_index <= s.last_index), None)
    reset = snap_index > 0 and (
        log_last < snap_index
        or (
            at_snap is not None
            and at_snap.terms[snap_index - at_snap.first_index] != snapshot.meta.term
        )
        or (at_snap is None and bool(entries) and entries[0].term < snapshot.meta.term)
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
            dirpath / HARD_STATE_NAME,
            None,
            f"commit index {hard_state.commit} is beyond the last stored index {last_index}",
        )

    log_last_term = entries[-1].term if entries else snapshot.meta.term
    floor = stored_floor
    if cut is not None and (cut_term is None or cut_term <= hard_state.term):
        # A torn record of a newer term than the hard state's was never acknowledged: an entry
        # is acknowledged only after a save that left a hard state of its term on disk.
        bound = max(hard_state.term, last_term, snapshot.meta.term)
        floor = later_floor(floor, VoteFloor(cut_index, bound if cut_term is None else cut_term))
    if floor_reached(last_index, log_last_term, floor):
        floor = VoteFloor()

    # Repairs: nothing below changes what the checks above accepted.
    dir_changed = False
    if floor != stored_floor:
        if floor.index:
            # Durable before the cut: a crash right after the cut must not forget the floor.
            write_atomic(dirpath, VOTE_FLOOR_NAME, encode_vote_floor(floor))
            fsync_dir(dirpath)
        else:
            logger.info("raft log %s: the log is past its vote floor again", dirpath)
            (dirpath / VOTE_FLOOR_NAME).unlink()
            dir_changed = True
    if cut is not None:
        path, offset, dropped, reason = cut
        logger.warning(
            "raft log %s: torn tail at offset %d (%s): dropped %d bytes",
            path,
            offset,
            reason,
            dropped,
        )
        if floor.index:
            logger.warning(
                "raft log %s: this node may have acknowledged entry %d (term <= %d) before the "
                "cut: it votes only for candidates whose log reaches it, until its own log does "
                "(delete %s to lift this, accepting that an acknowledged write may be lost)",
                dirpath,
                floor.index,
                floor.term,
                dirpath / VOTE_FLOOR_NAME,
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
        for seg in reversed(segments):  # newest first, as `RaftStorage` discards a log
            seg.path.unlink()
        segments = []
        dir_changed = True
    if dir_changed:
        fsync_dir(dirpath)
    return Loaded(hard_state, snapshot, entries, segments, floor)
