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
from collections.abc import Iterable
from typing import Any

import msgpack

from swarmlet.errors import LocalProtocolError, RemoteProtocolError
from swarmlet.wire import bounds

# Bounds on what an unpacker will allocate for one message (a peer controls these sizes).
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
_MAX_DEPTH = 32


# Type ids are permanent (persisted in Raft logs, sent to peers): `swarmlet.wire.catalog` assigns
# each module's list of classes its block, and the module registers the list when it is imported.
_type_by_id: dict[int, type[Any]] = {}
_id_by_type: dict[type[Any], int] = {}
_fields_by_type: dict[type[Any], tuple[tuple[str, Any], ...]] = {}


def register(type_id: int, cls: type[Any]) -> None:
    """Register a frozen dataclass under a permanent id (idempotent for the same pair)."""
    if not (dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen):  # type: ignore[attr-defined]
        raise TypeError(f"{cls.__name__} must be a frozen dataclass")
    if _type_by_id.get(type_id, cls) is not cls or _id_by_type.get(cls, type_id) != type_id:
        raise ValueError(f"wire id {type_id} or class {cls.__name__} is already registered")
    _type_by_id[type_id] = cls
    _id_by_type[cls] = type_id


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
    if value is None or isinstance(value, bool | int | float | str | bytes):
        return value.value if isinstance(value, enum.Enum) else value
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, tuple | list):
        return [_to_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    type_id = _id_by_type.get(type(value))
    if type_id is None:
        raise LocalProtocolError(f"{type(value).__name__} is not a registered wire type")
    return [type_id, [_to_plain(getattr(value, name)) for name, _ in _fields(type(value))]]


def encode(msg: Any) -> bytes:
    """Encode a registered dataclass instance. Raises LocalProtocolError for anything else."""
    if type(msg) not in _id_by_type:
        raise LocalProtocolError(f"{type(msg).__name__} is not a registered wire type")
    return msgpack.packb(_to_plain(msg), use_bin_type=True)


# ---------------------------------------------------------------------------------------- decode


def _bad(path: str, expected: str, got: Any) -> RemoteProtocolError:
    return RemoteProtocolError(f"{path}: expected {expected}, got {type(got).__name__}")


def _from_plain(value: Any, hint: Any, path: str, depth: int) -> Any:
    if depth > _MAX_DEPTH:
        raise RemoteProtocolError(f"{path}: nested too deeply")
    origin = typing.get_origin(hint)
    if origin is typing.Union or origin is types.UnionType:
        return _from_union(value, typing.get_args(hint), path, depth)
    if hint is Any:
        return value
    if hint is type(None):
        if value is not None:
            raise _bad(path, "nil", value)
        return None
    if hint is bool:
        if not isinstance(value, bool):
            raise _bad(path, "bool", value)
        return value
    if hint is int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise _bad(path, "int", value)
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _bad(path, "float", value)
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise _bad(path, "str", value)
        return value
    if hint is bytes:
        if not isinstance(value, bytes):
            raise _bad(path, "bytes", value)
        return value
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        try:
            return hint(value)
        except ValueError:
            raise RemoteProtocolError(f"{path}: {value!r} is not a {hint.__name__}") from None
    if origin is tuple:
        args = typing.get_args(hint)
        if not isinstance(value, list):
            raise _bad(path, "array", value)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(
                _from_plain(v, args[0], f"{path}[{i}]", depth + 1) for i, v in enumerate(value)
            )
        if len(args) != len(value):
            raise RemoteProtocolError(f"{path}: expected {len(args)} items, got {len(value)}")
        return tuple(
            _from_plain(v, a, f"{path}[{i}]", depth + 1)
            for i, (v, a) in enumerate(zip(value, args, strict=True))
        )
    if origin is list:
        (arg,) = typing.get_args(hint)
        if not isinstance(value, list):
            raise _bad(path, "array", value)
        return [_from_plain(v, arg, f"{path}[{i}]", depth + 1) for i, v in enumerate(value)]
    if origin is dict:
        key_hint, val_hint = typing.get_args(hint)
        if not isinstance(value, dict):
            raise _bad(path, "map", value)
        return {
            _from_plain(k, key_hint, f"{path}.<key>", depth + 1): _from_plain(
                v, val_hint, f"{path}.{k}", depth + 1
            )
            for k, v in value.items()
        }
    if isinstance(hint, type) and hint in _id_by_type:
        return _from_struct(value, (hint,), path, depth)
    raise LocalProtocolError(f"{path}: field type {hint!r} is not supported by the wire codec")


def _from_union(value: Any, options: tuple[Any, ...], path: str, depth: int) -> Any:
    structs = tuple(o for o in options if isinstance(o, type) and o in _id_by_type)
    if structs and isinstance(value, list) and len(value) == 2 and isinstance(value[0], int):
        return _from_struct(value, structs, path, depth)
    for option in options:
        if option in structs:
            continue
        try:
            return _from_plain(value, option, path, depth)
        except RemoteProtocolError:
            continue
    raise RemoteProtocolError(f"{path}: {type(value).__name__} matches none of the allowed types")


def _from_struct(value: Any, allowed: tuple[type[Any], ...], path: str, depth: int) -> Any:
    if not (isinstance(value, list) and len(value) == 2 and isinstance(value[1], list)):
        raise _bad(path, "[type, fields]", value)
    type_id, raw_fields = value
    is_id = isinstance(type_id, int) and not isinstance(type_id, bool)
    cls = _type_by_id.get(type_id) if is_id else None
    if cls is None or cls not in allowed:
        raise RemoteProtocolError(f"{path}: unexpected message type {type_id!r}")
    fields = _fields(cls)
    if len(raw_fields) != len(fields):
        raise RemoteProtocolError(
            f"{path}: {cls.__name__} has {len(fields)} fields, got {len(raw_fields)}"
        )
    kwargs = {
        name: _from_plain(raw, hint, f"{path}.{name}", depth + 1)
        for (name, hint), raw in zip(fields, raw_fields, strict=True)
    }
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:  # a __post_init__ check rejected the values
        raise RemoteProtocolError(f"{path}: invalid {cls.__name__}: {exc}") from None


def unpack_plain(data: bytes, *, max_bytes: int = MAX_MESSAGE_BYTES) -> Any:
    """msgpack-decode untrusted bytes within `bounds` (size, structure, per-object limits and
    memory); raise RemoteProtocolError on garbage and on a hostile shape."""
    return bounds.unpack(data, max_bytes)


def decode(data: bytes, *, expect: tuple[type[Any], ...] | None = None) -> Any:
    """Decode one message. `expect` restricts which top-level types are acceptable."""
    return from_plain(unpack_plain(data), expect=expect)


def from_plain(value: Any, *, expect: tuple[type[Any], ...] | None = None) -> Any:
    """Build a message from an already unpacked msgpack value (e.g. from a streaming Unpacker)."""
    allowed = tuple(_type_by_id.values()) if expect is None else expect
    return _from_struct(value, allowed, "message", 0)


def new_unpacker(max_bytes: int = MAX_MESSAGE_BYTES) -> bounds.BoundedUnpacker:
    """A streaming unpacker for one connection, with the same bounds as `decode`."""
    return bounds.BoundedUnpacker(max_bytes)


def registered(cls: type[Any]) -> bool:
    return cls in _id_by_type
