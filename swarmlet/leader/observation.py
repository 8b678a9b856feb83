"""The observed state as this node sees it now, and when a node counts as ready.

Desired state comes from Raft; observed state comes from three places: each node's task
statuses, committed through Raft (`ClusterState.task_status`, reported by the nodes themselves,
`node.status_reports`); each member's gossip metadata (capacity, load) and liveness; and, for
this node, its own executor, which is fresher than what it has reported. `observe` joins them
into the `Observed` value the orchestrator, the autoscaler, the control API and every proxy's
routes read. It is a pure function of what an `ObservationSource` answers at the moment of the
call.

`counts_as_ready` is the one place that turns a gossip member state into readiness; the agent's
own `is_ready`, the voter policy's set of live nodes and `observe` all go through it.

A node's report is its own claim, so it is believed only about what the replicated state gives
that node (issue #15): its own tasks (`report_refusal`, checked by the leader before it commits a
report, and again by the state machine), with endpoints on its own address (`endpoint_refusal`,
checked here, by each observer, since whether a loopback endpoint is usable depends on where the
observer is). What `observe` refuses is counted by reason in `ObservedView.refused`.

Must not know: how the node is put together (it reads only the `ObservationSource` members),
Raft, trio, time.
"""

from __future__ import annotations

import copy
import dataclasses
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Protocol

from swarmlet.gossip.messages import MemberState
from swarmlet.leader.orchestrator.context import Observed
from swarmlet.leader.scheduler import ObservedNode
from swarmlet.state.machine import ClusterState
from swarmlet.state.model import Resources
from swarmlet.state.observed import Endpoint, NodeMeta, TaskObservation, endpoint_is_well_formed
from swarmlet.wire.hosts import host_of, ip_of, same_host

# Why `observe` dropped a report or an endpoint: the keys of `ObservedView.refused`.
REFUSED_UNKNOWN_TASK = "report_unknown_task"  # not in this replica (yet, or any more)
REFUSED_OTHER_NODES_TASK = "report_other_nodes_task"  # assigned to another node, or to none
REFUSED_SPECIAL_ADDRESS = "endpoint_special_address"  # unspecified, link-local or multicast
REFUSED_FOREIGN_HOST = "endpoint_foreign_host"  # not the reporting node's own address
REFUSED_LOOPBACK = "endpoint_loopback"  # a loopback address seen from another host
REFUSED_MALFORMED = "endpoint_malformed"  # a port out of 1-65535, or neither tcp nor udp


def counts_as_ready(member_state: MemberState | None, *, is_self: bool = False) -> bool:
    """Whether a node counts as ready, given its gossip member state (None: not a member yet).

    This node always is: it is running this code. Another node is ready while gossip holds it
    ALIVE or SUSPECT, and not once it is DEAD, has LEFT or was never heard of.
    """
    if is_self:
        return True
    # SWIM §4.2 (suspicion subprotocol), kept by Lifeguard: a suspected member is still treated
    # as a member until the suspicion times out and it is declared failed (DEAD). Counting it as
    # down at once would move its tasks and voter seat on one missed probe, the false positive
    # that suspicion exists to absorb.
    return member_state in _MEMBERS


_MEMBERS = frozenset({MemberState.ALIVE, MemberState.SUSPECT})  # once, not per call (#16)


class ObservationSource(Protocol):
    """What `observe` reads from the node it runs on."""

    @property
    def node_id(self) -> str:
        """This node's id."""
        ...

    @property
    def state(self) -> ClusterState:
        """The local replica of the desired state (its nodes are the ones observed)."""
        ...

    @property
    def down_since(self) -> Mapping[str, float]:
        """Since when each node that gossip declared failed or gone has been down."""
        ...

    def member_state(self, node_id: str) -> MemberState | None:
        """`node_id`'s state in gossip; None if gossip has not heard of it."""
        ...

    def node_meta(self, node_id: str) -> NodeMeta | None:
        """What `node_id` last published in gossip; None if nothing (readable) yet."""
        ...

    def local_observations(self) -> tuple[TaskObservation, ...]:
        """This node's tasks as its executor observes them now."""
        ...


@dataclass(frozen=True)
class ObservedView(Observed):
    """`Observed`, with what `observe` refused to believe, by reason (`REFUSED_*`).

    The counts are of this call only, not a running total: `observe` keeps no state, so a
    report refused while this replica lags is accepted by the first call after it catches up,
    and a lasting count means a node keeps claiming what is not its own.
    """

    refused: Mapping[str, int] = field(default_factory=dict)


def report_refusal(state: ClusterState, reporter: str, task_id: str) -> str | None:
    """Why `reporter`'s report about `task_id` is not believed; None if it is.

    A node speaks only for the tasks the replicated state assigns to it. A task's node never
    changes once assigned (`ClusterState.apply` refuses that), so the check is stable; without
    it, any node could publish RUNNING with its own endpoint for another node's task and take
    its traffic (issue #15, item 4).
    """
    task = state.tasks.get(task_id)
    if task is None:
        return REFUSED_UNKNOWN_TASK
    if task.node_id != reporter:
        return REFUSED_OTHER_NODES_TASK
    return None


