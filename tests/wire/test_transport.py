"""swarmlet.wire.transport: sealed datagrams and framed TCP streams, with real sockets on 127.0.0.1.

Every test runs under `trio.fail_after`, so a hang fails loudly. Garbage must be dropped and
counted, and must never stop the receive loops.
"""

from __future__ import annotations

import random
import socket
import struct
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing

from swarmlet.crypto import AAD_GOSSIP, AAD_JOIN, AAD_TCP, ClusterKeys, JoinToken, Sealer
from swarmlet.errors import RemoteProtocolError
from swarmlet.gossip.driver import GossipDatagram
from swarmlet.gossip.messages import Ack, Alive, Ping
from swarmlet.wire import codec as wire
from swarmlet.wire.peer_rpc import JoinReply, JoinRequest
from swarmlet.wire.transport import (
    CHANNEL_CLUSTER,
    CHANNEL_JOIN,
    JOIN_ACCEPTED,
    JOIN_REFUSED,
    Address,
    Counters,
    FramedStream,
    Transport,
    join_stream,
    open_join_stream,
)

KEY = bytes(range(32))
OTHER_KEY = bytes(32)
HOST = "127.0.0.1"
TIMEOUT_S = 10
_LEN = struct.Struct(">I")


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def sealed_frame(msg: Any, key: bytes = KEY, aad: bytes = AAD_TCP) -> bytes:
    sealed = Sealer(key).seal(wire.encode(msg), aad)
    return _LEN.pack(len(sealed)) + sealed


# ------------------------------------------------------------------------------- UDP


@asynccontextmanager
async def udp_transport(key: bytes = KEY) -> AsyncIterator[Transport]:
    """A Transport with its UDP socket open. (Transport has no close: the test closes it.)"""
    transport = Transport((HOST, 0), key)
    await transport.open_udp()
    try:
        yield transport
    finally:
        assert transport._udp is not None
        transport._udp.close()


@asynccontextmanager
async def udp_server(
    key: bytes = KEY,
) -> AsyncIterator[tuple[Transport, Address, trio.MemoryReceiveChannel[tuple[Address, Any]]]]:
    async with udp_transport(key) as server, trio.open_nursery() as nursery:
        assert server._udp is not None
        addr: Address = server._udp.getsockname()
        send, receive = trio.open_memory_channel[tuple[Address, Any]](100)
        nursery.start_soon(server.serve_udp, lambda a, m: send.send_nowait((a, m)))
        yield server, addr, receive
        nursery.cancel_scope.cancel()


async def test_a_datagram_round_trips_through_serve_udp() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with udp_server() as (server, addr, received), udp_transport() as client:
            msg = GossipDatagram((Ping(1, "b"), Alive(2, "a", HOST, 1, b"meta")))
            assert await client.send_datagram(addr, msg)
            sender, got = await received.receive()
            assert got == msg
            assert client._udp is not None
            assert sender == client._udp.getsockname()
            assert server.counters["datagrams_in"] == 1
            assert client.counters["datagrams_out"] == 1


async def test_bad_datagrams_are_dropped_counted_and_the_loop_keeps_serving() -> None:
    rng = random.Random(7)
    good = Sealer(KEY).seal(wire.encode(Ack(1)), AAD_GOSSIP)
    bad = [
        b"",
        b"\x00",
        bytes(rng.getrandbits(8) for _ in range(200)),  # random bytes
        good[:-1],  # truncated
        good[:20],  # shorter than nonce + tag
        Sealer(OTHER_KEY).seal(wire.encode(Ack(1)), AAD_GOSSIP),  # forged: another key
        Sealer(KEY).seal(wire.encode(Ack(1)), AAD_TCP),  # a TCP frame replayed as a datagram
        Sealer(KEY).seal(b"\xc1not msgpack", AAD_GOSSIP),  # authentic but undecodable
        Sealer(KEY).seal(b"\x92\x01\x90", AAD_GOSSIP),  # authentic msgpack, bad message
        bytes([good[0] ^ 1]) + good[1:],  # flipped nonce bit
    ]
    with trio.fail_after(TIMEOUT_S):
        async with udp_server() as (server, addr, received):
            sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
            with sock:
                for datagram in bad:
                    await sock.sendto(datagram, addr)
                await sock.sendto(good, addr)
                _, got = await received.receive()  # loopback keeps one sender's order
            assert got == Ack(1)
            assert server.counters["dropped_datagram_invalid"] == len(bad)
            assert server.counters["datagrams_in"] == len(bad) + 1


