"""Idle costs of the core (issue #20): the ticks a driver may sleep through, and heartbeats to
learners at a lower rate than to voters."""

from __future__ import annotations

from swarmlet.raft.core import RaftConfig, RaftNode
from swarmlet.raft.messages import AppendEntries, Heartbeat, Role
from swarmlet.raft.types import ConfChange, ConfChangeKind

from .net import Net, Pred, cluster

CONFIG = RaftConfig(election_ticks=8, heartbeat_ticks=2)  # the agent's (node.config)


def _burst_only_counts_until_its_last_tick(net: Net, nid: str) -> int:
    """Tick `nid` through one `idle_ticks` burst, checking that every tick but the last leaves
    nothing to do; returns the burst's length."""
    net.flush()
    node = net.nodes[nid]
    burst = node.idle_ticks()
    assert burst >= 1
    for _ in range(burst - 1):
        before = (node.role, node.term, node.leader_id)
        node.tick()
        assert not node.has_ready()
        assert (node.role, node.term, node.leader_id) == before
    node.tick()
    return burst


def test_a_follower_sleeping_through_idle_ticks_campaigns_at_the_same_tick() -> None:
    eager, lazy = cluster(3, config=CONFIG), cluster(3, config=CONFIG)  # same seeds
    ticks_to_campaign = 0
    while eager.nodes["n2"].role is Role.FOLLOWER:
        eager.nodes["n2"].tick()
        ticks_to_campaign += 1
    slept = 0
    while lazy.nodes["n2"].role is Role.FOLLOWER:
        slept += _burst_only_counts_until_its_last_tick(lazy, "n2")
    assert slept == ticks_to_campaign
    assert ticks_to_campaign >= CONFIG.election_ticks


def test_a_leader_sleeps_only_until_its_next_heartbeat() -> None:
    net = cluster(3, config=CONFIG)
    leader = net.elect("n1")
    net.take()
    for _ in range(3 * CONFIG.election_ticks):
        assert leader.idle_ticks() <= CONFIG.heartbeat_ticks
        _burst_only_counts_until_its_last_tick(net, "n1")
        net.run()
    assert leader.role is Role.LEADER


def test_a_learner_only_counts_but_still_wakes_now_and_then() -> None:
    net = cluster(3, config=CONFIG, learners=["n4"])
    learner = net.nodes["n4"]
    assert learner.idle_ticks() == 2 * CONFIG.election_ticks
    for _ in range(3):
        _burst_only_counts_until_its_last_tick(net, "n4")
    assert learner.role is Role.FOLLOWER


def _heartbeats_per_peer(
    net: Net, leader: RaftNode, ticks: int, pred: Pred = lambda m: True
) -> dict[str, int]:
    """Heartbeats `leader` sends to each peer in `ticks` ticks (delivered, with whatever else
    matches `pred`; the rest is dropped)."""
    counts: dict[str, int] = {}
    for _ in range(ticks):
        leader.tick()
        heartbeats = net.take(lambda m: isinstance(m, Heartbeat))
        for m in heartbeats:
            counts[m.to_id] = counts.get(m.to_id, 0) + 1
        net.pending.extend(heartbeats)
        net.run(pred)
    return counts


def test_learners_get_heartbeats_every_half_election_timeout_voters_every_heartbeat() -> None:
    net = cluster(3, config=CONFIG, learners=["n4", "n5"])
    leader = net.elect("n1")
    net.run()
    counts = _heartbeats_per_peer(net, leader, 4 * CONFIG.election_ticks)
    voter_rounds = 4 * CONFIG.election_ticks // CONFIG.heartbeat_ticks
    learner_rounds = 4 * CONFIG.election_ticks // (CONFIG.election_ticks // 2)
    assert counts == {"n2": voter_rounds, "n3": voter_rounds, "n4": learner_rounds, "n5": 8}
    assert learner_rounds == 8
    # Still in the lease of the leader: a learner never counts an election timeout unheard.
    assert net.nodes["n4"].leader_id == "n1"


def test_a_voter_demoted_by_an_uncommitted_change_keeps_every_heartbeat() -> None:
    # It may still campaign until the demotion commits (`_promotable`), so its election timer
    # must keep hearing the leader as often as before.
    net = cluster(3, config=CONFIG)
    leader = net.elect("n1")
    net.run()
    leader.propose_conf_change(ConfChange(ConfChangeKind.ADD_LEARNER, "n3"))
    net.drop()  # its appends: the demotion cannot commit
    assert "n3" in leader.conf.learners and leader.commit_index < leader.last_index
    no_appends: Pred = lambda m: not isinstance(m, AppendEntries)  # noqa: E731
    counts = _heartbeats_per_peer(net, leader, CONFIG.election_ticks, no_appends)
    assert leader.commit_index < leader.last_index
    assert counts["n3"] == counts["n2"] == CONFIG.election_ticks // CONFIG.heartbeat_ticks


def test_a_peer_that_came_up_is_probed_at_once_and_catches_up() -> None:
    # A joining learner whose first appends were lost (it was not listening yet) would wait for
    # its next heartbeat round; told that it came up (gossip), the leader probes it now.
    net = cluster(3, config=CONFIG, learners=["n4"])
    leader = net.elect("n1")
    leader.propose(b"x")
    net.run(lambda m: m.to_id != "n4")  # everything to n4 is lost
    net.drop()
    assert net.nodes["n4"].last_index < leader.last_index
    leader.peer_reachable("n4")
    sent = net.take()
    assert [(type(m), m.to_id) for m in sent] == [(AppendEntries, "n4")]
    net.pending.extend(sent)
    net.run()  # no tick: the probe and its answers alone bring the catch-up
    assert net.nodes["n4"].last_index == leader.last_index


def test_peer_reachable_does_nothing_on_a_follower_or_for_a_stranger() -> None:
    net = cluster(3, config=CONFIG)
    leader = net.elect("n1")
    net.run()
    net.nodes["n2"].peer_reachable("n3")
    leader.peer_reachable("n9")
    assert net.take() == []
