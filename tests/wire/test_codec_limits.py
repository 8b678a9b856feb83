"""wire.bounds: what decoding a peer's msgpack may allocate, measured with tracemalloc.

Each hostile shape is a frame a peer holding the cluster key (any worker) can send on the Raft
and RPC streams, in a gossip datagram, or a proxy worker on its control socket: without the
bounds, msgpack preallocates what a frame declares (nested array headers) and builds 70 times a
frame's size in objects (empty maps). Each test says what the attack did and checks that it is
refused as a RemoteProtocolError while allocating about one copy of the frame. Legitimate
messages, large ones included, still decode.
"""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Callable, Iterator
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings

from swarmlet.api import control_protocol
from swarmlet.errors import RemoteProtocolError
from swarmlet.raft.messages import AppendEntries, InstallSnapshot
from swarmlet.raft.types import ConfState, Entry, EntryKind, Snapshot, SnapshotMeta
from swarmlet.state.commands import CreateService
from swarmlet.state.machine import ClusterState
from swarmlet.state.model import Service, ServiceSpec, Task
from swarmlet.wire import bounds
from swarmlet.wire import codec as wire
from tests.leader.orchestrator.cluster import make_state
from tests.wire.strategies import plain_values

MIB = 1024 * 1024
# What refusing a frame may allocate: the skipper's copy of it, plus small change.
REFUSAL_OVERHEAD_BYTES = 64 * 1024


def _peak(action: Callable[[], Any]) -> tuple[int, BaseException | None]:
    """The peak of traced allocations while `action` runs, and what it raised. The collector
    is off meanwhile: only blocks allocated after the start are traced, so what it could free
    does not matter, and a `gc.collect()` before each measurement took a second once the test
    process held the objects of the tests before (75 s for this file's random values)."""
    collecting = gc.isenabled()
    gc.disable()
    tracemalloc.start()
    error: BaseException | None = None
    try:
        action()
    except Exception as exc:
        error = exc
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        if collecting:
            gc.enable()
    return peak, error


def _array(items: bytes, count: int) -> bytes:
    """An array32 header for `count` elements, then `items` (as many as the frame holds)."""
    return b"\xdd" + count.to_bytes(4, "big") + items


def _raw_unpack(frame: bytes) -> Any:
    return msgpack.unpackb(frame, raw=False, strict_map_key=True)


def _stream(frame: bytes, chunk: int = 65536, max_bytes: int = 64 * MIB) -> list[Any]:
    unpacker = wire.new_unpacker(max_bytes)
    values = []
    for i in range(0, len(frame), chunk):
        unpacker.feed(frame[i : i + chunk])
        values.extend(unpacker)
    return values


