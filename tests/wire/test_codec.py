"""wire.codec: round trips of every registered type, and decoding of hostile input.

The decoder's contract: whatever bytes or msgpack values a peer sends, `wire.decode` either returns
an instance of a registered class whose fields have their declared types, or raises
`RemoteProtocolError`; never anything else.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from swarmlet.errors import LocalProtocolError, RemoteProtocolError
from swarmlet.gossip import driver as gossip_driver
from swarmlet.gossip import messages as gossip_messages
from swarmlet.gossip.driver import GossipDatagram
from swarmlet.gossip.messages import Ack, Alive, Dead, MemberState, Ping, PushNodeState
from swarmlet.proxy import worker_protocol as proxy_workers
from swarmlet.raft import driver as raft_driver
from swarmlet.raft import messages as raft_messages
from swarmlet.raft import types as raft_types
from swarmlet.raft.types import ConfState, Entry, EntryKind, Snapshot, SnapshotMeta
from swarmlet.state import commands, machine, model, observed
from swarmlet.state.commands import AddNode, Batch, InitCluster, RemoveNode
from swarmlet.state.model import Node, Role, TaskState
from swarmlet.wire import codec
from swarmlet.wire import codec as wire
from swarmlet.wire import peer_rpc as rpc
from tests.wire.strategies import instances_of, plain_values

ALL_TYPES: tuple[type, ...] = (
    *gossip_messages.MESSAGES,
    *gossip_driver.WIRE_TYPES,
    *raft_types.WIRE_TYPES,
    *raft_messages.MESSAGES,
    *raft_driver.WIRE_TYPES,
    *model.WIRE_TYPES,
    *commands.COMMANDS,
    *machine.SNAPSHOT_TYPES,
    *observed.WIRE_TYPES,
    *rpc.MESSAGES,
    *proxy_workers.WIRE_TYPES,
)

# Type ids are persisted in Raft logs and sent to peers: they must never change. New classes may
# be appended; these pairs must stay as they are.
PERMANENT_IDS: dict[int, type] = {
    1: gossip_messages.Ping,
    9: gossip_messages.PushPullState,
    51: GossipDatagram,
    100: raft_types.Entry,
    105: raft_types.Snapshot,
    120: raft_messages.AppendEntries,
    180: raft_driver.RaftStreamHello,
    200: model.Resources,
    214: model.Secret,
    250: commands.InitCluster,
    264: commands.Batch,
    300: machine.StateSnapshot,
    320: observed.Endpoint,
    400: rpc.ProposeRequest,
    406: rpc.EndOfStream,
}

NODE = Node("n1", "host-1", "10.0.0.1:7946", "10.0.0.1", Role.MANAGER)


def _plain(msg: Any) -> Any:
    return msgpack.unpackb(wire.encode(msg), raw=False)


def _pack(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


def _decode_or_protocol_error(data: bytes, expect: tuple[type, ...] | None = None) -> Any:
    """Decode; a RemoteProtocolError is fine, anything else fails the test (it propagates)."""
    try:
        return wire.decode(data, expect=expect)
    except RemoteProtocolError:
        return None


def _reencodes_identically(msg: Any) -> bool:
    """Compared as bytes, so a NaN float a peer sent does not make equality fail."""
    data = wire.encode(msg)
    return wire.encode(wire.decode(data)) == data


# ------------------------------------------------------------------------------- round trips


def test_every_core_message_class_is_registered() -> None:
    unregistered = [cls.__name__ for cls in ALL_TYPES if not wire.registered(cls)]
    assert unregistered == []


@pytest.mark.parametrize(("type_id", "cls"), sorted(PERMANENT_IDS.items()))
@settings(max_examples=3, deadline=None)
@given(data=st.data())
def test_permanent_type_ids_never_change(type_id: int, cls: type, data: st.DataObject) -> None:
    msg = data.draw(instances_of(cls))
    plain = _plain(msg)
    assert plain[0] == type_id
    fields = [f for f in dataclasses.fields(cls) if f.init]
    # Every field but a trailing run of fields appended since the oldest protocol in the
    # window that hold their defaults (`codec.appended`).
    kept = len(fields)
    while kept and _appended_at_default(msg, fields[kept - 1]):
        kept -= 1
    assert len(plain[1]) == kept


def _appended_at_default(msg: Any, f: dataclasses.Field[Any]) -> bool:
    if not any(key.endswith("since_protocol") for key in f.metadata):
        return False
    if f.default is not dataclasses.MISSING:
        return bool(getattr(msg, f.name) == f.default)
    return bool(getattr(msg, f.name) == f.default_factory())  # type: ignore[misc]


def test_fields_appended_at_their_default_are_left_out_so_older_releases_decode() -> None:
    """An older release refuses a message with more fields than it knows: a field appended
    since is sent only once it holds something; older fields are always sent."""
    fields = [f.name for f in dataclasses.fields(Node)]
    first_appended = fields.index("sealed_cluster_key")
    assert len(_plain(NODE)[1]) == first_appended  # what protocol 1 knows, no more
    rotated = dataclasses.replace(NODE, cluster_key_epoch=3)
    assert len(_plain(rotated)[1]) == fields.index("cluster_key_epoch") + 1
    assert wire.decode(wire.encode(rotated)) == rotated
    # A field older than the window is sent at its default all the same (snapshots keep
    # their bytes and their density).
    assert _plain(NODE)[1][fields.index("signing_key")] == b""


@pytest.mark.parametrize("cls", ALL_TYPES, ids=lambda cls: cls.__name__)
@settings(max_examples=8, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(data=st.data())
def test_every_registered_type_round_trips_unchanged(cls: type, data: st.DataObject) -> None:
    msg = data.draw(instances_of(cls))
    decoded = wire.decode(wire.encode(msg))
    assert type(decoded) is cls
    assert decoded == msg
    # and restricted to its own type
    assert wire.decode(wire.encode(msg), expect=(cls,)) == msg


def _reference_plain(value: Any) -> Any:
    """The generic, uncompiled encoding (the codec's before it compiled encoders per type):
    what every message's bytes must stay (they are signed, checksummed and persisted)."""
    if value is None or isinstance(value, bool | int | float | str | bytes):
        return value.value if isinstance(value, enum.Enum) else value
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, tuple | list):
        return [_reference_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _reference_plain(v) for k, v in value.items()}
    cls = type(value)
    fields = [f for f in dataclasses.fields(cls) if f.init]
    end = len(fields)
    while end and _appended_at_default(value, fields[end - 1]):
        end -= 1
    return [wire._id_by_type[cls], [_reference_plain(getattr(value, f.name)) for f in fields[:end]]]


