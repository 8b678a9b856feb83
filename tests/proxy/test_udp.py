"""UDP through the mesh: the flow table (pure) and the relay on real loopback sockets."""

from __future__ import annotations

import socket

import trio
import trio.testing

from swarmlet.proxy.counters import PortStats
from swarmlet.proxy.mesh import Proxy
from swarmlet.proxy.routes import EndpointSelector, Route
from swarmlet.proxy.udp import FlowTable, UdpRelay
from swarmlet.state.observed import Endpoint

TIMEOUT_S = 10
E1, E2 = Endpoint(53, "udp", "127.0.0.1", 1), Endpoint(53, "udp", "127.0.0.1", 2)


def test_a_flow_lives_while_it_sees_traffic_and_the_table_is_bounded() -> None:
    table = FlowTable(idle_s=30.0, max_flows=2)
    assert table.touch(("10.0.0.1", 5000), 0.0) is None
    table.open(("10.0.0.1", 5000), E1, 0.0)
    table.open(("10.0.0.2", 5000), E2, 0.0)
    assert not table.has_room()
    flow = table.touch(("10.0.0.1", 5000), 20.0)
    assert flow is not None and flow.endpoint == E1
    assert table.idle(35.0) == [("10.0.0.2", 5000)]  # the other one was touched at 20 s
    table.close(("10.0.0.2", 5000))
    assert table.has_room() and table.idle(49.0) == [] and table.idle(50.0) != []


async def _udp_server(nursery: trio.Nursery, tag: bytes) -> tuple[trio.socket.SocketType, int]:
    """A replica: answers every datagram with TAG:datagram (closed when the nursery ends)."""
    sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
    await sock.bind(("127.0.0.1", 0))

    async def serve() -> None:
        with sock:
            while True:
                try:
                    data, addr = await sock.recvfrom(65535)
                except (OSError, trio.ClosedResourceError):  # closed by the test: "dies"
                    return
                await sock.sendto(tag + b":" + data, addr)

    nursery.start_soon(serve)
    port: int = sock.getsockname()[1]
    return sock, port


async def _client() -> trio.socket.SocketType:
    sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
    await sock.bind(("127.0.0.1", 0))
    return sock


async def test_flows_go_round_robin_stick_to_their_replica_and_move_when_it_dies() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            a_sock, a_port = await _udp_server(nursery, b"a")
            b_sock, b_port = await _udp_server(nursery, b"b")
            a, b = (Endpoint(53, "udp", "127.0.0.1", p) for p in (a_port, b_port))
            listen = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
            await listen.bind(("127.0.0.1", 0))
            published = listen.getsockname()
            stats = PortStats()
            relay = UdpRelay(Route("dns", published[1], "udp", (a, b)), stats, EndpointSelector())
            nursery.start_soon(relay.serve, listen)

            async def ask(client: trio.socket.SocketType, text: bytes) -> bytes:
                await client.sendto(text, published)
                reply: bytes = await client.recv(65535)
                return reply

            clients = [await _client() for _ in range(4)]
            replies = [await ask(c, b"q") for c in clients]
            assert replies == [b"a:q", b"b:q", b"a:q", b"b:q"]  # one flow each, round robin
            assert await ask(clients[0], b"again") == b"a:again"  # a flow keeps its replica
            assert (stats.connections, stats.active) == (4, 4)
            assert stats.bytes_in == 4 * len(b"q") + len(b"again")

            a_sock.close()  # replica a dies: ICMP port unreachable to its flows
            await clients[0].sendto(b"lost", published)
            while stats.errors == 0:
                await trio.testing.wait_all_tasks_blocked()
                await trio.sleep(0.01)
            assert await ask(clients[0], b"next") == b"b:next"  # a new flow, to b
            # A route update that drops b closes b's flows.
            relay.update(Route("dns", published[1], "udp", ()))
            await trio.testing.wait_all_tasks_blocked()
            assert relay.table.flows == {} and stats.active == 0
            b_sock.close()
            nursery.cancel_scope.cancel()
        for sock in (listen, *clients):
            sock.close()


async def test_an_endpoint_no_socket_takes_is_a_failed_one_not_a_stopped_relay() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            a_sock, a_port = await _udp_server(nursery, b"a")
            bad = Endpoint(53, "udp", "127.0.0.1", 70000)  # OverflowError in connect
            good = Endpoint(53, "udp", "127.0.0.1", a_port)
            listen = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
            await listen.bind(("127.0.0.1", 0))
            published = listen.getsockname()
            stats = PortStats()
            relay = UdpRelay(
                Route("dns", published[1], "udp", (bad, good)), stats, EndpointSelector()
            )
            nursery.start_soon(relay.serve, listen)
            client = await _client()
            await client.sendto(b"q", published)  # to the bad one: dropped, counted
            while stats.errors == 0:
                await trio.testing.wait_all_tasks_blocked()
                await trio.sleep(0.01)
            await client.sendto(b"q", published)  # the bad one is benched: to the good one
            assert await client.recv(65535) == b"a:q"
            a_sock.close()
            nursery.cancel_scope.cancel()
        for sock in (listen, client):
            sock.close()


async def test_idle_flows_are_closed() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            _, port = await _udp_server(nursery, b"a")
            listen = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
            await listen.bind(("127.0.0.1", 0))
            published = listen.getsockname()
            stats = PortStats()
            route = Route("dns", published[1], "udp", (Endpoint(53, "udp", "127.0.0.1", port),))
            relay = UdpRelay(route, stats, EndpointSelector(), idle_s=0.2)
            nursery.start_soon(relay.serve, listen)
            client = await _client()
            await client.sendto(b"q", published)
            assert await client.recv(100) == b"a:q"
            assert stats.active == 1
            while stats.active:  # noqa: ASYNC110  # the relay's own expiry task clears it
                await trio.sleep(0.05)
            assert relay.table.flows == {}
            nursery.cancel_scope.cancel()
        for sock in (listen, client):
            sock.close()


async def test_the_proxy_serves_a_published_udp_port_and_frees_it_with_the_route() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            _, replica_port = await _udp_server(nursery, b"a")
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                probe.bind(("127.0.0.1", 0))
                published = probe.getsockname()[1]
            endpoint = Endpoint(53, "udp", "127.0.0.1", replica_port)
            routes = [Route("st_dns", published, "udp", (endpoint,))]
            proxy = Proxy("127.0.0.1", lambda: list(routes))
            await nursery.start(proxy.run)
            client = await _client()
            await client.sendto(b"q", ("127.0.0.1", published))
            assert await client.recv(100) == b"a:q"
            assert proxy.stats()[f"{published}/udp"]["connections"] == 1
            assert proxy.connection_counts() == {"st_dns": 1}
            routes.clear()
            proxy.notify()
            while proxy.stats():  # noqa: ASYNC110  # the proxy's own loop drops the port
                await trio.sleep(0.01)
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as again:
                again.bind(("127.0.0.1", published))  # free again
            client.close()
            nursery.cancel_scope.cancel()
