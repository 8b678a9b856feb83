"""Tests of the Raft log's durable storage: round trips, crash recovery, and a model-based property
test. Real files in tmp directories, real fsyncs; no sleeps."""

from __future__ import annotations

import logging
import os
import shutil
import struct
import tempfile
import tracemalloc
import zlib
from collections.abc import Callable
from pathlib import Path

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from swarmlet.errors import StorageCorruptError, UsageError
from swarmlet.raft import storage as storage_module
from swarmlet.raft.disk_format import (
    HEADER_BYTES,
    BadRecordError,
    encode_entry,
    read_record,
)
from swarmlet.raft.storage import RaftStorage
from swarmlet.raft.types import (
    ConfState,
    Entry,
    EntryKind,
    HardState,
    Snapshot,
    SnapshotMeta,
    VoteFloor,
)

LOGGER = "swarmlet.raft.storage"


def make_entries(first: int, last: int, term: int, size_bytes: int = 8) -> list[Entry]:
    return [
        Entry(term=term, index=i, data=(f"{i}:{term}:".encode() * size_bytes)[:size_bytes])
        for i in range(first, last + 1)
    ]


def make_snapshot(index: int, term: int, data: bytes = b"state") -> Snapshot:
    conf = ConfState(voters=("a", "b", "c"), learners=("w",))
    return Snapshot(meta=SnapshotMeta(index=index, term=term, conf=conf), data=data)


def reopen(path: Path, **kwargs: int) -> tuple[HardState, Snapshot, list[Entry]]:
    with RaftStorage.open(path, **kwargs) as storage:
        return storage.load()


def segments(path: Path) -> list[Path]:
    return sorted(path.glob("log-*.seg"))


# -- round trips ------------------------------------------------------------------------------


def test_fresh_directory_loads_empty_state(tmp_path: Path) -> None:
    assert reopen(tmp_path / "raft") == (HardState(), Snapshot(), [])


def test_saved_entries_hard_state_and_snapshot_survive_reopen(tmp_path: Path) -> None:
    log = [*make_entries(1, 3, term=1), Entry(term=2, index=4, kind=EntryKind.CONF_CHANGE)]
    with RaftStorage.open(tmp_path) as storage:
        storage.save(HardState(term=2, vote="node-b", commit=4), log)
        storage.compact(make_snapshot(2, 1))
    hard_state, snapshot, entries = reopen(tmp_path)
    assert hard_state == HardState(term=2, vote="node-b", commit=4)
    assert snapshot == make_snapshot(2, 1)
    assert entries == log[2:]


def test_unchanged_or_missing_hard_state_is_not_rewritten(tmp_path: Path) -> None:
    with RaftStorage.open(tmp_path) as storage:
        storage.save(None, make_entries(1, 2, term=1))
        assert not (tmp_path / "hardstate").exists()
        storage.save(HardState(term=1, commit=1), [])
        inode = (tmp_path / "hardstate").stat().st_ino
        storage.save(HardState(term=1, commit=1), make_entries(3, 3, term=1))
        assert (tmp_path / "hardstate").stat().st_ino == inode


def test_entries_overwrite_a_suffix_across_segments(tmp_path: Path) -> None:
    with RaftStorage.open(tmp_path, segment_bytes=100) as storage:
        storage.save(HardState(term=1, commit=3), make_entries(1, 20, term=1))
        assert len(segments(tmp_path)) > 3
        storage.save(HardState(term=2, commit=3), make_entries(5, 7, term=2))
        assert storage.last_index == 7
    _, _, entries = reopen(tmp_path, segment_bytes=100)
    assert entries == make_entries(1, 4, term=1) + make_entries(5, 7, term=2)


def test_overwrite_at_the_first_entry_of_a_segment_reuses_it(tmp_path: Path) -> None:
    with RaftStorage.open(tmp_path, segment_bytes=1) as storage:  # one entry per segment
        storage.save(None, make_entries(1, 5, term=1))
        storage.save(None, make_entries(3, 4, term=2))
    assert [p.name for p in segments(tmp_path)] == [f"log-{i:020d}.seg" for i in range(1, 5)]
    assert reopen(tmp_path)[2] == make_entries(1, 2, term=1) + make_entries(3, 4, term=2)


