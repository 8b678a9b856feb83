"""Step 4 of a pass: every task waiting for a node goes through the scheduler, or is known to
stay where it is.

A task the scheduler cannot place stays pending with its reason, and the next pass asks again.
At 100,000 such tasks (a service asking for more than the cluster has), asking again cost the
leader 0.2-0.4 s per pass, and a pass runs after every write: small writes went at 20 a second.
Asking again is pointless while nothing the scheduler reads has changed, so a pass may hand the
next one what it left pending (`Unplaced`), and the next pass schedules only the waiting tasks
that are new or were written since.

Why the answer for a remembered task cannot have changed: the scheduler decides from the nodes
(records and gossip), the tallies of the tasks that hold them, the services' specs, and the
other tasks of the same batch in order. The caller hands `Unplaced` over only when the first
three are unchanged since the pass that made it, whose commands were all committed
(`IncrementalPlanner` reads the journal and the gossip view), and it is made only by a pass
whose scheduler saw exactly the committed tallies (nothing placed, no task holding a node
changed earlier in the pass, no rollback). Tasks of the same batch: a task left pending holds
nothing, so only a placement can change what the tasks after it are told; if a fresh task is
placed, its placement is taken back and the whole batch is scheduled in order, as without
`Unplaced`.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

from swarmlet.leader.orchestrator.context import Context
from swarmlet.leader.scheduler import Decision, occupies
from swarmlet.state.model import Task, TaskState


@dataclass(frozen=True)
class Unplaced:
    """The tasks a pass left waiting for a node, each with the record it left it with (the
    pass's own writes come back through the journal, and are then checked against it). Valid
    only once the pass's commands are committed: a pass whose commands were not hands over
    none (`IncrementalPlanner.deferred`)."""

    tasks: Mapping[str, Task]


def schedule_pending(
    ctx: Context, known: Unplaced | None = None, touched: Collection[str] = ()
) -> tuple[Unplaced | None, int]:
    """Place the waiting tasks (or write down why not); returns what the next pass may take as
    known (None: nothing) and how many tasks went through the scheduler.

    `known`: the last pass's `Unplaced`, if nothing the scheduler reads changed since (see the
    module's docstring); `touched`: the task ids written since that pass (the journal's)."""
    waiting = ctx.work.tasks.waiting()
    # A rollback changed a spec in this pass: the scheduler counts its tasks anew (it comes
    # with failures recorded in the same pass today, which `_held_nodes_changed` sees too).
    clean = not ctx.rollbacks and not _held_nodes_changed(ctx)
    if known is not None and clean:
        stale: set[str] = set()
        fresh: dict[str, Task] = {}
        for task_id in itertools.chain(touched, ctx.changes, ctx.removed):
            task = waiting.get(task_id)
            expected = known.tasks.get(task_id)
            if expected is not None:
                if _same(task, expected):
                    continue  # as it was left (the pass's own write came back as made)
                stale.add(task_id)
            if task is not None:
                fresh[task_id] = task
        batch = _in_order(fresh.values())
        decisions = ctx.scheduler.schedule(batch)
        if not any(d.node_id for d in decisions):
            _record(ctx, batch, decisions)
            if not stale and not batch:
                return known, 0
            remembered = {t: task for t, task in known.tasks.items() if t not in stale}
            remembered.update((t.id, ctx.work.tasks[t.id]) for t in batch)
            return Unplaced(remembered), len(batch)
        for task, decision in zip(batch, decisions, strict=True):
            if decision.node_id:
                ctx.scheduler.unplace(task, decision)
    batch = _in_order(waiting.values())
    decisions = ctx.scheduler.schedule(batch)
    _record(ctx, batch, decisions)
    if not clean or any(d.node_id for d in decisions):
        return None, len(batch)
    return Unplaced({t.id: ctx.work.tasks[t.id] for t in batch}), len(batch)


def _in_order(tasks: Iterable[Task]) -> list[Task]:
    return sorted(tasks, key=lambda t: (t.service_id, t.slot, t.node_id, t.created_at, t.id))


def _same(task: Task | None, expected: Task) -> bool:
    return task is expected or task == expected


def _held_nodes_changed(ctx: Context) -> bool:
    """Did an earlier step of this pass change a task that holds (or held) a node? Then the
    scheduler's tallies are not the committed ones."""
    for task_id in itertools.chain(ctx.changes, ctx.removed):
        before, after = ctx.base.tasks.get(task_id), ctx.work.tasks.get(task_id)
        if (before is not None and occupies(before)) or (after is not None and occupies(after)):
            return True
    return False


def _record(ctx: Context, batch: list[Task], decisions: list[Decision]) -> None:
    """Write the decisions into the scratch state (a pending task's record only if its
    explanation changed)."""
    for task, decision in zip(batch, decisions, strict=True):
        if decision.node_id:
            ctx.put(
                dataclasses.replace(
                    task,
                    node_id=decision.node_id,
                    state=TaskState.ASSIGNED,
                    message="assigned",
                    assigned_resources=decision.resources,
                    updated_at=ctx.now,
                ),
                counted=True,
            )
        elif task.state is not TaskState.PENDING or task.message != decision.message:
            ctx.put(
                dataclasses.replace(
                    task, state=TaskState.PENDING, message=decision.message, updated_at=ctx.now
                )
            )
