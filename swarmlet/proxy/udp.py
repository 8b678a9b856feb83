"""The routing mesh for UDP: one published UDP port, relayed to the service's replicas.

UDP has no connections, so the relay keeps flows, as conntrack and IPVS do: the first datagram
from a client address (ip, port) picks the next endpoint round-robin and opens a socket
connected to it; the client's later datagrams go the same way, and whatever the replica sends
back on that socket goes to the client from the published port. A flow idle for
`FLOW_IDLE_S` is closed (conntrack's default for unreplied UDP is 30 s). A replica that is
gone answers with ICMP port unreachable, which a connected socket reports as ECONNREFUSED: the
endpoint is benched (the same passive health as TCP) and the flow closed, so the client's next
datagram starts a flow to another replica; the datagram that met the refusal is lost, as UDP
allows. Nothing is buffered beyond the kernel's socket buffers.

Pure part: `FlowTable` (which flows exist, which are idle); time is passed in.
"""

from __future__ import annotations

import contextlib
import errno
from dataclasses import dataclass, field

import trio

from swarmlet.proxy.counters import PortStats
from swarmlet.proxy.routes import EndpointSelector, Route, admits
from swarmlet.state.observed import Endpoint

FLOW_IDLE_S = 30.0
MAX_FLOWS = 4096  # per port; a new client past it is dropped (counted as refused)
MAX_DATAGRAM = 65_535

Address = tuple[str, int]


# ---------------------------------------------------------------------------- pure part


@dataclass
class Flow:
    endpoint: Endpoint
    last_seen: float


@dataclass
class FlowTable:
    """Client address -> flow, with idle expiry."""

    idle_s: float = FLOW_IDLE_S
    max_flows: int = MAX_FLOWS
    flows: dict[Address, Flow] = field(default_factory=dict)

    def touch(self, client: Address, now: float) -> Flow | None:
        flow = self.flows.get(client)
        if flow is not None:
            flow.last_seen = now
        return flow

    def has_room(self) -> bool:
        return len(self.flows) < self.max_flows

    def open(self, client: Address, endpoint: Endpoint, now: float) -> Flow:
        flow = Flow(endpoint, now)
        self.flows[client] = flow
        return flow

    def idle(self, now: float) -> list[Address]:
        """The clients whose flow saw nothing in either direction for `idle_s`."""
        return [c for c, f in self.flows.items() if now - f.last_seen >= self.idle_s]

    def close(self, client: Address) -> None:
        self.flows.pop(client, None)


# ---------------------------------------------------------------------------- the relay


class UdpRelay:
    """Serves one UDP route on a bound socket until cancelled; `route` may be replaced at any
    time (new endpoints apply to new flows; a flow to an endpoint that left is closed)."""

    def __init__(
        self,
        route: Route,
        stats: PortStats,
        selector: EndpointSelector,
        *,
        idle_s: float = FLOW_IDLE_S,
        max_flows: int = MAX_FLOWS,
    ) -> None:
        self.route = route
        self.stats = stats
        self.selector = selector
        self.table = FlowTable(idle_s, max_flows)
        # Per flow: the socket connected to its replica, and the scope of its reply task.
        self._upstreams: dict[Address, trio.socket.SocketType] = {}
        self._scopes: dict[Address, trio.CancelScope] = {}

    def update(self, route: Route) -> None:
        self.route = route
        self.selector.forget_except(route.endpoints)
        alive = set(route.endpoints)
        for client, flow in list(self.table.flows.items()):
            if flow.endpoint not in alive:
                self._close(client)

    async def serve(self, sock: trio.socket.SocketType) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._expire)
            while True:
                data, source = await sock.recvfrom(MAX_DATAGRAM)
                client = (str(source[0]), int(source[1]))
                if not admits(self.route, client[0]):  # another network's container
                    self.stats.refused += 1
                    continue
                now = trio.current_time()
                if self.table.touch(client, now) is None and not await self._open(
                    nursery, sock, client, now
                ):
                    continue
                self.stats.bytes_in += len(data)
                try:
                    await self._upstreams[client].send(data)
                except OSError:  # refused by a dying replica: its reply task closes the flow
                    self.stats.errors += 1

    async def _open(
        self, nursery: trio.Nursery, sock: trio.socket.SocketType, client: Address, now: float
    ) -> bool:
        order = self.selector.order(self.route.endpoints, now)
        if not order or not self.table.has_room():
            self.stats.refused += 1
            return False
        endpoint = order[0]
        upstream = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
        try:
            await upstream.connect((endpoint.host, endpoint.port))
        except (OSError, ValueError, OverflowError):  # unreachable, or no address at all:
            upstream.close()  # a failed endpoint, never a stopped relay
            self.selector.failed(endpoint, now)
            self.stats.errors += 1
            return False
        flow = self.table.open(client, endpoint, now)
        self._upstreams[client] = upstream
        scope = self._scopes[client] = trio.CancelScope()
        self.stats.connections += 1
        self.stats.active += 1
        self.stats.per_endpoint[endpoint] += 1

        async def replies() -> None:
            try:
                with scope, upstream:
                    while True:
                        try:
                            data = await upstream.recv(MAX_DATAGRAM)
                        except OSError as exc:
                            if exc.errno == errno.ECONNREFUSED:  # the replica is gone
                                self.selector.failed(endpoint, trio.current_time())
                            self.stats.errors += 1
                            return
                        flow.last_seen = trio.current_time()
                        self.stats.bytes_out += len(data)
                        with contextlib.suppress(OSError):  # the client went: drop it
                            await sock.sendto(data, client)
            finally:
                self.stats.active -= 1
                self._close(client)

        nursery.start_soon(replies)
        return True

    def _close(self, client: Address) -> None:
        self.table.close(client)
        self._upstreams.pop(client, None)
        scope = self._scopes.pop(client, None)
        if scope is not None:
            scope.cancel()

    async def _expire(self) -> None:
        while True:
            await trio.sleep(max(0.05, self.table.idle_s / 4))
            for client in self.table.idle(trio.current_time()):
                self._close(client)
