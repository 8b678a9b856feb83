"""The on-disk format of the Raft directory: file names, the checksummed record frame, and the
payloads of log entries, the hard state and snapshots. Bytes in, values out; no file is opened here.

Layout::

    LOCK                              held (flock) while open
    hardstate                         one record: [term, vote, commit]
    votefloor                         one record: [index, term] (only after a torn tail was cut)
    snapshot-<index:020d>.snap        one record: [index, term, voters, learners, data]
    log-<first-index:020d>.seg        records, one per entry: [0, term, index, kind, data]
                                      or, encrypted: [1, term, index, kind, sealed data]
    *.tmp                             an atomic write in progress; removed on open

Encrypted records (issue #18, encryption at rest). With a `RecordCipher` (the node's data key,
`swarmlet.security.at_rest`), what a record holds of the cluster (an entry's data, a snapshot's
state) is sealed with AES-256-GCM: a log record under tag 1, a snapshot as a six-element record
``[index, term, voters, learners, sealed data, 1]``. What Raft needs to recover the directory
without the key (indexes, terms, kinds, the configuration) stays in clear, and is the associated
data of the seal, so a sealed body cannot be moved to another index, term, kind or snapshot. A
decoder returns a sealed body as `SealedBytes`, which `open_entry` / `open_snapshot` turn back
into the plaintext: recovery checks the log's shape without the key, the storage opens it.
Plaintext records (tag 0, five-element snapshots) still decode, so files written before
encryption, or without a key, read as before.

Record: ``[u32 length][u32 crc32 of payload][payload]`` (big-endian), payload msgpack
(``use_bin_type=True``, read with ``raw=False, strict_map_key=True``); never pickle. A length of 0,
above the caller's `max_record_bytes` or past the end of the buffer is rejected before anything is
read or allocated.

Invariants: the format is persisted, so it only grows: every file written by an earlier version
decodes to the same values, and an encoder never changes the bytes it produces for a value. A
decoder checks the shape and types of what it reads and raises `ValueError` for anything else;
`BadRecordError` means no valid frame at an offset.

It knows nothing of directories, fsync or recovery (which record is a torn tail and which is
corruption is `recovery`'s to decide), nor of the Raft rules beyond the fields it encodes.
"""

from __future__ import annotations

import re
import struct
import zlib
from typing import Any, Protocol

import msgpack

from swarmlet.raft.types import (
    ConfState,
    Entry,
    EntryKind,
    HardState,
    Snapshot,
    SnapshotMeta,
    VoteFloor,
)

ANY_RECORD_BYTES = 0xFFFFFFFF  # the frame's own bound (a u32 length): for single-record files

_HEADER = struct.Struct(">II")  # payload length, crc32 of payload
HEADER_BYTES = _HEADER.size
_ENTRY_TAG = 0  # first element of a log record's payload; other values are reserved
_SEALED_ENTRY_TAG = 1  # ... an entry whose data is sealed (`RecordCipher`)
_ENTRY_TAGS = (_ENTRY_TAG, _SEALED_ENTRY_TAG)
_SEALED_SNAPSHOT_MARK = 1  # last element of a six-element (sealed) snapshot record
# Associated data of the seals: a body sealed for one place opens nowhere else.
AAD_ENTRY = b"swarmlet/raft-entry/1"
AAD_SNAPSHOT = b"swarmlet/raft-snapshot/1"

SEGMENT_RE = re.compile(r"^log-(\d{20})\.seg$")
SNAPSHOT_RE = re.compile(r"^snapshot-(\d{20})\.snap$")
HARD_STATE_NAME = "hardstate"
VOTE_FLOOR_NAME = "votefloor"
LOCK_NAME = "LOCK"
TMP_SUFFIX = ".tmp"


def segment_name(first_index: int) -> str:
    return f"log-{first_index:020d}.seg"


def snapshot_name(index: int) -> str:
    return f"snapshot-{index:020d}.snap"


# -- the record frame ---------------------------------------------------------------------------


class BadRecordError(Exception):
    """No valid record at an offset; the message says why."""


