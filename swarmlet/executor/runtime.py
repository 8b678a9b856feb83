"""The Docker runtime adapter: the only module that imports `docker` (docker-py).

Owns: turning a `ContainerSpec` into a Docker container and Docker's answers back into frozen
values (`ContainerInfo`, `ContainerEvent`, `ContainerStats`); the Docker events stream; container
logs and stats; volumes; bridge networks.

Invariants:
  - every blocking docker-py call runs in `trio.to_thread.run_sync` under a `CapacityLimiter`
    (`max_threads`); long-lived streams (events, logs) get their own limiter so that a node with
    many followers never starves the short calls;
  - every docker / requests exception is translated, inside the worker thread, into
    `DockerError`, a `RuntimeAdapterError` whose message is Docker's own explanation prefixed by
    the operation ("docker pull x:1 failed: <what the daemon said>");
  - the translation functions (`container_create_args`, `container_info_from_inspect`,
    `container_event_from_docker`, `container_stats_from_docker`) are pure and tested with tables.

It must not know tasks, services or the cluster: callers choose names and labels
(`swarmlet.cluster`, `swarmlet.node`, `swarmlet.task`, ...) and filter by them.

Decisions where the brief was silent:
  - `run` is create + start. If start fails (bad command, port taken), the created container is
    removed and the error raised: the caller sees one failure, and no half-made container is left
    for it to find later. `run` does not pull: call `ensure_image` first.
  - `remove` removes anonymous volumes too (`v=True`), as swarmkit's executor does
    (`RemoveVolumes: true`), so replaced replicas leak nothing. A missing container, or one whose
    removal is already in progress, is not an error.
  - `events` asks the daemon for the events since the moment it was called (`since`), so an event
    that fires while the HTTP stream is being set up is replayed, not lost. Only lifecycle and
    health actions are requested (`CONTAINER_EVENT_ACTIONS`): health checks would otherwise add
    three `exec_*` events per probe. If the stream ends without us closing it (the engine
    restarted), iteration raises `RuntimeAdapterError`: a consumer never mistakes it for quiet.
  - Docker puts labels and its own attributes (`image`, `name`, `exitCode`, `signal`) in one map
    in an event; `ContainerEvent.labels` is that map without Docker's keys, so a label literally
    named `image` or `name` does not appear there (use `inspect`).
  - `started_at` / `finished_at` are Docker's RFC 3339 strings, and "" for Docker's zero time.
  - `exit_code` is set only once the container has exited or is dead (Docker reports 0 before).
"""

from __future__ import annotations

import math
import os
import socket
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import docker
import docker.errors
import docker.types
import requests.exceptions
import trio
from docker.types.daemon import CancellableStream

from swarmlet.errors import RuntimeAdapterError

__all__ = [
    "CONTAINER_EVENT_ACTIONS",
    "ContainerEvent",
    "ContainerInfo",
    "ContainerSpec",
    "ContainerStats",
    "DockerError",
    "DockerRuntime",
    "HealthcheckSpec",
    "MountSpec",
    "NetworkInfo",
    "PortBinding",
    "UlimitSpec",
    "container_create_args",
    "container_event_from_docker",
    "container_info_from_inspect",
    "container_stats_from_docker",
    "network_info_from_inspect",
    "open_docker_runtime",
]

T = TypeVar("T")
MountType = Literal["volume", "bind", "tmpfs"]

_NS_PER_S = 1_000_000_000
# Docker's zero time.Time, reported as StartedAt/FinishedAt of a container that never ran/stopped.
_DOCKER_ZERO_TIME = "0001-01-01T00:00:00Z"
_DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"
_NO_TIMEOUT: Any = None  # requests: no read timeout (docker's stubs say int)
# Event attributes that Docker adds itself next to the container's labels.
_DOCKER_EVENT_ATTRIBUTES = frozenset({"image", "name", "exitCode", "signal", "execDuration"})

