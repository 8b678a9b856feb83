"""Fixtures of the executor's tests that drive it with a fake runtime."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing

from swarmlet.executor import secretfiles


@pytest.fixture
def secrets_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Secret files go under the test's tmp dir instead of the host's tmpfs."""
    root = tmp_path / "tmpfs" / "swarmlet"
    root.parent.mkdir()
    monkeypatch.setattr(secretfiles, "tmpfs_root", lambda: root)
    return root


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)
