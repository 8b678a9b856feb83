"""reconcile(desired, observed) -> commands: the leader's orchestration, pure.

The leader calls `reconcile` whenever the replicated state or the observed state changes, and at
the time `next_wakeup` gives; it proposes the returned commands through Raft. Reconcile is
idempotent: called again on the same inputs after its commands were applied, it returns nothing
new (tests check this). Every command it returns is accepted by `ClusterState.apply` on the state
it was computed from (states only move forward; tests apply them).

Steps, in order:
0. terminal states agents reported are recorded;
1. tasks on nodes gossip declares down are ORPHANED at once (Swarm waits; swarmlet acts on the
   SWIM verdict, which already includes Lifeguard's suspicion time);
2. per service (by id): re-stamp tasks a spec change does not concern (`update.adopt_unchanged`),
   then the slots (`replicated` or `global_`: restart policy, node down/drain, scale), the rolling
   update (`update`), rebalancing (`rebalance`), the task history (`reaper`);
3. tasks of removed services are reaped;
4. every task waiting for a node goes through the scheduler in one batch; a task that stays
   pending records why (rewritten only when the explanation changes). A scoped pass may skip
   the tasks the last pass left pending when nothing the scheduler reads changed (`pending`).

Output, in this order: UpdateService for rollbacks (a service rolled back is reconciled again on
the restored spec in the same call, so the tasks that follow may carry its new version), one
PutTasks per service (so a rejected command holds back one service, not all), one RemoveTasks,
SetUpdateStatus per service. Propose them in this order (or as one Batch).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

from swarmlet.errors import UsageError
from swarmlet.leader.orchestrator.context import Context, IdSource, Observed, SlotKey, counter_ids
from swarmlet.leader.orchestrator.global_ import reconcile_global
from swarmlet.leader.orchestrator.jobs import reconcile_job
from swarmlet.leader.orchestrator.pending import Unplaced, schedule_pending
from swarmlet.leader.orchestrator.reaper import reap_history, reap_removed_services
from swarmlet.leader.orchestrator.rebalance import rebalance
from swarmlet.leader.orchestrator.replicated import reconcile_replicated
from swarmlet.leader.orchestrator.update import adopt_unchanged, run_update
from swarmlet.leader.scheduler import NodeTallies
from swarmlet.state.commands import Command, PutTasks, RemoveTasks, SetUpdateStatus
from swarmlet.state.constraints import Constraint, parse_constraints
from swarmlet.state.machine import ClusterState
from swarmlet.state.model import Service, ServiceMode, Task, TaskState


@dataclass(frozen=True, slots=True)
class Plan:
    commands: tuple[Command, ...]
    wakeup_at: float | None  # the earliest time > now at which a timer (restart delay, update
    # delay/monitor, rebalance cooldown) lets reconcile do more with no other change
    # Per service reconciled: its earliest timer (the services `wakeup_at` is for).
    timers: Mapping[str, float] = field(default_factory=dict)
    # Services reconciled whose outcome depends on other services' tasks (a rebalancing move
    # that found no room): a scoped pass must look at them whatever changed.
    watch: frozenset[str] = frozenset()
    # The tasks step 4 left waiting, which the next pass may skip if nothing the scheduler
    # reads changes meanwhile (`pending`); None: not to be relied on. And how many tasks step
    # 4 put through the scheduler.
    unplaced: Unplaced | None = None
    scheduled: int = 0


def reconcile(
    state: ClusterState,
    observed: Observed,
    now: float,
    ids: IdSource,
    services: Collection[str] | None = None,
) -> list[Command]:
    """The commands the leader should propose now. `services`: see `plan`."""
    return list(plan(state, observed, now, ids, services).commands)


def next_wakeup(state: ClusterState, observed: Observed, now: float) -> float | None:
    """When to call `reconcile` again if nothing else changes (call it on every change anyway).
    Evaluate it on the state after the last reconcile's commands were applied. `plan` returns
    the same figure along with the commands, for one pass instead of two."""
    return plan(state, observed, now, counter_ids("probe-")).wakeup_at


def plan(
    state: ClusterState,
    observed: Observed,
    now: float,
    ids: IdSource,
    services: Collection[str] | None = None,
    *,
    nodes: Collection[str] = (),
    tallies: NodeTallies | None = None,
    unplaced: Unplaced | None = None,
    touched: Collection[str] = (),
) -> Plan:
    """Commands and the next timer.

    `services` None: a full pass, which looks at every task (O(tasks): at 100,000 tasks, about a
    second). Otherwise a scoped pass, whose cost follows the scope: only those services are
    reconciled (step 2) and reaped if removed (step 3), and steps 0-1 look only at their tasks
    and at the tasks on `nodes`. Step 4 takes every task waiting for a node, as a full pass does
    (from the state's index: the scheduler's answer for one depends on the others), but those
    `unplaced` vouches for. A scoped pass returns exactly the full pass's commands when nothing
    outside the scope needs a change; `incremental` says which services and nodes a change
    concerns (tests hold the two passes to the same result).

    `tallies`: the node tallies of `state`, if the caller keeps them across passes
    (`scheduler.NodeTallies`); the scheduler then does not count every task.

    `unplaced`: the last pass's `Plan.unplaced`, if nothing the scheduler reads (nodes, the
    tallies, services) changed since, and `touched` the tasks written since: step 4 then
    schedules only the waiting tasks that are new or were written (`pending`)."""
    ctx = Context(state, observed, now, ids, tallies)
    look_at = None if services is None else _tasks_in_scope(state, services, nodes)
    _record_terminal_observations(ctx, look_at)
    _orphan_tasks_on_down_nodes(ctx, look_at)
    in_scope = ctx.work.services if services is None else services
    for service_id in sorted(s for s in in_scope if s in ctx.work.services):
        ctx.service = service_id
        if _orchestrate(ctx, service_id):
            _orchestrate(ctx, service_id)  # rolled back: once more, on the restored spec
    ctx.service = ""
    reap_removed_services(ctx, services)
    left, scheduled = schedule_pending(ctx, unplaced, touched)
    return Plan(
        _commands(ctx),
        min(ctx.wakeups, default=None),
        dict(ctx.timers),
        frozenset(ctx.watch),
        left,
        scheduled,
    )


def _tasks_in_scope(
    state: ClusterState, services: Collection[str], nodes: Collection[str]
) -> list[str]:
    """The ids of the scoped services' tasks and of the tasks on the scoped nodes, sorted (the
    order a full pass would visit them in)."""
    found: set[str] = set()
    for service_id in services:
        found.update(state.tasks.of_service(service_id))
    for node_id in nodes:
        found.update(state.tasks.on_node(node_id))
    return sorted(found)


def placement_constraints(service: Service) -> tuple[Constraint, ...]:
    """The service's constraints as the orchestrator places by them: none if they do not
    parse (the scheduler then explains that on every pending task)."""
    try:
        return parse_constraints(service.spec.placement.constraints)
    except UsageError:
        return ()


def _orchestrate(ctx: Context, service_id: str) -> bool:
    """One service's step 2; True if it was rolled back."""
    service = ctx.work.services[service_id]
    constraints = placement_constraints(service)
    adopt_unchanged(ctx, service)
    if service.spec.mode.is_job:
        reconcile_job(ctx, service, constraints)
        reap_history(ctx, service)
        return False
    filled: dict[SlotKey, list[Task]] = {}
    if service.spec.mode is ServiceMode.GLOBAL:
        for node_id, current in reconcile_global(ctx, service, constraints).items():
            filled[(0, node_id)] = current
    else:
        for slot, current in reconcile_replicated(ctx, service, constraints).items():
            filled[(slot, "")] = current
    if run_update(ctx, service, filled):
        return True
    service = ctx.work.services[service_id]
    rebalance(ctx, service, filled, constraints)
    reap_history(ctx, service)
    return False


