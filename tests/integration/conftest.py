"""Fixtures of the integration tests: a running local cluster of real agents (`cluster`), torn
down after each test whatever happened. A module that needs another shape than three managers
overrides `cluster_shape`.

Opt-in, `SWARMLET_TEST_UNDER_LOAD=N`: N processes spin on the CPU for as long as the integration
tests run, so the agents (and the tests' own waits) get a slice of a busy machine, as on a shared
CI host. Timing assumptions that hold on an idle machine and fail on a busy one are bugs (two
were found this way: a stale view served by a restarted manager, and Docker's `die` event coming
before `docker ps` shows the container exited); this is how to look for the next."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.cluster import LocalCluster, local_cluster

LOAD_SWITCH = "SWARMLET_TEST_UNDER_LOAD"


def load_processes(value: str) -> int:
    """How many busy processes `SWARMLET_TEST_UNDER_LOAD` asks for (unset or empty: none)."""
    if not value:
        return 0
    if not value.isascii() or not value.isdigit() or int(value) > 64:
        raise ValueError(f"{LOAD_SWITCH}={value!r}: give a number of busy processes, 0 to 64")
    return int(value)


@pytest.fixture(scope="session", autouse=True)
def busy_machine() -> Iterator[int]:
    """Start the busy processes `SWARMLET_TEST_UNDER_LOAD` asks for; yields how many run."""
    try:
        count = load_processes(os.environ.get(LOAD_SWITCH, ""))
    except ValueError as exc:
        pytest.fail(str(exc))
    spin = [sys.executable, "-c", "while True: pass"]
    hogs = [subprocess.Popen(spin) for _ in range(count)]
    try:
        yield count
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()


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
