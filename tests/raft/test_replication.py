"""Log replication: Raft §5.3 (log matching, conflict back-off), §5.4.2 (Figure 8), flow
control, Ready obligations, restart, and illegal input."""

from __future__ import annotations

import dataclasses

import pytest

from swarmlet.errors import StorageCorruptError
from swarmlet.raft.core import MESSAGES, RaftConfig, RaftNode
from swarmlet.raft.messages import AppendEntries, AppendResp, Heartbeat, InstallSnapshot, Role
from swarmlet.raft.progress import ProgressState
from swarmlet.raft.types import ConfState, Entry, EntryKind, HardState, Snapshot, SnapshotMeta

from .net import Net, boot_snapshot, cluster, make_node


def test_committed_entries_are_applied_in_order_on_every_node() -> None:
    net = cluster(3)
    leader = net.elect("n1")
    for i in range(5):
        leader.propose(b"v%d" % i)
    net.run()
    net.tick_all(2)  # heartbeats carry the commit index to followers
    for nid in net.nodes:
        assert [e.data for e in net.applied[nid] if e.data] == [b"v%d" % i for i in range(5)]


def test_log_matching_follower_truncates_a_conflicting_suffix() -> None:
    node = make_node("n2", term=2, entries=[Entry(2, 2), Entry(2, 3, data=b"old")])
    node.step(AppendEntries("n1", "n2", 3, 2, 2, (Entry(3, 3, data=b"new"),), 0))
    rd = node.ready()
    assert rd.entries == (Entry(3, 3, data=b"new"),)  # the storage truncates from index 3
    assert node.entries() == (Entry(2, 2), Entry(3, 3, data=b"new"))
    assert rd.messages == (AppendResp("n2", "n1", 3, 3),)


def test_follower_keeps_entries_a_stale_append_already_covers() -> None:
    node = make_node("n2", term=2, entries=[Entry(2, 2), Entry(2, 3)])
    node.step(AppendEntries("n1", "n2", 2, 1, 1, (Entry(2, 2),), 0))
    assert node.last_index == 3  # a duplicate, delayed append does not cut the log short


def test_reject_carries_conflicting_term_and_its_first_index() -> None:
    node = make_node("n2", term=3, entries=[Entry(2, 2), Entry(2, 3), Entry(2, 4)])
    node.step(AppendEntries("n1", "n2", 4, 4, 3, (), 0))
    (resp,) = node.ready().messages
    assert resp == AppendResp("n2", "n1", 4, 4, reject=True, hint_index=2, hint_term=2)


def test_reject_from_short_log_hints_its_end() -> None:
    node = make_node("n2", term=3)
    node.step(AppendEntries("n1", "n2", 4, 9, 3, (), 0))
    (resp,) = node.ready().messages
    assert resp == AppendResp("n2", "n1", 4, 9, reject=True, hint_index=2, hint_term=0)


def test_leader_backs_off_a_whole_term_per_round_trip() -> None:
    # The leader holds a term-2 run at 2..6, the follower a divergent term-3 run at 2..9 would be
    # impossible (terms ordered), so: leader [t2 x5, t5...], follower [t2 x2, t3 x6].
    leader_log = [Entry(2, i) for i in range(2, 7)] + [Entry(5, i) for i in range(7, 10)]
    follower_log = [Entry(2, 2), Entry(2, 3)] + [Entry(3, i) for i in range(4, 12)]
    cfg = RaftConfig(pre_vote=False)
    n1 = make_node("n1", ("n1", "n2"), config=cfg, term=5, entries=leader_log)
    n2 = make_node("n2", ("n1", "n2"), config=cfg, term=5, entries=follower_log)
    net = Net([n1, n2])
    n1.tick()  # no-op: force an election without waiting
    net.elect("n1")
    net.run()
    rejects = [rd for rd in net.readies["n2"] for m in rd.messages if getattr(m, "reject", False)]
    assert len(rejects) <= 3  # not one per entry
    assert n2.entries() == n1.entries()
    assert n2.counters["appends_rejected"] == len(rejects)


