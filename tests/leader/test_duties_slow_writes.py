"""A plan is not written twice: not when its write is slow, nor when another leader led while it
was made.

Raft does not take back an entry whose caller stopped waiting: once the leader has appended it,
it commits when a majority has it (or is lost with the lead). The orchestration loop used to
give a plan 10 s (`write_timeout_s`) and then plan again from a state that did not hold it yet;
when the first write committed after all, every task of it was placed twice (the duplicates
were then removed again: churn, and replicas over the count meanwhile). Here writes commit 25 s
after they are proposed, as they can on a leader whose followers are slow to store 2,000-task
entries.

The host is the control-loop simulation's; its Raft is replaced by a log that commits each
entry later whatever its proposer does (as the driver does: cancelling `propose` withdraws
nothing).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import pytest
import trio
import trio.testing

from bench.control_loop_sim import Simulation
from swarmlet.leader.duties import LeaderDuties
from swarmlet.leader.orchestrator.core import Plan
from swarmlet.state.commands import Command, CreateService
from swarmlet.state.machine import ApplyResult
from swarmlet.state.model import Service, ServiceSpec, TaskState
from tests.leader.test_control_loop_sim import TINY

COMMIT_DELAY_S = 25.0


async def run_duties(host: Simulation, seconds: float) -> None:
    """Create a service of 6 replicas, and run `host`'s duties for `seconds` (virtual)."""
    spec = ServiceSpec(name="web", image="busybox:sim", replicas=6)
    host.state.apply(CreateService(Service(id="web", spec=spec, created_at=0.0, updated_at=0.0)))
    with trio.fail_after(600):
        async with trio.open_nursery() as nursery:
            if isinstance(host, SlowRaft):
                host.nursery = nursery
            await nursery.start(host.duties.run)
            await trio.sleep(seconds)
            nursery.cancel_scope.cancel()


class SlowRaft(Simulation):
    """Each entry commits COMMIT_DELAY_S after it is proposed, in order, in a task of its own
    (`self.nursery`): a proposer that stops waiting does not withdraw it."""

    nursery: trio.Nursery

    async def propose(self, command: Command) -> ApplyResult:
        applied = trio.Event()
        results: list[ApplyResult] = []

        async def commit() -> None:
            await trio.sleep(COMMIT_DELAY_S)
            results.append(self.state.apply(command))
            self.raft.applied += 1
            applied.set()
            self.duties.notify()  # the agent notifies its duties of every applied batch

        self.nursery.start_soon(commit)
        await applied.wait()
        return results[0]


async def test_a_plan_that_commits_after_the_write_timeout_is_not_planned_again(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    host = SlowRaft(TINY)
    await run_duties(host, 120)  # several write timeouts, had the loop still kept them
    slots = Counter(
        t.slot for t in host.state.tasks_of("web") if t.desired_state is TaskState.RUNNING
    )
    assert slots == Counter(range(1, 7)), "each of the 6 slots has one task wanted running"
    assert len(host.state.tasks_of("web")) == 6, "no task was ever placed twice"
    # What the operator sees of it instead.
    assert "an orchestration plan took 25.0 s to commit" in caplog.messages


class ReElected(Simulation):
    """While its first pass runs (applies held), this node loses the lead to another, whose
    orchestrator places the service's tasks, and wins it back: when the hold ends it has
    applied the other's writes, in a later term."""

    term = 1
    elections = 1

    @property
    def lead_term(self) -> int:
        return self.term

    async def run_with_state_still(self, plan_pass: Callable[[], Plan]) -> Plan:
        plan = plan_pass()
        if self.elections:
            self.elections -= 1
            other = LeaderDuties(self, voter_grace_s=60.0)  # the other leader's, on this state
            for command in other.orchestration_pass(self.now).commands:
                assert self.state.apply(command).ok
            self.term += 2
        return plan


async def test_a_plan_made_while_another_leader_led_is_dropped_and_made_anew(
    autojump_clock: trio.testing.MockClock,
) -> None:
    host = ReElected(TINY)
    await run_duties(host, 30)
    assert host.elections == 0 and host.duties.passes >= 2
    assert len(host.state.tasks_of("web")) == 6, "the other leader's 6 tasks, none placed again"
