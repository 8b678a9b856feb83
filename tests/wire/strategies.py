"""Hypothesis strategies that build any registered wire dataclass from its type hints.

Generic on purpose: a class added to a core's `MESSAGES` tuple is covered by the round-trip tests
without touching this file. Floats exclude NaN (NaN != NaN would make equality checks meaningless);
recursion (a `Batch` of commands) is cut at `MAX_DEPTH` by generating empty tuples there; a
field that holds one command (a `Once`'s) recurses only as often as that command is drawn.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from typing import Any

from hypothesis import strategies as st

from swarmlet.wire import codec as wire

MAX_DEPTH = 3
_INT64_MIN = -(2**63)
_UINT64_MAX = 2**64 - 1


def values_for(hint: Any, depth: int = 0) -> st.SearchStrategy[Any]:
    """Values that conform to `hint` (a field type allowed by the wire contract)."""
    origin = typing.get_origin(hint)
    if origin is typing.Union or origin is types.UnionType:
        return st.one_of([values_for(arg, depth) for arg in typing.get_args(hint)])
    if hint is type(None):
        return st.none()
    if hint is bool:
        return st.booleans()
    if hint is int:
        return st.integers(min_value=_INT64_MIN, max_value=_UINT64_MAX)
    if hint is float:
        return st.floats(allow_nan=False)
    if hint is str:
        return st.text(max_size=12)
    if hint is bytes:
        return st.binary(max_size=12)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return st.sampled_from(list(hint))
    if origin is tuple:
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            if depth >= MAX_DEPTH:
                return st.just(())
            return st.lists(values_for(args[0], depth + 1), max_size=3).map(tuple)
        return st.tuples(*(values_for(arg, depth + 1) for arg in args))
    if origin is dict:
        _, value_hint = typing.get_args(hint)
        if depth >= MAX_DEPTH:
            return st.just({})
        return st.dictionaries(st.text(max_size=8), values_for(value_hint, depth + 1), max_size=3)
    if isinstance(hint, type) and wire.registered(hint):
        # Deferred: built when drawn, so that a class holding a command of any type (a `Once`
        # holds one) does not recurse while the strategy is built.
        return st.deferred(lambda: instances_of(hint, depth + 1))
    raise TypeError(f"no strategy for {hint!r}")


def instances_of(cls: type[Any], depth: int = 0) -> st.SearchStrategy[Any]:
    """Instances of the registered dataclass `cls` with every field drawn from its type."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: values_for(hints[f.name], depth) for f in dataclasses.fields(cls) if f.init}
    return st.builds(cls, **fields)


# Plain msgpack values (what `msgpack.unpackb` can return with raw=False, strict_map_key=True).
plain_scalars: st.SearchStrategy[Any] = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=_INT64_MIN, max_value=_UINT64_MAX),
    st.floats(),
    st.text(max_size=8),
    st.binary(max_size=8),
)
plain_values: st.SearchStrategy[Any] = st.recursive(
    plain_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.dictionaries(
            st.one_of(st.text(max_size=6), st.binary(max_size=6)), children, max_size=4
        ),
    ),
    max_leaves=25,
)
