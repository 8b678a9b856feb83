"""What a worker holds of the cluster state, and how a manager keeps it current (issue #16).

A worker is not a Raft replica: a manager serves it, on a session (`node.worker_sessions`), the
part of its own applied state the worker needs, first whole, then as changes. This module is the
pure part: which records are in a worker's view, in which form, and the messages that carry them.

What a worker's view holds (swarmkit's dispatcher gives a worker its assignments the same way):
  * every node's record (addresses, roles, identity keys, what is sealed to each node alone:
    its cluster key, a manager's copy of the managers' key): what the worker's transport,
    gossip and peer policy check peers against; `removed_nodes` too; its own port errors;
  * its own tasks, and in full the services they belong to, with the configs those reference
    (a secret's value is never in a view: the worker asks a manager for it per task, as before);
  * for the routing mesh, every other service that has an ingress port or a network, *redacted*
    to what routes need (`route_view`: name, ports, networks, virtual addresses: no image,
    command, environment, labels, mounts, secrets or configs), and that service's tasks desired
    running with their reported statuses: the endpoints its proxy may send connections to.

Nothing else: no other service's spec, no sealed token or secret, no other node's port
errors, no update status. A change costs a worker what concerns it: a task or a status is
one record in one update to each worker whose view holds it (an update carries records, not a
service's whole endpoint list: that is the EndpointSlice property, at the granularity of one
endpoint's task), and nothing at all to the others.

Must not know: the network, Raft, the clock.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

from swarmlet.state.indexes import Changes
from swarmlet.state.machine import ClusterState
from swarmlet.state.model import Node, Secret, Service, ServiceSpec, Task, TaskState
from swarmlet.state.observed import TaskObservation, status_bytes
from swarmlet.wire import catalog
from swarmlet.wire import codec as wire

# Records per `ViewUpdate`: a full view of 100,000 tasks goes in frames of at most a few hundred
# kilobytes, each decoded and applied on its own (no frame near the transport's limit).
RECORDS_PER_UPDATE = 500
# ... and about this many bytes at most (one record may be larger): records of a view can be
# large (a config of 1 MB, a status of a task publishing thousands of ports), and 500 of them
# made a frame over the 64 MiB a worker takes, which broke every session of that worker (review).
BYTES_PER_UPDATE = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class SessionHello:
    """A worker's first frame on a session stream: serve me my view. Who "me" is comes from the
    stream's certificate, never from this message."""

    protocol: int = 1  # of the view; a manager refuses one it does not know


@dataclass(frozen=True, slots=True)
class ViewCluster:
    """The cluster-wide values a worker's view holds: what its peer checks need."""

    cluster_id: str
    created_at: float
    managers_public_key: bytes
    removed_nodes: dict[str, float] = field(default_factory=dict)
    port_errors: dict[str, str] = field(default_factory=dict)  # the worker's own, as committed


@dataclass(frozen=True, slots=True)
class ViewUpdate:
    """Records to put into, and keys to take out of, a worker's view. A full view is a run of
    updates, the first with `reset` (drop everything held first); the view reflects the
    manager's state at `index` (a Raft index) once an update with `complete` is applied."""

    index: int
    leader_id: str = ""  # the leader as the serving manager knows it ("" for none)
    in_raft: bool = False  # whether the worker is in the serving manager's Raft configuration
    reset: bool = False
    complete: bool = True
    cluster: ViewCluster | None = None  # None: unchanged
    nodes: tuple[Node, ...] = ()
    services: tuple[Service, ...] = ()
    tasks: tuple[Task, ...] = ()
    statuses: tuple[TaskObservation, ...] = ()
    configs: tuple[Secret, ...] = ()
    gone_nodes: tuple[str, ...] = ()
    gone_services: tuple[str, ...] = ()
    gone_tasks: tuple[str, ...] = ()
    gone_statuses: tuple[str, ...] = ()
    gone_configs: tuple[str, ...] = ()

    def records(self) -> int:
        return (
            len(self.nodes)
            + len(self.services)
            + len(self.tasks)
            + len(self.statuses)
            + len(self.configs)
            + len(self.gone_nodes)
            + len(self.gone_services)
            + len(self.gone_tasks)
            + len(self.gone_statuses)
            + len(self.gone_configs)
        )


WIRE_TYPES: tuple[type, ...] = (SessionHello, ViewCluster, ViewUpdate)  # only append
wire.register_all(catalog.STATE_WORKER_VIEW, WIRE_TYPES)


# ----------------------------------------------------------------------------- what is in a view


def is_routed(service: Service) -> bool:
    """Whether other nodes' proxies need the service: an ingress port, or a network on which
    it has a virtual address."""
    return any(p.mode == "ingress" for p in service.spec.ports) or bool(service.vip_indexes)