# The container events the adapter asks for. Docker matches `health_status` by prefix, so
# "health_status: healthy" / "health_status: unhealthy" pass (moby #25798).
CONTAINER_EVENT_ACTIONS: tuple[str, ...] = (
    "create",
    "start",
    "restart",
    "die",
    "kill",
    "oom",
    "stop",
    "pause",
    "unpause",
    "destroy",
    "health_status",
)


# --------------------------------------------------------------------------------------------
# Values


@dataclass(frozen=True, slots=True)
class PortBinding:
    """Publish container port `target`/`protocol` on the spec's `host_ip`; Docker picks the host
    port."""

    target: int
    protocol: str = "tcp"


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
    log_driver: str | None = None
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


BRIDGE_NAME_OPTION = "com.docker.network.bridge.name"


def network_info_from_inspect(attrs: Mapping[str, Any]) -> NetworkInfo:
    configs = ((attrs.get("IPAM") or {}).get("Config")) or []
    ipv4: Mapping[str, str] = next((c for c in configs if "." in (c.get("Subnet") or "")), {})
    options = attrs.get("Options") or {}
    bridge = ""
    if attrs.get("Driver") == "bridge":
        # Docker names the interface br-<id prefix> unless the creator chose a name.
        bridge = options.get(BRIDGE_NAME_OPTION) or f"br-{attrs['Id'][:12]}"
    return NetworkInfo(
        id=attrs["Id"],
        name=attrs["Name"],
        labels=dict(attrs.get("Labels") or {}),
        subnet=ipv4.get("Subnet", ""),
        gateway=ipv4.get("Gateway", ""),
        bridge=bridge,
        internal=bool(attrs.get("Internal")),
    )


class DockerError(RuntimeAdapterError):
    """Docker refused or failed `operation`. `status_code` is the HTTP status (404 for a missing
    container or image, 409 for a conflict), None when the engine was not reached at all."""

    def __init__(self, operation: str, status_code: int | None, explanation: str) -> None:
        self.operation = operation
        self.status_code = status_code
        self.explanation = explanation
        super().__init__(f"docker {operation} failed: {explanation}")


# --------------------------------------------------------------------------------------------
# Pure translation


def label_filters(labels: Mapping[str, str]) -> list[str]:
    """Docker filter values for "has every one of these labels" (Docker ANDs label filters)."""
    return [f"{key}={value}" for key, value in sorted(labels.items())]


def _seconds_to_ns(seconds: float) -> int:
    return round(seconds * _NS_PER_S)


def _mount(spec: MountSpec) -> docker.types.Mount:
    driver_config = None
    if spec.volume_driver is not None or spec.volume_driver_opts:
        driver_config = docker.types.DriverConfig(
            spec.volume_driver or "local", dict(spec.volume_driver_opts)
        )
    return docker.types.Mount(
        target=spec.target,
        source=spec.source or None,
        type=spec.type,
        read_only=spec.read_only,
        propagation=spec.bind_propagation,
        no_copy=spec.volume_nocopy,
        labels=dict(spec.volume_labels) or None,
        driver_config=driver_config,
        tmpfs_size=spec.tmpfs_size_bytes,
        tmpfs_mode=spec.tmpfs_mode,
    )


def _healthcheck(spec: HealthcheckSpec) -> dict[str, Any]:
    check: dict[str, Any] = {"test": list(spec.test)}
    if spec.interval_s:
        check["interval"] = _seconds_to_ns(spec.interval_s)
    if spec.timeout_s:
        check["timeout"] = _seconds_to_ns(spec.timeout_s)
    if spec.retries:
        check["retries"] = spec.retries
    if spec.start_period_s:
        check["start_period"] = _seconds_to_ns(spec.start_period_s)
    return check


