"""swarmlet.wire.protocol_version and its use by the transport (issue #18): the TLS handshake of
the cluster channel settles the protocol; an agent of the previous release (no ALPN at all) is
accepted both ways; a peer sharing no version is refused before any frame, on real sockets."""

from __future__ import annotations

import contextlib
import logging
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Protocol

import pytest
import trio

from swarmlet import certs
from swarmlet.errors import RemoteProtocolError
from swarmlet.gossip.messages import Ping
from swarmlet.wire import protocol_version
from swarmlet.wire.protocol_version import (
    OLDEST_PEER_PROTOCOL,
    PROTOCOL_VERSION,
    alpn_protocols,
    negotiated,
)
from swarmlet.wire.transport import CHANNEL_CLUSTER, Address, FramedStream, TlsConfig, Transport
from tests.wire.test_transport import HOST, KEY, TIMEOUT_S, free_tcp_port, plain_frame

# A release two protocol versions ahead of the window (it no longer speaks this one's), which
# lists the marker last.
NEWER_ALPN = [f"swarmlet/{PROTOCOL_VERSION + 2}", f"swarmlet/{PROTOCOL_VERSION + 1}", "swarmlet"]


class IssuingCA(Protocol):
    """What these tests use of the `test_ca` fixture (`tests/conftest.py`)."""

    ca_pem: bytes

    def issue(self, node_id: str, **issue: Any) -> tuple[Any, Any]: ...

    def tls(self, node_id: str, **issue: Any) -> TlsConfig: ...


def raw_context(
    ca: IssuingCA, node_id: str, *, server: bool, alpn: list[str] | None
) -> ssl.SSLContext:
    """A context as another release makes it: `alpn` None is the previous release (no ALPN)."""
    cert_file, key_file = ca.issue(node_id)
    context = certs.tls_context(
        server=server, ca_pem=ca.ca_pem, cert_file=cert_file, key_file=key_file
    )
    if alpn is not None:
        context.set_alpn_protocols(alpn)
    return context


def test_the_offer_is_each_version_of_the_window_newest_first_then_the_marker() -> None:
    assert (OLDEST_PEER_PROTOCOL, PROTOCOL_VERSION) == (1, 5)
    # Protocol 1 has no id: it predates ALPN.
    assert alpn_protocols() == ["swarmlet/5", "swarmlet/4", "swarmlet/3", "swarmlet/2", "swarmlet"]


@pytest.mark.parametrize(
    ("selected", "expected"),
    [
        (None, 1),  # a peer of the previous release, which sets no ALPN
        ("swarmlet/2", 2),
        ("swarmlet/3", 3),
        ("swarmlet/4", 4),
        ("swarmlet/5", 5),
        ("swarmlet", None),  # versioned, no version in common
        ("swarmlet/6", None),  # never offered: refused, not trusted
        ("swarmlet/0", None),
        ("swarmlet/x", None),
        ("h2", None),
    ],
)
def test_what_the_handshake_selected_is_the_stream_s_protocol(
    selected: str | None, expected: int | None
) -> None:
    result = negotiated(selected)
    if expected is None:
        assert isinstance(result, str) and f"1..{PROTOCOL_VERSION}" in result
    else:
        assert result == expected


@asynccontextmanager
async def current_server(
    tls: TlsConfig,
) -> AsyncIterator[tuple[Transport, Address, list[FramedStream]]]:
    """A Transport of this release that echoes frames and keeps the streams it accepted."""
    addr = (HOST, free_tcp_port())
    server = Transport(addr, KEY, tls)
    accepted: list[FramedStream] = []

    async def echo(framed: FramedStream, _addr: Address) -> None:
        accepted.append(framed)
        while (msg := await framed.receive()) is not None:
            await framed.send(msg)

    async def no_join(*_args: Any) -> None:
        return

    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve_tcp, echo, no_join)
        yield server, addr, accepted
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def other_release_server(context: ssl.SSLContext) -> AsyncIterator[Address]:
    """A cluster-channel server of another release: the channel byte, TLS, then an echo."""
    port = free_tcp_port()

    async def handle(stream: trio.SocketStream) -> None:
        async with stream:
            if await stream.receive_some(1) != CHANNEL_CLUSTER:
                return
            secure = trio.SSLStream(stream, context, server_side=True)
            try:
                await secure.do_handshake()
                while data := await secure.receive_some(65536):
                    await secure.send_all(data)
            except trio.BrokenResourceError:
                return

    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_tcp, handle, port)
        yield (HOST, port)
        nursery.cancel_scope.cancel()