@pytest.mark.parametrize("cls", ALL_TYPES, ids=lambda cls: cls.__name__)
@settings(max_examples=8, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(data=st.data())
def test_compiled_encoding_gives_the_generic_encodings_bytes(
    cls: type, data: st.DataObject
) -> None:
    msg = data.draw(instances_of(cls))
    assert wire.encode(msg) == msgpack.packb(_reference_plain(msg), use_bin_type=True)


def test_encoding_is_type_id_then_positional_fields() -> None:
    assert _plain(Ping(7, "b")) == [1, [7, "b"]]
    assert _plain(Entry(2, 3, EntryKind.CONF_CHANGE, b"x")) == [100, [2, 3, 1, b"x"]]


def test_enums_travel_as_their_values() -> None:
    plain = _plain(PushNodeState("a", "h", 1, b"", 5, MemberState.DEAD))
    assert plain[1][5] == 2
    assert _plain(NODE)[1][4] == "manager"


def test_nested_struct_union_round_trips_each_member_type() -> None:
    datagram = GossipDatagram(
        (Ping(1, "a"), Ack(1), Alive(3, "a", "h", 7946, b"m"), Dead(4, "b", "a"))
    )
    decoded = wire.decode(wire.encode(datagram))
    assert decoded == datagram
    assert [type(m) for m in decoded.msgs] == [Ping, Ack, Alive, Dead]


def test_nested_batch_round_trips() -> None:
    batch = Batch((InitCluster("c", 1.0, b"w", b"m"), Batch((AddNode(NODE), RemoveNode("n1")))))
    assert wire.decode(wire.encode(batch)) == batch


def test_optional_struct_field_round_trips_both_ways() -> None:
    spec = model.ServiceSpec("web", "nginx")
    for service in (model.Service("s1", spec), model.Service("s1", spec, previous_spec=spec)):
        assert wire.decode(wire.encode(service)) == service


def test_streaming_unpacker_and_from_plain_decode_concatenated_messages() -> None:
    msgs = [Ping(1, "a"), Ack(1), NODE]
    unpacker = wire.new_unpacker()
    unpacker.feed(b"".join(wire.encode(m) for m in msgs))
    assert [wire.from_plain(value) for value in unpacker] == msgs


@pytest.mark.parametrize("cls", ALL_TYPES, ids=lambda cls: cls.__name__)
@settings(max_examples=4, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(data=st.data())
def test_every_registered_type_round_trips_through_a_stream_cut_anywhere(
    cls: type, data: st.DataObject
) -> None:
    # The streaming unpacker checks a value's bounds as its bytes arrive, in any pieces.
    msgs = [data.draw(instances_of(cls)), data.draw(instances_of(cls))]
    stream = b"".join(wire.encode(m) for m in msgs)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=4)))
    unpacker = wire.new_unpacker()
    values = []
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        unpacker.feed(stream[start:end])
        values.extend(unpacker)
    assert [wire.from_plain(value) for value in values] == msgs


