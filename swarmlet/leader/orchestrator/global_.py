"""Global services: one task per eligible node (ready, active, constraints satisfied), including
nodes that join later. Tasks are created pinned to their node and still go through the scheduler
(resources, host ports) on that node alone, as in swarmkit.

A paused node keeps its task; a node gossip has not reported yet keeps whatever it has; a drained
or down node, or one that no longer satisfies the constraints, loses its task (see `slots`).
"""

from __future__ import annotations

from collections.abc import Sequence

from swarmlet.leader.orchestrator.context import Context, is_current
from swarmlet.leader.orchestrator.slots import NodeVerdicts, reconcile_slot
from swarmlet.leader.scheduler import eligible_nodes
from swarmlet.state.constraints import Constraint
from swarmlet.state.model import Service, Task


def reconcile_global(
    ctx: Context, service: Service, constraints: Sequence[Constraint]
) -> dict[str, list[Task]]:
    """Returns the service's filled slots (node id -> current tasks) after the changes."""
    eligible = set(eligible_nodes(ctx.work.nodes, ctx.observed.nodes, constraints))
    verdicts = NodeVerdicts(ctx, constraints)
    for node_id, slot_tasks in _by_node(ctx, service).items():
        reconcile_slot(ctx, service, slot_tasks, verdicts, can_replace=node_id in eligible)
    filled: dict[str, list[Task]] = {}
    for node_id, tasks in _by_node(ctx, service).items():
        current = [t for t in tasks if is_current(t)]
        if current:
            filled[node_id] = current
    for node_id in sorted(eligible - filled.keys()):
        filled[node_id] = [ctx.create(service, 0, node_id=node_id)]
    return filled


def _by_node(ctx: Context, service: Service) -> dict[str, list[Task]]:
    slots: dict[str, list[Task]] = {}
    for task in ctx.tasks_of(service.id):
        slots.setdefault(task.node_id, []).append(task)
    return dict(sorted(slots.items()))
