"""`swarmlet.timers`: `on_beat`, the next multiple of a period, the moment loops of that period
share; `StateFollower`, the paced wake-up of a loop that follows the replicated state."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from swarmlet.timers import FOLLOW_GAP_S, StateFollower, on_beat


def test_on_beat_is_the_next_multiple_of_the_period_after_now() -> None:
    assert [on_beat(t, 1.0) for t in (0.0, 0.25, 0.999, 1.0, 41.5)] == [1, 1, 1, 2, 42]
    assert on_beat(7.3, 2.0) == 8.0


async def test_a_state_follower_wakes_at_once_after_quiet_and_once_per_gap_under_a_stream(
    autojump_clock: trio.testing.MockClock,
) -> None:
    follower = StateFollower()
    woke_at: list[float] = []

    async def loop() -> None:
        while True:
            await follower.wait(trio.current_time() + 10.0)
            woke_at.append(trio.current_time())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(loop)
        await trio.sleep(1.0)
        assert woke_at == []  # nothing changed, no deadline yet
        follower.notify()
        await trio.testing.wait_all_tasks_blocked()
        assert woke_at == [1.0]  # at once after a quiet spell
        follower.notify()  # again at once: held until the gap has passed
        await trio.testing.wait_all_tasks_blocked()
        assert woke_at == [1.0]
        await trio.sleep(2 * FOLLOW_GAP_S)  # past the gap (a tie with it may go either way)
        assert woke_at == [1.0, pytest.approx(1.0 + FOLLOW_GAP_S)]
        woke_at.clear()
        await trio.sleep(10.0)
        assert woke_at == [pytest.approx(1.0 + FOLLOW_GAP_S + 10.0)]  # the deadline
        nursery.cancel_scope.cancel()
