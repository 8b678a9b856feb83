"""What `ClusterState` keeps beside its records so that the leader's work scales with a change
(issue #16): indexes of the tasks and of secrets' names, and a journal of which records changed.

They are maintained by the containers themselves (`JournaledDict`, `TaskTable`, `SecretTable`),
so every write counts, whoever makes it: `ClusterState.apply`'s handlers, the orchestrator's
scratch copy, a test that pokes a task in. None is replicated or snapshotted: each replica
derives them from its records, and they hold nothing that is not in the records.

* `TaskTable` indexes tasks by service, by node, and the tasks waiting for a node (desired
  RUNNING, state NEW or PENDING: what the scheduler takes). A copy shares the per-service and
  per-node buckets and copies one only when it first writes to it (copy-on-write), so the
  orchestrator's scratch copy costs a flat dict copy, not a re-index.
* `ChangeJournal` answers "which tasks, statuses, services and nodes changed since mark M", in
  time proportional to the answer. It remembers each record's last change only (a key changed
  twice is listed once), records nothing until someone takes a mark (followers never do), and
  forgets the oldest keys beyond a bound: `since` then answers None and the reader falls back to
  a full look.
* `ServiceTable` finds a service by its name and by the ingress ports it publishes, and
  knows which networks services hold virtual-IP indexes on; `SecretTable` finds a secret or a
  config by its name (both through `TableIndex`).

Must not know: Raft, the network, the orchestrator's policy.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from swarmlet.state.model import Node, Secret, Service, Task, TaskState
from swarmlet.state.observed import TaskObservation

V = TypeVar("V")

TASK = "task"
STATUS = "status"
SERVICE = "service"
NODE = "node"
KINDS = (TASK, STATUS, SERVICE, NODE)


@dataclass
class Changes:
    """What changed since a mark. `tasks`: task id -> its service (known even for a removed
    task, so the reader knows whose history moved)."""

    tasks: dict[str, str] = field(default_factory=dict)
    statuses: set[str] = field(default_factory=set)
    services: set[str] = field(default_factory=set)
    nodes: set[str] = field(default_factory=set)

    def __bool__(self) -> bool:
        return bool(self.tasks or self.statuses or self.services or self.nodes)


class ChangeJournal:
    """Per kind, key -> (sequence number of its last change, extra); insertion order is the order
    of last change (a key is moved to the end when it changes again), so `since` walks back from
    the end and stops at the mark."""

    def __init__(self, max_keys: int = 500_000) -> None:
        self.max_keys = max_keys
        self.recording = False
        self._seq = 0
        self._floor = 0  # changes at or before this were forgotten (or never recorded)
        self._last: dict[str, dict[str, tuple[int, str]]] = {kind: {} for kind in KINDS}
        self._size = 0

    def note(self, kind: str, key: str, extra: str = "") -> None:
        if not self.recording:
            return
        self._seq += 1
        last = self._last[kind]
        if last.pop(key, None) is None:
            self._size += 1
        last[key] = (self._seq, extra)
        if self._size > self.max_keys:
            self._forget_oldest()

    def mark(self) -> int:
        """The position now; start recording if nobody had asked before (what happened
        earlier is unknown: `since` of an older mark answers None)."""
        if not self.recording:
            self.recording = True
            self._floor = self._seq
        return self._seq

    def since(self, mark: int) -> Changes | None:
        """Every key changed after `mark`; None if the journal cannot tell (forgotten)."""
        if mark < self._floor or not self.recording:
            return None
        changes = Changes()
        for kind, last in self._last.items():
            for key, (seq, extra) in reversed(last.items()):
                if seq <= mark:
                    break
                if kind == TASK:
                    changes.tasks[key] = extra
                elif kind == STATUS:
                    changes.statuses.add(key)
                elif kind == SERVICE:
                    changes.services.add(key)
                else:
                    changes.nodes.add(key)
        return changes

    def _forget_oldest(self) -> None:
        """Drop the oldest quarter of the keys (by their last change) across all kinds."""
        drop = self._size // 4
        oldest = sorted(
            (seq, kind, key) for kind, last in self._last.items() for key, (seq, _) in last.items()
        )[:drop]
        for seq, kind, key in oldest:
            del self._last[kind][key]
            self._floor = max(self._floor, seq)
        self._size -= len(oldest)


class HookedDict(dict[str, V]):
    """A dict whose every write and delete goes through `_write`/`_delete`, for a subclass that
    keeps something beside its records. All of dict's mutators are routed here (dict's own C
    methods would bypass an override); `copy` is the subclass's to define."""

    def __init__(self, items: Mapping[str, V] | None = None):
        super().__init__()
        if items:
            for key, value in items.items():
                self._write(key, value)

    def _write(self, key: str, value: V) -> None:
        dict.__setitem__(self, key, value)

    def _delete(self, key: str) -> V:
        return dict.pop(self, key)

    def __setitem__(self, key: str, value: V) -> None:
        self._write(key, value)

    def __delitem__(self, key: str) -> None:
        if key not in self:
            raise KeyError(key)
        self._delete(key)

    def pop(self, key: str, *default: Any) -> Any:
        if key in self:
            return self._delete(key)
        if default:
            return default[0]
        raise KeyError(key)

    def popitem(self) -> tuple[str, V]:
        key = next(reversed(self.keys()))
        return key, self._delete(key)

    def clear(self) -> None:
        for key in list(self):
            self._delete(key)

    def update(self, *args: Any, **kwargs: V) -> None:
        for key, value in dict(*args, **kwargs).items():
            self._write(key, value)

    def setdefault(self, key: str, default: Any = None) -> Any:
        if key not in self:
            self._write(key, default)
        return self[key]

    def __ior__(self, other: Any) -> HookedDict[V]:  # type: ignore[override,misc]
        self.update(other)
        return self


