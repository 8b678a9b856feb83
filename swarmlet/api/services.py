"""The control API's service operations: create, inspect, list, scale, update, roll back,
remove and tasks (logs are `api.logs`'s, served through `streams`).

A service spec travels from the CLI wire-encoded (`wire.codec`), so its types are checked on
the way in; it is validated here again (`specparse.validate_spec`) because the API is not only
the CLI's. Everything that depends on the cluster state (name taken, port taken, secret
missing) is decided by `ClusterState.apply`, deterministically.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from typing import Any

from swarmlet import crypto
from swarmlet.api import registry_auth
from swarmlet.api.cluster import LocalAgent
from swarmlet.api.control_socket import Handler, StreamHandler
from swarmlet.api.logs import ServiceLogs
from swarmlet.api.nodes import cluster_reads, managers_only
from swarmlet.api.registry import pin_image
from swarmlet.errors import RemoteProtocolError, UsageError
from swarmlet.executor.registry_auth import RegistryCredential
from swarmlet.leader.orchestrator.core import placement_constraints
from swarmlet.leader.scheduler import ObservedNode, eligible_nodes
from swarmlet.state.commands import Batch, Command, CreateService, RemoveService, UpdateService
from swarmlet.state.model import (
    Service,
    ServiceMode,
    ServiceSpec,
    Task,
    TaskState,
    UpdateState,
    UpdateStatus,
)
from swarmlet.state.observed import TaskObservation
from swarmlet.state.observed import effective_state as observed_state
from swarmlet.state.replica_limit import MAX_REPLICAS, check_replicas
from swarmlet.state.specparse import validate_spec
from swarmlet.wire import codec as wire


def _plain(value: Any) -> Any:
    """A dataclass tree as JSON-friendly values (enums by value)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if hasattr(value, "value") and not isinstance(value, int | float | str | bytes):
        return value.value
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return value


def decode_spec(raw: object) -> ServiceSpec:
    """A wire-encoded spec from an API caller, type-checked and validated."""
    if not isinstance(raw, bytes):
        raise UsageError("spec: expected an encoded service spec")
    try:
        spec = wire.decode(raw, expect=(ServiceSpec,))
    except RemoteProtocolError as exc:
        raise UsageError(f"invalid service spec: {exc}") from None
    assert isinstance(spec, ServiceSpec)
    validate_spec(spec)
    return spec


async def pin_spec_image(
    spec: ServiceSpec,
    current: ServiceSpec | None,
    args: dict[str, Any],
    credential: RegistryCredential | None = None,
) -> tuple[ServiceSpec, list[str]]:
    """`spec` with its image's tag resolved to a digest on the registry (`registry.pin_image`,
    with the service's registry `credential` if it is that registry's), unless the caller asked
    `no_resolve_image`; and the warnings for the user."""
    if args.get("no_resolve_image"):
        return spec, []
    image, warning = await pin_image(
        spec.image,
        current.image if current else None,
        registry_auth.for_pinning(credential, spec.image),
    )
    return dataclasses.replace(spec, image=image), [warning] if warning else []


def effective_state(task: Task, obs: TaskObservation | None) -> TaskState:
    return observed_state(task.state, obs)


def is_up(task: Task, obs: TaskObservation | None) -> bool:
    return (
        task.desired_state is TaskState.RUNNING
        and obs is not None
        and obs.state is TaskState.RUNNING
        and obs.healthy is not False
        and not task.state.terminal
    )