async def test_after_a_key_change_datagrams_under_the_old_key_are_dropped() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with udp_server() as (server, addr, received), udp_transport() as client:
            server.set_key(OTHER_KEY)
            await client.send_datagram(addr, Ack(1))
            client.set_key(OTHER_KEY)
            await client.send_datagram(addr, Ack(2))
            _, got = await received.receive()
            assert got == Ack(2)
            assert server.counters["dropped_datagram_invalid"] == 1


async def test_an_oversized_datagram_is_not_sent_and_is_counted() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with udp_transport() as client:
            huge = Alive(1, "a", HOST, 1, b"x" * 70_000)
            assert not await client.send_datagram((HOST, 9), huge)
            assert client.counters["dropped_datagram_out_oversized"] == 1
            assert client.counters["datagrams_out"] == 0


# ------------------------------------------------------------------------------- FramedStream


def framed_pair(
    *, max_frame_bytes: int = 1 << 20
) -> tuple[FramedStream, FramedStream, trio.abc.Stream, Counters]:
    """(sender, receiver, the receiver's raw peer stream, the receiver's counters)."""
    left, right = trio.testing.memory_stream_pair()
    counters = Counters()
    sender = FramedStream(left, Sealer(KEY), AAD_TCP, Counters())
    receiver = FramedStream(right, Sealer(KEY), AAD_TCP, counters, max_frame_bytes=max_frame_bytes)
    return sender, receiver, left, counters


async def test_frames_round_trip_in_order_and_are_counted() -> None:
    with trio.fail_after(TIMEOUT_S):
        sender, receiver, _, counters = framed_pair()
        msgs = [Ping(i, "x") for i in range(5)] + [Alive(1, "a", "h", 1, b"m" * 100_000)]
        for msg in msgs:
            await sender.send(msg)
        assert [await receiver.receive() for _ in msgs] == msgs
        assert counters["frames_in"] == len(msgs)
        await sender.aclose()
        assert await receiver.receive() is None  # a clean end between frames


async def test_a_frame_arriving_one_byte_at_a_time_is_reassembled() -> None:
    with trio.fail_after(TIMEOUT_S):
        _, receiver, raw, _ = framed_pair()
        data = sealed_frame(Ping(3, "slow")) + sealed_frame(Ack(3))
        async with trio.open_nursery() as nursery:

            async def trickle() -> None:
                for i in range(len(data)):
                    await raw.send_all(data[i : i + 1])
                    await trio.testing.wait_all_tasks_blocked()

            nursery.start_soon(trickle)
            assert await receiver.receive() == Ping(3, "slow")
            assert await receiver.receive() == Ack(3)


async def test_bytes_already_read_by_the_caller_are_used_first() -> None:
    with trio.fail_after(TIMEOUT_S):
        left, right = trio.testing.memory_stream_pair()
        frame = sealed_frame(Ping(1, "a"))
        receiver = FramedStream(right, Sealer(KEY), AAD_TCP, Counters(), buffered=frame[:7])
        await left.send_all(frame[7:] + sealed_frame(Ack(1)))
        assert await receiver.receive() == Ping(1, "a")
        assert await receiver.receive() == Ack(1)


async def test_an_oversized_length_prefix_is_refused_before_reading_the_body() -> None:
    with trio.fail_after(TIMEOUT_S):
        _, receiver, raw, counters = framed_pair(max_frame_bytes=1024)
        await raw.send_all(_LEN.pack(1025))
        with pytest.raises(RemoteProtocolError, match="exceeds"):
            await receiver.receive()
        assert counters["dropped_frame_oversized"] == 1


async def test_a_frame_cut_short_by_the_end_of_the_stream_is_an_error() -> None:
    with trio.fail_after(TIMEOUT_S):
        _, receiver, raw, counters = framed_pair()
        frame = sealed_frame(Ping(1, "a"))
        await raw.send_all(frame[:-3])
        await raw.aclose()
        with pytest.raises(RemoteProtocolError, match="inside a frame"):
            await receiver.receive()
        assert counters["dropped_frame_truncated"] == 1


