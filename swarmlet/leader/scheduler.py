"""Pure placement: which node runs each pending task, or why none can.

Owns: the filter pipeline (Swarm's `manager/scheduler/filter.go`), spread scoring and placement
preferences (swarmkit `scheduler.go`, `scheduleNTasksOnSubtree`). Constraints and preferences are
parsed and matched by `state.constraints`, since they are part of the spec. Must not know: Raft,
the network, Docker, the clock.

Filters, in order; a node is counted against the first one that rejects it, and the explanation of
a task that stays pending lists the counts ("no suitable node (2 nodes lack memory; 1 node is
draining; 1 node is down)"):

1. ready: the gossip verdict (`ObservedNode.ready`). A node gossip has not reported yet is not
   ready ("status unknown").
2. availability: only `active` nodes take new tasks (`pause` and `drain` do not).
3. constraints: `node.id`, `node.hostname` (the node's name, which defaults to its host name),
   `node.role`, `node.platform.os` (always "linux"), `node.labels.KEY`, with `==` and `!=`. Values
   compare case-insensitively and a missing label is "" (as swarmkit). swarmlet records no engine
   labels and no architecture, so `engine.labels.KEY` and `node.platform.arch` never match, with
   either operator: a service asking for them stays pending and says why, rather than landing on
   a node that was never checked. This is where swarmlet differs from Swarm.
4. resources: the service's reservations against the node's capacity minus the reservations of
   the tasks already on it (not terminal). Capacity is what the node reports through gossip
   (`ObservedNode.total`), else what the node recorded when it joined; 0 means unknown and does
   not limit. `ObservedNode.free` is not used: like Swarm, placement counts reservations, not load.
   Generic resources (`state.generic_resources`) come from the node's record only, and unlike CPU
   and memory, a node that advertises none of a kind has none: a task placed there is given
   the lowest free ids of each named kind it reserves (`Decision.resources`, recorded on the
   task), which no other task holds until it is terminal.
5. host ports: a `mode=host` published port must be free on the node: not used by another task
   there, nor by a non-swarmlet process the agent reported.
6. max replicas per node: tasks of the service desired running on the node.

Spread (swarmkit's): fewest tasks of this service on the node, then fewest tasks overall, then the
node id (deterministic). Placement preferences (`spread=node.labels.X` or `node.labels.X`) first
spread over the values of each label in turn (a tree of preferences; nodes missing the label form
their own group), then over the nodes of the chosen leaf.

Speed: tasks with identical requirements (same service, same pinned node) form a group. The static
filters (1-3) run once per group and node; the dynamic ones (4-6) can only get worse as a group's
tasks are placed, so a node that fails one is dropped from the group's heap for good. A batch of T
tasks over N nodes costs O(N) per group plus O(T log N).

Tasks with a `node_id` already set but not yet assigned (global services) are pinned: only that
node is considered. Requirements come from the service's current spec.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from swarmlet.errors import UsageError
from swarmlet.state import generic_resources
from swarmlet.state.constraints import Constraint, parse_constraints, preference_label
from swarmlet.state.machine import ClusterState
from swarmlet.state.model import (
    Availability,
    NamedResource,
    Node,
    Resources,
    Service,
    ServiceSpec,
    Task,
    TaskState,
)
from swarmlet.state.specparse import MAX_PLACEMENT_PREFERENCES

# ------------------------------------------------------------------------------- observations


@dataclass(frozen=True, slots=True)
class ObservedNode:
    """What gossip says about a node right now (never written through Raft)."""

    node_id: str
    ready: bool
    total: Resources | None = None  # capacity as reported by the agent
    free: Resources | None = None  # informational: Swarm schedules on reservations
    host_ports_in_use: frozenset[tuple[int, str]] = frozenset()  # (port, protocol), non-swarmlet
    changed_at: float = 0.0  # when `ready` last changed (seconds, the driver's clock)


@dataclass(frozen=True, slots=True)
class Decision:
    """The scheduler's answer for one task: a node, or "" and why not."""

    task_id: str
    node_id: str
    message: str = ""
    resources: tuple[NamedResource, ...] = ()  # named generic resources given on `node_id`


# ------------------------------------------------------------------------------- explanations

