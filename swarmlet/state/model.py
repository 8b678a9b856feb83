"""The cluster's desired-state objects: nodes, services, tasks, secrets and configs.

These are immutable values. `state.machine.ClusterState` holds them and is the only code that
replaces one with a changed copy (`dataclasses.replace`). The vocabulary is Docker Swarm's: a
service spec is immutable and versioned; a replicated service has `replicas` slots; a task is one
attempt at running one slot (or, for a global service, one node); its state only moves forward.

Units are in the names: `_s` seconds (float), `_bytes`, `nano_cpus` (1e9 = one core).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from swarmlet.wire import catalog, codec


class Role(enum.StrEnum):
    MANAGER = "manager"
    WORKER = "worker"


class Availability(enum.StrEnum):
    ACTIVE = "active"  # runs tasks, takes new ones
    PAUSE = "pause"  # keeps its tasks, takes no new ones
    DRAIN = "drain"  # its tasks move elsewhere


class TaskState(enum.IntEnum):
    """Swarm's ordered task states (swarmkit api/types.proto). A task's state only moves forward.

    Everything above RUNNING is terminal.
    """

    NEW = 0
    PENDING = 1  # waiting for the scheduler (the task says why)
    ASSIGNED = 2  # has a node; that node's agent has not started it yet
    STARTING = 3  # the agent is creating/starting the container
    RUNNING = 4
    COMPLETE = 5  # exited 0
    SHUTDOWN = 6  # stopped on purpose
    FAILED = 7  # exited non-zero, was killed, or never became healthy
    REJECTED = 8  # could not be started on its node (image missing, port conflict, ...)
    ORPHANED = 9  # its node was down too long; the task is written off

    @property
    def terminal(self) -> bool:
        return self > TaskState.RUNNING

    def __str__(self) -> str:
        return self.name.lower()


class ServiceMode(enum.StrEnum):
    REPLICATED = "replicated"
    GLOBAL = "global"
    # Jobs run their tasks to completion (`leader.orchestrator.jobs`): `replicas` completions,
    # or one per node, at most `ServiceSpec.max_concurrent` at once.
    REPLICATED_JOB = "replicated-job"
    GLOBAL_JOB = "global-job"

    @property
    def is_job(self) -> bool:
        return self in (ServiceMode.REPLICATED_JOB, ServiceMode.GLOBAL_JOB)

    @property
    def is_global(self) -> bool:
        """One task per node (else numbered slots)."""
        return self in (ServiceMode.GLOBAL, ServiceMode.GLOBAL_JOB)


class RestartCondition(enum.StrEnum):
    ANY = "any"
    ON_FAILURE = "on-failure"
    NONE = "none"


class UpdateOrder(enum.StrEnum):
    STOP_FIRST = "stop-first"
    START_FIRST = "start-first"


class FailureAction(enum.StrEnum):
    PAUSE = "pause"
    CONTINUE = "continue"
    ROLLBACK = "rollback"


@dataclass(frozen=True, slots=True)
class NamedResource:
    """One named generic resource: a node advertises each of its ids (`gpu=UUID1`), a task
    records the ids it was given (swarmkit's NamedResourceSpec)."""

    kind: str
    value: str


@dataclass(frozen=True, slots=True)
class Resources:
    nano_cpus: int = 0
    memory_bytes: int = 0
    # A node's generic resources (Swarm's `node-generic-resources`), on a node's record only: a
    # count per discrete kind (`ssd=3`) and the ids of each named kind (`gpu=UUID1`); a kind is
    # one or the other. A service reserves them in `ServiceSpec.generic_resources`.
    generic: tuple[GenericResource, ...] = codec.appended(since=2, default=())
    named: tuple[NamedResource, ...] = codec.appended(since=2, default=())


@dataclass(frozen=True, slots=True)
class Node:
    """A member of the cluster as recorded in the replicated state.

    Liveness (ready/down) is not here: it is observed by gossip and never written through Raft.

    Keys: `public_key` is the node's X25519 public key, set when it joins; whatever is meant for
    this node alone is sealed to it (`crypto.seal_to`). A manager's record also carries
    `sealed_manager_key`, the managers' key sealed to `public_key`: written by the manager that
    admits or promotes the node, emptied when it is demoted (see `swarmlet.security.keyring`).
    """

    id: str
    name: str  # unique in the cluster; defaults to the host name
    addr: str  # "host:port" the other agents reach (gossip UDP + TCP)
    publish_addr: str  # where this node's proxy listens for published ports
    role: Role
    availability: Availability = Availability.ACTIVE
    labels: dict[str, str] = field(default_factory=dict)
    resources: Resources = field(default_factory=Resources)
    joined_at: float = 0.0
    public_key: bytes = b""
    sealed_manager_key: bytes = b""  # managers only; b"" for a worker
    # The node's Ed25519 identity key (`crypto.node_signing_key`): its certificates are for this
    # key, and it signs what the node says about itself in gossip.
    signing_key: bytes = b""
    # Raised by every role change; certificates of an older generation are refused.
    cert_generation: int = 0
    # The cluster key of epoch `cluster_key_epoch` sealed to `public_key`; b"" at epoch 0, whose
    # key the join reply carries. Every record gets the new one when a node is removed
    # (`state.commands.RotateClusterKey`, `security.keyring`).
    sealed_cluster_key: bytes = codec.appended(since=2, default=b"")
    cluster_key_epoch: int = codec.appended(since=2, default=0)


@dataclass(frozen=True, slots=True)
class PortConfig:
    published: int
    target: int
    protocol: str = "tcp"  # tcp | udp
    mode: str = "ingress"  # ingress: every node's proxy; host: only the task's own node
    # "" | "v1" | "v2": the mesh opens each relayed TCP connection with a PROXY protocol header
    # of this version, carrying the client's address (ingress TCP ports only).
    proxy_protocol: str = ""


@dataclass(frozen=True, slots=True)
class Placement:
    constraints: tuple[str, ...] = ()  # e.g. "node.labels.zone==a", "node.role!=manager"
    preferences: tuple[str, ...] = ()  # label paths to spread over, e.g. "node.labels.zone"
    max_replicas_per_node: int = 0  # 0: unlimited


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    condition: RestartCondition = RestartCondition.ANY
    # None: swarmlet's exponential back-off (0 s for a slot's first restart, then doubling from
    # 0.5 s up to 30 s); a number: Swarm's fixed delay between restarts.
    delay_s: float | None = None
    max_attempts: int = 0  # 0: unlimited
    window_s: float = 0.0  # attempts are counted within this window (0: since the slot began)


@dataclass(frozen=True, slots=True)
class UpdateConfig:
    parallelism: int = 1  # 0: all at once
    delay_s: float = 0.0
    order: UpdateOrder = UpdateOrder.STOP_FIRST
    failure_action: FailureAction = FailureAction.PAUSE
    monitor_s: float = 5.0
    max_failure_ratio: float = 0.0


@dataclass(frozen=True, slots=True)
class Healthcheck:
    test: tuple[str, ...] = ()  # ("CMD", ...), ("CMD-SHELL", "..."), or ("NONE",) to disable
    interval_s: float = 0.0  # 0: Docker's default
    timeout_s: float = 0.0
    retries: int = 0
    start_period_s: float = 0.0


@dataclass(frozen=True, slots=True)
class Mount:
    type: str  # volume | bind | tmpfs
    target: str
    source: str = ""
    read_only: bool = False
    driver: str = ""
    driver_opts: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class FileRef:
    """A secret or config made available to a task as a file."""

    name: str  # the secret's/config's name in the cluster
    target: str  # path in the container (secrets: relative to /run/secrets)
    uid: str = "0"
    gid: str = "0"
    mode: int = 0o444


@dataclass(frozen=True, slots=True)
class NetworkAttachment:
    """A network a service's containers join. Each node makes its own bridge for it (see
    `swarmlet.executor.networks`); services on a common network reach each other by name through the
    mesh, wherever their replicas run."""

    name: str  # cluster-wide, e.g. "web_default"
    aliases: tuple[str, ...] = ()  # more names the service answers to on this network
    internal: bool = False  # no route out of the host (Docker's internal bridge)
    external: bool = False  # an existing Docker network, joined as is (no names through the mesh)


@dataclass(frozen=True, slots=True)
class AutoscalePolicy:
    min_replicas: int
    max_replicas: int
    cpu_percent: float = 0.0  # target per replica; 0: not a target
    memory_bytes: int = 0
    requests_per_s: float = 0.0


@dataclass(frozen=True, slots=True)
class Ulimit:
    """A resource limit of the containers' processes (setrlimit): soft <= hard; -1: unlimited."""

    name: str  # nofile, nproc, core, ... (`specparse.ULIMIT_NAMES`)
    soft: int
    hard: int


@dataclass(frozen=True, slots=True)
class GenericResource:
    """A count of a generic resource: what a task reserves on its node (`gpu=2`), or a node's
    discrete capacity (`ssd=3`, `Resources.generic`)."""

    kind: str
    value: int


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    """What the user asked for. Immutable: an update writes a new spec with a higher version."""

    name: str
    image: str
    command: tuple[str, ...] | None = None
    entrypoint: tuple[str, ...] | None = None
    env: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)  # on the service
    container_labels: dict[str, str] = field(default_factory=dict)
    mode: ServiceMode = ServiceMode.REPLICATED
    replicas: int = 1
    ports: tuple[PortConfig, ...] = ()
    placement: Placement = field(default_factory=Placement)
    reservations: Resources = field(default_factory=Resources)
    limits: Resources = field(default_factory=Resources)
    restart: RestartPolicy = field(default_factory=RestartPolicy)
    update: UpdateConfig = field(default_factory=UpdateConfig)
    rollback: UpdateConfig = field(default_factory=UpdateConfig)
    healthcheck: Healthcheck | None = None
    mounts: tuple[Mount, ...] = ()
    secrets: tuple[FileRef, ...] = ()
    configs: tuple[FileRef, ...] = ()
    user: str = ""
    working_dir: str = ""
    hostname: str = ""
    stop_signal: str = ""
    stop_grace_period_s: float = 10.0
    init: bool = False
    extra_hosts: tuple[str, ...] = ()
    cap_add: tuple[str, ...] = ()
    cap_drop: tuple[str, ...] = ()
    sysctls: dict[str, str] = field(default_factory=dict)
    networks: tuple[NetworkAttachment, ...] = ()
    stack: str = ""  # the stack this service belongs to, "" for none
    depends_on: tuple[str, ...] = ()  # service names whose first start comes before ours
    rebalance: bool = True  # move replicas back when a node joins or returns
    autoscale: AutoscalePolicy | None = None
    force_update: int = 0  # bumped by `service update --force`
    max_concurrent: int = 0  # jobs: tasks running at once, at most (0: as many as it has)
    # The container's own settings, as Swarm's ContainerSpec has them (appended: the codec is
    # positional). Empty means the node's Docker default.
    ulimits: tuple[Ulimit, ...] = ()  # sorted by name, one per name
    log_driver: str = ""  # "": the node's default driver (log_options still apply to it)
    log_options: dict[str, str] = field(default_factory=dict)
    dns_servers: tuple[str, ...] = ()  # IP addresses
    dns_search: tuple[str, ...] = ()
    dns_options: tuple[str, ...] = ()  # resolv.conf options, e.g. "ndots:2"
    read_only: bool = False  # the root file system
    tty: bool = False
    pids_limit: int = 0  # 0: unlimited
    # Reservations of node-advertised generic resources, a count per task of each kind
    # (`state.generic_resources`; the scheduler gives named kinds' ids, `Task.assigned_resources`).
    generic_resources: tuple[GenericResource, ...] = ()
    # compose-spec's long `depends_on`: service name -> "service_healthy" or
    # "service_completed_successfully" (absent: "service_started"), `leader.depends_on`.
    depends_on_condition: dict[str, str] = field(default_factory=dict)


