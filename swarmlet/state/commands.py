"""The commands of the cluster state machine: every change to the replicated desired state, as data.

Each command is a frozen dataclass committed through Raft and applied by `ClusterState.apply` on
every agent, in log order. A command carries every id, name and timestamp its effect needs, so
that applying it reads nothing but the command and the state: the proposer decides, the replicas
only apply. What a command means against the state (and why one is rejected) lives with the state
machine, in `state.machine`; this module only defines the values.

Invariant: `COMMANDS` is the wire catalog's list for `catalog.STATE_COMMANDS`. Its order gives
each command its permanent type id, persisted in every Raft log: only ever append to it.

Must not know: the state they change, Raft, the network, any key (tokens and keys arrive sealed).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from swarmlet.state.model import (
    Availability,
    Node,
    Resources,
    Role,
    Secret,
    Service,
    ServiceSpec,
    Task,
    UpdateStatus,
)
from swarmlet.state.observed import TaskObservation
from swarmlet.wire import catalog
from swarmlet.wire import codec as wire


@dataclass(frozen=True, slots=True)
class InitCluster:
    cluster_id: str
    created_at: float
    sealed_worker_token: bytes  # crypto.ManagerKeys.seal_token
    sealed_manager_token: bytes
    target_voters: int = 3
    managers_public_key: bytes = b""  # crypto.ManagerKeys.public_key


@dataclass(frozen=True, slots=True)
class AddNode:
    node: Node
    name_is_explicit: bool = False  # an explicit --name that is taken is refused, not renamed


@dataclass(frozen=True, slots=True)
class RemoveNode:
    node_id: str
    removed_at: float = 0.0  # the proposer's clock, for the revocation list's record


@dataclass(frozen=True, slots=True)
class UpdateNode:
    node_id: str
    availability: Availability | None = None
    role: Role | None = None
    labels_add: dict[str, str] = field(default_factory=dict)
    labels_rm: tuple[str, ...] = ()
    addr: str | None = None  # a restarted agent may come back on a new address
    publish_addr: str | None = None
    resources: Resources | None = None
    # With role=MANAGER: the managers' key sealed to the node. Demotion empties it in any case.
    sealed_manager_key: bytes | None = None


@dataclass(frozen=True, slots=True)
class RotateToken:
    role: Role
    sealed_token: bytes


@dataclass(frozen=True, slots=True)
class SetTargetVoters:
    target_voters: int


@dataclass(frozen=True, slots=True)
class CreateService:
    service: Service


@dataclass(frozen=True, slots=True)
class UpdateService:
    service_id: str
    spec: ServiceSpec
    updated_at: float
    is_rollback: bool = False
    update_status: UpdateStatus | None = None


@dataclass(frozen=True, slots=True)
class RemoveService:
    service_id: str
    updated_at: float


@dataclass(frozen=True, slots=True)
class SetUpdateStatus:
    service_id: str
    status: UpdateStatus


@dataclass(frozen=True, slots=True)
class PutTasks:
    """Create tasks or record changes to existing ones (the orchestrator's output)."""

    tasks: tuple[Task, ...]


@dataclass(frozen=True, slots=True)
class RemoveTasks:
    task_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class CreateSecret:
    secret: Secret


@dataclass(frozen=True, slots=True)
class RemoveSecret:
    secret_id: str


@dataclass(frozen=True, slots=True)
class ReportTasks:
    """What a node observed of its own tasks (`state.observed`). `node_id` is the sender's
    certificate's, set by the leader that received the report, never the sender's say."""

    node_id: str
    statuses: tuple[TaskObservation, ...]
    port_errors: dict[str, str] | None = None  # None: unchanged


@dataclass(frozen=True, slots=True)
class Batch:
    """Several commands applied atomically: all or none (e.g. a stack deploy)."""

    commands: tuple[Command, ...]


@dataclass(frozen=True, slots=True)
class SetRegistryAuth:
    """Replace a service's sealed registry credential (`Service.registry_auth`; b"": none).
    Leaves the spec and its version alone: a new credential restarts no task."""

    service_id: str
    sealed: bytes


@dataclass(frozen=True, slots=True)
class RotateClusterKey:
    """A new cluster key (`crypto.ClusterKeys`), of epoch `epoch`, sealed to each member's public
    key: node id -> blob, for exactly the members of the state it applies to. Committed with a
    `RemoveNode`, in one `Batch`, so the removed node's copy stops sealing gossip."""

    epoch: int
    sealed: dict[str, bytes]


@dataclass(frozen=True, slots=True)
class SetAutolock:
    """Turn autolock on (with the unlock key sealed with the managers' key,
    `security.at_rest.seal_unlock_key`), rotate its key (on again, a new blob), or off (no blob)."""

    enabled: bool
    sealed_unlock_key: bytes = b""


@dataclass(frozen=True, slots=True)
class RotateManagersKey:
    """A new managers' key (`crypto.ManagerKeys`), replacing the one whose public key is
    `previous_public_key`, with everything sealed under the old one sealed again under the new
    (`security.managers_key_rotation`). Committed with the change that takes a manager out of
    the managers (a demotion, a `RemoveNode`), in one `Batch`: the node leaving keeps no key that
    opens what the state holds from then on. Each map covers exactly what the state holds when it
    applies (the managers, the secrets, the services with a registry credential): a change in
    between makes the proposer build it again."""

    previous_public_key: bytes
    public_key: bytes
    sealed: dict[str, bytes]  # manager id -> the new key sealed to it (`Node.sealed_manager_key`)
    secrets: dict[str, bytes]  # secret id -> its value sealed anew (configs are not sealed)
    sealed_worker_token: bytes
    sealed_manager_token: bytes
    registry_auth: dict[str, bytes]  # service id -> its credential sealed anew
    sealed_ca_seed: bytes  # the CA's unchanging key, sealed anew (`ClusterState.sealed_ca_seed`)
    sealed_unlock_key: bytes = b""  # autolock's unlock key sealed anew; b"" when it is off


@dataclass(frozen=True, slots=True)
class Once:
    """`command`, applied at most once however often it is committed (the Raft thesis, §6.3).

    A writer that could not learn a write's fate (its leader died, or lost the lead, after the
    entry may have gone out to a majority) writes it again, under the same `request_id`: the
    first copy to apply takes effect, and any later one is answered with the first one's
    result (`ClusterState.applied_requests`) instead of being applied again, which would
    refuse a `service create` or `secret create` that had succeeded ("name in use"), or a
    `service rm` ("no service"). Proposed only while every member of the Raft group speaks
    `wire.protocol_version.ONCE_SINCE` (`node.forwarding`)."""

    request_id: bytes
    command: Command


Command = (
    InitCluster
    | AddNode
    | RemoveNode
    | UpdateNode
    | RotateToken
    | SetTargetVoters
    | CreateService
    | UpdateService
    | RemoveService
    | SetUpdateStatus
    | PutTasks
    | RemoveTasks
    | CreateSecret
    | RemoveSecret
    | Batch
    | ReportTasks
    | SetRegistryAuth
    | RotateClusterKey
    | SetAutolock
    | RotateManagersKey
    | Once
)


def records_in(command: Command) -> int:
    """About how many records `command` writes (at least 1): what its encoding and decoding
    cost grows with."""
    if isinstance(command, Batch):
        return max(1, sum(records_in(c) for c in command.commands))
    if isinstance(command, Once):
        return records_in(command.command)
    if isinstance(command, PutTasks):
        return max(1, len(command.tasks))
    if isinstance(command, RemoveTasks):
        return max(1, len(command.task_ids))
    if isinstance(command, ReportTasks):
        return max(1, len(command.statuses))
    return 1


# Append only: ids are persisted in the Raft log.
COMMANDS: tuple[type, ...] = (
    InitCluster,
    AddNode,
    RemoveNode,
    UpdateNode,
    RotateToken,
    SetTargetVoters,
    CreateService,
    UpdateService,
    RemoveService,
    SetUpdateStatus,
    PutTasks,
    RemoveTasks,
    CreateSecret,
    RemoveSecret,
    Batch,
    ReportTasks,
    SetRegistryAuth,
    RotateClusterKey,
    SetAutolock,
    RotateManagersKey,
    Once,
)
wire.register_all(catalog.STATE_COMMANDS, COMMANDS)