def encode_record(payload: bytes) -> bytes:
    """Frame `payload` as ``[u32 length][u32 crc32][payload]``."""
    return _HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def read_record(buf: bytes, offset: int, max_record_bytes: int) -> tuple[memoryview, int]:
    """The payload of the record at `offset` and the offset after it; `BadRecordError` if there is
    no valid record there. Nothing is allocated before the length is known to fit in `buf`."""
    remaining = len(buf) - offset
    if remaining < HEADER_BYTES:
        raise BadRecordError(f"partial record header ({remaining} bytes)")
    length, crc = _HEADER.unpack_from(buf, offset)
    if length == 0 or length > max_record_bytes:
        raise BadRecordError(f"record length {length} out of bounds")
    if length > remaining - HEADER_BYTES:
        raise BadRecordError(f"record length {length} runs past the end of the file")
    start = offset + HEADER_BYTES
    payload = memoryview(buf)[start : start + length]
    if zlib.crc32(payload) != crc:
        raise BadRecordError("checksum mismatch")
    return payload, start + length


def find_valid_record(buf: bytes, start: int, max_record_bytes: int) -> int | None:
    """The first offset >= `start` where a valid record begins (used to tell a torn tail from a
    hole in the middle). Linear in the bytes left; runs only when a record is bad."""
    for offset in range(start, len(buf) - HEADER_BYTES + 1):
        length = int.from_bytes(buf[offset : offset + 4], "big")
        if 0 < length <= min(max_record_bytes, len(buf) - offset - HEADER_BYTES):
            try:
                read_record(buf, offset, max_record_bytes)
            except BadRecordError:
                continue
            return offset
    return None


def read_single_record(buf: bytes) -> memoryview:
    """The payload of a file that holds exactly one record (hard state, snapshot)."""
    payload, end = read_record(buf, 0, ANY_RECORD_BYTES)
    if end != len(buf):
        raise BadRecordError(f"{len(buf) - end} bytes after the record")
    return payload


# -- encryption ---------------------------------------------------------------------------------


class RecordCipher(Protocol):
    """Seals and opens record bodies (`crypto.Sealer` under the node's data key). `open` raises
    RemoteProtocolError for a wrong key or altered bytes (the storage reports corruption)."""

    def seal(self, plaintext: bytes, aad: bytes) -> bytes: ...

    def open(self, sealed: bytes, aad: bytes) -> bytes: ...


class SealedBytes(bytes):
    """A record body still sealed: `open_entry` / `open_snapshot` open it. Never handed to Raft
    or the state machine (the storage opens every one before it returns entries)."""


def _entry_aad(term: int, index: int, kind: int) -> bytes:
    return AAD_ENTRY + _pack([term, index, kind])


def _snapshot_aad(meta: SnapshotMeta) -> bytes:
    conf = [list(meta.conf.voters), list(meta.conf.learners)]
    return AAD_SNAPSHOT + _pack([meta.index, meta.term, *conf])


def open_entry(entry: Entry, cipher: RecordCipher) -> Entry:
    """`entry` with its data opened if it was sealed (as is otherwise); `cipher.open`'s error
    if it does not open under this key with this index, term and kind."""
    if not isinstance(entry.data, SealedBytes):
        return entry
    data = cipher.open(bytes(entry.data), _entry_aad(entry.term, entry.index, int(entry.kind)))
    return Entry(term=entry.term, index=entry.index, kind=entry.kind, data=data)


def open_snapshot(snap: Snapshot, cipher: RecordCipher) -> Snapshot:
    """As `open_entry`, for a snapshot (bound to its index, term and configuration)."""
    if not isinstance(snap.data, SealedBytes):
        return snap
    return Snapshot(meta=snap.meta, data=cipher.open(bytes(snap.data), _snapshot_aad(snap.meta)))


def is_sealed(data: bytes) -> bool:
    return isinstance(data, SealedBytes)


# -- payloads -----------------------------------------------------------------------------------


def _pack(obj: object) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def _unpack(payload: memoryview | bytes) -> Any:
    try:
        return msgpack.unpackb(payload, raw=False, strict_map_key=True)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise ValueError(f"undecodable payload: {exc}") from exc


def _is_int(value: object, minimum: int) -> bool:
    return type(value) is int and value >= minimum


def _is_tag(value: object, tags: tuple[int, ...]) -> bool:
    return type(value) is int and value in tags  # not a bool, though True == 1


def encode_entry(entry: Entry, cipher: RecordCipher | None = None) -> bytes:
    """A log record; with `cipher`, its data sealed (tag 1; see the module docstring)."""
    kind = int(entry.kind)
    if cipher is None:
        return encode_record(_pack([_ENTRY_TAG, entry.term, entry.index, kind, entry.data]))
    sealed = cipher.seal(entry.data, _entry_aad(entry.term, entry.index, kind))
    return encode_record(_pack([_SEALED_ENTRY_TAG, entry.term, entry.index, kind, sealed]))