def test_compaction_deletes_whole_segments_and_skips_covered_entries(tmp_path: Path) -> None:
    with RaftStorage.open(tmp_path, segment_bytes=150) as storage:
        storage.save(HardState(term=1, commit=30), make_entries(1, 30, term=1))
        before = segments(tmp_path)
        storage.compact(make_snapshot(17, 1))
        after = segments(tmp_path)
        straddling = max(p for p in before if int(p.stem[4:]) <= 18)
        assert after == [p for p in before if p >= straddling]
        assert len(after) < len(before)
        storage.save(None, make_entries(31, 32, term=1))
    _, snapshot, entries = reopen(tmp_path, segment_bytes=150)
    assert snapshot.meta.index == 17
    assert entries == make_entries(18, 32, term=1)


def test_compaction_at_the_last_index_then_append_continues(tmp_path: Path) -> None:
    with RaftStorage.open(tmp_path) as storage:
        storage.save(HardState(term=1, commit=5), make_entries(1, 5, term=1))
        storage.compact(make_snapshot(5, 1))
        assert reopen_entries_in_place(storage) == []
        storage.save(None, make_entries(6, 7, term=1))
    assert reopen(tmp_path)[2] == make_entries(6, 7, term=1)


def reopen_entries_in_place(storage: RaftStorage) -> list[Entry]:
    storage.load()  # the first load hands out what open() read
    return storage.load()[2]  # a later one reads the directory again


def test_only_the_two_newest_snapshots_are_kept(tmp_path: Path) -> None:
    with RaftStorage.open(tmp_path) as storage:
        storage.save(HardState(term=1, commit=9), make_entries(1, 9, term=1))
        for index in (3, 5, 7):
            storage.compact(make_snapshot(index, 1))
    names = sorted(p.name for p in tmp_path.glob("snapshot-*"))
    assert names == [f"snapshot-{5:020d}.snap", f"snapshot-{7:020d}.snap"]


def test_received_snapshot_beyond_the_log_replaces_it(tmp_path: Path) -> None:
    with RaftStorage.open(tmp_path, segment_bytes=50) as storage:
        storage.save(HardState(term=1, commit=2), make_entries(1, 8, term=1))
        storage.save(
            HardState(term=3, commit=20), make_entries(21, 22, term=3), make_snapshot(20, 2)
        )
        assert storage.stats().first_index == 21
    hard_state, snapshot, entries = reopen(tmp_path)
    assert (hard_state.commit, snapshot.meta.index) == (20, 20)
    assert entries == make_entries(21, 22, term=3)
    assert [p.name for p in segments(tmp_path)] == [f"log-{21:020d}.seg"]


def test_received_snapshot_within_the_log_keeps_the_entries_after_it(tmp_path: Path) -> None:
    with RaftStorage.open(tmp_path, segment_bytes=50) as storage:
        storage.save(HardState(term=1, commit=2), make_entries(1, 8, term=1))
        storage.save(HardState(term=1, commit=5), [], make_snapshot(5, 1))
    _, snapshot, entries = reopen(tmp_path)
    assert snapshot.meta.index == 5
    assert entries == make_entries(6, 8, term=1)


def test_received_snapshot_with_another_term_at_its_index_discards_the_log(tmp_path: Path) -> None:
    # Raft §7: the log after the snapshot is kept only if it holds the snapshot's last entry.
    with RaftStorage.open(tmp_path) as storage:
        storage.save(HardState(term=1, commit=2), make_entries(1, 8, term=1))
        storage.save(HardState(term=2, commit=5), [], make_snapshot(5, 2))
    assert reopen(tmp_path)[2] == []


@pytest.mark.parametrize("index", [12, 5], ids=["beyond-the-log", "another-term-within"])
def test_crash_between_received_snapshot_and_log_reset_recovers_the_same(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, index: int
) -> None:
    with RaftStorage.open(tmp_path / "done") as storage:
        storage.save(HardState(term=2, commit=index), [], make_snapshot(index, 2))
    with RaftStorage.open(tmp_path / "crashed") as storage:
        storage.save(HardState(term=1, commit=2), make_entries(1, 8, term=1))
    name = f"snapshot-{index:020d}.snap"
    shutil.copy(tmp_path / "done" / name, tmp_path / "crashed" / name)
    with caplog.at_level(logging.WARNING, LOGGER):
        _, snapshot, entries = reopen(tmp_path / "crashed")
    assert (snapshot.meta.index, entries) == (index, [])
    assert "discarding" in caplog.text
    assert segments(tmp_path / "crashed") == []


