"""swarmlet.wire.transport: sealed datagrams and framed TCP streams, with real sockets on 127.0.0.1.

Every test runs under `trio.fail_after`, so a hang fails loudly. Garbage must be dropped and
counted, and must never stop the receive loops. The cluster channel is TLS with certificates from
the session's test CA (`tests/conftest.py`); the attacks on its authentication are in
`test_transport_tls.py`.
"""

from __future__ import annotations

import dataclasses
import random
import socket
import ssl
import struct
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, Protocol

import pytest
import trio
import trio.testing

from swarmlet.certs import PeerIdentity
from swarmlet.crypto import (
    AAD_GOSSIP,
    AAD_JOIN,
    AAD_TCP,
    ClusterKeys,
    JoinToken,
    Sealer,
    new_node_key,
    node_signing_key,
)
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
    MAX_FRAME_BYTES,
    Address,
    Admit,
    Counters,
    DatagramAuth,
    FramedStream,
    TlsConfig,
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


class CA(Protocol):
    """What these tests use of the `test_ca` fixture (`tests/conftest.py`)."""

    def tls(self, node_id: str, *, admit: Admit | None = None, **issue: Any) -> TlsConfig: ...


@pytest.fixture(scope="module")
def server_tls(test_ca: CA) -> TlsConfig:
    return test_ca.tls("server")


@pytest.fixture(scope="module")
def client_tls(test_ca: CA) -> TlsConfig:
    return test_ca.tls("client")


def sealed_frame(msg: Any, key: bytes = KEY, aad: bytes = AAD_JOIN) -> bytes:
    """A frame as the join channel carries it."""
    sealed = Sealer(key).seal(wire.encode(msg), aad)
    return _LEN.pack(len(sealed)) + sealed


def plain_frame(msg: Any) -> bytes:
    """A frame as the cluster channel carries it inside TLS."""
    body = wire.encode(msg)
    return _LEN.pack(len(body)) + body


# ------------------------------------------------------------------------------- UDP


@asynccontextmanager
async def udp_transport(tls: TlsConfig, key: bytes = KEY) -> AsyncIterator[Transport]:
    """A Transport with its UDP socket open. (Transport has no close: the test closes it.)"""
    transport = Transport((HOST, 0), key, tls)
    await transport.open_udp()
    try:
        yield transport
    finally:
        assert transport._udp is not None
        transport._udp.close()


@asynccontextmanager
async def udp_server(
    tls: TlsConfig, key: bytes = KEY
) -> AsyncIterator[tuple[Transport, Address, trio.MemoryReceiveChannel[tuple[Address, Any]]]]:
    async with udp_transport(tls, key) as server, trio.open_nursery() as nursery:
        assert server._udp is not None
        addr: Address = server._udp.getsockname()
        send, receive = trio.open_memory_channel[tuple[Address, Any]](100)
        nursery.start_soon(server.serve_udp, lambda a, m, _signer: send.send_nowait((a, m)))
        yield server, addr, receive
        nursery.cancel_scope.cancel()


async def test_a_datagram_round_trips_through_serve_udp(server_tls: TlsConfig) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with (
            udp_server(server_tls) as (server, addr, received),
            udp_transport(server_tls) as client,
        ):
            msg = GossipDatagram((Ping(1, "b"), Alive(2, "a", HOST, 1, b"meta")))
            assert await client.send_datagram(addr, msg)
            sender, got = await received.receive()
            assert got == msg
            assert client._udp is not None
            assert sender == client._udp.getsockname()
            assert server.counters["datagrams_in"] == 1
            assert client.counters["datagrams_out"] == 1


