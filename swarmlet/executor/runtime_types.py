"""The values that cross the container-runtime boundary: what to run (`ContainerSpec` and its
parts), what the engine reports back (`ContainerInfo`, `ContainerEvent`, `ContainerStats`,
`NetworkInfo`), `DockerError`, the one exception the adapter raises, and the closed set of the
adapter's operations (`DOCKER_OPERATIONS`) that errors and metrics are labelled with.

Invariants:
  - every value is a frozen dataclass; empty / None fields mean "Docker's (or the image's)
    default", so a spec states only what it changes;
  - durations are float seconds (`_s`), sizes are bytes (`_bytes`), CPU is nano-CPUs; the
    conversions to Docker's units live in `executor.docker_translate`;
  - `ContainerInfo.exit_code` is set only once the container has exited or is dead (Docker
    reports 0 before); `started_at` / `finished_at` are Docker's RFC 3339 strings, "" for
    Docker's zero time;
  - `ContainerEvent.labels` holds the container's labels without the attributes Docker adds to
    an event (`image`, `name`, `exitCode`, `signal`): a label literally named `image` or `name`
    is only visible through `inspect`.

It must not know docker-py, trio or the cluster: tasks, services and label names belong to the
callers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from swarmlet.errors import RuntimeAdapterError

__all__ = [
    "DOCKER_OPERATIONS",
    "ContainerEvent",
    "ContainerInfo",
    "ContainerSpec",
    "ContainerStats",
    "DockerError",
    "HealthcheckSpec",
    "MountSpec",
    "MountType",
    "NetworkInfo",
    "PortBinding",
    "UlimitSpec",
    "operation_kind",
]

MountType = Literal["volume", "bind", "tmpfs"]


@dataclass(frozen=True, slots=True)
class PortBinding:
    """Publish container port `target`/`protocol`: by default on the spec's `host_ip` at a host
    port Docker picks (what the mesh's proxies connect to); with `host_port`, at that port on
    `host_ip` of its own (a `mode=host` published port, on the node's publish address)."""

    target: int
    protocol: str = "tcp"
    host_port: int = 0  # 0: Docker picks one
    host_ip: str = ""  # "": the spec's


@dataclass(frozen=True, slots=True)
class MountSpec:
    """A mount: `type` is "volume" (named or anonymous), "bind" or "tmpfs"."""

    target: str
    source: str = ""
    type: MountType = "volume"
    read_only: bool = False
    bind_propagation: str | None = None
    volume_nocopy: bool = False
    volume_labels: dict[str, str] = field(default_factory=dict)
    volume_driver: str | None = None
    volume_driver_opts: dict[str, str] = field(default_factory=dict)
    tmpfs_size_bytes: int | None = None
    tmpfs_mode: int | None = None


@dataclass(frozen=True, slots=True)
class UlimitSpec:
    name: str
    soft: int
    hard: int


@dataclass(frozen=True, slots=True)
class HealthcheckSpec:
    """Docker's healthcheck. Durations of 0 (and retries 0) inherit the image's or Docker's default
    (interval 30 s, timeout 30 s, retries 3, start period 0 s).

    `test` is ("CMD", arg, ...), ("CMD-SHELL", command) or ("NONE",) to disable the image's check.
    """

    test: tuple[str, ...]
    interval_s: float = 0.0
    timeout_s: float = 0.0
    retries: int = 0
    start_period_s: float = 0.0

    @classmethod
    def disabled(cls) -> HealthcheckSpec:
        return cls(test=("NONE",))

    @property
    def is_disabled(self) -> bool:
        return self.test == ("NONE",)


@dataclass(frozen=True, slots=True)
class ContainerSpec:
    """Everything needed to create one container. Empty / None means Docker's (or the image's)
    default, so a spec only says what it changes."""

    name: str
    image: str
    command: tuple[str, ...] | None = None  # None: the image's CMD
    entrypoint: tuple[str, ...] | None = None  # None: the image's ENTRYPOINT
    env: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    ports: tuple[PortBinding, ...] = ()
    host_ip: str = ""  # the node's advertise address, e.g. 127.0.0.2; "" = all interfaces
    nano_cpus: int | None = None  # 1e9 = one core
    memory_bytes: int | None = None
    memory_reservation_bytes: int | None = None
    mounts: tuple[MountSpec, ...] = ()
    healthcheck: HealthcheckSpec | None = None  # None: the image's
    user: str | None = None
    working_dir: str | None = None
    hostname: str | None = None  # None: the container id prefix
    stop_signal: str | None = None
    stop_grace_s: float | None = None  # rounded up to whole seconds (Docker's StopTimeout is int)
    init: bool = False
    extra_hosts: dict[str, str] = field(default_factory=dict)  # hostname -> address
    cap_add: tuple[str, ...] = ()
    cap_drop: tuple[str, ...] = ()
    sysctls: dict[str, str] = field(default_factory=dict)
    ulimits: tuple[UlimitSpec, ...] = ()
    log_driver: str | None = None  # None: the daemon's default driver (log_options apply to it)
    log_options: dict[str, str] = field(default_factory=dict)
    read_only: bool = False
    privileged: bool = False
    group_add: tuple[str, ...] = ()
    security_opt: tuple[str, ...] = ()
    dns: tuple[str, ...] = ()
    dns_search: tuple[str, ...] = ()
    dns_options: tuple[str, ...] = ()
    network_mode: str | None = None
    networks: tuple[str, ...] = ()  # Docker networks to join (the first is the primary one)
    shm_size_bytes: int | None = None
    pids_limit: int | None = None
    tty: bool = False


@dataclass(frozen=True, slots=True)
class ContainerInfo:
    id: str
    name: str
    labels: dict[str, str]
    state: str  # created | running | paused | restarting | removing | exited | dead
    exit_code: int | None  # set once exited or dead
    health: str | None  # starting | healthy | unhealthy | None (no healthcheck)
    host_ports: dict[tuple[int, str], int]  # (target, protocol) -> host port
    started_at: str
    finished_at: str
    error: str
    image: str = ""
    oom_killed: bool = False
    hosts_path: str = ""  # the host file Docker bind-mounts as the container's /etc/hosts


@dataclass(frozen=True, slots=True)
class ContainerEvent:
    action: str  # start | die | kill | oom | stop | destroy | "health_status: healthy" | ...
    container_id: str
    labels: dict[str, str]
    exit_code: int | None  # on die
    time_ns: int
    name: str = ""
    image: str = ""
    signal: str | None = None  # on kill

    @property
    def health_status(self) -> str | None:
        """The status of a health_status event ("healthy" / "unhealthy"), else None."""
        prefix = "health_status: "
        return self.action[len(prefix) :] if self.action.startswith(prefix) else None


@dataclass(frozen=True, slots=True)
class ContainerStats:
    cpu_percent: float  # 100.0 = one core fully used (docker stats' convention)
    memory_bytes: int  # usage without the page cache, as `docker stats` shows
    memory_limit_bytes: int  # the container's limit, or the host's memory without one


@dataclass(frozen=True, slots=True)
class NetworkInfo:
    id: str
    name: str
    labels: dict[str, str]
    subnet: str  # the first IPv4 subnet, e.g. "172.20.0.0/16"; "" if none
    gateway: str  # the host's address on it, e.g. "172.20.0.1"
    bridge: str  # the host's interface for a bridge network ("" for other drivers)
    internal: bool = False


class DockerError(RuntimeAdapterError):
    """Docker refused or failed `operation`. `status_code` is the HTTP status (404 for a missing
    container or image, 409 for a conflict), None when the engine was not reached at all."""

    def __init__(self, operation: str, status_code: int | None, explanation: str) -> None:
        self.operation = operation
        self.status_code = status_code
        self.explanation = explanation
        super().__init__(f"docker {operation} failed: {explanation}")


# The adapter's operations, as its operation strings name them ("network create web" ->
# "network_create"): a closed set, so that they may label metrics. "run" is one container's
# create, network connects, start and inspect; "events" and "logs" time opening the stream.
DOCKER_OPERATIONS = (
    "ping",
    "image_inspect",
    "pull",
    "run",
    "inspect",
    "list",
    "stop",
    "remove",
    "kill",
    "events",
    "logs",
    "stats",
    "volume_create",
    "volume_rm",
    "network_create",
    "network_ls",
    "network_inspect",
    "network_rm",
)
_KNOWN_OPERATIONS = frozenset(DOCKER_OPERATIONS)
_OBJECT_WORDS = frozenset({"image", "volume", "network"})


def operation_kind(operation: str) -> str:
    """The member of `DOCKER_OPERATIONS` an operation string names, "other" for none."""
    words = operation.split(" ", 2)
    kind = "_".join(words[:2]) if words[0] in _OBJECT_WORDS else words[0]
    return kind if kind in _KNOWN_OPERATIONS else "other"
