"""Fixtures shared by more than one test package."""

from __future__ import annotations

import pytest

from swarmlet.testing.images import ensure_test_images


@pytest.fixture(scope="session")
def docker_images() -> None:
    """The test images (`swarmlet/busybox`, `swarmlet/web` v1 and v2) exist in the local Docker
    Engine: built once per session if missing or stale."""
    ensure_test_images()
