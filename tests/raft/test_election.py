"""Elections: Raft §5.2, §5.4.1, pre-vote (thesis §9.6), check-quorum and leader stickiness."""

from __future__ import annotations

import random

import pytest

from swarmlet.errors import NotLeaderError
from swarmlet.raft.core import RaftConfig
from swarmlet.raft.messages import AppendEntries, AppendResp, Heartbeat, RequestVote, Role, VoteResp
from swarmlet.raft.quorum import encode_conf_change
from swarmlet.raft.types import (
    ConfChange,
    ConfChangeKind,
    ConfState,
    Entry,
    EntryKind,
    Snapshot,
    SnapshotMeta,
)

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


def test_the_only_voter_campaigns_at_its_first_tick_and_a_voter_of_three_waits() -> None:
    """No one else can lead a configuration of one voter: `init` waited 0.4-0.8 s for nothing."""
    alone = make_node("n1", ("n1",))
    assert alone.idle_ticks() == 1
    alone.tick()
    assert alone.role == Role.LEADER
    for seed in range(20):
        assert ticks_until_campaign(seed) >= 10  # one of three voters: its randomized timeout


def test_the_only_voter_gives_a_leader_it_hears_of_its_timeout() -> None:
    """n1 of {n1, n2} removes itself: n2 holds the change, is the only voter of it, and hears
    from n1, which leads until the change commits. n2 campaigns at its timeout, not at once:
    what n1 appends meanwhile would be lost."""
    net = cluster(2)
    leader = net.elect("n1")
    net.run()
    leader.propose_conf_change(ConfChange(ConfChangeKind.REMOVE, "n1"))
    net.deliver(lambda m: m.to_id == "n2")  # the change reaches n2; its answer does not return
    net.drop()
    follower = net.nodes["n2"]
    assert follower.conf.voters == ("n2",) and follower.leader_id == "n1"
    assert follower.idle_ticks() >= follower.config.election_ticks
    net.tick("n2", pred=lambda m: False)
    assert follower.role == Role.FOLLOWER


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


def test_candidate_learns_a_higher_term_from_a_rejected_stale_vote_request() -> None:
    # Raft Figure 2: the reply to RequestVote carries currentTerm, even when the request is stale.
    voter = make_node("n3", term=7, config=RaftConfig(pre_vote=False))
    voter.step(RequestVote("n1", "n3", 4, 9, 3))
    assert voter.ready().messages == (VoteResp("n3", "n1", 7, False),)
    candidate = make_node("n1", config=RaftConfig(pre_vote=False))
    for _ in range(20):
        candidate.tick()
    assert role(candidate) == Role.CANDIDATE
    candidate.step(VoteResp("n3", "n1", 7, False))
    assert role(candidate) == Role.FOLLOWER
    assert candidate.term == 7


def test_a_refused_vote_request_does_not_restart_the_election_timer() -> None:
    # Raft Figure 2: a follower times out unless it hears from a leader or grants a vote.
    node = make_node("n2", config=RaftConfig(pre_vote=False, check_quorum=False))
    for _ in range(9):
        node.tick()
    node.step(RequestVote("n3", "n2", 5, 0, 0))  # a higher term, a log behind ours: refused
    assert node.term == 5 and node.vote is None
    ticks = 0
    while role(node) == Role.FOLLOWER:
        node.tick()
        ticks += 1
    assert 9 + ticks < 20  # the timeout it drew before the request, in [10, 20)


def test_candidate_wins_while_a_removed_node_keeps_raising_the_term_of_its_voter() -> None:
    # The shape of simulation seeds 90074 and 90835 (--chaos-ticks 2000): n1's longer log makes
    # n3 a voter, but n3's shorter log makes it a learner, so n3 never campaigns itself; n2, removed
    # from the group and unaware of it, keeps sending n3 vote requests of ever higher terms (its
    # log is too short to win). Without a reply to n1's stale requests, n1 never learned n3's
    # term, never caught up with it, and the group never had a leader again.
    cfg = RaftConfig(pre_vote=False)
    snap = Snapshot(SnapshotMeta(1, 1, ConfState(voters=("n1",), learners=("n3",))))
    promote = Entry(
        2, 2, EntryKind.CONF_CHANGE, encode_conf_change(ConfChange(ConfChangeKind.ADD_VOTER, "n3"))
    )
    n1 = make_node("n1", config=cfg, term=3, snapshot=snap, entries=[promote])
    n3 = make_node("n3", config=cfg, term=5, snapshot=snap)
    assert n1.conf.voters == ("n1", "n3") and n3.conf.voters == ("n1",)
    net = Net([n1, n3])
    for tick in range(400):
        if tick % 20 == 0:  # n2 campaigns (its messages to n3 only; n3's answers are lost)
            n3.step(RequestVote("n2", "n3", n3.term + 2, 0, 0))
        net.tick_all()
        if n1.role == Role.LEADER:
            break
    assert n1.role == Role.LEADER
    assert n1.commit_index == 3  # n3 acknowledged the leader's no-op