class ServiceControl:
    def __init__(self, agent: LocalAgent) -> None:
        self.agent = agent
        self.service_logs = ServiceLogs(agent)  # also serves other managers' LogsRequest

    # ------------------------------------------------------------------------ helpers

    def _service(self, ref: str) -> Service:
        service = self.agent.state.find_service(ref)
        if service is None:
            raise UsageError(f"no such service: {ref}")
        return service

    @staticmethod
    def _spec(args: dict[str, Any]) -> ServiceSpec:
        return decode_spec(args.get("spec"))

    async def _commit(self, command: Any) -> str:
        result = await self.agent.write(command)
        if not result.ok:
            raise UsageError(result.error)
        return result.value

    def service_view(
        self,
        service: Service,
        tasks_obs: Mapping[str, TaskObservation],
        nodes: Mapping[str, ObservedNode],
    ) -> dict[str, Any]:
        spec = service.spec
        tasks = self.agent.state.tasks_of(service.id)
        running = sum(1 for t in tasks if is_up(t, tasks_obs.get(t.id)))
        if spec.mode is ServiceMode.GLOBAL:
            wanted = [t for t in tasks if t.desired_state is TaskState.RUNNING]
            desired = self._global_desired(service, len(wanted), nodes)
        elif spec.mode is ServiceMode.GLOBAL_JOB:  # one completion per node of this run
            run = [
                t
                for t in tasks
                if t.spec_version == service.version and t.desired_state <= TaskState.COMPLETE
            ]
            desired = self._global_desired(service, len(run), nodes)
        else:
            desired = spec.replicas  # a replicated job: the completions it wants
        job = None
        if spec.mode.is_job:
            # Swarm's JobStatus: this run's completions (tasks that exited 0).
            completed = sum(
                1
                for t in tasks
                if t.spec_version == service.version
                and effective_state(t, tasks_obs.get(t.id)) is TaskState.COMPLETE
            )
            job = {"completed": completed, "max_concurrent": spec.max_concurrent}
        return {
            "id": service.id,
            "name": spec.name,
            "mode": spec.mode.value,
            "image": spec.image,
            "replicas_desired": desired,
            "replicas_running": running,
            "ports": [_plain(p) for p in spec.ports],
            "stack": spec.stack,
            "version": service.version,
            "update_status": _plain(service.update_status),
            "autoscale": _plain(spec.autoscale) if spec.autoscale else None,
            "job": job,  # None for a service
        }

    def task_view(
        self, service: Service, task: Task, obs: TaskObservation | None
    ) -> dict[str, Any]:
        state = effective_state(task, obs)
        slot = str(task.slot) if task.slot else self.agent.node_name(task.node_id)
        return {
            "id": task.id,
            "name": f"{service.spec.name}.{slot}",
            "service": service.spec.name,
            "slot": task.slot,
            "node": task.node_id,
            "node_name": self.agent.node_name(task.node_id) if task.node_id else "",
            "desired_state": str(task.desired_state),
            "state": str(state),
            "healthy": obs.healthy if obs is not None else None,
            "error": (obs.error if obs is not None and obs.error else task.error),
            "message": task.message,
            "container_id": obs.container_id if obs is not None else "",
            "spec_version": task.spec_version,
            "created_at": task.created_at,
            "updated_at": max(task.updated_at, obs.since if obs is not None else 0.0),
            "endpoints": [_plain(e) for e in obs.endpoints] if obs is not None else [],
            "exit_code": obs.exit_code if obs is not None else None,
            # the named generic resources the task was given on its node ("gpu=UUID1")
            "generic_resources": [f"{r.kind}={r.value}" for r in task.assigned_resources],
        }

    def _global_desired(
        self, service: Service, tasks: int, nodes: Mapping[str, ObservedNode]
    ) -> int:
        """What a global service (or a global job's run) wants: a task on every node that may
        take one (Swarm counts the same), or its `tasks` if more (a paused node keeps the task
        it had). Counted from the tasks alone, a service the leader had not planned yet wanted
        0 and ran 0, and `service create` returned before any task existed."""
        constraints = placement_constraints(service)
        eligible = eligible_nodes(self.agent.state.nodes, nodes, constraints)
        return max(len(eligible), tasks)

    # ------------------------------------------------------------------------ operations

    async def create(self, args: dict[str, Any]) -> dict[str, Any]:
        spec = self._spec(args)
        credential = registry_auth.requested(args.get("registry_auth"))
        registry_auth.check_for_image(credential, spec.image)
        spec, warnings = await pin_spec_image(spec, None, args, credential)
        now = time.time()
        service_id = crypto.new_id()
        check_replicas(self.agent.state.services.values(), {service_id: spec})
        service = Service(
            id=service_id,
            spec=spec,
            created_at=now,
            updated_at=now,
            registry_auth=registry_auth.sealed(self.agent, service_id, credential),
        )
        await self._commit(CreateService(service))
        return {"id": service.id, "name": spec.name, "warnings": warnings}

    async def update(self, args: dict[str, Any]) -> dict[str, Any]:
        service = self._service(str(args.get("service", "")))
        spec = self._spec(args)
        if spec.name != service.spec.name:
            raise UsageError("a service cannot be renamed")
        # docker: --with-registry-auth replaces the service's credential; without, it stays.
        given = "registry_auth" in args
        credential = registry_auth.requested(args.get("registry_auth"))
        registry_auth.check_for_image(credential, spec.image)
        if not given:
            credential = registry_auth.stored(self.agent, service)
        spec, warnings = await pin_spec_image(spec, service.spec, args, credential)
        check_replicas(self.agent.state.services.values(), {service.id: spec})
        command: Command = UpdateService(service.id, spec, time.time())
        if given:
            replace = registry_auth.set_command(self.agent, service, credential)
            command = Batch((command, replace)) if replace is not None else command
        await self._commit(command)
        return {
            "id": service.id,
            "version": self.agent.state.services[service.id].version,
            "warnings": warnings,
        }

    async def rollback(self, args: dict[str, Any]) -> dict[str, Any]:
        service = self._service(str(args.get("service", "")))
        if service.previous_spec is None:
            raise UsageError(f"service {service.spec.name} has no previous spec to roll back to")
        check_replicas(self.agent.state.services.values(), {service.id: service.previous_spec})
        now = time.time()
        status = UpdateStatus(
            UpdateState.ROLLBACK_STARTED, started_at=now, message="manually requested"
        )
        await self._commit(
            UpdateService(
                service.id, service.previous_spec, now, is_rollback=True, update_status=status
            )
        )
        return {"id": service.id}

    async def scale(self, args: dict[str, Any]) -> dict[str, Any]:
        changes = args.get("scale") or {}
        if not isinstance(changes, dict) or not changes:
            raise UsageError("expected SERVICE=REPLICAS")
        planned = []
        for ref, replicas in changes.items():
            service = self._service(str(ref))
            if not isinstance(replicas, int) or replicas < 0:
                raise UsageError(f"{ref}: replicas must be 0 or more, got {replicas!r}")
            if replicas > MAX_REPLICAS:
                raise UsageError(
                    f"{ref}: replicas must be at most {MAX_REPLICAS:,} (the cluster's limit), "
                    f"got {replicas:,}"
                )
            if service.spec.mode.is_global:
                raise UsageError(f"{ref}: a {service.spec.mode} service cannot be scaled")
            if service.spec.autoscale is not None:
                raise UsageError(
                    f"{ref}: the service is autoscaled (min {service.spec.autoscale.min_replicas}, "
                    f"max {service.spec.autoscale.max_replicas}); change the policy with "
                    "`service update --autoscale` or remove it with `--autoscale none`"
                )
            planned.append((service, replicas))
        specs = {s.id: dataclasses.replace(s.spec, replicas=r) for s, r in planned}
        check_replicas(self.agent.state.services.values(), specs)
        for service_id, spec in specs.items():
            await self._commit(UpdateService(service_id, spec, time.time()))
        return {"scaled": {s.spec.name: r for s, r in planned}}

    async def rm(self, args: dict[str, Any]) -> dict[str, Any]:
        removed = []
        for ref in args.get("services") or ():
            service = self._service(str(ref))
            await self._commit(RemoveService(service.id, time.time()))
            removed.append(service.spec.name)
        return {"removed": removed}

    async def ls(self, args: dict[str, Any]) -> dict[str, Any]:
        fresh = await self.agent.read_barrier()
        observed = self.agent.observed()
        services = sorted(self.agent.state.services.values(), key=lambda s: s.spec.name)
        stack = args.get("stack")
        views = [
            self.service_view(s, observed.tasks, observed.nodes)
            for s in services
            if not stack or s.spec.stack == stack
        ]
        return {"stale": not fresh, "services": views}

    async def inspect(self, args: dict[str, Any]) -> dict[str, Any]:
        await self.agent.read_barrier()
        service = self._service(str(args.get("service", "")))
        observed = self.agent.observed()
        view = self.service_view(service, observed.tasks, observed.nodes)
        view["spec"] = _plain(service.spec)
        view["previous_spec"] = _plain(service.previous_spec) if service.previous_spec else None
        view["created_at"] = service.created_at
        view["updated_at"] = service.updated_at
        pending = [
            t.message
            for t in self.agent.state.tasks_of(service.id)
            if t.state is TaskState.PENDING and t.message
        ]
        view["pending_reasons"] = sorted(set(pending))
        view["port_errors"] = self._port_errors(service)
        return view

    def _port_errors(self, service: Service) -> list[str]:
        """Published ports of this service that some node's proxy cannot listen on."""
        keys = {f"{p.published}/{p.protocol}" for p in service.spec.ports if p.mode == "ingress"}
        errors = []
        for node_id in sorted(self.agent.state.nodes):
            if node_id == self.agent.node_id:
                node_errors = {f"{k[0]}/{k[1]}": v for k, v in self.agent.proxy.port_errors.items()}
            else:
                node_errors = self.agent.state.port_errors.get(node_id, {})
            for key in sorted(keys & set(node_errors)):
                errors.append(f"{self.agent.node_name(node_id)}: {node_errors[key]}")
        return errors

    async def spec(self, args: dict[str, Any]) -> bytes:
        """The current spec, wire-encoded: the base that `service update` changes."""
        await self.agent.read_barrier()
        return wire.encode(self._service(str(args.get("service", ""))).spec)

    async def ps(self, args: dict[str, Any]) -> dict[str, Any]:
        await self.agent.read_barrier()
        tasks_obs = dict(self.agent.observed().tasks)
        refs = args.get("services") or ()
        stack = args.get("stack")
        if refs:
            services = [self._service(str(ref)) for ref in refs]
        else:
            services = [
                s for s in self.agent.state.services.values() if not stack or s.spec.stack == stack
            ]

        def views() -> list[dict[str, Any]]:  # 100,000 tasks: over a second, off the loop
            return [
                self.task_view(service, task, tasks_obs.get(task.id))
                for service in sorted(services, key=lambda s: s.spec.name)
                for task in self.agent.state.tasks_of(service.id)
            ]

        return {"tasks": await self.agent.run_with_state_still(views)}

    # ------------------------------------------------------------------------ tables

    def handlers(self) -> dict[str, Handler]:
        writes = {
            "service.create": self.create,
            "service.update": self.update,
            "service.rollback": self.rollback,
            "service.scale": self.scale,
            "service.rm": self.rm,
        }
        return managers_only(self.agent, writes) | cluster_reads(
            self.agent,
            {
                "service.ls": self.ls,
                "service.inspect": self.inspect,
                "service.spec": self.spec,
                "service.ps": self.ps,
            },
        )

    def streams(self) -> dict[str, StreamHandler]:
        return self.service_logs.streams()
