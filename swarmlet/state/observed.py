"""The observed state: what each agent reports about itself through gossip.

Every agent publishes one `NodeMeta` as its gossip metadata: who it is, its resources and load,
and the actual state of the tasks it runs (with their published endpoints). The gossip layer treats
it as opaque bytes and spreads it (piggybacked Alive messages and push-pull), so every agent
converges on the same picture without the leader, which is what lets the routing mesh keep working
while there is no leader.

Observed state is advisory and eventually consistent: the leader acts on it, but only through
commands committed to the replicated state.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from swarmlet.errors import RemoteProtocolError
from swarmlet.state.model import TaskState
from swarmlet.wire import catalog
from swarmlet.wire import codec as wire


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
    cpu_percent: float = 0.0  # of one core
    memory_bytes: int = 0


@dataclass(frozen=True, slots=True)
class NodeMeta:
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
    tasks: tuple[TaskObservation, ...] = ()
    # Per service: connections accepted so far by this node's proxy (autoscaling, dashboard).
    proxy_connections: dict[str, int] = field(default_factory=dict)
    version: int = 0
    # "PORT/PROTO" -> why this node's proxy cannot listen there (e.g. the port is taken).
    port_errors: dict[str, str] = field(
        default_factory=dict
    )  # bumped by the agent on every change, so identical metas are recognisable


WIRE_TYPES: tuple[type, ...] = (Endpoint, TaskObservation, NodeMeta)
wire.register_all(catalog.STATE_OBSERVED, WIRE_TYPES)


def encode_meta(meta: NodeMeta) -> bytes:
    return wire.encode(meta)


def decode_meta(data: bytes) -> NodeMeta | None:
    """A peer's metadata, or None if it is empty or malformed (the caller counts it)."""
    if not data:
        return None
    try:
        meta = wire.decode(data, expect=(NodeMeta,))
    except RemoteProtocolError:
        return None
    assert isinstance(meta, NodeMeta)
    return meta
