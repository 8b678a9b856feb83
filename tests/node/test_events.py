"""node.events: the bounded event ring, `since`, and `follow` (past events, then new ones)."""

from __future__ import annotations

import itertools
import types

import pytest
import trio
import trio.testing

from swarmlet.node import events
from swarmlet.node.events import Event, EventLog


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> itertools.count[float]:
    """events.time.time() returns 100.0, 101.0, 102.0, ... (one second per recorded event)."""
    ticks = itertools.count(100.0)
    monkeypatch.setattr(events, "time", types.SimpleNamespace(time=lambda: next(ticks)))
    return ticks


def record(log: EventLog, n: int) -> list[Event]:
    return [log.record("node", "down", f"n{i}", f"node n{i} is down") for i in range(n)]


def test_events_are_numbered_in_order(clock: itertools.count[float]) -> None:
    log = EventLog()
    got = record(log, 3)
    assert [e.seq for e in got] == [1, 2, 3]
    assert [e.time for e in got] == [100.0, 101.0, 102.0]
    assert got[0].to_dict() == {
        "seq": 1,
        "time": 100.0,
        "type": "node",
        "action": "down",
        "subject": "n0",
        "message": "node n0 is down",
    }


def test_the_ring_keeps_only_the_newest_events(clock: itertools.count[float]) -> None:
    log = EventLog(size=3)
    record(log, 5)
    assert [e.seq for e in log.since(0.0)] == [3, 4, 5]


def test_since_returns_events_at_or_after_a_time(clock: itertools.count[float]) -> None:
    log = EventLog()
    record(log, 5)  # times 100..104
    assert [e.seq for e in log.since(102.0)] == [3, 4, 5]
    assert [e.seq for e in log.since(102.5)] == [4, 5]
    assert log.since(200.0) == []


async def test_follow_yields_past_events_then_new_ones(clock: itertools.count[float]) -> None:
    log = EventLog()
    record(log, 3)  # times 100, 101, 102
    seen: list[int] = []
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:

            async def follower() -> None:
                async for event in log.follow(since=101.0):
                    seen.append(event.seq)

            nursery.start_soon(follower)
            await trio.testing.wait_all_tasks_blocked()
            assert seen == [2, 3]
            record(log, 1)
            await trio.testing.wait_all_tasks_blocked()
            assert seen == [2, 3, 4]
            record(log, 2)  # two before the follower runs: both arrive, in order, once
            await trio.testing.wait_all_tasks_blocked()
            assert seen == [2, 3, 4, 5, 6]
            nursery.cancel_scope.cancel()


async def test_follow_from_the_future_yields_only_new_events(clock: itertools.count[float]) -> None:
    log = EventLog()
    record(log, 2)
    seen: list[int] = []
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:

            async def follower() -> None:
                async for event in log.follow(since=1e12):
                    seen.append(event.seq)

            nursery.start_soon(follower)
            await trio.testing.wait_all_tasks_blocked()
            assert seen == []
            record(log, 1)
            await trio.testing.wait_all_tasks_blocked()
            assert seen == [3]
            nursery.cancel_scope.cancel()


async def test_several_followers_each_see_every_event(clock: itertools.count[float]) -> None:
    log = EventLog()
    seen: dict[int, list[int]] = {0: [], 1: [], 2: []}
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            for i in seen:

                async def follower(i: int = i) -> None:
                    async for event in log.follow(since=0.0):
                        seen[i].append(event.seq)

                nursery.start_soon(follower)
            await trio.testing.wait_all_tasks_blocked()
            for _ in range(3):
                record(log, 1)
                await trio.testing.wait_all_tasks_blocked()
            assert seen == {0: [1, 2, 3], 1: [1, 2, 3], 2: [1, 2, 3]}
            nursery.cancel_scope.cancel()
