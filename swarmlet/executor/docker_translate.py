"""Pure translations between the runtime values (`executor.runtime_types`) and what docker-py
and the Engine API speak: `ContainerSpec` -> the keyword arguments of `create_container` /
`create_host_config`; the JSON of inspect, events and stats -> `ContainerInfo`,
`ContainerEvent`, `ContainerStats`, `NetworkInfo`; label filters; the event actions asked for.

Invariants:
  - the output is plain data (dicts, lists, tuples, str, int): docker-py's own types are built
    by the adapter, which is the only module that imports docker;
  - a spec passes only what it sets, so Docker's and the image's defaults hold for the rest;
  - seconds become Docker's nanoseconds (healthcheck) or whole seconds rounded up (stop timeout);
  - a container's exit code is read only once it has exited or is dead, Docker's zero time reads
    as "", and the attributes Docker adds to an event are kept apart from the labels.

It must not import docker, trio or time, nor know tasks, services or the cluster: the functions
here are deterministic and tested with tables.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from swarmlet.executor.runtime_types import (
    ContainerEvent,
    ContainerInfo,
    ContainerSpec,
    ContainerStats,
    HealthcheckSpec,
    MountSpec,
    NetworkInfo,
)
from swarmlet.state.specparse import MAX_DURATION_S

__all__ = [
    "BRIDGE_NAME_OPTION",
    "CONTAINER_EVENT_ACTIONS",
    "container_create_args",
    "container_event_from_docker",
    "container_info_from_inspect",
    "container_stats_from_docker",
    "label_filters",
    "mount_args",
    "network_info_from_inspect",
]

_NS_PER_S = 1_000_000_000
# Docker's zero time.Time, reported as StartedAt/FinishedAt of a container that never ran/stopped.
_DOCKER_ZERO_TIME = "0001-01-01T00:00:00Z"
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


# The network option that names a bridge network's host interface.
BRIDGE_NAME_OPTION = "com.docker.network.bridge.name"


# --------------------------------------------------------------------------------------------
# Filters


def label_filters(labels: Mapping[str, str]) -> list[str]:
    """Docker filter values for "has every one of these labels" (Docker ANDs label filters)."""
    return [f"{key}={value}" for key, value in sorted(labels.items())]


# --------------------------------------------------------------------------------------------
# ContainerSpec -> docker-py arguments


def bounded_seconds(seconds: float) -> float:
    """`seconds` within 0..MAX_DURATION_S, as every spec is validated today; a release before
    that took `inf` and `nan`, and converting them crashed the agent at every start."""
    return min(max(seconds, 0.0), MAX_DURATION_S) if not math.isnan(seconds) else 0.0


def _seconds_to_ns(seconds: float) -> int:
    return round(bounded_seconds(seconds) * _NS_PER_S)


def mount_args(spec: MountSpec) -> dict[str, Any]:
    """The keyword arguments of `docker.types.Mount` (which also checks that the options fit the
    mount type); the volume driver is given as the Engine API's DriverConfig object."""
    driver_config: dict[str, Any] | None = None
    if spec.volume_driver is not None or spec.volume_driver_opts:
        driver_config = {"Name": spec.volume_driver or "local"}
        if spec.volume_driver_opts:
            driver_config["Options"] = dict(spec.volume_driver_opts)
    return {
        "target": spec.target,
        "source": spec.source or None,
        "type": spec.type,
        "read_only": spec.read_only,
        "propagation": spec.bind_propagation,
        "no_copy": spec.volume_nocopy,
        "labels": dict(spec.volume_labels) or None,
        "driver_config": driver_config,
        "tmpfs_size": spec.tmpfs_size_bytes,
        "tmpfs_mode": spec.tmpfs_mode,
    }


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
    `APIClient.create_host_config`). Only what the spec sets is passed: Docker's defaults hold.

    All plain data: each of `mounts` is `mount_args` (the adapter makes the `docker.types.Mount`),
    and `create_host_config` turns the `ulimits` and `log_config` dicts into docker-py's types."""
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
        create["ports"] = list(dict.fromkeys((p.target, p.protocol) for p in spec.ports))
        # (host_ip,) with no host port: Docker picks a free one (read back from inspect). A
        # container port may have several bindings (the mesh's and a host-mode one); the
        # mesh's comes first, which is the one `_host_ports` reads back.
        bindings: dict[str, list[tuple[str] | tuple[str, int]]] = {}
        for p in sorted(spec.ports, key=lambda p: p.host_port != 0):
            ip = p.host_ip or spec.host_ip
            binding = (ip, p.host_port) if p.host_port else (ip,)
            bindings.setdefault(f"{p.target}/{p.protocol}", []).append(binding)
        host["port_bindings"] = bindings
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
        create["stop_timeout"] = math.ceil(bounded_seconds(spec.stop_grace_s))
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
        host["mounts"] = [mount_args(m) for m in spec.mounts]
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
        host["ulimits"] = [{"name": u.name, "soft": u.soft, "hard": u.hard} for u in spec.ulimits]
    if spec.log_driver is not None or spec.log_options:
        # An empty type is the daemon's default driver, which the options are then for.
        host["log_config"] = {"type": spec.log_driver or "", "config": dict(spec.log_options)}
    if spec.network_mode is not None:
        host["network_mode"] = spec.network_mode
    elif spec.networks:
        # The others are joined between create and start (`run`): engines before API 1.44
        # take one network at create.
        host["network_mode"] = spec.networks[0]
    return create, host


# --------------------------------------------------------------------------------------------
# Engine JSON -> values


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


def network_info_from_inspect(attrs: Mapping[str, Any]) -> NetworkInfo:
    """`GET /networks/{id}` -> NetworkInfo: the first IPv4 subnet, and the host interface of a
    bridge network."""
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
