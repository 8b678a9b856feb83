"""Membership (thesis §4.1 with the 2015 barrier fix), learners, snapshots (Raft §7), ReadIndex
(thesis §6.4) and leadership transfer (thesis §3.10)."""

from __future__ import annotations

import pytest

from swarmlet.errors import NoLeaderError, NotLeaderError
from swarmlet.raft.core import ConfChangeRefused, LeadershipTransferError, RaftConfig
from swarmlet.raft.messages import (
    AppendEntries,
    Heartbeat,
    HeartbeatResp,
    InstallSnapshot,
    ReadIndexReq,
    ReadIndexResp,
    ReadState,
    RequestVote,
    Role,
    TimeoutNow,
    VoteResp,
)
from swarmlet.raft.quorum import encode_conf_change
from swarmlet.raft.types import ConfChange, ConfChangeKind, ConfState, Entry, EntryKind, Snapshot

from .net import Net, cluster, make_node, role

ADD_VOTER, ADD_LEARNER, REMOVE = (
    ConfChangeKind.ADD_VOTER,
    ConfChangeKind.ADD_LEARNER,
    ConfChangeKind.REMOVE,
)


def with_joiner(n: int = 3, nid: str = "n9", config: RaftConfig | None = None) -> Net:
    net = cluster(n, config=config)
    net.add(make_node(nid, snapshot=Snapshot(), config=config))
    return net


# ------------------------------------------------------------------ membership


def test_conf_change_refused_until_leader_commits_an_entry_of_its_term() -> None:
    net = cluster(3)
    n1 = net.nodes["n1"]
    for _ in range(30):
        n1.tick()
        net.flush()
        net.deliver(lambda m: not isinstance(m, AppendEntries))  # its no-op stays uncommitted
        if n1.role == Role.LEADER:
            break
    assert n1.role == Role.LEADER
    with pytest.raises(ConfChangeRefused, match="entry of its term"):
        n1.propose_conf_change(ConfChange(ADD_LEARNER, "n9"))
    net.run()
    assert n1.commit_index == 2
    assert n1.propose_conf_change(ConfChange(ADD_LEARNER, "n9")) == 3


def test_conf_change_refused_while_another_is_pending() -> None:
    net = cluster(3)
    leader = net.elect("n1")
    net.isolated = {"n2", "n3"}
    leader.propose_conf_change(ConfChange(ADD_LEARNER, "n9"))
    with pytest.raises(ConfChangeRefused, match="not committed yet"):
        leader.propose_conf_change(ConfChange(ADD_LEARNER, "n8"))


def test_conf_change_on_follower_raises_not_leader() -> None:
    net = cluster(3)
    net.elect("n1")
    with pytest.raises(NotLeaderError):
        net.nodes["n2"].propose_conf_change(ConfChange(ADD_LEARNER, "n9"))


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (ConfChange(ADD_VOTER, "n2"), "already a voter"),
        (ConfChange(REMOVE, "n9"), "not a member"),
    ],
)
def test_invalid_conf_change_is_refused(change: ConfChange, reason: str) -> None:
    net = cluster(3)
    leader = net.elect("n1")
    with pytest.raises(ConfChangeRefused, match=reason):
        leader.propose_conf_change(change)


def test_configuration_takes_effect_on_append_and_reverts_on_truncation() -> None:
    node = make_node("n2", term=2, entries=[Entry(2, 2)])
    cc = Entry(2, 3, EntryKind.CONF_CHANGE, encode_conf_change(ConfChange(ADD_LEARNER, "n9")))
    node.step(AppendEntries("n1", "n2", 2, 2, 2, (cc,), 2))
    assert node.conf.learners == ("n9",)  # uncommitted, but in force (thesis §4.1)
    node.step(AppendEntries("n3", "n2", 3, 2, 2, (Entry(3, 3),), 2))
    assert node.conf == ConfState(voters=("n1", "n2", "n3"))  # the change was truncated away


