"""The agent's environment overrides: honoured when they make sense, else ignored with a warning."""

from __future__ import annotations

import pytest

from swarmlet.node.config import AgentConfig
from swarmlet.node.main import config_from_env


@pytest.mark.parametrize("name", ["SWARMLET_VOTER_GRACE_S", "SWARMLET_CERT_LIFETIME_S"])
def test_a_positive_number_of_seconds_is_honoured(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(name, "12.5")
    config = config_from_env()
    field = "voter_grace_s" if "GRACE" in name else "cert_lifetime_s"
    assert getattr(config, field) == 12.5


@pytest.mark.parametrize("value", ["abc", "0", "-3", "nan", "inf"])
@pytest.mark.parametrize("name", ["SWARMLET_VOTER_GRACE_S", "SWARMLET_CERT_LIFETIME_S"])
def test_anything_else_keeps_the_default_and_warns(
    name: str, value: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(name, value)
    assert config_from_env() == AgentConfig(proxy_workers=config_from_env().proxy_workers)
    assert f"ignoring {name}" in caplog.text


@pytest.mark.parametrize(
    ("name", "field", "value", "expected"),
    [
        ("SWARMLET_SNAPSHOT_EVERY", "raft_snapshot_every", "8", 8),
        ("SWARMLET_PROXY_WORKERS", "proxy_workers", "0", 0),
        ("SWARMLET_PROXY_WORKERS", "proxy_workers", "3", 3),
    ],
)
def test_a_whole_number_is_honoured(
    name: str, field: str, value: str, expected: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(name, value)
    assert getattr(config_from_env(), field) == expected


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SWARMLET_SNAPSHOT_EVERY", "0"),
        ("SWARMLET_SNAPSHOT_EVERY", "-1"),
        ("SWARMLET_SNAPSHOT_EVERY", "1.5"),
        ("SWARMLET_SNAPSHOT_EVERY", "²"),  # a digit to str.isdigit, not to int()
        ("SWARMLET_PROXY_WORKERS", "two"),
        ("SWARMLET_PROXY_WORKERS", "-1"),
    ],
)
def test_a_whole_number_out_of_range_keeps_the_default_and_warns(
    name: str, value: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    default = config_from_env()
    monkeypatch.setenv(name, value)
    assert config_from_env() == default
    assert f"ignoring {name}" in caplog.text