async def test_serve_udp_names_the_member_that_signed_a_datagram(server_tls: TlsConfig) -> None:
    """Gossip counts an accuser only in the name its datagram is signed with (`gossip.core`):
    the handler must be told who signed (a None here would take every named accuser at its
    word)."""
    key = node_signing_key(new_node_key())
    public = key.public_key().public_bytes_raw()
    got: list[tuple[Any, str | None]] = []
    arrived = trio.Event()

    def handle(_addr: Address, msg: Any, signer: str | None) -> None:
        got.append((msg, signer))
        arrived.set()

    server = Transport(
        (HOST, 0),
        KEY,
        server_tls,
        datagram_auth=DatagramAuth("server", key, {"a": public}.get),
    )
    client = Transport(
        (HOST, 0), KEY, server_tls, datagram_auth=DatagramAuth("a", key, lambda _: None)
    )
    await server.open_udp()
    await client.open_udp()
    assert server._udp is not None and client._udp is not None
    try:
        with trio.fail_after(TIMEOUT_S):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(server.serve_udp, handle)
                msg = GossipDatagram((Ping(1, "server"),))
                assert await client.send_datagram(server._udp.getsockname(), msg)
                await arrived.wait()
                nursery.cancel_scope.cancel()
    finally:
        server._udp.close()
        client._udp.close()
    assert got == [(msg, "a")]


async def test_bad_datagrams_are_dropped_counted_and_the_loop_keeps_serving(
    server_tls: TlsConfig,
) -> None:
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
        async with udp_server(server_tls) as (server, addr, received):
            sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
            with sock:
                for datagram in bad:
                    await sock.sendto(datagram, addr)
                await sock.sendto(good, addr)
                _, got = await received.receive()  # loopback keeps one sender's order
            assert got == Ack(1)
            assert server.counters["dropped_datagram_invalid"] == len(bad)
            assert server.counters["datagrams_in"] == len(bad) + 1


async def test_after_a_key_change_datagrams_under_the_old_key_are_dropped(
    server_tls: TlsConfig,
) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with (
            udp_server(server_tls) as (server, addr, received),
            udp_transport(server_tls) as client,
        ):
            server.set_key(OTHER_KEY)
            await client.send_datagram(addr, Ack(1))
            client.set_key(OTHER_KEY)
            await client.send_datagram(addr, Ack(2))
            _, got = await received.receive()
            assert got == Ack(2)
            assert server.counters["dropped_datagram_invalid"] == 1


async def test_an_oversized_datagram_is_not_sent_and_is_counted(server_tls: TlsConfig) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with udp_transport(server_tls) as client:
            huge = Alive(1, "a", HOST, 1, b"x" * 70_000)
            assert not await client.send_datagram((HOST, 9), huge)
            assert client.counters["dropped_datagram_out_oversized"] == 1
            assert client.counters["datagrams_out"] == 0


# ------------------------------------------------------------------------------- FramedStream

# The two kinds of stream a FramedStream frames: sealed with a join key (the join channel), or
# plain msgpack (the cluster channel, where TLS below it authenticates and encrypts).
SEALED = "sealed"
PLAIN = "plain"