async def test_a_stream_ending_inside_the_length_prefix_is_a_truncated_frame() -> None:
    with trio.fail_after(TIMEOUT_S):
        _, receiver, raw, counters = framed_pair()
        await raw.send_all(b"\x00\x00")
        await raw.aclose()
        with pytest.raises(RemoteProtocolError):
            await receiver.receive()
        assert counters["dropped_frame_truncated"] == 1


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(lambda: Sealer(OTHER_KEY).seal(wire.encode(Ack(1)), AAD_TCP), id="other-key"),
        pytest.param(lambda: Sealer(KEY).seal(wire.encode(Ack(1)), AAD_GOSSIP), id="gossip-aad"),
        pytest.param(lambda: Sealer(KEY).seal(wire.encode(Ack(1)), AAD_TCP)[:-1], id="cut-tag"),
        pytest.param(lambda: Sealer(KEY).seal(b"\xc1", AAD_TCP), id="not-msgpack"),
        pytest.param(lambda: bytes(40), id="zeros"),
        pytest.param(lambda: b"", id="empty"),
    ],
)
async def test_a_frame_that_fails_authentication_or_decoding_is_an_error(
    body: Callable[[], bytes],
) -> None:
    with trio.fail_after(TIMEOUT_S):
        _, receiver, raw, counters = framed_pair()
        data = body()
        await raw.send_all(_LEN.pack(len(data)) + data)
        with pytest.raises(RemoteProtocolError):
            await receiver.receive()
        assert counters["dropped_frame_invalid"] == 1
        assert counters["frames_in"] == 0


async def test_receive_honours_expect() -> None:
    with trio.fail_after(TIMEOUT_S):
        sender, receiver, _, counters = framed_pair()
        await sender.send(Ping(1, "a"))
        with pytest.raises(RemoteProtocolError):
            await receiver.receive(expect=(Ack,))
        assert counters["dropped_frame_invalid"] == 1


async def test_concurrent_sends_do_not_interleave_frames() -> None:
    with trio.fail_after(TIMEOUT_S):
        sender, receiver, _, _ = framed_pair()
        big = [Alive(i, "a", "h", 1, bytes([i]) * 50_000) for i in range(10)]
        async with trio.open_nursery() as nursery:
            for msg in big:
                nursery.start_soon(sender.send, msg)
        got: list[Any] = [await receiver.receive() for _ in big]
        assert sorted(got, key=lambda m: m.incarnation) == big


# ------------------------------------------------------------------------------- TCP listener


async def _echo(framed: FramedStream, _addr: Address) -> None:
    while (msg := await framed.receive()) is not None:
        await framed.send(msg)


async def _ignore_join(_stream: trio.SocketStream, _key_id: bytes, _addr: Address) -> None:
    return


@asynccontextmanager
async def tcp_server(
    on_join: Any = _ignore_join, *, connect_timeout_s: float = 2.0
) -> AsyncIterator[tuple[Transport, Address]]:
    addr = (HOST, free_tcp_port())
    server = Transport(addr, KEY, connect_timeout_s=connect_timeout_s)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve_tcp, _echo, on_join)
        yield server, addr
        nursery.cancel_scope.cancel()


async def _round_trip(addr: Address) -> None:
    client = Transport((HOST, 0), KEY)
    framed = await client.connect(addr)
    async with framed.stream:
        await framed.send(Ping(42, "echo"))
        assert await framed.receive() == Ping(42, "echo")


async def _wait_closed(stream: trio.SocketStream) -> None:
    """Until the server closes (its handler has finished, including its counting)."""
    try:
        while await stream.receive_some(65536):
            pass
    except trio.BrokenResourceError:
        pass  # the server closed with our bytes unread: a reset


async def test_a_cluster_connection_round_trips_frames() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with tcp_server() as (server, addr):
            await _round_trip(addr)
            await _round_trip(addr)
            assert server.counters["frames_in"] == 2


async def test_a_connection_with_an_unknown_first_byte_is_dropped_and_counted() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with tcp_server() as (server, addr):
            stream = await trio.open_tcp_stream(*addr)
            async with stream:
                await stream.send_all(b"X" + sealed_frame(Ping(1, "a")))
                await _wait_closed(stream)
            assert server.counters["dropped_connection_bad_channel"] == 1
            await _round_trip(addr)


