"""The routing mesh's data path: listeners on published ports, their accept loops, and the relay
of each client connection to a replica. The agent's `Proxy` and its worker processes
(`swarmlet.proxy.worker_process`) both serve connections with this code.

A failed connect moves on to the next endpoint within the same client connection and benches
the failed one (`EndpointSelector`), so a freshly dead replica costs the client nothing but a
little latency. The relay copies each direction with bounded buffers (one `recv` at a time, so
a slow reader back-pressures the writer through TCP) and propagates half-close (EOF one way
leaves the other way open).

A connection that moves no byte either way for `Relay.idle_timeout_s` is closed on both sides
(counted as `idle_closed`), so idle or abandoned clients cannot pile up sockets; a client's
opening bytes, kept for replay to another replica, are dropped as soon as the connection is
committed to its replica.

On a route with `Route.proxy_protocol`, every connection to a replica, a retry's included,
opens with a PROXY protocol header (`swarmlet.proxy.proxy_header`) naming the client's address
and the one it connected to, written before any client byte; it is not counted in `bytes_in`.

Sockets are plain non-blocking stdlib sockets, waited on with `trio.lowlevel.wait_readable` /
`wait_writable`, rather than `trio.SocketStream`: a proxied request is a handful of tiny reads
and writes, and a trio stream adds a trip through the scheduler to every call that succeeds at
once, and `open_tcp_stream` a nursery and a task per connect (happy eyeballs, for an address
that is already numeric). Here a call that succeeds returns at once; the copy loops, which on a
fast transfer could go on without ever waiting, yield every YIELD_EVERY chunks that did not
wait, so they cannot starve the agent's other tasks. A socket is closed only when no task
waits on it (closing a listener wakes its waiter first with `notify_closing`).

Invariant: `Relay.listeners` holds exactly the ports this process listens on, each under its
`Route.key`; removing one closes its sockets at once and cancels its connections.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import logging
import random
import resource
import select
import socket
from collections.abc import Mapping
from functools import lru_cache

import trio

from swarmlet.proxy.counters import PortKey, PortStats
from swarmlet.proxy.proxy_header import proxy_header
from swarmlet.proxy.routes import EndpointSelector, Route, admits
from swarmlet.state.observed import Endpoint

log = logging.getLogger(__name__)

COPY_BUFFER_BYTES = 64 * 1024
CONNECT_TIMEOUT_S = 1.0
REPLAY_WINDOW_S = 1.0  # a replica closing without a byte this soon after connect is retried
REPLAY_LIMIT_BYTES = 64 * 1024  # at most this much of the client's opening bytes is replayed
# A connection with no byte either way for this long is closed. Docker Swarm's IPVS keeps an
# established TCP connection for 900 s of silence (`ipvsadm --set 900 120 300`), and TCP
# services (databases, message brokers) hold pooled connections idle for minutes: a shorter
# timeout, like HAProxy's usual 30-60 s for HTTP, would break workloads that work on Swarm.
IDLE_TIMEOUT_S = 900.0
# The sweeper wakes this many times per timeout: an idle connection goes within 10% late.
IDLE_SWEEPS_PER_TIMEOUT = 10
YIELD_EVERY = 4  # chunks a copy loop may get in a row without waiting before it yields
ACCEPT_BATCH = 32  # connections accepted per wake-up of an accept loop, before it yields
LISTEN_BACKLOG = 4096  # the kernel caps it at net.core.somaxconn
# accept() errors that mean "out of resources for now": wait a little, as trio.serve_listeners
# does, instead of ending the listener.
_ACCEPT_RESOURCE_ERRORS = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}


FD_RESERVE = 1024  # descriptors kept for the agent itself: Raft, gossip, Docker, the API
# Ports a process listens on, at most (`mesh.Proxy`), two descriptors each (IPv4 and IPv6 of a
# host name): a stack publishing a range of 20,000 ports took every descriptor, and the agent
# stopped, at each start (review). The ports past it are reported as port errors.
MAX_LISTENERS = 2048
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


def connection_budget() -> int:
    """Connections a process may relay at once: past it new clients are refused at once, so
    that a flood can never starve its own sockets (Raft, gossip, the API)."""
    return max(64, (raise_fd_limit() - FD_RESERVE - 2 * MAX_LISTENERS) // 2)


class _Listener:
    def __init__(self, route: Route, sockets: list[socket.socket]) -> None:
        self.route = route
        self.sockets = sockets
        self.scope = trio.CancelScope()
        # Each proxy starts its round robin at a random place, so the proxies of all nodes do not
        # hit the same replica first, in step.
        self.selector = EndpointSelector(_cursor=random.randrange(1 << 16))
        self.stats = PortStats()


async def open_listen_sockets(host: str, port: int, *, reuse_port: bool) -> list[socket.socket]:
    """Listening sockets on host:port, one per address family `host` resolves to (as
    `trio.open_tcp_listeners` opens them). `reuse_port`: share the port with the proxy's worker
    processes (SO_REUSEPORT: the kernel spreads new connections over every socket that has it).
    Raises OSError, with nothing left open."""
    infos = await trio.socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    opened: list[socket.socket] = []
    try:
        for family, kind, proto, _, sockaddr in infos:
            sock = socket.socket(family, kind, proto)
            opened.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(sockaddr)
            sock.listen(LISTEN_BACKLOG)
            sock.setblocking(False)
    except OSError:
        for sock in opened:
            sock.close()
        raise
    return opened


class Relay:
    """One process's share of the mesh: its listeners and its connections."""

    def __init__(
        self,
        publish_host: str,
        *,
        reuse_port: bool = False,
        idle_timeout_s: float = IDLE_TIMEOUT_S,
    ) -> None:
        if not idle_timeout_s > 0:
            raise ValueError(f"idle_timeout_s must be positive, not {idle_timeout_s}")
        self.publish_host = publish_host
        self.reuse_port = reuse_port
        self.idle_timeout_s = idle_timeout_s
        self.listeners: dict[PortKey, _Listener] = {}  # by Route.key
        # Past this many connections new clients are refused at once, so that a flood of
        # connections can never starve the process's other sockets (Raft, gossip, the API).
        self.max_connections = 1 << 30
        self.active_connections = 0
        self._sessions: set[_Session] = set()  # every connection being relayed, for the sweeper
        self._nursery: trio.Nursery | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                task_status.started()
                await self._sweep_idle()
        finally:
            for key in list(self.listeners):
                self._remove(key)

    async def sync(self, wanted: Mapping[PortKey, Route]) -> dict[PortKey, OSError]:
        """Listen on exactly the ports of `wanted` (by Route.key), with their new endpoints;
        returns the ports that could not be opened, with why."""
        for key, listener in list(self.listeners.items()):
            if key not in wanted:
                self._remove(key)
            else:
                listener.route = wanted[key]
                listener.selector.forget_except(wanted[key].endpoints)
        failed: dict[PortKey, OSError] = {}
        for key, route in wanted.items():  # callers sync one at a time: no race across awaits
            if key in self.listeners:
                continue
            host = route.host or self.publish_host
            try:
                sockets = await open_listen_sockets(
                    host, route.published, reuse_port=self.reuse_port
                )
            except OSError as exc:
                failed[key] = exc
                continue
            listener = _Listener(route, sockets)
            self.listeners[key] = listener
            assert self._nursery is not None, "Relay.sync before Relay.run"
            self._nursery.start_soon(self._serve, listener)
        return failed

    def _remove(self, key: PortKey) -> None:
        """Stop listening at once (the port is free when this returns); cancel its connections."""
        listener = self.listeners.pop(key)
        listener.scope.cancel()
        for sock in listener.sockets:
            trio.lowlevel.notify_closing(sock)
            sock.close()

    async def _sweep_idle(self) -> None:
        """Close the connections idle for `idle_timeout_s`; runs for the relay's life.

        One task per process, not a timer per connection nor a deadline moved on every chunk
        (each move is a push on trio's deadline heap): a session only stamps `active_at` when
        bytes move, and this task, every 1/IDLE_SWEEPS_PER_TIMEOUT of the timeout, cancels the
        sessions whose stamp is older than the timeout. A sweep is a pass over the sessions
        without an await (about 10 ms per 100,000 connections, every 90 s by default); the
        set cannot change under it."""
        period = self.idle_timeout_s / IDLE_SWEEPS_PER_TIMEOUT
        while True:
            await trio.sleep(period)
            idle_since = trio.current_time() - self.idle_timeout_s
            for session in self._sessions:
                if session.active_at <= idle_since:
                    session.scope.cancel()  # `handle` closes both sockets and counts it

    async def _serve(self, listener: _Listener) -> None:
        with listener.scope:
            async with trio.open_nursery() as nursery:
                for sock in listener.sockets:
                    nursery.start_soon(self._accept_loop, listener, sock, nursery)

    async def _accept_loop(
        self, listener: _Listener, sock: socket.socket, nursery: trio.Nursery
    ) -> None:
        while True:
            if sock.fileno() < 0:
                return  # `_remove` closed it before this task first ran
            try:
                await trio.lowlevel.wait_readable(sock)
            except trio.ClosedResourceError:
                return  # `_remove` closed it
            for _ in range(ACCEPT_BATCH):
                try:
                    client, peer = sock.accept()
                except BlockingIOError:
                    break
                except OSError as exc:
                    if exc.errno not in _ACCEPT_RESOURCE_ERRORS:
                        raise
                    log.error("accept on port %d: %s", listener.route.published, exc)
                    await trio.sleep(0.1)
                    break
                if not admits(listener.route, peer[0]):  # another network's container
                    listener.stats.refused += 1
                    client.close()
                    continue
                client.setblocking(False)
                _nodelay(client)
                nursery.start_soon(self.handle, listener, client)

    async def handle(self, listener: _Listener, client: socket.socket) -> None:
        """Relay one client connection to a replica; closes `client`. Idle connections are
        closed only while `run` runs (its sweeper), as every accepted connection is."""
        stats = listener.stats
        stats.connections += 1
        if self.active_connections >= self.max_connections:
            stats.refused += 1
            client.close()
            return
        try:
            header = _header_for(listener.route, client)
        except (OSError, ValueError):  # gone already, or a version this proxy cannot send:
            stats.errors += 1  # either way no replica may see the connection without it
            client.close()
            return
        self.active_connections += 1
        stats.active += 1
        session = _Session(client, stats, header)
        self._sessions.add(session)
        try:
            with session.scope:  # cancelled by the sweeper only
                await _relay_to_a_replica(listener, session)
            if session.scope.cancelled_caught:
                listener.stats.idle_closed += 1
        finally:
            self._sessions.discard(session)
            stats.active -= 1
            self.active_connections -= 1
            client.close()