@pytest.fixture(params=[SEALED, PLAIN])
def mode(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    return kind


def frame_of(msg: Any, mode: str) -> bytes:
    return sealed_frame(msg) if mode == SEALED else plain_frame(msg)


def make_framed(
    stream: trio.abc.Stream, mode: str, counters: Counters, **kwargs: Any
) -> FramedStream:
    sealer = Sealer(KEY) if mode == SEALED else None
    aad = AAD_JOIN if mode == SEALED else b""
    return FramedStream(stream, sealer, aad, counters, **kwargs)


def framed_pair(
    mode: str, *, max_frame_bytes: int = 1 << 20
) -> tuple[FramedStream, FramedStream, trio.abc.Stream, Counters]:
    """(sender, receiver, the receiver's raw peer stream, the receiver's counters)."""
    left, right = trio.testing.memory_stream_pair()
    counters = Counters()
    sender = make_framed(left, mode, Counters())
    receiver = make_framed(right, mode, counters, max_frame_bytes=max_frame_bytes)
    return sender, receiver, left, counters


async def test_frames_round_trip_in_order_and_are_counted(mode: str) -> None:
    with trio.fail_after(TIMEOUT_S):
        sender, receiver, _, counters = framed_pair(mode)
        msgs = [Ping(i, "x") for i in range(5)] + [Alive(1, "a", "h", 1, b"m" * 100_000)]
        for msg in msgs:
            await sender.send(msg)
        assert [await receiver.receive() for _ in msgs] == msgs
        assert counters["frames_in"] == len(msgs)
        await sender.aclose()
        assert await receiver.receive() is None  # a clean end between frames


async def test_send_many_writes_the_same_frames_as_send(mode: str) -> None:
    with trio.fail_after(TIMEOUT_S):
        sender, receiver, _, counters = framed_pair(mode)
        msgs = [Ping(i, "x") for i in range(3)]
        await sender.send_many(msgs)
        await sender.send(Ack(9))
        assert [await receiver.receive() for _ in range(4)] == [*msgs, Ack(9)]
        assert counters["frames_in"] == 4


async def test_a_frame_arriving_one_byte_at_a_time_is_reassembled(mode: str) -> None:
    with trio.fail_after(TIMEOUT_S):
        _, receiver, raw, _ = framed_pair(mode)
        data = frame_of(Ping(3, "slow"), mode) + frame_of(Ack(3), mode)
        async with trio.open_nursery() as nursery:

            async def trickle() -> None:
                for i in range(len(data)):
                    await raw.send_all(data[i : i + 1])
                    await trio.testing.wait_all_tasks_blocked()

            nursery.start_soon(trickle)
            assert await receiver.receive() == Ping(3, "slow")
            assert await receiver.receive() == Ack(3)


async def test_bytes_already_read_by_the_caller_are_used_first(mode: str) -> None:
    with trio.fail_after(TIMEOUT_S):
        left, right = trio.testing.memory_stream_pair()
        frame = frame_of(Ping(1, "a"), mode)
        receiver = make_framed(right, mode, Counters(), buffered=frame[:7])
        await left.send_all(frame[7:] + frame_of(Ack(1), mode))
        assert await receiver.receive() == Ping(1, "a")
        assert await receiver.receive() == Ack(1)


async def test_an_oversized_length_prefix_is_refused_before_reading_the_body(mode: str) -> None:
    with trio.fail_after(TIMEOUT_S):
        _, receiver, raw, counters = framed_pair(mode, max_frame_bytes=1024)
        await raw.send_all(_LEN.pack(1025))
        with pytest.raises(RemoteProtocolError, match="exceeds"):
            await receiver.receive()
        assert counters["dropped_frame_oversized"] == 1


async def test_a_frame_cut_short_by_the_end_of_the_stream_is_an_error(mode: str) -> None:
    with trio.fail_after(TIMEOUT_S):
        _, receiver, raw, counters = framed_pair(mode)
        frame = frame_of(Ping(1, "a"), mode)
        await raw.send_all(frame[:-3])
        await raw.aclose()
        with pytest.raises(RemoteProtocolError, match="inside a frame"):
            await receiver.receive()
        assert counters["dropped_frame_truncated"] == 1


async def test_a_stream_ending_inside_the_length_prefix_is_a_truncated_frame(mode: str) -> None:
    with trio.fail_after(TIMEOUT_S):
        _, receiver, raw, counters = framed_pair(mode)
        await raw.send_all(b"\x00\x00")
        await raw.aclose()
        with pytest.raises(RemoteProtocolError):
            await receiver.receive()
        assert counters["dropped_frame_truncated"] == 1


@pytest.mark.parametrize(
    ("mode", "body"),
    [
        pytest.param(
            SEALED, lambda: Sealer(OTHER_KEY).seal(wire.encode(Ack(1)), AAD_JOIN), id="other-key"
        ),
        pytest.param(
            SEALED, lambda: Sealer(KEY).seal(wire.encode(Ack(1)), AAD_GOSSIP), id="gossip-aad"
        ),
        # a frame of the old sealed cluster channel, replayed on the join channel
        pytest.param(SEALED, lambda: Sealer(KEY).seal(wire.encode(Ack(1)), AAD_TCP), id="tcp-aad"),
        pytest.param(
            SEALED, lambda: Sealer(KEY).seal(wire.encode(Ack(1)), AAD_JOIN)[:-1], id="cut-tag"
        ),
        pytest.param(SEALED, lambda: Sealer(KEY).seal(b"\xc1", AAD_JOIN), id="not-msgpack"),
        pytest.param(SEALED, lambda: bytes(40), id="zeros"),
        pytest.param(SEALED, lambda: b"", id="empty"),
        pytest.param(PLAIN, lambda: b"\xc1", id="plain-not-msgpack"),
        pytest.param(PLAIN, lambda: b"", id="plain-empty"),
        pytest.param(PLAIN, lambda: bytes(40), id="plain-trailing-bytes"),
        pytest.param(PLAIN, lambda: b"\x92\x01\x90", id="plain-bad-message"),
        pytest.param(PLAIN, lambda: wire.encode(Ack(1))[:-1], id="plain-cut-message"),
        # a sealed frame inside TLS: ciphertext is not a message
        pytest.param(
            PLAIN, lambda: Sealer(KEY).seal(wire.encode(Ack(1)), AAD_TCP), id="plain-sealed"
        ),
    ],
)
async def test_a_frame_that_fails_authentication_or_decoding_is_an_error(
    mode: str, body: Callable[[], bytes]
) -> None:
    with trio.fail_after(TIMEOUT_S):
        _, receiver, raw, counters = framed_pair(mode)
        data = body()
        await raw.send_all(_LEN.pack(len(data)) + data)
        with pytest.raises(RemoteProtocolError):
            await receiver.receive()
        assert counters["dropped_frame_invalid"] == 1
        assert counters["frames_in"] == 0


async def test_receive_honours_expect(mode: str) -> None:
    with trio.fail_after(TIMEOUT_S):
        sender, receiver, _, counters = framed_pair(mode)
        await sender.send(Ping(1, "a"))
        with pytest.raises(RemoteProtocolError):
            await receiver.receive(expect=(Ack,))
        assert counters["dropped_frame_invalid"] == 1


async def test_concurrent_sends_do_not_interleave_frames(mode: str) -> None:
    with trio.fail_after(TIMEOUT_S):
        sender, receiver, _, _ = framed_pair(mode)
        big = [Alive(i, "a", "h", 1, bytes([i]) * 50_000) for i in range(10)]
        async with trio.open_nursery() as nursery:
            for msg in big:
                nursery.start_soon(sender.send, msg)
        got: list[Any] = [await receiver.receive() for _ in big]
        assert sorted(got, key=lambda m: m.incarnation) == big


# The admission policy, asked by the stream itself (with real TLS in test_transport_tls.py).

PEER = PeerIdentity("peer", "manager", 3, 2e9, "testcluster", bytes(32))


class Policy:
    """An `admit` whose verdict the test changes: the peer as it is, a replacement, or a word."""

    def __init__(self) -> None:
        self.verdict: PeerIdentity | str | None = None
        self.asked = 0

    def __call__(self, peer: PeerIdentity) -> PeerIdentity | str:
        self.asked += 1
        return peer if self.verdict is None else self.verdict


def admitted_pair(policy: Policy) -> tuple[FramedStream, FramedStream, Counters]:
    """(the stream that knows `PEER` under `policy`, the peer's plain end, the first's counters)."""
    left, right = trio.testing.memory_stream_pair()
    counters = Counters()
    ours = FramedStream(left, None, b"", counters, peer=PEER, admit=policy)
    return ours, FramedStream(right, None, b"", Counters()), counters


def test_a_peer_refused_by_the_policy_cannot_make_a_stream() -> None:
    policy = Policy()
    policy.verdict = "removed"
    with pytest.raises(RemoteProtocolError, match="removed"):
        admitted_pair(policy)
    assert policy.asked == 1


async def test_the_policy_is_asked_before_every_frame_in_either_direction() -> None:
    with trio.fail_after(TIMEOUT_S):
        policy = Policy()
        ours, theirs, counters = admitted_pair(policy)
        await theirs.send(Ping(1, "a"))
        assert await ours.receive() == Ping(1, "a")
        await ours.send(Ack(1))
        assert await theirs.receive() == Ack(1)

        policy.verdict = "removed"
        await theirs.send(Ping(2, "a"))
        with pytest.raises(RemoteProtocolError, match="removed"):
            await ours.receive()
        with pytest.raises(RemoteProtocolError, match="removed"):
            await ours.send(Ack(2))
        with pytest.raises(RemoteProtocolError, match="removed"):
            await ours.send_many([Ack(3), Ack(4)])
        assert counters["refused_peer_removed"] == 3
        assert counters["frames_in"] == 1
        assert counters["frames_out"] == 1
        await ours.aclose()
        assert await theirs.receive() is None  # nothing was written after the refusal


async def test_the_peer_is_what_the_policy_admits_at_the_last_frame() -> None:
    with trio.fail_after(TIMEOUT_S):
        policy = Policy()
        ours, theirs, _ = admitted_pair(policy)
        assert ours.peer == PEER
        demoted = dataclasses.replace(PEER, role="worker")
        policy.verdict = demoted
        await theirs.send(Ping(1, "a"))
        await ours.receive()
        assert ours.peer == demoted
        policy.verdict = None  # asked again: the policy, not the stream, remembers demotions
        await ours.send(Ack(1))
        assert ours.peer == PEER


# ------------------------------------------------------------------------------- TCP listener


async def _echo(framed: FramedStream, _addr: Address) -> None:
    while (msg := await framed.receive()) is not None:
        await framed.send(msg)


async def _ignore_join(_stream: trio.SocketStream, _key_id: bytes, _addr: Address) -> None:
    return


@asynccontextmanager
async def tcp_server(
    tls: TlsConfig, on_join: Any = _ignore_join, *, handshake_timeout_s: float = 5.0
) -> AsyncIterator[tuple[Transport, Address]]:
    addr = (HOST, free_tcp_port())
    server = Transport(addr, KEY, tls, handshake_timeout_s=handshake_timeout_s)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve_tcp, _echo, on_join)
        yield server, addr
        nursery.cancel_scope.cancel()


