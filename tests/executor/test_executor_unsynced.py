"""An executor whose state cannot be made current (a worker on the view it kept on disk, with
no manager up; a manager without a quorum) removes no container it cannot place, and starts
the tasks its state assigns to this node that have no container yet (README, "Workers hold
only their part of the state")."""

from __future__ import annotations

from pathlib import Path

import trio
import trio.testing

from swarmlet.timers import FOLLOW_GAP_S
from tests.executor.test_secretfiles import FakeRuntime, Harness, _container, _state, _task


async def test_an_executor_on_a_state_not_current_keeps_unknown_containers_and_starts_its_tasks(
    secrets_root: Path, autojump_clock: trio.testing.MockClock
) -> None:
    runtime = FakeRuntime(secrets_root)
    # "newer": a container of a task assigned after the state was saved.
    runtime.containers = [_container("c-running", "running"), _container("c-newer", "newer")]
    state = _state(_task("running"), _task("assigned"))
    harness = Harness(secrets_root, runtime, state, current=False)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(harness.executor.run)
            await trio.sleep(20)  # several passes, each after a failed attempt to be current
            await trio.testing.wait_all_tasks_blocked()
            assert not harness.executor.synced
            nursery.cancel_scope.cancel()
    assert runtime.removed == []  # "newer" is kept: its task may be newer than the state
    assert {c.labels["swarmlet.task"] for c in runtime.containers} == {
        "running",
        "newer",
        "assigned",
    }
    assert harness.observations["assigned"].container_id == "c-assigned"

    # Made current, the executor removes what it cannot place.
    runtime = FakeRuntime(secrets_root)
    runtime.containers = [_container("c-newer", "newer")]
    harness = Harness(secrets_root, runtime, _state(), current=True)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(harness.executor.run)
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()
    assert runtime.removed == ["c-newer"]


async def test_an_executor_not_current_acts_on_changes_at_once_and_cleans_up_once_current(
    secrets_root: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """Its attempts to be current (each waits seconds for a manager) are not on the path of
    its reconcile: a task assigned meanwhile starts at once, not after the next attempt."""
    runtime = FakeRuntime(secrets_root)
    runtime.containers = [_container("c-newer", "newer")]
    state = _state()
    harness = Harness(secrets_root, runtime, state, current=False)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(harness.executor.run)
            await trio.sleep(1.0)
            state.tasks["assigned"] = _task("assigned")
            harness.executor.notify()
            await trio.sleep(FOLLOW_GAP_S)  # its next look (`timers.StateFollower`)
            await trio.testing.wait_all_tasks_blocked()
            assert "assigned" in harness.observations  # started at once
            assert runtime.removed == []  # not current: "newer" may be a task it has not heard of

            harness.current = True  # a manager answers again
            await trio.sleep(10.0)  # the next attempt succeeds
            await trio.testing.wait_all_tasks_blocked()
            assert harness.executor.synced
            nursery.cancel_scope.cancel()
    assert runtime.removed == ["c-newer"]
