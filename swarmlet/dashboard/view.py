"""The dashboard's view model: what the screen shows, built from control API results.

`build_view` is pure: it takes the plain results of `status`, `node.ls`, `service.ls`,
`service.ps` and the events received so far, the previous view and the time, and returns a
frozen `View`. It never imports trio, time or socket; `render` and `screens` turn a View into
rich text.

Decisions, and why:

- An input of None means "not fetched this round" (the call failed or timed out): that part of
  the previous view is kept, so a dashboard that loses its agent keeps showing the last known
  state, marked as such, instead of going blank.
- Connection state: UNREACHABLE when `status` did not answer (the agent is gone, or hung);
  STALE when it answered but no leader did (`leader_id` is None, or a read came back
  `stale: true`), or when some other call failed; OK otherwise.
- Rates (proxy connections/s, bytes/s) are differences of the proxy's cumulative counters
  between two samples divided by the time between them. The first sample, a port seen for the
  first time, and a counter that went down (the agent restarted) give None: unknown, never a
  negative or made-up rate. The counters are the local agent's proxy only: each node has its
  own proxy, and `status` reports this node's.
- The task grid shows each slot's current tasks: those still wanted (desired running) or still
  alive (not yet terminal, e.g. an old replica stopping during a rolling update). A slot with
  none of these shows its newest task only if that one failed, was rejected or orphaned, and the
  slot still exists (replicated: slot <= replicas; global: the node is still known), since that
  is what needs attention; shut down and completed history is left to `service ps`.
- `history` keeps every task `service.ps` reported, for the drill-downs (a service's tasks with
  their history, a node's tasks, a slot's history); the grid and the Tasks pane use `tasks`.
- Events: the pane shows changes, not the raw feed (`swarmlet.dashboard.transitions`).
"""

from __future__ import annotations

import dataclasses
import enum
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from swarmlet.dashboard.transitions import EventRow as EventRow
from swarmlet.dashboard.transitions import changes

# How many events a view keeps; the screen never shows more than its height.
EVENTS_KEPT = 200

LIVE_STATES = frozenset({"new", "pending", "assigned", "starting", "running"})
ERROR_STATES = frozenset({"failed", "rejected", "orphaned"})
UPDATING_STATES = frozenset({"updating", "rollback_started"})
PAUSED_STATES = frozenset({"paused", "rollback_paused"})


class Connection(enum.StrEnum):
    OK = "ok"
    STALE = "stale"  # the agent answers but no leader did: its own last known state
    UNREACHABLE = "unreachable"  # the agent does not answer: the last state we saw


@dataclass(frozen=True, slots=True)
class ClusterSummary:
    cluster_id: str = ""
    node_id: str = ""  # the agent the dashboard talks to
    node_name: str = ""
    raft_role: str = ""
    term: int = 0
    commit_index: int = 0
    applied_index: int = 0
    leader_id: str | None = None
    leader_name: str = ""  # the leader's node name, or a short id if not in the node list
    gossip_members: int = 0
    gossip_alive: int = 0


@dataclass(frozen=True, slots=True)
class NodeRow:
    id: str
    name: str
    addr: str
    role: str  # manager | worker
    leader: bool
    raft: str  # voter | learner | none
    status: str  # ready | down
    availability: str  # active | pause | drain
    cpus: float
    cpu_percent: float
    memory_bytes: int
    memory_used_bytes: int
    tasks: int | None  # None: not known here (a worker knows its own tasks only)
    is_self: bool = False
    labels: tuple[tuple[str, str], ...] = ()  # sorted by key

    @property
    def down(self) -> bool:
        return self.status != "ready"


@dataclass(frozen=True, slots=True)
class PortRate:
    key: str  # "PORT/PROTO", as the proxy names it
    service: str
    connections: int  # cumulative since the agent started
    active: int
    bytes_in: int
    bytes_out: int
    errors: int
    connections_per_s: float | None  # None: unknown (first sample, or the counter was reset)
    bytes_per_s: float | None


