"""Gossip wire messages, their precedence rules, size estimates and well-formedness checks.

Owns the message dataclasses (encoded by the generic codec in `wire.codec`; no encoder here),
the order of member states by (incarnation, state), a conservative encoded-size estimate, and the
checks that a decoded message has the field types and ranges it claims. It must not know about
timers, sockets or the membership table.

A datagram is a compound: the core emits `SendDatagram(addr, msgs)` with a tuple of messages, and
the driver passes what it decodes from one datagram back as a tuple (or list) of messages.

What a member says about itself (`Alive`, and the same facts in a `PushNodeState`) carries its own
signature over `alive_signed_bytes`, so a third member can relay it and the receiver can still tell
it came from that member. Signing and checking keys belong to the caller (the core gets callables).
"""

from __future__ import annotations

import dataclasses
import enum
import struct
from collections.abc import Callable
from dataclasses import dataclass

from swarmlet.wire import catalog, codec
from swarmlet.wire.hosts import is_host

MAX_NAME_BYTES = 255  # node names and hosts (a DNS name is at most 253 bytes)
MAX_INCARNATION = 2**63 - 1  # msgpack int64; memberlist uses uint32
MAX_SEQ_NO = 2**63 - 1
MAX_SIGNATURE_BYTES = 128  # Ed25519 signs in 64 bytes; the rest is room for another scheme


class MemberState(enum.IntEnum):
    """Only append to this list (it is on the wire)."""

    ALIVE = 0
    SUSPECT = 1
    DEAD = 2
    LEFT = 3  # a DEAD that the member announced itself: a departure, not a failure


@dataclass(frozen=True, slots=True)
class Ping:
    seq_no: int
    target: str  # the name we expect to answer: a new process at an old address ignores it


@dataclass(frozen=True, slots=True)
class PingReq:
    """Ask the receiver to ping `target` for us and relay its Ack (SWIM §3.1 indirect probe)."""

    seq_no: int  # our probe's sequence number, echoed in the relayed Ack or the Nack
    target: str
    target_host: str
    target_port: int
    nack: bool  # Lifeguard §IV-A: send a Nack if the target does not answer within the timeout


@dataclass(frozen=True, slots=True)
class Ack:
    seq_no: int


@dataclass(frozen=True, slots=True)
class Nack:
    seq_no: int


@dataclass(frozen=True, slots=True)
class Alive:
    incarnation: int
    node: str
    host: str
    port: int
    meta: bytes
    # `node`'s own signature over alive_signed_bytes(node, incarnation, host, port, meta); b"" when
    # the cluster does not sign. Relays pass it on untouched.
    signature: bytes = b""


@dataclass(frozen=True, slots=True)
class Suspect:
    incarnation: int
    node: str
    accuser: str  # who suspects: distinct accusers are Lifeguard's independent confirmations


@dataclass(frozen=True, slots=True)
class Dead:
    incarnation: int
    node: str
    accuser: str  # accuser == node: the member left on purpose (LEFT, not a failure)
    # With accuser == node: the node's signature over leave_signed_bytes (a leave skips the
    # grace periods a failure gets, so only the node itself may announce it). b"" otherwise.
    signature: bytes = b""


@dataclass(frozen=True, slots=True)
class PushNodeState:
    name: str
    host: str
    port: int
    meta: bytes
    incarnation: int
    state: MemberState
    # `name`'s signature over its Alive at `incarnation` with this host, port and meta (as in
    # Alive): whatever state the sender holds, these facts came from the member itself.
    signature: bytes = b""


@dataclass(frozen=True, slots=True)
class PushPullState:
    """A full membership table, exchanged both ways over TCP (memberlist push-pull)."""

    source: str
    join: bool
    members: tuple[PushNodeState, ...]


# Only append to this tuple: the wire module may number message types by position.
MESSAGES: tuple[type, ...] = (
    Ping,
    PingReq,
    Ack,
    Nack,
    Alive,
    Suspect,
    Dead,
    PushNodeState,
    PushPullState,
)
codec.register_all(catalog.GOSSIP_MESSAGES, MESSAGES)

