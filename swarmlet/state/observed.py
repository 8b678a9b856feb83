"""The observed state: what each agent reports about itself, and by which path.

Two paths, by what a fact costs to spread (issue #16):

- Gossip carries one `NodeMeta` per node, of a fixed size whatever the node runs: who it is, its
  resources and load, its view of Raft. Every member holds every member's, so it must stay small.
- Task statuses (`TaskObservation`: state, container, health, endpoints) go to the leader in
  `StatusReport`s, sent only for what changed, and are committed in batches through Raft
  (`commands.ReportTasks`, held in `ClusterState.task_status`), as Swarm's dispatcher and Nomad's
  `Node.UpdateAlloc` do. So a change costs the same whatever the node runs, every replica holds
  the same statuses, and the routing mesh keeps its routes while there is no leader. The figures
  only the leader uses (per-task CPU and memory, proxy connection counts, for autoscaling) ride
  along in `NodeLoad` and are held in the leader's memory, never committed.

Observed state is advisory: the leader acts on it, but only through commands committed to the
replicated state.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

from swarmlet.errors import RemoteProtocolError
from swarmlet.state.model import TaskState
from swarmlet.wire import catalog
from swarmlet.wire import codec as wire
from swarmlet.wire.hosts import is_port


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where one replica's target port answers: the node's advertise host and Docker's host port."""

    target: int
    protocol: str
    host: str
    port: int


@dataclass(frozen=True, slots=True)
class TaskObservation:
    task_id: str
    state: TaskState
    container_id: str = ""
    error: str = ""
    healthy: bool | None = None  # None: the task has no health check
    endpoints: tuple[Endpoint, ...] = ()
    exit_code: int | None = None
    since: float = 0.0  # wall-clock time of the last state change


PROTOCOLS = ("tcp", "udp")
# A task on a network publishes its image's EXPOSE ports beside its spec's, so that the other
# nodes' proxies reach them at the service's virtual addresses (`executor.task_container`): at
# most this many (the executor publishes no more, and the leader cuts a status to them).
MAX_EXPOSED_PORTS = 1024


def endpoint_is_well_formed(endpoint: Endpoint) -> bool:
    """Ports a socket takes and a protocol the proxy relays: a port out of range made the
    proxy's `connect` raise OverflowError, which stopped the agent on every node routing to it.
    (The host is checked against the reporting node's address: `leader.observation`.)"""
    return is_port(endpoint.port) and is_port(endpoint.target) and endpoint.protocol in PROTOCOLS


def status_bytes(obs: TaskObservation) -> int:
    """An upper bound on a status's encoding: its fields, and each endpoint's four."""
    fields = 128 + len(obs.task_id) + len(obs.container_id) + len(obs.error)
    return fields + sum(32 + len(e.host) for e in obs.endpoints)


def effective_state(recorded: TaskState, obs: TaskObservation | None) -> TaskState:
    """The later of a task's recorded state and what its node observed (None: nothing yet).

    Task states only move forward, so whichever of the two is further along is the truth: an
    agent's report runs ahead of the record (RUNNING while the record says ASSIGNED), and the
    record runs ahead of a stale report (the orchestrator wrote ORPHANED for a node that died).
    Pure; the orchestrator, `depends_on` and the control API all read states through it."""
    return max(recorded, obs.state) if obs is not None else recorded


@dataclass(frozen=True, slots=True)
class TaskLoad:
    """One running replica's last measured use (autoscaled services only)."""

    task_id: str
    cpu_percent: float  # of one core
    memory_bytes: int


@dataclass(frozen=True, slots=True)
class NodeLoad:
    """What a node measures for the leader's autoscaler: sent with its status reports, held in
    the leader's memory, never committed (it changes every few seconds and is worthless later)."""

    tasks: tuple[TaskLoad, ...] = ()
    # Per service name: connections accepted so far by this node's proxy (cumulative).
    proxy_connections: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class NodeMeta:
    """A node's gossip metadata: of a bounded size whatever the node runs (names are bounded)."""

    name: str
    role: str
    addr: str
    publish_host: str
    nano_cpus: int
    memory_bytes: int
    cpu_percent: float = 0.0  # host load, percent of all cores
    memory_used_bytes: int = 0
    raft_term: int = 0
    raft_commit: int = 0
    leader_id: str = ""
    version: int = 0  # bumped by the agent on every change, so identical metas are recognisable


# How far the host's load must move from the published figure before it is published again. The
# load is shown (`node ls`, the dashboard), not acted on; each republication is a signed Alive
# that every member verifies and relays. With 10% buckets an idle host's load, jittering across
# a bucket's edge, republished every ~3 s on each of 10 agents: 17 of an idle agent's 24
# datagrams a second (issue #20).
LOAD_REPUBLISH_POINTS = 20.0


def meta_news(published: NodeMeta | None, current: NodeMeta) -> bool:
    """Whether `current` says something that `published` (what gossip spreads now) does not, enough
    to spread it: what members act on (name, role, Raft term and leader) at once; the load only
    once it has moved by `LOAD_REPUBLISH_POINTS` (a hysteresis: jitter never flaps it)."""
    if published is None:
        return True
    if _acted_on(published) != _acted_on(current):
        return True
    return abs(current.cpu_percent - published.cpu_percent) >= LOAD_REPUBLISH_POINTS


def _acted_on(meta: NodeMeta) -> tuple[str, str, int, str]:
    return meta.name, meta.role, meta.raft_term, meta.leader_id


@dataclass(frozen=True, slots=True)
class StatusReport:
    """A node tells the leader what changed on it since what its replica of the state shows.

    The sender is the connection's certificate; the leader commits the statuses as
    `ReportTasks` in that node's name (`node.status_reports`). A connection that opens with a
    report carries any number of them, one answered before the next is sent.
    """

    seq: int
    statuses: tuple[TaskObservation, ...] = ()
    # "PORT/PROTO" -> why this node's proxy cannot listen there; None: unchanged.
    port_errors: dict[str, str] | None = None
    load: NodeLoad | None = None  # None: nothing new measured


@dataclass(frozen=True, slots=True)
class StatusReportReply:
    seq: int
    ok: bool
    error: str = ""
    index: int = 0  # the leader's applied index once the statuses are committed
    not_leader: bool = False
    leader_hint: str = ""


# Only append: ids are permanent.
WIRE_TYPES: tuple[type, ...] = (
    Endpoint,
    TaskObservation,
    NodeMeta,
    TaskLoad,
    NodeLoad,
    StatusReport,
    StatusReportReply,
)
wire.register_all(catalog.STATE_OBSERVED, WIRE_TYPES)


def encode_meta(meta: NodeMeta) -> bytes:
    return wire.encode(meta)


@functools.lru_cache(maxsize=4096)
def decode_meta(data: bytes) -> NodeMeta | None:
    """A peer's metadata, or None if it is empty or malformed (the caller counts it). Cached:
    a node's metadata changes seldom, and the leader's every orchestration pass and every
    proxy's every route update read all of them (decoding the same bytes again was half of an
    orchestration pass under write load, in a py-spy profile of the leader)."""
    if not data:
        return None
    try:
        meta = wire.decode(data, expect=(NodeMeta,))
    except RemoteProtocolError:
        return None
    assert isinstance(meta, NodeMeta)
    return meta
