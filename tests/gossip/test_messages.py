"""Message precedence, size estimates and well-formedness checks."""

from __future__ import annotations

import dataclasses
import enum

import msgpack
from hypothesis import given
from hypothesis import strategies as st

from swarmlet.gossip import messages
from swarmlet.gossip.messages import (
    COMPOUND_OVERHEAD_BYTES,
    MAX_SIGNATURE_BYTES,
    MESSAGES,
    Ack,
    Alive,
    Dead,
    MemberState,
    Message,
    Nack,
    Ping,
    PingReq,
    PushNodeState,
    Suspect,
    alive_signed_bytes,
    estimate_size,
    is_well_formed,
    overrides,
    precedence_key,
)

states = st.sampled_from(list(MemberState))
incarnations = st.integers(min_value=0, max_value=2**63 - 2)
names = st.text(min_size=1, max_size=60).filter(lambda s: len(s.encode()) <= 255)
# Hosts to connect to: IP addresses and DNS names (`wire.hosts`), up to the longest name.
hosts = st.one_of(
    st.ip_addresses().map(str),
    st.from_regex(
        r"([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.){0,4}[a-z]([a-z0-9-]{0,61}[a-z0-9])?",
        fullmatch=True,
    ).filter(lambda s: len(s) <= 253),
)


@given(states, incarnations, states, incarnations)
def test_overriding_news_always_moves_up_the_total_precedence_order(
    new: MemberState, new_inc: int, old: MemberState, old_inc: int
) -> None:
    if overrides(new, new_inc, old, old_inc):
        assert precedence_key(new, new_inc) > precedence_key(old, old_inc)
        assert not overrides(old, old_inc, new, new_inc)  # asymmetric


@given(states, incarnations)
def test_nothing_overrides_itself(state: MemberState, inc: int) -> None:
    assert not overrides(state, inc, state, inc)


@given(states, incarnations, incarnations)
def test_alive_overrides_exactly_when_its_incarnation_is_newer(
    old: MemberState, old_inc: int, new_inc: int
) -> None:
    assert overrides(MemberState.ALIVE, new_inc, old, old_inc) == (new_inc > old_inc)


def test_precedence_table_follows_memberlist() -> None:
    a, s, d, left = MemberState.ALIVE, MemberState.SUSPECT, MemberState.DEAD, MemberState.LEFT
    table = [
        # new, new_inc, old, old_inc, overrides
        (s, 1, a, 1, True),  # suspectNode: Suspect(i) over Alive(i)
        (s, 0, a, 1, False),
        (s, 2, s, 1, False),  # a confirmation, not a change
        (d, 1, s, 1, True),
        (d, 1, a, 1, True),
        (left, 1, a, 1, True),
        (d, 5, d, 1, False),  # already dead
        (s, 5, d, 1, False),
        (a, 2, d, 1, True),  # a rejoin with a newer incarnation
        (a, 1, d, 1, False),
        (a, 1, s, 1, False),  # a refutation needs a newer incarnation
        (a, 2, s, 1, True),
    ]
    for new, new_inc, old, old_inc, expected in table:
        assert overrides(new, new_inc, old, old_inc) is expected, (new, new_inc, old, old_inc)


def _plain(value: object) -> object:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.IntEnum):
        return int(value)
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


def _encoded_sizes(msg: Message) -> list[int]:
    """The message encoded as [type, {field: value}] and as [type, [values]]."""
    type_id = MESSAGES.index(type(msg))
    as_map = _plain(msg)
    assert isinstance(as_map, dict)
    forms = [[type_id, as_map], [type_id, list(as_map.values())]]
    return [len(msgpack.packb(f, use_bin_type=True)) for f in forms]


