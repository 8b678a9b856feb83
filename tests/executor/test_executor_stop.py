"""Executor stops: the grace period is the one the service had when the stop was decided.

A stop first drains the task's endpoints (`ENDPOINT_DRAIN_S`) and may queue behind other stops;
by then a worker's view may have dropped the service (it holds a service only while a task of
it here is in the state). Found by `bench.dense_node`: 300 stops each waited Docker's 10 s
default instead of the service's grace period.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import trio
import trio.testing

from swarmlet.executor.driver import ENDPOINT_DRAIN_S
from swarmlet.state.model import TaskState
from swarmlet.timers import FOLLOW_GAP_S
from tests.executor.test_secretfiles import (
    FakeRuntime,
    Harness,
    _state,
    _task,
)


class GraceRecordingRuntime(FakeRuntime):
    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.graces: list[float] = []

    async def stop(self, container_id: str, grace_s: float) -> None:
        self.graces.append(grace_s)
        await super().stop(container_id, grace_s)


async def test_a_stop_keeps_the_grace_period_of_its_decision_after_the_service_left(
    secrets_root: Path,
    autojump_clock: trio.testing.MockClock,
) -> None:
    runtime = GraceRecordingRuntime(secrets_root)
    state = _state(_task("t1"))
    service = state.services["s1"]
    state.services["s1"] = dataclasses.replace(
        service, spec=dataclasses.replace(service.spec, stop_grace_period_s=42.0)
    )
    harness = Harness(secrets_root, runtime, state)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(harness.executor.run)
            await trio.testing.wait_all_tasks_blocked()
            assert harness.observations["t1"].state is TaskState.RUNNING
            state.tasks["t1"] = dataclasses.replace(
                state.tasks["t1"], desired_state=TaskState.SHUTDOWN
            )
            harness.executor.notify()
            await trio.sleep(FOLLOW_GAP_S)  # its next look (`timers.StateFollower`)
            await trio.testing.wait_all_tasks_blocked()  # decided: draining the endpoints
            assert runtime.graces == []
            del state.services["s1"]  # the view drops the service during the drain
            await trio.sleep(ENDPOINT_DRAIN_S * 2)
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()
    assert runtime.graces == [42.0]
