"""The cluster channel's authentication under attack, with real sockets and real TLS on 127.0.0.1.

Each attack must be refused, counted under its own name, and leave the listener serving the next
legitimate client. Certificates come from the session's test CA (`tests/conftest.py`); a second,
foreign CA is made here. Every test runs under `trio.fail_after`: where a timeout is what closes
a connection, the test waits for the close and never measures how long it took.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import random
import socket
import ssl
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Protocol

import pytest
import trio
import trio.testing

from swarmlet.certs import PeerIdentity
from swarmlet.errors import RemoteProtocolError
from swarmlet.gossip.messages import Ack, Ping
from swarmlet.state.model import TaskState
from swarmlet.state.observed import Endpoint, StatusReport, TaskObservation
from swarmlet.wire import codec as wire
from swarmlet.wire.transport import (
    CHANNEL_CLUSTER,
    MAX_FRAME_BYTES,
    MAX_NON_MANAGER_FRAME_BYTES,
    MAX_SNAPSHOT_FRAME_BYTES,
    Address,
    Admit,
    Counters,
    FramedStream,
    StreamHandler,
    TlsConfig,
    Transport,
)

KEY = bytes(range(32))
HOST = "127.0.0.1"
TIMEOUT_S = 10
BYE = Ack(0)  # asks `_echo` to end the connection


class CA(Protocol):
    """What these tests use of the `test_ca` fixture (`tests/conftest.py`)."""

    root: Path
    cluster_id: str

    def __init__(self, root: Path) -> None: ...  # a fresh CA key

    def issue(self, node_id: str, **issue: Any) -> tuple[Path, Path]: ...

    def tls(self, node_id: str, *, admit: Admit | None = None, **issue: Any) -> TlsConfig: ...


def another_ca(test_ca: CA, root: Path) -> CA:
    """A second CA of the fixture's class (a test module imports no other): a fresh key."""
    ca: CA = type(test_ca)(root)
    return ca


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


async def _echo(framed: FramedStream, _addr: Address) -> None:
    while (msg := await framed.receive()) is not None:
        if msg == BYE:
            return
        await framed.send(msg)


async def _ignore_join(_stream: trio.SocketStream, _key_id: bytes, _addr: Address) -> None:
    return


@dataclasses.dataclass
class Server:
    transport: Transport
    addr: Address
    accepted: list[PeerIdentity | None]  # the peer of each stream handed to the handler

    @property
    def counters(self) -> Counters:
        return self.transport.counters


@asynccontextmanager
async def serve(
    tls: TlsConfig, handler: StreamHandler = _echo, **options: Any
) -> AsyncIterator[Server]:
    server = Server(Transport((HOST, free_tcp_port()), KEY, tls, **options), ("", 0), [])
    server.addr = server.transport.bind

    async def on_stream(framed: FramedStream, addr: Address) -> None:
        server.accepted.append(framed.peer)
        await handler(framed, addr)

    async with trio.open_nursery() as nursery:
        await nursery.start(server.transport.serve_tcp, on_stream, _ignore_join)
        yield server
        nursery.cancel_scope.cancel()


def hand_over(send: trio.MemorySendChannel[FramedStream]) -> StreamHandler:
    """A handler that gives the server's end of each stream to the test and keeps it open."""

    async def handler(framed: FramedStream, _addr: Address) -> None:
        await send.send(framed)
        await trio.sleep_forever()

    return handler


async def _round_trip(addr: Address, tls: TlsConfig, node_id: str | None = None) -> None:
    """A legitimate client is served."""
    framed = await Transport((HOST, 0), KEY, tls).connect(addr, node_id)
    async with framed.stream:
        await framed.send(Ping(42, "echo"))
        assert await framed.receive() == Ping(42, "echo")


async def _wait_closed(stream: trio.abc.ReceiveStream) -> None:
    """Until the server closes (its handler has finished, including its counting)."""
    try:
        while await stream.receive_some(65536):
            pass
    except trio.BrokenResourceError:
        pass  # a reset, a TLS alert, or TLS closed without close_notify