def endpoint_refusal(host: str, *, owner_addr: str, observer_addr: str) -> str | None:
    """Why an endpoint on `host`, reported by the node whose `Node.addr` is `owner_addr`, is not
    used by the node whose `Node.addr` is `observer_addr` ("" if unknown); None if it is.

    What a legitimate endpoint looks like: the executor publishes each container port with
    Docker on the node's advertise host (`task_endpoints(info, identity.advertise_host)`), and
    `Node.addr` is `advertise_host:port`. So an endpoint's host is exactly the host part of its
    node's `addr`, the address the cluster knows that node by; the port is Docker's pick, and
    cannot be checked. Nothing publishes on `publish_addr` (where the proxy listens, often
    0.0.0.0, and checked by nobody) or on a container's bridge address, so neither is accepted.
    On top of that:
    - never an unspecified, link-local or multicast address: none is a node's address, and a
      proxy would connect to something of its own (169.254.169.254 is a cloud's metadata
      service);
    - a loopback address only between nodes that are both on loopback addresses, i.e. a
      cluster on one host (tests, `127.0.0.N`): seen from any other host it names the
      observer's own loopback, where a node could point every proxy at a local service.
    """
    ip = ip_of(host)
    if ip is not None and (ip.is_unspecified or ip.is_link_local or ip.is_multicast):
        return REFUSED_SPECIAL_ADDRESS
    if not same_host(host, host_of(owner_addr)):
        return REFUSED_FOREIGN_HOST
    if _is_loopback(host) and not _is_loopback(host_of(observer_addr)):
        return REFUSED_LOOPBACK
    return None


def _is_loopback(host: str) -> bool:
    ip = ip_of(host)
    if ip is None:
        name = host.lower().rstrip(".")
        return name == "localhost" or name.endswith(".localhost")  # RFC 6761 §6.3
    return ip.is_loopback


def _vetted(
    obs: TaskObservation, owner_addr: str, observer_addr: str, refused: Counter[str]
) -> TaskObservation:
    """`obs` without the endpoints `endpoint_refusal` refuses (the rest of it stays true)."""
    kept: list[Endpoint] = []
    for e in obs.endpoints:
        reason = endpoint_refusal(e.host, owner_addr=owner_addr, observer_addr=observer_addr)
        if not endpoint_is_well_formed(e):  # the intake refuses these; committed before it did
            reason = REFUSED_MALFORMED
        if reason is None:
            kept.append(e)
        else:
            refused[reason] += 1
    if len(kept) == len(obs.endpoints):
        return obs
    return dataclasses.replace(obs, endpoints=tuple(kept))


def is_ready(source: ObservationSource, node_id: str) -> bool:
    """`counts_as_ready` for `node_id`, as `source` sees it."""
    return counts_as_ready(source.member_state(node_id), is_self=node_id == source.node_id)


def ready_node_ids(source: ObservationSource) -> set[str]:
    """The nodes of the desired state that count as ready."""
    return {node_id for node_id in source.state.nodes if is_ready(source, node_id)}


def observe(source: ObservationSource) -> ObservedView:
    """The observed state now: each node's committed reports about its own tasks, with
    endpoints on its own address only, and this node's executor's own view of its tasks."""
    state = source.state
    nodes = _observed_nodes(source)
    tasks: dict[str, TaskObservation] = {}
    refused: Counter[str] = Counter()
    observer_addr = _observer_addr(source)
    for obs in state.task_status.values():
        vetted = _committed(source, nodes, observer_addr, obs, refused)
        if vetted is not None:
            tasks[obs.task_id] = vetted
    # This node's own executor, in this process: nothing to vet, and fresher than its reports.
    for obs in source.local_observations():
        tasks[obs.task_id] = obs
    return ObservedView(nodes=nodes, tasks=tasks, refused=dict(refused))


def _observer_addr(source: ObservationSource) -> str:
    me = source.state.nodes.get(source.node_id)
    return me.addr if me is not None else ""  # not recorded yet: no loopback endpoint


def _observed_nodes(source: ObservationSource) -> dict[str, ObservedNode]:
    nodes: dict[str, ObservedNode] = {}
    for node_id in source.state.nodes:
        is_self = node_id == source.node_id
        member_state = None if is_self else source.member_state(node_id)
        if not is_self and member_state is None:
            # Not heard of yet (e.g. just after a failover): no verdict, so the orchestrator
            # neither places new tasks there nor writes its tasks off.
            continue
        meta = source.node_meta(node_id)
        total = Resources(meta.nano_cpus, meta.memory_bytes) if meta is not None else None
        nodes[node_id] = ObservedNode(
            node_id=node_id,
            ready=counts_as_ready(member_state, is_self=is_self),
            total=total,
            changed_at=source.down_since.get(node_id, 0.0),
        )
    return nodes


