"""The routing mesh's pure parts (endpoint selection) and its relay, on real loopback sockets."""

from __future__ import annotations

import contextlib
import socket

import trio
import trio.testing

from swarmlet.proxy.routes import (
    BENCH_BASE_S,
    BENCH_MAX_S,
    EndpointSelector,
    Route,
    admits,
    routes_from,
)
from swarmlet.proxy.tcp import Relay, _Listener
from swarmlet.state.machine import ClusterState
from swarmlet.state.model import PortConfig, Service, ServiceSpec, Task, TaskState
from swarmlet.state.observed import Endpoint, TaskObservation

A, B, C = (Endpoint(80, "tcp", "127.0.0.1", p) for p in (1001, 1002, 1003))
TIMEOUT_S = 10


def test_round_robin_visits_every_endpoint_in_turn() -> None:
    sel = EndpointSelector()
    firsts = [sel.order([A, B, C], now=0.0)[0] for _ in range(6)]
    assert firsts == [A, B, C, A, B, C]


def test_every_endpoint_is_offered_once_per_connection() -> None:
    assert sorted(EndpointSelector().order([A, B, C], 0.0), key=lambda e: e.port) == [A, B, C]


def test_a_failed_endpoint_is_tried_last_until_its_back_off_ends() -> None:
    sel = EndpointSelector()
    sel.failed(A, now=10.0)
    for _ in range(3):
        assert sel.order([A, B, C], now=10.5)[-1] == A
    # after the back-off, A takes its normal turn again
    turns = [sel.order([A, B, C], now=10.0 + BENCH_BASE_S + 0.1)[0] for _ in range(3)]
    assert A in turns


def test_back_off_doubles_and_is_capped() -> None:
    sel = EndpointSelector()
    now = 0.0
    for _ in range(20):
        sel.failed(A, now)
    assert sel.order([A, B], now + BENCH_MAX_S - 0.01)[-1] == A
    assert A in [sel.order([A, B], now + BENCH_MAX_S + 0.01)[0] for _ in range(2)]


def test_success_clears_the_back_off() -> None:
    sel = EndpointSelector()
    sel.failed(A, 0.0)
    sel.succeeded(A)
    assert [sel.order([A, B], 0.1)[0] for _ in range(2)] == [A, B]


def test_all_benched_endpoints_are_still_offered() -> None:
    sel = EndpointSelector()
    for e in (A, B):
        sel.failed(e, 0.0)
    assert sorted(sel.order([A, B], 0.1), key=lambda e: e.port) == [A, B]


def test_no_endpoints_gives_an_empty_order() -> None:
    assert EndpointSelector().order([], 0.0) == []


def test_routes_hold_only_running_healthy_desired_replicas() -> None:
    state = ClusterState()
    spec = ServiceSpec(name="web", image="x", replicas=3, ports=(PortConfig(8080, 80),))
    state.services["s"] = Service(id="s", spec=spec)
    tasks = {
        "t1": (TaskState.RUNNING, TaskState.RUNNING, None),
        "t2": (TaskState.RUNNING, TaskState.RUNNING, False),  # unhealthy
        "t3": (TaskState.SHUTDOWN, TaskState.RUNNING, None),  # being stopped
        "t4": (TaskState.RUNNING, TaskState.STARTING, None),
    }
    observed = {}
    for i, (tid, (desired, seen, healthy)) in enumerate(tasks.items()):
        state.tasks[tid] = Task(
            id=tid, service_id="s", slot=i + 1, spec_version=1, desired_state=desired
        )
        observed[tid] = TaskObservation(
            task_id=tid,
            state=seen,
            healthy=healthy,
            endpoints=(Endpoint(80, "tcp", "h", 5000 + i),),
        )
    (route,) = routes_from(state, observed)
    assert route == Route("web", 8080, "tcp", (Endpoint(80, "tcp", "h", 5000),))


