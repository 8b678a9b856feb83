"""Rebalancing (beyond Swarm): move replicas back when a node joins or returns.

Swarm never moves a running task to even out the spread; swarmlet does, for replicated services
with `rebalance=True`, carefully:
* only when the service is quiet: no update in progress, every filled slot holding exactly one
  task of the current version that is up, and no move of this service failed in the last
  `COOLDOWN_S`;
* only when the counts of the service's tasks on the eligible nodes (ready, active, constraints)
  differ by more than 1;
* ONE replica per service at a time (the next move waits until the last one's old task has
  stopped), start before stop: a new task in the same slot is placed
  (by the scheduler, so resources, ports and max-replicas still hold) on the least loaded node,
  and the handover in `slots` shuts the old one down on the most loaded node only once the new
  one is observed up. If it fails, the old one keeps running.
* a move is made only if the scheduler's choice is at least 2 tasks lighter than the source,
  so moves always shrink the spread and never cycle.
Services with placement preferences are not rebalanced (spreading over nodes could undo the
spread over label values); this is a documented limitation.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Mapping, Sequence

from swarmlet.leader.orchestrator.context import Context, SlotKey
from swarmlet.leader.scheduler import eligible_nodes
from swarmlet.state.constraints import Constraint
from swarmlet.state.model import Service, Task, TaskState, UpdateState

COOLDOWN_S = 30.0
MESSAGE = "rebalancing from node "


def rebalance(
    ctx: Context,
    service: Service,
    filled: Mapping[SlotKey, Sequence[Task]],
    constraints: Sequence[Constraint],
) -> None:
    spec = service.spec
    if not spec.rebalance or spec.placement.preferences:
        return
    if service.update_status.state in (UpdateState.UPDATING, UpdateState.ROLLBACK_STARTED):
        return
    primaries: list[Task] = []
    for current in filled.values():
        if len(current) != 1:
            return  # a handover is in progress (or a slot has no task yet)
        task = current[0]
        if task.spec_version != service.version or not ctx.up(task):
            return
        primaries.append(task)
    for task in ctx.tasks_of(service.id):
        if task.desired_state > TaskState.COMPLETE and ctx.alive(task):
            return  # the last move's old task is still stopping
        if task.message.startswith(MESSAGE) and ctx.effective(task) in (
            TaskState.FAILED,
            TaskState.REJECTED,
        ):
            until = task.updated_at + COOLDOWN_S
            if until > ctx.now:
                ctx.wake_at(until)
                return

    eligible = eligible_nodes(ctx.work.nodes, ctx.observed.nodes, constraints)
    if len(eligible) < 2:
        return
    load: Counter[str] = Counter(t.node_id for t in primaries)
    counts = {node_id: load[node_id] for node_id in eligible}
    source = max(eligible, key=lambda n: (counts[n], n))
    if counts[source] - min(counts.values()) <= 1:
        return
    mover = max((t for t in primaries if t.node_id == source), key=lambda t: t.slot)
    probe = Task(
        id="rebalance-probe",
        service_id=service.id,
        slot=mover.slot,
        spec_version=service.version,
        attempt=mover.attempt,
    )
    decision = ctx.scheduler.probe(probe)
    target = decision.node_id
    if not target or counts.get(target, load[target]) > counts[source] - 2:
        # No room where it would help: room depends on the other services' tasks, so this
        # service is looked at again whatever changes (`Plan.watch`).
        ctx.watch.add(service.id)
        return
    task = ctx.create(service, mover.slot, attempt=mover.attempt, message=MESSAGE + source)
    ctx.put(
        dataclasses.replace(
            task,
            node_id=target,
            state=TaskState.ASSIGNED,
            assigned_resources=decision.resources,  # free again since the probe
        )
    )
