"""A task and its container, both ways, as pure functions: the `ContainerSpec` that runs a task
of a service (name, labels, ports, mounts, service names), and what a container's outcome means
for the task (its endpoints, the state an exit leads to, why a start failed).

Invariants:
  - a container's name is `<service>.<slot>.<task id>` (the node id stands in for the slot of a
    global service), so `docker ps` reads like `docker service ps`;
  - every container carries the cluster, node, service, task and slot labels (and the stack's,
    if any) on top of the user's own; ours win over the user's on a clash;
  - the ports published are the spec's plus the image's EXPOSE ports, each once, in that order;
  - secrets and configs are bound read-only; the user's extra_hosts win over service names;
  - exit code 0 completes a task, anything else (or none) fails it.

It must not do I/O nor import docker or trio: the task driver (`executor.driver`) feeds it what
it has read from the replicated state and the runtime.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from swarmlet.executor.labels import (
    LABEL_CLUSTER,
    LABEL_NODE,
    LABEL_SERVICE,
    LABEL_SLOT,
    LABEL_STACK,
    LABEL_TASK,
)
from swarmlet.executor.runtime_types import (
    ContainerInfo,
    ContainerSpec,
    HealthcheckSpec,
    MountSpec,
    PortBinding,
    UlimitSpec,
)
from swarmlet.state import generic_resources
from swarmlet.state.model import Service, ServiceSpec, Task, TaskState
from swarmlet.state.observed import MAX_EXPOSED_PORTS, Endpoint

__all__ = ["container_name", "container_spec", "exit_state", "start_error", "task_endpoints"]


def container_name(spec: ServiceSpec, task: Task) -> str:
    """`<service>.<slot>.<task id>`; a global service's task has the node id as its slot."""
    slot = str(task.slot) if task.slot else task.node_id
    return f"{spec.name}.{slot}.{task.id}"


def container_spec(
    service: Service,
    task: Task,
    *,
    cluster_id: str,
    node_id: str,
    host_ip: str,
    files: Sequence[tuple[str, str]] = (),
    networks: Sequence[str] = (),
    service_hosts: Mapping[str, str] = {},  # read only
    exposed: Sequence[tuple[int, str]] = (),
    publish_ip: str = "",
) -> ContainerSpec:
    """The container that runs `task` of `service` on this node.

    `files`: (host path, container path) of the task's secrets and configs, bound read-only.
    `networks`: the Docker networks to join; `service_hosts`: the services it may call by name
    (name -> VIP, `executor.networks`); `exposed`: the image's EXPOSE ports, published too so
    that other nodes' proxies reach them (the first `MAX_EXPOSED_PORTS`: the leader cuts a status
    to them). A `mode=host` port is published at its own number on
    `publish_ip` (the node's publish address, where its proxy listens; "" for `host_ip`), as
    Swarm does; the mesh does not route it."""
    spec = service.spec
    labels = dict(spec.container_labels)
    labels.update(
        {
            LABEL_CLUSTER: cluster_id,
            LABEL_NODE: node_id,
            LABEL_SERVICE: spec.name,
            LABEL_TASK: task.id,
            LABEL_SLOT: str(task.slot),
        }
    )
    if spec.stack:
        labels[LABEL_STACK] = spec.stack
    healthcheck = None
    if spec.healthcheck is not None:
        hc = spec.healthcheck
        healthcheck = HealthcheckSpec(
            test=hc.test,
            interval_s=hc.interval_s,
            timeout_s=hc.timeout_s,
            retries=hc.retries,
            start_period_s=hc.start_period_s,
        )
    return ContainerSpec(
        name=container_name(spec, task),
        image=spec.image,
        command=spec.command,
        entrypoint=spec.entrypoint,
        # swarmkit appends the generic resources' variables to the spec's: they win.
        env=dict(spec.env)
        | generic_resources.environment(spec.generic_resources, task.assigned_resources),
        labels=labels,
        ports=tuple(
            PortBinding(target, protocol)
            for target, protocol in dict.fromkeys(
                [(p.target, p.protocol) for p in spec.ports if p.mode != "host"]
                + list(exposed[:MAX_EXPOSED_PORTS])
            )
        )
        + tuple(
            PortBinding(p.target, p.protocol, host_port=p.published, host_ip=publish_ip)
            for p in spec.ports
            if p.mode == "host"
        ),
        host_ip=host_ip,
        nano_cpus=spec.limits.nano_cpus or None,
        memory_bytes=spec.limits.memory_bytes or None,
        memory_reservation_bytes=spec.reservations.memory_bytes or None,
        mounts=tuple(
            MountSpec(
                target=m.target,
                source=m.source,
                type=m.type,  # type: ignore[arg-type]  # validated when the spec was accepted
                read_only=m.read_only,
                volume_driver=m.driver or None,
                volume_driver_opts=dict(m.driver_opts),
            )
            for m in spec.mounts
        )
        + tuple(
            MountSpec(target=target, source=source, type="bind", read_only=True)
            for source, target in files
        ),
        healthcheck=healthcheck,
        user=spec.user or None,
        working_dir=spec.working_dir or None,
        hostname=spec.hostname or None,
        stop_signal=spec.stop_signal or None,
        stop_grace_s=spec.stop_grace_period_s,
        init=spec.init,
        # The user's own entries win over service names.
        extra_hosts={
            **service_hosts,
            **dict(h.split(":", 1) for h in spec.extra_hosts if ":" in h),
        },
        networks=tuple(networks),
        cap_add=spec.cap_add,
        cap_drop=spec.cap_drop,
        sysctls=dict(spec.sysctls),
        ulimits=tuple(UlimitSpec(u.name, u.soft, u.hard) for u in spec.ulimits),
        # "" leaves the node's default driver, to which the options still apply (as Swarm).
        log_driver=spec.log_driver or None,
        log_options=dict(spec.log_options),
        dns=spec.dns_servers,
        dns_search=spec.dns_search,
        dns_options=spec.dns_options,
        read_only=spec.read_only,
        tty=spec.tty,
        pids_limit=spec.pids_limit or None,
    )


def task_endpoints(info: ContainerInfo, host: str) -> tuple[Endpoint, ...]:
    """Where the proxies reach the task: each published port of its container on `host`."""
    return tuple(
        Endpoint(target=target, protocol=proto, host=host, port=port)
        for (target, proto), port in sorted(info.host_ports.items())
    )


def start_error(exc: Exception) -> str:
    """Why a task did not start. A KeyError is `secretfiles.materialize`'s: (name, is_config)."""
    if isinstance(exc, KeyError) and exc.args and isinstance(exc.args[0], tuple):
        name, is_config = exc.args[0]
        return f"missing {'config' if is_config else 'secret'} {name}"
    return str(exc)


def exit_state(exit_code: int | None) -> tuple[TaskState, str]:
    """The state a task reaches when its container exits with `exit_code`, and its error."""
    if exit_code == 0:
        return TaskState.COMPLETE, ""
    return TaskState.FAILED, f"task: non-zero exit ({exit_code})"
