"""The routing mesh: on every node, one listener per published port, round-robin over every
healthy replica of the service in the cluster.

The endpoint table comes from the observed state (gossip), so the mesh keeps working while
there is no leader. This module owns the listeners' life: which ports to hold (from `routes`,
re-read on every `notify`), port conflicts (`port_errors`, shown by `service ps`), the
descriptor budget, and the counters, its own and its worker processes' (a `WorkerPool` from
`swarmlet.proxy.worker_pool`, which it starts, feeds each route change and adds up). The routes
and the endpoint order are pure (`swarmlet.proxy.routes`); the bytes are moved by
`swarmlet.proxy.tcp` (TCP, in this process and the workers) and `swarmlet.proxy.udp` (UDP, in
this process only: flows are per process).

Invariant: the workers are sent exactly the TCP ports this process holds, in the same `_sync`
that changes them here. It does not know how a worker runs (`swarmlet.proxy.worker_process`).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import random
import socket
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import trio

from swarmlet import timers
from swarmlet.proxy.counters import PortCounters, PortKey, PortStats, snapshot, total
from swarmlet.proxy.routes import EndpointSelector, Route, routes_from
from swarmlet.proxy.tcp import MAX_LISTENERS, Relay, connection_budget
from swarmlet.proxy.udp import UdpRelay
from swarmlet.proxy.worker_pool import WorkerPool

__all__ = ["Proxy", "Route", "routes_from"]

log = logging.getLogger(__name__)


@dataclass
class _UdpPort:
    relay: UdpRelay
    sock: trio.socket.SocketType
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)


class Proxy:
    def __init__(
        self,
        publish_host: str,
        routes: Callable[[], list[Route]],
        on_port_errors: Callable[[], None] = lambda: None,
        workers: int = 0,
    ) -> None:
        """`workers`: extra processes serving the same ports (`swarmlet.proxy.worker_pool`); 0
        serves every connection in this process."""
        self.publish_host = publish_host
        self._routes = routes
        self._on_port_errors = on_port_errors
        self.relay = Relay(publish_host, reuse_port=workers > 0)
        self.workers = WorkerPool(workers) if workers > 0 else None
        # Published ports only (a VIP is ours alone): (port, protocol) -> why it cannot listen.
        self.port_errors: dict[tuple[int, str], str] = {}
        self._udp: dict[PortKey, _UdpPort] = {}
        self._over_budget = 0  # ports not listened on, past MAX_LISTENERS (logged as it changes)
        self._nursery: trio.Nursery | None = None
        self._changes = timers.StateFollower()

    def notify(self) -> None:
        self._changes.notify()

    def _ports(self) -> dict[PortKey, tuple[Route, PortStats]]:
        """Every port this process holds, TCP and UDP."""
        ports = {key: (lst.route, lst.stats) for key, lst in self.relay.listeners.items()}
        ports.update({key: (p.relay.route, p.relay.stats) for key, p in self._udp.items()})
        return ports

    def _counters(self) -> list[PortCounters]:
        """Each port's counters, summed over this process and the workers."""
        own = [snapshot(key, stats) for key, (_, stats) in self._ports().items()]
        return own if self.workers is None else total(own, self.workers.counters())

    def connection_counts(self) -> dict[str, int]:
        """Connections (UDP: flows) accepted so far per service, through its published ports and
        its virtual addresses (monotonic; rates are differences)."""
        services = {key: route.service for key, (route, _) in self._ports().items()}
        counts: Counter[str] = Counter()
        for c in self._counters():
            counts[services[c.key]] += c.connections
        return dict(counts)

    def stats(self) -> dict[str, dict[str, object]]:
        """Per listener: "PORT/PROTO" for a published port, "VIP:PORT/PROTO" for a service's
        virtual address."""
        services = {key: route.service for key, (route, _) in self._ports().items()}
        return {
            f"{c.host}:{c.published}/{c.protocol}" if c.host else f"{c.published}/{c.protocol}": {
                "service": services[c.key],
                "connections": c.connections,
                "active": c.active,
                "bytes_in": c.bytes_in,
                "bytes_out": c.bytes_out,
                "errors": c.errors,
                "retries": c.retries,
                "idle_closed": c.idle_closed,
                "refused": c.refused,
                "endpoints": c.endpoints,
            }
            for c in self._counters()
        }

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Started once this process listens on every port of the first routes it can."""
        self.relay.max_connections = connection_budget()
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await nursery.start(self.relay.run)
            if self.workers is not None:
                await nursery.start(self.workers.run)
            await self._sync()
            task_status.started()
            while True:
                # A periodic look (ports that were busy), on the agent's beat: with its other
                # periodic work, in one wake-up (`swarmlet.timers`).
                await self._changes.wait(timers.next_beat(2.0))
                await self._sync()

    async def _sync(self) -> None:
        everything = {r.key: r for r in self._routes()}
        # Within the budget: the published ports first, then the virtual addresses', in an order
        # every node shares (the same routes make the same choice).
        ranked = sorted(everything.items(), key=lambda kv: (bool(kv[1].host), kv[0]))
        routes = dict(ranked[:MAX_LISTENERS])
        failed = await self.relay.sync({k: r for k, r in routes.items() if r.protocol == "tcp"})
        failed.update(
            await self._sync_udp({k: r for k, r in routes.items() if r.protocol == "udp"})
        )
        errors: dict[tuple[int, str], str] = {}
        for _, route in ranked[MAX_LISTENERS:]:
            if not route.host:  # a VIP's is only logged, as below
                errors[(route.published, route.protocol)] = (
                    f"cannot listen on {self.publish_host}:{route.published}: this node "
                    f"listens on {MAX_LISTENERS:,} ports at most"
                )
        over = max(0, len(ranked) - MAX_LISTENERS)
        if over != self._over_budget:
            self._over_budget = over
            if over:
                log.error("%d ports are not listened on: past this node's %d", over, MAX_LISTENERS)
        for key, exc in failed.items():
            route = routes[key]
            reason = (
                "already in use" if exc.errno == errno.EADDRINUSE else (exc.strerror or str(exc))
            )
            host = route.host or self.publish_host
            message = f"cannot listen on {host}:{route.published}: {reason}"
            if route.host:  # a VIP: nobody else should hold it; the next sync tries again
                log.warning("%s (service %s)", message, route.service)
                continue
            port_key = (route.published, route.protocol)
            errors[port_key] = message
            if self.port_errors.get(port_key) != message:
                log.error("%s (service %s)", message, route.service)
        if self.workers is not None:  # the ports this process holds, no others
            held = tuple(lst.route for lst in self.relay.listeners.values())
            self.workers.publish(self.publish_host, held)
        if errors != self.port_errors:
            self.port_errors = errors
            self._on_port_errors()

    async def _sync_udp(self, wanted: Mapping[PortKey, Route]) -> dict[PortKey, OSError]:
        """Hold exactly the UDP ports of `wanted`; returns those that could not be bound."""
        assert self._nursery is not None, "Proxy._sync before Proxy.run"
        for key, port in list(self._udp.items()):
            if key in wanted:
                port.relay.update(wanted[key])
            else:
                port.scope.cancel()
                port.sock.close()  # the port is free when this returns
                del self._udp[key]
        failed: dict[PortKey, OSError] = {}
        for key, route in wanted.items():
            if key in self._udp:
                continue
            host = route.host or self.publish_host
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            sock = trio.socket.socket(family, socket.SOCK_DGRAM)
            try:
                await sock.bind((host, route.published))
            except OSError as exc:
                sock.close()
                failed[key] = exc
                continue
            # A random start, as for TCP: the nodes' proxies do not pick the same replica first.
            selector = EndpointSelector(_cursor=random.randrange(1 << 16))
            port = self._udp[key] = _UdpPort(UdpRelay(route, PortStats(), selector), sock)
            self._nursery.start_soon(self._serve_udp, port)
        return failed

    async def _serve_udp(self, port: _UdpPort) -> None:
        # ClosedResourceError: the route went and `_sync_udp` closed the socket.
        with port.scope, contextlib.suppress(trio.ClosedResourceError):
            await port.relay.serve(port.sock)