# reason key -> (singular, plural); "{n}" is the node count.
_REASONS: dict[str, tuple[str, str]] = {
    "down": ("{n} node is down", "{n} nodes are down"),
    "unknown": ("{n} node has not reported its status", "{n} nodes have not reported their status"),
    "paused": ("{n} node is paused", "{n} nodes are paused"),
    "draining": ("{n} node is draining", "{n} nodes are draining"),
    "constraints": (
        "{n} node does not satisfy the constraints",
        "{n} nodes do not satisfy the constraints",
    ),
    "cpu": ("{n} node lacks CPU", "{n} nodes lack CPU"),
    "memory": ("{n} node lacks memory", "{n} nodes lack memory"),
    "generic": (
        "{n} node has insufficient generic resources {detail}",
        "{n} nodes have insufficient generic resources {detail}",
    ),
    "port": ("{n} node has host port {detail} in use", "{n} nodes have host port {detail} in use"),
    "max_replicas": (
        "{n} node already runs the maximum replicas per node ({detail})",
        "{n} nodes already run the maximum replicas per node ({detail})",
    ),
}
_FILTER_ORDER = tuple(_REASONS)


def explain(failures: Mapping[str, int]) -> str:
    """ "no suitable node (2 nodes lack memory; 1 node is draining; 1 node is down)".

    Keys are reason names, optionally with a detail after a colon ("port:8080/tcp"). Most
    frequent first; among equals, the later (more specific) filter first.
    """
    if not failures:
        return "no suitable node (no nodes in the cluster)"

    def rank(key: str) -> tuple[int, int, str]:
        return (-failures[key], -_FILTER_ORDER.index(key.split(":", 1)[0]), key)

    parts = []
    for key in sorted(failures, key=rank):
        name, _, detail = key.partition(":")
        singular, plural = _REASONS[name]
        n = failures[key]
        parts.append((singular if n == 1 else plural).format(n=n, detail=detail))
    return f"no suitable node ({'; '.join(parts)})"


# ------------------------------------------------------------------------------- node view


def occupies(task: Task) -> bool:
    """A task holds its node's resources and ports from assignment until it is terminal (a
    pinned global task waiting for its node does not hold anything yet)."""
    return bool(task.node_id) and TaskState.ASSIGNED <= task.state <= TaskState.RUNNING


def is_active(task: Task) -> bool:
    """A task counted for spread and max-replicas: on a node, desired running, not terminal."""
    return occupies(task) and task.desired_state <= TaskState.RUNNING


def host_ports(spec: ServiceSpec) -> tuple[tuple[int, str], ...]:
    return tuple((p.published, p.protocol) for p in spec.ports if p.mode == "host" and p.published)


class _NodeInfo:
    """Per-call, mutable tallies for one node; updated as the batch is placed. Started from a
    `NodeTallies` entry, it shares that entry's per-service counts until it first writes them."""

    __slots__ = (
        "_own_by_service",
        "_own_generic",
        "by_service",
        "cap_cpu",
        "cap_mem",
        "node",
        "observed",
        "ports",
        "reserved_cpu",
        "reserved_mem",
        "total",
        "used_discrete",
        "used_named",
    )

    def __init__(
        self, node: Node, observed: ObservedNode | None, tally: _Tally | None = None
    ) -> None:
        self.node = node
        self.observed = observed
        reported = observed.total if observed is not None else None
        self.cap_cpu = (reported.nano_cpus if reported else 0) or node.resources.nano_cpus
        self.cap_mem = (reported.memory_bytes if reported else 0) or node.resources.memory_bytes
        # A multiset, as `_Tally.ports`: in a handover two tasks hold one port for a moment,
        # and the port is free only when neither does (a set freed it with the first to go).
        self.ports: Counter[tuple[int, str]] = Counter(
            observed.host_ports_in_use if observed is not None else ()
        )
        if tally is None:
            self.total = 0
            self.by_service: dict[str, int] = {}
            self._own_by_service = True
            self.reserved_cpu = 0
            self.reserved_mem = 0
            self.used_discrete: Counter[str] = Counter()
            self.used_named: Counter[NamedResource] = Counter()
            self._own_generic = True
        else:
            self.total = tally.total
            self.by_service = tally.by_service
            self._own_by_service = False
            self.reserved_cpu = tally.reserved_cpu
            self.reserved_mem = tally.reserved_mem
            self.ports.update(tally.ports)
            self.used_discrete = tally.used_discrete
            self.used_named = tally.used_named
            self._own_generic = False

    def _counts(self) -> dict[str, int]:
        if not self._own_by_service:
            self.by_service = dict(self.by_service)
            self._own_by_service = True
        return self.by_service

    def _hold_generic(self, spec: ServiceSpec, named: tuple[NamedResource, ...], sign: int) -> None:
        if not spec.generic_resources and not named:
            return
        if not self._own_generic:
            self.used_discrete = self.used_discrete.copy()
            self.used_named = self.used_named.copy()
            self._own_generic = True
        _count_generic(
            self.used_discrete,
            self.used_named,
            generic_resources.held_discrete(spec.generic_resources, named),
            named,
            sign,
        )

    def add(
        self,
        service_id: str,
        spec: ServiceSpec | None,
        *,
        active: bool,
        named: tuple[NamedResource, ...] = (),
    ) -> None:
        if spec is not None:
            self.reserved_cpu += spec.reservations.nano_cpus
            self.reserved_mem += spec.reservations.memory_bytes
            self.ports.update(host_ports(spec))
            self._hold_generic(spec, named, 1)
        if active:
            self.total += 1
            counts = self._counts()
            counts[service_id] = counts.get(service_id, 0) + 1

    def remove(
        self,
        service_id: str,
        spec: ServiceSpec | None,
        *,
        active: bool,
        named: tuple[NamedResource, ...] = (),
    ) -> None:
        """The inverse of `add`."""
        if spec is not None:
            self.reserved_cpu -= spec.reservations.nano_cpus
            self.reserved_mem -= spec.reservations.memory_bytes
            for port in host_ports(spec):
                self.ports[port] -= 1
                if self.ports[port] <= 0:
                    del self.ports[port]
            self._hold_generic(spec, named, -1)
        if active:
            self.total -= 1
            counts = self._counts()
            left = counts[service_id] - 1
            if left:
                counts[service_id] = left
            else:
                del counts[service_id]