def test_a_new_directory_is_made_durable_in_its_parent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Everything inside is fsynced; without its parent's fsync, a power loss soon after a join
    # could lose the whole directory, a vote already granted with it (review).
    synced: list[Path] = []
    monkeypatch.setattr(storage_module, "fsync_dir", synced.append)
    RaftStorage.open(tmp_path / "raft").close()
    assert synced == [tmp_path]
    RaftStorage.open(tmp_path / "raft").close()
    assert synced == [tmp_path]  # only when it made the directory


class _Killed(BaseException):
    """SIGKILL, for a test: nothing after it runs, and no handler catches it."""


@pytest.mark.parametrize("where", ["save", "open"])
@pytest.mark.parametrize("unlinks", [0, 1, 2, 3])
def test_a_crash_while_a_log_is_discarded_for_a_snapshot_leaves_a_log_that_opens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str, unlinks: int
) -> None:
    """A snapshot whose entry the log holds at another term replaces the whole log (Raft §7),
    segment by segment. Killed after the first `unlinks` of them (in `save`, or as the next
    `open` discards what the snapshot left), the directory must open, to the snapshot and no
    log: deleted oldest first, the later segments were left with a gap after the snapshot,
    and the node never started again (review)."""
    with RaftStorage.open(tmp_path, segment_bytes=100) as storage:
        storage.save(HardState(term=1, commit=2), make_entries(1, 20, term=1))
    assert len(segments(tmp_path)) >= 4
    if where == "open":  # the snapshot arrived, and the node was killed before the discard
        with RaftStorage.open(tmp_path / "done") as storage:
            storage.save(HardState(term=2, commit=5), [], make_snapshot(5, 2))
        name = f"snapshot-{5:020d}.snap"
        shutil.copy(tmp_path / "done" / name, tmp_path / name)
    unlink, done = Path.unlink, []

    def killed_after_some(path: Path, missing_ok: bool = False) -> None:
        if path.name.startswith("log-"):
            if len(done) == unlinks:
                raise _Killed
            done.append(path)
        unlink(path, missing_ok=missing_ok)

    with monkeypatch.context() as patch:
        patch.setattr(Path, "unlink", killed_after_some)
        if where == "save":
            storage = RaftStorage.open(tmp_path, segment_bytes=100)
            with pytest.raises(_Killed):
                storage.save(HardState(term=2, commit=5), [], make_snapshot(5, 2))
            storage.close()
        else:
            with pytest.raises(_Killed):
                RaftStorage.open(tmp_path, segment_bytes=100)
    _, snapshot, entries = reopen(tmp_path)
    assert (snapshot.meta.index, snapshot.meta.term, entries) == (5, 2, [])


def test_load_after_saves_reads_the_directory_again(tmp_path: Path) -> None:
    with RaftStorage.open(tmp_path) as storage:
        assert storage.load() == (HardState(), Snapshot(), [])
        storage.save(HardState(term=1, commit=1), make_entries(1, 2, term=1))
        assert storage.load() == (HardState(term=1, commit=1), Snapshot(), make_entries(1, 2, 1))


def test_load_after_a_save_right_after_open_returns_the_saved_state(tmp_path: Path) -> None:
    # As the agent bootstraps a new cluster: open, save a first snapshot, then start the driver.
    with RaftStorage.open(tmp_path) as storage:
        storage.save(HardState(term=1, commit=1), [], make_snapshot(1, 1))
        assert storage.load() == (HardState(term=1, commit=1), make_snapshot(1, 1), [])


def test_stats_count_segments_bytes_and_indexes(tmp_path: Path) -> None:
    with RaftStorage.open(tmp_path, segment_bytes=100) as storage:
        storage.save(None, make_entries(1, 10, term=1))
        storage.compact(make_snapshot(4, 1))
        stats = storage.stats()
    assert stats.segments == len(segments(tmp_path))
    assert stats.log_bytes == sum(p.stat().st_size for p in segments(tmp_path))
    assert (stats.first_index, stats.last_index, stats.snapshot_index) == (5, 10, 4)


def test_a_second_open_of_the_same_directory_is_refused(tmp_path: Path) -> None:
    with RaftStorage.open(tmp_path), pytest.raises(UsageError, match="in use"):
        RaftStorage.open(tmp_path)
    RaftStorage.open(tmp_path).close()  # released on close


