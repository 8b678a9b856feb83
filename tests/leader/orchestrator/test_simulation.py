"""The deterministic orchestration simulation (see `sim.py`), over a range of seeds."""

from __future__ import annotations

import random

import pytest

from swarmlet.leader.orchestrator import seeded_ids
from tests.leader.orchestrator.sim import run_seed


@pytest.mark.parametrize("seed", range(20))
def test_simulation_keeps_invariants_and_converges(seed: int) -> None:
    run_seed(seed)


@pytest.mark.slow
def test_simulation_sweep() -> None:
    for seed in range(20, 60):
        run_seed(seed)


def test_same_seed_replays_the_same_ids() -> None:
    first = seeded_ids(random.Random(3))
    second = seeded_ids(random.Random(3))
    assert [first() for _ in range(3)] == [second() for _ in range(3)]
    assert len(first()) == 25