def _count_generic(
    used_discrete: Counter[str],
    used_named: Counter[NamedResource],
    discrete: tuple[tuple[str, int], ...],
    named: tuple[NamedResource, ...],
    sign: int,
) -> None:
    """Add (`sign` 1) or take back (-1) what one task holds; zero counts are deleted, so equal
    holdings compare equal however they were reached."""
    for kind, n in discrete:
        used_discrete[kind] += sign * n
        if used_discrete[kind] == 0:
            del used_discrete[kind]
    for r in named:
        used_named[r] += sign
        if used_named[r] == 0:
            del used_named[r]


# ------------------------------------------------------------------------------- across passes


@dataclass(frozen=True, slots=True)
class _Held:
    """What one task adds to its node's tally (kept to take it back when the task changes)."""

    node_id: str
    service_id: str
    cpu: int
    mem: int
    ports: tuple[tuple[int, str], ...]
    active: bool
    discrete: tuple[tuple[str, int], ...] = ()  # generic resources held by count
    named: tuple[NamedResource, ...] = ()  # and by id


@dataclass
class _Tally:
    total: int = 0
    by_service: dict[str, int] = field(default_factory=dict)
    reserved_cpu: int = 0
    reserved_mem: int = 0
    ports: Counter[tuple[int, str]] = field(default_factory=Counter)  # a multiset: two tasks
    # may hold one port for a moment (a handover); the port is free when neither does
    used_discrete: Counter[str] = field(default_factory=Counter)  # generic resources, by kind
    used_named: Counter[NamedResource] = field(default_factory=Counter)


