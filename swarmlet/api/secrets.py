"""The control API's secret and config operations.

Secrets are sealed with the managers' key (AES-GCM, `crypto.ManagerKeys`) before they are
proposed, so the Raft log, snapshots and data dirs only ever hold ciphertext that workers cannot
open, although they replicate it: creating a secret (or comparing one with an existing secret of
that name) therefore needs a manager. `inspect` never returns a secret's value; a node receives
values only for its own tasks (`swarmlet.security.secret_delivery`). Configs are not secret and
stored as they are. Both are immutable, as in Swarm, and cannot be removed while a service uses
them (`ClusterState.apply` refuses).
"""

from __future__ import annotations

import time
from typing import Any

from swarmlet import crypto
from swarmlet.api.cluster import ClusterAccess
from swarmlet.api.control_socket import Handler
from swarmlet.api.nodes import cluster_reads, managers_only
from swarmlet.errors import UsageError
from swarmlet.state.commands import Command, CreateSecret, RemoveSecret
from swarmlet.state.model import Secret

LABEL_STACK = "swarmlet.stack"
MAX_SECRET_BYTES = 500 * 1024  # Swarm's limits
MAX_CONFIG_BYTES = 1000 * 1024
# All secrets and configs together, checked before the write is proposed. They were the way to a
# state past the 64 MiB a Raft snapshot was once limited to (70 configs of Swarm's largest size);
# snapshots now go up to `wire.codec.MAX_SNAPSHOT_BYTES`, and this keeps what every manager
# holds in memory of them, and sends each new one, modest (100,000 tasks weigh 4.5 MB).
MAX_SECRETS_TOTAL_BYTES = 32 * 1024 * 1024


def secret_command(
    cluster: ClusterAccess,
    name: str,
    data: bytes,
    labels: dict[str, str],
    *,
    is_config: bool,
    proposed_with: int = 0,
) -> Command | None:
    """CreateSecret for a new secret/config; None if an identical one exists; UsageError if one
    of that name exists with other content (secrets are immutable, as in Swarm).
    `proposed_with`: the bytes of the secrets and configs created in the same write (a stack's)."""
    kind = "config" if is_config else "secret"
    limit = MAX_CONFIG_BYTES if is_config else MAX_SECRET_BYTES
    if len(data) > limit:
        raise UsageError(f"{kind} {name!r} is {len(data)} bytes; the limit is {limit // 1024} KB")
    keys = None if is_config else cluster.keyring.require_managers()
    existing = cluster.state.secret_by_name(name, is_config=is_config)
    if existing is not None:
        current = existing.data if keys is None else keys.open_secret(existing.id, existing.data)
        if current != data:
            raise UsageError(
                f"{kind} {name!r} already exists with other content; {kind}s are immutable: "
                "give the new version a new name"
            )
        return None
    secret_id = crypto.new_id()
    stored = data if keys is None else keys.seal_secret(secret_id, data)
    held = proposed_with + sum(len(s.data) for s in cluster.state.secrets.values())
    if held + len(stored) > MAX_SECRETS_TOTAL_BYTES:
        raise UsageError(
            f"{kind} {name!r} ({len(data)} bytes) would bring the secrets and configs of the "
            f"cluster to {held + len(stored)} bytes; the limit for all of them together is "
            f"{MAX_SECRETS_TOTAL_BYTES // (1024 * 1024)} MiB (every manager holds them all): "
            f"remove unused ones first (`swarmlet {kind} rm`)"
        )
    return CreateSecret(
        Secret(
            id=secret_id,
            name=name,
            data=stored,
            labels=labels,
            created_at=time.time(),
            is_config=is_config,
        )
    )


class SecretControl:
    def __init__(self, agent: ClusterAccess) -> None:
        self.agent = agent

    def _view(self, item: Secret) -> dict[str, Any]:
        users = sorted(
            s.spec.name
            for s in self.agent.state.services.values()
            if any(
                r.name == item.name for r in (s.spec.configs if item.is_config else s.spec.secrets)
            )
        )
        view: dict[str, Any] = {
            "id": item.id,
            "name": item.name,
            "labels": dict(item.labels),
            "created_at": item.created_at,
            "size_bytes": len(item.data) - (0 if item.is_config else crypto.SEAL_OVERHEAD),
            "services": users,
        }
        if item.is_config:
            view["data"] = item.data.decode(errors="replace")
        return view

    def _find(self, ref: str, is_config: bool) -> Secret:
        state = self.agent.state
        item = state.secrets.get(ref)
        if item is None or item.is_config != is_config:
            item = state.secret_by_name(ref, is_config=is_config)
        if item is None:
            raise UsageError(f"no such {'config' if is_config else 'secret'}: {ref}")
        return item

    async def create(self, args: dict[str, Any]) -> dict[str, Any]:
        is_config = bool(args.get("is_config"))
        name = str(args.get("name", ""))
        data = args.get("data")
        if not name or not isinstance(data, bytes):
            raise UsageError("a name and the content are required")
        await self.agent.read_barrier()
        labels = {str(k): str(v) for k, v in (args.get("labels") or {}).items()}
        command = secret_command(self.agent, name, data, labels, is_config=is_config)
        if command is None:
            raise UsageError(f"{'config' if is_config else 'secret'} {name!r} already exists")
        result = await self.agent.write(command)
        if not result.ok:
            raise UsageError(result.error)
        return {"id": result.value, "name": name}

    async def ls(self, args: dict[str, Any]) -> list[dict[str, Any]]:
        await self.agent.read_barrier()
        is_config = bool(args.get("is_config"))
        items = [s for s in self.agent.state.secrets.values() if s.is_config == is_config]
        return [self._view(s) for s in sorted(items, key=lambda s: s.name)]

    async def inspect(self, args: dict[str, Any]) -> dict[str, Any]:
        await self.agent.read_barrier()
        return self._view(self._find(str(args.get("name", "")), bool(args.get("is_config"))))

    async def rm(self, args: dict[str, Any]) -> dict[str, Any]:
        item = self._find(str(args.get("name", "")), bool(args.get("is_config")))
        result = await self.agent.write(RemoveSecret(item.id))
        if not result.ok:
            raise UsageError(result.error)
        return {"removed": item.name}

    def handlers(self) -> dict[str, Handler]:
        writes = {"secret.create": self.create, "secret.rm": self.rm}
        return managers_only(self.agent, writes) | cluster_reads(
            self.agent,
            {
                "secret.ls": self.ls,
                "secret.inspect": self.inspect,
            },
        )
