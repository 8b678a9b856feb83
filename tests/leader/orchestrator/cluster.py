"""Test helpers: a cluster state with nodes and services, observations, and fake agents.

`Harness` drives the pure orchestrator like the leader would: reconcile, apply every command to
the ClusterState (each must be accepted), and lets fake agents move tasks forward.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from swarmlet.leader.orchestrator import Observed, counter_ids, reconcile
from swarmlet.leader.scheduler import ObservedNode
from swarmlet.state.commands import (
    AddNode,
    Command,
    CreateService,
    InitCluster,
    RemoveService,
    UpdateNode,
    UpdateService,
)
from swarmlet.state.machine import ClusterState
from swarmlet.state.model import (
    Availability,
    Node,
    Resources,
    Role,
    Service,
    ServiceSpec,
    Task,
    TaskState,
)
from swarmlet.state.observed import TaskObservation

GIB = 1 << 30
CPU = 1_000_000_000
DEFAULT_RESOURCES = Resources(4 * CPU, 8 * GIB)


def node_id(i: int) -> str:
    return f"n{i:02d}"


def make_state(
    nodes: int = 3,
    *,
    labels: dict[int, dict[str, str]] | None = None,
    resources: Resources = DEFAULT_RESOURCES,
) -> ClusterState:
    state = ClusterState()
    assert state.apply(InitCluster("c1", 0.0, b"wt", b"mt")).ok
    for i in range(1, nodes + 1):
        add_node(state, i, labels=(labels or {}).get(i, {}), resources=resources)
    return state


def add_node(
    state: ClusterState,
    i: int,
    *,
    labels: dict[str, str] | None = None,
    resources: Resources = DEFAULT_RESOURCES,
    role: Role = Role.WORKER,
) -> str:
    node = Node(
        id=node_id(i),
        name=f"host{i}",
        addr=f"10.0.0.{i}:7946",
        publish_addr=f"10.0.0.{i}",
        role=role,
        labels=labels or {},
        resources=resources,
        sealed_manager_key=b"blob" if role is Role.MANAGER else b"",  # a manager's needs one
    )
    assert state.apply(AddNode(node)).ok
    return node.id


def add_service(state: ClusterState, name: str = "web", **spec: object) -> Service:
    service = Service(
        id=f"s-{name}",
        spec=ServiceSpec(name=name, image="busybox", **spec),  # type: ignore[arg-type]
    )
    result = state.apply(CreateService(service))
    assert result.ok, result.error
    return state.services[service.id]


def all_ready(state: ClusterState, *down: str) -> dict[str, ObservedNode]:
    return {nid: ObservedNode(nid, ready=nid not in down) for nid in state.nodes}


def active(state: ClusterState, service_id: str) -> list[Task]:
    """Tasks desired running and not terminal."""
    return [
        t
        for t in state.tasks_of(service_id)
        if t.desired_state is TaskState.RUNNING and not t.state.terminal
    ]


class Harness:
    """The leader's loop with fake agents, on a virtual clock."""

    def __init__(self, state: ClusterState, *, now: float = 100.0) -> None:
        self.state = state
        self.now = now
        self.ids = counter_ids()
        self.down: set[str] = set()
        self.unknown: set[str] = set()
        self.tasks: dict[str, TaskObservation] = {}
        self.failing_nodes: set[str] = set()  # agents there fail every task they start
        self.capacity: dict[str, Resources] = {}  # what gossip says a node has, if it says

    # ------------------------------------------------------------------------- observations

    def observed(self) -> Observed:
        nodes = {
            nid: ObservedNode(
                nid, ready=nid not in self.down, total=self.capacity.get(nid), changed_at=0.0
            )
            for nid in self.state.nodes
            if nid not in self.unknown
        }
        return Observed(nodes=nodes, tasks=dict(self.tasks))

    def observe(self, task_id: str, state: TaskState, **kw: object) -> None:
        self.tasks[task_id] = TaskObservation(task_id, state, since=self.now, **kw)  # type: ignore[arg-type]

    # ------------------------------------------------------------------------- the loop

    def reconcile(self) -> list[Command]:
        commands = reconcile(self.state, self.observed(), self.now, self.ids)
        for command in commands:
            result = self.state.apply(command)
            assert result.ok, (command, result.error)
        return commands

    def agents(self) -> None:
        """Every agent on a ready node starts its assigned tasks and stops retired ones."""
        for task in sorted(self.state.tasks.values(), key=lambda t: t.id):
            if not task.node_id or task.node_id in self.down:
                continue
            obs = self.tasks.get(task.id)
            seen = obs.state if obs else task.state
            if seen.terminal:
                continue
            if task.desired_state > TaskState.RUNNING:
                if task.state >= TaskState.ASSIGNED:
                    self.observe(task.id, TaskState.SHUTDOWN)
            elif task.state >= TaskState.ASSIGNED and seen < TaskState.RUNNING:
                if task.node_id in self.failing_nodes:
                    self.observe(task.id, TaskState.FAILED, error="exit 1")
                else:
                    self.observe(task.id, TaskState.RUNNING)

    def settle(self, rounds: int = 10, dt: float = 1.0) -> None:
        for _ in range(rounds):
            self.reconcile()
            self.agents()
            self.now += dt

    def fail(self, task_id: str, state: TaskState = TaskState.FAILED) -> None:
        self.observe(task_id, state, error="exit 1")

    # ------------------------------------------------------------------------- the user

    def update_spec(self, service_id: str, **changes: object) -> Service:
        service = self.state.services[service_id]
        spec = dataclasses.replace(service.spec, **changes)  # type: ignore[arg-type]
        result = self.state.apply(UpdateService(service_id, spec, updated_at=self.now))
        assert result.ok, result.error
        return self.state.services[service_id]

    def set_availability(self, nid: str, availability: Availability) -> None:
        assert self.state.apply(UpdateNode(nid, availability=availability)).ok

    def remove_service(self, service_id: str) -> None:
        assert self.state.apply(RemoveService(service_id, self.now)).ok

    def running(self, service_id: str) -> list[Task]:
        """Tasks desired running that agents report running."""
        return [
            t
            for t in self.state.tasks_of(service_id)
            if t.desired_state is TaskState.RUNNING
            and (obs := self.tasks.get(t.id)) is not None
            and obs.state is TaskState.RUNNING
        ]

    def placement(self, service_id: str) -> dict[str, int]:
        counts: dict[str, int] = {}
        for t in self.running(service_id):
            counts[t.node_id] = counts.get(t.node_id, 0) + 1
        return dict(sorted(counts.items()))


def ids_of(tasks: Iterable[Task]) -> list[str]:
    return [t.id for t in tasks]
