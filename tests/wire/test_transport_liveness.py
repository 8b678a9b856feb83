"""A peer that goes silent at the TCP level loses its connections (`TcpLiveness`), on real
sockets: the silence is made with iptables, which drops one side's packets in the kernel, as a
host that lost power or a cut cable would.

Without keepalive, a loop that only receives waited for ever on such a peer, and its connection
kept a slot of the node's `MAX_CONNECTIONS` (and of the peer's own share); without
TCP_USER_TIMEOUT, data sent to it stayed unacknowledged for the kernel's ~15 minutes of
retransmissions before the sender heard of it. A stream whose reader may pause lifts the
latter.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator

import pytest
import trio

from swarmlet.gossip.messages import Ping
from swarmlet.wire.transport import LINK_ERRORS, Address, FramedStream, TcpLiveness, Transport
from tests.wire.test_transport_tls import CA, HOST, KEY, _round_trip, serve

PEER = "127.0.0.77"  # the client's own address, so that its packets alone can be dropped
FAST = TcpLiveness(idle_s=1, interval_s=1, dead_after_s=3.0)
TIMEOUT_S = 60  # a hang guard: the kernel gives up after FAST's 3 s


@contextlib.contextmanager
def dropped(*rule: str) -> Iterator[None]:
    """Packets matching `rule` vanish on the way in (both ends are on this host)."""
    subprocess.run(["iptables", "-I", "INPUT", *rule, "-j", "DROP"], check=True)
    try:
        yield
    finally:
        subprocess.run(["iptables", "-D", "INPUT", *rule, "-j", "DROP"], check=True)


async def test_a_peer_gone_silent_frees_its_connection_for_the_next(test_ca: CA) -> None:
    """A worker with a share of one connection: after its host went silent, the server's
    receiving loop ends and the worker, back, is served again."""
    worker = test_ca.tls("w1", role="worker")
    ended = trio.Event()

    async def receive_only(framed: FramedStream, _addr: Address) -> None:
        try:
            while (msg := await framed.receive()) is not None:
                await framed.send(msg)
        finally:
            ended.set()

    with trio.fail_after(TIMEOUT_S):
        async with serve(
            test_ca.tls("server"), receive_only, max_connections_per_node=1, liveness=FAST
        ) as server:
            held = await Transport((PEER, 0), KEY, worker, liveness=FAST).connect(server.addr)
            await held.send(Ping(1, "hold"))
            assert await held.receive() == Ping(1, "hold")
            port = str(server.addr[1])
            with dropped("-s", PEER, "-d", HOST, "-p", "tcp", "--dport", port):
                await ended.wait()  # its probes went unanswered
            await _round_trip(server.addr, worker)
            assert server.counters["refused_connection_limit_node"] == 0
            await held.aclose()


async def test_data_a_peer_never_acknowledges_fails_the_sender(test_ca: CA) -> None:
    """A sender to a peer that went silent hears of it within `dead_after_s`, not after the
    kernel's quarter of an hour of retransmissions: a sender's link is then opened anew."""
    with trio.fail_after(TIMEOUT_S):
        async with serve(test_ca.tls("server")) as server:
            client = Transport((PEER, 0), KEY, test_ca.tls("m2", role="manager"), liveness=FAST)
            framed = await client.connect(server.addr)
            async with framed.stream:
                await framed.send(Ping(1, "echo"))
                assert await framed.receive() == Ping(1, "echo")
                port = str(server.addr[1])
                with dropped("-s", HOST, "-d", PEER, "-p", "tcp", "--sport", port):
                    sent = 0
                    try:
                        while True:
                            await framed.send(Ping(sent, "unanswered"))
                            sent += 1
                            await trio.sleep(0.2)
                    except LINK_ERRORS:
                        pass
            assert sent >= 2  # it sent before the kernel gave up on the peer


@pytest.mark.parametrize("lifted", [True, False])
async def test_a_reader_that_pauses_keeps_its_connection_where_the_stream_lets_it(
    test_ca: CA, lifted: bool
) -> None:
    """A live reader that stops reading for longer than `dead_after_s` (`service logs -f`
    into a paused pager): the sender's window stays shut, and the user timeout ends the
    connection, unless the sender's stream lets its reader pause (a followed log does)."""
    frames = 200  # 12 MB: more than the two sockets' buffers hold, so the sender waits
    got_all = trio.Event()

    async def pauses(framed: FramedStream, _addr: Address) -> None:
        await framed.receive()
        await trio.sleep(3 * FAST.dead_after_s)
        received = 1
        while await framed.receive() is not None:
            received += 1
            if received == frames:
                got_all.set()

    with trio.fail_after(TIMEOUT_S):
        async with serve(test_ca.tls("server"), pauses, liveness=FAST) as server:
            client = Transport((PEER, 0), KEY, test_ca.tls("w1", role="worker"), liveness=FAST)
            framed = await client.connect(server.addr)
            if lifted:
                framed.let_the_reader_pause()
            async with framed.stream:
                try:
                    for i in range(frames):
                        await framed.send(Ping(i, "x" * 60_000))
                except LINK_ERRORS:
                    assert not lifted
                    return
                await got_all.wait()
                assert lifted