async def _round_trip(addr: Address, tls: TlsConfig) -> None:
    client = Transport((HOST, 0), KEY, tls)
    framed = await client.connect(addr)
    async with framed.stream:
        await framed.send(Ping(42, "echo"))
        assert await framed.receive() == Ping(42, "echo")


async def _open_tls(addr: Address, context: ssl.SSLContext) -> trio.SSLStream[trio.SocketStream]:
    """A cluster-channel connection made by hand: the channel byte, then the TLS handshake."""
    stream = await trio.open_tcp_stream(*addr)
    await stream.send_all(CHANNEL_CLUSTER)
    secure = trio.SSLStream(stream, context, server_hostname=None)
    await secure.do_handshake()
    return secure


async def _wait_closed(stream: trio.abc.ReceiveStream) -> None:
    """Until the server closes (its handler has finished, including its counting)."""
    try:
        while await stream.receive_some(65536):
            pass
    except trio.BrokenResourceError:
        pass  # the server closed with our bytes unread (a reset), or TLS without close_notify


async def test_a_cluster_connection_round_trips_frames(
    server_tls: TlsConfig, client_tls: TlsConfig
) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with tcp_server(server_tls) as (server, addr):
            await _round_trip(addr, client_tls)
            await _round_trip(addr, client_tls)
            assert server.counters["frames_in"] == 2