@pytest.mark.parametrize(
    ("hard_state", "entries", "message"),
    [
        (None, make_entries(4, 5, term=1), "must start in 1..3"),
        (None, [*make_entries(2, 2, 1), *make_entries(4, 4, 1)], "not contiguous"),
        (None, make_entries(3, 3, term=0), "term 0"),
        (HardState(term=1, commit=5), make_entries(3, 3, term=1), "beyond the log's end"),
        (HardState(term=0), [], "term goes back"),
    ],
)
def test_invalid_save_raises_and_writes_nothing(
    tmp_path: Path, hard_state: HardState | None, entries: list[Entry], message: str
) -> None:
    with RaftStorage.open(tmp_path) as storage:
        storage.save(HardState(term=1, commit=1), make_entries(1, 2, term=1))
        with pytest.raises(ValueError, match=message):
            storage.save(hard_state, entries)
        if message.startswith("must"):
            storage.compact(make_snapshot(1, 1))
            with pytest.raises(ValueError, match="must start in 2"):
                storage.save(None, make_entries(1, 1, term=1))
    assert reopen(tmp_path)[0] == HardState(term=1, commit=1)
    assert reopen(tmp_path)[2][-1].index == 2


def test_compaction_beyond_the_log_or_with_the_wrong_term_is_refused(tmp_path: Path) -> None:
    with RaftStorage.open(tmp_path) as storage:
        storage.save(None, make_entries(1, 3, term=1))
        with pytest.raises(ValueError, match="log ends at 3"):
            storage.compact(make_snapshot(4, 1))
        with pytest.raises(ValueError, match="differs"):
            storage.compact(make_snapshot(2, 2))
        storage.compact(make_snapshot(2, 1))
        with pytest.raises(ValueError, match="older"):
            storage.compact(make_snapshot(1, 1))


def test_a_failed_write_makes_every_later_call_refuse(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def failing_fdatasync(fd: int) -> None:
        raise OSError(5, "Input/output error")

    with RaftStorage.open(tmp_path) as storage:
        storage.save(None, make_entries(1, 1, term=1))
        with monkeypatch.context() as patch:
            patch.setattr(os, "fdatasync", failing_fdatasync)
            with pytest.raises(OSError, match="Input/output"):
                storage.save(None, make_entries(2, 2, term=1))
        with pytest.raises(RuntimeError, match="failed earlier"):
            storage.save(None, make_entries(2, 2, term=1))
    assert reopen(tmp_path)[2][-1].index >= 1  # reopening recovers


@pytest.mark.parametrize("name", ["storage", "recovery", "disk_format"])
def test_storage_modules_do_not_import_trio(name: str) -> None:
    import ast
    import importlib

    module = importlib.import_module(f"swarmlet.raft.{name}")
    tree = ast.parse(Path(module.__file__ or "").read_text())
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert not {name for name in imported if name.split(".")[0] in {"trio", "time", "random"}}


# -- the on-disk format -----------------------------------------------------------------------
# Built here from the documented layout with msgpack and struct, not with the storage's own
# encoders: a directory written by any earlier version must load, and writes must not change.


def frame(obj: object) -> bytes:
    payload = msgpack.packb(obj, use_bin_type=True)
    return struct.pack(">II", len(payload), zlib.crc32(payload)) + payload


FORMAT_ENTRIES = [
    Entry(term=1, index=1, data=b""),
    Entry(term=1, index=2, data=b"one"),
    Entry(term=2, index=3, kind=EntryKind.CONF_CHANGE, data=b"conf"),
    Entry(term=2, index=4, data=b"\x00\xff" * 40),
    Entry(term=3, index=5, data=b"five"),
    Entry(term=3, index=6, data=b"six"),
    Entry(term=3, index=7, data=b"seven"),
]
FORMAT_SNAPSHOT = make_snapshot(3, 2, data=b"the state at 3")
FORMAT_HARD_STATE = HardState(term=3, vote="b", commit=5)


def format_records(entries: list[Entry]) -> bytes:
    return b"".join(frame([0, e.term, e.index, int(e.kind), e.data]) for e in entries)


def documented_files() -> dict[str, bytes]:
    """FORMAT_* as files: two segments (1..4, 5..7), a snapshot at 3, the hard state."""
    return {
        "hardstate": frame([3, "b", 5]),
        "snapshot-00000000000000000003.snap": frame(
            [3, 2, ["a", "b", "c"], ["w"], b"the state at 3"]
        ),
        "log-00000000000000000001.seg": format_records(FORMAT_ENTRIES[:4]),
        "log-00000000000000000005.seg": format_records(FORMAT_ENTRIES[4:]),
    }


def test_a_directory_in_the_documented_format_loads(tmp_path: Path) -> None:
    for name, data in documented_files().items():
        (tmp_path / name).write_bytes(data)
    with RaftStorage.open(tmp_path) as storage:
        assert storage.load() == (FORMAT_HARD_STATE, FORMAT_SNAPSHOT, FORMAT_ENTRIES[3:])
        assert storage.term_at(2) == 1
        assert storage.stats().segments == 2
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.name != "LOCK"} == (
        documented_files()
    )


