"""`swarmlet.timers`: `wake_from` sets an event at the first wake-up at or after a moment,
whatever woke the process, and never before the moment; `on_beat` is the next multiple of a
period."""

from __future__ import annotations

import trio
import trio.testing

from swarmlet.timers import on_beat, wake_from


async def _woken_at(moment: float, deadline: float, others: list[float]) -> float:
    """When a task that sleeps until `deadline`, asking to be woken from `moment`, wakes up,
    while other tasks wake the loop at each of `others`."""
    woke: list[float] = []

    async def rider() -> None:
        event = trio.Event()
        wake_from(moment, event)
        with trio.move_on_at(deadline):
            await event.wait()
        woke.append(trio.current_time())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(rider)
        for at in others:
            nursery.start_soon(trio.sleep_until, at)
    return woke[0]


async def test_a_rider_wakes_with_the_first_wake_up_from_its_moment(
    autojump_clock: trio.testing.MockClock,
) -> None:
    start = trio.current_time()
    assert await _woken_at(start + 5, start + 10, [start + 3, start + 6, start + 7]) == start + 6
    start = trio.current_time()
    # Wake-ups before the moment do not count; with none after it, the deadline holds.
    assert await _woken_at(start + 5, start + 10, [start + 1, start + 4]) == start + 10
    start = trio.current_time()
    assert await _woken_at(start + 5, start + 10, []) == start + 10


def test_on_beat_is_the_next_multiple_of_the_period_after_now() -> None:
    assert [on_beat(t, 1.0) for t in (0.0, 0.25, 0.999, 1.0, 41.5)] == [1, 1, 1, 2, 42]
    assert on_beat(7.3, 2.0) == 8.0
