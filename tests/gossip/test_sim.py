"""Deterministic simulations of whole clusters: convergence, detection, no false deaths, restart.

Every test names its seeds; a failure carries a note with the command that replays it
(GOSSIP_SIM_SEED=<n> runs that one seed). Times asserted here are virtual.
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Callable

import pytest

from swarmlet.gossip.core import EventKind
from swarmlet.gossip.messages import MAX_INCARNATION, Alive, Dead, MemberState, Suspect

from .sim import Net, Sim, replay_hint, sim_seeds


@pytest.fixture
def nodeid(request: pytest.FixtureRequest) -> str:
    """This test's id without parameters: GOSSIP_SIM_SEED picks the seed on replay."""
    return str(request.node.nodeid).split("[")[0]


ALIVE = (MemberState.ALIVE,)
DEAD = (MemberState.DEAD,)


def detection_time_s(seed: int, n: int, loss: float = 0.0, signed: bool = False) -> float:
    """Crash one member of a converged cluster; the virtual time until every live member has
    declared it DEAD (FAILED events), from the crash."""
    sim = Sim(seed, net=Net(loss=loss), signed=signed)
    names = sim.cluster(n)
    assert sim.run_until(60.0, sim.converged), "no convergence"
    crash_at = sim.now + sim.rng.uniform(0.0, 1.0)
    sim.run_until(crash_at)
    victim = names[sim.rng.randrange(n)]
    sim.crash(victim)
    assert sim.run_until(crash_at + 30.0, lambda: sim.all_see(victim, DEAD), check_every_s=0.05)
    first: dict[str, float] = {}
    for observer, ev in sim.observed.events:
        if ev.member.name == victim and ev.kind is EventKind.FAILED:
            first.setdefault(observer, ev.now)
    assert set(first) == set(sim.nodes)
    assert sim.observed.false_failures == []
    return max(first.values()) - crash_at


@pytest.mark.parametrize("seed", sim_seeds([1, 2]))
def test_fifty_members_converge_through_one_seed(seed: int, nodeid: str) -> None:
    with replay_hint(nodeid, seed):
        sim = Sim(seed, net=Net(loss=0.01))
        sim.cluster(50)
        joined_at = sim.now
        assert sim.run_until(joined_at + 30.0, sim.converged)
        print(f"seed {seed}: 50 members converged {sim.now - joined_at:.2f} s after the last join")


def test_crashed_member_is_declared_dead_by_all_within_the_lan_goal(
    record_property: Callable[[str, object], None],
    nodeid: str,
) -> None:
    times = []
    for seed in sim_seeds(list(range(20))):
        with replay_hint(nodeid, seed):
            times.append(detection_time_s(seed, n=10))
    median = statistics.median(times)
    record_property("detection_median_s", median)
    print(f"10 members, crash detected by all: median {median:.2f} s, max {max(times):.2f} s")
    # The LAN goal (config.py): median <= 2 s. memberlist's LAN default needs ~6 s.
    assert median <= 2.0
    assert max(times) <= 4.0


def test_crash_detection_with_five_percent_loss_stays_fast(nodeid: str) -> None:
    times = []
    for seed in sim_seeds(list(range(10))):
        with replay_hint(nodeid, seed):
            times.append(detection_time_s(seed, n=10, loss=0.05))
    print(f"10 members at 5% loss: median {statistics.median(times):.2f} s, max {max(times):.2f}")
    assert statistics.median(times) <= 2.5


def test_crash_detection_in_fifty_members(nodeid: str) -> None:
    times = []
    for seed in sim_seeds([1, 2, 3]):
        with replay_hint(nodeid, seed):
            times.append(detection_time_s(seed, n=50))
    print(f"50 members: detection {[round(t, 2) for t in times]} s")
    assert max(times) <= 6.0  # min suspicion grows with log10(n): 2.0 s at 50


def run_without_crash(seed: int, n: int, net: Net, duration_s: float, signed: bool = False) -> Sim:
    sim = Sim(seed, net=net, signed=signed)
    sim.cluster(n)
    assert sim.run_until(60.0, sim.converged), "no convergence"
    sim.run_until(sim.now + duration_s)
    return sim


@pytest.mark.parametrize("seed", sim_seeds([7]))
def test_no_live_member_is_declared_dead_at_ten_percent_loss(seed: int, nodeid: str) -> None:
    with replay_hint(nodeid, seed):
        sim = run_without_crash(seed, 50, Net(loss=0.10), duration_s=180.0)
        refutes = sum(core.counters["refutes"] for core in sim.nodes.values())
        print(f"50 members, 10% loss, 180 s: {refutes} suspicions refuted, none fatal")
        assert refutes > 0  # the loss did cause suspicions...
        assert sim.observed.false_failures == []  # ...and every one was refuted
        # At this loss some member suspects another at almost any moment: the views agree
        # again soon after (seed 7 had one suspicion pending at 180 s once relayed accusations
        # stopped confirming suspicions; 1 of seeds 1-20 did before that change too).
        assert sim.run_until(sim.now + 10.0, sim.converged)


