"""The control API's stack operations: deploy (create, update only what changed, prune), list,
remove.

The CLI loads and converts the stack files (`swarmlet.stack`): a stack that fails to load or
validate never reaches the agent, so it changes nothing. What reaches the agent is applied as
one `Batch`: all of it or none of it.
"""

from __future__ import annotations

import time
from typing import Any

from swarmlet import crypto, off_loop
from swarmlet.api import registry_auth
from swarmlet.api.cluster import ClusterAccess
from swarmlet.api.control_socket import Handler
from swarmlet.api.nodes import cluster_reads, managers_only
from swarmlet.api.secrets import LABEL_STACK, secret_command
from swarmlet.api.services import decode_spec, pin_spec_image
from swarmlet.errors import UsageError
from swarmlet.state.commands import (
    Batch,
    Command,
    CreateSecret,
    CreateService,
    RemoveSecret,
    RemoveService,
    UpdateService,
)
from swarmlet.state.model import Service, ServiceSpec
from swarmlet.state.replica_limit import check_replicas


class StackControl:
    def __init__(self, agent: ClusterAccess) -> None:
        self.agent = agent

    async def deploy(self, args: dict[str, Any]) -> dict[str, Any]:
        agent = self.agent
        stack = str(args.get("name", ""))
        if not stack:
            raise UsageError("a stack name is required")
        await agent.read_barrier()
        commands: list[Command] = []
        proposed = 0  # bytes of the secrets and configs created by this deploy
        for item in args.get("secrets") or ():
            command = secret_command(
                agent,
                str(item["name"]),
                bytes(item["data"]),
                {LABEL_STACK: stack},
                is_config=bool(item.get("is_config")),
                proposed_with=proposed,
            )
            if isinstance(command, CreateSecret):
                proposed += len(command.secret.data)
            if command is not None:
                commands.append(command)
        raws = list(args.get("services") or ())
        specs = await off_loop.run_if(
            len(raws) >= off_loop.HEAVY_RECORDS, lambda: [decode_spec(raw) for raw in raws]
        )
        # --with-registry-auth: one credential (or None) per service, in the order of `services`.
        given = "registry_auth" in args
        credentials = list(args.get("registry_auth") or ())
        if given and len(credentials) != len(specs):
            raise UsageError("registry_auth: expected one entry (or null) per service")
        created, updated, unchanged, removed = [], [], [], []
        warnings: list[str] = []
        now = time.time()
        changes: dict[str, ServiceSpec | None] = {}  # for the replica limit
        for index, spec in enumerate(specs):
            current = agent.state.service_by_name(spec.name)
            credential = None
            if given:
                credential = registry_auth.requested(credentials[index])
                registry_auth.check_for_image(credential, spec.image)
            elif current is not None:
                credential = registry_auth.stored(agent, current)
            # Pinned as `service create/update` pin, so that a redeploy whose tags still name
            # the same digests leaves those services unchanged, and one whose tag moved updates.
            spec, spec_warnings = await pin_spec_image(
                spec, current.spec if current is not None else None, args, credential
            )
            warnings += spec_warnings
            if current is None:
                service_id = crypto.new_id()
                sealed = registry_auth.sealed(agent, service_id, credential)
                service = Service(
                    id=service_id, spec=spec, created_at=now, updated_at=now, registry_auth=sealed
                )
                commands.append(CreateService(service))
                changes[service_id] = spec
                created.append(spec.name)
                continue
            if current.spec.stack != stack:
                raise UsageError(f"service {spec.name} exists and does not belong to stack {stack}")
            if current.spec != spec:
                commands.append(UpdateService(current.id, spec, now))
                changes[current.id] = spec
                updated.append(spec.name)
            else:
                unchanged.append(spec.name)
            # A new credential alone restarts nothing (as swarmkit, which ignores PullOptions).
            replace = registry_auth.set_command(agent, current, credential) if given else None
            if replace is not None:
                commands.append(replace)
        if args.get("prune"):
            names = {s.name for s in specs}
            for service in agent.state.services.values():
                if service.spec.stack == stack and service.spec.name not in names:
                    commands.append(RemoveService(service.id, now))
                    changes[service.id] = None
                    removed.append(service.spec.name)
        check_replicas(agent.state.services.values(), changes)
        if commands:
            result = await agent.write(Batch(tuple(commands)))
            if not result.ok:
                raise UsageError(result.error)
        return {
            "created": created,
            "updated": updated,
            "unchanged": unchanged,
            "removed": removed,
            "warnings": warnings,
        }

    async def ls(self, args: dict[str, Any]) -> dict[str, Any]:
        await self.agent.read_barrier()
        stacks: dict[str, int] = {}
        for service in self.agent.state.services.values():
            if service.spec.stack:
                stacks[service.spec.stack] = stacks.get(service.spec.stack, 0) + 1
        return {"stacks": [{"name": k, "services": v} for k, v in sorted(stacks.items())]}

    async def rm(self, args: dict[str, Any]) -> dict[str, Any]:
        agent = self.agent
        stack = str(args.get("name", ""))
        await agent.read_barrier()
        now = time.time()
        services = [s for s in agent.state.services.values() if s.spec.stack == stack]
        secrets = [s for s in agent.state.secrets.values() if s.labels.get(LABEL_STACK) == stack]
        if not services and not secrets:
            raise UsageError(f"nothing found in stack: {stack}")
        commands: list[Command] = [RemoveService(s.id, now) for s in services]
        commands += [RemoveSecret(s.id) for s in secrets]
        result = await agent.write(Batch(tuple(commands)))
        if not result.ok:
            raise UsageError(result.error)
        return {
            "removed_services": sorted(s.spec.name for s in services),
            "removed_secrets": sorted(s.name for s in secrets),
        }

    def handlers(self) -> dict[str, Handler]:
        writes = {"stack.deploy": self.deploy, "stack.rm": self.rm}
        return managers_only(self.agent, writes) | cluster_reads(self.agent, {"stack.ls": self.ls})