def _rogue_context(
    cert: tuple[Path, Path] | None = None, *, maximum_version: ssl.TLSVersion | None = None
) -> ssl.SSLContext:
    """A client that checks nothing about the server and presents `cert` (or none): what an
    attacker brings, so only the server's checks stand between it and the cluster."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if maximum_version is not None:
        ctx.maximum_version = maximum_version
    if cert is not None:
        ctx.load_cert_chain(*cert)
    return ctx


async def _attempt(addr: Address, context: ssl.SSLContext) -> None:
    """Connect on the cluster channel with `context`; if the client's side of the handshake
    completes (in TLS 1.3 it does before the server has checked the client), send a frame;
    then wait until the server closes."""
    stream = await trio.open_tcp_stream(*addr)
    async with stream:
        await stream.send_all(CHANNEL_CLUSTER)
        secure = trio.SSLStream(stream, context, server_hostname=None)
        try:
            await secure.do_handshake()
            body = wire.encode(Ping(1, "intruder"))
            await secure.send_all(len(body).to_bytes(4, "big") + body)
        except trio.BrokenResourceError:
            return
        await _wait_closed(secure)


def _client_hello() -> bytes:
    """The bytes of a real TLS 1.3 ClientHello."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = _rogue_context().wrap_bio(incoming, outgoing, server_side=False)
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def _assert_nothing_got_through(server: Server) -> None:
    assert server.accepted == []
    assert server.counters["frames_in"] == 0


# ------------------------------------------------------------------------------- certificates


async def test_a_client_without_a_certificate_is_refused_in_the_handshake(test_ca: CA) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with serve(test_ca.tls("server")) as server:
            await _attempt(server.addr, _rogue_context())
            assert server.counters["refused_tls_handshake"] == 1
            _assert_nothing_got_through(server)
            await _round_trip(server.addr, test_ca.tls("client"))


async def test_a_client_certificate_from_another_ca_is_refused_in_the_handshake(
    test_ca: CA, tmp_path: Path
) -> None:
    # Same cluster id and node names, another CA key: only the signature tells them apart.
    foreign_ca = another_ca(test_ca, tmp_path)
    with trio.fail_after(TIMEOUT_S):
        async with serve(test_ca.tls("server")) as server:
            await _attempt(server.addr, _rogue_context(foreign_ca.issue("client")))
            assert server.counters["refused_tls_handshake"] == 1
            _assert_nothing_got_through(server)
            await _round_trip(server.addr, test_ca.tls("client"))


async def test_a_server_certificate_from_another_ca_is_refused_by_the_client(
    test_ca: CA, tmp_path: Path
) -> None:
    foreign_ca = another_ca(test_ca, tmp_path)
    with trio.fail_after(TIMEOUT_S):
        async with serve(foreign_ca.tls("server")) as impostor:
            client = Transport((HOST, 0), KEY, test_ca.tls("client"))
            with pytest.raises(trio.BrokenResourceError):
                await client.connect(impostor.addr, "server")
            assert impostor.accepted == []


async def test_an_expired_client_certificate_is_refused_in_the_handshake(test_ca: CA) -> None:
    lifetime_s = 3600.0
    expired = test_ca.tls("late", lifetime_s=lifetime_s, now=time.time() - 2 * lifetime_s)
    with trio.fail_after(TIMEOUT_S):
        async with serve(test_ca.tls("server")) as server:
            await _attempt(server.addr, expired.client)
            assert server.counters["refused_tls_handshake"] == 1
            _assert_nothing_got_through(server)
            await _round_trip(server.addr, test_ca.tls("late"))


async def test_an_expired_server_certificate_is_refused_by_the_client(test_ca: CA) -> None:
    lifetime_s = 3600.0
    expired = test_ca.tls("server", lifetime_s=lifetime_s, now=time.time() - 2 * lifetime_s)
    with trio.fail_after(TIMEOUT_S):
        async with serve(expired) as server:
            client = Transport((HOST, 0), KEY, test_ca.tls("client"))
            with pytest.raises(trio.BrokenResourceError):
                await client.connect(server.addr, "server")
            assert server.accepted == []


async def test_a_tls_1_2_client_is_refused_in_the_handshake(test_ca: CA) -> None:
    old = _rogue_context(test_ca.issue("client"), maximum_version=ssl.TLSVersion.TLSv1_2)
    with trio.fail_after(TIMEOUT_S):
        async with serve(test_ca.tls("server")) as server:
            await _attempt(server.addr, old)
            assert server.counters["refused_tls_handshake"] == 1
            _assert_nothing_got_through(server)
            await _round_trip(server.addr, test_ca.tls("client"))