@pytest.mark.parametrize("seed", sim_seeds([3]))
def test_no_false_death_in_ten_minutes_at_five_percent_loss_with_stalls(
    seed: int, nodeid: str
) -> None:
    """The LAN goal's false-positive half: 10 members, 5% loss, and 5% of datagrams held up to
    200 ms by a busy receiver (a hogged core)."""
    with replay_hint(nodeid, seed):
        net = Net(loss=0.05, stall_prob=0.05, stall_max_s=0.2)
        sim = run_without_crash(seed, 10, net, duration_s=600.0)
        assert sim.observed.false_failures == []
        assert sim.converged()


@pytest.mark.slow
@pytest.mark.skipif(
    not os.environ.get("GOSSIP_SIM_SWEEP"), reason="a long sweep: set GOSSIP_SIM_SWEEP=1"
)
@pytest.mark.parametrize("seed", range(100, 120))
def test_sweep_no_false_death_at_ten_percent_loss(seed: int, nodeid: str) -> None:
    with replay_hint(nodeid, seed):
        sim = run_without_crash(seed, 50, Net(loss=0.10), duration_s=300.0)
        assert sim.observed.false_failures == []


@pytest.mark.parametrize(
    ("seed", "persisted", "signed"),
    [(1, True, False), (2, False, False), (1, True, True), (2, False, True)],
)
def test_restarted_member_becomes_alive_everywhere(
    seed: int, persisted: bool, signed: bool, nodeid: str
) -> None:
    """A restarted agent keeps its name; with a persisted incarnation it outbids its death at
    once, without one it learns of its death by push-pull and refutes it."""
    with replay_hint(nodeid, seed):
        sim = Sim(seed, signed=signed)
        names = sim.cluster(12)
        assert sim.run_until(60.0, sim.converged)
        victim = names[5]
        old_incarnation = sim.nodes[victim].incarnation
        sim.crash(victim)
        assert sim.run_until(sim.now + 30.0, lambda: sim.all_see(victim, DEAD))
        sim.run_until(sim.now + 2.0)
        incarnation = old_incarnation + 1 if persisted else 0
        sim.start(victim, sim.addrs[victim], [sim.addrs[names[0]]], incarnation)
        assert sim.run_until(sim.now + 10.0, sim.converged)
        assert sim.nodes[victim].incarnation > old_incarnation
        rejoined = [
            o
            for o, ev in sim.observed.events
            if ev.member.name == victim and ev.kind is EventKind.JOIN
        ]
        assert set(sim.nodes) - {victim} <= set(rejoined)


def test_a_leaving_member_is_seen_as_left_by_all_and_counts_no_failure() -> None:
    sim = Sim(4, net=Net(loss=0.05))
    names = sim.cluster(10)
    assert sim.run_until(60.0, sim.converged)
    leaver = sim.nodes[names[3]]
    leaver.leave(sim.now)
    sim.flush(names[3])
    assert sim.run_until(sim.now + 5.0, leaver.leave_broadcast_done)
    sim.crash(names[3])  # the process exits once the broadcast is out
    assert sim.run_until(sim.now + 10.0, lambda: sim.all_see(names[3], (MemberState.LEFT,)))
    assert not any(ev.kind is EventKind.FAILED for _, ev in sim.observed.events)


def test_new_meta_reaches_every_member() -> None:
    sim = Sim(5, net=Net(loss=0.05))
    names = sim.cluster(20)
    assert sim.run_until(60.0, sim.converged)
    sim.nodes[names[7]].set_meta(sim.now, b"tasks=3")
    sim.flush(names[7])
    start = sim.now

    def everyone_has_it() -> bool:
        return all(core.member(names[7]).meta == b"tasks=3" for core in sim.nodes.values())  # type: ignore[union-attr]

    assert sim.run_until(start + 5.0, everyone_has_it, check_every_s=0.05)
    print(f"meta reached 20 members in {sim.now - start:.2f} s")


def test_the_same_seed_replays_the_same_run() -> None:
    def trace(seed: int) -> list[tuple[str, str, str, float]]:
        sim = Sim(seed, net=Net(loss=0.1))
        names = sim.cluster(8)
        sim.run_until(10.0)
        sim.crash(names[2])
        sim.run_until(20.0)
        return [(o, e.kind.name, e.member.name, e.now) for o, e in sim.observed.events]

    assert trace(11) == trace(11)
    assert trace(11) != trace(12)


def test_a_failing_seed_says_how_to_replay_it() -> None:
    with pytest.raises(AssertionError) as info, replay_hint("tests/gossip/x.py::t", 42):
        raise AssertionError("boom")
    assert "GOSSIP_SIM_SEED=42" in "\n".join(info.value.__notes__)


