"""`depends_on` ordering: which services the orchestrator must not start yet.

Beyond Swarm, which ignores `depends_on` in stacks (and refuses its long syntax,
moby/moby#46827): a service that has never had a task is held back until every service it
depends on meets its condition, compose-spec's:
- `service_started` (the default): a replica of it runs;
- `service_healthy`: a replica of it runs and its health check passed (a service without a
  health check never is: compose refuses that pairing, here the dependent waits and
  `service ps` shows it has no task yet);
- `service_completed_successfully`: a job's current run has all its completions; another
  service's task exited 0.
Only the first start is ordered; afterwards each service lives on its own, as compose's
`depends_on` does. A dependency that no longer exists holds nothing back.

Pure: a function of the desired and the observed state. The real state is never changed; a
trimmed copy is returned when something is held back.
"""

from __future__ import annotations

from collections.abc import Collection

from swarmlet.leader.orchestrator.context import Observed
from swarmlet.state.machine import ClusterState
from swarmlet.state.model import Task, TaskState
from swarmlet.state.observed import effective_state

STARTED = "service_started"
HEALTHY = "service_healthy"
COMPLETED = "service_completed_successfully"
CONDITIONS = (STARTED, HEALTHY, COMPLETED)


def hold_back_dependents(state: ClusterState, observed: Observed) -> ClusterState:
    """The state to orchestrate: `state` itself, or a copy without the services whose first
    start must wait for a dependency."""
    return without(state, held_back(state, observed))


def without(state: ClusterState, held: Collection[str]) -> ClusterState:
    """`state` itself if nothing is held, else a copy without the `held` services."""
    if not held:
        return state
    trimmed = state.copy()
    for service_id in held:
        del trimmed.services[service_id]
    return trimmed


def held_back(state: ClusterState, observed: Observed) -> list[str]:
    """The services whose first start must wait for a dependency (by id, sorted). Costs the
    tasks of the services that have `depends_on` and of their dependencies, not every task."""

    def state_of(task: Task) -> TaskState:
        return effective_state(task.state, observed.tasks.get(task.id))

    def met(service_name: str, condition: str) -> bool:
        dep = state.service_by_name(service_name)
        if dep is None:
            return True  # removed meanwhile: nothing to wait for
        tasks = list(state.tasks.of_service(dep.id).values())
        if condition == COMPLETED:
            if not dep.spec.mode.is_job:
                return any(state_of(t) is TaskState.COMPLETE for t in tasks)
            run = [state_of(t) for t in tasks if t.spec_version == dep.version]
            done = sum(s is TaskState.COMPLETE for s in run)
            if dep.spec.mode.is_global:  # one completion per node: every task of the run
                return bool(run) and done == len(run)
            return done >= dep.spec.replicas
        return any(
            (obs := observed.tasks.get(t.id)) is not None
            and obs.state is TaskState.RUNNING
            and (condition != HEALTHY or obs.healthy is True)
            for t in tasks
        )

    return sorted(
        s.id
        for s in state.services.values()
        if s.spec.depends_on
        and not state.tasks.of_service(s.id)
        and not all(
            met(name, s.spec.depends_on_condition.get(name, STARTED)) for name in s.spec.depends_on
        )
    )
