"""state.specparse: `--mount` as docker reads it, and the mounts docker refuses."""

from __future__ import annotations

import pytest

from swarmlet.errors import UsageError
from swarmlet.state.model import Mount
from swarmlet.state.specparse import parse_mount


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("type=volume,source=data,target=/data", Mount("volume", "/data", "data")),
        ("src=data,dst=/data,ro", Mount("volume", "/data", "data", read_only=True)),
        ("type=bind,source=/x,target=/y,readonly=true", Mount("bind", "/y", "/x", True)),
        ("type=tmpfs,target=/scratch", Mount("tmpfs", "/scratch")),
        (
            "source=data,target=/data,volume-driver=local,volume-opt=type=nfs",
            Mount("volume", "/data", "data", driver="local", driver_opts={"type": "nfs"}),
        ),
    ],
)
def test_mount_is_read_as_docker_reads_it(text: str, expected: Mount) -> None:
    assert parse_mount(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("type=overlay,target=/y", "type must be volume, bind or tmpfs"),
        ("type=volume,source=data", "needs target=/absolute/path"),
        ("type=bind,source=x,target=/y", "needs source=/absolute/path"),
        ("type=bind,source=/x,target=/y,volume-opt=o=p", "apply only to type=volume"),
        ("type=tmpfs,target=/y,volume-driver=local", "apply only to type=volume"),
    ],
)
def test_mount_docker_would_refuse_is_a_usage_error_naming_the_flag(
    text: str, message: str
) -> None:
    with pytest.raises(UsageError, match=message) as caught:
        parse_mount(text)
    assert str(caught.value).startswith("--mount:")