def test_writes_produce_the_documented_format_byte_for_byte(tmp_path: Path) -> None:
    segment_bytes = len(format_records(FORMAT_ENTRIES[:4]))  # roll after entry 4
    with RaftStorage.open(tmp_path, segment_bytes=segment_bytes) as storage:
        storage.save(FORMAT_HARD_STATE, FORMAT_ENTRIES)
        storage.compact(FORMAT_SNAPSHOT)
    written = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert written == {"LOCK": b"", **documented_files()}


# -- crash safety -----------------------------------------------------------------------------


def write_log(path: Path, count: int, commit: int = 0) -> list[Entry]:
    log = make_entries(1, count, term=1, size_bytes=12)
    with RaftStorage.open(path, segment_bytes=200) as storage:
        storage.save(HardState(term=1, commit=commit), log)
    return log


def test_torn_last_record_is_cut_at_every_byte_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log = write_log(tmp_path, 30, commit=20)
    last = segments(tmp_path)[-1]
    original = last.read_bytes()
    start = len(original) - len(encode_entry(log[-1]))
    for cut in range(start, len(original)):
        last.write_bytes(original[:cut])
        caplog.clear()
        with caplog.at_level(logging.WARNING, LOGGER):
            assert reopen(tmp_path, segment_bytes=200)[2] == log[:-1], cut
        if cut > start:
            assert f"{last} at offset {start}" in caplog.text.replace(": torn tail", "")
            assert f"dropped {cut - start} bytes" in caplog.text
        else:
            assert caplog.text == ""
        assert last.stat().st_size == start
    with RaftStorage.open(tmp_path, segment_bytes=200) as storage:  # appending continues
        storage.save(None, [log[-1]])
    assert reopen(tmp_path)[2] == log


def test_bad_checksum_in_the_last_record_is_a_torn_tail(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log = write_log(tmp_path, 5)
    last = segments(tmp_path)[-1]
    data = bytearray(last.read_bytes())
    data[-1] ^= 0xFF
    last.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, LOGGER):
        assert reopen(tmp_path)[2] == log[:-1]
    assert "checksum mismatch" in caplog.text


def test_garbage_after_the_last_record_is_cut(tmp_path: Path) -> None:
    log = write_log(tmp_path, 5)
    last = segments(tmp_path)[-1]
    last.write_bytes(last.read_bytes() + b"\x00" * 4096)  # a zero-filled tail after a crash
    assert reopen(tmp_path)[2] == log


def test_flipped_byte_in_a_middle_record_raises(tmp_path: Path) -> None:
    write_log(tmp_path, 30)
    first = segments(tmp_path)[0]
    data = bytearray(first.read_bytes())
    data[HEADER_BYTES + 3] ^= 0x01
    first.write_bytes(bytes(data))
    with pytest.raises(StorageCorruptError, match=rf"{first.name} at offset 0: .*checksum"):
        reopen(tmp_path)


def test_flipped_byte_before_the_last_record_of_the_last_segment_raises(tmp_path: Path) -> None:
    log = write_log(tmp_path, 30)
    last = segments(tmp_path)[-1]
    data = bytearray(last.read_bytes())
    offset = len(data) - 2 * len(encode_entry(log[-1]))
    data[offset + 1] ^= 0x40  # the length of the record before the last one
    last.write_bytes(bytes(data))
    with pytest.raises(StorageCorruptError, match=f"offset {offset}: .*valid record at offset"):
        reopen(tmp_path)
    assert last.read_bytes() == bytes(data)  # a failed open repairs nothing