class NodeTallies:
    """Every node's tallies (reservations, host ports, active tasks per service) for one
    `ClusterState`, kept current across orchestration passes by `advance`, which reads the
    state's change journal: counting 100,000 tasks anew costs the leader half a second per pass,
    following a change costs what the change touched (issue #16).

    A `Scheduler` started from it (`Scheduler(state, observed, tallies)`) counts exactly what a
    fresh count of that state would (tests compare them); it copies a node's counts only when it
    places on that node, so the tallies themselves stay those of the committed state.
    """

    def __init__(self, state: ClusterState) -> None:
        self.mark = state.journal.mark()
        self.version = 0  # grows whenever `advance` changes a tally (what a task holds)
        self.nodes: dict[str, _Tally] = {nid: _Tally() for nid in state.nodes}
        self._held: dict[str, _Held] = {}
        for task in state.tasks.values():
            self._count(state, task.id)

    def copy(self) -> NodeTallies:
        """An independent copy (to measure a pass without disturbing the kept tallies)."""
        other = NodeTallies.__new__(NodeTallies)
        other.mark = self.mark
        other.version = self.version
        other.nodes = {
            nid: _Tally(
                t.total,
                dict(t.by_service),
                t.reserved_cpu,
                t.reserved_mem,
                t.ports.copy(),
                t.used_discrete.copy(),
                t.used_named.copy(),
            )
            for nid, t in self.nodes.items()
        }
        other._held = dict(self._held)
        return other

    def advance(self, state: ClusterState) -> bool:
        """Catch up with `state`'s changes since the last call; False if the journal no longer
        knows them (build anew)."""
        changes = state.journal.since(self.mark)
        if changes is None:
            return False
        self.mark = state.journal.mark()
        recount: set[str] = set(changes.tasks)
        for nid in changes.nodes:
            if nid not in state.nodes:
                self.nodes.pop(nid, None)
                continue
            self.nodes.setdefault(nid, _Tally())
            recount.update(state.tasks.on_node(nid))
        for service_id in changes.services:  # reservations and ports come from the spec
            recount.update(state.tasks.of_service(service_id))
        for task_id in recount:
            if self._count(state, task_id):
                self.version += 1
        return True

    def _count(self, state: ClusterState, task_id: str) -> bool:
        """Count what the task holds now instead of what it held; True if that changed."""
        old = self._held.pop(task_id, None)
        if old is not None and (tally := self.nodes.get(old.node_id)) is not None:
            tally.reserved_cpu -= old.cpu
            tally.reserved_mem -= old.mem
            tally.ports.subtract(old.ports)
            for port in old.ports:
                if tally.ports[port] <= 0:
                    del tally.ports[port]
            _count_generic(tally.used_discrete, tally.used_named, old.discrete, old.named, -1)
            if old.active:
                tally.total -= 1
                left = tally.by_service[old.service_id] - 1
                if left:
                    tally.by_service[old.service_id] = left
                else:
                    del tally.by_service[old.service_id]
        task = state.tasks.get(task_id)
        if task is None or not occupies(task) or task.node_id not in self.nodes:
            return old is not None
        service = state.services.get(task.service_id)
        spec = service.spec if service is not None else None
        held = _Held(
            task.node_id,
            task.service_id,
            spec.reservations.nano_cpus if spec else 0,
            spec.reservations.memory_bytes if spec else 0,
            host_ports(spec) if spec else (),
            is_active(task),
            generic_resources.held_discrete(spec.generic_resources, task.assigned_resources)
            if spec and spec.generic_resources
            else (),
            task.assigned_resources if spec else (),
        )
        self._held[task_id] = held
        tally = self.nodes[task.node_id]
        tally.reserved_cpu += held.cpu
        tally.reserved_mem += held.mem
        tally.ports.update(held.ports)
        _count_generic(tally.used_discrete, tally.used_named, held.discrete, held.named, 1)
        if held.active:
            tally.total += 1
            tally.by_service[held.service_id] = tally.by_service.get(held.service_id, 0) + 1
        return held != old


def static_rejection(
    node: Node, observed: ObservedNode | None, constraints: Sequence[Constraint]
) -> str | None:
    """The first of filters 1-3 that rejects the node, or None. Shared with the orchestrator
    (global services' eligibility, moving tasks off nodes that no longer match)."""
    if observed is None:
        return "unknown"
    if not observed.ready:
        return "down"
    if node.availability is Availability.PAUSE:
        return "paused"
    if node.availability is Availability.DRAIN:
        return "draining"
    if not all(c.matches(node) for c in constraints):
        return "constraints"
    return None


def eligible_nodes(
    nodes: Mapping[str, Node],
    observed: Mapping[str, ObservedNode],
    constraints: Sequence[Constraint],
) -> list[str]:
    """The ids of the nodes no static filter rejects, in id order: where a global service (or
    a global job's run) wants a task, and where rebalancing may move one."""
    return [
        node_id
        for node_id, node in sorted(nodes.items())
        if static_rejection(node, observed.get(node_id), constraints) is None
    ]


def _dynamic_rejection(
    info: _NodeInfo, service_id: str, spec: ServiceSpec, ports: Sequence[tuple[int, str]]
) -> str | None:
    want = spec.reservations
    if want.nano_cpus and info.cap_cpu and info.reserved_cpu + want.nano_cpus > info.cap_cpu:
        return "cpu"
    if want.memory_bytes and info.cap_mem and info.reserved_mem + want.memory_bytes > info.cap_mem:
        return "memory"
    if spec.generic_resources and (
        kind := generic_resources.shortage(
            info.node.resources, spec.generic_resources, info.used_discrete, info.used_named
        )
    ):
        return f"generic:{kind}"
    for port, proto in ports:
        if (port, proto) in info.ports:
            return f"port:{port}/{proto}"
    limit = spec.placement.max_replicas_per_node
    if limit and info.by_service.get(service_id, 0) >= limit:
        return f"max_replicas:{limit}"
    return None


