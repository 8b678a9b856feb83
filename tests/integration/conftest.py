"""Fixtures of the integration tests: a running local cluster of real agents (`cluster`), torn
down after each test whatever happened. A module that needs another shape than three managers
overrides `cluster_shape`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.cluster import LocalCluster, local_cluster


@pytest.fixture
def cluster_shape() -> tuple[int, int]:
    """(managers, workers) that `cluster` starts."""
    return (3, 0)


@pytest.fixture
def cluster(tmp_path: Path, cluster_shape: tuple[int, int]) -> Iterator[LocalCluster]:
    managers, workers = cluster_shape
    with local_cluster(tmp_path) as c:
        c.start(managers=managers, workers=workers)
        yield c