def test_torn_tail_below_the_commit_index_raises(tmp_path: Path) -> None:
    write_log(tmp_path, 30, commit=30)
    last = segments(tmp_path)[-1]
    data = last.read_bytes()
    last.write_bytes(data[:-3])
    with pytest.raises(StorageCorruptError, match="below the commit index 30"):
        reopen(tmp_path)
    assert last.read_bytes() == data[:-3]


def test_missing_middle_segment_raises(tmp_path: Path) -> None:
    write_log(tmp_path, 30)
    segments(tmp_path)[1].unlink()
    with pytest.raises(StorageCorruptError, match="a gap"):
        reopen(tmp_path)


def test_torn_tail_in_a_segment_before_the_last_raises(tmp_path: Path) -> None:
    write_log(tmp_path, 30)
    first = segments(tmp_path)[0]
    first.write_bytes(first.read_bytes()[:-2])
    with pytest.raises(StorageCorruptError, match="next segment"):
        reopen(tmp_path)


def test_record_with_a_valid_checksum_but_no_entry_raises(tmp_path: Path) -> None:
    write_log(tmp_path, 3)
    last = segments(tmp_path)[-1]
    payload = b"\x93\x01\x02\x03"  # msgpack [1, 2, 3]
    record = struct.pack(">II", len(payload), zlib.crc32(payload)) + payload
    last.write_bytes(last.read_bytes() + record)
    with pytest.raises(StorageCorruptError, match="not a log entry"):
        reopen(tmp_path)


@pytest.mark.parametrize(
    "damage",
    [
        lambda b: b[:-1],
        lambda b: b[:4] + bytes([b[4] ^ 1]) + b[5:],
        lambda b: b + b"x",
        lambda b: b"",
    ],
    ids=["truncated", "flipped", "trailing", "empty"],
)
def test_corrupt_hard_state_file_raises(tmp_path: Path, damage: Callable[[bytes], bytes]) -> None:
    write_log(tmp_path, 3, commit=2)
    path = tmp_path / "hardstate"
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(StorageCorruptError, match=r"hardstate: hard state .* unreadable"):
        reopen(tmp_path)


def test_corrupt_newest_snapshot_raises_and_names_the_older_one(tmp_path: Path) -> None:
    with RaftStorage.open(tmp_path) as storage:
        storage.save(HardState(term=1, commit=9), make_entries(1, 9, term=1))
        storage.compact(make_snapshot(3, 1))
        storage.compact(make_snapshot(6, 1))
    newest = tmp_path / f"snapshot-{6:020d}.snap"
    data = bytearray(newest.read_bytes())
    data[-1] ^= 1
    newest.write_bytes(bytes(data))
    with pytest.raises(StorageCorruptError, match=f"snapshot-{3:020d}.snap") as info:
        reopen(tmp_path)
    assert newest.name in str(info.value)
    newest.rename(tmp_path / "moved-aside")  # the documented fallback
    _, snapshot, entries = reopen(tmp_path)
    assert (snapshot.meta.index, entries) == (3, make_entries(4, 9, term=1))


def test_leftover_temp_files_are_removed_and_ignored(tmp_path: Path) -> None:
    log = write_log(tmp_path, 3, commit=2)
    (tmp_path / "hardstate.tmp").write_bytes(b"half a hard st")
    (tmp_path / f"snapshot-{3:020d}.snap.tmp").write_bytes(b"half a snapshot")
    assert reopen(tmp_path) == (HardState(term=1, commit=2), Snapshot(), log)
    assert list(tmp_path.glob("*.tmp")) == []


def test_absurd_length_prefix_is_rejected_without_allocating() -> None:
    buf = struct.pack(">II", 0xFFFFFFF0, 0) + b"\x00" * 64
    tracemalloc.start()
    try:
        for max_record_bytes in (64 << 20, 0xFFFFFFFF):
            with pytest.raises(BadRecordError, match="4294967280"):
                read_record(buf, 0, max_record_bytes)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024


def test_absurd_length_prefix_at_the_tail_is_cut(tmp_path: Path) -> None:
    log = write_log(tmp_path, 3)
    last = segments(tmp_path)[-1]
    last.write_bytes(last.read_bytes() + struct.pack(">II", 0x7FFFFFFF, 0) + b"abc")
    assert reopen(tmp_path)[2] == log


