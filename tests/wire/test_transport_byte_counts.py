"""The transport counts the bytes of the datagrams it sends and receives (issue #18: gossip bytes
in and out), as they cross a real socket on 127.0.0.1: signed and sealed, garbage included."""

from __future__ import annotations

import pytest
import trio

from swarmlet.gossip.driver import GossipDatagram
from swarmlet.gossip.messages import Alive, Ping
from swarmlet.wire import codec as wire
from swarmlet.wire.transport import TlsConfig
from tests.wire.test_transport import CA, HOST, TIMEOUT_S, udp_server, udp_transport


@pytest.fixture(scope="module")
def server_tls(test_ca: CA) -> TlsConfig:
    return test_ca.tls("server")


async def test_datagram_bytes_are_counted_on_both_sides_as_sent(server_tls: TlsConfig) -> None:
    msg = GossipDatagram((Ping(1, "b"), Alive(2, "a", HOST, 1, b"meta")))
    with trio.fail_after(TIMEOUT_S):
        async with (
            udp_server(server_tls) as (server, addr, received),
            udp_transport(server_tls) as client,
        ):
            assert await client.send_datagram(addr, msg)
            assert await client.send_datagram(addr, msg)
            await received.receive()
            await received.receive()
            sent = client.counters["datagram_bytes_out"]
            # Two equal datagrams, each larger than its message: the seal's nonce and tag count.
            assert sent % 2 == 0
            assert sent // 2 > len(wire.encode(msg))
            assert server.counters["datagram_bytes_in"] == sent
            assert client.counters["datagram_bytes_in"] == 0


async def test_dropped_datagrams_count_their_bytes_in(server_tls: TlsConfig) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with (
            udp_server(server_tls) as (server, addr, received),
            udp_transport(server_tls) as client,
        ):
            with trio.socket.socket(type=trio.socket.SOCK_DGRAM) as sock:
                await sock.sendto(b"garbage", addr)
            # Then a good one from the same host: once it is through, the garbage was read.
            assert await client.send_datagram(addr, GossipDatagram((Ping(1, "b"),)))
            await received.receive()
            assert server.counters["dropped_datagram_invalid"] == 1
            good = client.counters["datagram_bytes_out"]
            assert server.counters["datagram_bytes_in"] == len(b"garbage") + good
