"""The control API of autolock (issue #18): `swarmlet update --autolock=true|false` and
`swarmlet unlock-key [--rotate]`, on a manager.

The unlock key is made here, on the manager the operator talks to, sealed with the managers'
key and committed (`SetAutolock`); every manager then re-seals its own data key file when it
applies the change (`security.at_rest.AtRest.sync`). The key goes back to the operator over the
control socket (owner only) and is never in the replicated state in clear.
"""

from __future__ import annotations

from typing import Any

from swarmlet.api.cluster import ClusterAccess
from swarmlet.api.control_socket import Handler
from swarmlet.errors import NoLeaderError, RemoteProtocolError, SwarmletError, UsageError
from swarmlet.security import at_rest
from swarmlet.state.commands import SetAutolock


class AutolockControl:
    def __init__(self, cluster: ClusterAccess) -> None:
        self.cluster = cluster

    async def _fresh(self) -> None:
        if not await self.cluster.read_barrier():
            raise NoLeaderError("no leader answered: autolock needs the committed state")

    async def _commit(self, command: SetAutolock) -> None:
        result = await self.cluster.write(command)
        if not result.ok:
            raise UsageError(result.error)

    def _current_key(self) -> str:
        managers = self.cluster.keyring.require_managers()
        try:
            return at_rest.open_unlock_key(managers, self.cluster.state.sealed_unlock_key)
        except RemoteProtocolError as exc:
            raise SwarmletError(f"the unlock key in the state does not open: {exc}") from None

    async def update(self, args: dict[str, Any]) -> dict[str, Any]:
        """{"autolock": bool} -> {"autolock": bool, "key": the unlock key or None, "changed"}."""
        enabled = args.get("autolock")
        if not isinstance(enabled, bool):
            raise UsageError("--autolock: expected true or false")
        managers = self.cluster.keyring.require_managers()
        await self._fresh()
        if enabled == self.cluster.state.autolock:
            key = self._current_key() if enabled else None
            return {"autolock": enabled, "key": key, "changed": False}
        key = at_rest.new_unlock_key() if enabled else None
        sealed = at_rest.seal_unlock_key(managers, key) if key is not None else b""
        await self._commit(SetAutolock(enabled, sealed))
        return {"autolock": enabled, "key": key, "changed": True}

    async def unlock_key(self, args: dict[str, Any]) -> dict[str, Any]:
        """{"rotate": bool} -> {"key": the (new) unlock key}."""
        managers = self.cluster.keyring.require_managers()
        await self._fresh()
        if not self.cluster.state.autolock:
            raise UsageError(
                "autolock is off, so there is no unlock key: turn it on with "
                "`swarmlet update --autolock=true`"
            )
        if args.get("rotate"):
            key = at_rest.new_unlock_key()
            await self._commit(SetAutolock(True, at_rest.seal_unlock_key(managers, key)))
            return {"key": key, "rotated": True}
        return {"key": self._current_key(), "rotated": False}

    async def unlock(self, args: dict[str, Any]) -> None:
        """A running agent is unlocked (a locked one serves `unlock` itself: `node.locked`)."""
        raise UsageError("this node is not locked")

    def handlers(self) -> dict[str, Handler]:
        return {
            "autolock.update": self.update,
            "unlock-key": self.unlock_key,
            "unlock": self.unlock,
        }