async def _relay_to_a_replica(listener: _Listener, session: _Session) -> None:
    """Try the endpoints in the selector's order until one takes the session to its end."""
    stats, selector = listener.stats, listener.selector
    for endpoint in selector.order(listener.route.endpoints, trio.current_time()):
        upstream = await _connect(endpoint)
        if upstream is None:
            selector.failed(endpoint, trio.current_time())
            stats.errors += 1
            continue
        stats.per_endpoint[endpoint] += 1
        try:
            if await session.relay(upstream):
                selector.succeeded(endpoint)
                return
        finally:
            upstream.close()
        # Closed before a single byte came back: a replica dying behind Docker's port proxy
        # looks exactly like this. Bench it and replay to the next one.
        selector.failed(endpoint, trio.current_time())
        stats.errors += 1
        stats.retries += 1
    # No replica could take it: the client sees the connection close.


def _header_for(route: Route, client: socket.socket) -> bytes:
    """The PROXY protocol header each connection to a replica opens with, b"" if none. Read
    from the socket, not the listener: the address the client connected to is the header's.
    Raises OSError if the client is gone already, ValueError for a version it cannot send
    (the specs are checked where they are made: this is for a state from elsewhere)."""
    if not route.proxy_protocol:
        return b""
    peer, local = client.getpeername(), client.getsockname()
    return proxy_header(route.proxy_protocol, peer[:2], local[:2])


