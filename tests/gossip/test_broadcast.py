"""The piggyback queue: supersession, ordering, retransmit limit and the size budget."""

from __future__ import annotations

from swarmlet.gossip.broadcast import BroadcastQueue
from swarmlet.gossip.messages import Alive, Dead, Suspect, estimate_size


def alive(node: str, inc: int = 1, meta: bytes = b"") -> Alive:
    return Alive(inc, node, "10.0.0.1", 7946, meta)


def test_a_newer_update_about_a_member_supersedes_the_queued_one() -> None:
    q = BroadcastQueue()
    q.queue(alive("b", 1))
    q.queue(Suspect(1, "b", "c"))
    q.queue(Dead(1, "b", "c"))
    assert len(q) == 1
    assert q.take(10_000, limit=4) == [Dead(1, "b", "c")]


def test_updates_are_handed_out_least_sent_first_then_newest_first() -> None:
    q = BroadcastQueue()
    q.queue(alive("a"))
    q.queue(alive("b"))
    assert [m.node for m in q.take(10_000, limit=5)] == ["b", "a"]
    q.queue(alive("c"))  # never sent: goes before a and b
    assert [m.node for m in q.take(10_000, limit=5)] == ["c", "b", "a"]
    q.queue(alive("a", 2))  # superseded: its transmit count starts again
    assert [m.node for m in q.take(10_000, limit=5)] == ["a", "c", "b"]


def test_an_update_is_dropped_after_the_retransmit_limit() -> None:
    q = BroadcastQueue()
    item = q.queue(alive("b"))
    for _ in range(3):
        assert q.take(10_000, limit=3) == [alive("b")]
        assert q.is_queued(item) or _ == 2
    assert q.take(10_000, limit=3) == []
    assert not q.is_queued(item)
    assert len(q) == 0


def test_updates_that_do_not_fit_are_skipped_and_stay_queued() -> None:
    q = BroadcastQueue()
    big = alive("big", meta=b"x" * 1000)
    small = alive("small")
    q.queue(small)
    q.queue(big)
    budget = estimate_size(small) + 10
    assert q.take(budget, limit=4) == [small]
    assert q.queued_about("big") == big
    assert q.take(estimate_size(big), limit=4) == [big]


def test_taken_updates_fit_the_budget() -> None:
    q = BroadcastQueue()
    for i in range(50):
        q.queue(alive(f"n{i}", meta=bytes(37 * i)))
    for budget in (0, 100, 500, 1400, 5000):
        taken = q.take(budget, limit=100)
        assert sum(estimate_size(m) for m in taken) <= budget