def route_view(service: Service) -> Service:
    """`service` with only what routes and name resolution read (`proxy.routes`,
    `executor.networks`)."""
    spec = service.spec
    return Service(
        id=service.id,
        spec=ServiceSpec(
            name=spec.name,
            image="",
            mode=spec.mode,
            ports=spec.ports,
            networks=spec.networks,
            stack=spec.stack,
        ),
        version=service.version,
        vip_indexes=dict(service.vip_indexes),
    )


def _cluster_key(state: ClusterState, node_id: str) -> tuple[object, ...]:
    """What `ViewCluster` is made of, cheaply compared (removed nodes are only ever added)."""
    errors = state.port_errors.get(node_id, {})
    return (
        state.cluster_id,
        state.created_at,
        state.managers_public_key,
        len(state.removed_nodes),
        errors,
    )


def _cluster(state: ClusterState, node_id: str) -> ViewCluster:
    return ViewCluster(
        state.cluster_id,
        state.created_at,
        state.managers_public_key,
        dict(state.removed_nodes),
        dict(state.port_errors.get(node_id, {})),
    )


# Forms a service takes in a view.
_FULL, _ROUTE = "full", "route"


@dataclass
class ViewChanges:
    """What a worker's view gains and loses, before it is cut into `ViewUpdate`s."""

    cluster: ViewCluster | None = None
    nodes: dict[str, Node] = field(default_factory=dict)
    services: dict[str, Service] = field(default_factory=dict)
    tasks: dict[str, Task] = field(default_factory=dict)
    statuses: dict[str, TaskObservation] = field(default_factory=dict)
    configs: dict[str, Secret] = field(default_factory=dict)
    gone_nodes: set[str] = field(default_factory=set)
    gone_services: set[str] = field(default_factory=set)
    gone_tasks: set[str] = field(default_factory=set)
    gone_statuses: set[str] = field(default_factory=set)
    gone_configs: set[str] = field(default_factory=set)

    def __bool__(self) -> bool:
        return any(
            (
                self.cluster,
                self.nodes,
                self.services,
                self.tasks,
                self.statuses,
                self.configs,
                self.gone_nodes,
                self.gone_services,
                self.gone_tasks,
                self.gone_statuses,
                self.gone_configs,
            )
        )


