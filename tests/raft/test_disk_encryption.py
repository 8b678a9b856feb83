"""Encryption at rest of the Raft log and snapshots (issue #18): sealed records round-trip, a
tampered, swapped or foreign record stops the open with a clear error, and files written in clear
(before encryption) still read. Real files, real AES-GCM; no sleeps."""

from __future__ import annotations

import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import pytest

from swarmlet import crypto
from swarmlet.errors import StorageCorruptError
from swarmlet.raft.disk_format import (
    HEADER_BYTES,
    SealedBytes,
    decode_entry,
    decode_snapshot,
    encode_entry,
    encode_record,
    encode_snapshot,
    open_entry,
    open_snapshot,
    peek_torn_entry,
    read_record,
    read_single_record,
    segment_name,
)
from swarmlet.raft.storage import RaftStorage
from swarmlet.raft.types import ConfState, Entry, EntryKind, HardState, Snapshot, SnapshotMeta

MARK = b"distinctive-plaintext-7f3a"


def entries(first: int, last: int, term: int = 1) -> list[Entry]:
    return [Entry(term=term, index=i, data=MARK + str(i).encode()) for i in range(first, last + 1)]


def snapshot(index: int = 5, term: int = 1) -> Snapshot:
    conf = ConfState(voters=("a", "b"), learners=("w",))
    return Snapshot(SnapshotMeta(index=index, term=term, conf=conf), MARK + b"-state")


def cipher(key: bytes | None = None) -> crypto.Sealer:
    return crypto.Sealer(key or bytes(range(32)))


def files_bytes(path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(path.iterdir()) if p.is_file())


# ------------------------------------------------------------------------------ the format


def test_sealed_entry_round_trips_and_hides_its_data() -> None:
    entry = Entry(term=3, index=7, kind=EntryKind.CONF_CHANGE, data=MARK)
    record = encode_entry(entry, cipher())
    assert MARK not in record
    payload, _ = read_record(record, 0, 1 << 20)
    decoded = decode_entry(payload)
    assert isinstance(decoded.data, SealedBytes)
    assert (decoded.term, decoded.index, decoded.kind) == (3, 7, EntryKind.CONF_CHANGE)
    assert open_entry(decoded, cipher()) == entry


def test_sealed_snapshot_round_trips_and_hides_its_data() -> None:
    snap = snapshot()
    record = encode_snapshot(snap, cipher())
    assert MARK not in record
    decoded = decode_snapshot(read_single_record(record))
    assert isinstance(decoded.data, SealedBytes)
    assert open_snapshot(decoded, cipher()) == snap


def test_plaintext_encodings_are_unchanged() -> None:
    # Files written before encryption: the encoder without a cipher writes the same bytes.
    entry = Entry(term=2, index=4, data=b"x")
    assert encode_entry(entry) == encode_record(msgpack.packb([0, 2, 4, 0, b"x"]))
    assert open_entry(decode_entry(read_record(encode_entry(entry), 0, 1 << 20)[0]), cipher()) == (
        entry
    )


def test_sealed_body_moved_to_another_index_does_not_open() -> None:
    sealed_at_7 = msgpack.unpackb(encode_entry(Entry(term=1, index=7, data=MARK), cipher())[8:])
    moved = encode_record(msgpack.packb([1, 1, 8, 0, sealed_at_7[4]]))
    with pytest.raises(Exception, match="authentication"):
        open_entry(decode_entry(read_record(moved, 0, 1 << 20)[0]), cipher())


def test_torn_sealed_record_still_gives_its_term_and_index() -> None:
    record = encode_entry(Entry(term=4, index=9, data=MARK * 20), cipher())
    assert peek_torn_entry(record[: HEADER_BYTES + 12], 0) == (4, 9)


def test_bool_is_not_a_record_tag() -> None:
    with pytest.raises(ValueError, match="not an entry record"):
        decode_entry(msgpack.packb([True, 1, 1, 0, b""]))


# ------------------------------------------------------------------------------ the storage


def test_storage_with_a_cipher_writes_no_plaintext_and_reads_it_back(tmp_path: Path) -> None:
    with RaftStorage.open(tmp_path, cipher=cipher()) as storage:
        storage.save(HardState(term=1, commit=3), entries(1, 3))
        storage.compact(Snapshot(SnapshotMeta(2, 1, ConfState(("a",))), MARK + b"-state"))
        storage.save(None, entries(4, 6))
    assert MARK not in files_bytes(tmp_path)
    with RaftStorage.open(tmp_path, cipher=cipher()) as storage:
        _, snap, loaded = storage.load()
    assert snap.data == MARK + b"-state"
    assert loaded == entries(3, 6)


