"""The observed state as this node sees it now, and when a node counts as ready.

Desired state comes from Raft; observed state comes from gossip (each member's metadata carries
its task observations and capacity) and, for this node, from its own executor. `observe` joins
them into the `Observed` value the orchestrator, the autoscaler and the control API read. It is
a pure function of what an `ObservationSource` answers at the moment of the call.

`counts_as_ready` is the one place that turns a gossip member state into readiness; the agent's
own `is_ready`, the voter policy's set of live nodes and `observe` all go through it.

Must not know: how the node is put together (it reads only the `ObservationSource` members),
Raft, trio, time.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from swarmlet.gossip.messages import MemberState
from swarmlet.leader.orchestrator.context import Observed
from swarmlet.leader.scheduler import ObservedNode
from swarmlet.state.machine import ClusterState
from swarmlet.state.model import Resources
from swarmlet.state.observed import NodeMeta, TaskObservation


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
    return member_state in (MemberState.ALIVE, MemberState.SUSPECT)


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


def is_ready(source: ObservationSource, node_id: str) -> bool:
    """`counts_as_ready` for `node_id`, as `source` sees it."""
    return counts_as_ready(source.member_state(node_id), is_self=node_id == source.node_id)


def ready_node_ids(source: ObservationSource) -> set[str]:
    """The nodes of the desired state that count as ready."""
    return {node_id for node_id in source.state.nodes if is_ready(source, node_id)}


def observe(source: ObservationSource) -> Observed:
    """The observed state as gossip (and, for this node, the executor) reports it now."""
    nodes: dict[str, ObservedNode] = {}
    tasks: dict[str, TaskObservation] = {}
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
        if meta is not None and not is_self:
            for obs in meta.tasks:
                tasks[obs.task_id] = obs
    for obs in source.local_observations():
        tasks[obs.task_id] = obs
    return Observed(nodes=nodes, tasks=tasks)
