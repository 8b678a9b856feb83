"""`depends_on` orders the first start of a stack's services (leader.depends_on)."""

from __future__ import annotations

from swarmlet.leader.depends_on import hold_back_dependents
from swarmlet.leader.orchestrator.context import Observed
from swarmlet.state.machine import ClusterState
from swarmlet.state.model import Service, ServiceSpec, Task, TaskState
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