# -- the vote floor a cut tail leaves -----------------------------------------------------------


def tear(path: Path, drop: int) -> None:
    """Cut the last `drop` bytes of the newest segment (a torn write of its last record)."""
    last = segments(path)[-1]
    last.write_bytes(last.read_bytes()[:-drop])


def test_a_torn_tail_leaves_a_vote_floor_at_the_torn_record(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log = make_entries(1, 20, term=1) + make_entries(21, 30, term=3)
    with RaftStorage.open(tmp_path) as storage:
        storage.save(HardState(term=5, commit=10), log)  # terms 4 and 5 added no entry
    tear(tmp_path, 7)
    with caplog.at_level(logging.WARNING, LOGGER), RaftStorage.open(tmp_path) as storage:
        assert storage.vote_floor == VoteFloor(30, 3)  # its term read off the torn record
        assert storage.load()[2] == log[:-1]
    assert "may have acknowledged entry 30 (term <= 3)" in caplog.text
    assert (tmp_path / "votefloor").exists()
    with RaftStorage.open(tmp_path) as storage:  # the cut is done, the floor stays
        assert storage.vote_floor == VoteFloor(30, 3)


def test_a_torn_record_that_says_nothing_leaves_the_hard_states_term(tmp_path: Path) -> None:
    log = make_entries(1, 6, term=2)
    with RaftStorage.open(tmp_path) as storage:
        storage.save(HardState(term=4, commit=2), log)
    last = segments(tmp_path)[-1]
    last.write_bytes(last.read_bytes() + b"\x00\x00\x00\x10\x00\x00")  # a bare header
    with RaftStorage.open(tmp_path) as storage:
        assert storage.vote_floor == VoteFloor(7, 4)


def test_the_save_that_reaches_the_floor_lifts_it(tmp_path: Path) -> None:
    log = write_log(tmp_path, 10, commit=5)
    tear(tmp_path, 3)
    with RaftStorage.open(tmp_path, segment_bytes=200) as storage:
        assert storage.vote_floor == VoteFloor(10, 1)
        storage.save(None, [log[8]])  # entry 9 again: still short of 10
        assert storage.vote_floor == VoteFloor(10, 1)
        storage.save(None, [Entry(term=2, index=10)])
        assert storage.vote_floor == VoteFloor()
    assert not (tmp_path / "votefloor").exists()
    with RaftStorage.open(tmp_path, segment_bytes=200) as storage:
        assert storage.vote_floor == VoteFloor()


def test_floors_of_successive_cuts_merge_into_the_later(tmp_path: Path) -> None:
    log = write_log(tmp_path, 10, commit=2)
    tear(tmp_path, 3)
    with RaftStorage.open(tmp_path, segment_bytes=200) as storage:
        assert storage.vote_floor == VoteFloor(10, 1)
        storage.save(HardState(term=2, commit=2), [])
    # Entry 9 lost too, its record now a bare header: a floor (9, term <= 2). A candidate at
    # least as up to date as (9, 2) is as up to date as (10, 1): that floor stands for both.
    last = segments(tmp_path)[-1]
    cut = last.read_bytes()[: -len(encode_entry(log[8]))]
    last.write_bytes(cut + b"\x00\x00\x00\x10\x00\x00")
    with RaftStorage.open(tmp_path, segment_bytes=200) as storage:
        assert storage.vote_floor == VoteFloor(9, 2)


def test_a_torn_record_of_a_term_newer_than_the_hard_state_leaves_no_floor(
    tmp_path: Path,
) -> None:
    # A leader's first write (its vote for itself, then its first entry) torn by a crash: the
    # entry's term is above the hard state on disk, so the entry was never acknowledged.
    with RaftStorage.open(tmp_path) as storage:
        storage.save(HardState(term=2, vote="a", commit=3), make_entries(1, 5, term=2))
        storage.save(None, [Entry(term=3, index=6, data=b"no-op of term 3")])
    tear(tmp_path, 4)
    with RaftStorage.open(tmp_path) as storage:
        assert storage.last_index == 5
        assert storage.vote_floor == VoteFloor()


def test_an_unreadable_floor_is_an_error_that_says_what_deleting_it_means(tmp_path: Path) -> None:
    write_log(tmp_path, 5)
    tear(tmp_path, 3)
    reopen(tmp_path)
    (tmp_path / "votefloor").write_bytes(b"garbage")
    with pytest.raises(StorageCorruptError, match="deleting it lets the node vote at once"):
        reopen(tmp_path)
    (tmp_path / "votefloor").unlink()  # the operator accepts the risk
    with RaftStorage.open(tmp_path) as storage:
        assert storage.vote_floor == VoteFloor()


# -- model-based property test ----------------------------------------------------------------

OPS = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.integers(1, 6), st.just(0)),
        st.tuples(st.just("overwrite"), st.integers(0, 10), st.integers(1, 4)),
        st.tuples(st.just("commit"), st.integers(0, 10), st.just(0)),
        st.tuples(st.just("compact"), st.integers(0, 10), st.just(0)),
        st.tuples(st.just("receive"), st.integers(-6, 6), st.just(0)),
        st.tuples(st.just("reopen"), st.just(0), st.just(0)),
    ),
    max_size=25,
)