def test_add_learner_catches_up_and_is_promoted_to_voter() -> None:
    net = with_joiner()
    leader = net.elect("n1")
    leader.propose(b"a")
    net.run()
    leader.propose_conf_change(ConfChange(ADD_LEARNER, "n9"))
    net.run()
    net.tick_all(3)
    n9 = net.nodes["n9"]
    assert n9.conf.learners == ("n9",)
    assert n9.last_index == leader.last_index
    assert [e.data for e in net.applied["n9"] if e.kind == EntryKind.NORMAL and e.data] == [b"a"]
    leader.propose_conf_change(ConfChange(ADD_VOTER, "n9"))
    net.run()
    net.tick_all(2)
    assert n9.conf == ConfState(voters=("n1", "n2", "n3", "n9"))
    assert leader.conf == n9.conf


def test_learner_never_campaigns() -> None:
    net = cluster(3, learners=("n4",))
    net.isolated = {"n1", "n2", "n3"}
    net.tick("n4", 100)
    n4 = net.nodes["n4"]
    assert n4.role == Role.FOLLOWER
    assert "pre_votes_started" not in n4.counters


def test_learner_votes_do_not_count_toward_quorum() -> None:
    cfg = RaftConfig(pre_vote=False)
    net = cluster(3, config=cfg, learners=("n4", "n5"))
    n1 = net.nodes["n1"]
    for _ in range(20):
        n1.tick()
        if n1.role == Role.CANDIDATE:
            break
    net.drop()
    # Only the learners answer, granting: no quorum of voters.
    for learner in ("n4", "n5"):
        n1.step(VoteResp(learner, "n1", n1.term, True))
    assert role(n1) == Role.CANDIDATE
    n1.step(VoteResp("n2", "n1", n1.term, True))
    assert role(n1) == Role.LEADER


def test_demoted_voter_becomes_learner() -> None:
    net = cluster(3)
    leader = net.elect("n1")
    leader.propose_conf_change(ConfChange(ADD_LEARNER, "n3"))
    net.run()
    net.tick_all(2)
    assert net.nodes["n3"].conf == ConfState(voters=("n1", "n2"), learners=("n3",))


def test_removed_leader_steps_down_after_the_change_commits() -> None:
    net = cluster(3)
    leader = net.elect("n1")
    leader.propose_conf_change(ConfChange(REMOVE, "n1"))
    assert role(leader) == Role.LEADER  # still leads until committed
    net.run()
    assert role(leader) == Role.FOLLOWER
    assert leader.counters["removed_leader_step_downs"] == 1
    net.isolated = {"n1"}
    net.tick_all(40)
    assert len(net.leaders()) == 1
    assert net.leaders()[0] in ("n2", "n3")
    assert leader.role == Role.FOLLOWER  # never campaigns again


def test_last_voter_cannot_be_removed() -> None:
    net = Net([make_node("n1", ("n1",))])
    leader = net.elect("n1")
    with pytest.raises(ConfChangeRefused, match="last voter"):
        leader.propose_conf_change(ConfChange(REMOVE, "n1"))


# ------------------------------------------------------------------ snapshots


def test_compact_drops_the_log_and_keeps_a_snapshot() -> None:
    net = cluster(3)
    leader = net.elect("n1")
    for i in range(4):
        leader.propose(b"%d" % i)
    net.run()
    snap = leader.compact(4, b"state@4")
    assert snap.meta.index == 4
    assert snap.meta.term == leader.term
    assert snap.meta.conf == leader.conf
    assert leader.entries()[0].index == 5
    assert leader.snapshot == snap


def test_compact_beyond_applied_raises() -> None:
    net = cluster(3)
    leader = net.elect("n1")
    with pytest.raises(ValueError, match="applied"):
        leader.compact(leader.applied_index + 1, b"")


def test_follower_behind_the_compaction_point_gets_an_install_snapshot() -> None:
    net = cluster(3)
    leader = net.elect("n1")
    net.isolated = {"n3"}
    for i in range(5):
        leader.propose(b"%d" % i)
    net.run()
    leader.compact(leader.applied_index, b"state")
    net.isolated = set()
    net.tick_all(3)
    n3 = net.nodes["n3"]
    installs = [rd.snapshot for rd in net.readies["n3"] if rd.snapshot is not None]
    assert [s.data for s in installs] == [b"state"]
    assert n3.commit_index == leader.commit_index
    assert n3.counters["snapshots_installed"] == 1
    assert n3.entries() == leader.entries()