# Many tiny elements: 256 KiB frames of the elements that cost the most memory per byte.
N = 256 * 1024
TINY_ELEMENTS = {
    "empty maps": _array(b"\x80" * N, N),  # 1 byte -> a 64-byte dict and its slot
    "empty arrays": _array(b"\x90" * N, N),  # 1 byte -> a 56-byte list and its slot
    "negative fixints": _array(b"\xfa" * N, N),  # -6: 1 byte -> a 28-byte int
    "one-nil arrays": _array(b"\x91\xc0" * (N // 2), N // 2),
    "one-pair maps": _array(b"\x81\xa0\xc0" * (N // 3), N // 3),  # {"": nil}
    "two-char strs": _array(b"\xa2ab" * (N // 3), N // 3),
}


@pytest.mark.parametrize("shape", sorted(TINY_ELEMENTS))
def test_a_frame_of_many_tiny_elements_is_refused_before_it_is_built(shape: str) -> None:
    frame = TINY_ELEMENTS[shape]
    unguarded, _ = _peak(lambda: _raw_unpack(frame))
    assert unguarded > 17 * len(frame)  # the attack: msgpack alone builds all of it

    peak, error = _peak(lambda: wire.decode(frame))
    assert peak <= len(frame) + REFUSAL_OVERHEAD_BYTES
    assert isinstance(error, RemoteProtocolError)
    assert "budget" in str(error)

    peak, error = _peak(lambda: _stream(frame))
    assert isinstance(error, RemoteProtocolError)
    assert peak <= 2 * len(frame) + REFUSAL_OVERHEAD_BYTES  # the stream's buffer, and the skipper's


def test_nested_array_headers_declaring_absent_elements_allocate_nothing() -> None:
    # 1,000 array16 headers, each declaring 3,000 elements that never come.
    frame = (b"\xdc" + (3000).to_bytes(2, "big")) * 1000
    unguarded, _ = _peak(lambda: _raw_unpack(frame))
    assert unguarded > 1000 * len(frame)  # the attack: 24 MB preallocated for 3 KB

    peak, error = _peak(lambda: wire.decode(frame))
    assert peak <= len(frame) + REFUSAL_OVERHEAD_BYTES
    assert isinstance(error, RemoteProtocolError)
    assert "truncated" in str(error)


def test_a_stream_of_nested_headers_waits_for_their_elements_without_allocating_them() -> None:
    # On a stream, msgpack's Unpacker bounds each length by its buffer size (16 MiB for a
    # proxy worker), not by the bytes that came: 3 KB used to hold 80 MB.
    frame = b"\xdc\xff\xff" * 1000
    unguarded = msgpack.Unpacker(raw=False, max_buffer_size=16 * MIB)
    unguarded.feed(frame)
    peak, _ = _peak(lambda: list(unguarded))
    assert peak > 1000 * len(frame)

    unpacker = wire.new_unpacker(16 * MIB)
    unpacker.feed(frame)
    peak, error = _peak(lambda: list(unpacker))
    assert error is None  # not complete yet: nothing to decode, nothing built
    assert peak <= len(frame) + REFUSAL_OVERHEAD_BYTES


@pytest.mark.parametrize(
    "frame",
    [
        b"\xdd\xff\xff\xff\xff",  # array of 2^32-1 elements, 5 bytes
        b"\xdf\xff\xff\xff\xff",  # map of 2^32-1 pairs
        b"\xdb\xff\xff\xff\xffab",  # str of 2^32-1 bytes
        b"\xc6\xff\xff\xff\xffab",  # bin of 2^32-1 bytes
        b"\x92\xcd\x01\x08\x92\x01\xdd\x00\x10\x00\x00",  # a message whose field declares 1M
    ],
    ids=["array", "map", "str", "bin", "inside-a-message"],
)
def test_huge_declared_lengths_are_refused_without_allocating_them(frame: bytes) -> None:
    peak, error = _peak(lambda: wire.decode(frame))
    assert isinstance(error, RemoteProtocolError)
    assert peak <= len(frame) + REFUSAL_OVERHEAD_BYTES
    peak, error = _peak(lambda: _stream(frame))
    assert error is None  # a stream waits for the rest (and refuses it past max_bytes)
    assert peak <= 2 * REFUSAL_OVERHEAD_BYTES  # the unpacker's own buffer and stack


def test_deep_nesting_is_refused_without_allocating_much() -> None:
    frame = b"\x91" * 100_000 + b"\xc0"  # [[[[...nil...]]]]
    peak, error = _peak(lambda: wire.decode(frame))
    assert isinstance(error, RemoteProtocolError)
    assert peak <= len(frame) + REFUSAL_OVERHEAD_BYTES
    # Shallower than msgpack's own stack, deeper than any message: built (it is small), then
    # refused by the codec.
    frame = b"\x92\xcd\x01\x08\x91" + b"\x91" * 500 + b"\xc0"
    peak, error = _peak(lambda: wire.decode(frame))
    assert isinstance(error, RemoteProtocolError)
    assert peak <= bounds.budget(len(frame))


def test_a_stream_value_longer_than_its_bound_is_a_protocol_error() -> None:
    unpacker = wire.new_unpacker(1000)
    with pytest.raises(RemoteProtocolError, match="longer than 1000"):
        unpacker.feed(msgpack.packb(b"x" * 2000))
    unpacker = wire.new_unpacker(1000)
    unpacker.feed(b"\xc5\x07\xd0" + b"x" * 900)  # a bin of 2000 bytes, fed in two pieces
    assert list(unpacker) == []
    with pytest.raises(RemoteProtocolError, match="longer than 1000"):
        unpacker.feed(b"x" * 200)


@pytest.mark.parametrize(
    "value",
    [msgpack.ExtType(1, b"x"), msgpack.Timestamp(1, 0), [1, [msgpack.ExtType(5, b"")]]],
    ids=["ext", "timestamp", "nested-ext"],
)
def test_ext_types_are_refused(value: Any) -> None:
    with pytest.raises(RemoteProtocolError):
        wire.unpack_plain(msgpack.packb(value, datetime=False))
    with pytest.raises(RemoteProtocolError):
        _stream(msgpack.packb(value))


def test_per_object_limits_follow_the_value_size() -> None:
    assert bounds.unpack_limits(100) == {
        "max_str_len": 100,
        "max_bin_len": 100,
        "max_array_len": 100,
        "max_map_len": 50,
        "max_ext_len": 0,
    }


def test_truncated_values_and_trailing_bytes_are_refused() -> None:
    data = wire.encode(CreateService(Service("s1", ServiceSpec(name="web", image="nginx"))))
    for cut in range(len(data)):
        with pytest.raises(RemoteProtocolError):
            wire.unpack_plain(data[:cut])
    with pytest.raises(RemoteProtocolError, match="after the value"):
        wire.unpack_plain(data + b"\xc0")


# ------------------------------------------------------------------------- the cost model


def _real_cost(data: bytes) -> int:
    """What unpacking `data` allocates: the least of three measurements, since tracemalloc also
    counts what any other thread of the test process allocates meanwhile (a leftover daemon
    thread of an earlier test once made an empty bin "cost" 9 KB), never less."""
    peaks = []
    for _ in range(3):
        peak, error = _peak(lambda: _raw_unpack(data))
        assert error is None
        peaks.append(peak)
    return min(peaks)


def _shapes() -> Iterator[tuple[str, bytes]]:
    """One value of each kind of object at several sizes (and many of them), to hold the
    estimate above what msgpack really allocates."""
    for n in (0, 1, 5, 6, 11, 22, 100, 1000, 20_000):
        keys = [f"k{i}" for i in range(n)]
        yield f"map of {n}", msgpack.packb(dict.fromkeys(keys))
        yield f"map of {n} bin keys", msgpack.packb({k.encode(): 1 for k in keys})
        yield f"array of {n}", msgpack.packb([None] * n)
        yield f"{n} empty maps", msgpack.packb([{} for _ in range(n)])
        yield f"{n} one-pair maps", msgpack.packb([{"": None} for _ in range(n)])
        yield f"{n} empty arrays", msgpack.packb([[] for _ in range(n)])
    for text in ("a", "ab", "é", "ā", "😀", "a😀", "x" * 31, "x" * 300, "é" * 300, "😀" * 300):
        yield f"strs {text[:3]!r}x{len(text)}", msgpack.packb([text + str(i) for i in range(500)])
    for blob in (b"a", b"ab", b"x" * 300):
        yield f"bins x{len(blob)}", msgpack.packb([blob + bytes([i % 256]) for i in range(500)])
    for number in (-1, -6, -32, -33, -200, 200, 300, 70_000, 2**31, 2**40, -(2**40), 2**64 - 1):
        yield f"ints {number}", msgpack.packb([number] * 1000)
    yield "floats", msgpack.packb([1.5] * 1000)
    yield "float32", b"\xdc\x03\xe8" + b"\xca\x3f\xc0\x00\x00" * 1000


@pytest.mark.parametrize(("name", "data"), list(_shapes()), ids=[name for name, _ in _shapes()])
def test_the_estimate_is_never_below_what_unpacking_allocates(name: str, data: bytes) -> None:
    assert bounds.estimate(data) >= _real_cost(data)


@settings(max_examples=60, deadline=None)
@given(plain_values)
def test_the_estimate_holds_for_random_values(value: Any) -> None:
    data = msgpack.packb(value, use_bin_type=True)
    assert bounds.estimate(data) >= _real_cost(data)


@pytest.mark.parametrize("shape", sorted(TINY_ELEMENTS))
def test_no_small_value_expands_more_than_the_worst_case(shape: str) -> None:
    # Values up to SMALL_VALUE_BYTES skip the estimate: their worst shape must stay within
    # WORST_EXPANSION, so within EXPANSION_SLACK_BYTES.
    items = TINY_ELEMENTS[shape][5:]
    unit = {"one-nil arrays": 2, "one-pair maps": 3, "two-char strs": 3}
    step = unit.get(shape, 1)
    count = (bounds.SMALL_VALUE_BYTES - 5) // step
    data = _array(items[: count * step], count)
    assert len(data) <= bounds.SMALL_VALUE_BYTES
    assert _real_cost(data) <= bounds.WORST_EXPANSION * len(data)
    assert bounds.WORST_EXPANSION * bounds.SMALL_VALUE_BYTES <= bounds.EXPANSION_SLACK_BYTES


# ------------------------------------------------------------------ legitimate large values


def _tasks_snapshot(tasks: int) -> bytes:
    state = make_state(100)
    for s in range(10):
        state.services[f"s{s}"] = Service(f"s{s}", ServiceSpec(name=f"s{s}", image="x"))
    for i in range(tasks):
        task = Task(f"t{i:06d}", f"s{i % 10}", i + 1, 1, node_id=f"n{i % 100:02d}")
        state.tasks[task.id] = task
    return state.snapshot()


def _services_snapshot(services: int) -> bytes:
    # The densest state there is: specs of empty tuples and empty maps.
    state = make_state(3)
    for s in range(services):
        state.services[f"s{s:05d}"] = Service(f"s{s:05d}", ServiceSpec(name=f"s{s:05d}", image="x"))
    return state.snapshot()


@pytest.mark.parametrize("build", [_tasks_snapshot, _services_snapshot], ids=["tasks", "services"])
def test_large_state_snapshots_decode_within_their_budget(build: Callable[[int], bytes]) -> None:
    data = build(5_000 if build is _services_snapshot else 20_000)
    assert len(data) > MIB // 2
    assert bounds.estimate(data) <= 0.75 * bounds.budget(len(data))  # room to spare
    peak, error = _peak(lambda: wire.decode(data))
    assert error is None
    assert peak <= 2 * bounds.budget(len(data))  # the plain value, and the objects built from it
    state = ClusterState.restore(data)
    assert state.snapshot() == data


def test_large_raft_messages_decode() -> None:
    command = wire.encode(CreateService(Service("s1", ServiceSpec(name="web", image="nginx"))))
    entries = tuple(
        Entry(3, 10 + i, EntryKind.NORMAL, command + bytes(64 * 1024)) for i in range(64)
    )
    batch = AppendEntries("n1", "n2", 3, 9, 3, entries, 9)
    snapshot = InstallSnapshot(
        "n1", "n2", 3, Snapshot(SnapshotMeta(70, 3, ConfState(("n1",))), bytes(32 * MIB))
    )
    for message in (batch, snapshot):
        data = wire.encode(message)
        assert bounds.estimate(data) <= 2 * len(data)
        assert wire.decode(data) == message
        assert _stream(data) == [msgpack.unpackb(data, raw=False)]


# ------------------------------------------------------------- the control socket's decoder


def _control_frame(body: bytes) -> bytearray:
    return bytearray(control_protocol.FRAME_HEADER.pack(len(body)) + body)


@pytest.mark.parametrize(
    "body",
    [b"\xdd\xff\xff\xff\xff", b"\xdb\xff\xff\xff\xff", msgpack.packb(msgpack.ExtType(1, b"x"))],
    ids=["array", "str", "ext"],
)
def test_the_control_socket_refuses_lengths_beyond_its_frame_and_ext_types(body: bytes) -> None:
    buffer = _control_frame(body)
    peak, error = _peak(lambda: control_protocol.next_frame(buffer))
    assert isinstance(error, RemoteProtocolError)
    assert peak <= REFUSAL_OVERHEAD_BYTES
    assert control_protocol.next_frame(_control_frame(msgpack.packb({"op": "x"}))) == {"op": "x"}
