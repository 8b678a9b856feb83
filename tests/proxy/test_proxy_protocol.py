"""The mesh's PROXY protocol header on real loopback sockets: a replica behind a route that opts
in reads the header, with the real client's address and port and the address it connected to,
before the client's first byte; a retry to another replica sends it again; a route that does
not opt in sends none; and a worker process (which gets its routes over the control socket)
sends it too; a version it cannot send refuses the connection, never relays it bare. And which
routes carry the version: published TCP ports that opt in, never a service's virtual address."""

from __future__ import annotations

import socket
import struct
from functools import partial

import pytest
import trio

from swarmlet.proxy.mesh import Proxy
from swarmlet.proxy.routes import EndpointSelector, Route, routes_from
from swarmlet.proxy.tcp import Relay
from swarmlet.state.machine import ClusterState
from swarmlet.state.model import PortConfig, Service, ServiceSpec, Task, TaskState
from swarmlet.state.observed import Endpoint, TaskObservation

TIMEOUT_S = 30  # the worker test starts a Python process: allow for a loaded machine
REQUEST = b"hello"


class _Replica:
    """Records each connection's bytes until the request has arrived whole, then answers with
    them (answer=True) or closes without a word (answer=False)."""

    def __init__(self, *, answer: bool = True) -> None:
        self.answer = answer
        self.connections: list[bytes] = []

    async def handle(self, stream: trio.SocketStream) -> None:
        got = b""
        async with stream:
            while not got.endswith(REQUEST) and (chunk := await stream.receive_some(65536)):
                got += chunk
            self.connections.append(got)
            if self.answer:
                await stream.send_all(got)


async def _start_replica(nursery: trio.Nursery, replica: _Replica, host: str) -> Endpoint:
    listeners = await nursery.start(partial(trio.serve_tcp, replica.handle, 0, host=host))
    return Endpoint(80, "tcp", host, listeners[0].socket.getsockname()[1])


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


async def _relay(nursery: trio.Nursery, host: str, route: Route) -> Relay:
    relay = Relay(host)
    await nursery.start(relay.run)
    assert await relay.sync({route.key: route}) == {}
    relay.listeners[route.key].selector = EndpointSelector()  # endpoints in order
    return relay


async def _ask(host: str, port: int) -> tuple[bytes, int]:
    """The answer to one request, and the client's own port."""
    stream = await trio.open_tcp_stream(host, port)
    async with stream:
        client_port: int = stream.socket.getsockname()[1]
        await stream.send_all(REQUEST)
        answer = b""
        while chunk := await stream.receive_some(65536):
            answer += chunk
        return answer, client_port


def _v2_tcp4(client_port: int, port: int) -> bytes:
    """HAProxy's v2 header for 127.0.0.1:client_port -> 127.0.0.1:port, spelled out."""
    loopback = bytes([127, 0, 0, 1])
    return (
        b"\r\n\r\n\x00\r\nQUIT\n"
        + bytes([0x21, 0x11])
        + struct.pack("!H", 12)
        + loopback
        + loopback
        + struct.pack("!HH", client_port, port)
    )


@pytest.mark.parametrize("version", ["v1", "v2"])
async def test_the_replica_reads_the_clients_address_before_its_first_byte(version: str) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            replica = _Replica()
            endpoint = await _start_replica(nursery, replica, "127.0.0.1")
            port = _free_port("127.0.0.1")
            route = Route("web", port, "tcp", (endpoint,), proxy_protocol=version)
            relay = await _relay(nursery, "127.0.0.1", route)
            answer, client_port = await _ask("127.0.0.1", port)
            header = (
                f"PROXY TCP4 127.0.0.1 127.0.0.1 {client_port} {port}\r\n".encode()
                if version == "v1"
                else _v2_tcp4(client_port, port)
            )
            assert replica.connections == [header + REQUEST]
            assert answer == header + REQUEST  # the replica echoes all it got
            stats = relay.listeners[route.key].stats
            assert stats.bytes_in == len(REQUEST)  # the client's bytes, not the header
            nursery.cancel_scope.cancel()


async def test_an_ipv6_client_is_sent_as_tcp6() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            replica = _Replica()
            endpoint = await _start_replica(nursery, replica, "::1")
            port = _free_port("::1")
            route = Route("web", port, "tcp", (endpoint,), proxy_protocol="v1")
            await _relay(nursery, "::1", route)
            _, client_port = await _ask("::1", port)
            header = f"PROXY TCP6 ::1 ::1 {client_port} {port}\r\n".encode()
            assert replica.connections == [header + REQUEST]
            nursery.cancel_scope.cancel()


