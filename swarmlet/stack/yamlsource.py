"""YAML text -> plain Python data, with the YAML rules docker's loader applies.

Owns: parsing one stack file's bytes into nested dict/list/scalars. Invariants: keys of every
mapping are strings (docker/cli ``convertToStringKeysRecursive``: "non-string key"), a key
repeated in one mapping is an error (as in docker: a value silently replaced by a later one is
worse than a refusal), anchors, aliases and ``<<`` merge keys are resolved, and YAML 1.1
timestamps stay strings (gopkg.in/yaml.v2 only builds ``time.Time`` when decoding into one;
docker decodes into ``interface{}``).
Must not know: compose keys, schema, interpolation. Only ``yaml.SafeLoader`` is used.
"""

from __future__ import annotations

import re
from typing import Any

import yaml
from yaml.constructor import ConstructorError

from swarmlet.errors import StackError


class _StackYamlLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys and keeps timestamps as strings."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, yaml.Node] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                hashable_key_seen = key in seen
            except TypeError:
                continue  # unhashable key: SafeLoader reports it below
            if hashable_key_seen:
                mark = key_node.start_mark
                raise ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"found duplicate key {key!r} (line {mark.line + 1}, column {mark.column + 1})",
                    mark,
                )
            seen[key] = key_node
        return super().construct_mapping(node, deep=deep)


# Implicit types as gopkg.in/yaml.v2 (resolve.go) resolves them when decoding into
# interface{}: no timestamps (they stay strings), no base-60 numbers (PyYAML's YAML 1.1 reads
# an unquoted `80:80` as 4880; yaml.v2 keeps the string), y/n are booleans too, and floats
# need no dot (`1e5`).
_REPLACED_TAGS = {
    "tag:yaml.org,2002:timestamp",
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:bool",
}
_StackYamlLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in _REPLACED_TAGS]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_StackYamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool",
    re.compile(
        r"^(?:y|Y|yes|Yes|YES|n|N|no|No|NO|true|True|TRUE|false|False|FALSE"
        r"|on|On|ON|off|Off|OFF)$"
    ),
    list("yYnNtTfFoO"),
)
_StackYamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:int",
    re.compile(r"^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+)$"),
    list("-+0123456789"),
)
_StackYamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"^(?:[-+]?(?:\.[0-9_]+|[0-9][0-9_]*(?:\.[0-9_]*)?)(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+0123456789."),
)


def _construct_bool(loader: yaml.SafeLoader, node: yaml.Node) -> bool:
    value = loader.construct_scalar(node)  # type: ignore[arg-type]
    return str(value).lower() in ("y", "yes", "true", "on")


_StackYamlLoader.add_constructor("tag:yaml.org,2002:bool", _construct_bool)


def parse_yaml(text: str, file: str) -> dict[str, Any]:
    """Parse one stack file; raise StackError naming the line for malformed YAML."""
    try:
        data = yaml.load(text, Loader=_StackYamlLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = exc.problem or "invalid YAML"
        raise StackError(file, "", f"invalid YAML at {where}: {problem}") from exc
    except yaml.YAMLError as exc:
        raise StackError(file, "", f"invalid YAML: {exc}") from exc
    if not isinstance(data, dict):
        # docker/cli loader.ParseYAML: "top-level object must be a mapping"
        raise StackError(file, "", "top-level object must be a mapping")
    checked = _check_string_keys(data, "", file, [_MAX_NODES])
    assert isinstance(checked, dict)
    return checked


# Aliases are shared, not copied, by the parser, but every later pass walks the expanded tree:
# bound it, as yaml.v2 refuses "excessive aliasing" (billion-laughs documents).
_MAX_NODES = 250_000


def _check_string_keys(value: Any, prefix: str, file: str, budget: list[int]) -> Any:
    # docker/cli loader.go convertToStringKeysRecursive / formatInvalidKeyError
    budget[0] -= 1
    if budget[0] < 0:
        raise StackError(file, "", "document contains excessive aliasing")
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, entry in value.items():
            if not isinstance(key, str):
                location = "at top level" if not prefix else f"in {prefix}"
                raise StackError(file, prefix, f"non-string key {location}: {key!r}")
            out[key] = _check_string_keys(entry, f"{prefix}.{key}" if prefix else key, file, budget)
        return out
    if isinstance(value, list):
        return [
            _check_string_keys(item, f"{prefix}[{i}]", file, budget) for i, item in enumerate(value)
        ]
    return value