# ------------------------------------------------------------------------------- preferences


@dataclass
class _Branch:
    """A subtree of the preference tree: the nodes sharing the values of the labels above."""

    count: int = 0  # tasks of the service in this subtree
    children: dict[str, _Branch] = field(default_factory=dict)
    heap: list[tuple[int, int, str]] = field(default_factory=list)  # leaves only
    exhausted: bool = False


# ------------------------------------------------------------------------------- schedule


def _pending_for_scheduling(task: Task) -> bool:
    return task.desired_state is TaskState.RUNNING and task.state <= TaskState.PENDING


def schedule(
    state: ClusterState, observed: Mapping[str, ObservedNode], tasks: Sequence[Task]
) -> list[Decision]:
    """One decision per task, in input order. Tasks must be desired RUNNING and not yet
    assigned (state NEW or PENDING); any other task gets its current node back unchanged."""
    return Scheduler(state, observed).schedule(tasks)


class Scheduler:
    """The node tallies of one state, kept up to date across several batches (the orchestrator
    probes placements and then schedules, in one pass, without recounting every task)."""

    def __init__(
        self,
        state: ClusterState,
        observed: Mapping[str, ObservedNode],
        tallies: NodeTallies | None = None,
    ) -> None:
        """`tallies`: the counts of `state`'s tasks, if the caller keeps them (`NodeTallies`);
        else every task is counted here."""
        self.state = state
        if tallies is not None:
            self.infos = {
                nid: _NodeInfo(node, observed.get(nid), tallies.nodes.get(nid))
                for nid, node in sorted(state.nodes.items())
            }
            return
        self.infos = {
            nid: _NodeInfo(node, observed.get(nid)) for nid, node in sorted(state.nodes.items())
        }
        for task in state.tasks.values():
            if occupies(task) and task.node_id in self.infos:
                service = state.services.get(task.service_id)
                self.infos[task.node_id].add(
                    task.service_id,
                    service.spec if service else None,
                    active=is_active(task),
                    named=task.assigned_resources,
                )

    def schedule(self, tasks: Sequence[Task]) -> list[Decision]:
        """Place a batch (see `schedule`); placements count against the nodes from now on."""
        groups: dict[tuple[str, str], list[int]] = {}
        decisions: list[Decision | None] = [None] * len(tasks)
        for i, task in enumerate(tasks):
            if not _pending_for_scheduling(task):
                decisions[i] = Decision(task.id, task.node_id)
                continue
            groups.setdefault((task.service_id, task.node_id), []).append(i)

        for (service_id, pinned), indexes in groups.items():
            service = self.state.services.get(service_id)
            if service is None:
                for i in indexes:
                    decisions[i] = Decision(tasks[i].id, "", f"no service {service_id}")
                continue
            placed = _schedule_group(service, self.infos, pinned, len(indexes))
            for i, (node_id, message, named) in zip(indexes, placed, strict=True):
                decisions[i] = Decision(tasks[i].id, node_id, message, named)
        return [d for d in decisions if d is not None]

    def probe(self, task: Task) -> Decision:
        """Where `task` would go, without counting it."""
        [decision] = self.schedule([task])
        self.unplace(task, decision)
        return decision

    def unplace(self, task: Task, decision: Decision) -> None:
        """Take back what `schedule` counted for `task`, a task waiting for a node, when it
        gave it `decision` (a task that was not waiting got its node back uncounted)."""
        service = self.state.services.get(task.service_id)
        if decision.node_id and service is not None:
            self.infos[decision.node_id].remove(
                task.service_id, service.spec, active=True, named=decision.resources
            )

    def changed(self, old: Task | None, new: Task | None) -> None:
        """Keep the tallies current when a task is created, changed or removed (`new` None)
        outside `schedule`."""
        for task, sign in ((old, -1), (new, 1)):
            if task is None or not occupies(task):
                continue
            info = self.infos.get(task.node_id)
            service = self.state.services.get(task.service_id)
            if info is None:
                continue
            spec = service.spec if service is not None else None
            held = task.assigned_resources
            if sign > 0:
                info.add(task.service_id, spec, active=is_active(task), named=held)
            else:
                info.remove(task.service_id, spec, active=is_active(task), named=held)