def test_a_service_on_a_network_is_routed_at_its_vip_on_every_port_its_replicas_publish() -> None:
    state = ClusterState()
    spec = ServiceSpec(name="st_api", image="x", ports=(PortConfig(8080, 80),))
    state.services["s"] = Service(id="s", spec=spec)
    state.tasks["t"] = Task(id="t", service_id="s", slot=1, spec_version=1)
    web, admin = Endpoint(80, "tcp", "h", 5000), Endpoint(9000, "tcp", "h", 5001)
    observed = {"t": TaskObservation(task_id="t", state=TaskState.RUNNING, endpoints=(web, admin))}
    vips = {"s": (("172.20.128.1", "172.20.0.0/16"),)}
    routes = routes_from(state, observed, vips)
    assert routes == [
        Route("st_api", 8080, "tcp", (web,)),
        Route("st_api", 80, "tcp", (web,), "172.20.128.1", "172.20.0.0/16"),
        Route("st_api", 9000, "tcp", (admin,), "172.20.128.1", "172.20.0.0/16"),
    ]
    assert routes_from(state, {}, vips) == [Route("st_api", 8080, "tcp", ())]


def test_a_vip_admits_only_the_containers_of_its_network() -> None:
    published = Route("web", 8080, "tcp", ())
    vip = Route("st_api", 80, "tcp", (), "172.20.128.1", "172.20.0.0/16")
    assert admits(published, "203.0.113.9")  # a published port serves anyone
    assert admits(vip, "172.20.0.7")  # a container on the bridge
    assert admits(vip, "172.20.0.1")  # the host itself, from the bridge's gateway
    assert not admits(vip, "172.21.0.7")  # a container of another network, via the host
    assert not admits(vip, "127.0.0.1")
    assert not admits(vip, "not an address")


async def _echo_server(
    nursery: trio.Nursery, reply: bool, host: str = "127.0.0.1"
) -> tuple[int, list[bytes]]:
    """A replica: records what it got; answers it back (reply=True) or closes without a word."""
    got: list[bytes] = []

    async def handle(stream: trio.SocketStream) -> None:
        async with stream:
            data = await stream.receive_some(65536)
            got.append(data)
            if reply and data:
                await stream.send_all(b"echo:" + data)

    listeners = await nursery.start(trio.serve_tcp, handle, 0)
    return listeners[0].socket.getsockname()[1], got


async def _relay_hello(nursery: trio.Nursery, *endpoints: Endpoint) -> tuple[_Listener, bytes]:
    """One client connection relayed to the first of `endpoints` that takes it: it says hello,
    and what comes back is returned with the listener (and its stats)."""
    listener = proxy_listener(Route("web", 0, "tcp", endpoints))
    client_side, server_side = await _socket_pair()
    async with client_side:
        nursery.start_soon(Relay("127.0.0.1").handle, listener, server_side)
        await client_side.send_all(b"hello")
        return listener, await client_side.receive_some(100)


async def test_a_replica_closing_without_answering_is_replaced_transparently() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            dead_port, dead_got = await _echo_server(nursery, reply=False)
            good_port, good_got = await _echo_server(nursery, reply=True)
            listener_route, answer = await _relay_hello(
                nursery,
                Endpoint(80, "tcp", "127.0.0.1", dead_port),
                Endpoint(80, "tcp", "127.0.0.1", good_port),
            )
            assert answer == b"echo:hello"
            assert dead_got == [b"hello"] and good_got == [b"hello"]
            assert listener_route.stats.retries == 1
            nursery.cancel_scope.cancel()


async def test_an_endpoint_no_socket_takes_is_a_failed_one_not_a_stopped_relay() -> None:
    """A port beyond 65535 made `connect_ex` raise OverflowError, a 70-byte label UnicodeError:
    either escaped the relay and stopped the agent. Now the next endpoint answers."""
    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            good_port, good_got = await _echo_server(nursery, reply=True)
            listener_route, answer = await _relay_hello(
                nursery,
                Endpoint(80, "tcp", "127.0.0.1", 70000),
                Endpoint(80, "tcp", "a" * 70, 80),
                Endpoint(80, "tcp", "127.0.0.1", good_port),
            )
            assert answer == b"echo:hello" and good_got == [b"hello"]
            assert listener_route.stats.errors == 2
            nursery.cancel_scope.cancel()


def proxy_listener(route: Route) -> _Listener:
    listener = _Listener(route, [])
    listener.selector = EndpointSelector()  # start at the first endpoint, not a random one
    return listener


