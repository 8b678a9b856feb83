"""Decoding bounds: what unpacking a peer's msgpack may cost, decided before anything is built.

A peer chooses every length in a frame, so what decoding allocates must follow from the frame's
size, never from what the frame declares. msgpack's own limits are per object: with them a value
cannot declare a string or an array longer than itself, but they bound neither the total (an
empty map is 1 byte on the wire and a 64-byte dict plus its 8-byte slot in memory: 72 times its
size; a negative fixint 1 byte and a 32-byte int) nor what unpacking preallocates before the
elements arrive (msgpack builds each array at its declared length: a few kilobytes of nested
array headers, each declaring thousands of elements that never come, take tens of megabytes).

So a value goes through two checks before msgpack builds it:
  1. structure: msgpack's `Unpacker.skip` walks the value without building anything (C speed).
     It must be complete and end exactly where the frame ends. Then every declared element is
     present, so what unpacking preallocates is at most 8 bytes per byte of the value.
  2. cost, for values over SMALL_VALUE_BYTES: `estimate` adds up what CPython will allocate for
     each object (a linear walk over the headers; msgpack stores a tree in pre-order, so no stack
     is needed), and the value is refused unless the estimate is at most MAX_EXPANSION times
     its size plus EXPANSION_SLACK_BYTES. A smaller value skips this walk: at WORST_EXPANSION
     bytes per byte it cannot exceed the slack.

Invariant: unpacking a value these checks accept allocates at most `budget(size)`, and the
codec's objects built from it take no more than it does (tuples for lists, slotted dataclasses
for `[type, fields]`); refusing one allocates about one copy of it (the skipper's buffer).

The limits, and why no legitimate message reaches them:
  * size: the caller's bound (`codec.MAX_MESSAGE_BYTES`, 64 MiB; a Raft snapshot of the state,
    `codec.MAX_SNAPSHOT_BYTES`);
  * per object (`unpack_limits`, given to msgpack): strings, bins and arrays no longer than the
    value, maps of at most half as many pairs, no ext type at all (the codec never writes one).
    No tighter fixed cap: the largest legitimate values (a snapshot's `data`, the task list of a
    snapshot, an AppendEntries' entries) may fill most of a frame, and a fixed cap would limit
    the cluster's size rather than an attacker;
  * nesting: msgpack's own stack (1,024 levels) while unpacking; the codec refuses more than
    `codec._MAX_DEPTH` levels of its types afterwards. Depth costs no memory beyond step 1's;
  * memory: the densest legitimate values are state snapshots (a service spec is mostly empty
    tuples and maps); they estimate well under MAX_EXPANSION, and a test holds them a quarter
    below it. An AppendEntries batch carries its commands as bytes and estimates about twice
    its size. MAX_EXPANSION stays far from the 70-fold of a hostile frame.

Pure: no I/O. The codec (`unpack_plain`, `new_unpacker`) is the only user.
"""

from __future__ import annotations

import typing
from typing import Any

import msgpack

from swarmlet.errors import RemoteProtocolError

SMALL_VALUE_BYTES = 4 * 1024  # values up to this size skip the cost walk
WORST_EXPANSION = 80  # bytes of objects per byte of msgpack, whatever the shape (the tests hold it)
EXPANSION_SLACK_BYTES = WORST_EXPANSION * SMALL_VALUE_BYTES  # 320 KiB
MAX_EXPANSION = 24  # bytes of objects per byte of msgpack, at most, for larger values

# Bytes CPython 3.11 asks its allocator for, per decoded object (what tracemalloc counts); an
# object's slot in its container is counted with the container. Upper bounds: the tests check
# `estimate` against msgpack's real allocations for every kind of object.
_COST_UNPACK = 4096  # msgpack's own state for one call
_COST_LIST = 56  # + 8 per element
_COST_LIST_ITEM = 8
_COST_DICT = 64  # an empty dict; with pairs, + its hash table:
_COST_DICT_TABLE = 200  # + 96 per pair (the table's growth, and its transient copies)
_COST_DICT_PAIR = 96
# A str takes 4 bytes per character when one of them is astral, and a character is one byte of
# UTF-8 at least. The empty str (and bytes) is a shared singleton.
_COST_STR = 76  # + 4 per byte
_COST_STR_BYTE = 4
_COST_BIN = 40  # + 1 per byte
_COST_INT = 32  # up to 32 bits, beyond the cached small ints (0..255 here)
_COST_INT64 = 40
_COST_FLOAT = 24

