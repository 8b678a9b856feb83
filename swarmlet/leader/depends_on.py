"""`depends_on` ordering: which services the orchestrator must not start yet.

Beyond Swarm, which ignores `depends_on` in stacks: a service that has never had a task is held
back until every service it depends on has a replica running. Only the first start is ordered;
afterwards each service lives on its own, as compose's `depends_on` does. A dependency that no
longer exists holds nothing back.

Pure: a function of the desired and the observed state. The real state is never changed; a
trimmed copy is returned when something is held back.
"""

from __future__ import annotations

from swarmlet.leader.orchestrator.context import Observed
from swarmlet.state.machine import ClusterState
from swarmlet.state.model import TaskState


def hold_back_dependents(state: ClusterState, observed: Observed) -> ClusterState:
    """The state to orchestrate: `state` itself, or a copy without the services whose first
    start must wait for a dependency."""

    def up(service_name: str) -> bool:
        dep = state.service_by_name(service_name)
        if dep is None:
            return True  # removed meanwhile: nothing to wait for
        return any(
            (obs := observed.tasks.get(t.id)) is not None and obs.state is TaskState.RUNNING
            for t in state.tasks_of(dep.id)
        )

    held = [
        s.id
        for s in state.services.values()
        if s.spec.depends_on
        and not state.tasks_of(s.id)
        and not all(up(name) for name in s.spec.depends_on)
    ]
    if not held:
        return state
    trimmed = state.copy()
    for service_id in held:
        del trimmed.services[service_id]
    return trimmed
