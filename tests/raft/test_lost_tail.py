"""A node whose storage lost the tail of its log (a torn write cut off at open, a disk that did not
keep an fsync it acknowledged): the leader notices the shorter log and sends the entries again,
and the node's vote floor keeps it from helping elect a leader that lacks an entry it may have
acknowledged, until its log is that far again."""

from __future__ import annotations

import random

from swarmlet.raft.core import RaftConfig, RaftNode
from swarmlet.raft.messages import AppendEntries, AppendResp, RequestVote, Role, VoteResp
from swarmlet.raft.progress import Progress, ProgressState
from swarmlet.raft.types import ConfState, Entry, HardState, Snapshot, SnapshotMeta, VoteFloor

from .net import Net, cluster, role


def state(pr: Progress) -> ProgressState:
    """Read through a call so that type checkers do not narrow it."""
    return pr.state


def floor_of(node: RaftNode) -> VoteFloor | None:
    return node.vote_floor


def restart_with_lost_tail(net: Net, nid: str, keep: int, *, floor: bool = True) -> RaftNode:
    """Restart `nid` with its log cut after index `keep` (a commit index above it is lost too,
    as the driver persists the commit index lazily), with the vote floor its storage would
    report (the last entry it held), or without it."""
    old = net.nodes[nid]
    last = old.entry_at(old.last_index)
    assert last is not None and keep < last.index
    node = RaftNode(
        nid,
        old.config,
        random.Random(f"restart/{nid}"),
        hard_state=HardState(old.term, old.vote, min(old.commit_index, keep)),
        snapshot=old.snapshot,
        entries=[e for e in old.entries() if e.index <= keep],
        vote_floor=VoteFloor(last.index, last.term) if floor else VoteFloor(),
    )
    net.nodes[nid] = node
    return node


def replicated(n: int = 3, writes: int = 5) -> tuple[Net, RaftNode]:
    net = cluster(n)
    leader = net.elect("n1")
    for i in range(writes):
        leader.propose(b"w%d" % i)
    net.run()
    net.tick_all(2)
    assert all(node.commit_index == leader.last_index for node in net.nodes.values())
    return net, leader


# -- the leader notices -------------------------------------------------------------------------


def test_leader_repairs_a_follower_that_lost_acknowledged_entries_without_new_writes() -> None:
    net, leader = replicated()
    last = leader.last_index
    assert leader.progress("n2").match == last  # type: ignore[union-attr]
    follower = restart_with_lost_tail(net, "n2", last - 3)
    net.tick("n1", leader.config.heartbeat_ticks)  # one heartbeat: its commit is above n2's log
    assert follower.counters["short_log_reported"] == 1
    assert leader.counters["short_logs_repaired"] == 1
    net.tick_all(3)
    assert follower.last_index == last
    assert follower.entries() == leader.entries()
    assert follower.vote_floor is None  # caught up: votes as before
    assert leader.progress("n2").match == last  # type: ignore[union-attr]


def test_leader_repairs_a_follower_that_lost_acknowledged_entries_on_the_next_append() -> None:
    net, leader = replicated()
    follower = restart_with_lost_tail(net, "n2", leader.last_index - 2)
    leader.propose(b"next")
    net.run()
    assert follower.entries() == leader.entries()
    assert leader.counters["short_logs_repaired"] >= 1


def test_a_lost_probe_does_not_leave_the_follower_unrepaired() -> None:
    # Five voters, n3..n5 cut off: n2's acknowledgement of 8..9 is not enough to commit them, so
    # the heartbeat's commit (7) is below what n2 acknowledged (9). n2 loses 6..9; the leader's
    # first probe is lost. Heartbeat answers keep probing (as etcd does in probe state), even
    # though the leader's `match` for n2 says it has nothing to send.
    net, leader = replicated(5)
    net.isolated = {"n3", "n4", "n5"}
    leader.propose(b"a")
    leader.propose(b"b")
    net.run()
    last = leader.last_index
    assert leader.progress("n2").match == last > leader.commit_index  # type: ignore[union-attr]
    follower = restart_with_lost_tail(net, "n2", leader.commit_index - 2)
    net.tick("n1", leader.config.heartbeat_ticks, pred=lambda m: not isinstance(m, AppendEntries))
    assert follower.counters["short_log_reported"] == 1
    net.tick("n1", 3 * leader.config.heartbeat_ticks)
    assert follower.last_index == last
    assert follower.entries() == leader.entries()


def test_an_old_reject_showing_a_shorter_log_costs_a_probe_and_leaves_match() -> None:
    # With pipelined appends, a reject sent before the follower got the entries may arrive after
    # its ack. The leader probes at `match` first, and lowers it only if that probe is rejected.
    net, leader = replicated()
    pr = leader.progress("n2")
    assert pr is not None and state(pr) == ProgressState.REPLICATE
    match = pr.match
    leader.step(AppendResp("n2", "n1", leader.term, match - 1, True, hint_index=match - 2))
    assert state(pr) == ProgressState.PROBE
    assert pr.match == match
    (probe,) = net.take(lambda m: m.to_id == "n2")
    assert isinstance(probe, AppendEntries) and probe.prev_index == match
    net.nodes["n2"].step(probe)
    net.run()
    assert state(pr) == ProgressState.REPLICATE
    assert pr.match == match
    assert "short_logs_repaired" not in leader.counters