def test_int_is_accepted_for_a_float_field_and_becomes_float() -> None:
    task_plain = [213, ["t", "s", 1, 1, 4, 0, "", "", "", 0, 5, 6]]  # Task, int timestamps
    task = wire.decode(_pack(task_plain))
    assert isinstance(task.created_at, float)
    assert task.created_at == 5.0


# ------------------------------------------------------------------------------- encoding errors


def test_encoding_an_unregistered_type_raises_local_protocol_error() -> None:
    @dataclasses.dataclass(frozen=True, slots=True)
    class Stranger:
        x: int

    with pytest.raises(LocalProtocolError):
        wire.encode(Stranger(1))
    with pytest.raises(LocalProtocolError):
        wire.encode({"not": "a message"})
    with pytest.raises(LocalProtocolError):
        wire.encode(GossipDatagram((Stranger(1),)))  # type: ignore[arg-type]


def test_registering_a_non_frozen_class_or_a_taken_id_is_refused() -> None:
    @dataclasses.dataclass
    class Mutable:
        x: int

    @dataclasses.dataclass(frozen=True)
    class Frozen:
        x: int

    with pytest.raises(TypeError):
        wire.register(599, Mutable)
    with pytest.raises(ValueError, match="already registered"):
        wire.register(1, Frozen)
    with pytest.raises(ValueError, match="already registered"):
        wire.register(598, Ping)
    wire.register(1, Ping)  # idempotent for the same pair


# ------------------------------------------------------------------------------- hostile input


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_random_bytes_raise_nothing_but_remote_protocol_error(data: bytes) -> None:
    _decode_or_protocol_error(data)


@settings(max_examples=150)
@given(plain_values)
def test_random_msgpack_values_raise_nothing_but_remote_protocol_error(value: Any) -> None:
    _decode_or_protocol_error(_pack(value))


@settings(max_examples=120)
@given(st.sampled_from(sorted(wire._type_by_id)), st.lists(plain_values, max_size=14))
def test_message_shaped_random_values_raise_nothing_but_remote_protocol_error(
    type_id: int, fields: list[Any]
) -> None:
    decoded = _decode_or_protocol_error(_pack([type_id, fields]))
    if decoded is not None:  # it happened to be valid: then it must be the real thing
        assert _reencodes_identically(decoded)


@settings(max_examples=120, deadline=None)
@given(st.sampled_from(ALL_TYPES).flatmap(instances_of), st.data())
def test_a_valid_message_with_one_field_replaced_decodes_correctly_or_is_rejected(
    msg: Any, data: st.DataObject
) -> None:
    plain = _plain(msg)
    fields = plain[1]
    if not fields:
        return
    index = data.draw(st.integers(min_value=0, max_value=len(fields) - 1))
    fields[index] = data.draw(plain_values)
    decoded = _decode_or_protocol_error(_pack(plain))
    if decoded is not None:
        assert type(decoded) is type(msg)
        assert _reencodes_identically(decoded)