# Per first byte of a msgpack object: its total size when that byte alone determines it (else
# 0) with its cost, or else what it is and how many bytes its length takes.
_FIXED, _STR, _BIN, _ARRAY, _MAP, _INVALID = range(6)
_KIND = [_INVALID] * 256
_FIXED_SIZE = [0] * 256
_FIXED_COST = [0] * 256
_LEN_BYTES = [0] * 256


def _list_cost(n: int) -> int:
    return _COST_LIST + _COST_LIST_ITEM * n


def _dict_cost(n: int) -> int:
    return _COST_DICT + (_COST_DICT_TABLE + _COST_DICT_PAIR * n if n else 0)


def _str_cost(n: int) -> int:
    return _COST_STR + _COST_STR_BYTE * n if n else 0


def _bin_cost(n: int) -> int:
    return _COST_BIN + n if n else 0


def _fixed(first: int, size: int, cost: int) -> None:
    _KIND[first], _FIXED_SIZE[first], _FIXED_COST[first] = _FIXED, size, cost


def _sized(first: int, kind: int, len_bytes: int) -> None:
    _KIND[first], _LEN_BYTES[first] = kind, len_bytes


for _b in range(0x00, 0x80):  # positive fixint: a cached small int
    _fixed(_b, 1, 0)
for _b in range(0xE0, 0x100):  # negative fixint (-32..-1)
    _fixed(_b, 1, _COST_INT)
for _b in range(0xA0, 0xC0):  # fixstr
    _fixed(_b, 1 + (_b & 0x1F), _str_cost(_b & 0x1F))
# A fixmap's or fixarray's header is 1 byte, and its elements follow it: for the walk in
# pre-order it is as fixed as a scalar.
for _b in range(0x80, 0x90):
    _fixed(_b, 1, _dict_cost(_b & 0x0F))
for _b in range(0x90, 0xA0):
    _fixed(_b, 1, _list_cost(_b & 0x0F))
for _b in (0xC0, 0xC2, 0xC3):  # nil, false, true
    _fixed(_b, 1, 0)
_fixed(0xCA, 5, _COST_FLOAT)
_fixed(0xCB, 9, _COST_FLOAT)
_fixed(0xCC, 2, 0)  # uint8: a cached small int
for _b, _size in ((0xCD, 3), (0xCE, 5), (0xD0, 2), (0xD1, 3), (0xD2, 5)):
    _fixed(_b, _size, _COST_INT)
_fixed(0xCF, 9, _COST_INT64)
_fixed(0xD3, 9, _COST_INT64)
for _b, _n in ((0xC4, 1), (0xC5, 2), (0xC6, 4)):
    _sized(_b, _BIN, _n)
for _b, _n in ((0xD9, 1), (0xDA, 2), (0xDB, 4)):
    _sized(_b, _STR, _n)
for _b, _n in ((0xDC, 2), (0xDD, 4)):
    _sized(_b, _ARRAY, _n)
for _b, _n in ((0xDE, 2), (0xDF, 4)):
    _sized(_b, _MAP, _n)
# 0xC1 (never used) and the ext types (0xC7-0xC9, 0xD4-0xD8) stay _INVALID.


class UnpackLimits(typing.TypedDict):
    """msgpack's per-object limits (keyword arguments of `msgpack.unpackb`)."""

    max_str_len: int
    max_bin_len: int
    max_array_len: int
    max_map_len: int
    max_ext_len: int


def unpack_limits(size: int) -> UnpackLimits:
    """msgpack's per-object limits for a value of `size` bytes: nothing longer than the value
    (each element of an array takes a byte at least, each pair of a map two), and no ext."""
    return {
        "max_str_len": size,
        "max_bin_len": size,
        "max_array_len": size,
        "max_map_len": size // 2,
        "max_ext_len": 0,
    }


def estimate(data: bytes | bytearray | memoryview) -> int:
    """At least the bytes CPython allocates to unpack `data`, one complete msgpack value (as
    checked by `Unpacker.skip`). Raises
    RemoteProtocolError for a byte that starts no object the codec accepts (an ext type)."""
    kinds, fixed_size, fixed_cost, len_bytes = _KIND, _FIXED_SIZE, _FIXED_COST, _LEN_BYTES
    end = len(data)
    pos, cost = 0, _COST_UNPACK
    while pos < end:  # every object's header, in order: msgpack writes a tree in pre-order
        first = data[pos]
        size = fixed_size[first]
        if size:  # a scalar, or the 1-byte header of a small array or map
            pos += size
            cost += fixed_cost[first]
            continue
        kind = kinds[first]
        n_bytes = len_bytes[first]
        if kind == _INVALID:
            raise RemoteProtocolError(f"byte {pos}: 0x{first:02x} starts no allowed object")
        if n_bytes == 1:
            length = data[pos + 1]
        elif n_bytes == 2:
            length = data[pos + 1] << 8 | data[pos + 2]
        else:
            length = int.from_bytes(data[pos + 1 : pos + 5], "big")
        pos += 1 + n_bytes
        if kind == _ARRAY:
            cost += _list_cost(length)
        elif kind == _MAP:
            cost += _dict_cost(length)
        else:
            pos += length
            cost += _str_cost(length) if kind == _STR else _bin_cost(length)
    return cost