def test_a_reject_of_the_probe_lowers_match_to_the_followers_log() -> None:
    net, leader = replicated()
    pr = leader.progress("n2")
    assert pr is not None
    match = pr.match
    leader.step(AppendResp("n2", "n1", leader.term, match, True, hint_index=match - 1))
    assert state(pr) == ProgressState.PROBE and pr.next - 1 == match
    net.drop()
    leader.step(AppendResp("n2", "n1", leader.term, match, True, hint_index=match - 1))
    assert pr.match == match - 2
    (probe,) = net.take(lambda m: m.to_id == "n2")
    assert isinstance(probe, AppendEntries) and probe.prev_index == match - 2


def test_the_stale_term_reject_never_lowers_match() -> None:
    _, leader = replicated()
    pr = leader.progress("n2")
    assert pr is not None
    match = pr.match
    leader.step(AppendResp("n2", "n1", leader.term, 0, reject=True))  # hint_index 0
    assert pr.match == match and state(pr) == ProgressState.REPLICATE


# -- the vote floor -------------------------------------------------------------------------------


FLOOR = VoteFloor(6, 2)


def floored(voters: tuple[str, ...] = ("n1", "n2", "n3"), floor: VoteFloor = FLOOR) -> RaftNode:
    boot = Snapshot(SnapshotMeta(1, 1, ConfState(voters)))
    return RaftNode(
        "n2",
        RaftConfig(pre_vote=False, check_quorum=False),
        random.Random(0),
        hard_state=HardState(term=2, commit=1),
        snapshot=boot,
        entries=[Entry(2, 2), Entry(2, 3)],
        vote_floor=floor,
    )


def vote_of(node: RaftNode, last_index: int, last_term: int) -> bool:
    while node.has_ready():
        node.advance(node.ready())
    node.step(RequestVote("n3", "n2", node.term + 1, last_index, last_term))
    rd = node.ready()
    node.advance(rd)
    (resp,) = rd.messages
    assert isinstance(resp, VoteResp)
    return resp.granted


def test_below_its_floor_a_node_votes_only_for_a_log_that_reaches_it() -> None:
    assert not vote_of(floored(), 5, 2)  # as up to date as its log, not as the lost one
    assert vote_of(floored(), 6, 2)
    assert vote_of(floored(), 4, 3)  # a newer term: its leader held every committed entry
    assert not vote_of(floored(), 9, 1)  # older than its own log, floor or not
    node = floored()
    vote_of(node, 5, 2)
    assert node.counters["votes_withheld_below_floor"] == 1


def test_below_its_floor_a_node_does_not_campaign() -> None:
    node = floored()
    for _ in range(100):
        node.tick()
    assert role(node) == Role.FOLLOWER
    assert node.counters.get("elections_started", 0) == 0


def test_the_floor_does_not_hold_in_a_group_of_one_or_two_voters() -> None:
    # Every commit there needs every voter: the other one holds every committed entry and
    # refuses a candidate without it by the ordinary rule; a lone voter has no one to wait for.
    two = floored(("n2", "n3"))
    assert vote_of(two, 3, 2)
    for voters in (("n2",), ("n2", "n3")):
        node = floored(voters)
        for _ in range(20):
            node.tick()
        assert role(node) != Role.FOLLOWER


def test_the_floor_lifts_once_the_log_reaches_it() -> None:
    node = floored()
    node.step(AppendEntries("n1", "n2", 2, 3, 2, (Entry(2, 4), Entry(2, 5)), 1))
    assert floor_of(node) == VoteFloor(6, 2)
    node.step(AppendEntries("n1", "n2", 2, 5, 2, (Entry(2, 6),), 1))
    assert node.vote_floor is None
    assert node.counters["vote_floor_reached"] == 1
    assert vote_of(node, 6, 2)


def test_a_floor_the_stored_log_already_reaches_is_dropped_at_start() -> None:
    assert floored(floor=VoteFloor(3, 2)).vote_floor is None
    assert floored(floor=VoteFloor(9, 1)).vote_floor is None  # its log has a newer term


def lose_a_committed_entry(*, floor: bool) -> Net:
    """n1 leads n1, n2, n3; n3 is cut off while n1 commits `w` with n2's acknowledgement; then n2
    restarts without `w` (its disk lost it), n1 dies, and n3 (which never had `w`) campaigns."""
    cfg = RaftConfig(pre_vote=False)
    net = cluster(3, config=cfg)
    leader = net.elect("n1")
    net.isolated = {"n3"}
    index = leader.propose(b"w")
    net.run()
    assert leader.commit_index == index
    restart_with_lost_tail(net, "n2", index - 1, floor=floor)
    net.isolated = {"n1"}
    net.tick_all(60)
    return net


def test_a_node_that_lost_a_committed_entry_does_not_help_elect_a_leader_without_it() -> None:
    net = lose_a_committed_entry(floor=True)
    assert net.leaders() == ["n1"]  # n1, cut off, still believes; n2 and n3 elect no one
    assert net.nodes["n2"].counters["votes_withheld_below_floor"] > 0
    net.isolated = set()
    net.tick_all(60)
    (leader,) = net.leaders()
    assert net.nodes[leader].entries()[-2].data == b"w"  # a later leader still holds w
    assert net.nodes["n2"].vote_floor is None


def test_without_its_floor_that_node_elects_a_leader_that_lost_a_committed_entry() -> None:
    # The same run without the floor: what the rule prevents (Raft §5.4.3 needs every voter to
    # still hold the entries it acknowledged).
    net = lose_a_committed_entry(floor=False)
    new = [nid for nid in net.leaders() if nid != "n1"]
    assert new == ["n3"]
    assert b"w" not in [e.data for e in net.nodes["n3"].entries()]