# ---------------------------------------------------------------------------- sockets


def _nodelay(sock: socket.socket) -> None:
    # Requests and answers are small and each is written whole: send them at once.
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


@lru_cache(maxsize=4096)
def _numeric_family(host: str) -> socket.AddressFamily | None:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    return socket.AF_INET6 if address.version == 6 else socket.AF_INET


def _writable_now(sock: socket.socket) -> bool:
    poller = select.poll()
    poller.register(sock, select.POLLOUT)
    return bool(poller.poll(0))


async def _connect(endpoint: Endpoint) -> socket.socket | None:
    """A connected non-blocking socket to `endpoint`, or None (refused, unreachable, timed out)."""
    family = _numeric_family(endpoint.host)
    address: tuple[object, ...] = (endpoint.host, endpoint.port)
    if family is None:  # a host name: resolve off the event loop
        try:
            infos = await trio.socket.getaddrinfo(
                endpoint.host, endpoint.port, type=socket.SOCK_STREAM
            )
        except (OSError, ValueError, OverflowError):  # a label over 63 bytes, a huge port
            return None
        family, _, _, _, address = infos[0]  # numeric now
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        _nodelay(sock)
        err = sock.connect_ex(address)
        if err == errno.EINPROGRESS and _writable_now(sock):
            # On loopback (Docker's port proxy) the handshake is over when connect returns:
            # one poll() instead of a wait through the event loop.
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err == errno.EINPROGRESS:
            with trio.move_on_after(CONNECT_TIMEOUT_S):
                await trio.lowlevel.wait_writable(sock)
                err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err == errno.EINPROGRESS:  # timed out
                err = errno.ETIMEDOUT
    except (ValueError, OverflowError):  # an address no socket takes (a port beyond 65535):
        err = errno.EINVAL  # a failed endpoint, as a refused one (`observation` drops them)
    except BaseException:
        sock.close()
        raise
    if err:
        sock.close()
        return None
    return sock


