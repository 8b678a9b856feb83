"""Elections: Raft §5.2, §5.4.1, pre-vote (thesis §9.6), check-quorum and leader stickiness."""

from __future__ import annotations

import random

import pytest

from swarmlet.errors import NotLeaderError
from swarmlet.raft.core import RaftConfig
from swarmlet.raft.messages import AppendEntries, AppendResp, Heartbeat, RequestVote, Role, VoteResp
from swarmlet.raft.types import Entry

from .net import Net, cluster, make_node, role


def ticks_until_campaign(seed: int) -> int:
    node = make_node("n1", seed=seed)
    for t in range(1, 100):
        node.tick()
        if node.role != Role.FOLLOWER:
            return t
    raise AssertionError("never campaigned")


def test_election_timeouts_are_random_in_one_to_two_election_timeouts() -> None:
    timeouts = {ticks_until_campaign(seed) for seed in range(200)}
    assert min(timeouts) >= 10
    assert max(timeouts) < 20
    assert len(timeouts) > 5  # drawn from the injected rng, not constant


def test_same_seed_gives_same_timeout() -> None:
    assert ticks_until_campaign(7) == ticks_until_campaign(7)


def test_single_voter_elects_itself_and_commits_its_noop() -> None:
    net = Net([make_node("n1", ("n1",))])
    leader = net.elect("n1")
    assert leader.term == 2
    assert leader.commit_index == 2
    assert [e.data for e in net.applied["n1"]] == [b""]


def test_leader_appends_a_noop_of_its_term_on_election() -> None:
    net = cluster(3)
    leader = net.elect("n1")
    assert leader.entries()[-1] == Entry(term=leader.term, index=2)
    assert all(n.commit_index == 2 for n in net.nodes.values() if n.role == Role.LEADER)
    assert net.nodes["n2"].leader_id == "n1"  # followers know the leader (redirection hint)


def test_propose_on_follower_raises_not_leader_with_hint() -> None:
    net = cluster(3)
    net.elect("n1")
    with pytest.raises(NotLeaderError) as exc:
        net.nodes["n2"].propose(b"x")
    assert exc.value.leader_hint == "n1"


def test_election_safety_voter_grants_one_vote_per_term() -> None:
    node = make_node("n1", config=RaftConfig(pre_vote=False))
    node.step(RequestVote("n2", "n1", 5, 1, 1))
    node.step(RequestVote("n3", "n1", 5, 1, 1))
    votes = [m for m in node.ready().messages if isinstance(m, VoteResp)]
    assert [(v.to_id, v.granted) for v in votes] == [("n2", True), ("n3", False)]
    assert node.vote == "n2"


def test_voter_rejects_candidate_with_less_up_to_date_log() -> None:
    # Raft §5.4.1: a higher last term wins; an equal last term needs an index at least as long.
    node = make_node("n1", term=3, entries=[Entry(2, 2), Entry(3, 3)])
    node.step(RequestVote("n2", "n1", 4, 5, 2))  # longer log, older last term
    node.step(RequestVote("n3", "n1", 4, 2, 3))  # same term, shorter
    votes = [m for m in node.ready().messages if isinstance(m, VoteResp)]
    assert [v.granted for v in votes] == [False, False]
    assert node.vote is None


def test_split_vote_never_gives_two_leaders_in_a_term() -> None:
    for seed in range(30):
        rng = random.Random(seed)
        net = Net(make_node(f"n{i}", ("n1", "n2", "n3", "n4"), seed=seed) for i in range(1, 5))
        by_term: dict[int, set[str]] = {}
        for _ in range(60):
            for nid in rng.sample(sorted(net.nodes), 4):
                net.nodes[nid].tick()
            net.flush()
            rng.shuffle(net.pending)
            net.pending = net.pending[: len(net.pending) * 2 // 3]  # lose some messages
            net.deliver()
            for nid, n in net.nodes.items():
                if n.role == Role.LEADER:
                    by_term.setdefault(n.term, set()).add(nid)
        assert all(len(ls) == 1 for ls in by_term.values()), by_term


def test_pre_vote_does_not_bump_terms() -> None:
    net = cluster(3)
    net.isolated = {"n2", "n3"}
    term = net.nodes["n1"].term
    net.tick("n1", 40)
    assert net.nodes["n1"].role == Role.PRE_CANDIDATE
    assert net.nodes["n1"].term == term
    assert net.nodes["n1"].counters["pre_votes_started"] >= 2


def test_partitioned_follower_rejoins_without_disrupting_the_leader() -> None:
    net = cluster(3)
    leader = net.elect("n1")
    term = leader.term
    net.isolated = {"n3"}
    net.tick_all(60)  # n3 times out again and again, alone
    assert net.nodes["n3"].term == term  # pre-votes failed: no term bump
    net.isolated = set()
    net.tick_all(30)
    assert net.leaders() == ["n1"]
    assert leader.term == term
    assert net.nodes["n3"].leader_id == "n1"


def test_follower_that_heard_from_leader_ignores_votes_leader_stickiness() -> None:
    net = cluster(3)
    net.elect("n1")
    n2 = net.nodes["n2"]
    term = n2.term
    n2.step(RequestVote("n3", "n2", term + 1, 99, term))
    n2.step(RequestVote("n3", "n2", term + 1, 99, term, pre_vote=True))
    assert n2.term == term
    assert not [m for m in n2.ready().messages if isinstance(m, VoteResp)]
    assert n2.counters["votes_ignored_in_lease"] == 2


def test_check_quorum_leader_without_quorum_steps_down() -> None:
    net = cluster(3)
    leader = net.elect("n1")
    net.isolated = {"n1"}
    net.tick("n1", leader.config.election_ticks * 2)
    assert leader.role == Role.FOLLOWER
    assert leader.leader_id is None
    assert leader.counters["check_quorum_step_downs"] == 1


def test_leader_with_quorum_stays() -> None:
    net = cluster(3)
    leader = net.elect("n1")
    net.isolated = {"n3"}
    net.tick_all(50)
    assert leader.role == Role.LEADER


def test_stale_leader_learns_higher_term_from_append_response_and_steps_down() -> None:
    net = cluster(3)
    leader = net.elect("n1")
    leader.step(AppendResp("n2", "n1", leader.term + 3, 0, reject=True))
    assert leader.role == Role.FOLLOWER
    assert leader.term == 5


def test_follower_answers_stale_append_with_its_term() -> None:
    node = make_node("n2", term=5)
    node.step(AppendEntries("n1", "n2", 3, 1, 1, (), 1))
    node.step(Heartbeat("n1", "n2", 3, 1))
    replies = node.ready().messages
    assert [type(m) for m in replies] == [AppendResp, AppendResp]
    assert all(m.term == 5 for m in replies)
    assert node.counters["dropped_stale"] == 2
    assert node.leader_id is None


def test_candidate_steps_down_on_append_from_leader_of_same_term() -> None:
    node = make_node("n2", config=RaftConfig(pre_vote=False))
    for _ in range(20):
        node.tick()
    assert role(node) == Role.CANDIDATE
    node.step(AppendEntries("n3", "n2", node.term, 1, 1, (), 1))
    assert role(node) == Role.FOLLOWER
    assert node.leader_id == "n3"