@dataclass(frozen=True, slots=True)
class ServiceRow:
    id: str
    name: str
    mode: str  # replicated | global
    image: str
    stack: str
    version: int
    desired: int
    running: int
    updated: int  # running tasks at the current spec version
    ports: tuple[str, ...]  # "8080:80", "53:53/udp", "9000:90 (host)"
    update_state: str  # "" | updating | paused | completed | rollback_*
    update_message: str
    autoscaled: bool
    connections_per_s: float | None  # summed over the service's ports, this node's proxy
    active_connections: int | None

    @property
    def updating(self) -> bool:
        return self.update_state in UPDATING_STATES

    @property
    def paused(self) -> bool:
        return self.update_state in PAUSED_STATES

    @property
    def converging(self) -> bool:
        return self.running != self.desired


@dataclass(frozen=True, slots=True)
class TaskCell:
    id: str
    service: str
    slot: int  # 0 for a global service's task
    node_id: str  # "" while unassigned
    node_name: str
    state: str  # new .. running, complete, shutdown, failed, rejected, orphaned
    desired_state: str  # running | shutdown
    healthy: bool | None
    error: str
    updated_at: float
    message: str = ""  # the leader's word on it: why it is pending, what replaced it
    container_id: str = ""
    spec_version: int = 0
    created_at: float = 0.0
    endpoints: tuple[str, ...] = ()  # "127.0.0.2:32768->80/tcp": where its ports answer
    exit_code: int | None = None  # its container's, once it exited (see `exit_code_of`)


@dataclass(frozen=True, slots=True)
class View:
    now: float
    connection: Connection
    message: str  # why the connection is not OK ("" when it is)
    cluster: ClusterSummary
    nodes: tuple[NodeRow, ...]
    services: tuple[ServiceRow, ...]
    tasks: tuple[TaskCell, ...]  # current tasks only (see the module docstring)
    events: tuple[EventRow, ...]  # oldest first
    proxy: tuple[PortRate, ...] = ()
    proxy_sampled_at: float | None = None  # `now` of the proxy counters' sample
    updated_at: float | None = None  # when the agent last answered every call
    utc_offset_s: int = 0  # local time = UTC + this; event times are shown in local time
    history: tuple[TaskCell, ...] = ()  # every task `service.ps` reported, for the drill-downs

    @property
    def self_node(self) -> NodeRow | None:
        return next((n for n in self.nodes if n.is_self), None)

    @property
    def on_worker(self) -> bool:
        """The agent the dashboard talks to is a worker: cluster writes need a manager."""
        me = self.self_node
        return me is not None and me.role == "worker"


EMPTY_CLUSTER = ClusterSummary()


# ---------------------------------------------------------------------------- parsing helpers


def _map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else []


def _str(d: Mapping[str, Any], key: str, default: str = "") -> str:
    value = d.get(key)
    return default if value is None else str(value)


def _int(d: Mapping[str, Any], key: str) -> int:
    value = d.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0
    try:
        return int(value)
    except (OverflowError, ValueError):  # inf, nan
        return 0


def _float(d: Mapping[str, Any], key: str) -> float:
    value = d.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0.0
    return float(value)


def _opt_bool(d: Mapping[str, Any], key: str) -> bool | None:
    value = d.get(key)
    return value if isinstance(value, bool) else None


# ---------------------------------------------------------------------------- sections


def cluster_summary(status: Mapping[str, Any], nodes: Sequence[NodeRow]) -> ClusterSummary:
    raft = _map(status.get("raft"))
    gossip = _map(status.get("gossip"))
    leader_id = raft.get("leader_id")
    leader_id = str(leader_id) if leader_id else None
    leader_name = ""
    if leader_id is not None:
        names = {n.id: n.name for n in nodes}
        leader_name = names.get(leader_id, leader_id[:12])
    return ClusterSummary(
        cluster_id=_str(status, "cluster_id"),
        node_id=_str(status, "node_id"),
        node_name=_str(status, "name"),
        raft_role=_str(raft, "role"),
        term=_int(raft, "term"),
        commit_index=_int(raft, "commit_index"),
        applied_index=_int(raft, "applied_index"),
        leader_id=leader_id,
        leader_name=leader_name,
        gossip_members=_int(gossip, "members"),
        gossip_alive=_int(gossip, "alive"),
    )


