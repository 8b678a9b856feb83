"""Go value formatting the loader relies on, table-tested."""

from __future__ import annotations

import pytest

from swarmlet.stack.goformat import (
    format_duration,
    go_sprint,
    parse_duration_ns,
    ram_in_bytes,
    sorted_map,
)


@pytest.mark.parametrize(
    ("text", "printed"),
    [
        ("10s", "10s"),
        ("60s", "1m0s"),
        ("120s", "2m0s"),
        ("1m30s", "1m30s"),
        ("90m", "1h30m0s"),
        ("1.5s", "1.5s"),
        ("500ms", "500ms"),
        ("1500ms", "1.5s"),
        ("2us", "2\u00b5s"),
        ("10ns", "10ns"),
        ("0", "0s"),
        ("0s", "0s"),
        ("1h", "1h0m0s"),
    ],
)
def test_duration_round_trips_as_go_prints_it(text: str, printed: str) -> None:
    assert format_duration(parse_duration_ns(text)) == printed


@pytest.mark.parametrize("text", ["", "10", "ten seconds", "1x", "s", "1.s5"])
def test_invalid_durations_are_rejected(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration_ns(text)


@pytest.mark.parametrize(
    ("text", "size_bytes"),
    [
        ("50M", 52428800),
        ("1.5G", 1610612736),
        ("1g", 1 << 30),
        ("512", 512),
        ("64mb", 1 << 26),
        ("2 KiB", 2048),
    ],
)
def test_ram_in_bytes_uses_binary_units(text: str, size_bytes: int) -> None:
    assert ram_in_bytes(text) == size_bytes


@pytest.mark.parametrize(
    ("value", "text"),
    [(True, "true"), (42, "42"), (0.5, "0.5"), (1.0, "1"), (1e21, "1e+21"), ("s", "s")],
)
def test_go_sprint(value: object, text: str) -> None:
    assert go_sprint(value) == text


def test_map_keys_sort_like_yaml_naturally() -> None:
    keys = ["b", "a10", "a9", "x-foo", "A", "a"]
    assert list(sorted_map(dict.fromkeys(keys))) == ["A", "a", "a9", "a10", "b", "x-foo"]
