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