def node_rows(result: Mapping[str, Any]) -> tuple[NodeRow, ...]:
    rows = []
    for raw in _list(result.get("nodes")):
        n = _map(raw)
        rows.append(
            NodeRow(
                id=_str(n, "id"),
                name=_str(n, "hostname"),
                addr=_str(n, "addr"),
                role=_str(n, "role"),
                leader=n.get("leader") is True,
                raft=_str(n, "raft"),
                status=_str(n, "status", "down"),
                availability=_str(n, "availability"),
                cpus=_float(n, "cpus"),
                cpu_percent=_float(n, "cpu_percent"),
                memory_bytes=_int(n, "memory_bytes"),
                memory_used_bytes=_int(n, "memory_used_bytes"),
                tasks=None if n.get("tasks") is None else _int(n, "tasks"),
                is_self=n.get("self") is True,
                labels=tuple(sorted((str(k), str(v)) for k, v in _map(n.get("labels")).items())),
            )
        )
    return tuple(rows)


def format_port(port: Mapping[str, Any]) -> str:
    text = f"{_int(port, 'published')}:{_int(port, 'target')}"
    if _str(port, "protocol", "tcp") != "tcp":
        text += f"/{_str(port, 'protocol')}"
    if _str(port, "mode", "ingress") == "host":
        text += " (host)"
    return text


def format_endpoint(endpoint: Mapping[str, Any]) -> str:
    host, port = _str(endpoint, "host"), _int(endpoint, "port")
    return f"{host}:{port}->{_int(endpoint, 'target')}/{_str(endpoint, 'protocol', 'tcp')}"


def port_rates(proxy: Mapping[str, Any], previous: View | None, now: float) -> tuple[PortRate, ...]:
    before = {p.key: p for p in previous.proxy} if previous is not None else {}
    elapsed_s = (
        now - previous.proxy_sampled_at
        if previous is not None and previous.proxy_sampled_at is not None
        else 0.0
    )
    rates = []
    for key in sorted(proxy, key=str):
        p = _map(proxy[key])
        connections = _int(p, "connections")
        moved = _int(p, "bytes_in") + _int(p, "bytes_out")
        old = before.get(str(key))
        conn_rate: float | None = None
        bytes_rate: float | None = None
        if old is not None and elapsed_s > 0:
            if connections >= old.connections:
                conn_rate = (connections - old.connections) / elapsed_s
            if moved >= old.bytes_in + old.bytes_out:
                bytes_rate = (moved - old.bytes_in - old.bytes_out) / elapsed_s
        rates.append(
            PortRate(
                key=str(key),
                service=_str(p, "service"),
                connections=connections,
                active=_int(p, "active"),
                bytes_in=_int(p, "bytes_in"),
                bytes_out=_int(p, "bytes_out"),
                errors=_int(p, "errors"),
                connections_per_s=conn_rate,
                bytes_per_s=bytes_rate,
            )
        )
    return tuple(rates)


_EXIT_IN_ERROR = re.compile(r"non-zero exit \((-?\d+)\)|exit code (-?\d+)")


def exit_code_of(task: Mapping[str, Any]) -> int | None:
    """The container's exit code: the task's `exit_code` if the agent reports one, else read
    from its error as the executor words it ("task: non-zero exit (137)"); 0 for a completed
    task; None while it has not exited, or when nothing says."""
    code = task.get("exit_code")
    if isinstance(code, int) and not isinstance(code, bool):
        return code
    match = _EXIT_IN_ERROR.search(_str(task, "error"))
    if match:
        return int(match.group(1) or match.group(2))
    return 0 if _str(task, "state") == "complete" else None