async def test_a_silent_connection_is_closed_after_the_hello_timeout() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with tcp_server(connect_timeout_s=0.05) as (_, addr):
            stream = await trio.open_tcp_stream(*addr)
            async with stream:
                await _wait_closed(stream)
            await _round_trip(addr)


async def test_the_join_channel_hands_the_key_id_to_the_join_handler() -> None:
    token = JoinToken.new(ClusterKeys(KEY))

    async def on_join(stream: trio.SocketStream, key_id: bytes, _addr: Address) -> None:
        if key_id != token.key_id:
            await stream.send_all(JOIN_REFUSED)
            return
        await stream.send_all(JOIN_ACCEPTED)
        framed = join_stream(stream, token.join_key, Counters())
        request = await framed.receive(expect=(JoinRequest,))
        assert isinstance(request, JoinRequest)
        await framed.send(JoinReply(True, name=request.name))

    with trio.fail_after(TIMEOUT_S):
        async with tcp_server(on_join) as (_, addr):
            framed = await open_join_stream(addr, token.join_key, token.key_id)
            assert framed is not None
            async with framed.stream:
                await framed.send(JoinRequest("n", "host-9", False, "a:1", "a", 1, 2, bytes(32)))
                assert await framed.receive() == JoinReply(True, name="host-9")
            stranger = JoinToken.new(ClusterKeys(OTHER_KEY))
            assert await open_join_stream(addr, stranger.join_key, stranger.key_id) is None


def _storm(rng: random.Random) -> list[bytes]:
    """Hostile connection payloads; each connection's writer half-closes after sending."""

    def junk(n: int) -> bytes:
        return bytes(rng.getrandbits(8) for _ in range(n))

    payloads: list[bytes] = []
    for _ in range(6):
        payloads += [
            b"",  # connect and leave
            junk(rng.randint(1, 300)),  # random bytes (usually an unknown channel)
            CHANNEL_CLUSTER + junk(rng.randint(4, 300)),  # random frames
            CHANNEL_CLUSTER + _LEN.pack(100) + junk(50),  # truncated frame
            CHANNEL_CLUSTER + _LEN.pack(60) + junk(60),  # forged frame
            CHANNEL_CLUSTER + sealed_frame(Ping(1, "x"), key=OTHER_KEY),  # another cluster's
            CHANNEL_CLUSTER + sealed_frame(Ping(1, "x"), aad=AAD_JOIN),  # wrong channel
            CHANNEL_JOIN + junk(3),  # short key id
            CHANNEL_JOIN + junk(8) + junk(40),  # unknown key id
        ]
    rng.shuffle(payloads)
    return payloads


async def test_a_storm_of_garbage_connections_does_not_stop_the_listener() -> None:
    payloads = _storm(random.Random(1234))
    with trio.fail_after(TIMEOUT_S):
        async with tcp_server() as (server, addr):

            async def attack(payload: bytes) -> None:
                stream = await trio.open_tcp_stream(*addr)
                async with stream:
                    try:
                        await stream.send_all(payload)
                        await stream.send_eof()
                    except trio.BrokenResourceError:
                        pass
                    await _wait_closed(stream)

            async with trio.open_nursery() as nursery:
                for payload in payloads:
                    nursery.start_soon(attack, payload)
            await _round_trip(addr)
            counters = server.counters
            bad_channel = sum(1 for p in payloads if p[:1] not in (b"", b"C", b"J"))
            frames = sum(1 for p in payloads if p[:1] == b"C")
            assert counters["dropped_connection_bad_channel"] == bad_channel
            dropped_frames = (
                counters["dropped_frame_oversized"]
                + counters["dropped_frame_truncated"]
                + counters["dropped_frame_invalid"]
            )
            assert dropped_frames == frames
            assert counters["frames_in"] == 1  # only the good round trip


def _connect_and_reset(addr: Address) -> None:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.connect(addr)
    # closed with SO_LINGER 0: an RST, before the server's handler has run


async def test_a_connection_reset_before_it_is_handled_does_not_stop_the_listener() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with tcp_server() as (_, addr):
            _connect_and_reset(addr)
            await trio.testing.wait_all_tasks_blocked(cushion=0.05)
            await _round_trip(addr)