async def test_two_agents_of_this_release_speak_its_protocol(test_ca: IssuingCA) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with current_server(test_ca.tls("server")) as (server, addr, accepted):
            client = Transport((HOST, 0), KEY, test_ca.tls("client"))
            framed = await client.connect(addr)
            async with framed.stream:
                await framed.send(Ping(1, "x"))
                assert await framed.receive() == Ping(1, "x")
            assert framed.peer_protocol == PROTOCOL_VERSION
            assert [s.peer_protocol for s in accepted] == [PROTOCOL_VERSION]
            for side in (client, server):
                assert side.counters[f"streams_protocol_{PROTOCOL_VERSION}"] == 1
                assert side.counters["streams_protocol_1"] == 0
            # What each side knows of the other's release, by its certificate's node id.
            assert client.peer_protocols == {"server": PROTOCOL_VERSION}
            assert server.peer_protocols == {"client": PROTOCOL_VERSION}


async def test_a_client_of_the_previous_release_is_accepted_as_protocol_1(
    test_ca: IssuingCA,
) -> None:
    old = raw_context(test_ca, "old-client", server=False, alpn=None)
    with trio.fail_after(TIMEOUT_S):
        async with current_server(test_ca.tls("server")) as (server, addr, accepted):
            stream = await trio.open_tcp_stream(*addr)
            await stream.send_all(CHANNEL_CLUSTER)
            secure = trio.SSLStream(stream, old, server_hostname=None)
            async with secure.transport_stream:
                await secure.do_handshake()
                assert secure.selected_alpn_protocol() is None
                frame = plain_frame(Ping(7, "old"))
                await secure.send_all(frame)
                echoed = b""
                while len(echoed) < len(frame):
                    echoed += await secure.receive_some(65536)
                assert echoed == frame
            assert [s.peer_protocol for s in accepted] == [1]
            assert server.counters["streams_protocol_1"] == 1
            assert server.counters["refused_peer_protocol"] == 0


async def test_a_server_of_the_previous_release_is_spoken_to_as_protocol_1(
    test_ca: IssuingCA,
) -> None:
    old = raw_context(test_ca, "old-server", server=True, alpn=None)
    with trio.fail_after(TIMEOUT_S):
        async with other_release_server(old) as addr:
            framed = await Transport((HOST, 0), KEY, test_ca.tls("client")).connect(addr)
            async with framed.stream:
                await framed.send(Ping(2, "y"))
                assert await framed.receive() == Ping(2, "y")
            assert framed.peer_protocol == 1


async def _received_until_closed(stream: trio.abc.ReceiveStream) -> bytes:
    received = b""
    try:
        while data := await stream.receive_some(65536):
            received += data
    except trio.BrokenResourceError:
        pass  # the server closed without TLS close_notify
    return received


async def test_a_newer_client_is_refused_before_any_frame_and_logged_once(
    test_ca: IssuingCA, caplog: pytest.LogCaptureFixture
) -> None:
    newer = raw_context(test_ca, "newer-node", server=False, alpn=NEWER_ALPN)
    caplog.set_level(logging.WARNING, logger="swarmlet.wire.transport")
    with trio.fail_after(TIMEOUT_S):
        async with current_server(test_ca.tls("server")) as (server, addr, accepted):
            for attempt in range(2):
                stream = await trio.open_tcp_stream(*addr)
                await stream.send_all(CHANNEL_CLUSTER)
                secure = trio.SSLStream(stream, newer, server_hostname=None)
                async with secure.transport_stream:
                    await secure.do_handshake()
                    assert secure.selected_alpn_protocol() == protocol_version.VERSIONED_MARKER
                    with contextlib.suppress(trio.BrokenResourceError):
                        await secure.send_all(plain_frame(Ping(3, "newer")))
                    assert await _received_until_closed(secure) == b""  # never echoed
                assert server.counters["refused_peer_protocol"] == attempt + 1
            assert accepted == []
            assert server.counters["frames_in"] == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "newer-node" in warnings[0] and f"1..{PROTOCOL_VERSION}" in warnings[0]


async def test_a_newer_server_is_refused_by_the_client(test_ca: IssuingCA) -> None:
    newer = raw_context(test_ca, "newer-server", server=True, alpn=NEWER_ALPN)
    client = Transport((HOST, 0), KEY, test_ca.tls("client"))
    with trio.fail_after(TIMEOUT_S):
        async with other_release_server(newer) as addr:
            with pytest.raises(RemoteProtocolError, match=r"newer-server speaks no protocol"):
                await client.connect(addr)
    assert client.counters["refused_peer_protocol"] == 1
