"""`depends_on` orders the first start of a stack's services (leader.depends_on)."""

from __future__ import annotations

import dataclasses

import pytest

from swarmlet.leader.depends_on import hold_back_dependents
from swarmlet.leader.orchestrator.context import Observed
from swarmlet.state.machine import ClusterState
from swarmlet.state.model import Service, ServiceMode, ServiceSpec, Task, TaskState
from swarmlet.state.observed import TaskObservation


def _state() -> ClusterState:
    state = ClusterState()
    state.services["db"] = Service(id="db", spec=ServiceSpec(name="s_db", image="x"))
    state.services["api"] = Service(
        id="api", spec=ServiceSpec(name="s_api", image="x", depends_on=("s_db",))
    )
    return state


def test_a_dependent_waits_while_its_dependency_has_no_running_replica() -> None:
    state = _state()
    state.tasks["t1"] = Task(id="t1", service_id="db", slot=1, spec_version=1)
    held = hold_back_dependents(state, Observed())
    assert set(held.services) == {"db"}
    assert set(state.services) == {"db", "api"}  # the real state is untouched


def test_a_dependent_starts_once_its_dependency_runs() -> None:
    state = _state()
    state.tasks["t1"] = Task(id="t1", service_id="db", slot=1, spec_version=1)
    observed = Observed(tasks={"t1": TaskObservation(task_id="t1", state=TaskState.RUNNING)})
    assert hold_back_dependents(state, observed) is state


def test_only_the_first_start_is_ordered() -> None:
    state = _state()
    state.tasks["t2"] = Task(id="t2", service_id="api", slot=1, spec_version=1)
    assert hold_back_dependents(state, Observed()) is state


def _with_condition(condition: str, dep: ServiceSpec) -> ClusterState:
    state = ClusterState()
    state.services["dep"] = Service(id="dep", spec=dep, version=1)
    state.services["app"] = Service(
        id="app",
        spec=ServiceSpec(
            name="app",
            image="x",
            depends_on=(dep.name,),
            depends_on_condition={dep.name: condition},
        ),
    )
    return state


RUNNING = TaskObservation("t1", TaskState.RUNNING)
HEALTHY = TaskObservation("t1", TaskState.RUNNING, healthy=True)
STARTING_HEALTH = TaskObservation("t1", TaskState.RUNNING, healthy=False)
DONE = TaskObservation("t1", TaskState.COMPLETE, exit_code=0)
DONE_TOO = dataclasses.replace(DONE, task_id="t2")
DB = ServiceSpec(name="db", image="x")
MIGRATE = ServiceSpec(name="migrate", image="x", mode=ServiceMode.REPLICATED_JOB, replicas=2)


@pytest.mark.parametrize(
    ("condition", "dep", "observations", "starts"),
    [
        ("service_started", DB, [RUNNING], True),
        ("service_healthy", DB, [RUNNING], False),  # no health check: never healthy
        ("service_healthy", DB, [STARTING_HEALTH], False),
        ("service_healthy", DB, [HEALTHY], True),
        ("service_completed_successfully", DB, [RUNNING], False),
        ("service_completed_successfully", DB, [DONE], True),
        # a job: every completion of its current run
        ("service_completed_successfully", MIGRATE, [DONE], False),
        (
            "service_completed_successfully",
            MIGRATE,
            [DONE, dataclasses.replace(DONE, task_id="t2")],
            True,
        ),
    ],
)
def test_compose_spec_conditions(
    condition: str, dep: ServiceSpec, observations: list[TaskObservation], starts: bool
) -> None:
    state = _with_condition(condition, dep)
    for i, obs in enumerate(observations):
        task_id = obs.task_id
        state.tasks[task_id] = Task(id=task_id, service_id="dep", slot=i + 1, spec_version=1)
    observed = Observed(tasks={o.task_id: o for o in observations})
    assert ("app" in hold_back_dependents(state, observed).services) is starts