class JournaledDict(HookedDict[V]):
    """A dict that notes every key written or deleted in a `ChangeJournal`."""

    kind = ""

    def __init__(self, items: Mapping[str, V] | None = None, journal: ChangeJournal | None = None):
        self.journal = journal if journal is not None else ChangeJournal()
        super().__init__(items)

    # Hooks (TaskTable indexes on them).
    def _write(self, key: str, value: V) -> None:
        dict.__setitem__(self, key, value)
        self.journal.note(self.kind, key)

    def _delete(self, key: str) -> V:
        value = dict.pop(self, key)
        self.journal.note(self.kind, key)
        return value

    def copy(self) -> JournaledDict[V]:
        """A plain copy, writing to a new journal (not recording)."""
        other = type(self).__new__(type(self))
        dict.update(other, self)
        other.journal = ChangeJournal()
        return other


class TableIndex(Generic[V]):
    """Index key -> the ids of a table's records that have it, in the table's order (`ordered`;
    else in no promised order); a record's keys are `keys_of(record)`. Buckets are ordered sets
    (dicts of None); a copy shares them and copies one only when it first writes to it
    (copy-on-write, on both sides), as `TaskTable`."""

    def __init__(self, keys_of: Callable[[V], Iterable[Hashable]], *, ordered: bool = True) -> None:
        self.keys_of = keys_of
        self.ordered = ordered
        self._buckets: dict[Hashable, dict[str, None]] = {}
        self._own: set[Hashable] = set()  # buckets this index may write in place

    def get(self, key: Hashable) -> Mapping[str, None]:
        """The ids holding `key` (a live view, valid until the next write)."""
        return self._buckets.get(key, _NO_IDS)

    def first(self, key: Hashable) -> str | None:
        return next(iter(self._buckets.get(key, _NO_IDS)), None)

    def changed(self, table: Mapping[str, V], rid: str, old: V | None, new: V | None) -> None:
        """`table[rid]` went from `old` to `new` (None: absent); called after the write."""
        before = set(self.keys_of(old)) if old is not None else set()
        after = set(self.keys_of(new)) if new is not None else set()
        for key in before - after:
            bucket = self._writable(key)
            del bucket[rid]
            if not bucket:
                del self._buckets[key]
                self._own.discard(key)
        for key in after - before:
            if old is None or key not in self._buckets or not self.ordered:
                self._writable(key)[rid] = None  # a new record is last in the table's order
            else:  # a record gained a key others hold: keep the table's order (a scan)
                self._buckets[key] = {i: None for i, v in table.items() if key in self.keys_of(v)}
                self._own.add(key)

    def _writable(self, key: Hashable) -> dict[str, None]:
        if key not in self._own:
            self._buckets[key] = dict(self._buckets.get(key, _NO_IDS))
            self._own.add(key)
        return self._buckets[key]

    def copy(self) -> TableIndex[V]:
        other = TableIndex(self.keys_of, ordered=self.ordered)
        other._buckets = dict(self._buckets)
        self._own = set()
        return other


_NO_IDS: Mapping[str, None] = {}


def _service_name(service: Service) -> tuple[str]:
    return (service.spec.name,)