class ViewBuilder:
    """A manager's side of one worker's session: what the worker holds, and the updates that
    bring it to the manager's state. `changes` answers in time proportional to what changed
    (the state's change journal; a service's tasks are walked only when its routing changes),
    `full` in time proportional to the view."""

    def __init__(self, node_id: str) -> None:
        self.node_id = node_id
        self._state: ClusterState | None = None
        self._mark = 0
        self._cluster: tuple[object, ...] = ()
        self._forms: dict[str, str] = {}  # service id -> the form the worker holds
        self._routed: set[str] = set()  # services whose other nodes' tasks the worker holds
        self._tasks: dict[str, tuple[str, bool]] = {}  # task id held -> (service, on the worker)
        self._own: Counter[str] = Counter()  # service id -> the worker's own tasks of it held
        self._statuses: set[str] = set()
        self._configs: dict[str, set[str]] = {}  # service held in full -> the configs it uses
        self._config_users: Counter[str] = Counter()  # config id held -> services using it

    def full(self, state: ClusterState) -> ViewChanges:
        """Everything the worker's view holds now (sent with `reset`)."""
        self._state, self._mark = state, state.journal.mark()
        self._cluster = _cluster_key(state, self.node_id)
        self._forms, self._routed, self._tasks, self._own = {}, set(), {}, Counter()
        self._statuses, self._configs, self._config_users = set(), {}, Counter()
        out = ViewChanges(cluster=_cluster(state, self.node_id), nodes=dict(state.nodes))
        for task in state.tasks.on_node(self.node_id).values():
            self._hold_task(task, out)
        for service_id in state.services:
            self._place_service(state, service_id, out, changed=True)
        for task_id in self._tasks:
            if (status := state.task_status.get(task_id)) is not None:
                out.statuses[task_id] = status
                self._statuses.add(task_id)
        return out

    def changes(self, state: ClusterState) -> ViewChanges | None:
        """What changed in the worker's view since the last call; None if the builder cannot
        tell (another state object, after a snapshot was installed; a journal that forgot):
        the caller sends `full` instead."""
        if state is not self._state:
            return None
        found: Changes | None = state.journal.since(self._mark)
        if found is None:
            return None
        self._mark = state.journal.mark()
        out = ViewChanges()
        cluster = _cluster_key(state, self.node_id)
        if cluster != self._cluster:
            self._cluster, out.cluster = cluster, _cluster(state, self.node_id)
        for node_id in found.nodes:
            if (node := state.nodes.get(node_id)) is not None:
                out.nodes[node_id] = node
            else:
                out.gone_nodes.add(node_id)
        statuses = set(found.statuses)
        # A service whose tasks on this worker came or went may change form (the one a task
        # was held under too, should a task id ever move).
        recheck = found.services | set(found.tasks.values())
        recheck.update(self._tasks[t][0] for t in found.tasks if t in self._tasks)
        for task_id in found.tasks:
            task = state.tasks.get(task_id)
            if task is not None and self._wants_task(state, task):
                if task_id not in self._tasks:
                    statuses.add(task_id)  # entering the view: its status with it
                self._hold_task(task, out)
            elif task_id in self._tasks:
                self._drop_task(task_id, out)
        for service_id in recheck:
            self._place_service(state, service_id, out, changed=service_id in found.services)
        for task_id in statuses:
            status = state.task_status.get(task_id)
            if task_id in self._tasks and status is not None:
                out.statuses[task_id] = status
                self._statuses.add(task_id)
            elif task_id in self._statuses:
                out.gone_statuses.add(task_id)
                self._statuses.discard(task_id)
        return out

    # ------------------------------------------------------------------------------ internals

    def _wants_task(self, state: ClusterState, task: Task) -> bool:
        if task.node_id == self.node_id:
            return True
        service = state.services.get(task.service_id)
        return (
            service is not None and task.desired_state is TaskState.RUNNING and is_routed(service)
        )

    def _hold_task(self, task: Task, out: ViewChanges) -> None:
        own = task.node_id == self.node_id
        old = self._tasks.get(task.id)
        if old is not None and old[1]:
            self._own[old[0]] -= 1
        if own:
            self._own[task.service_id] += 1
        self._tasks[task.id] = (task.service_id, own)
        out.tasks[task.id] = task
        out.gone_tasks.discard(task.id)

    def _drop_task(self, task_id: str, out: ViewChanges) -> None:
        service_id, own = self._tasks.pop(task_id)
        if own:
            self._own[service_id] -= 1
        out.tasks.pop(task_id, None)
        out.gone_tasks.add(task_id)
        if task_id in self._statuses:
            self._statuses.discard(task_id)
            out.statuses.pop(task_id, None)
            out.gone_statuses.add(task_id)

    def _place_service(
        self, state: ClusterState, service_id: str, out: ViewChanges, *, changed: bool
    ) -> None:
        """Put the service into the view in the form it now takes there, or take it out; when
        its routing changed, its other nodes' tasks come or go with it."""
        service = state.services.get(service_id)
        held = self._forms.get(service_id)
        form = None
        if service is not None:
            form = _FULL if self._own[service_id] > 0 else _ROUTE if is_routed(service) else None
        if form is None:
            if held is not None:
                del self._forms[service_id]
                out.services.pop(service_id, None)
                out.gone_services.add(service_id)
        elif form != held or changed:
            assert service is not None
            self._forms[service_id] = form
            out.services[service_id] = service if form == _FULL else route_view(service)
            out.gone_services.discard(service_id)
        if form != held or changed:
            self._hold_configs(state, service_id, service if form == _FULL else None, out)
        routed = service is not None and is_routed(service)
        if routed != (service_id in self._routed):
            if routed:
                self._routed.add(service_id)
            else:
                self._routed.discard(service_id)
            self._recheck_tasks(state, service_id, out)

    def _recheck_tasks(self, state: ClusterState, service_id: str, out: ViewChanges) -> None:
        for task in state.tasks.of_service(service_id).values():
            wanted = self._wants_task(state, task)
            if wanted and task.id not in self._tasks:
                self._hold_task(task, out)
                if (status := state.task_status.get(task.id)) is not None:
                    out.statuses[task.id] = status
                    self._statuses.add(task.id)
            elif not wanted and task.id in self._tasks:
                self._drop_task(task.id, out)

    def _hold_configs(
        self, state: ClusterState, service_id: str, full: Service | None, out: ViewChanges
    ) -> None:
        """The configs a service held in full uses come with it, and each goes once no
        service held in full uses it (`full`: None for a service not held in full)."""
        wanted: set[str] = set()
        for ref in full.spec.configs if full is not None else ():
            config = state.secret_by_name(ref.name, is_config=True)
            if config is not None:
                wanted.add(config.id)
                if not self._config_users[config.id]:
                    out.configs[config.id] = config
                    out.gone_configs.discard(config.id)
        old = self._configs.pop(service_id, set())
        if wanted:
            self._configs[service_id] = wanted
        self._config_users.update(wanted - old)
        self._config_users.subtract(old - wanted)
        for config_id in old - wanted:
            if self._config_users[config_id] <= 0:
                del self._config_users[config_id]
                out.configs.pop(config_id, None)
                out.gone_configs.add(config_id)


