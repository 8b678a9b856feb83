"""The working context of one `reconcile` call: inputs, a scratch copy of the state, the changes.

Every change the orchestrator decides is applied at once to a scratch copy of the cluster state
(so later steps of the same call see it, and the scheduler counts the tasks just created) and
recorded, so that `reconcile` can return it as commands. Nothing here decides policy.

Must not know: Raft, the network, Docker, the clock (time is `now`), the global `random`.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from swarmlet.leader.scheduler import NodeTallies, ObservedNode, Scheduler
from swarmlet.state.commands import UpdateService
from swarmlet.state.machine import ClusterState
from swarmlet.state.model import Service, Task, TaskState, UpdateStatus
from swarmlet.state.observed import TaskObservation, effective_state

IdSource = Callable[[], str]
"""Returns a fresh, unique task id on each call (injected so that a run replays exactly)."""

_ID_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"


class Chooser(Protocol):
    """What `seeded_ids` needs of a `random.Random` (injected: the core never imports random)."""

    def choice(self, seq: Sequence[str], /) -> str: ...


def seeded_ids(rng: Chooser, length: int = 25) -> IdSource:
    """Swarm-like random ids (25 characters of [0-9a-z]) drawn from an injected, seeded rng."""
    return lambda: "".join(rng.choice(_ID_ALPHABET) for _ in range(length))


def counter_ids(prefix: str = "t") -> IdSource:
    """ "t000001", "t000002", ...: readable ids for tests (they sort in creation order)."""
    counter = itertools.count(1)
    return lambda: f"{prefix}{next(counter):06d}"


@dataclass(frozen=True)
class Observed:
    """What the nodes say now (`leader.observation`). A node missing from `nodes` has not been
    heard of yet: it takes no new tasks, but its tasks are left alone (only an explicit
    `ready=False` is a failure)."""

    nodes: Mapping[str, ObservedNode] = field(default_factory=dict)
    tasks: Mapping[str, TaskObservation] = field(default_factory=dict)


# A slot is identified by (slot, "") for replicated services and (0, node_id) for global ones.
SlotKey = tuple[int, str]


def slot_key(task: Task) -> SlotKey:
    return (task.slot, "") if task.slot else (0, task.node_id)


def order(task: Task) -> tuple[float, str]:
    """Creation order. `now` grows between calls, so a task created later sorts later."""
    return (task.created_at, task.id)


def is_current(task: Task) -> bool:
    """The slot's task(s) the leader still cares about: desired RUNNING, or COMPLETE (the
    restart policy gave up: the slot is done, and counts as filled)."""
    return task.desired_state <= TaskState.COMPLETE


class Context:
    """`work` is a copy of the state without its task statuses (the orchestrator reads the
    observations); its task indexes are shared copy-on-write, so the copy costs one flat dict
    copy whatever the cluster's size. `tallies`, if the caller keeps them, are
    the node tallies of `state` (`scheduler.NodeTallies`), from which the scheduler starts
    instead of counting every task."""

    def __init__(
        self,
        state: ClusterState,
        observed: Observed,
        now: float,
        ids: IdSource,
        tallies: NodeTallies | None = None,
    ) -> None:
        self.base = state
        self.work = state.copy(with_statuses=False)
        self.observed = observed
        self.now = now
        self.ids = ids
        self.changes: dict[str, Task] = {}
        self.removed: list[str] = []
        self.statuses: dict[str, UpdateStatus] = {}
        self.rollbacks: list[UpdateService] = []
        self.wakeups: list[float] = []
        # Per service: its earliest timer, and whether what it decided depends on other
        # services' tasks (a rebalancing move that found no room): the driver of scoped passes
        # (`incremental`) looks at such a service again when its timer comes due, and on
        # every pass, respectively.
        self.service = ""  # the service being reconciled ("" between services)
        self.timers: dict[str, float] = {}
        self.watch: set[str] = set()
        self._tallies = tallies
        self._scheduler: Scheduler | None = None
        self._sorted: dict[str, list[Task]] = {}  # tasks_of, until the service's next change

    # ---------------------------------------------------------------------------- observed

    def effective(self, task: Task) -> TaskState:
        """The later of the recorded and the observed state (states only move forward)."""
        return effective_state(task.state, self.observed.tasks.get(task.id))

    def alive(self, task: Task) -> bool:
        return not self.effective(task).terminal

    def up(self, task: Task) -> bool:
        """Observed running and not reported unhealthy (healthy=None: no health check)."""
        obs = self.observed.tasks.get(task.id)
        return (
            obs is not None
            and obs.state is TaskState.RUNNING
            and obs.healthy is not False
            and task.state <= TaskState.RUNNING
        )

    def running_since(self, task: Task) -> float:
        return self._since(task, self.observed.tasks.get(task.id))

    def _since(self, task: Task, obs: TaskObservation | None) -> float:
        """When the node says `task` entered its reported state, within what can be true: not
        before the task was created, and never after now, whatever the clocks of the node
        and of the leader that created the task said (a node may lie: a terminal state
        "since" 1e300 held its slot's restart off for good)."""
        since = obs.since if obs is not None else 0.0
        if not since or not math.isfinite(since):
            return self.now
        return min(max(task.created_at, since), self.now)

    def node_ready(self, node_id: str) -> bool | None:
        """True/False: gossip's verdict; None: not heard of yet."""
        obs = self.observed.nodes.get(node_id)
        return None if obs is None else obs.ready

    @property
    def scheduler(self) -> Scheduler:
        """Built on first use, from the scratch state; kept current by `put`. From the caller's
        tallies (of the state before this call), the changes made so far are counted in; after
        a rollback (a spec, so reservations, changed in this call) every task is counted."""
        if self._scheduler is None:
            if self._tallies is None or self.rollbacks:
                self._scheduler = Scheduler(self.work, self.observed.nodes)
            else:
                self._scheduler = Scheduler(self.work, self.observed.nodes, self._tallies)
                for task_id in self.changes.keys() | set(self.removed):
                    self._scheduler.changed(
                        self.base.tasks.get(task_id), self.work.tasks.get(task_id)
                    )
        return self._scheduler

    def wake_at(self, at: float) -> None:
        if at > self.now:
            self.wakeups.append(at)
            if self.service:
                self.timers[self.service] = min(at, self.timers.get(self.service, at))

    # ---------------------------------------------------------------------------- changes

    def tasks_of(self, service_id: str) -> list[Task]:
        """The service's tasks in creation order (a fresh list; the sort is kept until the
        service's tasks change)."""
        tasks = self._sorted.get(service_id)
        if tasks is None:
            tasks = sorted(self.work.tasks.of_service(service_id).values(), key=order)
            self._sorted[service_id] = tasks
        return list(tasks)

    def put(self, task: Task, *, counted: bool = False) -> None:
        """Record a new or changed task. `counted`: the scheduler placed it and counted it."""
        if task.node_id and task.node_id not in self.work.nodes:
            return  # the node was removed: its tasks are orphaned by RemoveNode, never rewritten
        if self._scheduler is not None and not counted:
            self._scheduler.changed(self.work.tasks.get(task.id), task)
        self.work.tasks[task.id] = task
        self._sorted.pop(task.service_id, None)
        self.changes[task.id] = task

    def remove(self, task: Task) -> None:
        if self._scheduler is not None:
            self._scheduler.changed(self.work.tasks.get(task.id), None)
        self.work.tasks.pop(task.id, None)
        self._sorted.pop(task.service_id, None)
        self.removed.append(task.id)

    def create(
        self, service: Service, slot: int, *, node_id: str = "", attempt: int = 0, message: str = ""
    ) -> Task:
        task = Task(
            id=self.ids(),
            service_id=service.id,
            slot=slot,
            spec_version=service.version,
            desired_state=TaskState.RUNNING,
            state=TaskState.NEW,
            node_id=node_id,
            message=message,
            attempt=attempt,
            created_at=self.now,
            updated_at=self.now,
        )
        self.put(task)
        return task

    def record(self, task: Task, *, state: TaskState | None = None, message: str = "") -> Task:
        """Write the observed terminal state (or `state`, if later) into the task record. The
        message is kept (the agent's error says what happened), unless one is given."""
        obs = self.observed.tasks.get(task.id)
        new_state = task.state
        error = task.error
        updated_at = task.updated_at
        if obs is not None and obs.state.terminal and obs.state > new_state:
            new_state, error = obs.state, obs.error or error
            updated_at = self._since(task, obs)
        if state is not None and state > new_state:
            new_state, updated_at = state, self.now
        if new_state == task.state and not message:
            return task
        changed = dataclasses.replace(
            task,
            state=new_state,
            error=error,
            message=message or task.message,
            updated_at=updated_at,
        )
        self.put(changed)
        return changed

    def retire(self, task: Task, message: str, *, state: TaskState | None = None) -> Task:
        """Desired SHUTDOWN. A task no agent was handed yet (not ASSIGNED) is shut down here."""
        task = self.record(task, state=state)
        new_state = task.state
        if new_state < TaskState.ASSIGNED:
            new_state = TaskState.SHUTDOWN
        changed = dataclasses.replace(
            task,
            desired_state=max(task.desired_state, TaskState.SHUTDOWN),
            state=new_state,
            message=message,
            # A terminal task keeps its end time (restart back-off and windows count from it).
            updated_at=task.updated_at if task.state.terminal else self.now,
        )
        self.put(changed)
        return changed

    def set_status(self, service: Service, status: UpdateStatus) -> Service:
        self.statuses[service.id] = status
        changed = dataclasses.replace(service, update_status=status)
        self.work.services[service.id] = changed
        return changed
