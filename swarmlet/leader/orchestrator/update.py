"""Rolling update and rollback: the state machine (`step`, pure and table-tested) and its driver.

States (model.UpdateState), as in Swarm's UpdateStatus:

    NONE/COMPLETED/ROLLBACK_COMPLETED --(a dirty slot appears)--------------> UPDATING
    UPDATING --(failure ratio exceeded, action pause)-----------------------> PAUSED
    UPDATING --(failure ratio exceeded, action rollback)--------------------> ROLLBACK_STARTED
        (through UpdateService(previous_spec, is_rollback=True), which bumps the version)
    UPDATING --(no dirty slot, nothing in flight, monitor elapsed)---------> COMPLETED
    ROLLBACK_STARTED --(failure ratio exceeded, action pause or rollback)--> ROLLBACK_PAUSED
    ROLLBACK_STARTED --(done, monitor elapsed)------------------------------> ROLLBACK_COMPLETED
    any state --(the spec changed after the status was written)-----------> UPDATING

PAUSED and ROLLBACK_PAUSED stay until the user changes the spec again (`service update`, or
`service rollback`). A paused update leaves its remaining slots on the old version; a slot whose
task dies meanwhile restarts on the current spec (as swarmkit's restart supervisor does).

Definitions (all derived from the tasks, so a new leader resumes where the old one stopped):
* a slot is *dirty* when its alive tasks all run an older spec version;
* a slot is *busy* when its newest task runs the current version but is not up yet, or has been up
  for less than `delay_s` (Swarm: each of the `parallelism` workers waits `delay_s` after a task
  is running before taking the next slot), or a start-first handover is still in progress;
* a *failure* is a task of the current version, created since the update started, that ended by
  itself (COMPLETE, FAILED, REJECTED). Unlike Swarm, a failure counts until the update completes,
  not only within `monitor_s` of that task's start;
* the update completes once no slot is dirty or busy and every task it started has been up for
  `monitor_s`.
The failure ratio is failures / slots (`max_failure_ratio` = 0: the first failure triggers the
action). `parallelism` = 0 updates every dirty slot at once.

After a rollback, the tasks that were never updated already run the restored spec and are kept.
Spec changes that do not touch what a task runs (replicas, update/rollback config, service
labels, rebalance, autoscale, depends_on, placement) do not make tasks dirty: their tasks are
re-stamped with the new version (swarmkit's IsTaskDirty ignores them too; a task on a node that no
longer satisfies new constraints is moved by the constraint rule in `slots`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from swarmlet.errors import UsageError
from swarmlet.leader.orchestrator.context import Context, SlotKey, is_current, order
from swarmlet.leader.scheduler import host_ports
from swarmlet.state.commands import UpdateService
from swarmlet.state.model import (
    FailureAction,
    Placement,
    Service,
    ServiceSpec,
    Task,
    TaskState,
    UpdateConfig,
    UpdateOrder,
    UpdateState,
    UpdateStatus,
)
from swarmlet.state.replica_limit import check_replicas

_IDLE = (UpdateState.NONE, UpdateState.COMPLETED, UpdateState.ROLLBACK_COMPLETED)
_ROLLING_BACK = (
    UpdateState.ROLLBACK_STARTED,
    UpdateState.ROLLBACK_PAUSED,
    UpdateState.ROLLBACK_COMPLETED,
)
_FAILURES = (TaskState.COMPLETE, TaskState.FAILED, TaskState.REJECTED)


# ----------------------------------------------------------------------------- the machine


@dataclass(frozen=True, slots=True)
class Progress:
    total_slots: int
    dirty_slots: int
    busy_slots: int
    failures: int = 0
    settled: bool = True  # every task this update started has been up for monitor_s
    failed_task: str = ""  # the first failed task's id, for the message


@dataclass(frozen=True, slots=True)
class Step:
    status: UpdateStatus | None = None  # write this status (None: leave it)
    start: int = 0  # dirty slots to update now
    rollback: bool = False  # propose UpdateService(previous_spec, is_rollback=True)


def config_for(status: UpdateStatus, spec: ServiceSpec) -> UpdateConfig:
    return spec.rollback if status.state in _ROLLING_BACK else spec.update


def step(
    status: UpdateStatus,
    spec: ServiceSpec,
    progress: Progress,
    *,
    stale: bool,
    can_rollback: bool,
    now: float,
) -> Step:
    """One decision of the update state machine. `stale`: the spec changed after `status` was
    written (a new update supersedes whatever state the last one was in)."""
    new_status: UpdateStatus | None = None
    if (stale or status.state in _IDLE) and progress.dirty_slots:
        new_status = status = UpdateStatus(
            UpdateState.UPDATING, started_at=now, message="update in progress"
        )
        progress = dataclasses.replace(progress, failures=0, failed_task="")
    elif status.state not in (UpdateState.UPDATING, UpdateState.ROLLBACK_STARTED):
        return Step()  # idle with nothing to do, or paused: wait for the user
    rolling_back = status.state in _ROLLING_BACK
    config = config_for(status, spec)
    what = "rollback" if rolling_back else "update"

    total = max(progress.total_slots, 1)
    if progress.failures and progress.failures / total > config.max_failure_ratio:
        action = config.failure_action
        cause = f"failure or early termination of task {progress.failed_task}"
        if action is FailureAction.ROLLBACK and not rolling_back and can_rollback:
            return Step(rollback=True)
        if action is not FailureAction.CONTINUE:
            paused = UpdateState.ROLLBACK_PAUSED if rolling_back else UpdateState.PAUSED
            note = ""
            if action is FailureAction.ROLLBACK and not rolling_back:
                note = " (no previous spec to roll back to)"
            return Step(
                UpdateStatus(
                    paused,
                    started_at=status.started_at,
                    message=f"{what} paused due to {cause}{note}",
                )
            )
    if progress.dirty_slots == 0 and progress.busy_slots == 0 and progress.settled:
        done = UpdateState.ROLLBACK_COMPLETED if rolling_back else UpdateState.COMPLETED
        return Step(
            UpdateStatus(
                done, started_at=status.started_at, completed_at=now, message=f"{what} completed"
            )
        )
    parallelism = config.parallelism or progress.dirty_slots
    start = max(0, min(progress.dirty_slots, parallelism - progress.busy_slots))
    return Step(new_status, start)


# ----------------------------------------------------------------------------- the driver

_IGNORED_FOR_TASKS: dict[str, object] = {
    "replicas": 0,
    "update": UpdateConfig(),
    "rollback": UpdateConfig(),
    "labels": {},
    "rebalance": True,
    "autoscale": None,
    "depends_on": (),
    "placement": Placement(),
    "max_concurrent": 0,
}


def task_relevant(spec: ServiceSpec) -> ServiceSpec:
    """The spec with the fields a running task does not depend on blanked out."""
    return dataclasses.replace(spec, **_IGNORED_FOR_TASKS)  # type: ignore[arg-type]


def adopt_unchanged(ctx: Context, service: Service) -> None:
    """Re-stamp current tasks that already run what the current spec asks for:
    * after a change that does not concern tasks, those of the previous version;
    * after a rollback (the only change that leaves `previous_spec` empty on a version > 1),
      those of the version before the one rolled back, whose spec the rollback restored.
    """
    previous = service.previous_spec
    if previous is None:
        if service.version <= 2:
            return
        same_as = service.version - 2
    elif task_relevant(previous) == task_relevant(service.spec):
        same_as = service.version - 1
    else:
        return
    for task in ctx.tasks_of(service.id):
        if task.spec_version == same_as and is_current(task):
            ctx.put(dataclasses.replace(task, spec_version=service.version))


def run_update(ctx: Context, service: Service, filled: Mapping[SlotKey, Sequence[Task]]) -> bool:
    """Drive the rolling update of `service` one step; `filled` maps slot -> current tasks.
    Returns True if it rolled the service back (the caller reconciles it again, on the restored
    spec, in the same call)."""
    status = service.update_status
    version = service.version
    config = config_for(status, service.spec)
    dirty: list[SlotKey] = []
    busy = 0
    settled = True
    wakeups: list[float] = []  # only timers of an update in progress count
    for key, current in filled.items():
        alive = [t for t in current if ctx.alive(t)]
        if not alive:
            continue
        fresh = [t for t in alive if t.spec_version == version]
        if not fresh:
            dirty.append(key)
            continue
        newest = max(fresh, key=order)
        if len(alive) >= 2 or not ctx.up(newest):
            busy += 1
            settled = settled and newest.created_at < status.started_at
            continue
        since = ctx.running_since(newest)
        if since + config.delay_s > ctx.now:
            busy += 1
            wakeups.append(since + config.delay_s)
        if newest.created_at >= status.started_at and since + config.monitor_s > ctx.now:
            settled = False
            wakeups.append(since + config.monitor_s)

    failed = [
        t
        for t in ctx.tasks_of(service.id)
        if t.spec_version == version
        and t.created_at >= status.started_at
        and ctx.effective(t) in _FAILURES
    ]
    progress = Progress(
        total_slots=len(filled),
        dirty_slots=len(dirty),
        busy_slots=busy,
        failures=len(failed),
        settled=settled,
        failed_task=failed[0].id if failed else "",
    )
    stale = status.state is not UpdateState.NONE and service.updated_at > status.started_at
    decision = step(
        status,
        service.spec,
        progress,
        stale=stale,
        can_rollback=service.previous_spec is not None,
        now=ctx.now,
    )
    if decision.rollback:
        assert service.previous_spec is not None
        command = UpdateService(
            service.id,
            service.previous_spec,
            updated_at=ctx.now,
            is_rollback=True,
            update_status=UpdateStatus(
                UpdateState.ROLLBACK_STARTED,
                started_at=ctx.now,
                message=f"update rolled back due to failure or early termination of task "
                f"{progress.failed_task}",
            ),
        )
        try:
            # As a manual rollback is: the services created since may have taken the room.
            check_replicas(ctx.work.services.values(), {service.id: service.previous_spec})
        except UsageError as exc:
            error = str(exc)
        else:
            result = ctx.work.apply(command)
            if result.ok:
                ctx.rollbacks.append(command)
                return True
            error = result.error
        # The previous spec no longer fits the cluster (its port or its replicas were taken since,
        # say): pause.
        ctx.set_status(
            service,
            UpdateStatus(
                UpdateState.PAUSED,
                started_at=status.started_at,
                message=f"update paused: cannot roll back: {error}",
            ),
        )
        return False
    if decision.status is not None:
        service = ctx.set_status(service, decision.status)
        config = config_for(decision.status, service.spec)
    if service.update_status.state in (UpdateState.UPDATING, UpdateState.ROLLBACK_STARTED):
        for at in wakeups:
            ctx.wake_at(at)

    # Slots whose task is not up yet first (they serve nothing), then in slot order.
    dirty.sort(key=lambda k: (any(ctx.up(t) for t in filled[k]), k))
    for key in dirty[: decision.start]:
        alive = sorted((t for t in filled[key] if ctx.alive(t)), key=order)
        newest = alive[-1]
        node_id = newest.node_id if newest.slot == 0 else ""
        # Start-first needs room for both tasks; a global task cannot move, so with host-mode
        # ports it can only be stop-first (Swarm refuses that combination outright).
        pinned_port = newest.slot == 0 and bool(host_ports(service.spec))
        if config.order is UpdateOrder.START_FIRST and ctx.up(newest) and not pinned_port:
            ctx.create(service, newest.slot, node_id=node_id, message=f"updates {newest.id}")
            continue  # the handover in `slots` stops the old task once the new one is up
        for task in alive:
            ctx.retire(task, f"updating to version {version}")
        ctx.create(service, newest.slot, node_id=node_id, message=f"updates {newest.id}")
    return False