class UpdateState(enum.StrEnum):
    NONE = ""
    UPDATING = "updating"
    PAUSED = "paused"
    COMPLETED = "completed"
    ROLLBACK_STARTED = "rollback_started"
    ROLLBACK_PAUSED = "rollback_paused"
    ROLLBACK_COMPLETED = "rollback_completed"


@dataclass(frozen=True, slots=True)
class UpdateStatus:
    state: UpdateState = UpdateState.NONE
    started_at: float = 0.0
    completed_at: float = 0.0
    message: str = ""


@dataclass(frozen=True, slots=True)
class Service:
    id: str
    spec: ServiceSpec
    version: int = 1  # bumped on every spec change; tasks record the version they run
    previous_spec: ServiceSpec | None = None  # for `service rollback`
    created_at: float = 0.0
    updated_at: float = 0.0
    update_status: UpdateStatus = field(default_factory=UpdateStatus)
    # Set by the state machine: network name -> the service's index on it, from which every
    # node derives the service's virtual address on its bridge (`swarmlet.executor.networks`).
    vip_indexes: dict[str, int] = field(default_factory=dict)
    # `--with-registry-auth`: the client's credential for the image's registry, sealed with the
    # managers' key under the service's id (`security.registry_auth`), like secrets' values;
    # b"" for none. Outside the spec: it is no part of what the tasks run (swarmkit's
    # IsTaskDirty ignores PullOptions too), `service inspect` never shows it, and a rollback
    # keeps it. Delivered only to the node running a task (`security.secret_delivery`).
    registry_auth: bytes = codec.appended(since=2, default=b"")


