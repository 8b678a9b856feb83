"""Writes from anywhere in the cluster: committed through the leader, wherever it is.

A write on the leader is proposed to its Raft driver directly. On any other node it is signed
with the managers' key (`security.propose_auth`: only managers write) and sent to the leader as
a `ProposeRequest`; the leader checks the signature, proposes, and answers with the entry's
index, and the writer waits until its own replica has applied that index, so a caller reads its
own write. Elections and unreachable leaders are retried until `write_timeout_s`.

The serving side (`serve_propose`) runs on the node a `ProposeRequest` reaches: it refuses what
`ProposeGuard` refuses (bad signature, replay, not addressed to it) and answers `not_leader`
with a hint when it has lost the leadership.

Must not know: what a command means (it only encodes and decodes it), who asked for the write.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Awaitable, Callable

import trio

from swarmlet.errors import NoLeaderError, NotLeaderError, RemoteProtocolError
from swarmlet.raft.driver import RaftDriver
from swarmlet.security import propose_auth as proposeauth
from swarmlet.security.keyring import KeyRing
from swarmlet.state.commands import COMMANDS, Command
from swarmlet.state.machine import ApplyResult
from swarmlet.wire import codec as wire
from swarmlet.wire.peer_rpc import ProposeReply, ProposeRequest
from swarmlet.wire.transport import Address, FramedStream, Transport

log = logging.getLogger(__name__)

# How long a writer waits for the next leader before it asks again (an election is under way).
_LEADER_POLL_S = 0.1


class WriteForwarding:
    def __init__(
        self,
        *,
        node_id: str,
        raft: RaftDriver[ApplyResult],
        propose: Callable[[Command], Awaitable[ApplyResult]],
        keyring: KeyRing,
        transport: Transport,
        resolve: Callable[[str], Address | None],
        write_timeout_s: float,
    ) -> None:
        """`propose` commits a command on this node when it leads (`raft.propose`, encoded);
        `resolve` finds a node's address."""
        self.node_id = node_id
        self.raft = raft
        self._propose = propose
        self.keyring = keyring
        self.transport = transport
        self._resolve = resolve
        self.write_timeout_s = write_timeout_s
        self.propose_guard = proposeauth.ProposeGuard()

    async def write(self, command: Command) -> ApplyResult:
        """Commit `command` through the leader, wherever it is, and wait until it is applied
        here too. Retries across elections until `write_timeout_s`; raises NoLeaderError then."""
        deadline = trio.current_time() + self.write_timeout_s
        while True:
            try:
                if self.raft.is_leader:
                    return await self._propose(command)
                leader = self.raft.leader_id
                if leader is not None:
                    return await self._forward(leader, command)
            except NotLeaderError:
                pass
            except (OSError, trio.BrokenResourceError, RemoteProtocolError) as exc:
                log.debug("forwarding a write failed: %s", exc)
            if trio.current_time() >= deadline:
                raise NoLeaderError(
                    "no leader could take the write: the managers may have lost their quorum "
                    "(check `swarmlet node ls`)"
                )
            with trio.move_on_at(min(deadline, trio.current_time() + _LEADER_POLL_S)):
                await self.raft.leader_changed.wait()

    async def _forward(self, leader: str, command: Command) -> ApplyResult:
        addr = self._resolve(leader)
        if addr is None:
            raise NotLeaderError(leader)
        request = proposeauth.sign(
            self.keyring.require_managers(),  # only managers write (`proposeauth`)
            wire.encode(command),
            proposer=self.node_id,
            leader=leader,
            nonce=os.urandom(proposeauth.NONCE_BYTES),
            now=time.time(),
        )
        with trio.fail_after(self.write_timeout_s):
            stream = await self.transport.connect(addr)
            async with stream.stream:
                await stream.send(request)
                reply = await stream.receive(expect=(ProposeReply,))
        if reply is None or reply.not_leader:
            raise NotLeaderError(reply.leader_hint if reply else None)
        with trio.fail_after(self.write_timeout_s):
            await self.raft.wait_applied(reply.index)
        return ApplyResult(reply.ok, reply.error, reply.value)

    async def serve_propose(
        self, stream: FramedStream, request: ProposeRequest, addr: Address
    ) -> None:
        """Answer one forwarded write (this node is, or was, the leader)."""
        refusal = self.propose_guard.check(
            self.keyring.managers, request, leader=self.node_id, now=time.time()
        )
        if refusal:
            self.transport.counters["propose_refused"] += 1
            log.warning("refused a write from %r (%s): %s", request.proposer, addr[0], refusal)
            await stream.send(ProposeReply(False, error=f"write refused: {refusal}"))
            return
        try:
            command = wire.decode(request.command, expect=COMMANDS)
            result = await self._propose(command)
            reply = ProposeReply(result.ok, result.error, result.value, index=self.raft.applied)
        except NotLeaderError as exc:
            reply = ProposeReply(False, not_leader=True, leader_hint=exc.leader_hint or "")
        except RemoteProtocolError as exc:
            reply = ProposeReply(False, error=f"invalid command: {exc}")
        await stream.send(reply)
