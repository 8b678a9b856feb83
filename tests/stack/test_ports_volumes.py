"""Short port and volume syntax to docker's long form."""

from __future__ import annotations

import pytest

from swarmlet.stack.ports import short_port_to_long
from swarmlet.stack.volumes import parse_volume


def test_container_port_only_has_no_published_port() -> None:
    assert short_port_to_long("3000", []) == [
        {"mode": "ingress", "target": 3000, "protocol": "tcp"}
    ]


def test_ranges_expand_pairwise() -> None:
    ports = short_port_to_long("9090-9091:8080-8081/udp", [])
    assert ports == [
        {"mode": "ingress", "target": 8080, "published": 9090, "protocol": "udp"},
        {"mode": "ingress", "target": 8081, "published": 9091, "protocol": "udp"},
    ]


def test_host_range_for_one_container_port_publishes_each_host_port() -> None:
    ports = short_port_to_long("8000-8001:80", [])
    assert [p["published"] for p in ports] == [8000, 8001]
    assert {p["target"] for p in ports} == {80}


def test_host_ip_is_ignored_with_dockers_warning() -> None:
    warnings: list[str] = []
    short_port_to_long("127.0.0.1:8001:8001", warnings)
    assert warnings == [
        "ignoring IP-address (127.0.0.1:8001:8001/tcp) service will listen on '0.0.0.0'"
    ]


@pytest.mark.parametrize("spec", ["abc", "80:abc", "1-2:3-5", "80/xyz", "999999", "bad-ip:80:80"])
def test_invalid_port_specs_are_rejected(spec: str) -> None:
    with pytest.raises(ValueError, match=r"invalid|no port"):
        short_port_to_long(spec, [])


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("/var/lib/mysql", {"type": "volume", "target": "/var/lib/mysql"}),
        ("data:/srv", {"type": "volume", "source": "data", "target": "/srv"}),
        ("./dir:/srv:ro", {"type": "bind", "source": "./dir", "target": "/srv", "read_only": True}),
        ("~/c:/etc/c", {"type": "bind", "source": "~/c", "target": "/etc/c"}),
        (
            "data:/srv:nocopy",
            {"type": "volume", "source": "data", "target": "/srv", "volume": {"nocopy": True}},
        ),
        (
            "/h:/c:rshared",
            {"type": "bind", "source": "/h", "target": "/c", "bind": {"propagation": "rshared"}},
        ),
        ("/h:/c:rw,z", {"type": "bind", "source": "/h", "target": "/c"}),
    ],
)
def test_short_volumes_become_long_form(spec: str, expected: dict[str, object]) -> None:
    assert parse_volume(spec) == expected


@pytest.mark.parametrize("spec", ["", "/a::/b", "/a:/b:ro:extra"])
def test_invalid_volume_specs_are_rejected(spec: str) -> None:
    with pytest.raises(ValueError, match=r"invalid|empty|colons"):
        parse_volume(spec)
