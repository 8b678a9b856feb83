"""A locked node's start (autolock, issue #18): before the agent exists, serve `status` and
`unlock` on the control socket until the operator gives the unlock key, then hand the opened
data key to the agent.

Nothing else runs while the node is locked: no storage is opened, no port is listened on, no
gossip or Raft; the node is down to the others (as a locked Swarm manager is) and catches up
once unlocked. A wrong key is refused and the node stays locked. Status says `locked: true`.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import trio

from swarmlet.api.control_socket import serve_control
from swarmlet.errors import UsageError
from swarmlet.security import at_rest
from swarmlet.security.datadir import DataDir

log = logging.getLogger(__name__)


class _LockedOperations(dict[str, Any]):
    """`status` and `unlock`; every other operation answers that the node is locked."""

    def __contains__(self, op: object) -> bool:
        return True

    def __missing__(self, op: str) -> Any:
        async def refuse(args: dict[str, Any]) -> None:
            raise UsageError(
                f"{op}: this node is locked (autolock); run `swarmlet unlock` with the cluster's "
                "unlock key first"
            )

        return refuse


async def wait_until_unlocked(
    datadir: DataDir, *, listening: trio.Event | None = None
) -> tuple[bytes, str]:
    """(the data key, the unlock key that opened it), once `swarmlet unlock` gave the key.
    `listening` is set once the control socket answers."""
    identity, _ = datadir.read_identity()
    opened: list[tuple[bytes, str]] = []
    unlocked = trio.Event()

    async def status(args: dict[str, Any]) -> dict[str, Any]:
        return {
            "node_id": identity.node_id,
            "name": identity.name,
            "cluster_id": identity.cluster_id,
            "addr": identity.addr,
            "locked": True,
            "member": False,
            "raft": {"role": "locked", "leader_id": None},
            "gossip": {"alive": 0},
        }

    async def unlock(args: dict[str, Any]) -> dict[str, Any]:
        key = args.get("key")
        if not isinstance(key, str):
            raise UsageError("unlock: expected the unlock key")
        if unlocked.is_set():
            raise UsageError("this node is already unlocked")
        # scrypt takes a tenth of a second and 32 MiB: off the event loop.
        dek = await trio.to_thread.run_sync(at_rest.unlock, datadir.path, key)
        opened.append((dek, at_rest.check_unlock_key(key)))
        unlocked.set()
        log.info("unlocked: the agent starts")
        return {"unlocked": True}

    datadir.write_pid(os.getpid())  # `agent_running` sees a locked agent as running
    log.warning(
        "this node is locked (autolock): run `swarmlet unlock` with the cluster's unlock key"
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(
            serve_control,
            datadir.socket_path,
            _LockedOperations(status=status, unlock=unlock),
            {},
        )
        if listening is not None:
            listening.set()
        await unlocked.wait()
        nursery.cancel_scope.cancel()
    return opened[0]
