"""Jobs: `replicated-job` and `global-job` services run their tasks to completion.

A job's spec version is its run (Swarm's JobIteration): `service update --force`, or any change
that reaches the tasks, starts a new run whose tasks start from scratch; a change that does not
(`update.adopt_unchanged`: replicas, max_concurrent, placement) keeps the completions, so raising
`replicas` runs only the extra ones. Within a run:

- replicated-job: `replicas` completions are wanted, one per slot 1..replicas;
- global-job: one completion per eligible node, nodes that join later included;
- at most `max_concurrent` tasks (0: all of them) run at once; the lowest free slots (or the
  nodes in id order) start first;
- a task that exits 0 is done and never restarted, whatever the restart condition
  (`restart.decide`); a failed one is restarted as the restart policy says, in its slot, and a
  task whose node goes down is replaced (`slots.reconcile_slot`);
- tasks of an earlier run that still run are stopped; finished ones are history.

Rolling updates and rebalancing do not apply to jobs: a new run replaces every task anyway.
"""

from __future__ import annotations

from collections.abc import Sequence

from swarmlet.leader.orchestrator.context import Context, SlotKey, is_current, slot_key
from swarmlet.leader.orchestrator.slots import NodeVerdicts, reconcile_slot
from swarmlet.leader.scheduler import eligible_nodes
from swarmlet.state.constraints import Constraint
from swarmlet.state.model import Service, Task, TaskState
from swarmlet.state.replica_limit import MAX_REPLICAS


def reconcile_job(ctx: Context, service: Service, constraints: Sequence[Constraint]) -> None:
    spec = service.spec
    if spec.mode.is_global:
        nodes = eligible_nodes(ctx.work.nodes, ctx.observed.nodes, constraints)
        wanted = [(0, node_id) for node_id in nodes]
    else:
        # No slot is made past the cluster's limit (`state.replica_limit`), whatever a state says.
        wanted = [(slot, "") for slot in range(1, min(spec.replicas, MAX_REPLICAS) + 1)]
    wanted_set = set(wanted)

    def wants(key: SlotKey) -> bool:  # slots past the limit that a state holds already stay
        return key in wanted_set or (not spec.mode.is_global and 1 <= key[0] <= spec.replicas)

    verdicts = NodeVerdicts(ctx, constraints)
    for key, tasks in _by_slot(ctx, service).items():
        this_run: list[Task] = []
        for task in tasks:
            if task.spec_version == service.version:
                this_run.append(task)
            elif is_current(task):
                ctx.retire(task, "a new run of the job" if ctx.alive(task) else "an earlier run")
        if not wants(key):
            for task in this_run:
                if task.desired_state is TaskState.RUNNING:
                    ctx.retire(task, "scaled down" if not key[1] else "node not eligible")
            continue
        if this_run:
            reconcile_slot(ctx, service, this_run, verdicts, can_replace=True)

    filled: set[SlotKey] = set()
    running = 0
    for key, tasks in _by_slot(ctx, service).items():
        current = [t for t in tasks if t.spec_version == service.version and is_current(t)]
        if current:
            filled.add(key)
            running += any(t.desired_state is TaskState.RUNNING for t in current)
    limit = spec.max_concurrent or len(wanted)
    for slot, node_id in wanted:
        if running >= limit:
            break
        if (slot, node_id) not in filled:
            ctx.create(service, slot, node_id=node_id)
            running += 1


def _by_slot(ctx: Context, service: Service) -> dict[SlotKey, list[Task]]:
    slots: dict[SlotKey, list[Task]] = {}
    for task in ctx.tasks_of(service.id):
        slots.setdefault(slot_key(task), []).append(task)
    return dict(sorted(slots.items()))