async def test_a_certificate_of_another_cluster_is_refused_by_the_policy(
    test_ca: CA, tmp_path: Path
) -> None:
    # The same CA key vouching for another cluster id: TLS accepts it, the policy must not.
    other = copy.copy(test_ca)
    other.root = tmp_path
    other.cluster_id = "other"

    def admit(peer: PeerIdentity) -> PeerIdentity | str:
        return peer if peer.cluster_id == test_ca.cluster_id else "other_cluster"

    with trio.fail_after(TIMEOUT_S):
        async with serve(test_ca.tls("server", admit=admit)) as server:
            intruder = await Transport((HOST, 0), KEY, other.tls("client")).connect(server.addr)
            assert intruder.peer is not None and intruder.peer.node_id == "server"
            async with intruder.stream:
                with contextlib.suppress(trio.BrokenResourceError):
                    await intruder.send(Ping(1, "intruder"))
                await _wait_closed(intruder.stream)
            assert server.counters["refused_peer_other_cluster"] == 1
            assert server.counters["refused_tls_handshake"] == 0  # the CA did sign it
            _assert_nothing_got_through(server)
            await _round_trip(server.addr, test_ca.tls("client"))


async def test_a_client_refuses_a_server_its_policy_refuses(test_ca: CA) -> None:
    def admit(peer: PeerIdentity) -> PeerIdentity | str:
        return "removed" if peer.node_id == "server" else peer

    with trio.fail_after(TIMEOUT_S):
        async with serve(test_ca.tls("server")) as server:
            client = Transport((HOST, 0), KEY, test_ca.tls("client", admit=admit))
            with pytest.raises(RemoteProtocolError, match="removed"):
                await client.connect(server.addr, "server")
            assert client.counters["refused_peer_removed"] == 1
            assert client.counters["frames_out"] == 0
            await _round_trip(server.addr, test_ca.tls("client"))


async def test_connect_refuses_a_server_that_is_not_the_node_asked_for(test_ca: CA) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with serve(test_ca.tls("a")) as server:
            client = Transport((HOST, 0), KEY, test_ca.tls("client"))
            with pytest.raises(RemoteProtocolError, match="is a, not b"):
                await client.connect(server.addr, node_id="b")
            assert client.counters["refused_peer_wrong_node"] == 1
            await _round_trip(server.addr, test_ca.tls("client"), node_id="a")
            assert client.counters["refused_peer_wrong_node"] == 1
            assert server.counters["frames_in"] == 1


async def test_connect_to_a_manager_refuses_a_worker_whatever_it_gossips(test_ca: CA) -> None:
    """A worker's metadata may say manager (it signs its own); its certificate, from the
    cluster's CA, cannot. A new worker asking such a "manager" for its view was served
    whatever the impostor liked."""
    with trio.fail_after(TIMEOUT_S):
        async with (
            serve(test_ca.tls("w9", role="worker")) as worker,
            serve(test_ca.tls("m1", role="manager")) as manager,
        ):
            client = Transport((HOST, 0), KEY, test_ca.tls("client", role="worker"))
            with pytest.raises(RemoteProtocolError, match="w9 is not a manager"):
                await client.connect(worker.addr, node_id="w9", manager=True)
            assert client.counters["refused_peer_not_manager"] == 1
            assert worker.counters["frames_in"] == 0
            stream = await client.connect(manager.addr, node_id="m1", manager=True)
            await stream.aclose()
            stream = await client.connect(worker.addr, node_id="w9")  # as a peer, it is one
            await stream.aclose()
            assert client.counters["refused_peer_not_manager"] == 1


async def test_connect_to_a_manager_refuses_a_demoted_managers_old_certificate(test_ca: CA) -> None:
    """Its certificate says manager until it expires; the policy, from the state, says it was
    demoted: the role that counts is the one admitted."""

    def demoted(peer: PeerIdentity) -> PeerIdentity:
        return dataclasses.replace(peer, role="worker") if peer.node_id == "m1" else peer

    with trio.fail_after(TIMEOUT_S):
        async with serve(test_ca.tls("m1", role="manager")) as old_manager:
            client = Transport((HOST, 0), KEY, test_ca.tls("client", admit=demoted))
            with pytest.raises(RemoteProtocolError, match="m1 is not a manager"):
                await client.connect(old_manager.addr, node_id="m1", manager=True)
            assert client.counters["refused_peer_not_manager"] == 1


