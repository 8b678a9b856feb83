"""Writes from anywhere in the cluster: committed through the leader, wherever it is.

A write on the leader is proposed to its Raft driver directly. On any other node it is signed
with the managers' key (`security.propose_auth`: only managers write) and sent to the leader; the
leader checks the signature, proposes, and answers with the entry's index, and the writer waits
until its own replica has applied that index, so a caller reads its own write. Elections and
unreachable leaders are retried until `write_timeout_s`.

A retry is of a write whose fate is unknown: the leader that took it may have sent it to a
majority before it died or lost the lead, and then the next leader commits it too. So every
attempt of one write carries the same request id (`state.commands.Once`), and the state machine
applies the first copy that commits and answers any later one with its result. An agent of a
protocol older than `ONCE_SINCE` does not know `Once`: a write goes to a leader in one only if
that leader speaks it, and a leader proposes one only if every member of the Raft group does
(else it proposes the command inside, as before: a retry may then apply twice). Once the state
has applied a `Once`, every member is taken to speak it, known or not yet.

Forwarded writes travel in batches over one long-lived connection to the leader (`_LeaderLink`):
the writes that are waiting when the link may send leave together as one `ProposeBatch`, up to
`_MAX_IN_FLIGHT` batches are outstanding, and each reply comes back on the same connection,
matched by its `seq`. The leader proposes a batch's writes at once, so they share one Raft
append with whatever else is pending there. Each request stays signed on its own and is checked
on its own; a batch only saves connections, frames and round trips. A connection carrying one
`ProposeRequest` is still answered (`serve_propose`), and is what a writer uses when the
forwarder is not running.

The serving side runs on the node the requests reach: it refuses what `ProposeGuard` refuses
(bad signature, replay, not addressed to it) and answers `not_leader` with a hint when it has
lost the leadership.

Must not know: what a command means (it only encodes and decodes it), who asked for the write.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial

import trio

from swarmlet import off_loop
from swarmlet.certs import PeerIdentity
from swarmlet.errors import NoLeaderError, NotLeaderError, RemoteProtocolError
from swarmlet.node.replicated import encode_command_aside
from swarmlet.raft.driver import MAX_PROPOSAL_BYTES, RaftDriver
from swarmlet.security import peer_policy
from swarmlet.security import propose_auth as proposeauth
from swarmlet.security.keyring import KeyRing
from swarmlet.state.commands import COMMANDS, Command, Once
from swarmlet.state.machine import ApplyResult, ClusterState
from swarmlet.wire import codec as wire
from swarmlet.wire.peer_rpc import ProposeBatch, ProposeBatchReply, ProposeReply, ProposeRequest
from swarmlet.wire.protocol_version import ONCE_SINCE
from swarmlet.wire.transport import LINK_ERRORS, Address, FramedStream, Transport

log = logging.getLogger(__name__)

# How long a writer waits for the next leader before it asks again (an election is under way).
_LEADER_POLL_S = 0.1
_MAX_BATCH = 256  # forwarded writes in one ProposeBatch, at most
_MAX_IN_FLIGHT = 4  # batches sent on a link and not yet answered, at most
REQUEST_ID_BYTES = 16  # a write's `Once` id: random, so no two writers' ids meet


@dataclass
class _Pending:
    request: ProposeRequest
    done: trio.Event = field(default_factory=trio.Event)
    reply: ProposeReply | None = None  # None when done: the link broke first


class _LeaderLink:
    """One connection to one leader carrying batches of forwarded writes, both ways."""

    def __init__(self, leader: str, addr: Address) -> None:
        self.leader = leader
        self.addr = addr
        self.closed = False
        self._queue: list[_Pending] = []
        self._in_flight: dict[int, list[_Pending]] = {}
        self._seq = 0
        self._wake = trio.Event()
        self._scope = trio.CancelScope()

    async def call(self, request: ProposeRequest) -> ProposeReply:
        """Send `request` with the next batch and wait for its reply. Raises
        trio.BrokenResourceError if the link broke before the reply came."""
        if self.closed:
            raise trio.BrokenResourceError(f"the link to {self.leader} is closed")
        pending = _Pending(request)
        self._queue.append(pending)
        self._wake.set()
        await pending.done.wait()
        if pending.reply is None:
            raise trio.BrokenResourceError(f"the connection to the leader {self.leader} broke")
        return pending.reply

    def close(self) -> None:
        self.closed = True
        self._scope.cancel()

    async def run(self, transport: Transport) -> None:
        stream: FramedStream | None = None
        try:
            with self._scope:
                stream = await transport.connect(self.addr, node_id=self.leader)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._until_broken, self._receive, stream)
                    await self._until_broken(self._send, stream)
        except LINK_ERRORS as exc:
            log.debug("no write link to %s: %s", self.leader, exc)
        finally:
            self.closed = True
            for pending in [*self._queue, *(p for b in self._in_flight.values() for p in b)]:
                pending.done.set()  # without a reply: the writer retries
            self._queue.clear()
            self._in_flight.clear()
            if stream is not None:
                with trio.CancelScope(shield=True):
                    await stream.aclose()

    async def _until_broken(
        self, half: Callable[[FramedStream], Awaitable[None]], stream: FramedStream
    ) -> None:
        """Run one half of the link; when either ends, the other is cancelled."""
        try:
            await half(stream)
        except LINK_ERRORS as exc:
            log.debug("the write link to %s broke: %s", self.leader, exc)
        finally:
            self._scope.cancel()

    async def _send(self, stream: FramedStream) -> None:
        while True:
            while not self._queue or len(self._in_flight) >= _MAX_IN_FLIGHT:
                await self._wake.wait()
                self._wake = trio.Event()
            batch, self._queue = self._queue[:_MAX_BATCH], self._queue[_MAX_BATCH:]
            self._seq += 1
            self._in_flight[self._seq] = batch
            await stream.send(ProposeBatch(self._seq, tuple(p.request for p in batch)))

    async def _receive(self, stream: FramedStream) -> None:
        while True:
            reply = await stream.receive(expect=(ProposeBatchReply,))
            if reply is None:
                raise trio.BrokenResourceError(f"{self.leader} closed the write link")
            batch = self._in_flight.pop(reply.seq, None)
            if batch is None or len(batch) != len(reply.replies):
                raise RemoteProtocolError(f"a reply from {self.leader} matches no batch sent")
            for pending, answer in zip(batch, reply.replies, strict=True):
                pending.reply = answer
                pending.done.set()
            self._wake.set()


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
        state: Callable[[], ClusterState],
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
        self._state = state
        self.write_timeout_s = write_timeout_s
        self.propose_guard = proposeauth.ProposeGuard()
        self._link: _LeaderLink | None = None
        self._nursery: trio.Nursery | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Hold the links to the leader (forwarded writes go one request per connection
        while this is not running)."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                task_status.started()
                await trio.sleep_forever()
        finally:
            self._nursery = None

    async def write(self, command: Command) -> ApplyResult:
        """Commit `command` through the leader, wherever it is, and wait until it is applied
        here too. Retries across elections until `write_timeout_s`; raises NoLeaderError then.
        Every attempt is the same request (`Once`): applied once, whichever commits."""
        deadline = trio.current_time() + self.write_timeout_s
        once = Once(os.urandom(REQUEST_ID_BYTES), command)
        while True:
            try:
                if self.raft.is_leader:
                    wanted = once if self._group_speaks_once() else command
                    return await self._propose(self._counted(wanted))
                leader = self.raft.leader_id
                if leader is not None:
                    wanted = once if self._speaks_once(leader) else command
                    return await self._forward(leader, self._counted(wanted), deadline)
            except trio.TooSlowError:
                # At the deadline, connecting, or sent and neither answered nor applied here:
                # its fate may not be known (this was an "internal error", after up to twice
                # the timeout).
                raise NoLeaderError(
                    f"no leader answered the write within {self.write_timeout_s:g} s; if it "
                    "reached one, it may still be applied (once at most): check before writing "
                    "it again"
                ) from None
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

    async def _forward(self, leader: str, command: Command, deadline: float) -> ApplyResult:
        addr = self._resolve(leader)
        if addr is None:
            raise NotLeaderError(leader)
        request = proposeauth.sign(
            self.keyring.require_managers(),  # only managers write (`proposeauth`)
            await encode_command_aside(command),
            proposer=self.node_id,
            leader=leader,
            nonce=os.urandom(proposeauth.NONCE_BYTES),
            now=time.time(),
        )
        with trio.fail_at(deadline):  # the answer, then the entry applied here
            link = self._link_to(leader, addr)
            if link is not None:
                reply = await link.call(request)
            else:
                reply = await self._forward_alone(leader, addr, request)
            if reply.not_leader:
                raise NotLeaderError(reply.leader_hint or None)
            await self.raft.wait_applied(reply.index)
        return ApplyResult(reply.ok, reply.error, reply.value)

    def _counted(self, command: Command) -> Command:
        # Whether the cluster's writes are exactly-once yet (not while a member is older).
        once = isinstance(command, Once)
        self.transport.counters["writes_once" if once else "writes_without_once"] += 1
        return command

    def _speaks_once(self, node_id: str) -> bool:
        """Whether `node_id` knows `Once`: its streams with this node say so, or the state has
        applied one (a member that could not apply it is behind and leaves the group anyway:
        `leader.voters`). The second matters to a new leader, which has not yet heard from
        every member: a retry it took as the plain command could apply twice."""
        if self.transport.peer_protocols.get(node_id, 0) >= ONCE_SINCE:
            return True
        return self._state().once_applied

    def _group_speaks_once(self) -> bool:
        """Whether every other member of the Raft group, learners too, applies a `Once`."""
        conf = self.raft.core.conf
        return all(
            self._speaks_once(n) for n in (*conf.voters, *conf.learners) if n != self.node_id
        )

    def _link_to(self, leader: str, addr: Address) -> _LeaderLink | None:
        """The open link to `leader` (a new one if needed); None without the forwarder."""
        if self._nursery is None:
            return None
        link = self._link
        if link is not None and not link.closed and (link.leader, link.addr) == (leader, addr):
            return link
        if link is not None:
            link.close()  # another leader now: its writes fail and are retried
        link = self._link = _LeaderLink(leader, addr)
        self._nursery.start_soon(link.run, self.transport)
        return link

    async def _forward_alone(
        self, leader: str, addr: Address, request: ProposeRequest
    ) -> ProposeReply:
        stream = await self.transport.connect(addr, node_id=leader)
        async with stream.stream:
            await stream.send(request)
            reply = await stream.receive(expect=(ProposeReply,))
        if not isinstance(reply, ProposeReply):
            raise trio.BrokenResourceError("the leader closed the connection without answering")
        return reply

    # ------------------------------------------------------------------------ the leader's side

    async def serve_propose(
        self, stream: FramedStream, request: ProposeRequest, addr: Address
    ) -> None:
        """Answer one forwarded write (this node is, or was, the leader)."""
        (reply,) = await self._answer(stream.peer, (request,))
        await stream.send(reply)

    async def serve_batches(self, stream: FramedStream, first: object) -> None:
        """Answer a link's `ProposeBatch`es (this node is, or was, the leader), each as soon
        as its writes are applied here, while the next ones arrive."""
        batch = first
        # As many batches under way as a forwarder sends before it waits for answers: a peer
        # that sends more, and reads none, is no longer read from (its TCP window fills).
        under_way = trio.Semaphore(_MAX_IN_FLIGHT)
        async with trio.open_nursery() as nursery:
            while isinstance(batch, ProposeBatch):
                if len(batch.requests) > _MAX_BATCH:  # no forwarder sends more
                    self.transport.counters["propose_refused_oversized_batch"] += 1
                    break
                await under_way.acquire()
                nursery.start_soon(self._answer_batch, stream, batch, under_way)
                try:
                    batch = await stream.receive(expect=(ProposeBatch,))
                except LINK_ERRORS:
                    break  # the answers under way are still sent, or dropped if they cannot be

    async def _answer_batch(
        self, stream: FramedStream, batch: ProposeBatch, under_way: trio.Semaphore
    ) -> None:
        try:
            replies = await self._answer(stream.peer, batch.requests)
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                await stream.send(ProposeBatchReply(batch.seq, tuple(replies)))
        finally:
            under_way.release()

    async def _answer(
        self, peer: PeerIdentity | None, requests: Sequence[ProposeRequest]
    ) -> list[ProposeReply]:
        """Check each request on its own, propose those that pass in one batch, and answer
        each once its entry is applied here (or lost, or refused)."""
        refusals = [self._refusal(peer, request) for request in requests]
        for i, request in enumerate(requests):
            # A large command is decoded in a thread; meanwhile a later batch may be proposed
            # first, which no writer can tell: writes under way at once have no order.
            if refusals[i] is None:
                heavy = len(request.command) >= off_loop.HEAVY_BYTES
                refusals[i] = await off_loop.run_if(heavy, partial(_invalid, request.command))
        refused = [r for r in refusals if r is not None]
        if refused:  # one line per batch, not per request: a batch may hold thousands
            source = peer.node_id if peer is not None else "?"
            log.warning(
                "refused %d of %d writes from %s: %s",
                len(refused),
                len(requests),
                source,
                refused[0].error,
            )
        accepted = [
            r.command for r, refusal in zip(requests, refusals, strict=True) if refusal is None
        ]
        if not self._group_speaks_once():
            accepted = [self._without_once(data) for data in accepted]
        outcomes: list[ApplyResult | NotLeaderError]
        try:
            # The bytes the proposer signed are what the log holds: no re-encoding (but for a
            # `Once` a member could not apply).
            outcomes = await self.raft.propose_many(accepted)
        except NotLeaderError as exc:
            outcomes = [exc] * len(accepted)
        answers = iter(outcomes)
        return [
            refusal if refusal is not None else self._reply(next(answers)) for refusal in refusals
        ]

    def _without_once(self, data: bytes) -> bytes:
        """The encoded command inside a `Once` (`data` as it is if it holds none), for a group
        with a member that would refuse the `Once`. `data` was decoded once already (`_invalid`)."""
        command = wire.decode(data, expect=COMMANDS)
        if not isinstance(command, Once):
            return data
        self.transport.counters["writes_once_unwrapped"] += 1
        return wire.encode(command.command)

    def _reply(self, outcome: ApplyResult | NotLeaderError) -> ProposeReply:
        if isinstance(outcome, NotLeaderError):
            return ProposeReply(False, not_leader=True, leader_hint=outcome.leader_hint or "")
        return ProposeReply(outcome.ok, outcome.error, outcome.value, index=self.raft.applied)

    def _refusal(self, peer: PeerIdentity | None, request: ProposeRequest) -> ProposeReply | None:
        """The answer to a request that may not be proposed; None if it may (its nonce is then
        remembered)."""
        # Who sent it is the connection's certificate, not the request's `proposer`: only a
        # manager now, and only in its own name (the MAC alone would pass a demoted manager
        # that kept the managers' key).
        if peer is None or not peer_policy.is_manager(peer, self._state()):
            refusal = "the sender is not a manager"
        elif request.proposer != peer.node_id:
            refusal = f"the sender is {peer.node_id}, not the proposer it names"
        else:
            refusal = self.propose_guard.check(
                self.keyring.managers, request, leader=self.node_id, now=time.time()
            )
        if refusal:
            self.transport.counters["propose_refused"] += 1
            return ProposeReply(False, error=f"write refused: {refusal}")
        if len(request.command) > MAX_PROPOSAL_BYTES:
            return ProposeReply(False, error=f"a write over {MAX_PROPOSAL_BYTES} bytes")
        return None


def _invalid(data: bytes) -> ProposeReply | None:
    """The answer to a command that is not one to propose; None for a valid one. Pure."""
    try:
        command = wire.decode(data, expect=COMMANDS)
    except RemoteProtocolError as exc:
        return ProposeReply(False, error=f"invalid command: {exc}")
    if isinstance(command, Once) and isinstance(command.command, Once):
        # Refused by every replica that knows `Once`, but unwrapped once for a group with an
        # older member (`_without_once`) it would be applied by some replicas only.
        return ProposeReply(False, error="invalid command: a Once inside a Once")
    return None