def test_new_learner_catches_up_by_snapshot() -> None:
    net = with_joiner()
    leader = net.elect("n1")
    leader.propose(b"x")
    net.run()
    leader.compact(leader.applied_index, b"sm")
    leader.propose_conf_change(ConfChange(ADD_LEARNER, "n9"))
    net.run()
    net.tick_all(3)
    n9 = net.nodes["n9"]
    assert any(isinstance(m, InstallSnapshot) for rd in net.readies["n1"] for m in rd.messages)
    assert n9.conf.learners == ("n9",)
    assert n9.applied_index == leader.applied_index


def test_lost_snapshot_is_resent_after_the_retry_timeout() -> None:
    cfg = RaftConfig(snapshot_retry_ticks=3)
    net = cluster(3, config=cfg)
    leader = net.elect("n1")
    net.isolated = {"n3"}
    leader.propose(b"x")
    net.run()
    leader.compact(leader.applied_index, b"s")
    net.isolated = set()
    net.tick("n1", 1, lambda m: not isinstance(m, InstallSnapshot))  # the snapshot is lost
    assert leader.counters["snapshots_sent"] == 1
    assert net.nodes["n3"].counters.get("snapshots_installed") is None
    net.tick_all(6)
    assert net.nodes["n3"].counters["snapshots_installed"] == 1


# ------------------------------------------------------------------ ReadIndex


def test_read_index_waits_for_a_heartbeat_quorum() -> None:
    net = cluster(3)
    leader = net.elect("n1")
    net.tick_all(1)
    leader.read_index(b"r1")
    hbs = net.take(lambda m: isinstance(m, Heartbeat))
    assert {m.to_id for m in hbs} == {"n2", "n3"}
    assert net.reads["n1"] == []  # not confirmed yet
    resp = next(m for m in hbs if m.to_id == "n2")
    net.nodes["n2"].step(resp)
    net.deliver(lambda m: isinstance(m, HeartbeatResp))
    assert net.reads["n1"] == [ReadState(b"r1", leader.commit_index)]


def test_reads_started_in_one_turn_share_one_round_of_heartbeats() -> None:
    # A heartbeat to every member per read request let one learner streaming requests make
    # the leader send thousands a turn (review): the reads of a turn share the round sent with
    # its Ready, and each is answered once a quorum has answered that round.
    net = cluster(3)
    leader = net.elect("n1")
    net.tick_all(1)
    net.run()
    term = leader.term
    for i in range(1000):
        leader.step(ReadIndexReq("n3", "n1", term, b"%d" % i))
    hbs = net.take(lambda m: isinstance(m, Heartbeat))
    assert sorted(m.to_id for m in hbs) == ["n2", "n3"]
    net.nodes["n2"].step(next(m for m in hbs if m.to_id == "n2"))
    answers = net.take(lambda m: isinstance(m, HeartbeatResp))
    for m in answers:
        leader.step(m)
    served = net.take(lambda m: isinstance(m, ReadIndexResp))
    assert len(served) == 1000 and {m.to_id for m in served} == {"n3"}


def test_a_heartbeat_sent_before_a_read_does_not_confirm_it() -> None:
    # Reads join the round not sent yet; once a heartbeat has gone, a new read starts another:
    # an answer to a heartbeat sent before the read came proves nothing of the time after.
    net = cluster(3)
    leader = net.elect("n1")
    net.tick_all(1)
    net.run()
    leader.read_index(b"first")
    earlier = net.take(lambda m: isinstance(m, Heartbeat))
    leader.read_index(b"second")
    later = net.take(lambda m: isinstance(m, Heartbeat))
    assert earlier and later and later[0].read_seq > earlier[0].read_seq
    net.nodes["n2"].step(next(m for m in earlier if m.to_id == "n2"))
    net.deliver(lambda m: isinstance(m, HeartbeatResp))
    assert [r.ctx for r in net.reads["n1"]] == [b"first"]
    net.nodes["n2"].step(next(m for m in later if m.to_id == "n2"))
    net.deliver(lambda m: isinstance(m, HeartbeatResp))
    assert [r.ctx for r in net.reads["n1"]] == [b"first", b"second"]