def container_create_args(spec: ContainerSpec) -> tuple[dict[str, Any], dict[str, Any]]:
    """(kwargs of `APIClient.create_container` without host_config, kwargs of
    `APIClient.create_host_config`). Only what the spec sets is passed: Docker's defaults hold."""
    create: dict[str, Any] = {
        "image": spec.image,
        "name": spec.name,
        "labels": dict(spec.labels),
        "environment": dict(spec.env),
        "detach": True,
        # Do not inject proxy variables from the client's ~/.docker/config.json: the spec is all.
        "use_config_proxy": False,
    }
    host: dict[str, Any] = {}
    if spec.command is not None:
        create["command"] = list(spec.command)
    if spec.entrypoint is not None:
        create["entrypoint"] = list(spec.entrypoint)
    if spec.ports:
        create["ports"] = [(p.target, p.protocol) for p in spec.ports]
        # (host_ip,) with no host port: Docker picks a free one (read back from inspect).
        host["port_bindings"] = {f"{p.target}/{p.protocol}": (spec.host_ip,) for p in spec.ports}
    if spec.healthcheck is not None:
        create["healthcheck"] = _healthcheck(spec.healthcheck)
    for key, value in (
        ("user", spec.user),
        ("working_dir", spec.working_dir),
        ("hostname", spec.hostname),
        ("stop_signal", spec.stop_signal),
    ):
        if value is not None:
            create[key] = value
    if spec.stop_grace_s is not None:
        create["stop_timeout"] = math.ceil(spec.stop_grace_s)
    if spec.tty:
        create["tty"] = True

    for key, number in (
        ("nano_cpus", spec.nano_cpus),
        ("mem_limit", spec.memory_bytes),
        ("mem_reservation", spec.memory_reservation_bytes),
        ("shm_size", spec.shm_size_bytes),
        ("pids_limit", spec.pids_limit),
    ):
        if number is not None:
            host[key] = number
    if spec.mounts:
        host["mounts"] = [_mount(m) for m in spec.mounts]
    if spec.init:
        host["init"] = True
    if spec.read_only:
        host["read_only"] = True
    if spec.privileged:
        host["privileged"] = True
    for key, items in (
        ("cap_add", spec.cap_add),
        ("cap_drop", spec.cap_drop),
        ("group_add", spec.group_add),
        ("security_opt", spec.security_opt),
        ("dns", spec.dns),
        ("dns_search", spec.dns_search),
        ("dns_opt", spec.dns_options),
    ):
        if items:
            host[key] = list(items)
    if spec.extra_hosts:
        host["extra_hosts"] = dict(spec.extra_hosts)
    if spec.sysctls:
        host["sysctls"] = dict(spec.sysctls)
    if spec.ulimits:
        host["ulimits"] = [
            docker.types.Ulimit(name=u.name, soft=u.soft, hard=u.hard) for u in spec.ulimits
        ]
    if spec.log_driver is not None or spec.log_options:
        host["log_config"] = docker.types.LogConfig(
            type=spec.log_driver or "json-file", config=dict(spec.log_options)
        )
    if spec.network_mode is not None:
        host["network_mode"] = spec.network_mode
    elif spec.networks:
        # The others are joined between create and start (`run`): engines before API 1.44
        # take one network at create.
        host["network_mode"] = spec.networks[0]
    return create, host


def _host_ports(ports: Mapping[str, Any] | None) -> dict[tuple[int, str], int]:
    """NetworkSettings.Ports, {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "49153"}]} ->
    {(80, "tcp"): 49153}. With several bindings (0.0.0.0 and ::) the first one wins."""
    result: dict[tuple[int, str], int] = {}
    for key, bindings in (ports or {}).items():
        if not bindings:
            continue  # exposed, not published
        port, _, protocol = key.partition("/")
        for binding in bindings:
            if binding.get("HostPort"):
                result[(int(port), protocol or "tcp")] = int(binding["HostPort"])
                break
    return result


def _docker_time(value: str | None) -> str:
    return "" if not value or value == _DOCKER_ZERO_TIME else value