async def test_frames_inside_tls_are_length_prefixed_plain_msgpack(
    server_tls: TlsConfig, client_tls: TlsConfig
) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with tcp_server(server_tls) as (server, addr):
            secure = await _open_tls(addr, client_tls.client)
            async with secure.transport_stream:
                frame = plain_frame(Ping(7, "plain"))
                await secure.send_all(frame)
                echoed = b""
                while len(echoed) < len(frame):
                    echoed += await secure.receive_some(65536)
                assert echoed == frame
            assert server.counters["frames_in"] == 1


@pytest.mark.parametrize(
    ("data", "counter"),
    [
        pytest.param(_LEN.pack(MAX_FRAME_BYTES + 1), "dropped_frame_oversized", id="oversized"),
        pytest.param(_LEN.pack(1) + b"\xc1", "dropped_frame_invalid", id="not-msgpack"),
        pytest.param(_LEN.pack(3) + b"\x92\x01\x90", "dropped_frame_invalid", id="bad-message"),
        # the frame the cluster channel carried before TLS: sealed, not a message in the clear
        pytest.param(
            sealed_frame(Ping(1, "a"), aad=AAD_TCP), "dropped_frame_invalid", id="old-sealed"
        ),
    ],
)
async def test_a_bad_frame_inside_tls_closes_only_its_connection_and_is_counted(
    server_tls: TlsConfig, client_tls: TlsConfig, data: bytes, counter: str
) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with tcp_server(server_tls) as (server, addr):
            secure = await _open_tls(addr, client_tls.client)
            async with secure.transport_stream:
                await secure.send_all(data)
                await _wait_closed(secure)
            assert server.counters[counter] == 1
            await _round_trip(addr, client_tls)
            assert server.counters["frames_in"] == 1