@pytest.mark.parametrize("seed", sim_seeds([1, 2]))
def test_a_member_frozen_for_one_second_is_not_declared_dead(seed: int, nodeid: str) -> None:
    """A starved process (all its timers and datagrams held up) within the LAN budget."""
    with replay_hint(nodeid, seed):
        sim = Sim(seed, net=Net(loss=0.05))
        names = sim.cluster(10)
        assert sim.run_until(60.0, sim.converged)
        sim.pause(names[4], 1.0)
        sim.run_until(sim.now + 20.0)
        assert sim.observed.false_failures == []


@pytest.mark.parametrize("seed", sim_seeds([1]))
def test_a_member_frozen_past_detection_is_declared_dead_then_refutes(
    seed: int, nodeid: str
) -> None:
    """The price of ~2 s detection: a 3 s stall looks like a crash. Once the member runs again it
    hears of its death, refutes it, and every member takes it back."""
    with replay_hint(nodeid, seed):
        sim = Sim(seed, net=Net(loss=0.05))
        names = sim.cluster(10)
        assert sim.run_until(60.0, sim.converged)
        sim.pause(names[4], 3.0)
        assert sim.run_until(sim.now + 3.0, lambda: sim.all_see(names[4], DEAD), 0.05)
        assert sim.run_until(sim.now + 10.0, sim.converged)
        assert sim.nodes[names[4]].counters["refutes"] >= 1


# --- signed clusters and a forger with the cluster key -------------------------------------------


def test_a_signed_cluster_detects_crashes_within_the_lan_goal(nodeid: str) -> None:
    times = []
    for seed in sim_seeds(list(range(10))):
        with replay_hint(nodeid, seed):
            times.append(detection_time_s(seed, n=10, signed=True))
    print(f"10 signed members: median {statistics.median(times):.2f} s, max {max(times):.2f} s")
    assert statistics.median(times) <= 2.0


@pytest.mark.parametrize("seed", sim_seeds([8]))
def test_a_signed_cluster_refuses_no_honest_news_and_loses_no_member_at_ten_percent_loss(
    seed: int, nodeid: str
) -> None:
    with replay_hint(nodeid, seed):
        sim = run_without_crash(seed, 20, Net(loss=0.10), duration_s=120.0, signed=True)
        keys = (
            "suspects",
            "refutes",
            "dropped_above_known",
            "dropped_unverified",
            "dropped_datagram_shape",
            "dropped_after_bad_signature",
            "dropped_push_pull_duplicate",
        )
        total = {k: sum(c.counters[k] for c in sim.nodes.values()) for k in keys}
        print(f"20 signed members, 10% loss, 120 s: {total}")
        assert total["refutes"] > 0
        assert total["dropped_unverified"] == 0  # every honest Alive verifies, relayed or not
        # Every datagram and pushed state a member sends is of the shape members take.
        assert total["dropped_datagram_shape"] == 0
        assert total["dropped_after_bad_signature"] == 0
        assert total["dropped_push_pull_duplicate"] == 0
        assert sim.observed.false_failures == []
        assert sim.converged()


@pytest.mark.parametrize("seed", sim_seeds([1, 2]))
def test_a_forger_with_the_cluster_key_can_neither_kill_nor_rewrite_a_member(
    seed: int, nodeid: str
) -> None:
    """Issue #15 item 3: Suspect and Dead at the cap, and Alive with new meta, about a victim,
    to every member, ten times a second; plus accusations at the victim's real incarnation,
    which are accepted and must be refuted every time."""
    with replay_hint(nodeid, seed):
        sim = Sim(seed, net=Net(loss=0.02), signed=True)
        names = sim.cluster(10)
        assert sim.run_until(60.0, sim.converged)
        victim = names[3]
        vaddr = sim.addrs[victim]
        forger = ("10.66.0.1", 7946)
        cap = MAX_INCARNATION - 1
        end = sim.now + 20.0
        while sim.now < end:
            real = sim.nodes[victim].incarnation
            forged = (
                Suspect(cap, victim, "mallory"),
                Dead(cap, victim, "mallory"),
                Dead(cap, victim, victim),  # a "leave"
                Alive(cap, victim, *vaddr, b"evil", bytes(64)),
                Alive(real + 1, victim, *vaddr, b"evil"),
            )
            for name in names:
                for message in forged:  # one a datagram: together they are not of our shape
                    sim.forge(forger, sim.addrs[name], (message,))
            if sim.rng.random() < 0.1:  # now and then, an accusation the victim must refute
                sim.forge(forger, sim.addrs[names[0]], (Suspect(real, victim, "mallory"),))
            sim.run_until(sim.now + 0.1)
        sim.run_until(sim.now + 10.0)
        assert sim.observed.false_failures == []
        assert not any(
            ev.member.name == victim and ev.kind is EventKind.LEFT for _, ev in sim.observed.events
        )
        assert sim.converged()
        assert sim.nodes[victim].counters["refutes"] > 0
        assert sim.nodes[victim].incarnation < 1000
        for name in names:
            m = sim.nodes[name].member(victim)
            assert m is not None
            assert m.meta == victim.encode()
            assert m.incarnation == sim.nodes[victim].incarnation
            assert sim.nodes[name].counters["dropped_above_known"] > 0