def container_info_from_inspect(attrs: Mapping[str, Any]) -> ContainerInfo:
    """`GET /containers/{id}/json` -> ContainerInfo."""
    state = attrs.get("State") or {}
    status = str(state.get("Status", ""))
    health = state.get("Health") or {}
    config = attrs.get("Config") or {}
    return ContainerInfo(
        id=str(attrs["Id"]),
        name=str(attrs.get("Name", "")).lstrip("/"),
        labels=dict(config.get("Labels") or {}),
        state=status,
        exit_code=int(state.get("ExitCode", 0)) if status in ("exited", "dead") else None,
        health=health.get("Status") or None,
        host_ports=_host_ports((attrs.get("NetworkSettings") or {}).get("Ports")),
        started_at=_docker_time(state.get("StartedAt")),
        finished_at=_docker_time(state.get("FinishedAt")),
        error=str(state.get("Error") or ""),
        image=str(config.get("Image", "")),
        oom_killed=bool(state.get("OOMKilled", False)),
        hosts_path=str(attrs.get("HostsPath") or ""),
    )


def container_event_from_docker(raw: Mapping[str, Any]) -> ContainerEvent | None:
    """One decoded message of `GET /events` -> ContainerEvent; None for non-container events."""
    if raw.get("Type", "container") != "container":
        return None
    actor = raw.get("Actor") or {}
    attributes: dict[str, str] = dict(actor.get("Attributes") or {})
    exit_code = attributes.get("exitCode")
    time_ns = raw.get("timeNano")
    if time_ns is None:
        time_ns = int(raw.get("time", 0)) * _NS_PER_S
    return ContainerEvent(
        action=str(raw.get("Action") or raw.get("status") or ""),
        container_id=str(actor.get("ID") or raw.get("id") or ""),
        labels={k: v for k, v in attributes.items() if k not in _DOCKER_EVENT_ATTRIBUTES},
        exit_code=int(exit_code) if exit_code is not None else None,
        time_ns=int(time_ns),
        name=attributes.get("name", ""),
        image=attributes.get("image", ""),
        signal=attributes.get("signal"),
    )


def container_stats_from_docker(raw: Mapping[str, Any]) -> ContainerStats:
    """One `GET /containers/{id}/stats?stream=false` sample -> ContainerStats, with the formulas of
    the docker CLI (cli/command/container/stats_helpers.go: calculateCPUPercentUnix and
    calculateMemUsageUnixNoCache)."""
    cpu = raw.get("cpu_stats") or {}
    precpu = raw.get("precpu_stats") or {}
    cpu_delta = (cpu.get("cpu_usage") or {}).get("total_usage", 0) - (
        precpu.get("cpu_usage") or {}
    ).get("total_usage", 0)
    system_delta = cpu.get("system_cpu_usage", 0) - precpu.get("system_cpu_usage", 0)
    online_cpus = cpu.get("online_cpus") or len(
        (cpu.get("cpu_usage") or {}).get("percpu_usage") or ()
    )
    cpu_percent = 0.0
    if cpu_delta > 0 and system_delta > 0:
        cpu_percent = cpu_delta / system_delta * max(online_cpus, 1) * 100.0

    memory = raw.get("memory_stats") or {}
    usage = int(memory.get("usage", 0))
    detail = memory.get("stats") or {}
    # cgroup v1 reports total_inactive_file, v2 inactive_file; the CLI subtracts it when present.
    if "total_inactive_file" in detail:
        inactive = int(detail["total_inactive_file"])
    else:
        inactive = int(detail.get("inactive_file", 0))
    if inactive < usage:
        usage -= inactive
    return ContainerStats(
        cpu_percent=cpu_percent,
        memory_bytes=usage,
        memory_limit_bytes=int(memory.get("limit", 0)),
    )


# --------------------------------------------------------------------------------------------
# Calls into docker-py


def _translated(operation: str, fn: Callable[[], T]) -> Callable[[], T]:
    """Wrap `fn` so that docker's exceptions leave the worker thread as DockerError."""

    def call() -> T:
        try:
            return fn()
        except docker.errors.APIError as e:
            raise DockerError(operation, e.status_code, e.explanation or str(e)) from e
        except (docker.errors.DockerException, requests.exceptions.RequestException, OSError) as e:
            raise DockerError(operation, None, str(e) or type(e).__name__) from e

    return call


