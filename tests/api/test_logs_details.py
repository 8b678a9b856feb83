"""api.logs.split_details: the logging driver's attributes Docker puts before a line with
`details=true` (Go's QueryEscape'd `k=v,k=v`, then a space; empty when there are none)."""

from __future__ import annotations

import pytest

from swarmlet.api.logs import split_details


@pytest.mark.parametrize(
    ("raw", "attrs", "line"),
    [
        (b"COLOR=blue,app.tier=web hello", {"COLOR": "blue", "app.tier": "web"}, b"hello"),
        (b" hello there", {}, b"hello there"),  # json-file without labels/env options
        (b" ", {}, b""),
        (b"app.tier=web+tier%2C%3D x y", {"app.tier": "web tier,="}, b"x y"),
        (b"k= line", {"k": ""}, b"line"),
        (b"nodetails", {}, b"nodetails"),  # no space: not a details line, kept whole
        (b"not-a-pair line", {}, b"not-a-pair line"),  # malformed: kept whole
    ],
)
def test_details_split_as_docker_writes_them(
    raw: bytes, attrs: dict[str, str], line: bytes
) -> None:
    assert split_details(raw) == (attrs, line)
