"""The deterministic simulation (tests/raft/sim.py) over many seeds: safety after every event,
liveness after healing. Replay a failure with the command in its message."""

from __future__ import annotations

import pytest

from swarmlet.raft.core import RaftConfig

from .sim import SimFailure, SimParams, Simulation, run_seed

SEEDS = range(300)


@pytest.mark.parametrize("block", range(10))
def test_simulation_seeds_keep_safety_and_liveness(block: int) -> None:
    # 300 seeds in 10 blocks of 30 (one parametrized test per seed would spam the report).
    for seed in SEEDS[block::10]:
        run_seed(seed)


def test_simulation_replays_a_seed_exactly() -> None:
    a, b = run_seed(42), run_seed(42)
    assert (a.events, a.acked, a.leaders) == (b.events, b.acked, b.leaders)


def test_simulation_acknowledges_writes_and_serves_reads() -> None:
    sims = [run_seed(seed) for seed in range(20)]
    assert sum(len(s.acked) for s in sims) > 200
    assert sum(s.reads_served for s in sims) > 20


def test_simulation_detects_a_broken_invariant() -> None:
    # A sanity check of the harness itself: claim an entry was committed with other contents.
    sim = Simulation(3, SimParams(chaos_ticks=40, heal_ticks=100, config=RaftConfig()))
    sim.committed[2] = (99, sim.committed[1][1], b"bogus")
    with pytest.raises(SimFailure, match=r"replay: python -m tests\.raft\.sim --seed 3 -v"):
        sim.run()


@pytest.mark.parametrize("storage_faults", [False, True], ids=["as-reported", "storage-faults"])
@pytest.mark.parametrize("seed", [90074, 90835])
def test_long_chaos_seeds_that_once_never_elected_a_leader(seed: int, storage_faults: bool) -> None:
    # With --chaos-ticks 2000 these two seeds ended with members of different configurations and
    # no leader for good: a learner (by its own log) at a higher term dropped the real
    # candidate's stale vote requests without telling it the term (see test_election for the
    # rule, in isolation). Without storage faults the run draws what it drew when reported.
    run_seed(seed, chaos_ticks=2000, storage_faults=storage_faults)


def test_the_only_voter_that_just_elected_a_leader_does_not_depose_it() -> None:
    # A manager demoted itself; the one voter left granted it a vote in a new term and then,
    # knowing of no leader yet, campaigned at its next tick (a rule tried for `init`'s sake:
    # the only voter campaigns at once) and won alone, deposing the leader it had just elected.
    # Legal in Raft (that leader, of the older term, could commit nothing without it), so the
    # harness counts it rather than failing; the election was for nothing. The only voter now
    # campaigns at once at its start only; a restart in between could still do it (rare: none
    # of 12,900 seeds at --chaos-ticks 2000 did).
    sim = run_seed(4287, chaos_ticks=2000)
    assert sim.stats.get("leaders_elected_behind_a_later_term", 0) == 0


def test_without_the_vote_floor_a_lost_acknowledged_tail_breaks_safety() -> None:
    # The harness can see what the vote floor prevents: told nothing of lost acknowledged tails,
    # the core lets a node that lost a committed entry help elect a leader without it. The first
    # seed where that happens passes with the floor.
    failure = ""
    for seed in range(3000):
        try:
            run_seed(seed, vote_floor=False)
        except SimFailure as e:
            failure = str(e)
            break
    assert failure, "no seed in 0..2999 lost a committed entry without the vote floor"
    assert "leader completeness" in failure or "committed" in failure, failure
    assert "--no-vote-floor" in failure
    sim = run_seed(seed)
    assert sim.stats.get("acknowledged_tails_lost", 0) > 0