# ------------------------------------------------------------------------------- the policy


async def test_a_peer_revoked_mid_connection_is_cut_off_in_both_directions(test_ca: CA) -> None:
    revoked: set[str] = set()

    def admit(peer: PeerIdentity) -> PeerIdentity | str:
        return "removed" if peer.node_id in revoked else peer

    send, streams = trio.open_memory_channel[FramedStream](4)
    with trio.fail_after(TIMEOUT_S):
        async with serve(test_ca.tls("server", admit=admit), hand_over(send)) as server:
            worker = Transport((HOST, 0), KEY, test_ca.tls("worker-1"))
            near = await worker.connect(server.addr, "server")
            async with near.stream:
                far = await streams.receive()
                assert far.peer is not None and far.peer.node_id == "worker-1"
                await near.send(Ping(1, "a"))
                assert await far.receive() == Ping(1, "a")
                await far.send(Ack(1))
                assert await near.receive() == Ack(1)

                revoked.add("worker-1")  # `node rm`, applied while the connection is open
                await near.send(Ping(2, "a"))
                with pytest.raises(RemoteProtocolError, match="removed"):
                    await far.receive()
                with pytest.raises(RemoteProtocolError, match="removed"):
                    await far.send(Ack(2))
                with pytest.raises(RemoteProtocolError, match="removed"):
                    await far.send_many([Ack(3)])
                assert server.counters["refused_peer_removed"] == 3
                assert server.counters["frames_in"] == 1
                assert server.counters["frames_out"] == 1

            # Nor can it come back on a new connection.
            with contextlib.suppress(trio.BrokenResourceError):
                again = await worker.connect(server.addr, "server")
                async with again.stream:
                    await _wait_closed(again.stream)
            assert server.counters["refused_peer_removed"] == 4
            assert [p.node_id for p in server.accepted if p is not None] == ["worker-1"]

            # Everyone else is still served.
            near = await Transport((HOST, 0), KEY, test_ca.tls("worker-2")).connect(server.addr)
            async with near.stream:
                far = await streams.receive()
                await near.send(Ping(3, "b"))
                assert await far.receive() == Ping(3, "b")


async def test_the_stream_peer_is_the_identity_the_policy_admits(test_ca: CA) -> None:
    certified: list[PeerIdentity] = []

    def admit(peer: PeerIdentity) -> PeerIdentity | str:
        certified.append(peer)
        # e.g. a manager certificate issued before a demotion the state has applied since
        return dataclasses.replace(peer, role="worker") if peer.node_id == "demoted" else peer

    send, streams = trio.open_memory_channel[FramedStream](4)
    with trio.fail_after(TIMEOUT_S):
        async with serve(test_ca.tls("server", admit=admit), hand_over(send)) as server:
            steady = await Transport(
                (HOST, 0), KEY, test_ca.tls("steady", role="manager", generation=4)
            ).connect(server.addr)
            demoted = await Transport(
                (HOST, 0), KEY, test_ca.tls("demoted", role="manager", generation=2)
            ).connect(server.addr)
            async with steady.stream, demoted.stream:
                far_steady = await streams.receive()
                far_demoted = await streams.receive()
                assert far_steady.peer is not None
                assert (far_steady.peer.node_id, far_steady.peer.role) == ("steady", "manager")
                assert (far_steady.peer.generation, far_steady.peer.cluster_id) == (
                    4,
                    test_ca.cluster_id,
                )
                assert far_demoted.peer is not None
                assert (far_demoted.peer.node_id, far_demoted.peer.role) == ("demoted", "worker")
                await demoted.send(Ping(1, "d"))
                assert await far_demoted.receive() == Ping(1, "d")
                assert far_demoted.peer.role == "worker"
                # The certificate said manager; the policy is what lowered it.
                assert {(p.node_id, p.role) for p in certified} == {
                    ("steady", "manager"),
                    ("demoted", "manager"),
                }
                assert demoted.peer is not None and demoted.peer.node_id == "server"
            assert len(server.accepted) == 2