def budget(size: int) -> int:
    """The most a value of `size` bytes may take once unpacked."""
    return MAX_EXPANSION * size + EXPANSION_SLACK_BYTES


def _check_cost(data: bytes | bytearray | memoryview) -> None:
    size = len(data)
    if size <= SMALL_VALUE_BYTES:
        return  # at most WORST_EXPANSION * SMALL_VALUE_BYTES == EXPANSION_SLACK_BYTES
    cost = estimate(data)
    if cost > budget(size):
        raise RemoteProtocolError(
            f"a value of {size} bytes would take {cost} bytes to unpack, "
            f"over its budget of {budget(size)}"
        )


def _refuse_ext(code: int, data: bytes) -> Any:
    raise ValueError(f"ext type {code} is not allowed")


def _unpack_checked(data: bytes | bytearray | memoryview) -> Any:
    try:
        return msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            use_list=True,
            ext_hook=_refuse_ext,
            **unpack_limits(len(data)),
        )
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        raise RemoteProtocolError(f"undecodable msgpack: {exc}") from None


def _skip_failed(exc: Exception) -> RemoteProtocolError:
    return RemoteProtocolError(f"undecodable msgpack: {type(exc).__name__} {exc}")


def unpack(data: bytes, max_bytes: int) -> Any:
    """The one msgpack value that fills `data` exactly, if it is within the bounds;
    RemoteProtocolError for garbage, a hostile shape, a truncated value or trailing bytes."""
    size = len(data)
    if size > max_bytes:
        raise RemoteProtocolError(f"message of {size} bytes exceeds {max_bytes}")
    # One buffer of the value's size: feeding copies the value once, and never grows it.
    skipper = msgpack.Unpacker(max_buffer_size=max(size, 1), read_size=max(size, 1))
    skipper.feed(data)
    try:
        skipper.skip()
    except msgpack.OutOfData:
        raise RemoteProtocolError(f"truncated msgpack: {size} bytes end inside a value") from None
    except Exception as exc:  # FormatError, StackError, ...
        raise _skip_failed(exc) from None
    if skipper.tell() != size:
        raise RemoteProtocolError(f"{size - skipper.tell()} bytes after the value")
    del skipper  # its copy of the value, freed before unpacking makes another (a snapshot's MBs)
    _check_cost(data)
    return _unpack_checked(data)


_STREAM_READ_BYTES = 64 * 1024


class BoundedUnpacker:
    """The msgpack values of one stream (one connection), each within the bounds and at most
    `max_bytes` long: `feed` bytes as they arrive, then iterate over the values they complete.
    Raises RemoteProtocolError for a value that is garbage, has a hostile shape or would be
    longer than `max_bytes`; the stream is unusable afterwards. A value's structure is checked
    as its bytes arrive (the skipper resumes where it stopped), its cost once it is complete."""

    def __init__(self, max_bytes: int) -> None:
        self._max = max_bytes
        # Its buffer starts small and grows with the values (msgpack's default starts at 1 MiB).
        self._skipper = msgpack.Unpacker(
            max_buffer_size=max_bytes, read_size=min(max_bytes, _STREAM_READ_BYTES)
        )
        self._buffer = bytearray()  # from the start of the next value
        self._start = 0  # the skipper's offset of self._buffer[0]

    def feed(self, data: bytes | bytearray) -> None:
        try:
            self._skipper.feed(data)
        except msgpack.BufferFull:
            raise RemoteProtocolError(f"a value longer than {self._max} bytes") from None
        self._buffer += data

    def __iter__(self) -> BoundedUnpacker:
        return self

    def __next__(self) -> Any:
        try:
            self._skipper.skip()
        except msgpack.OutOfData:
            raise StopIteration from None
        except Exception as exc:
            raise _skip_failed(exc) from None
        end = self._skipper.tell()
        size, self._start = end - self._start, end
        with memoryview(self._buffer) as whole, whole[:size] as value:
            _check_cost(value)
            result = _unpack_checked(value)
        del self._buffer[:size]
        return result