wire_messages = st.one_of(
    st.builds(Ping, st.integers(0, 2**63 - 1), names),
    st.builds(
        PingReq, st.integers(0, 2**63 - 1), names, hosts, st.integers(1, 65535), st.booleans()
    ),
    st.builds(Ack, st.integers(0, 2**63 - 1)),
    st.builds(Nack, st.integers(0, 2**63 - 1)),
    st.builds(
        Alive,
        incarnations,
        names,
        hosts,
        st.integers(1, 65535),
        st.binary(max_size=2000),
        st.binary(max_size=MAX_SIGNATURE_BYTES),
    ),
    st.builds(Suspect, incarnations, names, names),
    st.builds(Dead, incarnations, names, names),
)


@given(wire_messages)
def test_size_estimate_bounds_both_msgpack_encodings(msg: Message) -> None:
    assert max(_encoded_sizes(msg)) <= estimate_size(msg)


def test_size_estimate_of_a_compound_covers_its_framing() -> None:
    msgs: list[Message] = [Ping(7, "node-a"), Alive(3, "node-b", "10.0.0.2", 7946, b"x" * 500)]
    encoded = len(msgpack.packb([99, [_plain(m) for m in msgs]], use_bin_type=True))
    assert encoded <= COMPOUND_OVERHEAD_BYTES + sum(estimate_size(m) for m in msgs)


def test_message_classes_follow_the_wire_contract() -> None:
    for cls in MESSAGES:
        assert dataclasses.is_dataclass(cls)
        params = cls.__dataclass_params__  # type: ignore[attr-defined]
        assert params.frozen
        assert "__slots__" in cls.__dict__


@given(wire_messages)
def test_every_generated_message_is_well_formed(msg: Message) -> None:
    assert is_well_formed(msg)


BAD_HOSTS = ("a" * 70, "a\x00b", ".", "", "x..y", "-a.b", "bücher.de", "a" * 254)


def test_wrong_typed_and_out_of_range_fields_are_not_well_formed() -> None:
    bad: list[object] = [
        Ping("7", "a"),  # type: ignore[arg-type]
        Ping(-1, "a"),
        Ping(True, "a"),  # a bool is not a sequence number
        Ping(1, ""),
        Ping(1, "x" * 300),
        Ack(None),  # type: ignore[arg-type]
        PingReq(1, "b", "10.0.0.2", 0, True),
        PingReq(1, "b", "10.0.0.2", 70000, True),
        PingReq(1, "b", "10.0.0.2", 7946, 1),  # type: ignore[arg-type]
        Alive(1, "b", "10.0.0.2", 7946, "meta"),  # type: ignore[arg-type]
        Alive(2**64, "b", "10.0.0.2", 7946, b""),
        Alive(1, "b", "10.0.0.2", 7946, b"", "sig"),  # type: ignore[arg-type]
        Alive(1, "b", "10.0.0.2", 7946, b"", bytes(MAX_SIGNATURE_BYTES + 1)),
        PushNodeState("b", "10.0.0.2", 7946, b"", 0, MemberState.ALIVE, None),  # type: ignore[arg-type]
        PushNodeState("b", "10.0.0.2", 7946, b"", 0, MemberState.ALIVE, bytes(1000)),
        Suspect(2**63 - 1, "b", "c"),  # could never be outbid by a refutation
        Suspect(1, "b", 5),  # type: ignore[arg-type]
        Dead(1.5, "b", "c"),  # type: ignore[arg-type]
        PushNodeState("b", "10.0.0.2", 7946, b"", 0, 9),  # type: ignore[arg-type]
        # Hosts the resolver cannot take: each made `sendto` or `connect` raise something else
        # than OSError, which stopped the agent that relayed or probed it.
        *(PingReq(1, "b", host, 7946, False) for host in BAD_HOSTS),
        *(Alive(1, "b", host, 7946, b"") for host in BAD_HOSTS),
        *(PushNodeState("b", host, 7946, b"", 0, MemberState.ALIVE) for host in BAD_HOSTS),
        "ping",
        None,
        (1, 2, 3),
    ]
    for msg in bad:
        assert not is_well_formed(msg), msg