def updates(
    changes: ViewChanges,
    *,
    index: int,
    leader_id: str,
    in_raft: bool,
    reset: bool,
    per_update: int = RECORDS_PER_UPDATE,
    bytes_per_update: int = BYTES_PER_UPDATE,
) -> Iterator[ViewUpdate]:
    """`changes` as wire messages of at most `per_update` records and about `bytes_per_update`
    bytes each (the last one `complete`): at least one, so that an empty full view or a bare
    index still travels."""
    c = changes
    records: list[tuple[str, object]] = [
        *(("nodes", v) for v in c.nodes.values()),
        *(("gone_nodes", k) for k in sorted(c.gone_nodes)),
        *(("configs", v) for v in c.configs.values()),
        *(("services", v) for v in c.services.values()),
        *(("gone_services", k) for k in sorted(c.gone_services)),
        *(("tasks", v) for v in c.tasks.values()),
        *(("gone_tasks", k) for k in sorted(c.gone_tasks)),
        *(("statuses", v) for v in c.statuses.values()),
        *(("gone_statuses", k) for k in sorted(c.gone_statuses)),
        *(("gone_configs", k) for k in sorted(c.gone_configs)),
    ]

    # Cut as it is sent (a chunk is weighed when the one before has gone), so that the weighing
    # of a large view is spread over the sends rather than done first, in one turn of the loop.
    def update(chunk: list[tuple[str, object]], first: bool, last: bool) -> ViewUpdate:
        fields: dict[str, list[object]] = {}
        for name, value in chunk:
            fields.setdefault(name, []).append(value)
        return ViewUpdate(
            index=index,
            leader_id=leader_id,
            in_raft=in_raft,
            reset=reset and first,
            complete=last,
            cluster=c.cluster if first else None,
            **{name: tuple(values) for name, values in fields.items()},  # type: ignore[arg-type]
        )

    chunk: list[tuple[str, object]] = []
    size, first = 0, True
    for record in records:
        weight = _record_bytes(record[1])
        if chunk and (len(chunk) == per_update or size + weight > bytes_per_update):
            yield update(chunk, first, last=False)
            chunk, size, first = [], 0, False
        chunk.append(record)
        size += weight
    yield update(chunk, first, last=True)


def _record_bytes(value: object) -> int:
    """About what `value` takes in a `ViewUpdate`, never much below: counted for the kinds whose
    size a node or a user sets freely (a status's endpoints and error, a task's message, a
    config), encoded for the few whose spec can be anything up to one write (nodes, services)."""
    if isinstance(value, str):  # an id of something gone
        return 16 + len(value)
    if isinstance(value, TaskObservation):
        return status_bytes(value)
    if isinstance(value, Task):
        return 256 + len(value.message) + len(value.error) + 64 * len(value.assigned_resources)
    if isinstance(value, Secret):
        labels = sum(len(k) + len(v) for k, v in value.labels.items())
        return 256 + len(value.name) + len(value.data) + labels
    return len(wire.encode(value))


# ------------------------------------------------------------------------------ the worker's side


def apply_update(state: ClusterState, update: ViewUpdate, node_id: str) -> None:
    """Bring a worker's view (a `ClusterState` no command is ever applied to) forward by one
    update. Removals first: a record that left and came back within one update is held."""
    if update.reset:
        state.nodes, state.services, state.tasks, state.task_status = {}, {}, {}, {}
        state.secrets = {}
    if update.cluster is not None:
        c = update.cluster
        state.cluster_id, state.created_at = c.cluster_id, c.created_at
        state.managers_public_key, state.removed_nodes = c.managers_public_key, c.removed_nodes
        state.port_errors = {node_id: c.port_errors} if c.port_errors else {}
    for key in update.gone_statuses:
        state.task_status.pop(key, None)
    for key in update.gone_tasks:
        state.tasks.pop(key, None)
    for key in update.gone_services:
        state.services.pop(key, None)
    for key in update.gone_nodes:
        state.nodes.pop(key, None)
    for key in update.gone_configs:
        state.secrets.pop(key, None)
    for node in update.nodes:
        state.nodes[node.id] = node
    for config in update.configs:
        state.secrets[config.id] = config
    for service in update.services:
        state.services[service.id] = service
    for task in update.tasks:
        state.tasks[task.id] = task
    for status in update.statuses:
        state.task_status[status.task_id] = status
