"""The routing mesh: on every node, one listener per published port, round-robin over every
healthy replica of the service in the cluster.

The endpoint table comes from the observed state (gossip), so the mesh keeps working while
there is no leader. This module owns the listeners' life: which ports to hold (from `routes`,
re-read on every `notify`), port conflicts (`port_errors`, shown by `service ps`), the
descriptor budget, and the counters, its own and its worker processes' (`swarmlet.proxy_workers`,
which it starts, feeds each route change and adds up). The routes and the endpoint order are pure
(`swarmlet.proxy_routes`); the bytes are moved by `swarmlet.proxy_relay`.
"""

from __future__ import annotations

import errno
import logging
from collections import Counter
from collections.abc import Callable

import trio

from swarmlet.proxy_counters import PortCounters, snapshot, total
from swarmlet.proxy_relay import Relay, connection_budget
from swarmlet.proxy_routes import Route, routes_from
from swarmlet.proxy_workers import WorkerPool

__all__ = ["Proxy", "Route", "routes_from"]

log = logging.getLogger(__name__)


class Proxy:
    def __init__(
        self,
        publish_host: str,
        routes: Callable[[], list[Route]],
        on_port_errors: Callable[[], None] = lambda: None,
        workers: int = 0,
    ) -> None:
        """`workers`: extra processes serving the same ports (`swarmlet.proxy_workers`); 0
        serves every connection in this process."""
        self.publish_host = publish_host
        self._routes = routes
        self._on_port_errors = on_port_errors
        self.relay = Relay(publish_host, reuse_port=workers > 0)
        self.workers = WorkerPool(workers) if workers > 0 else None
        # Published ports only (a VIP is ours alone): (port, protocol) -> why it cannot listen.
        self.port_errors: dict[tuple[int, str], str] = {}
        self._wake = trio.Event()

    def notify(self) -> None:
        self._wake.set()

    def _counters(self) -> list[PortCounters]:
        """Each port's counters, summed over this process and the workers."""
        own = [snapshot(key, lst.stats) for key, lst in self.relay.listeners.items()]
        return own if self.workers is None else total(own, self.workers.counters())

    def connection_counts(self) -> dict[str, int]:
        """Connections accepted so far per service, through its published ports and its virtual
        addresses (monotonic; rates are differences)."""
        services = {key: lst.route.service for key, lst in self.relay.listeners.items()}
        counts: Counter[str] = Counter()
        for c in self._counters():
            counts[services[c.key]] += c.connections
        return dict(counts)

    def stats(self) -> dict[str, dict[str, object]]:
        """Per listener: "PORT/PROTO" for a published port, "VIP:PORT/PROTO" for a service's
        virtual address."""
        services = {key: lst.route.service for key, lst in self.relay.listeners.items()}
        return {
            f"{c.host}:{c.published}/{c.protocol}" if c.host else f"{c.published}/{c.protocol}": {
                "service": services[c.key],
                "connections": c.connections,
                "active": c.active,
                "bytes_in": c.bytes_in,
                "bytes_out": c.bytes_out,
                "errors": c.errors,
                "retries": c.retries,
                "refused": c.refused,
                "endpoints": c.endpoints,
            }
            for c in self._counters()
        }

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Started once this process listens on every port of the first routes it can."""
        self.relay.max_connections = connection_budget()
        async with trio.open_nursery() as nursery:
            await nursery.start(self.relay.run)
            if self.workers is not None:
                await nursery.start(self.workers.run)
            await self._sync()
            task_status.started()
            while True:
                with trio.move_on_after(2.0):
                    await self._wake.wait()
                self._wake = trio.Event()
                await self._sync()

    async def _sync(self) -> None:
        wanted = {r.key: r for r in self._routes() if r.protocol == "tcp"}
        failed = await self.relay.sync(wanted)
        errors: dict[tuple[int, str], str] = {}
        for key, exc in failed.items():
            route = wanted[key]
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