def _short(container_id: str) -> str:
    return container_id[:12]


def _next_or_none(stream: Iterator[T]) -> T | None:
    return next(stream, None)


def _shut_down(stream: CancellableStream[Any]) -> None:
    """Shut the stream's socket down: a thread blocked reading it wakes up and ends."""
    stream.close()


def _release(stream: CancellableStream[Any]) -> None:
    """Close the HTTP response once no thread reads it. `CancellableStream.close` closes the
    socket object, but the response's file object still references it, so its descriptor stays
    open (and warns when collected) until the response itself is closed."""
    response: requests.Response | None = getattr(stream, "_response", None)
    if response is not None:
        response.close()


class _EventStream:
    """The async iterator handed out by `DockerRuntime.events`."""

    def __init__(self, receive: trio.MemoryReceiveChannel[ContainerEvent]) -> None:
        self._receive = receive
        self.failure: RuntimeAdapterError | None = None

    def __aiter__(self) -> _EventStream:
        return self

    async def __anext__(self) -> ContainerEvent:
        try:
            return await self._receive.receive()
        except trio.EndOfChannel:
            if self.failure is not None:
                raise self.failure from None
            raise StopAsyncIteration from None


class DockerRuntime:
    """Async facade over one docker-py client. Make it with `open_docker_runtime`."""

    def __init__(
        self,
        client: docker.DockerClient,
        stream_client: docker.DockerClient,
        *,
        limiter: trio.CapacityLimiter,
        stream_limiter: trio.CapacityLimiter,
    ) -> None:
        self._api = client.api
        # Same engine, for events and logs: no read timeout (a quiet `logs --follow` must not
        # time out after 60 s) and a connection pool as large as the stream limiter.
        self._stream_api = stream_client.api
        self._limiter = limiter
        self._stream_limiter = stream_limiter

    async def _call(self, operation: str, fn: Callable[[], T]) -> T:
        return await trio.to_thread.run_sync(_translated(operation, fn), limiter=self._limiter)

    async def ping(self) -> None:
        await self._call("ping", self._api.ping)

    async def image_present(self, ref: str) -> bool:
        def present() -> bool:
            try:
                self._api.inspect_image(ref)  # type: ignore[no-untyped-call]
            except docker.errors.ImageNotFound:
                return False
            return True

        return await self._call(f"image inspect {ref}", present)

    async def ensure_image(self, ref: str) -> None:
        """Return when `ref` is present, pulling it if needed; a failed pull raises DockerError
        with the daemon's message (e.g. "pull access denied for ...", "dial tcp: lookup ...")."""
        if await self.image_present(ref):
            return

        def pull() -> None:
            # The daemon reports most pull failures inside the progress stream with HTTP 200,
            # and docker-py's `images.pull` ignores them: read the stream ourselves, to its end
            # (which releases the connection), keeping the first error.
            error: str | None = None
            for message in self._api.pull(ref, stream=True, decode=True):
                if "error" in message and error is None:
                    detail = message.get("errorDetail") or {}
                    error = str(detail.get("message") or message["error"])
            if error is not None:
                raise DockerError(f"pull {ref}", None, error)
            self._api.inspect_image(ref)  # type: ignore[no-untyped-call]

        await self._call(f"pull {ref}", pull)

    async def run(self, spec: ContainerSpec) -> ContainerInfo:
        """Create and start a container; return its info, with the host ports Docker chose."""
        create_args, host_args = container_create_args(spec)

        def run() -> ContainerInfo:
            created = self._api.create_container(
                host_config=self._api.create_host_config(**host_args), **create_args
            )
            container_id = created["Id"]
            try:
                for network in spec.networks[1:]:
                    self._api.connect_container_to_network(container_id, network)
                self._api.start(container_id)
            except docker.errors.APIError:
                # The start (or connect) error is the one that matters; a failed cleanup must
                # not hide it.
                with suppress(docker.errors.APIError):
                    self._api.remove_container(container_id, force=True, v=True)
                raise
            return container_info_from_inspect(self._api.inspect_container(container_id))

        return await self._call(f"run {spec.name}", run)

    async def inspect(self, container_id: str) -> ContainerInfo | None:
        def inspect() -> ContainerInfo | None:
            try:
                return container_info_from_inspect(self._api.inspect_container(container_id))
            except docker.errors.NotFound:
                return None

        return await self._call(f"inspect {_short(container_id)}", inspect)

    async def list(self, labels: Mapping[str, str]) -> list[ContainerInfo]:
        """Containers in every state that carry all of `labels` (no labels: every container)."""
        filters = {"label": label_filters(labels)} if labels else None

        def list_() -> list[ContainerInfo]:
            infos = []
            for row in self._api.containers(all=True, filters=filters):
                try:
                    attrs = self._api.inspect_container(row["Id"])
                except docker.errors.NotFound:
                    continue  # removed between the list and the inspect
                infos.append(container_info_from_inspect(attrs))
            return infos

        return await self._call("list", list_)

    async def stop(self, container_id: str, timeout_s: float) -> None:
        """Send the stop signal, then SIGKILL after `timeout_s` (rounded up to whole seconds)."""
        await self._call(
            f"stop {_short(container_id)}",
            lambda: self._api.stop(container_id, timeout=math.ceil(timeout_s)),
        )

    async def remove(self, container_id: str, force: bool = True) -> None:
        """Remove the container and its anonymous volumes; a missing one is not an error."""

        def remove() -> None:
            try:
                self._api.remove_container(container_id, force=force, v=True)
            except docker.errors.NotFound:
                pass
            except docker.errors.APIError as e:
                # Two removers raced: the container is going away, which is what we asked for.
                if not (e.status_code == 409 and "already in progress" in str(e.explanation)):
                    raise

        await self._call(f"remove {_short(container_id)}", remove)

    async def kill(self, container_id: str, signal: str = "SIGKILL") -> None:
        await self._call(
            f"kill {_short(container_id)}", lambda: self._api.kill(container_id, signal=signal)
        )

    def events(
        self, labels: Mapping[str, str], *, since_s: float | None = None
    ) -> AbstractAsyncContextManager[AsyncIterator[ContainerEvent]]:
        """The engine's container events for containers carrying all of `labels`, from `since_s`
        (epoch seconds; default: now, so nothing between this call and the first read is lost).

            async with runtime.events({"swarmlet.node": node_id}) as events:
                async for event in events: ...

        A worker thread reads docker-py's decoding generator; leaving the block closes the HTTP
        response, which ends that thread at once."""
        return self._events(labels, time.time() if since_s is None else since_s)

    @asynccontextmanager
    async def _events(
        self, labels: Mapping[str, str], since_s: float
    ) -> AsyncIterator[AsyncIterator[ContainerEvent]]:
        filters: dict[str, Any] = {"type": ["container"], "event": list(CONTAINER_EVENT_ACTIONS)}
        if labels:
            filters["label"] = label_filters(labels)
        # Docker parses "seconds.nanoseconds" (api/types/time.ParseTimestamps); docker-py passes a
        # string through, and its stubs only know int (whole seconds would replay up to 1 s early).
        since: Any = f"{since_s:.9f}"
        stream = await self._call(
            "events", lambda: self._stream_api.events(since=since, filters=filters, decode=True)
        )
        send, receive = trio.open_memory_channel[ContainerEvent](0)
        iterator = _EventStream(receive)
        closing = False

        def pump() -> None:
            # Runs in a worker thread until the stream ends. `trio.from_thread.run(send.send, ...)`
            # gives back-pressure; it raises BrokenResourceError once the consumer has left.
            try:
                for raw in stream:
                    event = container_event_from_docker(raw)
                    if event is not None:
                        trio.from_thread.run(send.send, event)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return
            except Exception as e:
                if not closing:
                    iterator.failure = DockerError("events", None, str(e) or type(e).__name__)
                return
            # docker-py ends the iteration quietly when the connection drops.
            if not closing:
                iterator.failure = DockerError(
                    "events", None, "the engine closed the events stream (did it restart?)"
                )

        async def run_pump() -> None:
            try:
                await trio.to_thread.run_sync(pump, limiter=self._stream_limiter)
            finally:
                send.close()

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(run_pump)
                try:
                    yield iterator
                finally:
                    # Synchronous on purpose: this must run even when we are being cancelled.
                    closing = True
                    receive.close()  # a pump blocked in send() gets BrokenResourceError
                    _shut_down(stream)  # a pump blocked in recv() sees the socket shut down
        except BaseExceptionGroup as group:
            # The pump never raises, so a group holds the body's exception alone: unwrap it so
            # that callers see their own exception, not an ExceptionGroup.
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from None
            raise
        finally:
            _release(stream)  # the nursery has joined the pump: nobody reads the response now

    async def logs(
        self, container_id: str, *, follow: bool, tail: int | None = None
    ) -> AsyncGenerator[bytes, None]:
        """stdout and stderr interleaved, one line at a time without its newline. With `follow`
        the iteration ends when the container stops. Use it under `contextlib.aclosing` (or
        iterate to the end) so that the HTTP stream is closed promptly."""
        stream = await self._call(
            f"logs {_short(container_id)}",
            lambda: self._stream_api.logs(
                container_id,
                stdout=True,
                stderr=True,
                stream=True,
                follow=follow,
                tail="all" if tail is None else tail,
            ),
        )
        pending = b""
        try:
            while True:
                # abandon_on_cancel: a cancelled read leaves the thread blocked in recv() until
                # the finally below shuts the socket down, which ends it at once.
                chunk = await trio.to_thread.run_sync(
                    _next_or_none, stream, abandon_on_cancel=True, limiter=self._stream_limiter
                )
                if chunk is None:
                    break
                *lines, pending = (pending + chunk).split(b"\n")
                for line in lines:
                    yield line
            if pending:
                yield pending
        finally:
            _shut_down(stream)
            # An abandoned reader may still be waking up; closing under it only makes its
            # (discarded) read fail.
            _release(stream)

    async def stats(self, container_id: str) -> ContainerStats:
        """One sample; the engine takes about a second to measure the CPU delta."""
        raw = await self._call(
            f"stats {_short(container_id)}",
            lambda: self._api.stats(container_id, stream=False),
        )
        return container_stats_from_docker(raw)

    async def create_volume(
        self,
        name: str,
        driver: str = "local",
        driver_opts: Mapping[str, str] | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> None:
        """Create a named volume; an existing one with the same driver is kept (Docker's rule)."""
        await self._call(
            f"volume create {name}",
            lambda: self._api.create_volume(
                name,
                driver=driver,
                driver_opts=dict(driver_opts or {}),
                labels=dict(labels or {}),
            ),
        )

    async def remove_volume(self, name: str) -> None:
        """Remove a named volume; a missing one is not an error, one in use is (409)."""

        def remove() -> None:
            with suppress(docker.errors.NotFound):
                self._api.remove_volume(name)

        await self._call(f"volume rm {name}", remove)

    async def exposed_ports(self, image: str) -> tuple[tuple[int, str], ...]:
        """The image's EXPOSE ports as (port, protocol), sorted."""

        def exposed() -> tuple[tuple[int, str], ...]:
            attrs = self._api.inspect_image(image)  # type: ignore[no-untyped-call]
            keys = ((attrs.get("Config") or {}).get("ExposedPorts")) or {}
            ports = []
            for key in keys:
                port, _, protocol = str(key).partition("/")
                ports.append((int(port), protocol or "tcp"))
            return tuple(sorted(ports))

        return await self._call(f"image inspect {image}", exposed)

    async def create_network(
        self,
        name: str,
        *,
        labels: Mapping[str, str],
        subnet: str = "",
        ip_range: str = "",
        gateway: str = "",
        internal: bool = False,
        bridge: str = "",
    ) -> NetworkInfo:
        """Create a bridge network. Without `subnet`, Docker picks a free one from its pools;
        `ip_range` limits the addresses Docker gives to containers; `bridge` names the host
        interface (at most 15 characters)."""

        def create() -> NetworkInfo:
            ipam = None
            if subnet:
                pool = docker.types.IPAMPool(
                    subnet=subnet, iprange=ip_range or None, gateway=gateway or None
                )
                ipam = docker.types.IPAMConfig(pool_configs=[pool])
            created = self._api.create_network(
                name,
                driver="bridge",
                options={BRIDGE_NAME_OPTION: bridge} if bridge else None,
                ipam=ipam,
                internal=internal,
                labels=dict(labels),
                check_duplicate=True,
            )
            return network_info_from_inspect(self._api.inspect_network(created["Id"]))

        return await self._call(f"network create {name}", create)

    async def networks(self, labels: Mapping[str, str]) -> tuple[NetworkInfo, ...]:
        """Networks that carry all of `labels`."""

        def list_() -> tuple[NetworkInfo, ...]:
            rows = self._api.networks(filters={"label": label_filters(labels)})
            infos = []
            for row in rows:
                with suppress(docker.errors.NotFound):  # removed since the list
                    infos.append(network_info_from_inspect(self._api.inspect_network(row["Id"])))
            return tuple(infos)

        return await self._call("network ls", list_)

    async def inspect_network(self, name: str) -> NetworkInfo | None:
        def inspect() -> NetworkInfo | None:
            try:
                return network_info_from_inspect(self._api.inspect_network(name))
            except docker.errors.NotFound:
                return None

        return await self._call(f"network inspect {name}", inspect)

    async def remove_network(self, name: str) -> None:
        """Remove a network; a missing one is not an error, one with containers is (403)."""

        def remove() -> None:
            with suppress(docker.errors.NotFound):
                self._api.remove_network(name)

        await self._call(f"network rm {name}", remove)


def _probe_unix_socket(path: str, timeout_s: float) -> None:
    """Connect once and close. docker-py leaks its socket when a unix-socket connect fails (a
    ResourceWarning later); probing first with a socket we close gives the same error cleanly."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(timeout_s)
        probe.connect(path)


@asynccontextmanager
async def open_docker_runtime(
    *,
    max_threads: int = 8,
    max_stream_threads: int = 64,
    base_url: str | None = None,
    request_timeout_s: float = 60.0,
) -> AsyncIterator[DockerRuntime]:
    """Connect to the engine (`base_url`, else $DOCKER_HOST, else the local socket) and ping it;
    an engine that does not answer raises DockerError at once. TLS settings ($DOCKER_TLS_VERIFY)
    are not read: swarmlet talks to the local engine."""

    url = base_url or os.environ.get("DOCKER_HOST") or _DEFAULT_DOCKER_HOST

    def connect() -> docker.DockerClient:
        if url.startswith("unix://"):
            _probe_unix_socket(url.removeprefix("unix://"), request_timeout_s)
        return docker.DockerClient(
            base_url=url, version="auto", timeout=timeout_s, max_pool_size=max_threads + 2
        )

    # requests takes a float or None (no read timeout); docker's stubs say int.
    timeout_s: Any = request_timeout_s
    limiter = trio.CapacityLimiter(max_threads)
    client = await trio.to_thread.run_sync(_translated(f"connect {url}", connect), limiter=limiter)
    try:
        # The version is already negotiated: no second round trip.
        # Streams hold their connection for their whole life: one pooled connection each.
        stream_client = docker.DockerClient(
            base_url=url,
            version=client.api.api_version,
            timeout=_NO_TIMEOUT,
            max_pool_size=max_stream_threads,
        )
        try:
            runtime = DockerRuntime(
                client,
                stream_client,
                limiter=limiter,
                stream_limiter=trio.CapacityLimiter(max_stream_threads),
            )
            await runtime.ping()
            yield runtime
        finally:
            stream_client.close()
    finally:
        client.close()