def task_cells(result: Mapping[str, Any]) -> list[TaskCell]:
    cells = []
    for raw in _list(result.get("tasks")):
        t = _map(raw)
        cells.append(
            TaskCell(
                id=_str(t, "id"),
                service=_str(t, "service"),
                slot=_int(t, "slot"),
                node_id=_str(t, "node"),
                node_name=_str(t, "node_name"),
                state=_str(t, "state"),
                desired_state=_str(t, "desired_state"),
                healthy=_opt_bool(t, "healthy"),
                error=_str(t, "error"),
                updated_at=_float(t, "updated_at"),
                message=_str(t, "message"),
                container_id=_str(t, "container_id"),
                spec_version=_int(t, "spec_version"),
                created_at=_float(t, "created_at"),
                endpoints=tuple(format_endpoint(_map(e)) for e in _list(t.get("endpoints"))),
                exit_code=exit_code_of(t),
            )
        )
    return cells


def current_tasks(
    tasks: Iterable[TaskCell], services: Sequence[ServiceRow], nodes: Sequence[NodeRow]
) -> tuple[TaskCell, ...]:
    """Each slot's current tasks (see the module docstring), by service, slot, then node."""
    desired = {s.name: (s.mode, s.desired) for s in services}
    node_ids = {n.id for n in nodes}
    groups: dict[tuple[str, int, str], list[TaskCell]] = {}
    for t in tasks:
        key = (t.service, t.slot, "" if t.slot else t.node_id)
        groups.setdefault(key, []).append(t)
    chosen: list[TaskCell] = []
    for (service, slot, node_id), group in groups.items():
        live = [t for t in group if t.desired_state == "running" or t.state in LIVE_STATES]
        if live:
            chosen.extend(live)
            continue
        newest = max(group, key=lambda t: t.updated_at)
        if newest.state not in ERROR_STATES:
            continue
        mode, replicas = desired.get(service, ("", 0))
        exists = (mode == "global" and node_id in node_ids) or (
            mode != "global" and slot <= replicas
        )
        if exists:
            chosen.append(newest)
    chosen.sort(key=lambda t: (t.service, t.slot, t.node_name, t.updated_at, t.id))
    return tuple(chosen)


def service_rows(
    result: Mapping[str, Any], proxy: Sequence[PortRate], tasks: Mapping[str, Any] | None
) -> tuple[ServiceRow, ...]:
    """Rows of `service.ls`; `tasks` (`service.ps`, all services) counts the updated replicas."""
    versions: dict[tuple[str, int], int] = {}
    if tasks is not None:
        for raw in _list(tasks.get("tasks")):
            t = _map(raw)
            if _str(t, "state") == "running" and _str(t, "desired_state") == "running":
                key = (_str(t, "service"), _int(t, "spec_version"))
                versions[key] = versions.get(key, 0) + 1
    rows = []
    for raw in _list(result.get("services")):
        s = _map(raw)
        name = _str(s, "name")
        update = _map(s.get("update_status"))
        mine = [p for p in proxy if p.service == name]
        known = [p.connections_per_s for p in mine if p.connections_per_s is not None]
        version = _int(s, "version")
        rows.append(
            ServiceRow(
                id=_str(s, "id"),
                name=name,
                mode=_str(s, "mode", "replicated"),
                image=_str(s, "image"),
                stack=_str(s, "stack"),
                version=version,
                desired=_int(s, "replicas_desired"),
                running=_int(s, "replicas_running"),
                updated=versions.get((name, version), 0),
                ports=tuple(format_port(_map(p)) for p in _list(s.get("ports"))),
                update_state=_str(update, "state"),
                update_message=_str(update, "message"),
                autoscaled=bool(s.get("autoscale")),
                connections_per_s=sum(known) if known else None,
                active_connections=sum(p.active for p in mine) if mine else None,
            )
        )
    return tuple(rows)