def _ingress_ports(service: Service) -> Iterable[tuple[int, str]]:
    """What the service publishes on every node's proxy (host-mode ports are per node)."""
    return [
        (p.published, p.protocol) for p in service.spec.ports if p.mode == "ingress" and p.published
    ]


def _vip_networks(service: Service) -> Iterable[str]:
    return service.vip_indexes.keys()


class ServiceTable(JournaledDict[Service]):
    """Services by id, indexed by name, by the ingress ports they publish and by the networks
    they hold a virtual-IP index on: every service create and update checks the first two and
    may free a network's counter, and scanning every service for each (the audit of sizes) made
    a 10,000-service stack deploy hold each manager's event loop 15.7 s. Names and ingress ports
    are unique (`ClusterState.apply` refuses a second); should two records share one (a test's,
    an older release's), the index holds both in the table's order, and readers pick as their
    scans did (`by_name` the first; `_check_spec` names a port's last other publisher)."""

    kind = SERVICE

    def __init__(
        self, items: Mapping[str, Service] | None = None, journal: ChangeJournal | None = None
    ) -> None:
        self.names: TableIndex[Service] = TableIndex(_service_name)
        self.ingress_ports: TableIndex[Service] = TableIndex(_ingress_ports)
        # Asked only whether a network has services: a service joining a network others are
        # on (a stack's redeploy adding one to all) would cost a scan each, kept in order.
        self.vip_networks: TableIndex[Service] = TableIndex(_vip_networks, ordered=False)
        super().__init__(items, journal)

    def by_name(self, name: str) -> Service | None:
        rid = self.names.first(name)
        return None if rid is None else dict.__getitem__(self, rid)

    def _indexes(self) -> tuple[TableIndex[Service], ...]:
        return (self.names, self.ingress_ports, self.vip_networks)

    def _write(self, key: str, value: Service) -> None:
        old = dict.get(self, key)
        super()._write(key, value)
        for index in self._indexes():
            index.changed(self, key, old, value)

    def _delete(self, key: str) -> Service:
        value = super()._delete(key)
        for index in self._indexes():
            index.changed(self, key, value, None)
        return value

    def copy(self) -> ServiceTable:
        other = ServiceTable.__new__(ServiceTable)
        dict.update(other, self)
        other.journal = ChangeJournal()
        other.names = self.names.copy()
        other.ingress_ports = self.ingress_ports.copy()
        other.vip_networks = self.vip_networks.copy()
        return other


class NodeTable(JournaledDict[Node]):
    kind = NODE


class StatusTable(JournaledDict[TaskObservation]):
    kind = STATUS


def _secret_name(secret: Secret) -> tuple[tuple[str, bool]]:
    return ((secret.name, secret.is_config),)


class SecretTable(HookedDict[Secret]):
    """Secrets and configs by id, indexed by (name, is_config): a config create, a service
    create and every worker's view look names up, and a scan made creating the 20,000th config
    cost 259 us (a restart's replay of 20,000 of them held the event loop for 8 s). Names are
    unique per kind (`ClusterState.apply` refuses a second, and nothing renames one); should two
    share one (a test's records), `by_name` answers the first in the table's order, as a scan
    did."""

    def __init__(self, items: Mapping[str, Secret] | None = None) -> None:
        self.names: TableIndex[Secret] = TableIndex(_secret_name)
        super().__init__(items)

    def by_name(self, name: str, is_config: bool) -> Secret | None:
        rid = self.names.first((name, is_config))
        return None if rid is None else dict.__getitem__(self, rid)

    def _write(self, key: str, value: Secret) -> None:
        old = dict.get(self, key)
        dict.__setitem__(self, key, value)
        self.names.changed(self, key, old, value)

    def _delete(self, key: str) -> Secret:
        value = dict.pop(self, key)
        self.names.changed(self, key, value, None)
        return value

    def copy(self) -> SecretTable:
        other = SecretTable.__new__(SecretTable)
        dict.update(other, self)
        other.names = self.names.copy()
        return other


def waits_for_node(task: Task) -> bool:
    """What the scheduler takes: desired RUNNING, not placed yet (NEW or PENDING)."""
    return task.desired_state is TaskState.RUNNING and task.state <= TaskState.PENDING


_EMPTY: Mapping[str, Task] = {}


