"""What the control API needs from the agent it runs in, as two narrow Protocols.

The handlers in `swarmlet.api` answer the `swarmlet` command on behalf of one agent, but they
must not know how that agent is put together: the composition root sits above the API and is
free to change its wiring. So the handlers name only what they use, here, and the agent
satisfies these Protocols structurally (nothing registers or inherits).

- `ClusterAccess`: the replicated cluster as seen through this node: the local replica of the
  state, a barrier that makes reading it linearizable, writes forwarded to the leader, and the
  key ring that says whether this node is a manager. Secret and stack operations need no more.
- `LocalAgent`: that plus this node's own view: its identity, the Raft and gossip drivers (for
  status and leadership), liveness, names and gossip metadata of the other nodes, what
  `leader.observation.observe` reads to join the observed tasks, the proxy, the executor (for
  logs), the event feed, and leaving.

Members are read-only properties: the handlers read the agent's parts and never replace them.
Every type here comes from a package below the API; the event feed is itself a Protocol because
its implementation belongs to the node.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, Protocol, TypeVar

from swarmlet.crypto import ClusterKeys
from swarmlet.executor.driver import Executor
from swarmlet.executor.hostinfo import HostInfo
from swarmlet.gossip.driver import GossipDriver
from swarmlet.leader.observation import ObservationSource, ObservedView
from swarmlet.proxy.mesh import Proxy
from swarmlet.raft.driver import RaftDriver
from swarmlet.security.datadir import Identity
from swarmlet.security.keyring import KeyRing
from swarmlet.state.commands import Command
from swarmlet.state.machine import ApplyResult, ClusterState
from swarmlet.wire.transport import FramedStream, Transport

T = TypeVar("T")

PeerStreamHandler = Callable[[FramedStream, Any], Awaitable[None]]


class ClusterEvent(Protocol):
    """One entry of the event feed, as `swarmlet events` prints it."""

    @property
    def type(self) -> str: ...

    def to_dict(self) -> dict[str, Any]: ...


class EventFeed(Protocol):
    """The agent's recent events, and a way to follow new ones."""

    def since(self, t: float) -> Iterable[ClusterEvent]: ...

    def follow(self, since: float) -> AsyncIterator[ClusterEvent]: ...


class StateSource(Protocol):
    """Where a node's state comes from now (`node.replica_source`): its Raft replica, or a
    worker's session."""

    @property
    def leader_id(self) -> str | None: ...

    @property
    def applied(self) -> int: ...


class SessionStatus(Protocol):
    """A worker's session (`node.worker_sessions`), as `status` shows it."""

    @property
    def manager_id(self) -> str | None: ...

    @property
    def applied(self) -> int: ...

    @property
    def live(self) -> bool: ...


class ClusterAccess(Protocol):
    """The replicated cluster through this node: read it, wait until it is current, write it."""

    @property
    def state(self) -> ClusterState:
        """This node's replica (possibly behind the leader until `read_barrier` returns)."""
        ...

    @property
    def keyring(self) -> KeyRing:
        """This node's keys; `require_managers()` refuses on a node that is not a manager."""
        ...

    @property
    def replica(self) -> StateSource:
        """Where `state` comes from now: the leader it knows, the index it reflects."""
        ...

    def reads_view(self) -> bool:
        """Whether `state` is a worker's view (`state.worker_view`): only this node's part."""
        ...

    async def read_barrier(self) -> bool:
        """Wait until the replica holds every write committed so far; False if no leader
        answered (the caller then serves the local state and says it may be stale)."""
        ...

    async def write(self, command: Command) -> ApplyResult:
        """Commit `command` through the leader and return how the state machine applied it."""
        ...


class LocalAgent(ClusterAccess, ObservationSource, Protocol):
    """The agent the control API runs in: the cluster, plus this node's own view of it
    (`ObservationSource` brings its id, the gossip metadata and the observed tasks)."""

    @property
    def identity(self) -> Identity: ...

    @property
    def keys(self) -> ClusterKeys: ...

    @property
    def raft(self) -> RaftDriver[ApplyResult]: ...

    @property
    def gossip(self) -> GossipDriver: ...

    @property
    def worker_session(self) -> SessionStatus: ...

    @property
    def transport(self) -> Transport: ...

    @property
    def proxy(self) -> Proxy: ...

    @property
    def host(self) -> HostInfo:
        """This node's capacity and load, as last read."""
        ...

    @property
    def executor(self) -> Executor | None:
        """This node's task driver; None while the container runtime is unavailable."""
        ...

    @property
    def events(self) -> EventFeed: ...

    @property
    def stream_handlers(self) -> dict[type, PeerStreamHandler]:
        """Handlers of agent-to-agent streams, by the type of their first message."""
        ...

    def is_ready(self, node_id: str) -> bool:
        """Whether `node_id` counts as up: alive or merely suspected in gossip; this node is."""
        ...

    def node_name(self, node_id: str) -> str: ...

    def observed(self) -> ObservedView:
        """What this node observes of every task now (`leader.observation.observe`), kept
        current at the cost of what changed; live until the next call."""
        ...

    async def run_with_state_still(self, read: Callable[[], T]) -> T:
        """`read()` (of the state only) off the event loop, the state held still meanwhile."""
        ...

    async def leave(self) -> None:
        """Leave the cluster (gossip) and stop the agent."""
        ...