def event_rows(
    events: Iterable[Mapping[str, Any]], tasks: Iterable[TaskCell] = ()
) -> tuple[EventRow, ...]:
    """The events pane's lines: changes only (`swarmlet.dashboard.transitions`), newest last.
    A task event whose subject is a task's id (the executor's) is named as the leader's are
    (`web.3`), from `tasks`, so that it reads and groups like them."""
    names = {t.id: f"{t.service}.{t.slot or t.node_name or t.node_id[:8]}" for t in tasks}
    rows = []
    for e in (_map(raw) for raw in events):
        type_, subject = _str(e, "type"), _str(e, "subject")
        if type_ == "task" and subject in names:
            subject = names[subject]
        rows.append(
            EventRow(
                seq=_int(e, "seq"),
                time=_float(e, "time"),
                type=type_,
                action=_str(e, "action"),
                subject=subject,
                message=_str(e, "message"),
            )
        )
    return tuple(changes(rows)[-EVENTS_KEPT:])


def with_events(view: View, events: Iterable[Mapping[str, Any]]) -> View:
    """The same view with a newer event feed (events arrive between polls)."""
    return dataclasses.replace(view, events=event_rows(events, view.history))


# ---------------------------------------------------------------------------- the view


def build_view(
    status: Mapping[str, Any] | None,
    nodes: Mapping[str, Any] | None,
    services: Mapping[str, Any] | None,
    tasks: Mapping[str, Any] | None,
    events: Iterable[Mapping[str, Any]],
    previous: View | None,
    now: float,
    *,
    error: str = "",
    utc_offset_s: int = 0,
) -> View:
    """The view after one poll. None for a result means that call failed this round; `error`
    says why (the first failure's message)."""
    node_list = node_rows(nodes) if nodes is not None else (previous.nodes if previous else ())
    if status is not None:
        cluster = cluster_summary(status, node_list)
    else:
        cluster = previous.cluster if previous is not None else EMPTY_CLUSTER

    proxy_raw = status.get("proxy") if status is not None else None
    if isinstance(proxy_raw, Mapping):
        proxy = port_rates(proxy_raw, previous, now)
        sampled_at: float | None = now
    elif status is not None:  # an agent without proxy statistics
        proxy, sampled_at = (), None
    else:  # keep the last sample: the next rate spans the gap, which is still right
        proxy = previous.proxy if previous is not None else ()
        sampled_at = previous.proxy_sampled_at if previous is not None else None

    if services is not None:
        service_list = service_rows(services, proxy, tasks)
    else:
        service_list = previous.services if previous is not None else ()
    if tasks is not None:
        history = tuple(task_cells(tasks))
        task_list = current_tasks(history, service_list, node_list)
    else:
        task_list = previous.tasks if previous is not None else ()
        history = previous.history if previous is not None else ()

    complete = None not in (status, nodes, services, tasks) and not error
    updated_at = now if complete else (previous.updated_at if previous is not None else None)

    if status is None:
        connection = Connection.UNREACHABLE
        message = "agent unreachable"
        if updated_at is not None:
            message += f", showing the state of {max(0.0, now - updated_at):.0f} s ago"
        message += f": {error or 'no answer'}"
    else:
        stale = cluster.leader_id is None or any(
            r is not None and r.get("stale") is True for r in (nodes, services)
        )
        if stale:
            connection = Connection.STALE
            role = f" (this node: raft {cluster.raft_role}, term {cluster.term})"
            message = "no leader answered: showing this node's last known state" + (
                role if cluster.raft_role else ""
            )
        elif error:
            connection = Connection.STALE
            message = f"partial update: {error}"
        else:
            connection, message = Connection.OK, ""

    return View(
        now=now,
        connection=connection,
        message=message,
        cluster=cluster,
        nodes=node_list,
        services=service_list,
        tasks=task_list,
        events=event_rows(events, history),
        proxy=proxy,
        proxy_sampled_at=sampled_at,
        updated_at=updated_at,
        utc_offset_s=utc_offset_s,
        history=history,
    )
