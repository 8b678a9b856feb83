"""Pure helpers of the command modules: durations for --since, node table cells."""

from __future__ import annotations

from typing import Any

import pytest

from swarmlet.cli.cluster import parse_since
from swarmlet.cli.node import format_bytes, manager_status
from swarmlet.errors import UsageError

NOW = 1_700_000_000.0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (None, NOW),
        ("", NOW),
        ("10s", NOW - 10),
        ("5m", NOW - 300),
        ("1.5h", NOW - 5400),
        ("1699999000", 1_699_999_000.0),
    ],
)
def test_since_takes_a_duration_or_a_unix_time(text: str | None, expected: float) -> None:
    assert parse_since(text, NOW) == expected


@pytest.mark.parametrize("text", ["yesterday", "10d", "m"])
def test_since_rejects_anything_else(text: str) -> None:
    with pytest.raises(UsageError, match="--since: expected a duration like 10m"):
        parse_since(text, NOW)


@pytest.mark.parametrize(
    ("n", "expected"),
    [
        (0, "0 B"),
        (1023, "1023 B"),
        (1024, "1.0 KiB"),
        (3 * 1024**3, "3.0 GiB"),
        (2**50, "1024.0 TiB"),
    ],
)
def test_bytes_read_in_binary_units(n: int, expected: str) -> None:
    assert format_bytes(n) == expected


def _node(**overrides: Any) -> dict[str, Any]:
    return {"role": "manager", "leader": False, "status": "ready", "raft": "voter"} | overrides


@pytest.mark.parametrize(
    ("node", "expected"),
    [
        (_node(role="worker", raft="learner"), ""),
        (_node(leader=True), "Leader"),
        (_node(), "Reachable"),
        (_node(status="down"), "Unreachable"),
        (_node(raft="learner"), "Reachable (standby)"),
        (_node(status="down", raft="learner"), "Unreachable (standby)"),
    ],
)
def test_manager_status_names_the_leader_and_unreachable_managers(
    node: dict[str, Any], expected: str
) -> None:
    assert manager_status(node) == expected