async def test_a_retry_to_another_replica_sends_the_header_again() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            dead, good = _Replica(answer=False), _Replica()
            endpoints = (
                await _start_replica(nursery, dead, "127.0.0.1"),
                await _start_replica(nursery, good, "127.0.0.1"),
            )
            port = _free_port("127.0.0.1")
            route = Route("web", port, "tcp", endpoints, proxy_protocol="v1")
            relay = await _relay(nursery, "127.0.0.1", route)
            answer, client_port = await _ask("127.0.0.1", port)
            header = f"PROXY TCP4 127.0.0.1 127.0.0.1 {client_port} {port}\r\n".encode()
            assert dead.connections == [header + REQUEST]
            assert good.connections == [header + REQUEST]
            assert answer == header + REQUEST
            assert relay.listeners[route.key].stats.retries == 1
            nursery.cancel_scope.cancel()


async def test_a_route_that_does_not_opt_in_sends_no_header() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            replica = _Replica()
            endpoint = await _start_replica(nursery, replica, "127.0.0.1")
            port = _free_port("127.0.0.1")
            await _relay(nursery, "127.0.0.1", Route("web", port, "tcp", (endpoint,)))
            answer, _ = await _ask("127.0.0.1", port)
            assert replica.connections == [REQUEST] and answer == REQUEST
            nursery.cancel_scope.cancel()


async def test_a_worker_process_sends_the_header_too() -> None:
    connections = 40
    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            replica = _Replica()
            endpoint = await _start_replica(nursery, replica, "127.0.0.1")
            port = _free_port("127.0.0.1")
            route = Route("web", port, "tcp", (endpoint,), proxy_protocol="v2")
            proxy = Proxy("127.0.0.1", lambda: [route], workers=1)
            await nursery.start(proxy.run)
            workers = proxy.workers
            assert workers is not None
            while not workers.in_step():  # noqa: ASYNC110 - the state lives in another process
                await trio.sleep(0.05)
            for _ in range(connections):
                answer, client_port = await _ask("127.0.0.1", port)
                assert answer == _v2_tcp4(client_port, port) + REQUEST
            # Both processes served (the kernel spreads connections over both listeners), so
            # the worker's connections carried the header as well.
            own = proxy.relay.listeners[route.key].stats.connections
            assert 0 < own < connections
            nursery.cancel_scope.cancel()


def test_only_the_published_port_that_opts_in_carries_the_version_never_a_vip() -> None:
    state = ClusterState()
    ports = (PortConfig(8080, 80, proxy_protocol="v2"), PortConfig(8081, 81))
    state.services["s"] = Service(id="s", spec=ServiceSpec(name="api", image="x", ports=ports))
    state.tasks["t"] = Task(id="t", service_id="s", slot=1, spec_version=1)
    web, admin = Endpoint(80, "tcp", "h", 5000), Endpoint(81, "tcp", "h", 5001)
    observed = {"t": TaskObservation(task_id="t", state=TaskState.RUNNING, endpoints=(web, admin))}
    vips = {"s": (("172.20.128.1", "172.20.0.0/16"),)}
    assert routes_from(state, observed, vips) == [
        Route("api", 8080, "tcp", (web,), proxy_protocol="v2"),
        Route("api", 8081, "tcp", (admin,)),
        # container to container on the service's network: no header
        Route("api", 80, "tcp", (web,), "172.20.128.1", "172.20.0.0/16"),
        Route("api", 81, "tcp", (admin,), "172.20.128.1", "172.20.0.0/16"),
    ]


async def test_a_version_the_proxy_cannot_send_refuses_the_connection_not_the_port() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            replica = _Replica()
            endpoint = await _start_replica(nursery, replica, "127.0.0.1")
            port = _free_port("127.0.0.1")
            route = Route("web", port, "tcp", (endpoint,), proxy_protocol="v9")
            relay = await _relay(nursery, "127.0.0.1", route)
            # Silent: a request left unread would make the proxy's close a reset.
            async with await trio.open_tcp_stream("127.0.0.1", port) as refused:
                assert await refused.receive_some(100) == b""  # closed, never relayed
            assert replica.connections == []
            assert relay.listeners[route.key].stats.errors == 1
            # The listener lives on: the same port serves once the route is one it can send.
            fixed = Route("web", port, "tcp", (endpoint,), proxy_protocol="v1")
            assert await relay.sync({fixed.key: fixed}) == {}
            answer, client_port = await _ask("127.0.0.1", port)
            assert (
                answer
                == f"PROXY TCP4 127.0.0.1 127.0.0.1 {client_port} {port}\r\n".encode() + REQUEST
            )
            nursery.cancel_scope.cancel()