def test_wrong_data_key_stops_the_open_with_a_clear_error(tmp_path: Path) -> None:
    with RaftStorage.open(tmp_path, cipher=cipher()) as storage:
        storage.save(HardState(term=1, commit=2), entries(1, 2))
    with pytest.raises(StorageCorruptError, match="does not open with this node's data key"):
        RaftStorage.open(tmp_path, cipher=cipher(bytes(32)))


def test_sealed_log_without_a_key_is_refused(tmp_path: Path) -> None:
    with RaftStorage.open(tmp_path, cipher=cipher()) as storage:
        storage.save(HardState(term=1, commit=1), entries(1, 1))
    with pytest.raises(StorageCorruptError, match="encrypted and no data key was given"):
        RaftStorage.open(tmp_path)


def _rewrite_record(path: Path, index_in_file: int, change: Callable[[Any], Any]) -> None:
    """Replace one record's payload (with a valid checksum: an attacker, not a torn write)."""
    buf = path.read_bytes()
    offset, records = 0, []
    while offset < len(buf):
        payload, after = read_record(buf, offset, 1 << 20)
        records.append(bytes(payload))
        offset = after
    obj = msgpack.unpackb(records[index_in_file])
    records[index_in_file] = msgpack.packb(change(obj))
    path.write_bytes(b"".join(encode_record(r) for r in records))


def test_tampered_ciphertext_is_refused(tmp_path: Path) -> None:
    with RaftStorage.open(tmp_path, cipher=cipher()) as storage:
        storage.save(HardState(term=1, commit=3), entries(1, 3))

    def flip(obj: list[Any]) -> list[Any]:
        body = bytearray(obj[4])
        body[-1] ^= 1
        return [*obj[:4], bytes(body)]

    _rewrite_record(tmp_path / segment_name(1), 1, flip)
    with pytest.raises(StorageCorruptError, match=r"index 2 .* does not open"):
        RaftStorage.open(tmp_path, cipher=cipher())


def test_swapped_records_are_refused(tmp_path: Path) -> None:
    with RaftStorage.open(tmp_path, cipher=cipher()) as storage:
        storage.save(HardState(term=1, commit=3), entries(1, 3))
    seg = tmp_path / segment_name(1)
    buf = seg.read_bytes()
    first, after = read_record(buf, 0, 1 << 20)
    second, _ = read_record(buf, after, 1 << 20)
    a, b = msgpack.unpackb(bytes(first)), msgpack.unpackb(bytes(second))
    # Swap the sealed bodies and keep the clear indexes in order: recovery sees a good log.
    _rewrite_record(seg, 0, lambda obj: [*obj[:4], b[4]])
    _rewrite_record(seg, 1, lambda obj: [*obj[:4], a[4]])
    with pytest.raises(StorageCorruptError, match=r"index 1 .* does not open"):
        RaftStorage.open(tmp_path, cipher=cipher())


def test_old_plaintext_files_still_read_and_new_records_are_sealed(tmp_path: Path) -> None:
    with RaftStorage.open(tmp_path) as storage:  # a directory written before encryption
        storage.save(HardState(term=1, commit=2), entries(1, 2))
        storage.compact(Snapshot(SnapshotMeta(1, 1, ConfState(("a",))), b"old-state"))
    assert MARK in files_bytes(tmp_path)
    with RaftStorage.open(tmp_path, cipher=cipher()) as storage:
        _, snap, loaded = storage.load()
        assert (snap.data, loaded) == (b"old-state", entries(2, 2))
        storage.save(HardState(term=1, commit=3), [Entry(term=1, index=3, data=b"new-" + MARK)])
    buf = (tmp_path / segment_name(1)).read_bytes()
    assert b"new-" + MARK not in buf  # the appended record is sealed
    with RaftStorage.open(tmp_path, cipher=cipher()) as storage:
        assert storage.load()[2][-1].data == b"new-" + MARK


def test_snapshot_moved_to_other_metadata_is_refused(tmp_path: Path) -> None:
    with RaftStorage.open(tmp_path, cipher=cipher()) as storage:
        storage.save(HardState(term=1, commit=2), entries(1, 2))
        storage.compact(Snapshot(SnapshotMeta(2, 1, ConfState(("a",))), b"state"))
    snap_file = next(tmp_path.glob("snapshot-*.snap"))
    obj = msgpack.unpackb(bytes(read_single_record(snap_file.read_bytes())))
    obj[2] = ["a", "intruder"]  # the voters, which are in clear
    payload = msgpack.packb(obj)
    snap_file.write_bytes(
        len(payload).to_bytes(4, "big") + zlib.crc32(payload).to_bytes(4, "big") + payload
    )
    with pytest.raises(StorageCorruptError, match="snapshot at index 2 does not open"):
        RaftStorage.open(tmp_path, cipher=cipher())
