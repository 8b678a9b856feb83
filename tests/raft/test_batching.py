"""Group commit in the core: a batch of proposals is one append and one message per follower, and
a new commit index travels with the next appends instead of in appends of its own."""

from __future__ import annotations

import pytest

from swarmlet.errors import NotLeaderError
from swarmlet.raft.messages import AppendEntries, AppendResp, Message

from .net import cluster


def _appends(msgs: list[Message]) -> list[AppendEntries]:
    return [m for m in msgs if isinstance(m, AppendEntries)]


def test_a_batch_is_appended_at_once_and_sent_in_one_message_per_follower() -> None:
    net = cluster(3)
    leader = net.elect("n1")
    net.run()
    first = leader.last_index + 1
    indexes = leader.propose_batch([b"a", b"b", b"c"])
    assert indexes == range(first, first + 3)
    assert [leader.entry_at(i).data for i in indexes] == [b"a", b"b", b"c"]  # type: ignore[union-attr]
    rd = leader.ready()
    assert [e.index for e in rd.entries] == list(indexes)  # one write to the disk
    sent = _appends(list(rd.messages))
    assert sorted(m.to_id for m in sent) == ["n2", "n3"]
    assert all([e.data for e in m.entries] == [b"a", b"b", b"c"] for m in sent)
    leader.advance(rd)
    net.pending.extend(rd.messages)
    net.run()
    assert all(n.commit_index == indexes[-1] for n in net.nodes.values())


def test_a_follower_refuses_a_batch_and_appends_nothing() -> None:
    net = cluster(3)
    net.elect("n1")
    net.run()
    follower = net.nodes["n2"]
    last = follower.last_index
    with pytest.raises(NotLeaderError) as refused:
        follower.propose_batch([b"a", b"b"])
    assert refused.value.leader_hint == "n1"
    assert follower.last_index == last


def test_the_next_batch_carries_the_new_commit_index() -> None:
    net = cluster(3)
    leader = net.elect("n1")
    net.run()
    (index,) = leader.propose_batch([b"a"])
    net.flush()
    net.deliver(lambda m: isinstance(m, AppendEntries))  # the followers append and answer
    acks = net.take(lambda m: isinstance(m, AppendResp))
    for ack in acks:
        leader.step(ack)  # the commit index moves: no message goes out for it yet...
    leader.propose_batch([b"b"])  # ...the next batch's appends will carry it
    rd = leader.ready()
    sent = _appends(list(rd.messages))
    assert sorted(m.to_id for m in sent) == ["n2", "n3"]  # one append each, not two
    assert all(m.commit == index and [e.data for e in m.entries] == [b"b"] for m in sent)
    leader.advance(rd)


def test_a_commit_with_nothing_else_to_send_goes_out_on_its_own() -> None:
    net = cluster(3)
    leader = net.elect("n1")
    net.run()
    (index,) = leader.propose_batch([b"a"])
    net.flush()
    net.deliver(lambda m: isinstance(m, AppendEntries))
    for ack in net.take(lambda m: isinstance(m, AppendResp)):
        leader.step(ack)
    assert leader.has_ready()
    rd = leader.ready()
    sent = _appends(list(rd.messages))
    assert sorted(m.to_id for m in sent) == ["n2", "n3"]
    assert all(m.commit == index and not m.entries for m in sent)
    leader.advance(rd)
    assert not leader.has_ready()  # told once
    net.pending.extend(rd.messages)
    net.run()
    assert all(n.commit_index == index for n in net.nodes.values())