def _committed(
    source: ObservationSource,
    nodes: Mapping[str, ObservedNode],
    observer_addr: str,
    obs: TaskObservation,
    refused: Counter[str],
) -> TaskObservation | None:
    """What `observe` believes of one committed status (None: not taken from the state)."""
    state = source.state
    task = state.tasks.get(obs.task_id)
    # The state machine holds only statuses reported by each task's own node.
    if task is None or task.node_id == source.node_id or task.node_id not in nodes:
        return None  # this node's own come from its executor
    return _vetted(obs, state.nodes[task.node_id].addr, observer_addr, refused)


@dataclass(frozen=True)
class LiveInputs:
    """What an observation reads besides the state: gossip's verdicts and metadata, and this
    node's executor. The event loop changes them as it runs, so they are read on it; the rest
    of a refresh reads the state only, and may run in a thread while the state is held still."""

    nodes: dict[str, ObservedNode]
    local: tuple[TaskObservation, ...]


def live_inputs(source: ObservationSource) -> LiveInputs:
    return LiveInputs(_observed_nodes(source), tuple(source.local_observations()))


class ObservationCache:
    """`observe`, kept current from one call to the next at the cost of what changed.

    `observe` vets every committed status on every call: at 100,000 tasks that is 0.3 s of the
    leader's pass for a single change (issue #16). `refresh` gives the same value (tests compare
    them) by re-vetting only the statuses the state's change journal names, and those of the
    nodes whose record or whose presence in the observed nodes changed; the nodes themselves
    (gossip verdicts and metadata, one per node) are read anew on each call. It also says which
    tasks' observations changed since the previous call (`changed_tasks`), which the leader's
    scoped passes need (`orchestrator.incremental`). The tasks of the value it returns are a
    live view: valid until the next `refresh`. When it cannot tell (another state object,
    a journal that forgot, another observer address) it starts over, as `observe` would.
    """

    def __init__(self) -> None:
        self.changed_tasks: set[str] = set()  # by the last `refresh` (all: after a start-over)
        self._state: ClusterState | None = None
        self._mark = 0
        self._observer = ("", "")  # (node id, addr)
        self._nodes: dict[str, ObservedNode] = {}
        self._committed: dict[str, TaskObservation] = {}
        self._refused: dict[str, Counter[str]] = {}  # task id -> what its status lost
        self._local: dict[str, TaskObservation] = {}
        self._view: dict[str, TaskObservation] = {}

    def copy(self) -> ObservationCache:
        """An independent copy (to measure a pass without disturbing this one)."""
        other = copy.copy(self)
        other._committed, other._refused = dict(self._committed), dict(self._refused)
        other._view, other._local = dict(self._view), dict(self._local)
        return other

    def refresh(self, source: ObservationSource, live: LiveInputs | None = None) -> ObservedView:
        """`live`: what `live_inputs` read of `source` on the event loop, for a refresh that runs
        off it (the leader's pass: `leader.duties`); read here if not given."""
        live = live or live_inputs(source)
        state = source.state
        observer = (source.node_id, _observer_addr(source))
        nodes = live.nodes
        changes = state.journal.since(self._mark) if state is self._state else None
        self._mark = state.journal.mark()
        before = self._view
        if changes is None or observer != self._observer:
            self._state, self._observer = state, observer
            self._committed, self._refused = {}, {}
            recheck: set[str] = set(state.task_status)
            self._view = {}
        else:
            recheck = changes.statuses | changes.tasks.keys()
            # A node whose record (its address) changed, or that came into or went out of the
            # observed nodes: its tasks' statuses are vetted anew.
            for node_id in changes.nodes | (nodes.keys() ^ self._nodes.keys()):
                recheck.update(state.tasks.on_node(node_id))
        self._nodes = nodes
        for task_id in recheck:
            self._refused.pop(task_id, None)
            obs = state.task_status.get(task_id)
            refused: Counter[str] = Counter()
            vetted = None if obs is None else _committed(source, nodes, observer[1], obs, refused)
            if refused:
                self._refused[task_id] = refused
            if vetted is None:
                self._committed.pop(task_id, None)
            else:
                self._committed[task_id] = vetted
        local = {obs.task_id: obs for obs in live.local}
        touched = recheck | local.keys() | self._local.keys()
        self._local = local
        old = {t: before.get(t) for t in touched} if self._view is before else before
        for task_id in touched:
            obs = local.get(task_id) or self._committed.get(task_id)
            if obs is None:
                self._view.pop(task_id, None)
            else:
                self._view[task_id] = obs
        self.changed_tasks = {
            t
            for t in old.keys() | touched
            if (was := old.get(t)) is not (now := self._view.get(t)) and was != now
        }
        refused_total: Counter[str] = Counter()
        for counts in self._refused.values():
            refused_total.update(counts)
        # The tasks are a read-only view of the kept dict, not a copy (100,000 entries to copy
        # and for the garbage collector to walk, per pass): valid until the next `refresh`.
        return ObservedView(
            nodes=nodes, tasks=MappingProxyType(self._view), refused=dict(refused_total)
        )
