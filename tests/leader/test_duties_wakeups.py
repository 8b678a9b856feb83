"""A node that does not lead runs none of the leader's duties and sets no timer for them: its
loops wait for `LeaderDuties.notify` (the agent notifies at every change of Raft role), not on a
clock (issue #20: their polling was a third of an idle follower's or worker's timer wake-ups).
The host is the control-loop simulation's, whose Raft role the test sets."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from bench.control_loop_sim import Simulation
from swarmlet.leader.observation import LiveInputs
from swarmlet.leader.orchestrator.core import Plan
from tests.leader.test_control_loop_sim import TINY
from tests.pacing import check_paced
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


async def test_a_leader_under_a_stream_of_writes_passes_once_per_gap_and_at_once_after_quiet(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The agent notifies the duties at every applied batch of writes: every few milliseconds
    under load. The orchestration passes as `tests.pacing` says."""
    host = Host(TINY)
    host.leading = True
    duties = host.duties
    passed_at: list[float] = []  # trio's clock at each pass
    plan_pass = duties._pass

    def recorded(live: LiveInputs, now: float) -> Plan:
        passed_at.append(trio.current_time())
        return plan_pass(live, now)

    duties._pass = recorded  # type: ignore[method-assign]
    with trio.fail_after(600):
        async with trio.open_nursery() as nursery:
            await nursery.start(duties.run)
            await trio.sleep(7.5)  # settled: nothing left to do, a look every 5 s
            await check_paced(duties.notify, passed_at)
            nursery.cancel_scope.cancel()