# --------------------------------------------------------------------------- before the handshake


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(CHANNEL_CLUSTER, id="channel-byte-only"),
        pytest.param(CHANNEL_CLUSTER + _client_hello()[:20], id="part-of-a-client-hello"),
    ],
)
async def test_a_stalled_handshake_is_closed_after_the_handshake_timeout(
    test_ca: CA, payload: bytes
) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with serve(test_ca.tls("server"), handshake_timeout_s=0.3) as server:
            stream = await trio.open_tcp_stream(*server.addr)
            async with stream:
                await stream.send_all(payload)
                await _wait_closed(stream)  # the server closes it: the test does not
            assert server.counters["refused_tls_handshake_timeout"] == 1
            assert server.counters["refused_tls_handshake"] == 0
            _assert_nothing_got_through(server)
            await _round_trip(server.addr, test_ca.tls("client"))


async def test_connections_beyond_the_cap_are_closed_at_once_and_counted(test_ca: CA) -> None:
    client_tls = test_ca.tls("client")
    with trio.fail_after(TIMEOUT_S):
        # A handshake timeout far beyond the test's deadline: only the cap can close the extras.
        async with serve(
            test_ca.tls("server"), max_connections=3, handshake_timeout_s=3600
        ) as server:
            holders = [
                await Transport((HOST, 0), KEY, client_tls).connect(server.addr) for _ in range(3)
            ]
            for holder in holders:  # each served: its handler holds one of the three places
                await holder.send(Ping(1, "hold"))
                assert await holder.receive() == Ping(1, "hold")

            for _ in range(2):
                extra = await trio.open_tcp_stream(*server.addr)
                async with extra:
                    await _wait_closed(extra)
            with pytest.raises(trio.BrokenResourceError):
                await Transport((HOST, 0), KEY, client_tls).connect(server.addr)
            assert server.counters["refused_connection_limit"] == 3
            assert server.counters["refused_tls_handshake"] == 0

            for holder in holders:
                async with holder.stream:
                    await holder.send(BYE)
                    await _wait_closed(holder.stream)  # its place is free once it is closed
            await _round_trip(server.addr, client_tls)
            assert server.counters["refused_connection_limit"] == 3


async def test_one_address_holds_at_most_its_share_of_unauthenticated_connections(
    test_ca: CA,
) -> None:
    """Anyone who can reach the port may start a handshake and stall in it: from one address,
    without credentials, that held every one of the 1,024 connections (a fresh one every 5 s)."""
    with trio.fail_after(TIMEOUT_S):
        async with serve(
            test_ca.tls("server"), max_handshakes_per_ip=2, handshake_timeout_s=3600
        ) as server:
            stalled = [await trio.open_tcp_stream(*server.addr) for _ in "ab"]
            # Until both are accepted and wait in their handshake (the server has no event).
            while server.transport._greeting.held(HOST) != 2:  # noqa: ASYNC110
                await trio.sleep(0.01)
            extra = await trio.open_tcp_stream(*server.addr)
            async with extra:
                await _wait_closed(extra)
            assert server.counters["refused_connection_limit_ip"] == 1
            other = Transport(("127.0.0.2", 0), KEY, test_ca.tls("client"))
            framed = await other.connect(server.addr)  # another address is served
            async with framed.stream:
                await framed.send(Ping(1, "x"))
                assert await framed.receive() == Ping(1, "x")
            for stream in stalled:
                await stream.aclose()
            while server.transport._greeting.held(HOST):  # noqa: ASYNC110
                await trio.sleep(0.01)
            await _round_trip(server.addr, test_ca.tls("client"))  # free again once they went
            assert server.counters["refused_connection_limit_ip"] == 1


async def test_one_node_holds_at_most_its_share_of_the_connections(test_ca: CA) -> None:
    """Otherwise one member (a compromised worker) could hold all of them, and no Raft stream,
    session or report could connect."""
    greedy, other = test_ca.tls("w9", role="worker"), test_ca.tls("m2", role="manager")
    with trio.fail_after(TIMEOUT_S):
        async with serve(test_ca.tls("server"), max_connections_per_node=2) as server:
            holders = [await Transport((HOST, 0), KEY, greedy).connect(server.addr) for _ in "ab"]
            for holder in holders:
                await holder.send(Ping(1, "hold"))
                assert await holder.receive() == Ping(1, "hold")
            third = await Transport((HOST, 0), KEY, greedy).connect(server.addr)
            async with third.stream:
                await _wait_closed(third.stream)
            assert server.counters["refused_connection_limit_node"] == 1
            await _round_trip(server.addr, other)  # another node is served
            for holder in holders:
                async with holder.stream:
                    await holder.send(BYE)
                    await _wait_closed(holder.stream)
            await _round_trip(server.addr, greedy)  # its places are free once closed
            assert server.counters["refused_connection_limit_node"] == 1
            managers = [await Transport((HOST, 0), KEY, other).connect(server.addr) for _ in "abc"]
            for held in managers:  # a manager is not held to the share (logs of many tasks)
                await held.send(Ping(2, "held"))
                assert await held.receive() == Ping(2, "held")
                await held.aclose()
            assert server.counters["refused_connection_limit_node"] == 1