def test_figure8_leader_does_not_commit_an_old_term_entry_by_counting() -> None:
    # Raft §5.4.2 / Figure 8: n1 holds a term-2 entry at index 2 that n2 and n3 lack; it wins
    # term 4. Once n2 holds index 2 (a majority) it is still not committed: only when the
    # term-4 no-op at index 3 is on a majority are both committed.
    cfg = RaftConfig(max_entries_per_append=1)
    n1 = make_node("n1", config=cfg, term=3, entries=[Entry(2, 2, data=b"old")])
    net = Net([n1, make_node("n2", config=cfg, term=3), make_node("n3", config=cfg, term=3)])
    for _ in range(30):
        n1.tick()
        net.flush()
        net.deliver(lambda m: not isinstance(m, AppendEntries))  # votes only
        if n1.role == Role.LEADER:
            break
    assert n1.role == Role.LEADER
    net.drop(lambda m: m.to_id == "n3")
    # Replicate to n2 one entry per message (max_entries_per_append=1) until it holds index 2.
    for _ in range(10):
        net.deliver(lambda m: m.to_id == "n2" and not isinstance(m, Heartbeat))
        net.deliver(lambda m: m.to_id == "n1" and not (isinstance(m, AppendResp) and m.index >= 3))
        if n1.progress("n2") is not None and n1.progress("n2").match == 2:  # type: ignore[union-attr]
            break
    assert n1.progress("n2").match == 2  # type: ignore[union-attr]
    assert n1.commit_index == 1  # a majority holds index 2, but its term is 2, not 4
    net.run(lambda m: m.to_id != "n3")
    assert n1.commit_index == 3
    assert [e.data for e in net.applied["n1"]] == [b"old", b""]


def test_leader_pipelines_at_most_max_inflight_appends() -> None:
    cfg = RaftConfig(max_entries_per_append=1, max_inflight_appends=2)
    net = cluster(3, config=cfg)
    leader = net.elect("n1")
    net.tick_all(2)
    assert leader.progress("n2").state == ProgressState.REPLICATE  # type: ignore[union-attr]
    for i in range(6):
        leader.propose(b"%d" % i)
    appends = net.take(lambda m: isinstance(m, AppendEntries) and m.to_id == "n2")
    assert len(appends) == 2
    assert all(isinstance(m, AppendEntries) and len(m.entries) == 1 for m in appends)


def test_leader_batches_entries_up_to_max_per_append() -> None:
    cfg = RaftConfig(max_entries_per_append=3)
    net = cluster(3, config=cfg)
    leader = net.elect("n1")
    net.isolated = {"n2"}
    for i in range(7):
        leader.propose(b"%d" % i)
    net.run()
    net.isolated = set()
    net.tick("n1")  # heartbeat -> response -> probe -> catch up in batches
    sizes = [
        len(m.entries)
        for rd in net.readies["n1"]
        for m in rd.messages
        if isinstance(m, AppendEntries) and m.to_id == "n2" and m.entries
    ]
    assert max(sizes) == 3
    assert net.nodes["n2"].last_index == leader.last_index


def test_leader_batches_entries_up_to_max_bytes_per_append_and_a_large_one_alone() -> None:
    """64 entries of a few MiB each made a frame over the transport's limit: every follower
    dropped it, and the leader sent the same again, so nothing committed any more."""
    cfg = RaftConfig(max_bytes_per_append=10)
    net = cluster(3, config=cfg)
    leader = net.elect("n1")
    net.isolated = {"n2"}
    datas = [b"aaaa", b"bbbb", b"cccc", b"x" * 25, b"dd", b"ee"]
    for data in datas:
        leader.propose(data)
    net.run()
    net.isolated = set()
    net.tick("n1")  # heartbeat -> response -> probe -> catch up in batches
    batches = [
        [e.data for e in m.entries if e.data]
        for rd in net.readies["n1"]
        for m in rd.messages
        if isinstance(m, AppendEntries) and m.to_id == "n2" and any(e.data for e in m.entries)
    ]
    assert all(sum(map(len, b)) <= 10 or len(b) == 1 for b in batches), batches
    assert [b"x" * 25] in batches
    assert net.nodes["n2"].last_index == leader.last_index
    net.tick_all(2)
    applied = [e.data for e in net.applied["n2"] if e.data]
    assert applied == datas


def test_ready_entries_come_before_their_messages_are_needed() -> None:
    net = cluster(3)
    leader = net.elect("n1")
    net.flush()
    leader.propose(b"x")
    rd = leader.ready()
    assert rd.entries[-1].data == b"x"
    assert any(isinstance(m, AppendEntries) and m.entries for m in rd.messages)
    with pytest.raises(RuntimeError):
        leader.ready()  # one Ready at a time
    leader.advance(rd)
    with pytest.raises(RuntimeError):
        leader.advance(rd)