def _record_terminal_observations(ctx: Context, look_at: list[str] | None) -> None:
    """An agent reported a task ended: write it down (the scheduler frees its resources and
    ports from the record; the reaper and `service ps` read it too). `look_at`: the sorted task
    ids of a scoped pass (None: every observed task)."""
    observed = ctx.observed.tasks
    if look_at is None:
        look_at = sorted(tid for tid, obs in observed.items() if obs.state.terminal)
    for task_id in look_at:
        obs = observed.get(task_id)
        task = ctx.work.tasks.get(task_id)
        if obs is not None and task is not None and obs.state.terminal and obs.state > task.state:
            ctx.record(task)


def _orphan_tasks_on_down_nodes(ctx: Context, look_at: list[str] | None) -> None:
    """`look_at`: as above (None: the tasks of every node gossip declares down)."""
    if look_at is None:
        down = [n for n, obs in ctx.observed.nodes.items() if obs.ready is False]
        look_at = sorted(tid for n in down for tid in ctx.work.tasks.on_node(n))
    for task_id in look_at:
        task = ctx.work.tasks.get(task_id)
        if (
            task is not None
            and task.node_id
            and ctx.node_ready(task.node_id) is False
            and ctx.alive(task)
        ):
            ctx.record(task, state=TaskState.ORPHANED, message="node down")


def _commands(ctx: Context) -> tuple[Command, ...]:
    by_service: dict[str, list[Task]] = {}
    for task in ctx.changes.values():
        if task.id in ctx.work.tasks:
            by_service.setdefault(task.service_id, []).append(task)
    # A rollback first: the tasks created after it in this call run the restored spec's version.
    commands: list[Command] = list(ctx.rollbacks)
    commands.extend(PutTasks(tuple(tasks)) for _, tasks in sorted(by_service.items()))
    if ctx.removed:
        commands.append(RemoveTasks(tuple(ctx.removed)))
    commands.extend(SetUpdateStatus(sid, status) for sid, status in sorted(ctx.statuses.items()))
    return tuple(commands)