@dataclass(frozen=True, slots=True)
class Task:
    """One attempt at running one slot of a service.

    `desired_state` is written by the leader (RUNNING or SHUTDOWN). `state` is the furthest state
    the leader has recorded; agents' fresher observations travel by gossip and are merged on read
    (the later of the two wins, since states only move forward).
    """

    id: str
    service_id: str
    slot: int  # replicated: 1..replicas; global: 0 (the node identifies the task)
    spec_version: int
    desired_state: TaskState = TaskState.RUNNING
    state: TaskState = TaskState.NEW
    node_id: str = ""  # "" until assigned
    message: str = ""  # why pending, or what happened
    error: str = ""
    # Restarts in the slot's current crash streak (for the back-off; reset once a task ran 10 s).
    # max_attempts is counted from the slot's task history instead.
    attempt: int = 0
    created_at: float = 0.0
    updated_at: float = 0.0
    # The named generic resources the scheduler gave the task on its node (ids of the kinds its
    # spec reserves that the node advertises by name); they are the task's alone until it is
    # terminal (`leader.generic_resources`).
    assigned_resources: tuple[NamedResource, ...] = codec.appended(since=2, default=())


@dataclass(frozen=True, slots=True)
class Secret:
    """A secret or config. `data` is sealed with the managers' key (`crypto.ManagerKeys`) for
    secrets, which workers cannot open, and plain for configs."""

    id: str
    name: str
    data: bytes
    labels: dict[str, str] = field(default_factory=dict)
    created_at: float = 0.0
    is_config: bool = False


WIRE_TYPES: tuple[type, ...] = (
    Resources,
    Node,
    PortConfig,
    Placement,
    RestartPolicy,
    UpdateConfig,
    Healthcheck,
    Mount,
    FileRef,
    AutoscalePolicy,
    ServiceSpec,
    UpdateStatus,
    Service,
    Task,
    Secret,
    NetworkAttachment,  # appended: ids are permanent
    Ulimit,
    GenericResource,
    NamedResource,
)
codec.register_all(catalog.STATE_MODEL, WIRE_TYPES)