def test_restart_from_storage_keeps_term_vote_and_log() -> None:
    entries = [Entry(2, 2), Entry(2, 3, data=b"x")]
    node = RaftNode(
        "n1",
        RaftConfig(),
        __import__("random").Random(0),
        hard_state=HardState(term=4, vote="n2", commit=3),
        snapshot=boot_snapshot(["n1", "n2", "n3"]),
        entries=entries,
    )
    assert (node.term, node.vote, node.commit_index, node.last_index) == (4, "n2", 3, 3)
    rd = node.ready()
    assert [e.data for e in rd.committed_entries] == [b"", b"x"]
    assert rd.hard_state is None  # nothing new to persist


def test_storage_whose_commit_is_beyond_its_log_is_corrupt() -> None:
    with pytest.raises(StorageCorruptError):
        make_node("n1", entries=[Entry(2, 2)], term=2).__class__(
            "n1",
            RaftConfig(),
            __import__("random").Random(0),
            hard_state=HardState(term=2, commit=5),
            snapshot=boot_snapshot(["n1"]),
            entries=[Entry(2, 2)],
        )


def test_bootstrap_snapshot_at_index_zero_is_refused() -> None:
    with pytest.raises(ValueError, match="index >= 1"):
        make_node("n1", snapshot=Snapshot(SnapshotMeta(0, 0, ConfState(("n1",)))))


def _observable(node: RaftNode) -> tuple[object, ...]:
    return (
        node.term,
        node.vote,
        node.role,
        node.leader_id,
        node.commit_index,
        node.entries(),
        node.conf,
        node.has_ready(),
    )


@pytest.mark.parametrize(
    "msg",
    [
        AppendEntries("n1", "n9", 9, 1, 1, (Entry(9, 2),), 2),  # addressed to someone else
        AppendEntries("n2", "n2", 9, 1, 1, (Entry(9, 2),), 2),  # from ourselves
        AppendEntries("n1", "n2", 9, 1, 1, (Entry(9, 3),), 2),  # entries not contiguous
        AppendEntries("n1", "n2", 9, 1, 1, (Entry(10, 2),), 2),  # entry term beyond msg term
        AppendEntries("n1", "n2", 9, -1, 1, (), 2),  # negative index
        AppendEntries("n1", "n2", 9, 1, 1, (Entry(9, 2, EntryKind.CONF_CHANGE, b""),), 2),
        AppendResp("n1", "n2", 9, -5),
        InstallSnapshot("n1", "n2", 9, Snapshot(SnapshotMeta(5, 3, ConfState()), b"")),
        Heartbeat("n1", "n2", -1, 0),
    ],
)
def test_illegal_message_leaves_state_unchanged(msg: object) -> None:
    node = make_node("n2", term=3, entries=[Entry(3, 2)])
    before = _observable(node)
    node.step(msg)  # type: ignore[arg-type]
    assert _observable(node) == before
    assert node.counters["dropped_invalid"] == 1


def test_messages_follow_the_wire_contract() -> None:
    assert len(set(MESSAGES)) == len(MESSAGES)
    for cls in MESSAGES:
        assert dataclasses.is_dataclass(cls)
        assert cls.__dataclass_params__.frozen  # type: ignore[attr-defined]
        assert hasattr(cls, "__slots__")
        names = [f.name for f in dataclasses.fields(cls)]
        assert names[:3] == ["from_id", "to_id", "term"]


def test_leader_append_only_a_leader_never_overwrites_its_log() -> None:
    net = cluster(3)
    leader = net.elect("n1")
    leader.propose(b"x")
    before = leader.entries()
    dropped = leader.counters.get("dropped_unexpected", 0)
    # An append claiming to come from another leader of the same term, and a stale reject.
    leader.step(
        AppendEntries("n2", "n1", leader.term, 1, 1, (Entry(leader.term, 2, data=b"y"),), 2)
    )
    leader.step(AppendResp("n2", "n1", leader.term, 1, reject=True, hint_index=1, hint_term=1))
    assert leader.entries()[: len(before)] == before
    assert leader.counters["dropped_unexpected"] == dropped + 1


