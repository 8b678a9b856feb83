"""security.join: the join handshake over real loopback connections. The accepting side here is
a stand-in for `Agent._on_join` that runs the same possession check and answers with a reply.
Every test runs under `trio.fail_after`.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from swarmlet import crypto
from swarmlet.security.datadir import DataDir
from swarmlet.security.join import check_possession, join_cluster
from swarmlet.wire.peer_rpc import JoinChallenge, JoinProof, JoinReply, JoinRequest
from swarmlet.wire.transport import (
    JOIN_ACCEPTED,
    Address,
    Counters,
    FramedStream,
    Transport,
    join_stream,
    open_join_stream,
)

HOST = "127.0.0.1"
TIMEOUT_S = 10
CLUSTER = crypto.ClusterKeys(crypto.new_key())
TOKEN = crypto.JoinToken.new(CLUSTER)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


@asynccontextmanager
async def manager(proofs: list[bool]) -> AsyncIterator[Address]:
    """Admits every joiner that proves it holds its key; records each check's outcome."""
    addr = (HOST, free_port())
    server = Transport(addr, CLUSTER.message_key)

    async def on_join(raw: trio.SocketStream, _key_id: bytes, _addr: Address) -> None:
        await raw.send_all(JOIN_ACCEPTED)
        stream = join_stream(raw, TOKEN.join_key, Counters())
        request = await stream.receive(expect=(JoinRequest,))
        assert request is not None
        proved = await check_possession(stream, request.node_id, request.public_key)
        proofs.append(proved)
        if not proved:
            await stream.send(JoinReply(False, error="no proof of the node key"))
            return
        await stream.send(
            JoinReply(True, cluster_id="c", master_key=CLUSTER.master, name="n2", role="worker")
        )

    async def no_stream(_stream: FramedStream, _addr: Address) -> None:
        return

    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve_tcp, no_stream, on_join)
        yield addr
        nursery.cancel_scope.cancel()


async def test_a_joiner_proves_it_holds_its_node_key_and_is_admitted(tmp_path: Path) -> None:
    proofs: list[bool] = []
    d = DataDir(tmp_path / "n2")
    with trio.fail_after(TIMEOUT_S):
        async with manager(proofs) as (host, port):
            identity = await join_cluster(
                f"{host}:{port}",
                TOKEN,
                name="n2",
                name_is_explicit=False,
                advertise_host=HOST,
                port=1,
                publish_host=HOST,
                datadir=d,
            )
    assert proofs == [True]
    assert identity.name == "n2"
    assert d.read_identity()[1] == CLUSTER.master


@pytest.mark.parametrize("answer", [b"a guess", b""])
async def test_a_joiner_with_a_copied_public_key_is_refused(answer: bytes) -> None:
    """Public keys are in every replica of the state: a member that copies a node's id and
    key into a join request cannot open the challenge sealed to that key."""
    proofs: list[bool] = []
    victim_public = crypto.public_key_of(crypto.new_node_key())
    request = JoinRequest("victim", "victim", False, "6.6.6.6:1", "6.6.6.6", 1, 1, victim_public)
    with trio.fail_after(TIMEOUT_S):
        async with manager(proofs) as addr:
            stream = await open_join_stream(addr, TOKEN.join_key, TOKEN.key_id)
            assert stream is not None
            async with stream.stream:
                await stream.send(request)
                challenge = await stream.receive(expect=(JoinChallenge,))
                assert challenge is not None
                await stream.send(JoinProof(answer))
                reply = await stream.receive(expect=(JoinReply,))
    assert proofs == [False]
    assert reply is not None and not reply.ok and reply.error == "no proof of the node key"
