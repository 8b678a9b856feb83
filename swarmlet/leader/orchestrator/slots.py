"""One slot at a time: move tasks off nodes that cannot keep them, restart dead tasks, finish
handovers. Shared by replicated services (slot = 1..N) and global ones (slot = the node).

A slot's *current* tasks are those desired RUNNING (or COMPLETE: the restart policy gave up).
Normally there is one. Two alive current tasks mean a handover (start-first update or rebalance):
the newer one replaces the older ones as soon as it is observed running (and not unhealthy).

Order of the rules, for each slot:
1. an alive task on a node that is down (gossip says not ready) is ORPHANED and retired; one on a
   draining node, or on a node that no longer satisfies the constraints (swarmkit's constraint
   enforcer), is retired. A replicated slot left without an alive task gets a replacement at once,
   with the same attempt number (the task did not fail).
2. if the slot still has an alive task, its dead current tasks are retired (nothing to restart).
3. otherwise the latest dead task goes through the restart policy (`restart.decide`): replace now,
   wait (reconcile returns nothing for the slot and `next_wakeup` reports the time), or give up
   (desired COMPLETE: the slot counts as filled and stays done until the spec changes).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from swarmlet.leader.orchestrator import restart
from swarmlet.leader.orchestrator.context import Context, is_current, order
from swarmlet.state.constraints import Constraint
from swarmlet.state.model import Availability, Service, Task, TaskState


def move_off_reason(ctx: Context, node_id: str, constraints: Sequence[Constraint]) -> str:
    """Why an alive task must leave this node now ("" if it may stay)."""
    node = ctx.work.nodes.get(node_id)
    if node is None:
        return ""  # RemoveNode already orphaned its tasks
    if ctx.node_ready(node_id) is False:
        return "node down"
    if node.availability is Availability.DRAIN:
        return "node drained"
    if not all(c.matches(node) for c in constraints):
        return "node no longer satisfies the constraints"
    return ""


class NodeVerdicts:
    """`move_off_reason` for one service, computed once per node."""

    def __init__(self, ctx: Context, constraints: Sequence[Constraint]) -> None:
        self._ctx = ctx
        self._constraints = constraints
        self._cache: dict[str, str] = {}

    def __call__(self, task: Task) -> str:
        if not task.node_id:
            return ""
        reason = self._cache.get(task.node_id)
        if reason is None:
            reason = move_off_reason(self._ctx, task.node_id, self._constraints)
            self._cache[task.node_id] = reason
        return reason


def reconcile_slot(
    ctx: Context,
    service: Service,
    slot_tasks: Sequence[Task],
    verdicts: NodeVerdicts,
    *,
    can_replace: bool,
) -> None:
    """`slot_tasks`: every task of the slot (history included), in creation order.
    `can_replace`: False for a global slot whose node takes no new tasks."""
    if len(slot_tasks) == 1:  # the common case: one task, alive where it may stay
        only = slot_tasks[0]
        if is_current(only) and ctx.alive(only) and not verdicts(only):
            return
    current = [t for t in slot_tasks if is_current(t)]
    if not current:
        return
    replicated = not service.spec.mode.is_global

    # 1. Move off nodes that cannot keep the task.
    moved: Task | None = None
    remaining: list[Task] = []
    for task in current:
        reason = verdicts(task) if ctx.alive(task) else ""
        if reason == "node down":
            moved = ctx.retire(task, reason, state=TaskState.ORPHANED)
        elif reason:
            moved = ctx.retire(task, reason)
        else:
            remaining.append(task)
    alive = [t for t in remaining if ctx.alive(t)]
    dead = [t for t in remaining if not ctx.alive(t)]

    # 2. An alive task holds the slot: its dead siblings are history.
    if alive:
        for task in dead:
            recorded = ctx.record(task)
            ctx.retire(recorded, recorded.message or "replaced")
        if len(alive) >= 2:
            _handover(ctx, alive)
        return
    if moved is not None:
        for task in dead:
            ctx.retire(task, "replaced")
        if replicated:
            ctx.create(service, moved.slot, attempt=moved.attempt, message=f"replaces {moved.id}")
        return
    if not dead:
        return

    # 3. Restart policy on the latest dead task.
    *older, latest = [ctx.record(t) for t in dead]
    for task in older:
        ctx.retire(task, "replaced")
    if not can_replace:
        if latest.desired_state is TaskState.RUNNING:
            ctx.retire(latest, latest.message)
        return
    if latest.desired_state is TaskState.COMPLETE:
        if latest.spec_version != service.version:  # the spec changed: the slot runs again
            ctx.retire(latest, "service updated")
            ctx.create(service, latest.slot, node_id=_pin(latest))
        return
    history = [ctx.work.tasks.get(t.id, t) for t in slot_tasks]  # with the states just recorded
    decision = restart.decide(
        service.spec.restart,
        latest,
        history,
        service.version,
        ctx.now,
        job=service.spec.mode.is_job,
    )
    if not decision.restart:
        ctx.put(
            dataclasses.replace(latest, desired_state=TaskState.COMPLETE, message=decision.message)
        )
    elif decision.at > ctx.now:
        ctx.wake_at(decision.at)
    else:
        reason = latest.message if latest.state is TaskState.ORPHANED else str(latest.state)
        ctx.retire(latest, reason)
        ctx.create(
            service,
            latest.slot,
            node_id=_pin(latest),
            attempt=decision.attempt,
            message=f"restarts {latest.id}",
        )


def _pin(task: Task) -> str:
    """Global tasks stay on their node; replicated ones go back to the scheduler."""
    return task.node_id if task.slot == 0 else ""


def _handover(ctx: Context, alive: list[Task]) -> None:
    *older, newest = sorted(alive, key=order)
    if ctx.up(newest):
        for task in older:
            ctx.retire(task, f"replaced by {newest.id}")
    elif newest.state is TaskState.PENDING and all(
        t.spec_version < newest.spec_version for t in older
    ):
        # A start-first update whose new task finds no node while the old one holds its
        # resources (e.g. a global task on a full node): fall back to stop-first.
        for task in older:
            ctx.retire(task, f"stopped to make room for {newest.id}")
