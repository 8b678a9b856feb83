"""The trio driver of the SWIM core: feeds it datagrams and time, carries out what it asks.

It owns no membership logic: receive, feed the core, drain its outputs, send. Push-pull exchanges
run over the agent's TCP channel (`swarmlet.wire.transport`); the agent's TCP dispatcher hands an
incoming `PushPullState` to `answer_push_pull`.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import trio

from swarmlet.errors import RemoteProtocolError
from swarmlet.gossip.config import GossipConfig
from swarmlet.gossip.core import MemberEvent, SendDatagram, Sign, StartPushPull, Swim, Verify
from swarmlet.gossip.messages import Ack, Alive, Dead, Nack, Ping, PingReq, PushPullState, Suspect
from swarmlet.wire import catalog, codec
from swarmlet.wire.transport import Address, FramedStream, Transport

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class GossipDatagram:
    """One UDP datagram: a compound of gossip messages (a probe plus piggybacked updates)."""

    msgs: tuple[Ping | PingReq | Ack | Nack | Alive | Suspect | Dead, ...]


WIRE_TYPES: tuple[type, ...] = (GossipDatagram,)
codec.register_all(catalog.GOSSIP_DATAGRAM, WIRE_TYPES)

_PUSH_PULL_TIMEOUT_S = 5.0


class GossipDriver:
    def __init__(
        self,
        transport: Transport,
        config: GossipConfig,
        name: str,
        addr: Address,
        meta: bytes,
        incarnation: int,
        on_event: Callable[[MemberEvent], None],
        rng: random.Random | None = None,
        *,
        sign: Sign | None = None,
        verify: Verify | None = None,
        recorded_addr: Callable[[str], Address | None] | None = None,
    ) -> None:
        """`sign`, `verify` and `recorded_addr` go to the core (see `Swim`): sign our own Alive
        with this node's key; check another node's Alive against that node's key and its
        recorded address. They run on the trio thread, so they must be quick and not block."""
        self.transport = transport
        self.core = Swim(
            config,
            name,
            addr,
            meta,
            rng or random.Random(),
            trio.current_time(),
            incarnation,
            sign=sign,
            verify=verify,
            recorded_addr=recorded_addr,
        )
        self._on_event = on_event
        self._wake = trio.Event()
        self._nursery: trio.Nursery | None = None
        self._leaving = False
        self._leave_done = trio.Event()

    # ---------------------------------------------------------------------------- inputs

    def _on_datagram(self, addr: Address, msg: object, signer: str | None) -> None:
        if not isinstance(msg, GossipDatagram):
            self.transport.counters["dropped_datagram_unexpected"] += 1
            return
        self.core.handle_datagram(trio.current_time(), addr, msg.msgs, signer)
        self._wake.set()

    # A join or new metadata once this node has left is dropped here, where the core would
    # raise (a caller's bug there): the agent's loops that speak for the node (reconnects, its
    # metadata refresh) run until it stops, and one that woke during the leave crashed the agent
    # before its leave went out; the others then saw a failure, not a departure.

    def join(self, seeds: Sequence[Address]) -> None:
        if self._leaving:
            return
        self.core.join(trio.current_time(), seeds)
        self._wake.set()

    def set_meta(self, meta: bytes) -> None:
        if self._leaving:
            return
        self.core.set_meta(trio.current_time(), meta)
        self._wake.set()

    async def leave(self, timeout_s: float) -> None:
        """Announce a clean departure and wait (bounded) until it has been gossiped enough."""
        self.core.leave(trio.current_time())
        self._leaving = True
        self._wake.set()
        with trio.move_on_after(timeout_s):
            await self._leave_done.wait()

    async def answer_push_pull(self, stream: FramedStream, remote: PushPullState) -> None:
        await stream.send(self.core.local_state())
        self._merge(stream, remote)

    def _merge(self, stream: FramedStream, remote: PushPullState) -> None:
        """A pushed state, in the name of the member the stream's certificate names."""
        peer = stream.peer.node_id if stream.peer is not None else None
        self.core.merge_remote_state(trio.current_time(), remote, peer)
        self._wake.set()

    # ---------------------------------------------------------------------------- outputs

    async def _push_pull(self, addr: Address, join: bool) -> None:
        try:
            with trio.fail_after(_PUSH_PULL_TIMEOUT_S):
                stream = await self.transport.connect(addr)
                async with stream.stream:
                    await stream.send(self.core.local_state(join=join))
                    remote = await stream.receive(expect=(PushPullState,))
            if remote is not None:
                self._merge(stream, remote)
        except (OSError, trio.TooSlowError, trio.BrokenResourceError, RemoteProtocolError) as exc:
            self.transport.counters["push_pull_failures"] += 1
            log.debug("push-pull with %s:%s failed: %s", addr[0], addr[1], exc)

    async def _flush(self) -> None:
        assert self._nursery is not None
        for out in self.core.take_outputs():
            if isinstance(out, SendDatagram):
                await self.transport.send_datagram(out.addr, GossipDatagram(tuple(out.msgs)))
            elif isinstance(out, StartPushPull):
                self._nursery.start_soon(self._push_pull, out.addr, out.join)
        for event in self.core.take_events():
            self._on_event(event)

    # ---------------------------------------------------------------------------- loop

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self.transport.serve_udp, self._on_datagram)
            task_status.started()
            while True:
                self.core.tick(trio.current_time())
                await self._flush()
                if self._leaving and self.core.leave_broadcast_done():
                    self._leave_done.set()
                with trio.move_on_at(self.core.next_deadline()):
                    await self._wake.wait()
                self._wake = trio.Event()
