"""Request/reply messages between agents over the cluster TCP channel (one request per connection).

Writes reach the leader through `ProposeRequest`: any agent may accept a write from its user and
forward it; the reply carries the log index so the forwarder can wait until it has applied the
write itself (read-your-writes on every node).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ProposeRequest:
    command: bytes  # a wire-encoded `swarmlet.state.Command`


@dataclass(frozen=True, slots=True)
class ProposeReply:
    ok: bool
    error: str = ""
    value: str = ""
    index: int = 0
    not_leader: bool = False
    leader_hint: str = ""


@dataclass(frozen=True, slots=True)
class JoinRequest:
    node_id: str
    name: str
    name_is_explicit: bool
    addr: str
    publish_addr: str
    nano_cpus: int
    memory_bytes: int


@dataclass(frozen=True, slots=True)
class JoinReply:
    ok: bool
    error: str = ""
    cluster_id: str = ""
    master_key: bytes = b""
    name: str = ""
    role: str = ""
    seeds: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class LogsRequest:
    """Ask a node for the logs of the containers of some tasks it runs (for `service logs`)."""

    task_ids: tuple[str, ...]
    follow: bool
    tail: int


@dataclass(frozen=True, slots=True)
class LogLine:
    task_id: str
    line: bytes


@dataclass(frozen=True, slots=True)
class EndOfStream:
    error: str = ""


# Only append: ids are permanent.
MESSAGES: tuple[type, ...] = (
    ProposeRequest,
    ProposeReply,
    JoinRequest,
    JoinReply,
    LogsRequest,
    LogLine,
    EndOfStream,
)