@pytest.mark.parametrize(
    "garbage",
    [
        pytest.param(sealed_frame(Ping(1, "a"), aad=AAD_TCP), id="old-sealed-frame"),
        pytest.param(plain_frame(Ping(1, "a")), id="plain-frame-without-tls"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", id="http"),
        pytest.param(bytes(64), id="zeros"),
    ],
)
async def test_a_cluster_connection_without_a_tls_handshake_is_refused_and_counted(
    server_tls: TlsConfig, client_tls: TlsConfig, garbage: bytes
) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with tcp_server(server_tls) as (server, addr):
            stream = await trio.open_tcp_stream(*addr)
            async with stream:
                await stream.send_all(CHANNEL_CLUSTER + garbage)
                await _wait_closed(stream)
            assert server.counters["refused_tls_handshake"] == 1
            assert server.counters["frames_in"] == 0
            await _round_trip(addr, client_tls)


async def test_a_connection_with_an_unknown_first_byte_is_dropped_and_counted(
    server_tls: TlsConfig, client_tls: TlsConfig
) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with tcp_server(server_tls) as (server, addr):
            stream = await trio.open_tcp_stream(*addr)
            async with stream:
                # "C": the cluster channel before TLS
                await stream.send_all(b"C" + sealed_frame(Ping(1, "a"), aad=AAD_TCP))
                await _wait_closed(stream)
            assert server.counters["dropped_connection_bad_channel"] == 1
            await _round_trip(addr, client_tls)


async def test_a_silent_connection_is_closed_after_the_hello_timeout(
    server_tls: TlsConfig, client_tls: TlsConfig
) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with tcp_server(server_tls, handshake_timeout_s=0.3) as (_, addr):
            stream = await trio.open_tcp_stream(*addr)
            async with stream:
                await _wait_closed(stream)
            await _round_trip(addr, client_tls)


async def test_the_join_channel_hands_the_key_id_to_the_join_handler(
    server_tls: TlsConfig,
) -> None:
    token = JoinToken.new(ClusterKeys(KEY))

    async def on_join(stream: trio.SocketStream, key_id: bytes, _addr: Address) -> None:
        if key_id != token.key_id:
            await stream.send_all(JOIN_REFUSED)
            return
        await stream.send_all(JOIN_ACCEPTED)
        framed = join_stream(stream, token.join_key, Counters())
        request = await framed.receive(expect=(JoinRequest,))
        assert isinstance(request, JoinRequest)
        assert framed.peer is None  # nobody is authenticated on the join channel
        await framed.send(JoinReply(True, name=request.name))

    with trio.fail_after(TIMEOUT_S):
        async with tcp_server(server_tls, on_join) as (_, addr):
            framed = await open_join_stream(addr, token.join_key, token.key_id)
            assert framed is not None
            async with framed.stream:
                await framed.send(JoinRequest("n", "host-9", False, "a:1", "a", 1, 2, bytes(32)))
                assert await framed.receive() == JoinReply(True, name="host-9")
            stranger = JoinToken.new(ClusterKeys(OTHER_KEY))
            assert await open_join_stream(addr, stranger.join_key, stranger.key_id) is None


async def test_a_join_connection_that_stalls_before_its_key_id_is_closed_in_time(
    server_tls: TlsConfig, client_tls: TlsConfig
) -> None:
    with trio.fail_after(3):  # ten times the handshake timeout
        async with tcp_server(server_tls, handshake_timeout_s=0.3) as (_, addr):
            stream = await trio.open_tcp_stream(*addr)
            async with stream:
                await stream.send_all(CHANNEL_JOIN + b"abc")  # 3 of the key id's 8 bytes
                await _wait_closed(stream)
            await _round_trip(addr, client_tls)


def _storm(rng: random.Random) -> list[bytes]:
    """Hostile connection payloads; each connection's writer half-closes after sending."""

    def junk(n: int) -> bytes:
        return bytes(rng.getrandbits(8) for _ in range(n))

    payloads: list[bytes] = []
    for _ in range(6):
        payloads += [
            b"",  # connect and leave
            junk(rng.randint(1, 300)),  # random bytes (usually an unknown channel)
            CHANNEL_CLUSTER,  # the channel byte, then the end of the stream
            CHANNEL_CLUSTER + junk(rng.randint(4, 300)),  # random bytes for a ClientHello
            CHANNEL_CLUSTER + b"\x16\x03\x01\xff\xff" + junk(50),  # a handshake record cut short
            CHANNEL_CLUSTER + _LEN.pack(100) + junk(50),  # a frame where TLS should be
            CHANNEL_CLUSTER + sealed_frame(Ping(1, "x"), aad=AAD_TCP),  # the old sealed channel
            CHANNEL_CLUSTER + plain_frame(Ping(1, "x")),  # a plain frame without TLS
            CHANNEL_JOIN + junk(3),  # short key id
            CHANNEL_JOIN + junk(8) + junk(40),  # unknown key id
        ]
    rng.shuffle(payloads)
    return payloads


async def test_a_storm_of_garbage_connections_does_not_stop_the_listener(
    server_tls: TlsConfig, client_tls: TlsConfig
) -> None:
    payloads = _storm(random.Random(1234))
    with trio.fail_after(TIMEOUT_S):
        async with tcp_server(server_tls) as (server, addr):

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
            await _round_trip(addr, client_tls)
            counters = server.counters
            bad_channel = sum(1 for p in payloads if p[:1] not in (b"", b"T", b"J"))
            tls = sum(1 for p in payloads if p[:1] == b"T")
            assert counters["dropped_connection_bad_channel"] == bad_channel
            assert counters["refused_tls_handshake"] == tls
            assert counters["refused_tls_handshake_timeout"] == 0
            assert counters["frames_in"] == 1  # only the good round trip


def _connect_and_reset(addr: Address) -> None:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.connect(addr)
    # closed with SO_LINGER 0: an RST, before the server's handler has run


async def test_a_connection_reset_before_it_is_handled_does_not_stop_the_listener(
    server_tls: TlsConfig, client_tls: TlsConfig
) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with tcp_server(server_tls) as (_, addr):
            _connect_and_reset(addr)
            await trio.testing.wait_all_tasks_blocked(cushion=0.05)
            await _round_trip(addr, client_tls)