Message = Ping | PingReq | Ack | Nack | Alive | Suspect | Dead
BroadcastMessage = Alive | Suspect | Dead

# --- signed statements ---------------------------------------------------------------------------

ALIVE_SIGNATURE_DOMAIN = b"swarmlet/alive/1"
LEAVE_SIGNATURE_DOMAIN = b"swarmlet/leave/1"


def _statement(domain: bytes, node: str, incarnation: int) -> list[bytes]:
    """The head of every statement a member signs about itself: what, who, at which incarnation.

    Unambiguous: each variable-length field is length-prefixed and each number has a fixed width,
    so two different statements never give the same bytes. The domain prefix keeps a signature
    over these bytes from being valid for anything else the same key signs (certificates, other
    messages), and its version from being valid for a later layout."""
    node_b = node.encode()
    return [
        struct.pack(">H", len(domain)),
        domain,
        struct.pack(">I", len(node_b)),
        node_b,
        struct.pack(">Q", incarnation),
    ]


def alive_signed_bytes(node: str, incarnation: int, host: str, port: int, meta: bytes) -> bytes:
    """What a member signs to say "I am alive at `incarnation` at host:port with `meta`"."""
    host_b = host.encode()
    return b"".join(
        (
            *_statement(ALIVE_SIGNATURE_DOMAIN, node, incarnation),
            struct.pack(">I", len(host_b)),
            host_b,
            struct.pack(">H", port),
            struct.pack(">I", len(meta)),
            meta,
        )
    )


def leave_signed_bytes(node: str, incarnation: int) -> bytes:
    """What a member signs to say "I leave, at `incarnation`" (its own Dead, accuser = node)."""
    return b"".join(_statement(LEAVE_SIGNATURE_DOMAIN, node, incarnation))


# --- precedence ----------------------------------------------------------------------------------

_STATE_RANK = {
    MemberState.ALIVE: 0,
    MemberState.SUSPECT: 1,
    MemberState.DEAD: 2,
    MemberState.LEFT: 2,
}


def precedence_key(state: MemberState, incarnation: int) -> tuple[int, int]:
    """A total order on what we may believe about a member: a newer incarnation wins, and for one
    incarnation ALIVE < SUSPECT < DEAD = LEFT. `overrides` only ever moves up this order."""
    return (incarnation, _STATE_RANK[state])


def overrides(new: MemberState, new_inc: int, old: MemberState, old_inc: int) -> bool:
    """Does news `new`(`new_inc`) replace belief `old`(`old_inc`) about another, known member?

    memberlist state.go: aliveNode accepts only a strictly newer incarnation (SWIM §4.2: Alive(i)
    overrides Suspect(j) and Alive(j) for i > j); suspectNode accepts Suspect(i) over Alive(j) for
    i >= j; deadNode accepts Dead(i) over Alive(j) or Suspect(j) for i >= j. A Suspect about a
    suspect member is a confirmation, not a change; nothing but a newer Alive revives the dead.
    """
    if new is MemberState.ALIVE:
        return new_inc > old_inc
    if new is MemberState.SUSPECT:
        return old is MemberState.ALIVE and new_inc >= old_inc
    return old in (MemberState.ALIVE, MemberState.SUSPECT) and new_inc >= old_inc


# --- size estimate -------------------------------------------------------------------------------
#
# The codec is generic msgpack and may encode a message as [type, [values...]] or as
# [type, {field: value}]. The estimate assumes the larger, map form: per message 16 bytes (array
# header, type tag, body header, a length prefix in a compound), per field its name plus a 1-byte
# key header plus 9 bytes (the largest int, float or str/bin header), plus the bytes of every str
# and bytes value. COMPOUND_OVERHEAD_BYTES covers the datagram's own framing and authentication
# (AES-GCM nonce and tag, key id). tests/gossip check it against msgpack encodings of both forms.

MESSAGE_OVERHEAD_BYTES = 16
FIELD_OVERHEAD_BYTES = 10
COMPOUND_OVERHEAD_BYTES = 64


