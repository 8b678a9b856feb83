"""Message encoding: frozen dataclasses <-> msgpack, with validation of everything decoded.

A message on the wire is the msgpack array ``[type_id, [field, field, ...]]``. A type id is never
reused or renumbered, so agents of different versions decode each other's old messages and old Raft
logs (memberlist: "only append to this list"). Nested dataclasses are
encoded the same way, so a field typed as a union of several dataclasses stays unambiguous.

Field types allowed in a registered dataclass: int, float, str, bytes, bool, None, `X | None`,
`tuple[X, ...]`, `dict[str, X]`, `enum.IntEnum`/`enum.StrEnum` subclasses, and other registered
dataclasses (or unions of them). Decoding checks every value against these types, so a peer cannot
make us build an object whose fields lie about their types: anything else is a
`RemoteProtocolError`.

This module knows nothing about what the messages mean; cores register their own classes.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from collections.abc import Callable, Iterable
from typing import Any

import msgpack

from swarmlet.errors import LocalProtocolError, RemoteProtocolError
from swarmlet.wire import bounds

# Bounds on what an unpacker will allocate for one message (a peer controls these sizes).
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
# The one message allowed to be larger, on a Raft stream from a manager: the cluster's state, as
# the snapshot a leader sends a new or lagging manager. A state that outgrew 64 MiB (a few
# services with large specs, each kept twice with its previous spec) reached no such manager.
MAX_SNAPSHOT_BYTES = 512 * 1024 * 1024
_MAX_DEPTH = 32


# Type ids are permanent (persisted in Raft logs, sent to peers): `swarmlet.wire.catalog` assigns
# each module's list of classes its block, and the module registers the list when it is imported.
_type_by_id: dict[int, type[Any]] = {}
_id_by_type: dict[type[Any], int] = {}
_fields_by_type: dict[type[Any], tuple[tuple[str, Any], ...]] = {}
_defaults_by_type: dict[type[Any], tuple[tuple[str, Any], ...]] = {}


def register(type_id: int, cls: type[Any]) -> None:
    """Register a frozen dataclass under a permanent id (idempotent for the same pair)."""
    if not (dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen):  # type: ignore[attr-defined]
        raise TypeError(f"{cls.__name__} must be a frozen dataclass")
    if _type_by_id.get(type_id, cls) is not cls or _id_by_type.get(cls, type_id) != type_id:
        raise ValueError(f"wire id {type_id} or class {cls.__name__} is already registered")
    _type_by_id[type_id] = cls
    _id_by_type[cls] = type_id
    _decoders.clear()  # a union compiled before may name this class
    _plans.clear()
    _encoders.clear()
    _struct_encoders.clear()


def register_all(first_id: int, classes: Iterable[type[Any]]) -> None:
    """Register `classes` under consecutive ids from `first_id`, in order (append-only lists)."""
    for offset, cls in enumerate(classes):
        register(first_id + offset, cls)


def _fields(cls: type[Any]) -> tuple[tuple[str, Any], ...]:
    cached = _fields_by_type.get(cls)
    if cached is None:
        hints = typing.get_type_hints(cls)
        cached = tuple((f.name, hints[f.name]) for f in dataclasses.fields(cls) if f.init)
        _fields_by_type[cls] = cached
    return cached


# ---------------------------------------------------------------------------------------- encode


def _to_plain(value: Any) -> Any:
    """Any value as msgpack's plain values (the generic path; messages take `_encode_struct`)."""
    if value is None or isinstance(value, bool | int | float | str | bytes):
        return value.value if isinstance(value, enum.Enum) else value
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, tuple | list):
        return [_to_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    return _encode_struct(value)


# Encoding is compiled too, per field type, like decoding below: each compiled encoder gives
# exactly what `_to_plain` gives (the bytes are signed, checksummed and persisted), and hands any
# value of another type than the one it was compiled for to `_to_plain`.

_Encoder = Callable[[Any], Any]
_PLAIN_TYPES = frozenset({type(None), bool, int, float, str, bytes})
_encoders: dict[Any, _Encoder] = {}
_struct_encoders: dict[type[Any], _Encoder] = {}


def _encode_struct(value: Any) -> Any:
    cls = type(value)
    encoder = _struct_encoders.get(cls)
    if encoder is None:
        if cls not in _id_by_type:
            raise LocalProtocolError(f"{cls.__name__} is not a registered wire type")
        encoder = _struct_encoders[cls] = _compile_struct_encoder(cls)
    return encoder(value)


def _compile_struct_encoder(cls: type[Any]) -> _Encoder:
    type_id = _id_by_type[cls]
    fields = tuple((name, _encoder(hint)) for name, hint in _fields(cls))
    trailing = tuple(reversed(_appended_defaults(cls)))  # last field first

    def struct(value: Any) -> Any:
        end = len(fields)
        for name, default in trailing:  # left out while they hold their defaults
            if getattr(value, name) != default:
                break
            end -= 1
        return [type_id, [encode(getattr(value, name)) for name, encode in fields[:end]]]

    return struct


def _encoder(hint: Any) -> _Encoder:
    encoder = _encoders.get(hint)
    if encoder is None:
        encoder = _encoders[hint] = _compile_encoder(hint)
    return encoder


def _plain_or_generic(value: Any) -> Any:
    return value if type(value) in _PLAIN_TYPES else _to_plain(value)


def _compile_encoder(hint: Any) -> _Encoder:
    origin = typing.get_origin(hint)
    if origin is tuple or origin is list:
        args = typing.get_args(hint)
        if origin is list or (len(args) == 2 and args[1] is Ellipsis):
            item = _encoder(args[0])

            def sequence(value: Any) -> Any:
                if type(value) is not tuple and type(value) is not list:
                    return _to_plain(value)
                return [item(v) for v in value]

            return sequence
        return _to_plain
    if origin is dict:
        of_value = _encoder(typing.get_args(hint)[1])

        def mapping(value: Any) -> Any:
            if type(value) is not dict:
                return _to_plain(value)
            return {k: of_value(v) for k, v in value.items()}

        return mapping
    if isinstance(hint, type) and hint in _id_by_type:
        return lambda value: None if value is None else _encode_struct(value)
    # Scalars, enums, unions, Any: a plain value as it is, anything else the generic way.
    return _plain_or_generic


def appended(since: int, **field_args: Any) -> Any:
    """A field appended to a message in protocol `since` (`dataclasses.field` arguments with a
    default). It is left out of the encoding while it holds its default, as every trailing
    field of that kind: an agent of an older protocol, which refuses more fields than it knows,
    then still decodes the message, until a value is set in the field (by a feature that an
    operator should not use before every agent is upgraded: README, "Upgrading"). Fields
    older than the version window are never left out, so existing encodings keep their bytes
    (and snapshots their density: `wire.bounds`)."""
    if "default" not in field_args and "default_factory" not in field_args:
        raise TypeError("an appended field needs a default")
    return dataclasses.field(metadata={_SINCE: since}, **field_args)


_SINCE = "swarmlet.wire.since_protocol"


def _appended_defaults(cls: type[Any]) -> tuple[tuple[str, Any], ...]:
    """The trailing run of `appended` fields, with their defaults (built once per class)."""
    cached = _defaults_by_type.get(cls)
    if cached is None:
        tail: list[tuple[str, Any]] = []
        for f in dataclasses.fields(cls):
            if not f.init:
                continue
            if _SINCE not in f.metadata:
                tail = []
            elif f.default is not dataclasses.MISSING:
                tail.append((f.name, f.default))
            else:
                tail.append((f.name, f.default_factory()))  # type: ignore[operator]
        cached = _defaults_by_type[cls] = tuple(tail)
    return cached


def encode(msg: Any) -> bytes:
    """Encode a registered dataclass instance. Raises LocalProtocolError for anything else."""
    return msgpack.packb(_encode_struct(msg), use_bin_type=True)


def as_plain(msg: Any) -> Any:
    """What `encode` packs: `msg` as msgpack's plain values (for a packer of one's own, such as
    `off_loop.pack`)."""
    return _encode_struct(msg)


# ---------------------------------------------------------------------------------------- decode
#
# Decoding is compiled: the first time a field type (a hint) is met, `_decoder` builds a
# function for it and caches it, so decoding a message does no type introspection and builds
# no strings. Where a value is wrong, `_Invalid` carries the path back up, segment by segment,
# and `from_plain` turns it into the RemoteProtocolError a peer's garbage deserves.

_Decoder = Callable[[Any, int], Any]  # (value, depth) -> the value as its type
_decoders: dict[Any, _Decoder] = {}
_plans: dict[type[Any], tuple[tuple[str, _Decoder], ...]] = {}  # each struct's field decoders
_required: dict[type[Any], int] = {}  # each struct's count of leading fields without a default


class _Invalid(RemoteProtocolError):
    """A value that does not fit; `path` collects where, innermost segment first."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail
        self.path: list[str] = []

    def at(self, root: str) -> RemoteProtocolError:
        return RemoteProtocolError(f"{root}{''.join(reversed(self.path))}: {self.detail}")


def _bad(expected: str, got: Any) -> _Invalid:
    return _Invalid(f"expected {expected}, got {type(got).__name__}")


def _too_deep(child_depth: int) -> None:
    if child_depth > _MAX_DEPTH:
        raise _Invalid("nested too deeply")


def _decoder(hint: Any) -> _Decoder:
    decoder = _decoders.get(hint)
    if decoder is None:
        decoder = _decoders[hint] = _compile(hint)
    return decoder


def _compile(hint: Any) -> _Decoder:
    origin = typing.get_origin(hint)
    if origin is typing.Union or origin is types.UnionType:
        return _compile_union(typing.get_args(hint))
    if hint is Any:
        return lambda value, depth: value
    if hint is type(None):

        def nil(value: Any, depth: int) -> Any:
            if value is not None:
                raise _bad("nil", value)
            return None

        return nil
    if hint is bool:

        def boolean(value: Any, depth: int) -> Any:
            if value is not True and value is not False:
                raise _bad("bool", value)
            return value

        return boolean
    if hint is int:

        def integer(value: Any, depth: int) -> Any:
            if type(value) is not int and (not isinstance(value, int) or isinstance(value, bool)):
                raise _bad("int", value)
            return value

        return integer
    if hint is float:

        def real(value: Any, depth: int) -> Any:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise _bad("float", value)
            return float(value)

        return real
    if hint is str or hint is bytes:
        name = hint.__name__

        def scalar(value: Any, depth: int) -> Any:
            if not isinstance(value, hint):
                raise _bad(name, value)
            return value

        return scalar
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        members = {m.value: m for m in hint}

        def member(value: Any, depth: int) -> Any:
            try:
                return members[value]
            except (KeyError, TypeError):
                try:
                    return hint(value)  # what a plain lookup does not find (aliases, _missing_)
                except ValueError:
                    raise _Invalid(f"{value!r} is not a {hint.__name__}") from None

        return member
    if origin is tuple or origin is list:
        args = typing.get_args(hint)
        if origin is list or (len(args) == 2 and args[1] is Ellipsis):
            return _compile_sequence(args[0], tuple if origin is tuple else list)
        return _compile_fixed_tuple(args)
    if origin is dict:
        key_hint, val_hint = typing.get_args(hint)
        return _compile_dict(key_hint, val_hint)
    if isinstance(hint, type) and hint in _id_by_type:
        allowed = (hint,)
        return lambda value, depth: _decode_struct(value, allowed, depth)
    raise LocalProtocolError(f"field type {hint!r} is not supported by the wire codec")


def _compile_sequence(item_hint: Any, kind: type) -> _Decoder:
    item = _decoder(item_hint)

    def sequence(value: Any, depth: int) -> Any:
        if not isinstance(value, list):
            raise _bad("array", value)
        if value:
            _too_deep(depth + 1)
        out = []
        for i, v in enumerate(value):
            try:
                out.append(item(v, depth + 1))
            except _Invalid as exc:
                exc.path.append(f"[{i}]")
                raise
        return out if kind is list else tuple(out)

    return sequence


def _compile_fixed_tuple(args: tuple[Any, ...]) -> _Decoder:
    items = tuple(_decoder(a) for a in args)

    def fixed(value: Any, depth: int) -> Any:
        if not isinstance(value, list):
            raise _bad("array", value)
        if len(items) != len(value):
            raise _Invalid(f"expected {len(items)} items, got {len(value)}")
        if value:
            _too_deep(depth + 1)
        out = []
        for i, (v, item) in enumerate(zip(value, items, strict=True)):
            try:
                out.append(item(v, depth + 1))
            except _Invalid as exc:
                exc.path.append(f"[{i}]")
                raise
        return tuple(out)

    return fixed


def _compile_dict(key_hint: Any, val_hint: Any) -> _Decoder:
    key_of = _decoder(key_hint)
    val_of = _decoder(val_hint)

    def mapping(value: Any, depth: int) -> Any:
        if not isinstance(value, dict):
            raise _bad("map", value)
        if value:
            _too_deep(depth + 1)
        out = {}
        for k, v in value.items():
            try:
                key = key_of(k, depth + 1)
            except _Invalid as exc:
                exc.path.append(".<key>")
                raise
            try:
                out[key] = val_of(v, depth + 1)
            except _Invalid as exc:
                exc.path.append(f".{k}")
                raise
        return out

    return mapping


def _compile_union(options: tuple[Any, ...]) -> _Decoder:
    structs = tuple(o for o in options if isinstance(o, type) and o in _id_by_type)
    others = tuple(_decoder(o) for o in options if o not in structs)
    optional = type(None) in options

    def union(value: Any, depth: int) -> Any:
        if value is None and optional:
            return None  # what trying the options in turn would give, without the failures
        if structs and isinstance(value, list) and len(value) == 2 and isinstance(value[0], int):
            return _decode_struct(value, structs, depth)
        for option in others:
            try:
                return option(value, depth)
            except RemoteProtocolError:
                continue
        raise _Invalid(f"{type(value).__name__} matches none of the allowed types")

    return union


def _struct_plan(cls: type[Any]) -> tuple[tuple[str, _Decoder], ...]:
    plan = _plans.get(cls)
    if plan is None:
        # `_required` first: a frame may be decoded in a thread (`transport`) while the loop
        # decodes another, and whoever finds the plan reads the count too.
        _required[cls] = _required_count(cls)
        plan = _plans[cls] = tuple((name, _decoder(hint)) for name, hint in _fields(cls))
    return plan


def _required_count(cls: type[Any]) -> int:
    """How many leading fields a message must carry: up to its last field without a default.
    Fields appended later with a default may be absent (a message from an older version, or
    a record it persisted), as protobuf lets new optional fields be absent."""
    required = 0
    for i, f in enumerate(f for f in dataclasses.fields(cls) if f.init):
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            required = i + 1
    return required


def _decode_struct(value: Any, allowed: tuple[type[Any], ...] | None, depth: int) -> Any:
    """`allowed`: the classes acceptable here; None for any registered class."""
    if not (isinstance(value, list) and len(value) == 2 and isinstance(value[1], list)):
        raise _bad("[type, fields]", value)
    type_id, raw_fields = value
    is_id = isinstance(type_id, int) and not isinstance(type_id, bool)
    cls = _type_by_id.get(type_id) if is_id else None
    if cls is None or (allowed is not None and cls not in allowed):
        raise _Invalid(f"unexpected message type {type_id!r}")
    plan = _struct_plan(cls)
    if not _required[cls] <= len(raw_fields) <= len(plan):
        raise _Invalid(f"{cls.__name__} has {len(plan)} fields, got {len(raw_fields)}")
    if plan:
        _too_deep(depth + 1)
    kwargs = {}
    for (name, field_of), raw in zip(plan, raw_fields, strict=False):
        try:
            kwargs[name] = field_of(raw, depth + 1)
        except _Invalid as exc:
            exc.path.append(f".{name}")
            raise
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:  # a __post_init__ check rejected the values
        raise _Invalid(f"invalid {cls.__name__}: {exc}") from None


def unpack_plain(data: bytes, *, max_bytes: int = MAX_MESSAGE_BYTES) -> Any:
    """msgpack-decode untrusted bytes within `bounds` (size, structure, per-object limits and
    memory); raise RemoteProtocolError on garbage and on a hostile shape."""
    return bounds.unpack(data, max_bytes)


def decode(
    data: bytes,
    *,
    expect: tuple[type[Any], ...] | None = None,
    max_bytes: int = MAX_MESSAGE_BYTES,
) -> Any:
    """Decode one message. `expect` restricts which top-level types are acceptable."""
    return from_plain(unpack_plain(data, max_bytes=max_bytes), expect=expect)


def from_plain(value: Any, *, expect: tuple[type[Any], ...] | None = None) -> Any:
    """Build a message from an already unpacked msgpack value (e.g. from a streaming Unpacker)."""
    try:
        return _decode_struct(value, expect, 0)
    except _Invalid as exc:
        raise exc.at("message") from None


def new_unpacker(max_bytes: int = MAX_MESSAGE_BYTES) -> bounds.BoundedUnpacker:
    """A streaming unpacker for one connection, with the same bounds as `decode`."""
    return bounds.BoundedUnpacker(max_bytes)


def registered(cls: type[Any]) -> bool:
    return cls in _id_by_type