class TaskTable(JournaledDict[Task]):
    """Tasks by id, indexed by service, by node and waiting for a node. Read the indexes through
    `of_service`, `on_node` and `waiting`: live views, valid until the next write."""

    kind = TASK

    def __init__(
        self, items: Mapping[str, Task] | None = None, journal: ChangeJournal | None = None
    ) -> None:
        self._by_service: dict[str, dict[str, Task]] = {}
        self._by_node: dict[str, dict[str, Task]] = {}
        self._waiting: dict[str, Task] = {}
        # Buckets this table may write in place; the others are shared with a copy.
        self._own_services: set[str] = set()
        self._own_nodes: set[str] = set()
        self._own_waiting = True
        super().__init__(items, journal)

    # ------------------------------------------------------------------------- reads

    def of_service(self, service_id: str) -> Mapping[str, Task]:
        return self._by_service.get(service_id, _EMPTY)

    def on_node(self, node_id: str) -> Mapping[str, Task]:
        return self._by_node.get(node_id, _EMPTY)

    def waiting(self) -> Mapping[str, Task]:
        return self._waiting

    def service_ids(self) -> Iterator[str]:
        """Every service that has a task (removed services' included)."""
        return iter(self._by_service)

    # ------------------------------------------------------------------------- writes

    def _write(self, key: str, value: Task) -> None:
        if key != value.id:  # the indexes are by task id
            raise ValueError(f"task {value.id} stored under another id, {key}")
        old = dict.get(self, key)
        dict.__setitem__(self, key, value)
        if old is None:
            self._index(value)
        elif old.service_id == value.service_id and old.node_id == value.node_id:
            self._reindex(old, value)  # the common case: a task moves on where it is
        else:
            self._unindex(old)
            self._index(value)
        self.journal.note(TASK, key, value.service_id)

    def _delete(self, key: str) -> Task:
        value = dict.pop(self, key)
        self._unindex(value)
        self.journal.note(TASK, key, value.service_id)
        return value

    def _index(self, task: Task) -> None:
        self._bucket(self._by_service, self._own_services, task.service_id)[task.id] = task
        if task.node_id:
            self._bucket(self._by_node, self._own_nodes, task.node_id)[task.id] = task
        if waits_for_node(task):
            self._writable_waiting()[task.id] = task

    def _reindex(self, old: Task, new: Task) -> None:
        """`new` replaces `old` (same id, service and node) in place in the buckets."""
        self._bucket(self._by_service, self._own_services, new.service_id)[new.id] = new
        if new.node_id:
            self._bucket(self._by_node, self._own_nodes, new.node_id)[new.id] = new
        if waits_for_node(new):
            self._writable_waiting()[new.id] = new
        elif old.id in self._waiting:
            self._writable_waiting().pop(old.id)

    def _unindex(self, task: Task) -> None:
        self._drop(self._by_service, self._own_services, task.service_id, task.id)
        if task.node_id:
            self._drop(self._by_node, self._own_nodes, task.node_id, task.id)
        if task.id in self._waiting:
            self._writable_waiting().pop(task.id)

    @staticmethod
    def _bucket(index: dict[str, dict[str, Task]], own: set[str], key: str) -> dict[str, Task]:
        if key not in own:
            index[key] = dict(index.get(key, _EMPTY))
            own.add(key)
        return index[key]

    def _drop(
        self, index: dict[str, dict[str, Task]], own: set[str], key: str, task_id: str
    ) -> None:
        bucket = self._bucket(index, own, key)
        bucket.pop(task_id, None)
        if not bucket:
            del index[key]
            own.discard(key)

    def _writable_waiting(self) -> dict[str, Task]:
        if not self._own_waiting:
            self._waiting = dict(self._waiting)
            self._own_waiting = True
        return self._waiting

    def copy(self) -> TaskTable:
        """A copy sharing the index buckets (copy-on-write on both sides), with a new journal."""
        other = TaskTable.__new__(TaskTable)
        dict.update(other, self)
        other.journal = ChangeJournal()
        other._by_service = dict(self._by_service)
        other._by_node = dict(self._by_node)
        other._waiting = self._waiting
        other._own_services, other._own_nodes, other._own_waiting = set(), set(), False
        self._own_services, self._own_nodes, self._own_waiting = set(), set(), False
        return other


def index_problems(table: TaskTable) -> list[str]:
    """How `table`'s indexes differ from a fresh count (empty: none). For tests."""
    fresh = TaskTable(dict(table))
    problems = []
    for name in ("_by_service", "_by_node", "_waiting"):
        if getattr(fresh, name) != getattr(table, name):
            problems.append(name)
    return problems