@pytest.mark.parametrize(
    "fields",
    [[], [1], [1, "a", "extra"]],
    ids=["none", "too-few", "too-many"],
)
def test_wrong_field_count_is_rejected(fields: list[Any]) -> None:
    with pytest.raises(RemoteProtocolError, match="fields"):
        wire.decode(_pack([1, fields]))


def test_trailing_fields_with_defaults_may_be_absent() -> None:
    # A message from before a field was appended (with a default) still decodes: the field
    # takes its default. Fields without a default may never be absent.
    alive = Alive(3, "n1", "10.0.0.1", 7946, b"meta", b"sig")
    plain = msgpack.unpackb(wire.encode(alive))
    without_signature = [plain[0], plain[1][:-1]]
    assert wire.from_plain(without_signature) == dataclasses.replace(alive, signature=b"")
    without_meta = [plain[0], plain[1][:-2]]
    with pytest.raises(RemoteProtocolError, match="fields"):
        wire.from_plain(without_meta)


@pytest.mark.parametrize(
    ("plain", "why"),
    [
        ([1, ["7", "a"]], "str for int"),
        ([1, [True, "a"]], "bool for int"),
        ([1, [1.5, "a"]], "float for int"),
        ([1, [None, "a"]], "nil for int"),
        ([1, [1, b"a"]], "bytes for str"),
        ([5, [1, "a", "h", 1, "meta"]], "str for bytes"),
        ([2, [1, "t", "h", 1, 1]], "int for bool"),
        ([100, [1, 1, 9, b""]], "unknown IntEnum value"),
        ([201, ["n", "n", "a", "p", "boss", "active", {}, [200, [0, 0]], 0.0]], "bad StrEnum"),
        ([201, ["n", "n", "a", "p", "manager", "active", [], [200, [0, 0]], 0.0]], "list for map"),
        ([201, ["n", "n", "a", "p", "manager", "active", {b"k": "v"}, [200, [0, 0]], 0.0]], "key"),
        ([201, ["n", "n", "a", "p", "manager", "active", {"k": 1}, [200, [0, 0]], 0.0]], "value"),
        ([201, ["n", "n", "a", "p", "manager", "active", {}, [0, 0], 0.0]], "struct not tagged"),
        ([201, ["n", "n", "a", "p", "manager", "active", {}, [1, [1, "a"]], 0.0]], "wrong struct"),
        ([103, [["a", 1], []]], "int in tuple[str, ...]"),
        ([103, ["ab", []]], "str for tuple"),
        ([1, {"seq_no": 1, "target": "a"}], "fields as a map"),
        ([1], "no fields"),
        ("ping", "not an array"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_values_of_the_wrong_type_are_rejected(plain: Any, why: str) -> None:
    with pytest.raises(RemoteProtocolError):
        wire.decode(_pack(plain))


@pytest.mark.parametrize("type_id", [0, 99, 599, 10**6, -1, "1", None, 1.0, [1]])
def test_unknown_type_ids_are_rejected(type_id: Any) -> None:
    with pytest.raises(RemoteProtocolError, match="unexpected message type"):
        wire.decode(_pack([type_id, [1, "a"]]))


def test_a_bool_type_id_is_rejected() -> None:
    with pytest.raises(RemoteProtocolError):
        wire.decode(_pack([True, [1, "a"]]))


def test_expect_restricts_the_top_level_type() -> None:
    data = wire.encode(Ping(1, "a"))
    assert wire.decode(data, expect=(Ack, Ping)) == Ping(1, "a")
    with pytest.raises(RemoteProtocolError, match="unexpected message type"):
        wire.decode(data, expect=(Ack,))
    with pytest.raises(RemoteProtocolError):
        wire.decode(data, expect=())


def test_expect_does_not_apply_to_nested_values() -> None:
    # Nested values are checked against their field's declared type instead.
    entry = Entry(1, 1)
    snap = Snapshot(SnapshotMeta(1, 1, ConfState(("a",), ())), b"s")
    assert wire.decode(wire.encode(snap), expect=(Snapshot,)) == snap
    assert wire.decode(wire.encode(entry), expect=(Entry,)) == entry


def test_a_struct_outside_a_union_field_is_rejected() -> None:
    # GossipDatagram.msgs holds gossip messages only; a Raft Entry inside is refused.
    plain = _plain(GossipDatagram((Ping(1, "a"),)))
    plain[1][0][0] = _plain(Entry(1, 1))
    with pytest.raises(RemoteProtocolError, match="unexpected message type"):
        wire.decode(_pack(plain))
    # Batch.commands holds commands only; a model Node is not one.
    batch = _plain(Batch((RemoveNode("x"),)))
    batch[1][0][0] = _plain(NODE)
    with pytest.raises(RemoteProtocolError):
        wire.decode(_pack(batch))


def test_a_union_of_plain_types_picks_the_matching_member() -> None:
    obs = observed.TaskObservation("t", TaskState.RUNNING, healthy=None, exit_code=None)
    assert wire.decode(wire.encode(obs)) == obs
    plain = _plain(obs)
    plain[1][4] = "yes"  # healthy: bool | None
    with pytest.raises(RemoteProtocolError, match="matches none"):
        wire.decode(_pack(plain))


def _nested_batch(levels: int) -> Batch:
    batch = Batch(())
    for _ in range(levels):
        batch = Batch((batch,))
    return batch


def test_moderately_nested_messages_decode() -> None:
    batch = _nested_batch(4)
    assert wire.decode(wire.encode(batch)) == batch


def test_deep_nesting_is_refused_with_a_protocol_error() -> None:
    data = wire.encode(_nested_batch(40))  # encoding our own value is not bounded
    with pytest.raises(RemoteProtocolError, match="nested too deeply"):
        wire.decode(data)


def test_pathologically_deep_msgpack_is_a_protocol_error_not_a_crash() -> None:
    depth = 100_000
    data = b"\x91" * depth + b"\xc0"  # [[[[...nil...]]]]
    with pytest.raises(RemoteProtocolError):
        wire.decode(data)
    # the same depth inside a message body
    with pytest.raises(RemoteProtocolError):
        wire.decode(b"\x92\xcd\x01\x08\x91" + b"\x91" * depth + b"\xc0")


def test_trailing_bytes_after_a_message_are_rejected() -> None:
    with pytest.raises(RemoteProtocolError):
        wire.decode(wire.encode(Ping(1, "a")) + b"\x00")


def test_oversized_input_is_refused_before_unpacking() -> None:
    data = wire.encode(Alive(1, "a", "h", 1, b"x" * 100))
    with pytest.raises(RemoteProtocolError, match="exceeds"):
        wire.unpack_plain(data, max_bytes=50)
    assert wire.unpack_plain(data, max_bytes=len(data))[0] == 5


def test_str_fields_must_be_valid_utf8() -> None:
    bad = b"\x92\x01\x92\x01\xa2\xff\xfe"  # [1, [1, <str with invalid utf-8>]]
    with pytest.raises(RemoteProtocolError):
        wire.decode(bad)


def test_a_type_decoded_for_the_first_time_twice_at_once_decodes_both_times(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A worker's large frame is decoded in a thread while the loop decodes others: the
    thread may stop between filling the first-use caches of a type (the switch interval is
    1 ms then), and the loop decode the same type. It found the plan without its count of
    required fields: a KeyError, which no handler expects, stopped the agent. Played here in
    one thread: the other decode runs at the moment the thread would have stopped."""
    data = codec.encode(observed.StatusReport(1))
    monkeypatch.delitem(codec._plans, observed.StatusReport, raising=False)
    monkeypatch.delitem(codec._required, observed.StatusReport, raising=False)
    count = codec._required_count
    interleaved: list[object] = []
    stopped = False

    def required_count(cls: type[Any]) -> int:
        nonlocal stopped
        if not stopped:  # the first decode, stopped here; the other one runs
            stopped = True
            interleaved.append(codec.decode(data))
        return count(cls)

    monkeypatch.setattr(codec, "_required_count", required_count)
    assert codec.decode(data) == observed.StatusReport(1)
    assert interleaved == [observed.StatusReport(1)]