def test_leader_completeness_a_node_lacking_a_committed_entry_cannot_win() -> None:
    cfg = RaftConfig(pre_vote=False)
    net = cluster(3, config=cfg)
    leader = net.elect("n1")
    net.isolated = {"n3"}
    leader.propose(b"committed")
    net.run()
    assert leader.commit_index == 3
    net.isolated = {"n1"}  # the leader dies; n3 (behind) and n2 (up to date) remain
    net.tick("n3", 25)
    assert net.nodes["n3"].role != Role.LEADER
    net.tick_all(40)
    assert [nid for nid in net.leaders() if nid != "n1"] == ["n2"]
    assert net.nodes["n2"].entry_at(3) == Entry(leader.term, 3, data=b"committed")


def test_state_machine_safety_every_node_applies_the_same_sequence() -> None:
    net = cluster(3)
    leader = net.elect("n1")
    for round_, target in enumerate(("n2", "n3", "n1")):
        for i in range(3):
            leader.propose(b"%d-%d" % (round_, i))
        net.run()
        leader.transfer_leadership(target)
        net.run()
        net.tick_all(2)
        (new,) = net.leaders()
        leader = net.nodes[new]
    net.tick_all(3)
    seqs = {nid: [(e.index, e.term, e.data) for e in a] for nid, a in net.applied.items()}
    assert seqs["n1"] == seqs["n2"] == seqs["n3"]
    assert len([s for s in seqs["n1"] if s[2]]) == 9


def _one_write(net: Net, leader: RaftNode) -> list[object]:
    """Propose one entry on a settled cluster and deliver its whole round; the messages sent."""
    sent: list[object] = []
    leader.propose(b"w")
    while True:
        msgs = net.take()
        if not msgs:
            return sent
        sent.extend(msgs)
        for m in msgs:
            net.nodes[m.to_id].step(m)


def test_a_commit_notice_to_a_replicating_follower_is_not_answered() -> None:
    net = cluster(3)
    leader = net.elect("n1")
    net.tick_all(3)
    sent = _one_write(net, leader)
    appends = [m for m in sent if isinstance(m, AppendEntries)]
    answers = [m for m in sent if isinstance(m, AppendResp)]
    # The entry to each follower, then the commit index to each: only the first is answered.
    assert [(m.to_id, bool(m.entries), m.commit_only) for m in appends] == [
        ("n2", True, False),
        ("n3", True, False),
        ("n2", False, True),
        ("n3", False, True),
    ]
    assert sorted(m.from_id for m in answers) == ["n2", "n3"]
    # And the followers applied the write all the same.
    for nid in net.nodes:
        assert [e.data for e in net.applied[nid]][-1:] == [b"w"]


def test_a_commit_notice_the_follower_cannot_take_is_answered_with_a_refusal() -> None:
    net = cluster(3)
    leader = net.elect("n1")
    net.tick_all(3)
    leader.propose(b"w")
    net.deliver(lambda m: isinstance(m, AppendEntries))
    net.drop(lambda m: m.from_id == "n3")  # n3's acknowledgement is lost
    net.deliver(lambda m: m.to_id == "n1")  # n2's commits the entry
    # n3's log lost the entry since (a lost tail): the notice after it does not match.
    net.nodes["n3"] = make_node("n3", term=leader.term, entries=())
    notice = net.take(lambda m: isinstance(m, AppendEntries) and m.to_id == "n3")
    assert [m.commit_only for m in notice] == [True]
    net.nodes["n3"].step(notice[0])
    (answer,) = net.take(lambda m: m.from_id == "n3")
    assert isinstance(answer, AppendResp) and answer.reject


def test_only_a_replicating_follower_is_sent_a_notice_it_need_not_answer() -> None:
    net = cluster(3)
    leader = net.elect("n1")
    net.tick_all(3)
    _one_write(net, leader)
    leader._progress["n3"].become_probe()  # as after a lost connection: the leader must hear
    assert leader._send_append("n3", allow_empty=True, commit_only=True)
    assert leader._send_append("n2", allow_empty=True, commit_only=True)
    notices = {m.to_id: m for m in net.take() if isinstance(m, AppendEntries)}
    assert not notices["n3"].entries and not notices["n3"].commit_only
    assert not notices["n2"].entries and notices["n2"].commit_only