async def _socket_pair() -> tuple[trio.SocketStream, socket.socket]:
    """A client's stream, and the proxy's end of it (a non-blocking stdlib socket)."""
    a, b = socket.socketpair()
    b.setblocking(False)
    return trio.SocketStream(trio.socket.from_stdlib_socket(a)), b


async def _serve(nursery: trio.Nursery, handler: object) -> int:
    listeners = await nursery.start(trio.serve_tcp, handler, 0)
    port: int = listeners[0].socket.getsockname()[1]
    return port


async def test_large_transfers_and_half_close_pass_through_unchanged() -> None:
    payload = bytes(range(256)) * 40_000  # ~10 MB, a recognisable pattern

    async def replica(stream: trio.SocketStream) -> None:
        # Reads everything until the client half-closes, then answers with a digest-like echo.
        async with stream:
            got = bytearray()
            while chunk := await stream.receive_some(65536):
                got += chunk
            await stream.send_all(bytes(got[::-1]))

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            port = await _serve(nursery, replica)
            route = Route("web", 0, "tcp", (Endpoint(80, "tcp", "127.0.0.1", port),))
            listener = _Listener(route, [])
            client, server_side = await _socket_pair()
            nursery.start_soon(Relay("127.0.0.1").handle, listener, server_side)

            async def send() -> None:
                await client.send_all(payload)
                await client.send_eof()  # half-close: the answer must still come back

            nursery.start_soon(send)
            received = bytearray()
            while chunk := await client.receive_some(65536):
                received += chunk
            assert received == payload[::-1]
            assert listener.stats.bytes_in == len(payload)
            assert listener.stats.bytes_out == len(payload)
            await client.aclose()
            nursery.cancel_scope.cancel()


async def test_a_slow_client_back_pressures_the_replica_without_buffering_it_all() -> None:
    sent = 0
    total = 1 << 30  # far more than any socket buffers can hold

    async def replica(stream: trio.SocketStream) -> None:
        nonlocal sent
        async with stream:
            await stream.receive_some(100)
            chunk = b"x" * 65536
            while sent < total:
                await stream.send_all(chunk)
                sent += len(chunk)

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            port = await _serve(nursery, replica)
            route = Route("web", 0, "tcp", (Endpoint(80, "tcp", "127.0.0.1", port),))
            client, server_side = await _socket_pair()
            listener = _Listener(route, [])
            nursery.start_soon(Relay("127.0.0.1").handle, listener, server_side)
            await client.send_all(b"GET")
            # The client reads nothing: the replica must stall once the kernel buffers are full,
            # instead of the proxy buffering everything it sends.
            last = -1
            while sent != last:
                last = sent
                await trio.sleep(0.2)
            assert 0 < sent < 64 * 1024 * 1024
            assert await client.receive_some(65536)  # and the bytes are all there to be read
            await client.aclose()
            nursery.cancel_scope.cancel()


async def test_a_vip_listener_refuses_peers_from_outside_its_network() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            port, got = await _echo_server(nursery, reply=True)
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                listen_port = probe.getsockname()[1]
            endpoint = Endpoint(80, "tcp", "127.0.0.1", port)
            # The "VIP" is 127.0.0.1 here; only 10.0.0.0/8 may use it, and we connect from
            # 127.0.0.1: refused before any replica is contacted.
            route = Route("st_api", listen_port, "tcp", (endpoint,), "127.0.0.1", "10.0.0.0/8")
            relay = Relay("127.0.0.1")
            await nursery.start(relay.run)
            assert await relay.sync({route.key: route}) == {}
            stream = await trio.open_tcp_stream("127.0.0.1", listen_port)
            async with stream:
                with contextlib.suppress(trio.BrokenResourceError):
                    await stream.send_all(b"hello")
                assert await stream.receive_some(100) == b""  # closed at once
            assert relay.listeners[route.key].stats.refused == 1 and got == []
            # Its own network's peers are served.
            allowed = Route("st_api", listen_port, "tcp", (endpoint,), "127.0.0.1", "127.0.0.0/8")
            await relay.sync({allowed.key: allowed})
            stream = await trio.open_tcp_stream("127.0.0.1", listen_port)
            async with stream:
                await stream.send_all(b"hello")
                assert await stream.receive_some(100) == b"echo:hello"
            nursery.cancel_scope.cancel()