class Model:
    """What the storage must return: the obvious in-memory version."""

    def __init__(self) -> None:
        self.hard_state = HardState()
        self.snapshot = Snapshot()
        self.log: list[Entry] = []  # entries after the snapshot

    @property
    def last_index(self) -> int:
        return self.log[-1].index if self.log else self.snapshot.meta.index

    def term_at(self, index: int) -> int:
        if index == self.snapshot.meta.index:
            return self.snapshot.meta.term
        return self.log[index - self.snapshot.meta.index - 1].term


def apply_op(storage: RaftStorage, model: Model, op: tuple[str, int, int]) -> None:
    hs = model.hard_state
    kind, arg, count = op
    if kind == "append":
        new = make_entries(model.last_index + 1, model.last_index + arg, max(hs.term, 1))
        model.hard_state = HardState(term=max(hs.term, 1), vote=hs.vote, commit=hs.commit)
        storage.save(model.hard_state, new)
        model.log += new
    elif kind == "overwrite":  # a new leader's entries replace the uncommitted suffix
        first = max(hs.commit, model.snapshot.meta.index) + 1
        start = min(first + arg, model.last_index + 1)
        new = make_entries(start, start + count - 1, hs.term + 1)
        model.hard_state = HardState(term=hs.term + 1, vote="x", commit=hs.commit)
        storage.save(model.hard_state, new)
        model.log = [e for e in model.log if e.index < start] + new
    elif kind == "commit":
        model.hard_state = HardState(hs.term, hs.vote, min(hs.commit + arg, model.last_index))
        storage.save(model.hard_state, [])
    elif kind == "compact":
        index = max(hs.commit - arg, model.snapshot.meta.index)
        if index >= 1:
            snap = make_snapshot(index, model.term_at(index), data=b"s%d" % index)
            storage.compact(snap)
            model.log = [e for e in model.log if e.index > index]
            model.snapshot = snap
    elif kind == "receive":
        index = max(model.last_index + arg, hs.commit, model.snapshot.meta.index, 1)
        matches = index <= model.last_index and arg % 2 == 0
        term = model.term_at(index) if matches else hs.term + 1
        snap = make_snapshot(index, term, data=b"r%d" % index)
        model.hard_state = HardState(max(hs.term, term), hs.vote, max(hs.commit, index))
        storage.save(model.hard_state, [], snap)
        model.log = [e for e in model.log if e.index > index] if matches else []
        model.snapshot = snap


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=OPS, segment_bytes=st.sampled_from([1, 64, 300]))
def test_storage_matches_an_in_memory_model(
    ops: list[tuple[str, int, int]], segment_bytes: int
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        model = Model()
        storage = RaftStorage.open(tmp, segment_bytes=segment_bytes)
        try:
            for op in ops:
                if op[0] == "reopen":
                    storage.close()
                    storage = RaftStorage.open(tmp, segment_bytes=segment_bytes)
                    assert storage.load() == (model.hard_state, model.snapshot, model.log)
                else:
                    apply_op(storage, model, op)
                assert storage.last_index == model.last_index
        finally:
            storage.close()
        assert reopen(Path(tmp)) == (model.hard_state, model.snapshot, model.log)
        assert not [n for n in os.listdir(tmp) if n.endswith(".tmp")]