def test_message_tuple_is_append_only_ordered() -> None:
    # Positions are wire type ids: a change here breaks mixed-version clusters.
    assert [cls.__name__ for cls in messages.MESSAGES] == [
        "Ping",
        "PingReq",
        "Ack",
        "Nack",
        "Alive",
        "Suspect",
        "Dead",
        "PushNodeState",
        "PushPullState",
    ]


def test_size_estimate_bounds_the_real_sealed_datagram() -> None:
    """Against the project's own codec and the driver's datagram wrapper."""
    from swarmlet import crypto
    from swarmlet.gossip.driver import GossipDatagram
    from swarmlet.wire import codec as wire

    msgs: tuple[Message, ...] = (
        Ping(2**62, "n" * 40),
        Alive(2**62, "m" * 40, "10.200.200.200", 65535, b"x" * 900, b"s" * MAX_SIGNATURE_BYTES),
        Suspect(2**62, "s" * 40, "a" * 40),
        Dead(2**62, "d" * 40, "a" * 40),
    )
    encoded = wire.encode(GossipDatagram(msgs))
    sealed = len(encoded) + crypto.SEAL_OVERHEAD
    assert sealed <= COMPOUND_OVERHEAD_BYTES + sum(estimate_size(m) for m in msgs)


# --- signed statements ---------------------------------------------------------------------------

alive_facts = st.tuples(names, incarnations, names, st.integers(1, 65535), st.binary(max_size=64))


@given(alive_facts, alive_facts)
def test_alive_signed_bytes_differ_whenever_the_facts_do(
    x: tuple[str, int, str, int, bytes], y: tuple[str, int, str, int, bytes]
) -> None:
    assert (alive_signed_bytes(*x) == alive_signed_bytes(*y)) == (x == y)


def test_alive_signed_bytes_do_not_run_fields_together() -> None:
    # Without length prefixes these pairs would concatenate to the same bytes.
    assert alive_signed_bytes("ab", 1, "c", 1, b"") != alive_signed_bytes("a", 1, "bc", 1, b"")
    assert alive_signed_bytes("a", 1, "h", 1, b"") != alive_signed_bytes("a", 1, "h", 1, b"\x00")


def test_alive_signed_bytes_layout_is_pinned() -> None:
    """Peers of other versions must verify the same bytes: a new layout needs a new domain."""
    expected = (
        b"\x00\x10swarmlet/alive/1"  # domain, 2-byte length
        b"\x00\x00\x00\x01n"  # node, 4-byte length
        b"\x00\x00\x00\x00\x00\x00\x00\x01"  # incarnation, 8 bytes
        b"\x00\x00\x00\x01h"  # host, 4-byte length
        b"\x00\x02"  # port, 2 bytes
        b"\x00\x00\x00\x01m"  # meta, 4-byte length
    )
    assert alive_signed_bytes("n", 1, "h", 2, b"m") == expected


def test_size_estimate_counts_the_signature() -> None:
    msg = Alive(0, "a", "h", 1, b"", bytes(MAX_SIGNATURE_BYTES))
    assert max(_encoded_sizes(msg)) <= estimate_size(msg)


def test_an_alive_or_node_state_without_a_signature_still_decodes() -> None:
    """The signature was appended with a default: a message without it is unsigned, not garbage
    (the checks that follow decide whether an unsigned one is accepted)."""
    from swarmlet.wire import codec as wire

    for msg in (
        Alive(3, "a", "h", 7946, b"m", b"sig"),
        PushNodeState("a", "h", 7946, b"m", 3, MemberState.SUSPECT, b"sig"),
    ):
        plain = msgpack.unpackb(wire.encode(msg), raw=False)
        assert plain[1][-1] == b"sig"
        old = msgpack.packb([plain[0], plain[1][:-1]], use_bin_type=True)
        decoded = wire.decode(old)
        assert decoded == dataclasses.replace(msg, signature=b"")
        assert is_well_formed(decoded)
