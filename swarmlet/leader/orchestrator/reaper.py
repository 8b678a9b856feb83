"""Task history: what is removed from the state (swarmkit's task reaper).

* tasks of removed services, once terminal (or never handed to an agent);
* per slot, retired terminal tasks beyond the history limit (Swarm's retention of 5, more when the
  restart policy's `max_attempts` needs them to be counted: `restart.history_limit`);
* slots of a replicated service that are no longer filled and above `replicas` (scaled down),
  and global slots of nodes that left the cluster, once all their tasks are terminal.
A task recorded and removed in the same reconcile appears only in RemoveTasks.
"""

from __future__ import annotations

from collections.abc import Collection

from swarmlet.leader.orchestrator import restart
from swarmlet.leader.orchestrator.context import Context, is_current, order, slot_key
from swarmlet.state.model import Service, Task, TaskState


def reap_removed_services(ctx: Context, services: Collection[str] | None = None) -> None:
    """`services`: those of a scoped pass (None: every service that has tasks)."""
    candidates = ctx.work.tasks.service_ids() if services is None else services
    for service_id in sorted(candidates):
        if service_id in ctx.work.services:
            continue
        for task in ctx.tasks_of(service_id):
            if not ctx.alive(task) or task.state < TaskState.ASSIGNED:
                ctx.remove(task)


def reap_history(ctx: Context, service: Service) -> None:
    limit = restart.history_limit(service.spec.restart)
    replicated = not service.spec.mode.is_global
    slots: dict[tuple[int, str], list[Task]] = {}
    for task in ctx.tasks_of(service.id):
        slots.setdefault(slot_key(task), []).append(task)
    for (slot, node_id), tasks in slots.items():
        done = [t for t in tasks if not is_current(t) and not ctx.alive(t)]
        gone = (replicated and slot > service.spec.replicas) or (
            not replicated and node_id not in ctx.work.nodes
        )
        if gone and len(done) == len(tasks):
            keep = 0
        elif len(done) > limit:
            keep = limit
        else:
            continue
        doomed = sorted(done, key=order)
        for task in doomed[: len(doomed) - keep]:
            ctx.remove(task)
