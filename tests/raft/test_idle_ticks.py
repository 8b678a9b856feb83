"""Idle costs of the core (issue #20): the ticks a driver may sleep through, heartbeats to
learners at a lower rate than to voters, and a follower's answers to every other heartbeat."""

from __future__ import annotations

from swarmlet.raft.core import RaftConfig, RaftNode
from swarmlet.raft.messages import AppendEntries, Heartbeat, HeartbeatResp, Role
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


def _answers(net: Net, ticks: int) -> dict[str, int]:
    """Heartbeat answers each follower sends while every node (but the isolated) ticks `ticks`
    times, each tick's messages delivered."""
    counts: dict[str, int] = {}
    for _ in range(ticks):
        for nid, node in net.nodes.items():
            if nid not in net.isolated:
                node.tick()
        while msgs := net.take():
            for m in msgs:
                if isinstance(m, HeartbeatResp):
                    counts[m.from_id] = counts.get(m.from_id, 0) + 1
                net.nodes[m.to_id].step(m)
    return counts


def test_a_follower_answers_every_other_heartbeat_and_its_leader_keeps_the_lead() -> None:
    net = cluster(3, config=CONFIG)
    leader = net.elect("n1")
    net.run()
    ticks = 10 * CONFIG.election_ticks  # ten check-quorum rounds
    rounds = ticks // CONFIG.heartbeat_ticks
    assert _answers(net, ticks) == {"n2": rounds // 2, "n3": rounds // 2}
    assert leader.role is Role.LEADER and leader.counters.get("check_quorum_step_downs", 0) == 0
    # ... and with one of the followers gone, the other's answers alone keep the quorum.
    net.isolated.add("n3")
    assert _answers(net, ticks) == {"n2": rounds // 2}
    assert leader.role is Role.LEADER


def test_a_read_round_and_a_new_leader_are_answered_at_once() -> None:
    net = cluster(3, config=CONFIG)
    leader = net.elect("n1")
    net.run()
    leader.read_index(b"r1")
    net.deliver(lambda m: isinstance(m, Heartbeat))  # the read round's heartbeats
    answers = net.take(lambda m: isinstance(m, HeartbeatResp))
    assert sorted(m.from_id for m in answers) == ["n2", "n3"]
    net.pending.extend(answers)
    net.run()
    assert [r.ctx for r in net.reads["n1"]] == [b"r1"]
    # Then the rounds alternate: skipped, answered.
    assert _answers(net, CONFIG.heartbeat_ticks) == {}
    assert _answers(net, CONFIG.heartbeat_ticks) == {"n2": 1, "n3": 1}


def test_a_new_leaders_first_heartbeat_is_answered() -> None:
    net = cluster(3, config=CONFIG)
    net.elect("n1")
    net.run()
    # Answered, skipped, answered: the next heartbeat from n1 would go unanswered ...
    assert _answers(net, 3 * CONFIG.heartbeat_ticks) == {"n2": 2, "n3": 2}
    net.isolated.add("n1")  # ... but n1 is cut off, and the new leader's first one is answered
    for _ in range(4 * CONFIG.election_ticks):
        new = [n for n in ("n2", "n3") if net.nodes[n].role is Role.LEADER]
        if new:
            break
        _answers(net, 1)
    (winner,) = new
    follower = "n3" if winner == "n2" else "n2"
    first = None
    while first is None:
        net.nodes[winner].tick()
        sent = net.take()
        first = next((m for m in sent if isinstance(m, Heartbeat) and m.to_id == follower), None)
        net.pending.extend(m for m in sent if not isinstance(m, Heartbeat))
        net.run()
    net.nodes[follower].step(first)
    assert [m.from_id for m in net.take(lambda m: isinstance(m, HeartbeatResp))] == [follower]
