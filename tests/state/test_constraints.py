"""state.constraints: the constraint syntax (swarmkit's), what a constraint matches, and the label
a placement preference spreads over."""

from __future__ import annotations

import pytest

from swarmlet.errors import UsageError
from swarmlet.state.constraints import (
    Constraint,
    parse_constraint,
    preference_label,
    validate_constraint,
)
from swarmlet.state.model import Node, Role


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("node.role==manager", Constraint("node.role", True, "manager")),
        ("node.role != worker", Constraint("node.role", False, "worker")),
        ("node.labels.Zone==a", Constraint("node.labels.Zone", True, "a")),
        ("NODE.LABELS.zone==a", Constraint("node.labels.zone", True, "a")),
        ("engine.labels.ssd==true", Constraint("engine.labels.ssd", True, "true")),
        ("node.hostname==host-1.example", Constraint("node.hostname", True, "host-1.example")),
        ("Node.ID==abc", Constraint("node.id", True, "abc")),
        ("node.platform.os==linux", Constraint("node.platform.os", True, "linux")),
    ],
)
def test_parse_constraint_accepts_swarm_syntax(text: str, expected: Constraint) -> None:
    assert parse_constraint(text) == expected


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("node.role", "expected one operator"),
        ("node.role>manager", "expected one operator"),
        ("==manager", "key '' is invalid"),
        ("node.role==", "value '' is invalid"),
        ("node.role==a<b", "value 'a<b' is invalid"),
        ("node.colour==red", "unknown key 'node.colour'"),
        ("node.labels.==x", "unknown key"),
    ],
)
def test_parse_constraint_rejects_malformed_input(text: str, error: str) -> None:
    with pytest.raises(UsageError, match=error.replace("(", r"\(").replace(")", r"\)")):
        parse_constraint(text)


NODE = Node("abc", "host1", "a:1", "a", Role.MANAGER, labels={"zone": "East"})


@pytest.mark.parametrize(
    ("text", "matches"),
    [
        ("node.id==abc", True),
        ("node.id!=abc", False),
        ("node.hostname==HOST1", True),
        ("node.role==manager", True),
        ("node.role!=manager", False),
        ("node.labels.zone==east", True),
        ("node.labels.Zone==east", False),  # label names are case-sensitive
        ("node.labels.rack!=r1", True),  # a missing label is ""
        ("node.labels.rack==r1", False),
        ("engine.labels.zone==East", False),  # swarmlet has no engine labels
        ("engine.labels.zone!=East", False),
        ("node.platform.os==linux", True),
        ("node.platform.arch==x86_64", False),
    ],
)
def test_constraint_matching(text: str, matches: bool) -> None:
    assert parse_constraint(text).matches(NODE) is matches


@pytest.mark.parametrize(
    ("preference", "label"),
    [
        ("spread=node.labels.zone", "zone"),
        ("node.labels.Rack", "Rack"),
        ("spread= NODE.LABELS.zone ", "zone"),
        ("spread=node.labels.", None),
        ("spread=engine.labels.zone", None),
        ("spread=node.id", None),
    ],
)
def test_preference_label_reads_only_node_labels(preference: str, label: str | None) -> None:
    assert preference_label(preference) == label


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("engine.labels.ssd==true", "engine.labels.ssd is not supported: swarmlet does not record"),
        ("ENGINE.LABELS.Zone!=a", "engine.labels.Zone is not supported"),
        ("node.platform.arch==x86_64", "node.platform.arch is not supported: swarmlet does not"),
        ("node.platform.arch!=arm64", "could never match"),
    ],
)
def test_a_new_spec_may_not_ask_for_what_no_node_records(text: str, reason: str) -> None:
    with pytest.raises(UsageError, match=reason):
        validate_constraint(text)


@pytest.mark.parametrize(
    "text", ["node.platform.os==linux", "node.labels.engine==x", "node.role==manager"]
)
def test_what_nodes_record_passes_validation(text: str) -> None:
    assert validate_constraint(text) == parse_constraint(text)