def decode_entry(payload: memoryview | bytes) -> Entry:
    """The entry of a log record; a sealed one's data is `SealedBytes` (`open_entry`)."""
    obj = _unpack(payload)
    if not (isinstance(obj, list) and len(obj) == 5 and _is_tag(obj[0], _ENTRY_TAGS)):
        raise ValueError("not an entry record")
    tag, term, index, kind, data = obj
    if not (_is_int(term, 1) and _is_int(index, 1) and type(kind) is int):
        raise ValueError("bad term, index or kind")
    if not isinstance(data, bytes):
        raise ValueError("entry data is not bytes")
    if tag == _SEALED_ENTRY_TAG:
        data = SealedBytes(data)
    return Entry(term=term, index=index, kind=EntryKind(kind), data=data)


def peek_torn_entry(buf: bytes, offset: int) -> tuple[int, int] | None:
    """(term, index) from the first bytes of a torn entry record at `offset`, if they decode; None
    otherwise. The checksum cannot vouch for a torn record: what this returns is only as good as
    the assumption that a torn write keeps the start of what it wrote (recovery uses it to bound
    what a lost entry may have been, never as an entry)."""
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=True, max_buffer_size=64)
    unpacker.feed(buf[offset + HEADER_BYTES : offset + HEADER_BYTES + 64])
    try:
        if unpacker.read_array_header() != 5 or not _is_tag(unpacker.unpack(), _ENTRY_TAGS):
            return None
        term, index = unpacker.unpack(), unpacker.unpack()
    except (ValueError, TypeError, msgpack.UnpackException, msgpack.OutOfData):
        return None
    if not (_is_int(term, 1) and _is_int(index, 1)):
        return None
    return term, index


def encode_hard_state(hs: HardState) -> bytes:
    return encode_record(_pack([hs.term, hs.vote, hs.commit]))


def decode_hard_state(payload: memoryview) -> HardState:
    obj = _unpack(payload)
    if not (isinstance(obj, list) and len(obj) == 3):
        raise ValueError("not a hard state record")
    term, vote, commit = obj
    if not (_is_int(term, 0) and _is_int(commit, 0) and (vote is None or isinstance(vote, str))):
        raise ValueError("bad term, vote or commit")
    return HardState(term=term, vote=vote, commit=commit)


def encode_vote_floor(floor: VoteFloor) -> bytes:
    return encode_record(_pack([floor.index, floor.term]))


def decode_vote_floor(payload: memoryview) -> VoteFloor:
    obj = _unpack(payload)
    if not (isinstance(obj, list) and len(obj) == 2 and all(_is_int(v, 0) for v in obj)):
        raise ValueError("not a vote floor record")
    return VoteFloor(index=obj[0], term=obj[1])


def encode_snapshot(snap: Snapshot, cipher: RecordCipher | None = None) -> bytes:
    """A snapshot record; with `cipher`, its data sealed (six elements; module docstring)."""
    meta = snap.meta
    conf = [list(meta.conf.voters), list(meta.conf.learners)]
    if cipher is None:
        return encode_record(_pack([meta.index, meta.term, *conf, snap.data]))
    sealed = cipher.seal(snap.data, _snapshot_aad(meta))
    return encode_record(_pack([meta.index, meta.term, *conf, sealed, _SEALED_SNAPSHOT_MARK]))


def decode_snapshot(payload: memoryview) -> Snapshot:
    """The snapshot of a record; a sealed one's data is `SealedBytes` (`open_snapshot`)."""
    obj = _unpack(payload)
    sealed = isinstance(obj, list) and len(obj) == 6 and _is_tag(obj[5], (_SEALED_SNAPSHOT_MARK,))
    if not (isinstance(obj, list) and (len(obj) == 5 or sealed)):
        raise ValueError("not a snapshot record")
    index, term, voters, learners, data = obj[:5]
    ok = _is_int(index, 1) and _is_int(term, 1) and isinstance(data, bytes)
    ok = ok and all(
        isinstance(ids, list) and all(isinstance(i, str) for i in ids) for ids in (voters, learners)
    )
    if not ok:
        raise ValueError("bad snapshot fields")
    conf = ConfState(voters=tuple(voters), learners=tuple(learners))
    if sealed:
        data = SealedBytes(data)
    return Snapshot(meta=SnapshotMeta(index=index, term=term, conf=conf), data=data)
