"""The routing mesh: on every node, one listener per published port, round-robin over every
healthy replica of the service in the cluster.

The endpoint table comes from the observed state (gossip), so the mesh keeps working while
there is no leader. A replica is an endpoint while its task is desired RUNNING, observed
RUNNING and not reported unhealthy. A failed connect moves on to the next endpoint within the
same client connection and benches the failed endpoint for a short back-off (passive health),
so a freshly dead replica costs the client nothing but a little latency.

The byte pump copies each direction with bounded buffers (one `receive_some` at a time, so a
slow reader back-pressures the writer through TCP) and propagates half-close (EOF one way
leaves the other way open).

Pure part: `EndpointSelector` (round-robin, skip benched, back-off), tested with tables.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import random
import resource
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import trio

from swarmlet.model import TaskState
from swarmlet.observed import Endpoint, TaskObservation
from swarmlet.state import ClusterState

log = logging.getLogger(__name__)

COPY_BUFFER_BYTES = 64 * 1024
CONNECT_TIMEOUT_S = 1.0
REPLAY_WINDOW_S = 1.0  # a replica closing without a byte this soon after connect is retried
REPLAY_LIMIT_BYTES = 64 * 1024  # at most this much of the client's opening bytes is replayed
BENCH_BASE_S = 1.0  # first back-off after a failed connect; doubles up to BENCH_MAX_S
BENCH_MAX_S = 30.0


# ---------------------------------------------------------------------------- pure selection


@dataclass
class _Bench:
    until: float
    failures: int


@dataclass
class EndpointSelector:
    """Round-robin over a changing list of endpoints, skipping benched ones."""

    _cursor: int = 0
    _bench: dict[Endpoint, _Bench] = field(default_factory=dict)

    def order(self, endpoints: Sequence[Endpoint], now: float) -> list[Endpoint]:
        """Every endpoint once, in the order to try them: round-robin from the cursor, healthy
        first, benched ones last (when all are benched, trying one beats refusing the client)."""
        if not endpoints:
            return []
        start = self._cursor % len(endpoints)
        self._cursor = start + 1
        rotated = [*endpoints[start:], *endpoints[:start]]
        healthy = [e for e in rotated if not self._benched(e, now)]
        benched = [e for e in rotated if self._benched(e, now)]
        return healthy + benched

    def _benched(self, endpoint: Endpoint, now: float) -> bool:
        bench = self._bench.get(endpoint)
        return bench is not None and now < bench.until

    def failed(self, endpoint: Endpoint, now: float) -> None:
        bench = self._bench.get(endpoint)
        failures = bench.failures + 1 if bench is not None else 1
        delay = min(BENCH_MAX_S, BENCH_BASE_S * 2 ** (failures - 1))
        self._bench[endpoint] = _Bench(until=now + delay, failures=failures)

    def succeeded(self, endpoint: Endpoint) -> None:
        self._bench.pop(endpoint, None)

    def forget_except(self, endpoints: Sequence[Endpoint]) -> None:
        keep = set(endpoints)
        for endpoint in list(self._bench):
            if endpoint not in keep:
                del self._bench[endpoint]


def routes_from(
    state: ClusterState,
    tasks: Mapping[str, TaskObservation],
    vips: Mapping[str, Sequence[str]] = {},  # read only
) -> list[Route]:
    """Every ingress-published port of every service, and every port its replicas publish at
    each of its virtual addresses on this node (`vips`: service id -> addresses, from
    `swarmlet.networks`), with the endpoints that may serve it."""
    routes = []
    for service in state.services.values():
        ingress = [p for p in service.spec.ports if p.mode == "ingress"]
        service_vips = vips.get(service.id, ())
        if not ingress and not service_vips:
            continue
        serving: dict[tuple[int, str], list[Endpoint]] = {}  # (target, protocol) -> endpoints
        for task in state.tasks_of(service.id):
            obs = tasks.get(task.id)
            if (
                task.desired_state is TaskState.RUNNING
                and obs is not None
                and obs.state is TaskState.RUNNING
                and obs.healthy is not False
            ):
                for e in obs.endpoints:
                    serving.setdefault((e.target, e.protocol), []).append(e)
        name = service.spec.name
        for port in ingress:
            endpoints = tuple(serving.get((port.target, port.protocol), ()))
            routes.append(Route(name, port.published, port.protocol, endpoints))
        for (target, protocol), found in sorted(serving.items()):
            for vip in service_vips:
                routes.append(Route(name, target, protocol, tuple(found), vip))
    return routes


# ---------------------------------------------------------------------------- the proxy


@dataclass(frozen=True, slots=True)
class Route:
    """One published port: where clients connect, and who serves it."""

    service: str
    published: int
    protocol: str
    endpoints: tuple[Endpoint, ...]
    host: str = ""  # a service's virtual address; "" for the node's publish address

    @property
    def key(self) -> tuple[str, int, str]:
        return (self.host, self.published, self.protocol)


@dataclass
class PortStats:
    connections: int = 0
    active: int = 0
    bytes_in: int = 0  # client -> replica
    bytes_out: int = 0  # replica -> client
    errors: int = 0
    retries: int = 0  # connections replayed to another replica after an empty close
    refused: int = 0  # clients turned away: the agent's connection limit was reached
    per_endpoint: Counter[str] = field(default_factory=Counter)


class _Listener:
    def __init__(self, route: Route, scope: trio.CancelScope) -> None:
        self.route = route
        self.scope = scope
        # Each proxy starts its round robin at a random place, so the proxies of all nodes do not
        # hit the same replica first, in step.
        self.selector = EndpointSelector(_cursor=random.randrange(1 << 16))
        self.stats = PortStats()


FD_RESERVE = 1024  # descriptors kept for the agent itself: Raft, gossip, Docker, the API
WANTED_FDS = 1 << 18  # 2 sockets per proxied connection: room for ~100,000 connections


def raise_fd_limit() -> int:
    """Each proxied connection holds two sockets: raise the soft limit to the hard one, and, as
    root, the hard one too (up to the kernel's nr_open). Returns the limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < WANTED_FDS:
        with contextlib.suppress(ValueError, OSError):  # not root: keep the hard limit
            resource.setrlimit(resource.RLIMIT_NOFILE, (WANTED_FDS, WANTED_FDS))
            return WANTED_FDS
    target = hard if hard != resource.RLIM_INFINITY else WANTED_FDS
    if soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class Proxy:
    def __init__(
        self,
        publish_host: str,
        routes: Callable[[], list[Route]],
        on_port_errors: Callable[[], None] = lambda: None,
    ) -> None:
        self.publish_host = publish_host
        self._routes = routes
        self._on_port_errors = on_port_errors
        self._listeners: dict[tuple[str, int, str], _Listener] = {}  # by Route.key
        # Published ports only (a VIP is ours alone): (port, protocol) -> why it cannot listen.
        self.port_errors: dict[tuple[int, str], str] = {}
        self._wake = trio.Event()
        self._nursery: trio.Nursery | None = None
        self.max_connections = 1 << 30  # set from the descriptor limit in `run`
        self.active_connections = 0

    def notify(self) -> None:
        self._wake.set()

    def connection_counts(self) -> dict[str, int]:
        """Connections accepted so far per service, through its published ports and its virtual
        addresses (monotonic; rates are differences)."""
        counts: Counter[str] = Counter()
        for listener in self._listeners.values():
            counts[listener.route.service] += listener.stats.connections
        return dict(counts)

    def stats(self) -> dict[str, dict[str, object]]:
        """Per listener: "PORT/PROTO" for a published port, "VIP:PORT/PROTO" for a service's
        virtual address."""
        out: dict[str, dict[str, object]] = {}
        for (host, port, proto), listener in self._listeners.items():
            s = listener.stats
            out[f"{host}:{port}/{proto}" if host else f"{port}/{proto}"] = {
                "service": listener.route.service,
                "connections": s.connections,
                "active": s.active,
                "bytes_in": s.bytes_in,
                "bytes_out": s.bytes_out,
                "errors": s.errors,
                "retries": s.retries,
                "refused": s.refused,
                "endpoints": dict(s.per_endpoint),
            }
        return out

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        # Past this many connections new clients are refused at once, so that a flood of
        # connections can never starve the agent's own sockets (Raft, gossip, the API).
        self.max_connections = max(64, (raise_fd_limit() - FD_RESERVE) // 2)
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            while True:
                await self._sync()
                with trio.move_on_after(2.0):
                    await self._wake.wait()
                self._wake = trio.Event()

    async def _sync(self) -> None:
        assert self._nursery is not None
        wanted = {r.key: r for r in self._routes() if r.protocol == "tcp"}
        for port_key in list(self.port_errors):
            if ("", *port_key) not in wanted:
                del self.port_errors[port_key]
                self._on_port_errors()
        for key, listener in list(self._listeners.items()):
            if key not in wanted:
                listener.scope.cancel()
                del self._listeners[key]
            else:
                listener.route = wanted[key]
                listener.selector.forget_except(wanted[key].endpoints)
        for key, route in wanted.items():
            if key not in self._listeners:
                await self._open(route)

    async def _open(self, route: Route) -> None:
        assert self._nursery is not None
        key = (route.published, route.protocol)
        host = route.host or self.publish_host
        try:
            listeners = await trio.open_tcp_listeners(route.published, host=host)
        except OSError as exc:
            reason = (
                "already in use" if exc.errno == errno.EADDRINUSE else (exc.strerror or str(exc))
            )
            message = f"cannot listen on {host}:{route.published}: {reason}"
            if route.host:  # a VIP: nobody else should hold it; the next sync tries again
                log.warning("%s (service %s)", message, route.service)
            elif self.port_errors.get(key) != message:
                log.error("%s (service %s)", message, route.service)
                self.port_errors[key] = message
                self._on_port_errors()
            return
        if not route.host and self.port_errors.pop(key, None) is not None:
            self._on_port_errors()
        scope = trio.CancelScope()
        listener = _Listener(route, scope)
        self._listeners[route.key] = listener

        async def handle(stream: trio.SocketStream) -> None:
            await self._handle(listener, stream)

        async def serve() -> None:
            with scope:
                await trio.serve_listeners(handle, listeners)
            for lst in listeners:
                await lst.aclose()

        self._nursery.start_soon(serve)

    async def _handle(self, listener: _Listener, client: trio.SocketStream) -> None:
        stats = listener.stats
        stats.connections += 1
        if self.active_connections >= self.max_connections:
            stats.refused += 1
            with contextlib.suppress(*_BROKEN):
                await client.aclose()
            return
        self.active_connections += 1
        stats.active += 1
        session = _Session(client, stats)
        try:
            for endpoint in listener.selector.order(listener.route.endpoints, trio.current_time()):
                try:
                    with trio.fail_after(CONNECT_TIMEOUT_S):
                        upstream = await trio.open_tcp_stream(endpoint.host, endpoint.port)
                except (OSError, trio.TooSlowError):
                    listener.selector.failed(endpoint, trio.current_time())
                    stats.errors += 1
                    continue
                stats.per_endpoint[f"{endpoint.host}:{endpoint.port}"] += 1
                async with upstream:
                    if await session.relay(upstream):
                        listener.selector.succeeded(endpoint)
                        return
                # Closed before a single byte came back: a replica dying behind Docker's port
                # proxy looks exactly like this. Bench it and replay to the next one.
                listener.selector.failed(endpoint, trio.current_time())
                stats.errors += 1
                stats.retries += 1
            # No replica could take it: the client sees the connection close.
        finally:
            stats.active -= 1
            self.active_connections -= 1
            with contextlib.suppress(*_BROKEN):
                await client.aclose()


_BROKEN = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)


class _Session:
    """One client connection, relayed to one replica at a time.

    Until the replica sends its first byte, the client's bytes are also kept (up to
    REPLAY_LIMIT_BYTES), so that a replica that closes without answering within
    REPLAY_WINDOW_S can be replaced by the next one, transparently. Past the first byte, past
    the window or past the limit, the connection is committed to its replica. The cost: a
    replica that read a request and closed without a word sees the request replayed elsewhere
    (HAProxy's `retry-on empty-response` makes the same trade for HTTP).
    """

    def __init__(self, client: trio.SocketStream, stats: PortStats) -> None:
        self.client = client
        self.stats = stats
        self.sent = bytearray()  # client bytes so far, while replay is still possible
        self.replayable = True
        self.client_eof = False

    async def relay(self, upstream: trio.SocketStream) -> bool:
        """Relay until both directions end. False: the replica closed before answering and the
        session may be retried with another replica."""
        connected_at = trio.current_time()
        answered = trio.Event()
        try:
            if self.sent:
                await upstream.send_all(bytes(self.sent))
            if self.client_eof:
                await upstream.send_eof()
        except _BROKEN:
            return not self.replayable
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._client_to_upstream, upstream, answered)
            try:
                first = await upstream.receive_some(COPY_BUFFER_BYTES)
            except _BROKEN:
                first = b""
            if not first:
                early = trio.current_time() - connected_at < REPLAY_WINDOW_S
                if self.replayable and early:
                    nursery.cancel_scope.cancel()  # abandon this replica; `sent` holds it all
                    return False
                with contextlib.suppress(*_BROKEN):
                    await self.client.send_eof()
                return True
            self.replayable = False
            answered.set()
            try:
                await self.client.send_all(first)
            except _BROKEN:
                nursery.cancel_scope.cancel()
                return True
            self.stats.bytes_out += len(first)
            await _pump(upstream, self.client, self.stats, inbound=False)
        return True

    async def _client_to_upstream(self, upstream: trio.SocketStream, answered: trio.Event) -> None:
        while not self.client_eof:
            try:
                data = await self.client.receive_some(COPY_BUFFER_BYTES)
            except _BROKEN:
                self.replayable = False  # the client is gone: nothing to retry for
                with contextlib.suppress(*_BROKEN):
                    await upstream.aclose()
                return
            if not data:
                self.client_eof = True
                with contextlib.suppress(*_BROKEN):
                    await upstream.send_eof()
                return
            if self.replayable and not answered.is_set():
                # Kept before sending: a cancelled send_all may have sent any part of it.
                self.sent += data
                if len(self.sent) > REPLAY_LIMIT_BYTES:
                    self.replayable = False
            try:
                await upstream.send_all(data)
            except _BROKEN:
                return  # the replica went away: `relay` sees it and decides
            self.stats.bytes_in += len(data)


async def _pump(
    source: trio.SocketStream, sink: trio.SocketStream, stats: PortStats, inbound: bool
) -> None:
    """Copy until EOF, then half-close the other side; errors end only this connection."""
    try:
        while True:
            data = await source.receive_some(COPY_BUFFER_BYTES)
            if not data:
                break
            await sink.send_all(data)
            if inbound:
                stats.bytes_in += len(data)
            else:
                stats.bytes_out += len(data)
        with contextlib.suppress(*_BROKEN):
            await sink.send_eof()
    except _BROKEN:
        # One side reset: tear both down.
        with contextlib.suppress(*_BROKEN):
            await source.aclose()
        with contextlib.suppress(*_BROKEN):
            await sink.aclose()
