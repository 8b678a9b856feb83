"""A node that does not lead runs none of the leader's duties and sets no timer for them: its
loops wait for `LeaderDuties.notify` (the agent notifies at every change of Raft role), not on a
clock (issue #20: their polling was a third of an idle follower's or worker's timer wake-ups).
The host is the control-loop simulation's, whose Raft role the test sets."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from bench.control_loop_sim import Simulation
from tests.leader.test_control_loop_sim import TINY
from tests.task_wakeups import tasks_woken


class Host(Simulation):
    leading = False

    @property
    def is_leader(self) -> bool:
        return self.leading


async def test_duties_wait_for_the_lead_without_a_timer_and_start_when_it_comes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    host = Host(TINY)
    duties = host.duties
    with trio.fail_after(600) as limit:
        async with trio.open_nursery() as nursery:
            await nursery.start(duties.run)
            await trio.sleep(60)  # a minute of following
            await trio.testing.wait_all_tasks_blocked()
            # The only deadline left is this test's own.
            left = trio.lowlevel.current_statistics().seconds_to_next_deadline
            assert left == pytest.approx(limit.deadline - trio.current_time())
            # A change that is not a lead (a follower hears of every applied batch of writes):
            # still nothing to do, and no loop of the duties is even woken to see that.
            with tasks_woken() as woken:
                for _ in range(3):
                    duties.notify()
                    await trio.testing.wait_all_tasks_blocked()
            assert woken == []
            assert duties.passes == 0

            host.leading = True
            duties.notify()  # elected
            await trio.testing.wait_all_tasks_blocked()
            assert duties.passes >= 1  # at once, not at the next poll
            assert trio.current_time() == pytest.approx(limit.deadline - 600 + 60)
            # The leader's own polls run: the voter policy's, every half second.
            left = trio.lowlevel.current_statistics().seconds_to_next_deadline
            assert left <= 0.5
            nursery.cancel_scope.cancel()