async def _recv(sock: socket.socket, ready: int) -> tuple[bytes, int]:
    """The next chunk (b"" at EOF), and how many chunks in a row (`ready` before this one) came
    without waiting. A chunk that is there already costs no trip through the scheduler, but
    every YIELD_EVERY-th in a row yields, so a fast transfer cannot starve the other tasks."""
    try:
        data = sock.recv(COPY_BUFFER_BYTES)
    except BlockingIOError:
        while True:
            await trio.lowlevel.wait_readable(sock)
            try:
                return sock.recv(COPY_BUFFER_BYTES), 0
            except BlockingIOError:
                continue
    ready += 1
    if ready >= YIELD_EVERY:
        await trio.lowlevel.checkpoint()
        ready = 0
    return data, ready


async def _send_all(sock: socket.socket, data: bytes | bytearray, session: _Session) -> None:
    """Send all of `data`. Each part a slow reader takes counts as the session's activity, so
    that a client reading slowly, but reading, is not taken for idle."""
    try:
        sent = sock.send(data)
    except BlockingIOError:
        sent = 0
    if sent == len(data):
        return
    view = memoryview(data)  # the rest without copies; released, so a bytearray can grow again
    try:
        while sent < len(view):
            await trio.lowlevel.wait_writable(sock)
            try:
                sent += sock.send(view[sent:])
            except BlockingIOError:
                continue
            session.active_at = trio.current_time()
    finally:
        view.release()


def _shutdown_write(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_WR)


