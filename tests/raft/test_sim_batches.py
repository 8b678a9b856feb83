"""The simulation with batches of concurrent proposals (tests/raft/sim_batches.py): safety after
every event and liveness after healing, over seeds of their own. Replay a failure with the
command in its message."""

from __future__ import annotations

import pytest

from .sim import run_seed as run_plain_seed
from .sim_batches import run_seed

SEEDS = range(100)


@pytest.mark.parametrize("block", range(5))
def test_batched_proposals_keep_safety_and_liveness(block: int) -> None:
    for seed in SEEDS[block::5]:
        run_seed(seed)


def test_batches_are_proposed_and_their_writes_acknowledged() -> None:
    sims = [run_seed(seed) for seed in range(10)]
    plain = [run_plain_seed(seed) for seed in range(10)]
    assert sum(s.stats.get("batches_proposed", 0) for s in sims) > 10
    assert sum(len(s.acked) for s in sims) > sum(len(s.acked) for s in plain) + 100
