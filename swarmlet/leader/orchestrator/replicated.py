"""Replicated services: exactly `replicas` filled slots (new ones only up to the cluster's limit,
`state.replica_limit`).

Scale up fills the lowest free slot numbers (1, 2, ...). Scale down, as swarmkit's replicated
orchestrator does, shuts down first the slots whose task is not running yet, then those on the
nodes running the most tasks of the service, then the highest slot numbers. Slot numbers can
therefore have gaps after a scale down (as in Swarm); the next scale up fills them first.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from swarmlet.leader.orchestrator.context import Context, is_current
from swarmlet.leader.orchestrator.slots import NodeVerdicts, reconcile_slot
from swarmlet.state.constraints import Constraint
from swarmlet.state.model import Service, Task
from swarmlet.state.replica_limit import MAX_REPLICAS


def reconcile_replicated(
    ctx: Context, service: Service, constraints: Sequence[Constraint]
) -> dict[int, list[Task]]:
    """Returns the service's filled slots (slot -> current tasks) after the changes."""
    verdicts = NodeVerdicts(ctx, constraints)
    for slot_tasks in _by_slot(ctx, service).values():
        reconcile_slot(ctx, service, slot_tasks, verdicts, can_replace=True)

    filled = {
        slot: current
        for slot, tasks in _by_slot(ctx, service).items()
        if (current := [t for t in tasks if is_current(t)])
    }
    wanted = service.spec.replicas
    # No slot is added past the limit, whatever a state says (one a release before the limit
    # wrote); slots filled already are kept.
    addable = min(wanted, MAX_REPLICAS) - len(filled)
    if addable > 0:
        slot = 0
        for _ in range(addable):
            slot += 1
            while slot in filled:
                slot += 1
            filled[slot] = [ctx.create(service, slot)]
    elif len(filled) > wanted:
        load: Counter[str] = Counter(
            t.node_id for current in filled.values() for t in current if ctx.alive(t)
        )

        def victim_rank(slot: int) -> tuple[bool, int, int]:
            current = filled[slot]
            running = any(ctx.up(t) for t in current)
            node_load = max((load[t.node_id] for t in current if t.node_id), default=0)
            return (running, -node_load, -slot)

        for slot in sorted(filled, key=victim_rank)[: len(filled) - wanted]:
            for task in filled.pop(slot):
                ctx.retire(task, "scaled down")
    return filled


def _by_slot(ctx: Context, service: Service) -> dict[int, list[Task]]:
    slots: dict[int, list[Task]] = {}
    for task in ctx.tasks_of(service.id):
        slots.setdefault(task.slot, []).append(task)
    return dict(sorted(slots.items()))