def _fixed_overhead(cls: type) -> int:
    return MESSAGE_OVERHEAD_BYTES + sum(
        len(f.name) + FIELD_OVERHEAD_BYTES for f in dataclasses.fields(cls)
    )


_FIXED_BYTES: dict[type, int] = {cls: _fixed_overhead(cls) for cls in MESSAGES}
# Everything in an Alive but its meta and its two names, signature included (config sizes the
# gossip datagram to hold the largest Alive from this).
ALIVE_OVERHEAD_BYTES = _FIXED_BYTES[Alive] + MAX_SIGNATURE_BYTES


def estimate_size(msg: Message) -> int:
    """A conservative upper bound on the encoded size of `msg` inside a compound datagram."""
    size = _FIXED_BYTES[type(msg)]
    if isinstance(msg, Alive):
        node_host = len(msg.node.encode()) + len(msg.host.encode())
        return size + node_host + len(msg.meta) + len(msg.signature)
    if isinstance(msg, Dead):
        return size + len(msg.node.encode()) + len(msg.accuser.encode()) + len(msg.signature)
    if isinstance(msg, Suspect):
        return size + len(msg.node.encode()) + len(msg.accuser.encode())
    if isinstance(msg, Ping):
        return size + len(msg.target.encode())
    if isinstance(msg, PingReq):
        return size + len(msg.target.encode()) + len(msg.target_host.encode())
    return size


# --- well-formedness -----------------------------------------------------------------------------
#
# The codec builds dataclasses from whatever a peer sent, so a field may hold the wrong type. These
# checks run before the core looks at a message; a failure is counted and the message dropped.


def _is_count(v: object, limit: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= limit


def _is_name(v: object) -> bool:
    return isinstance(v, str) and len(v) > 0 and len(v.encode("utf-8", "replace")) <= MAX_NAME_BYTES


def _is_port(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 < v <= 65535


def _is_inc(v: object) -> bool:
    # Strictly below the maximum, so that any accusation can still be refuted by outbidding it.
    return _is_count(v, MAX_INCARNATION - 1)


def _is_seq(v: object) -> bool:
    return _is_count(v, MAX_SEQ_NO)


def _is_bytes(v: object) -> bool:
    return isinstance(v, bytes)


def _is_signature(v: object) -> bool:
    return isinstance(v, bytes) and len(v) <= MAX_SIGNATURE_BYTES


def _is_bool(v: object) -> bool:
    return isinstance(v, bool)


def _is_state(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v in MemberState._value2member_map_


_CHECKS: dict[type, tuple[tuple[str, Callable[[object], bool]], ...]] = {
    Ping: (("seq_no", _is_seq), ("target", _is_name)),
    PingReq: (
        ("seq_no", _is_seq),
        ("target", _is_name),
        ("target_host", is_host),
        ("target_port", _is_port),
        ("nack", _is_bool),
    ),
    Ack: (("seq_no", _is_seq),),
    Nack: (("seq_no", _is_seq),),
    Alive: (
        ("incarnation", _is_inc),
        ("node", _is_name),
        ("host", is_host),
        ("port", _is_port),
        ("meta", _is_bytes),
        ("signature", _is_signature),
    ),
    Suspect: (("incarnation", _is_inc), ("node", _is_name), ("accuser", _is_name)),
    Dead: (
        ("incarnation", _is_inc),
        ("node", _is_name),
        ("accuser", _is_name),
        ("signature", _is_signature),
    ),
    PushNodeState: (
        ("name", _is_name),
        ("host", is_host),
        ("port", _is_port),
        ("meta", _is_bytes),
        ("incarnation", _is_inc),
        ("state", _is_state),
        ("signature", _is_signature),
    ),
}


def is_well_formed(msg: object) -> bool:
    """True if `msg` is one of our datagram messages (or a PushNodeState) with valid fields."""
    checks = _CHECKS.get(type(msg))
    if checks is None:
        return False
    return all(check(getattr(msg, name, None)) for name, check in checks)