class _Session:
    """One client connection, relayed to one replica at a time.

    Until the replica sends its first byte, the client's bytes are also kept (up to
    REPLAY_LIMIT_BYTES), so that a replica that closes without answering within
    REPLAY_WINDOW_S can be replaced by the next one, transparently. Past the first byte, past
    the window or past the limit, the connection is committed to its replica (`_commit`, the
    only way `replayable` turns False), and the kept bytes are dropped there and then: a
    long-lived connection holds no copy of its opening bytes. The cost: a replica that read a
    request and closed without a word sees the request replayed elsewhere (HAProxy's
    `retry-on empty-response` makes the same trade for HTTP).
    """

    def __init__(self, client: socket.socket, stats: PortStats, header: bytes = b"") -> None:
        self.client = client
        self.stats = stats
        self.header = header  # written first on each connection to a replica (PROXY protocol)
        self.sent = bytearray()  # client bytes so far, while replay is still possible
        self.replayable = True
        self.client_eof = False
        self.active_at = trio.current_time()  # when a byte last moved, either way
        self.scope = trio.CancelScope()  # the whole connection; the idle sweeper cancels it

    def _commit(self) -> None:
        """No replay from now on: free the opening bytes kept for it."""
        self.replayable = False
        self.sent = bytearray()

    async def relay(self, upstream: socket.socket) -> bool:
        """Relay until both directions end. False: the replica closed before answering and the
        session may be retried with another replica."""
        connected_at = trio.current_time()
        try:
            if self.header:  # before any client byte, on every replica tried
                await _send_all(upstream, self.header, self)
            if self.sent:
                await _send_all(upstream, self.sent, self)
            if self.client_eof:
                upstream.shutdown(socket.SHUT_WR)
        except OSError:
            return not self.replayable
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._client_to_upstream, upstream, nursery.cancel_scope)
            first = await self._first_chunk(upstream, connected_at)
            if not first:
                early = trio.current_time() - connected_at < REPLAY_WINDOW_S
                if self.replayable and early:
                    nursery.cancel_scope.cancel()  # abandon this replica; `sent` holds it all
                    return False
                self._commit()
                _shutdown_write(self.client)
                return True
            self._commit()
            await self._upstream_to_client(upstream, first, nursery.cancel_scope)
        return True

    async def _first_chunk(self, upstream: socket.socket, connected_at: float) -> bytes:
        """The replica's first chunk, b"" if it closed or failed. If the replay window ends
        before it, the session is committed then, not when the replica first speaks."""
        try:
            if self.replayable:
                with trio.move_on_at(connected_at + REPLAY_WINDOW_S):
                    first, _ = await _recv(upstream, 0)  # cancelled only while it waits
                    self.active_at = trio.current_time()
                    return first
                self._commit()
            first, _ = await _recv(upstream, 0)
        except OSError:
            return b""
        self.active_at = trio.current_time()
        return first

    async def _upstream_to_client(
        self, upstream: socket.socket, data: bytes, both: trio.CancelScope
    ) -> None:
        """Copy until EOF, then half-close the client; a reset either way ends both directions."""
        client, stats = self.client, self.stats
        ready = 0
        try:
            while data:
                await _send_all(client, data, self)
                stats.bytes_out += len(data)
                data, ready = await _recv(upstream, ready)
                self.active_at = trio.current_time()
        except OSError:
            both.cancel()
            return
        _shutdown_write(client)

    async def _client_to_upstream(self, upstream: socket.socket, both: trio.CancelScope) -> None:
        ready = 0
        while not self.client_eof:
            try:
                data, ready = await _recv(self.client, ready)
            except OSError:
                self._commit()  # the client is gone: nothing to retry for
                both.cancel()
                return
            self.active_at = trio.current_time()
            if not data:
                self.client_eof = True
                _shutdown_write(upstream)
                return
            if self.replayable:
                # Kept before sending: a cancelled send may have sent any part of it.
                self.sent += data
                if len(self.sent) > REPLAY_LIMIT_BYTES:
                    self._commit()
            try:
                await _send_all(upstream, data, self)
            except OSError:
                return  # the replica went away: `relay` sees it and decides
            self.stats.bytes_in += len(data)
