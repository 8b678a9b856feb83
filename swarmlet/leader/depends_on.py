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

from swarmlet.leader.orchestrator.context import Observed
from swarmlet.state.machine import ClusterState
from swarmlet.state.model import Task, TaskState

STARTED = "service_started"
HEALTHY = "service_healthy"
COMPLETED = "service_completed_successfully"
CONDITIONS = (STARTED, HEALTHY, COMPLETED)


def hold_back_dependents(state: ClusterState, observed: Observed) -> ClusterState:
    """The state to orchestrate: `state` itself, or a copy without the services whose first
    start must wait for a dependency."""

    def state_of(task: Task) -> TaskState:
        obs = observed.tasks.get(task.id)
        return max(task.state, obs.state) if obs is not None else task.state

    def met(service_name: str, condition: str) -> bool:
        dep = state.service_by_name(service_name)
        if dep is None:
            return True  # removed meanwhile: nothing to wait for
        tasks = state.tasks_of(dep.id)
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

    held = [
        s.id
        for s in state.services.values()
        if s.spec.depends_on
        and not state.tasks_of(s.id)
        and not all(
            met(name, s.spec.depends_on_condition.get(name, STARTED)) for name in s.spec.depends_on
        )
    ]
    if not held:
        return state
    trimmed = state.copy()
    for service_id in held:
        del trimmed.services[service_id]
    return trimmed
