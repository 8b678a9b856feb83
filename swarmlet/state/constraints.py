"""Placement constraints and preferences as written in a service spec, parsed and matched.

Owns: the syntax of a constraint ("KEY==VALUE", "KEY!=VALUE", swarmkit's
`manager/constraint/constraint.go`), its value type `Constraint` and what it means against a
`Node`, and the label a placement preference spreads over ("spread=node.labels.zone"). It is part
of the spec, not of placement: the CLI, the API, the stack loader and the scheduler all read the
same syntax from here, so a spec that one of them accepts is one that the others understand.

Invariants: keys are lower-cased except the label name after "node.labels." or
"engine.labels." (label names are case-sensitive, as in swarmkit); values compare
case-insensitively; a label the node lacks reads as "". `node.platform.os` is "linux" on every
node (the agent runs on Linux only).

swarmlet records no engine labels and no architecture (neither `Node` nor what the agent
reports about its host carries them), so a new spec asking for `engine.labels.KEY` or
`node.platform.arch` is refused (`validate_constraint`, which every way into the state uses)
rather than accepted and left pending for ever. `parse_constraint` still reads them, and they
never match, with either operator: a spec stored before they were refused keeps its tasks
pending with a reason rather than crashing the leader or landing on an unchecked node.

Must not know: the scheduler's filters, Raft, the network, the clock.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from swarmlet.errors import UsageError
from swarmlet.state.model import Node

# swarmkit constraint.go: key and value syntax, operators tried in this order.
_KEY_RE = re.compile(r"[a-z_][a-z0-9\-_.]+", re.IGNORECASE)
_VALUE_RE = re.compile(r"[a-z0-9:\-_\s.*()?+\[\]\\^$|/]+", re.IGNORECASE)
_OPERATORS = ("==", "!=")
_NODE_LABELS = "node.labels."
_ENGINE_LABELS = "engine.labels."
_PLAIN_KEYS = ("node.id", "node.hostname", "node.role", "node.platform.os", "node.platform.arch")


@dataclass(frozen=True, slots=True)
class Constraint:
    key: str  # lower-case, except the label name after "node.labels." / "engine.labels."
    equal: bool  # True: ==, False: !=
    value: str

    def matches(self, node: Node) -> bool:
        if self.key.startswith(_ENGINE_LABELS) or self.key == "node.platform.arch":
            return False  # swarmlet knows no engine labels nor architectures: never matches
        if self.key == "node.id":
            actual = node.id
        elif self.key == "node.hostname":
            actual = node.name
        elif self.key == "node.role":
            actual = str(node.role)
        elif self.key == "node.platform.os":
            actual = "linux"
        else:  # node.labels.X: the label name is case-sensitive, a missing label is ""
            actual = node.labels.get(self.key[len(_NODE_LABELS) :], "")
        # swarmkit Constraint.Match: strings.EqualFold
        return (actual.casefold() == self.value.casefold()) == self.equal

    def __str__(self) -> str:
        return f"{self.key}{'==' if self.equal else '!='}{self.value}"


def parse_constraint(text: str) -> Constraint:
    """Parse "KEY==VALUE" or "KEY!=VALUE"; raise UsageError saying what is wrong."""
    for op in _OPERATORS:
        if op not in text:
            continue
        raw_key, raw_value = (part.strip() for part in text.split(op, 1))
        if not _KEY_RE.fullmatch(raw_key):
            raise UsageError(f"constraint {text!r}: key {raw_key!r} is invalid")
        if not _VALUE_RE.fullmatch(raw_value):
            raise UsageError(f"constraint {text!r}: value {raw_value!r} is invalid")
        lowered = raw_key.lower()
        for prefix in (_NODE_LABELS, _ENGINE_LABELS):
            if lowered.startswith(prefix) and len(raw_key) > len(prefix):
                return Constraint(prefix + raw_key[len(prefix) :], op == "==", raw_value)
        if lowered in _PLAIN_KEYS:
            return Constraint(lowered, op == "==", raw_value)
        raise UsageError(
            f"constraint {text!r}: unknown key {raw_key!r}; use node.id, node.hostname, "
            "node.role, node.platform.os, node.labels.<label> or engine.labels.<label>"
        )
    raise UsageError(f"constraint {text!r}: expected one operator from ==, !=")


# Keys the syntax has but swarmlet cannot check, and why (see the module's docstring).
_UNCHECKABLE = {
    "node.platform.arch": "swarmlet does not record nodes' architectures",
    _ENGINE_LABELS: "swarmlet does not record Docker engine labels; use node.labels.<label> "
    "(swarmlet node update --label-add KEY=VALUE NODE)",
}


def validate_constraint(text: str) -> Constraint:
    """`parse_constraint`, refusing what no node can be checked against (with the reason): what
    a new spec goes through."""
    constraint = parse_constraint(text)
    for key, reason in _UNCHECKABLE.items():
        if constraint.key == key or (key.endswith(".") and constraint.key.startswith(key)):
            raise UsageError(
                f"constraint {text!r}: {constraint.key} is not supported: {reason}, so it could "
                "never match"
            )
    return constraint


def parse_constraints(texts: Iterable[str]) -> tuple[Constraint, ...]:
    return tuple(parse_constraint(t) for t in texts)


def preference_label(preference: str) -> str | None:
    """ "spread=node.labels.zone" or "node.labels.zone" -> "zone"; anything else -> None (all
    nodes then fall in one group, as swarmkit does for a label no node has)."""
    path = preference.removeprefix("spread=").strip()
    if path.lower().startswith(_NODE_LABELS) and len(path) > len(_NODE_LABELS):
        return path[len(_NODE_LABELS) :]
    return None