_Placement = tuple[str, str, tuple[NamedResource, ...]]


def _schedule_group(
    service: Service, infos: dict[str, _NodeInfo], pinned: str, count: int
) -> list[_Placement]:
    """Place `count` identical tasks of `service`; (node_id, "", named ids given) or
    ("", explanation, ()) each."""
    spec = service.spec
    try:
        constraints = parse_constraints(spec.placement.constraints)
    except UsageError as exc:
        return [("", str(exc), ())] * count
    if pinned:
        candidates = [infos[pinned]] if pinned in infos else []
    else:
        candidates = list(infos.values())
    ports = host_ports(spec)
    failures: Counter[str] = Counter()
    feasible: list[_NodeInfo] = []
    for info in candidates:
        reason = static_rejection(info.node, info.observed, constraints) or _dynamic_rejection(
            info, service.id, spec, ports
        )
        if reason is None:
            feasible.append(info)
        else:
            failures[reason] += 1
    if pinned and pinned not in infos:
        return [("", f"node {pinned} is not in the cluster", ())] * count

    # At most MAX_PLACEMENT_PREFERENCES levels (the tree is walked recursively), whatever a
    # state an older release wrote holds.
    preferences = spec.placement.preferences[:MAX_PLACEMENT_PREFERENCES]
    labels = [lbl for p in preferences if (lbl := preference_label(p)) is not None]
    root = _Branch()
    for info in feasible:
        branch = root
        n = info.by_service.get(service.id, 0)
        branch.count += n
        for label in labels:
            branch = branch.children.setdefault(info.node.labels.get(label, ""), _Branch())
            branch.count += n
        branch.heap.append((n, info.total, info.node.id))
    _heapify_leaves(root)

    out: list[_Placement] = []
    for _ in range(count):
        placed = _place_one(root, infos, service, ports, failures)
        if placed is None:
            # Every node is out of the running for this group now and `failures` is final:
            # the rest of the group stays pending for the same reason (explained once).
            out.extend([("", explain(failures), ())] * (count - len(out)))
            break
        out.append((placed[0], "", placed[1]))
    return out


def _heapify_leaves(branch: _Branch) -> None:
    heapq.heapify(branch.heap)
    for child in branch.children.values():
        _heapify_leaves(child)


def _place_one(
    root: _Branch,
    infos: dict[str, _NodeInfo],
    service: Service,
    ports: Sequence[tuple[int, str]],
    failures: Counter[str],
) -> tuple[str, tuple[NamedResource, ...]] | None:
    spec = service.spec
    while not root.exhausted:
        # Walk down the preference tree: at each level the branch with the fewest tasks of the
        # service (swarmkit: spread over the label's values), ties by value.
        path = [root]
        branch = root
        while branch.children:
            live = [(b.count, value, b) for value, b in branch.children.items() if not b.exhausted]
            if not live:
                branch.exhausted = True
                break
            branch = min(live, key=lambda entry: (entry[0], entry[1]))[2]
            path.append(branch)
        else:
            placed = _pop_leaf(branch, infos, service, spec, ports, failures)
            if placed is not None:
                for b in path:
                    b.count += 1
                return placed
            branch.exhausted = True
        # An exhausted branch may leave its parents without live children: re-check from the top.
        for b in reversed(path[:-1]):
            if all(c.exhausted for c in b.children.values()):
                b.exhausted = True
    return None


def _pop_leaf(
    leaf: _Branch,
    infos: dict[str, _NodeInfo],
    service: Service,
    spec: ServiceSpec,
    ports: Sequence[tuple[int, str]],
    failures: Counter[str],
) -> tuple[str, tuple[NamedResource, ...]] | None:
    heap = leaf.heap
    while heap:
        _, _, node_id = heapq.heappop(heap)
        info = infos[node_id]
        reason = _dynamic_rejection(info, service.id, spec, ports)
        if reason is not None:
            failures[reason] += 1  # full for this group from now on: dropped from the heap
            continue
        named = generic_resources.claim(
            info.node.resources, spec.generic_resources, info.used_named
        )
        info.add(service.id, spec, active=True, named=named)
        heapq.heappush(heap, (info.by_service[service.id], info.total, node_id))
        return node_id, named
    return None