def test_read_index_of_a_deposed_leader_is_never_served() -> None:
    net = cluster(3)
    leader = net.elect("n1")
    net.isolated = {"n1"}
    leader.read_index(b"r1")
    net.tick("n1", 30)
    assert net.reads["n1"] == []
    assert leader.role == Role.FOLLOWER


def test_read_index_is_deferred_until_the_leader_commits_an_entry_of_its_term() -> None:
    net = cluster(3)
    n1 = net.nodes["n1"]
    for _ in range(30):
        n1.tick()
        net.flush()
        net.deliver(lambda m: not isinstance(m, AppendEntries))
        if n1.role == Role.LEADER:
            break
    n1.read_index(b"r")
    net.run(lambda m: not isinstance(m, AppendEntries))
    assert net.reads["n1"] == []
    net.run()
    net.tick("n1")
    assert net.reads["n1"] == [ReadState(b"r", 2)]


def test_follower_read_index_is_forwarded_to_the_leader() -> None:
    net = cluster(3)
    leader = net.elect("n1")
    leader.propose(b"x")
    net.run()
    net.tick_all(1)
    net.nodes["n3"].read_index(b"f")
    net.run()
    net.tick_all(1)
    assert net.reads["n3"] == [ReadState(b"f", 3)]
    assert net.nodes["n3"].applied_index >= 3


def test_read_index_without_a_known_leader_raises() -> None:
    with pytest.raises(NoLeaderError):
        make_node("n1").read_index(b"r")


def test_single_voter_read_is_served_at_once() -> None:
    net = Net([make_node("n1", ("n1",))])
    leader = net.elect("n1")
    leader.read_index(b"r")
    net.flush()
    assert net.reads["n1"] == [ReadState(b"r", 2)]


# ------------------------------------------------------------------ leadership transfer


def test_transfer_leadership_sends_timeout_now_after_catch_up() -> None:
    net = cluster(3)
    leader = net.elect("n1")
    net.isolated = {"n3"}
    leader.propose(b"x")
    net.run()
    net.isolated = set()
    leader.transfer_leadership("n3")
    with pytest.raises(NotLeaderError) as exc:
        leader.propose(b"y")  # refused during the transfer, with the new leader as hint
    assert exc.value.leader_hint == "n3"
    msgs = net.take(lambda m: m.to_id == "n3")
    assert not any(isinstance(m, TimeoutNow) for m in msgs)  # n3 must catch up first
    for m in msgs:
        net.nodes["n3"].step(m)
    net.run()
    assert net.leaders() == ["n3"]
    assert leader.role == Role.FOLLOWER
    assert leader.leader_id == "n3"
    assert net.nodes["n3"].counters["timeout_now_received"] == 1


def test_transfer_target_ignores_stickiness_of_the_others() -> None:
    net = cluster(3)
    net.elect("n1")
    n2 = net.nodes["n2"]
    term = n2.term
    n2.step(RequestVote("n3", "n2", term + 1, 99, term, transfer=True))
    assert n2.term == term + 1
    assert n2.vote == "n3"


def test_transfer_to_non_voter_is_refused() -> None:
    net = cluster(3)
    leader = net.elect("n1")
    with pytest.raises(LeadershipTransferError):
        leader.transfer_leadership("n9")


def test_transfer_is_abandoned_after_an_election_timeout() -> None:
    net = cluster(3)
    leader = net.elect("n1")
    net.isolated = {"n3"}
    leader.transfer_leadership("n3")
    net.tick_all(leader.config.election_ticks + 1)
    assert leader.role == Role.LEADER
    assert leader.counters["transfers_aborted"] == 1
    leader.propose(b"ok")