@pytest.mark.parametrize(("role", "refused"), [("worker", True), ("manager", False)])
async def test_a_frame_over_the_non_managers_limit_is_refused_from_a_non_manager(
    test_ca: CA, role: str, refused: bool
) -> None:
    """Snapshots, the only frames of tens of MiB, come from managers."""
    big = Ping(1, "x" * (MAX_NON_MANAGER_FRAME_BYTES + 16))
    with trio.fail_after(TIMEOUT_S):
        async with serve(test_ca.tls("server")) as server:
            client = await Transport((HOST, 0), KEY, test_ca.tls("c1", role=role)).connect(
                server.addr
            )
            async with client.stream:
                with contextlib.suppress(trio.BrokenResourceError):
                    await client.send(big)
                if refused:
                    await _wait_closed(client.stream)
                else:
                    assert await client.receive() == big
            assert server.counters["dropped_frame_oversized"] == int(refused)


def _taking_snapshots(allow: bool, sizes: list[int]) -> StreamHandler:
    """A handler that allows snapshots on its stream if `allow` (as Raft's does) and notes the
    size of each frame's text; it answers only the last one (`BYE`)."""

    async def handler(framed: FramedStream, _addr: Address) -> None:
        if allow:
            framed.allow_snapshots()
        while (msg := await framed.receive()) is not None:
            if msg == BYE:
                await framed.send(BYE)
                return
            sizes.append(len(msg.target))

    return handler


@pytest.mark.parametrize(
    ("role", "allow", "refused"),
    [
        ("manager", True, False),  # a leader's InstallSnapshot, on its Raft stream
        ("manager", False, True),  # any other stream, even from a manager
        ("worker", True, True),  # a worker on a Raft stream: its own, smaller limit
    ],
)
async def test_a_frame_past_64_mib_is_taken_only_from_a_manager_on_a_stream_that_allows_it(
    test_ca: CA, role: str, allow: bool, refused: bool
) -> None:
    big = Ping(1, "x" * (MAX_FRAME_BYTES + 1024))
    sizes: list[int] = []
    with trio.fail_after(TIMEOUT_S * 3):
        async with serve(test_ca.tls("server"), _taking_snapshots(allow, sizes)) as server:
            client = await Transport((HOST, 0), KEY, test_ca.tls("c1", role=role)).connect(
                server.addr
            )
            async with client.stream:
                with contextlib.suppress(trio.BrokenResourceError):
                    await client.send(big)
                    await client.send(BYE)
                if refused:
                    await _wait_closed(client.stream)
                else:
                    assert await client.receive() == BYE
            assert sizes == ([] if refused else [len(big.target)])
            assert server.counters["dropped_frame_oversized"] == int(refused)


async def test_a_manager_demoted_on_an_open_raft_stream_is_held_to_a_workers_frames(
    test_ca: CA,
) -> None:
    # Admitted again at the next frame's length, not after its body: before, the limit came from
    # the role admitted at the last frame, and one frame of up to 512 MiB was read and decoded.
    demoted: set[str] = set()

    def admit(peer: PeerIdentity) -> PeerIdentity:
        return dataclasses.replace(peer, role="worker") if peer.node_id in demoted else peer

    sizes: list[int] = []
    handler = _taking_snapshots(True, sizes)
    with trio.fail_after(TIMEOUT_S):
        async with serve(test_ca.tls("server", admit=admit), handler) as server:
            client = await Transport((HOST, 0), KEY, test_ca.tls("m1")).connect(server.addr)
            async with client.stream:
                await client.send(Ping(1, "small"))
                await trio.testing.wait_all_tasks_blocked(cushion=0.05)
                assert sizes == [len("small")]  # taken, the peer admitted after it as a manager
                demoted.add("m1")
                with contextlib.suppress(trio.BrokenResourceError):
                    await client.send(Ping(2, "x" * (MAX_NON_MANAGER_FRAME_BYTES + 16)))
                    await client.send(BYE)
                await _wait_closed(client.stream)
            assert sizes == [len("small")]
            assert server.counters["dropped_frame_oversized"] == 1


