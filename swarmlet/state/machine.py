"""The cluster state machine: the replicated desired state and the only code that changes it.

Every change is a command (`state.commands`) committed through Raft and applied here, in log
order, on every agent. `apply` is deterministic: it reads nothing but the command and the current
state (commands carry every id and timestamp), so all replicas hold identical state after the same
prefix of the log.

A command that is invalid against the current state (a duplicate name, a task moving backwards) is
rejected *deterministically*: every replica rejects it the same way, leaves the state unchanged, and
the proposer gets the reason back. Input validation that does not depend on state (a negative
replica count, a malformed constraint) belongs to the API layer, before anything is proposed.

Join tokens and secrets' values are held sealed with the managers' key (`crypto.ManagerKeys`):
every agent replicates this state, workers too (as Raft learners), but only managers can open
them. Apply never opens anything: it stores and compares ciphertext. What it can check of keys,
it does: the managers' public key is set at init (it names the managers' key and verifies
their signatures) and replaced only by a rotation that covers every manager and every sealed
value (`RotateManagersKey`); a manager's record always carries the managers' key sealed to it, and a
command brings that blob only with a promotion; a join cannot take over an existing node id
under another public key.

Must not know: Raft, the network, Docker, the clock, any key.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import msgpack

from swarmlet.errors import RemoteProtocolError
from swarmlet.state.commands import (
    AddNode,
    Batch,
    Command,
    CreateSecret,
    CreateService,
    InitCluster,
    Once,
    PutTasks,
    RemoveNode,
    RemoveSecret,
    RemoveService,
    RemoveTasks,
    ReportTasks,
    RotateClusterKey,
    RotateManagersKey,
    RotateToken,
    SetAutolock,
    SetRegistryAuth,
    SetTargetVoters,
    SetUpdateStatus,
    UpdateNode,
    UpdateService,
)
from swarmlet.state.indexes import (
    ChangeJournal,
    JournaledDict,
    NodeTable,
    SecretTable,
    ServiceTable,
    StatusTable,
    TaskTable,
)
from swarmlet.state.model import (
    Node,
    Role,
    Secret,
    Service,
    ServiceSpec,
    Task,
    TaskState,
)
from swarmlet.state.observed import TaskObservation
from swarmlet.wire import catalog
from swarmlet.wire import codec as wire

VALID_VOTER_TARGETS = (1, 3, 5, 7)
# The `Once` requests a state remembers, newest last. A writer retries within its write timeout
# (10 s) of the first copy: this covers 800 writes a second through that window (the cluster's
# sustained best is about 1,500, from 32 writers at once), at about 200 bytes each.
REMEMBERED_REQUESTS = 8_192
MAX_REQUEST_ID_BYTES = 32
J = TypeVar("J", bound=JournaledDict[Any])


class Rejected(Exception):
    """A command that is invalid against the current state. Deterministic on every replica."""


@dataclass(frozen=True, slots=True)
class ApplyResult:
    ok: bool
    error: str = ""
    value: str = ""  # e.g. the final name of an added node


# ------------------------------------------------------------------------------------ the state


@dataclass(frozen=True, slots=True)
class StateSnapshot:
    """Everything `ClusterState` holds, as one wire value (the Raft snapshot's payload)."""

    cluster_id: str
    created_at: float
    sealed_worker_token: bytes
    sealed_manager_token: bytes
    target_voters: int
    nodes: tuple[Node, ...]
    services: tuple[Service, ...]
    tasks: tuple[Task, ...]
    secrets: tuple[Secret, ...]
    vip_counters: dict[str, int] = field(default_factory=dict)
    managers_public_key: bytes = b""
    removed_nodes: dict[str, float] = field(default_factory=dict)
    task_status: tuple[TaskObservation, ...] = ()
    port_errors: dict[str, dict[str, str]] = field(default_factory=dict)
    autolock: bool = wire.appended(since=2, default=False)  # issue #18, `SetAutolock`
    sealed_unlock_key: bytes = wire.appended(since=2, default=b"")
    sealed_ca_seed: bytes = wire.appended(since=2, default=b"")  # #15, `RotateManagersKey`
    # `Once` requests and their results, oldest first: msgpack of [[id, ok, error, value], ...]
    # (`requests_blob`). As wire values, 8,192 of them took 35 ms to encode and 40 to decode,
    # at every snapshot (every 2,000 entries); as one blob, under 2 ms each way.
    applied_requests: bytes = wire.appended(since=4, default=b"")


SNAPSHOT_TYPES: tuple[type, ...] = (StateSnapshot, ApplyResult)
wire.register_all(catalog.STATE_SNAPSHOT, SNAPSHOT_TYPES)


class ClusterState:
    """The replicated desired state. Read freely; change only through `apply`."""

    _nodes: NodeTable
    _services: ServiceTable
    _tasks: TaskTable
    _secrets: SecretTable
    _task_status: StatusTable

    def __init__(self) -> None:
        self.cluster_id = ""
        self.created_at = 0.0
        self.sealed_worker_token = b""
        self.sealed_manager_token = b""
        self.target_voters = 3
        self.managers_public_key = b""
        # Which records changed, for the leader (`state.indexes`): every write to nodes,
        # services, tasks and task_status is noted here, once someone takes a mark.
        self.journal = ChangeJournal()
        self.nodes = NodeTable(journal=self.journal)
        self.services = ServiceTable(journal=self.journal)
        self.tasks = TaskTable(journal=self.journal)
        self.secrets = SecretTable()
        # Network name -> the next VIP index on it. An index is not reused while its network
        # has services: a container keeps the /etc/hosts it started with, so a removed
        # service's VIP must not come to mean another service. A network's counter goes with
        # its last service (and so do the bridges, with their containers).
        self.vip_counters: dict[str, int] = {}
        # Node id -> when it was removed: the revocation list. A removed node's certificate is
        # refused by its id on every connection and every message (`security.peer_policy`);
        # ids are never reused (a join draws a new one), so an entry never needs to go.
        self.removed_nodes: dict[str, float] = {}
        # Task id -> what its node last reported of it (`ReportTasks`): only for tasks in
        # `tasks`, each reported by the node it is assigned to.
        self.task_status = StatusTable(journal=self.journal)
        # Node id -> "PORT/PROTO" -> why its proxy cannot listen there (only nodes with errors).
        self.port_errors: dict[str, dict[str, str]] = {}
        # Autolock (`security.at_rest`): managers keep their data key sealed by the unlock key,
        # which the state holds sealed with the managers' key only (never in clear).
        self.autolock = False
        self.sealed_unlock_key = b""
        # The CA's key, sealed with the managers' key, from the first rotation of the managers'
        # key on (`RotateManagersKey`); b"" before: the CA key derives from the managers' key.
        self.sealed_ca_seed = b""
        # Request id -> the result of the `Once` that applied it, oldest first, at most
        # REMEMBERED_REQUESTS: what a later copy of the same request is answered. An ordered
        # dict, for the eviction of the oldest in O(1) (a dict's scans its deleted slots: 6 us
        # an apply when full). Copies share it and may not apply a `Once` (`_owns_requests`):
        # they compute commands, and copying it cost every orchestration pass 1 ms.
        self.applied_requests: collections.OrderedDict[bytes, ApplyResult] = (
            collections.OrderedDict()
        )
        self._owns_requests = True

    # ------------------------------------------------------------- journaled, indexed records

    # Assigning a plain dict (a test, `restore`) wraps it: the indexes and the journal always
    # see every record.
    @property
    def nodes(self) -> NodeTable:
        return self._nodes

    @nodes.setter
    def nodes(self, value: Mapping[str, Node]) -> None:
        self._nodes = self._journaled(NodeTable, value, getattr(self, "_nodes", None))

    @property
    def services(self) -> ServiceTable:
        return self._services

    @services.setter
    def services(self, value: Mapping[str, Service]) -> None:
        self._services = self._journaled(ServiceTable, value, getattr(self, "_services", None))

    @property
    def secrets(self) -> SecretTable:
        return self._secrets

    @secrets.setter
    def secrets(self, value: Mapping[str, Secret]) -> None:
        self._secrets = value if type(value) is SecretTable else SecretTable(value)

    @property
    def tasks(self) -> TaskTable:
        return self._tasks

    @tasks.setter
    def tasks(self, value: Mapping[str, Task]) -> None:
        self._tasks = self._journaled(TaskTable, value, getattr(self, "_tasks", None))

    @property
    def task_status(self) -> StatusTable:
        return self._task_status

    @task_status.setter
    def task_status(self, value: Mapping[str, TaskObservation]) -> None:
        self._task_status = self._journaled(StatusTable, value, getattr(self, "_task_status", None))

    def _journaled(self, table: type[J], value: Mapping[str, Any], old: J | None) -> J:
        """`value` as this state's `table`, writing to this state's journal; while the journal
        records, every key of the old and the new table counts as changed."""
        if type(value) is table:
            assert isinstance(value, table)
            value.journal = self.journal
            if self.journal.recording:
                for key, record in value.items():
                    self.journal.note(table.kind, key, getattr(record, "service_id", ""))
        else:
            value = table(value, self.journal)
            assert isinstance(value, table)
        if old is not None and self.journal.recording:
            for key, record in old.items():
                if key not in value:
                    self.journal.note(table.kind, key, getattr(record, "service_id", ""))
        return value

    # -------------------------------------------------------------------------------- reads

    def node_by_name(self, name: str) -> Node | None:
        return next((n for n in self.nodes.values() if n.name == name), None)

    def find_node(self, ref: str) -> Node | None:
        """A node by id, unique id prefix, or name (as `docker node inspect` accepts)."""
        if ref in self.nodes:
            return self.nodes[ref]
        by_name = self.node_by_name(ref)
        if by_name is not None:
            return by_name
        matches = [n for n in self.nodes.values() if n.id.startswith(ref)]
        return matches[0] if len(matches) == 1 else None

    def service_by_name(self, name: str) -> Service | None:
        return self.services.by_name(name)

    def find_service(self, ref: str) -> Service | None:
        if ref in self.services:
            return self.services[ref]
        return self.service_by_name(ref)

    def tasks_of(self, service_id: str) -> list[Task]:
        return sorted(
            self.tasks.of_service(service_id).values(),
            key=lambda t: (t.slot, t.node_id, t.created_at, t.id),
        )

    def secret_by_name(self, name: str, *, is_config: bool = False) -> Secret | None:
        return self.secrets.by_name(name, is_config)

    def sealed_token(self, role: Role) -> bytes:
        return self.sealed_manager_token if role is Role.MANAGER else self.sealed_worker_token

    def managers(self) -> list[Node]:
        return [n for n in self.nodes.values() if n.role is Role.MANAGER]

    # -------------------------------------------------------------------------------- apply

    def apply(self, command: Command) -> ApplyResult:
        """Apply one committed command. Never raises for a command that is merely invalid."""
        if isinstance(command, Once):
            return self._apply_once(command)
        try:
            if isinstance(command, Batch):
                # All or nothing: check on a scratch copy, then commit by taking its records
                # (no second copy). The scratch notes its writes in this state's journal: a
                # refused batch leaves notes of keys that did not change, which only costs a
                # reader a look at them.
                scratch = self.copy()
                scratch._share_journal(self.journal)
                for sub in command.commands:
                    scratch._apply_one(sub)
                self._adopt(scratch, copy=False)
                return ApplyResult(True)
            return ApplyResult(True, value=self._apply_one(command))
        except Rejected as exc:
            return ApplyResult(False, error=str(exc))

    @property
    def once_applied(self) -> bool:
        """Whether this state has applied a `Once`: from then on a member whose release does not
        know it cannot keep up (`leader.voters` removes it), so every member speaks it."""
        return bool(self.applied_requests)

    def _apply_once(self, once: Once) -> ApplyResult:
        if not self._owns_requests:
            return ApplyResult(False, error="a Once applies to the replicated state, not a copy")
        first = self.applied_requests.get(once.request_id)
        if first is not None:
            return first  # a copy of a request applied before: its first answer, nothing else
        if not 0 < len(once.request_id) <= MAX_REQUEST_ID_BYTES:
            return ApplyResult(False, error="a request id is 1 to 32 bytes")
        if isinstance(once.command, Once):
            return ApplyResult(False, error="a Once inside a Once")
        result = self.apply(once.command)
        # Refusals too: a copy is answered as the first was, whatever the state is by then.
        self.applied_requests[once.request_id] = result
        if len(self.applied_requests) > REMEMBERED_REQUESTS:
            self.applied_requests.popitem(last=False)
        return result

    def _apply_one(self, command: Command) -> str:
        handler = _HANDLERS.get(type(command))
        if handler is None:
            raise Rejected(f"unknown command {type(command).__name__}")
        result: str = handler(self, command)
        return result

    def copy(self, *, with_statuses: bool = True) -> ClusterState:
        """An independent copy of the records, sharing the request memory, which it may read
        but not add to (it applies no `Once`). `with_statuses=False`: without the task statuses,
        for a scratch copy that only computes commands from the records (the orchestrator reads
        observations, never `task_status`): at 100,000 tasks, one large dict fewer per pass to
        copy and for the garbage collector to walk."""
        other = ClusterState()
        other._adopt(self, with_statuses=with_statuses)
        return other

    def _share_journal(self, journal: ChangeJournal) -> None:
        self.journal = journal
        for table in (self.nodes, self.services, self.tasks, self.task_status):
            table.journal = journal

    def _adopt(self, other: ClusterState, *, copy: bool = True, with_statuses: bool = True) -> None:
        """Take `other`'s records: copies of them, or (`copy=False`, `other` is discarded) the
        records themselves."""
        self.cluster_id = other.cluster_id
        self.created_at = other.created_at
        self.sealed_worker_token = other.sealed_worker_token
        self.sealed_manager_token = other.sealed_manager_token
        self.target_voters = other.target_voters
        self.managers_public_key = other.managers_public_key
        self.autolock, self.sealed_unlock_key = other.autolock, other.sealed_unlock_key
        self.sealed_ca_seed = other.sealed_ca_seed
        if not copy:
            # Not through the setters: `other` shares this state's journal and has noted its
            # writes already (noting every record again would make every key look changed).
            self._nodes, self._services = other.nodes, other.services
            self._tasks, self._task_status = other.tasks, other.task_status
            self._share_journal(self.journal)
            self.secrets, self.vip_counters = other.secrets, other.vip_counters
            self.removed_nodes, self.port_errors = other.removed_nodes, other.port_errors
            return  # (`other`, a copy of this state, shares this state's request memory)
        self.nodes = other.nodes.copy()
        self.services = other.services.copy()
        self.tasks = other.tasks.copy()
        self.secrets = other.secrets.copy()
        self.vip_counters = dict(other.vip_counters)
        self.removed_nodes = dict(other.removed_nodes)
        self.task_status = other.task_status.copy() if with_statuses else StatusTable()
        self.port_errors = dict(other.port_errors)
        self.applied_requests, self._owns_requests = other.applied_requests, False

    # ------------------------------------------------------------------------- snapshots

    def snapshot(self) -> bytes:
        return wire.encode(self.snapshot_record())

    def snapshot_record(self) -> StateSnapshot:
        """What `snapshot` encodes: the records as they are now (immutable: a copy of the
        tables, cheap, which another thread may encode while this state moves on)."""
        return StateSnapshot(
            cluster_id=self.cluster_id,
            created_at=self.created_at,
            sealed_worker_token=self.sealed_worker_token,
            sealed_manager_token=self.sealed_manager_token,
            target_voters=self.target_voters,
            nodes=tuple(self.nodes.values()),
            services=tuple(self.services.values()),
            tasks=tuple(self.tasks.values()),
            secrets=tuple(self.secrets.values()),
            vip_counters=dict(self.vip_counters),
            managers_public_key=self.managers_public_key,
            removed_nodes=dict(self.removed_nodes),
            task_status=tuple(self.task_status.values()),
            port_errors=dict(self.port_errors),
            autolock=self.autolock,
            sealed_unlock_key=self.sealed_unlock_key,
            sealed_ca_seed=self.sealed_ca_seed,
            applied_requests=requests_blob(self.applied_requests),
        )

    @classmethod
    def restore(cls, data: bytes) -> ClusterState:
        state = cls()
        if not data:
            return state
        # Any size: these bytes are this node's own (its snapshot or view, sealed on disk) or a
        # leader's InstallSnapshot, which the transport bounds. A bound here made a state past
        # 64 MiB one that no member could restart from after its next compaction (review).
        snap = wire.decode(data, expect=(StateSnapshot,), max_bytes=len(data))
        state.cluster_id = snap.cluster_id
        state.created_at = snap.created_at
        state.sealed_worker_token = snap.sealed_worker_token
        state.sealed_manager_token = snap.sealed_manager_token
        state.target_voters = snap.target_voters
        state.nodes = {n.id: n for n in snap.nodes}
        state.services = {s.id: s for s in snap.services}
        state.tasks = {t.id: t for t in snap.tasks}
        state.secrets = {s.id: s for s in snap.secrets}
        state.vip_counters = dict(snap.vip_counters)
        state.managers_public_key = snap.managers_public_key
        state.removed_nodes = dict(snap.removed_nodes)
        state.task_status = {o.task_id: o for o in snap.task_status}
        state.port_errors = dict(snap.port_errors)
        state.autolock = snap.autolock
        state.sealed_unlock_key = snap.sealed_unlock_key
        state.sealed_ca_seed = snap.sealed_ca_seed
        state.applied_requests = requests_from_blob(snap.applied_requests)
        return state


def requests_blob(requests: Mapping[bytes, ApplyResult]) -> bytes:
    if not requests:
        return b""
    plain = [[rid, r.ok, r.error, r.value] for rid, r in requests.items()]
    return msgpack.packb(plain, use_bin_type=True)


def requests_from_blob(blob: bytes) -> collections.OrderedDict[bytes, ApplyResult]:
    """RemoteProtocolError if `blob` is not what `requests_blob` makes."""
    requests: collections.OrderedDict[bytes, ApplyResult] = collections.OrderedDict()
    if not blob:
        return requests
    plain = wire.unpack_plain(blob, max_bytes=len(blob))
    if not isinstance(plain, (list, tuple)) or len(plain) > REMEMBERED_REQUESTS:
        raise RemoteProtocolError("applied_requests: expected a list of at most the bound")
    for item in plain:
        match item:
            case [bytes() as rid, bool() as ok, str() as error, str() as value]:
                requests[rid] = ApplyResult(ok, error, value)
            case _:
                raise RemoteProtocolError("applied_requests: expected [id, ok, error, value]")
    return requests


# ------------------------------------------------------------------------------- handlers


def _init_cluster(state: ClusterState, cmd: InitCluster) -> str:
    if state.cluster_id:
        raise Rejected("the cluster is already initialised")
    if cmd.target_voters not in VALID_VOTER_TARGETS:
        raise Rejected(f"target voters must be one of {VALID_VOTER_TARGETS}")
    state.cluster_id = cmd.cluster_id
    state.created_at = cmd.created_at
    state.sealed_worker_token = cmd.sealed_worker_token
    state.sealed_manager_token = cmd.sealed_manager_token
    state.target_voters = cmd.target_voters
    state.managers_public_key = cmd.managers_public_key
    return cmd.cluster_id


def _unique_name(taken: Iterable[str], wanted: str) -> str:
    names = set(taken)
    if wanted not in names:
        return wanted
    n = 2
    while f"{wanted}-{n}" in names:
        n += 1
    return f"{wanted}-{n}"


def _add_node(state: ClusterState, cmd: AddNode) -> str:
    node = cmd.node
    if node.id in state.removed_nodes:
        raise Rejected(f"node id {node.id} was removed from the cluster; a node joins anew")
    existing = state.nodes.get(node.id)
    if existing is not None:
        # Only the node itself may re-join under its id (a join proves it holds the private key
        # of the public key it sends, `swarmlet.security.join`): anyone else would take over its
        # address, and with it the Raft traffic and the secrets requests meant for it.
        if node.public_key != existing.public_key:
            raise Rejected(f"node id {node.id} is already in the cluster with another key")
        # A node re-joining with its own id and key (e.g. a join retried after a lost answer)
        # keeps its name, role and labels; only the addresses are refreshed.
        state.nodes[node.id] = dataclasses.replace(
            existing, addr=node.addr, publish_addr=node.publish_addr, resources=node.resources
        )
        return existing.name
    if node.role is Role.MANAGER and not node.sealed_manager_key:
        raise Rejected(f"node {node.id} joins as a manager without the managers' key sealed to it")
    _check_cluster_key(state, node)
    others = [n.name for n in state.nodes.values()]
    if cmd.name_is_explicit and node.name in others:
        raise Rejected(
            f"a node named {node.name!r} is already in the cluster; choose another --name"
        )
    name = _unique_name(others, node.name)
    state.nodes[node.id] = dataclasses.replace(node, name=name)
    return name


def _remove_node(state: ClusterState, cmd: RemoveNode) -> str:
    if cmd.node_id not in state.nodes:
        raise Rejected(f"no node {cmd.node_id}")
    del state.nodes[cmd.node_id]
    state.removed_nodes[cmd.node_id] = cmd.removed_at
    state.port_errors.pop(cmd.node_id, None)
    # Its tasks can never report again: mark them orphaned so the orchestrator replaces them.
    for task in list(state.tasks.on_node(cmd.node_id).values()):
        state.task_status.pop(task.id, None)
        if not task.state.terminal:
            state.tasks[task.id] = dataclasses.replace(
                task,
                desired_state=TaskState.SHUTDOWN,
                state=TaskState.ORPHANED,
                message="node removed",
            )
    return cmd.node_id


def _update_node(state: ClusterState, cmd: UpdateNode) -> str:
    node = state.nodes.get(cmd.node_id)
    if node is None:
        raise Rejected(f"no node {cmd.node_id}")
    labels = {k: v for k, v in node.labels.items() if k not in cmd.labels_rm}
    labels.update(cmd.labels_add)
    role = cmd.role or node.role
    # A worker never keeps the managers' key in its record (demotion drops it; the node then
    # deletes its copy); a promotion brings it, sealed to the node by the manager promoting it,
    # and nothing else may replace a manager's blob.
    promotion = node.role is Role.WORKER and role is Role.MANAGER
    if promotion and not cmd.sealed_manager_key:
        raise Rejected(f"promoting node {node.id} needs the managers' key sealed to it")
    if cmd.sealed_manager_key and not promotion:
        raise Rejected(f"the managers' key comes only with a promotion (node {node.id})")
    sealed_key = cmd.sealed_manager_key or node.sealed_manager_key
    if role is Role.WORKER:
        sealed_key = b""
    # A role change supersedes the node's certificates: theirs name the old role
    # (`swarmlet.certs`: the generation is in the subject; `security.peer_policy` refuses older).
    generation = node.cert_generation + (1 if role is not node.role else 0)
    state.nodes[node.id] = dataclasses.replace(
        node,
        availability=cmd.availability or node.availability,
        role=role,
        cert_generation=generation,
        sealed_manager_key=sealed_key,
        labels=labels,
        addr=cmd.addr or node.addr,
        publish_addr=cmd.publish_addr or node.publish_addr,
        resources=cmd.resources or node.resources,
    )
    return node.id


def _rotate_token(state: ClusterState, cmd: RotateToken) -> str:
    if cmd.role is Role.MANAGER:
        state.sealed_manager_token = cmd.sealed_token
    else:
        state.sealed_worker_token = cmd.sealed_token
    return ""


def _set_target_voters(state: ClusterState, cmd: SetTargetVoters) -> str:
    if cmd.target_voters not in VALID_VOTER_TARGETS:
        raise Rejected(f"target voters must be one of {VALID_VOTER_TARGETS}")
    state.target_voters = cmd.target_voters
    return str(cmd.target_voters)


def _check_spec(state: ClusterState, service_id: str, spec: ServiceSpec) -> None:
    other = state.service_by_name(spec.name)
    if other is not None and other.id != service_id:
        raise Rejected(f"a service named {spec.name!r} already exists")
    for port in spec.ports:
        if port.mode != "ingress" or not port.published:  # host-mode ports are per node
            continue
        owners = state.services.ingress_ports.get((port.published, port.protocol))
        # The last other publisher in the table's order, as a scan of every service named it.
        owner = next((i for i in reversed(list(owners)) if i != service_id), None)
        if owner is not None:
            raise Rejected(
                f"port {port.published}/{port.protocol} is already published by service "
                f"{state.services[owner].spec.name}"
            )
    for ref in spec.secrets:
        if state.secret_by_name(ref.name) is None:
            raise Rejected(f"secret {ref.name!r} not found")
    for ref in spec.configs:
        if state.secret_by_name(ref.name, is_config=True) is None:
            raise Rejected(f"config {ref.name!r} not found")


def _create_service(state: ClusterState, cmd: CreateService) -> str:
    service = cmd.service
    if service.id in state.services:
        raise Rejected(f"service id {service.id} already exists")
    _check_spec(state, service.id, service.spec)
    state.services[service.id] = _with_vip_indexes(
        state, dataclasses.replace(service, vip_indexes={})
    )
    return service.id


def _with_vip_indexes(state: ClusterState, service: Service) -> Service:
    """The service's index on each of its networks (not external ones): kept for as long as it
    stays on that network, new ones from the network's counter."""
    indexes = {}
    for attachment in service.spec.networks:
        if attachment.external:
            continue
        index = service.vip_indexes.get(attachment.name)
        if index is None:
            index = state.vip_counters.get(attachment.name, 1)
            state.vip_counters[attachment.name] = index + 1
        indexes[attachment.name] = index
    return dataclasses.replace(service, vip_indexes=indexes)


def _drop_unused_vip_counters(state: ClusterState) -> None:
    for network in list(state.vip_counters):
        if not state.services.vip_networks.get(network):
            del state.vip_counters[network]


def _update_service(state: ClusterState, cmd: UpdateService) -> str:
    service = state.services.get(cmd.service_id)
    if service is None:
        raise Rejected(f"no service {cmd.service_id}")
    _check_spec(state, service.id, cmd.spec)
    if cmd.spec == service.spec:
        return service.id  # re-deploying an unchanged spec changes nothing
    state.services[service.id] = dataclasses.replace(
        _with_vip_indexes(state, dataclasses.replace(service, spec=cmd.spec)),
        version=service.version + 1,
        # A rollback goes back to the previous spec and forgets it (as Swarm: no second rollback).
        previous_spec=None if cmd.is_rollback else service.spec,
        updated_at=cmd.updated_at,
        update_status=cmd.update_status or service.update_status,
    )
    _drop_unused_vip_counters(state)
    return service.id


def _remove_service(state: ClusterState, cmd: RemoveService) -> str:
    if cmd.service_id not in state.services:
        raise Rejected(f"no service {cmd.service_id}")
    del state.services[cmd.service_id]
    _drop_unused_vip_counters(state)
    for task in list(state.tasks.of_service(cmd.service_id).values()):
        if task.desired_state is TaskState.RUNNING:
            state.tasks[task.id] = dataclasses.replace(
                task, desired_state=TaskState.SHUTDOWN, updated_at=cmd.updated_at
            )
    return cmd.service_id


def _set_update_status(state: ClusterState, cmd: SetUpdateStatus) -> str:
    service = state.services.get(cmd.service_id)
    if service is None:
        raise Rejected(f"no service {cmd.service_id}")
    state.services[service.id] = dataclasses.replace(service, update_status=cmd.status)
    return service.id


def _put_tasks(state: ClusterState, cmd: PutTasks) -> str:
    staged: dict[str, Task] = {}
    for task in cmd.tasks:
        old = staged.get(task.id) or state.tasks.get(task.id)
        if old is None:
            if task.service_id not in state.services:
                raise Rejected(f"task {task.id}: no service {task.service_id}")
        else:
            # Swarm's task model: observed state and desired state only move forward, and a task
            # never changes service, slot or (once assigned) node.
            if task.state < old.state:
                raise Rejected(
                    f"task {task.id}: state cannot go back from {old.state} to {task.state}"
                )
            if task.desired_state < old.desired_state:
                raise Rejected(f"task {task.id}: desired state cannot go back")
            if (task.service_id, task.slot) != (old.service_id, old.slot):
                raise Rejected(f"task {task.id}: service and slot are immutable")
            if old.node_id and task.node_id != old.node_id:
                raise Rejected(f"task {task.id}: already assigned to {old.node_id}")
        if task.node_id and task.node_id not in state.nodes:
            raise Rejected(f"task {task.id}: no node {task.node_id}")
        staged[task.id] = task
    state.tasks.update(staged)
    return ""


def _remove_tasks(state: ClusterState, cmd: RemoveTasks) -> str:
    for task_id in cmd.task_ids:
        state.tasks.pop(task_id, None)
        state.task_status.pop(task_id, None)
    return ""


def _report_tasks(state: ClusterState, cmd: ReportTasks) -> str:
    """Record what a node observed of its own tasks. A status about a task that is gone or
    not the node's, or that would move its state back, is skipped, not an error: the leader
    vetted the report against its state, and only a race (the task reaped meanwhile, a late
    duplicate) gets here. Returns how many statuses were recorded."""
    if cmd.node_id not in state.nodes:
        raise Rejected(f"no node {cmd.node_id}")
    recorded = 0
    for obs in cmd.statuses:
        task = state.tasks.get(obs.task_id)
        if task is None or task.node_id != cmd.node_id:
            continue
        old = state.task_status.get(obs.task_id)
        if old is not None and obs.state < old.state:
            continue  # states only move forward
        state.task_status[obs.task_id] = obs
        recorded += 1
    if cmd.port_errors is not None:
        if cmd.port_errors:
            state.port_errors[cmd.node_id] = dict(cmd.port_errors)
        else:
            state.port_errors.pop(cmd.node_id, None)
    return str(recorded)


def _create_secret(state: ClusterState, cmd: CreateSecret) -> str:
    secret = cmd.secret
    kind = "config" if secret.is_config else "secret"
    if secret.id in state.secrets or state.secret_by_name(secret.name, is_config=secret.is_config):
        raise Rejected(f"{kind} {secret.name!r} already exists")
    state.secrets[secret.id] = secret
    return secret.id


def _remove_secret(state: ClusterState, cmd: RemoveSecret) -> str:
    secret = state.secrets.get(cmd.secret_id)
    if secret is None:
        raise Rejected(f"no secret {cmd.secret_id}")
    users = sorted(
        s.spec.name
        for s in state.services.values()
        if any(
            ref.name == secret.name
            for ref in (s.spec.configs if secret.is_config else s.spec.secrets)
        )
    )
    if users:
        kind = "config" if secret.is_config else "secret"
        raise Rejected(f"{kind} {secret.name!r} is in use by {', '.join(users)}")
    del state.secrets[secret.id]
    return secret.id


def _set_registry_auth(state: ClusterState, cmd: SetRegistryAuth) -> str:
    service = state.services.get(cmd.service_id)
    if service is None:
        raise Rejected(f"no service {cmd.service_id}")
    state.services[cmd.service_id] = dataclasses.replace(service, registry_auth=cmd.sealed)
    return cmd.service_id


_HANDLERS: dict[type, Any] = {
    InitCluster: _init_cluster,
    AddNode: _add_node,
    RemoveNode: _remove_node,
    UpdateNode: _update_node,
    RotateToken: _rotate_token,
    SetTargetVoters: _set_target_voters,
    CreateService: _create_service,
    UpdateService: _update_service,
    RemoveService: _remove_service,
    SetUpdateStatus: _set_update_status,
    PutTasks: _put_tasks,
    RemoveTasks: _remove_tasks,
    CreateSecret: _create_secret,
    RemoveSecret: _remove_secret,
    ReportTasks: _report_tasks,
    SetRegistryAuth: _set_registry_auth,
}


def _once_in_a_batch(state: ClusterState, cmd: Once) -> str:
    # `apply` takes a Once only as a whole entry: a batch's parts have no result of their own.
    raise Rejected("a Once is a whole entry, never a part of a batch")


_HANDLERS[Once] = _once_in_a_batch


# ------------------------------------------------------------------------ the cluster key's epoch


def cluster_key_epoch(state: ClusterState) -> int:
    """The epoch of the cluster key the members hold now: every record carries it (a rotation
    gives each member the new key, a join brings the current one), 0 before any rotation."""
    return max((n.cluster_key_epoch for n in state.nodes.values()), default=0)


def _check_cluster_key(state: ClusterState, node: Node) -> None:
    """A new member's record carries the current cluster key sealed to it (nothing at epoch 0,
    whose key the join reply carries): a key rotated after the admitting manager sealed its
    copy would leave the node unable to read or send gossip."""
    epoch = cluster_key_epoch(state)
    if node.cluster_key_epoch != epoch or bool(node.sealed_cluster_key) != (epoch > 0):
        raise Rejected(
            f"node {node.id} does not bring the cluster key of epoch {epoch} (it was replaced "
            "while the node joined): join again"
        )


def _rotate_cluster_key(state: ClusterState, cmd: RotateClusterKey) -> str:
    """Every member's record gets the new key. Sealed for exactly the members there are now, and
    the next epoch: a member that joined or left since the proposer sealed would otherwise be
    left without it, or keep an old one."""
    current = cluster_key_epoch(state)
    if cmd.epoch != current + 1:
        raise Rejected(f"the cluster key is at epoch {current}: epoch {cmd.epoch} is not next")
    if set(cmd.sealed) != set(state.nodes) or not all(cmd.sealed.values()):
        raise Rejected("the members changed since the new cluster key was sealed: seal it again")
    for node_id, sealed in cmd.sealed.items():
        state.nodes[node_id] = dataclasses.replace(
            state.nodes[node_id], sealed_cluster_key=sealed, cluster_key_epoch=cmd.epoch
        )
    return str(cmd.epoch)


_HANDLERS[RotateClusterKey] = _rotate_cluster_key


# ------------------------------------------------------------------------ autolock (issue #18)


def _set_autolock(state: ClusterState, cmd: SetAutolock) -> str:
    if cmd.enabled != bool(cmd.sealed_unlock_key):
        raise Rejected("autolock on needs a sealed unlock key, and off takes none")
    state.autolock = cmd.enabled
    state.sealed_unlock_key = cmd.sealed_unlock_key
    return ""


_HANDLERS[SetAutolock] = _set_autolock


# ---------------------------------------------------------------- the managers' key (issue #15)


def _rotate_managers_key(state: ClusterState, cmd: RotateManagersKey) -> str:
    """The new managers' key in every manager's record, and every value sealed under the old one
    replaced by its copy under the new. All or nothing, and only for what the state holds now:
    a manager, secret or credential the proposer did not seal again would be left with the key
    being retired (a manager without the key, a value no manager opens), and a rotation built on
    an older key (`previous_public_key`) would undo a newer one. Apply cannot open anything: that
    each blob opens with the new key is the proposer's (a manager's: `security.propose_auth`)."""
    if not state.managers_public_key or cmd.previous_public_key != state.managers_public_key:
        raise Rejected("the managers' key was replaced meanwhile: build the rotation again")
    if not cmd.public_key or cmd.public_key == cmd.previous_public_key:
        raise Rejected("a rotation of the managers' key brings a new key")
    managers = {n.id for n in state.managers()}
    if not managers or set(cmd.sealed) != managers or not all(cmd.sealed.values()):
        raise Rejected("the managers changed since the new managers' key was sealed: seal it again")
    secrets = {s.id for s in state.secrets.values() if not s.is_config}
    if set(cmd.secrets) != secrets or not all(cmd.secrets.values()):
        raise Rejected("the secrets changed since they were sealed again: seal them again")
    credentials = {s.id for s in state.services.values() if s.registry_auth}
    if set(cmd.registry_auth) != credentials or not all(cmd.registry_auth.values()):
        raise Rejected("the registry credentials changed since they were sealed again")
    if not (cmd.sealed_worker_token and cmd.sealed_manager_token and cmd.sealed_ca_seed):
        raise Rejected("a rotation of the managers' key seals both join tokens and the CA again")
    if bool(cmd.sealed_unlock_key) != state.autolock:
        raise Rejected("autolock changed since its unlock key was sealed again")
    for node_id, blob in cmd.sealed.items():
        state.nodes[node_id] = dataclasses.replace(state.nodes[node_id], sealed_manager_key=blob)
    state.secrets = {
        sid: dataclasses.replace(s, data=cmd.secrets[sid]) if sid in cmd.secrets else s
        for sid, s in state.secrets.items()
    }
    for service_id, sealed in cmd.registry_auth.items():
        state.services[service_id] = dataclasses.replace(
            state.services[service_id], registry_auth=sealed
        )
    state.managers_public_key = cmd.public_key
    state.sealed_worker_token = cmd.sealed_worker_token
    state.sealed_manager_token = cmd.sealed_manager_token
    state.sealed_ca_seed = cmd.sealed_ca_seed
    state.sealed_unlock_key = cmd.sealed_unlock_key
    return ""


_HANDLERS[RotateManagersKey] = _rotate_managers_key