async def test_a_frame_past_the_snapshot_limit_is_refused_before_it_is_read(test_ca: CA) -> None:
    sizes: list[int] = []
    with trio.fail_after(TIMEOUT_S):
        async with serve(test_ca.tls("server"), _taking_snapshots(True, sizes)) as server:
            client = await Transport((HOST, 0), KEY, test_ca.tls("c1")).connect(server.addr)
            async with client.stream:
                # Only the length: the server must not wait for (or make room for) the body.
                await client.stream.send_all((MAX_SNAPSHOT_FRAME_BYTES + 1).to_bytes(4, "big"))
                await _wait_closed(client.stream)
            assert server.counters["dropped_frame_oversized"] == 1
            assert sizes == []


def _random_payloads(rng: random.Random) -> list[bytes]:
    hello = _client_hello()

    def junk(n: int) -> bytes:
        return bytes(rng.getrandbits(8) for _ in range(n))

    def mutated(data: bytes) -> bytes:
        out = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            out[rng.randrange(len(out))] = rng.getrandbits(8)
        return bytes(out)

    payloads = [junk(rng.randint(1, 2000)) for _ in range(6)]
    payloads += [b"\x16\x03\x01" + junk(rng.randint(2, 600)) for _ in range(3)]  # TLS-looking
    payloads += [mutated(hello) for _ in range(3)]
    payloads += [hello[: rng.randint(1, len(hello) - 1)] for _ in range(2)]
    return payloads


async def test_random_bytes_instead_of_a_client_hello_are_refused(test_ca: CA) -> None:
    payloads = _random_payloads(random.Random(2024))
    with trio.fail_after(TIMEOUT_S):
        async with serve(test_ca.tls("server")) as server:
            for payload in payloads:
                stream = await trio.open_tcp_stream(*server.addr)
                async with stream:
                    try:
                        await stream.send_all(CHANNEL_CLUSTER + payload)
                        await stream.send_eof()
                    except trio.BrokenResourceError:
                        pass  # refused before it had sent everything
                    await _wait_closed(stream)
            assert server.counters["refused_tls_handshake"] == len(payloads)
            _assert_nothing_got_through(server)
            await _round_trip(server.addr, test_ca.tls("client"))


def _dense_report() -> StatusReport:
    """A frame a worker may send (3.7 MiB, under its 4 MiB) of small objects only: 174,080
    endpoints, about 0.7 s of decoding here."""
    endpoints = tuple(Endpoint(80, "tcp", "10.0.0.1", 30000 + i) for i in range(340))
    running = TaskState.RUNNING
    return StatusReport(
        1, tuple(TaskObservation(f"t{i}", running, endpoints=endpoints) for i in range(512))
    )


async def test_a_workers_large_frame_is_decoded_while_the_loop_serves_the_others(
    test_ca: CA,
) -> None:
    """Decoded on the event loop, one such frame held it 0.7 s (past the Raft election timeout:
    the leader's heartbeats stopped), and a worker could send them back to back. A manager's
    message sent after it, while it decodes, is served first."""
    served: list[str] = []
    both = trio.Event()

    async def record(framed: FramedStream, _addr: Address) -> None:
        while await framed.receive() is not None:
            assert framed.peer is not None
            served.append(framed.peer.node_id)
            if len(served) == 2:
                both.set()

    with trio.fail_after(TIMEOUT_S):
        async with serve(test_ca.tls("server"), record) as server:
            manager_tls, worker_tls = test_ca.tls("m2"), test_ca.tls("w1", role="worker")
            manager = await Transport((HOST, 0), KEY, manager_tls).connect(server.addr)
            worker = await Transport((HOST, 0), KEY, worker_tls).connect(server.addr)
            await worker.send(_dense_report())
            await trio.sleep(0.2)  # across the loopback, and being decoded
            await manager.send(Ping(1, "meanwhile"))
            await both.wait()
            assert served == ["m2", "w1"]
            assert server.transport.counters["frames_in"] == 2
            await manager.aclose()
            await worker.aclose()
