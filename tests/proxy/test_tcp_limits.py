"""The TCP relay's limits, on real loopback sockets: an idle connection is closed on both sides
and counted, traffic either way keeps one open, and the opening bytes kept for replay are freed
as soon as the connection is committed to a replica.

Time is a trio `MockClock` that jumps to the next deadline when every task has waited 10 ms of
real time for nothing: the timeouts are virtual, so a test of a 60 s timeout takes milliseconds
and does not depend on the machine's speed (a loopback byte is there within microseconds, long
before the clock moves on).
"""

from __future__ import annotations

import socket
from functools import partial

import pytest
import trio
import trio.testing

from swarmlet.proxy.counters import PortStats
from swarmlet.proxy.routes import EndpointSelector, Route
from swarmlet.proxy.tcp import (
    IDLE_SWEEPS_PER_TIMEOUT,
    REPLAY_LIMIT_BYTES,
    REPLAY_WINDOW_S,
    Relay,
    _Listener,
    _send_all,
    _Session,
)
from swarmlet.state.observed import Endpoint

IDLE_S = 60.0
LATEST_CLOSE_S = IDLE_S * (1 + 1 / IDLE_SWEEPS_PER_TIMEOUT)  # the sweeper's period of grace
TIMEOUT_S = 10 * IDLE_S  # virtual: a hang jumps the clock here and fails at once


@pytest.fixture
def clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0.01)


class _Replica:
    """A replica on loopback that records what it received and when its connection closed."""

    def __init__(self, *, echo: bool = False, push_every_s: float | None = None) -> None:
        self.echo = echo
        self.push_every_s = push_every_s
        self.got = bytearray()
        self.received = trio.Event()  # set at each chunk; replaced after
        self.closed = trio.Event()  # the proxy closed its side

    async def handle(self, stream: trio.SocketStream) -> None:
        async with stream, trio.open_nursery() as nursery:
            if self.push_every_s is not None:
                nursery.start_soon(self._push, stream, self.push_every_s)
            while chunk := await stream.receive_some(65536):
                self.got += chunk
                self.received.set()
                self.received = trio.Event()
                if self.echo:
                    await stream.send_all(chunk)
            self.closed.set()
            nursery.cancel_scope.cancel()

    async def _push(self, stream: trio.SocketStream, every_s: float) -> None:
        while True:
            await trio.sleep(every_s)
            await stream.send_all(b".")

    async def until_got(self, size: int) -> None:
        while len(self.got) < size:
            await self.received.wait()


async def _start_replica(nursery: trio.Nursery, replica: _Replica) -> Endpoint:
    listeners = await nursery.start(partial(trio.serve_tcp, replica.handle, 0, host="127.0.0.1"))
    return Endpoint(80, "tcp", "127.0.0.1", listeners[0].socket.getsockname()[1])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def _start_relay(nursery: trio.Nursery, *endpoints: Endpoint) -> tuple[Relay, _Listener, int]:
    """A relay with the idle sweeper running, listening on a fresh port for `endpoints`."""
    relay = Relay("127.0.0.1", idle_timeout_s=IDLE_S)
    await nursery.start(relay.run)
    route = Route("web", _free_port(), "tcp", endpoints)
    assert await relay.sync({route.key: route}) == {}
    listener = relay.listeners[route.key]
    listener.selector = EndpointSelector()  # the endpoints in order, not from a random one
    return relay, listener, route.published


def _only_session(relay: Relay) -> _Session:
    (session,) = relay._sessions
    return session


async def test_an_idle_connection_is_closed_on_both_sides_and_counted(
    clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            replica = _Replica(echo=True)
            _, listener, port = await _start_relay(nursery, await _start_replica(nursery, replica))
            client = await trio.open_tcp_stream("127.0.0.1", port)
            async with client:
                await client.send_all(b"ping")
                assert await client.receive_some(100) == b"ping"
                quiet_since = trio.current_time()
                assert await client.receive_some(100) == b""  # the proxy closed the client
                idle_for = trio.current_time() - quiet_since
            await replica.closed.wait()  # and the replica's side
            assert IDLE_S <= idle_for <= LATEST_CLOSE_S  # virtual time
            assert listener.stats.idle_closed == 1
            assert listener.stats.active == 0 and listener.stats.errors == 0
            nursery.cancel_scope.cancel()


@pytest.mark.parametrize("answer_after_s", [REPLAY_WINDOW_S / 2, IDLE_S / 2])
async def test_the_replicas_first_answer_counts_as_activity(
    clock: trio.testing.MockClock, answer_after_s: float
) -> None:
    # Within the replay window and after it: the first chunk is read in either of two ways.
    async def slow(stream: trio.SocketStream) -> None:
        async with stream:
            await stream.receive_some(100)
            await trio.sleep(answer_after_s)  # thinks, then answers once and keeps the line open
            await stream.send_all(b"late")
            await stream.receive_some(100)

    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(partial(trio.serve_tcp, slow, 0, host="127.0.0.1"))
            endpoint = Endpoint(80, "tcp", "127.0.0.1", listeners[0].socket.getsockname()[1])
            _, listener, port = await _start_relay(nursery, endpoint)
            client = await trio.open_tcp_stream("127.0.0.1", port)
            async with client:
                await client.send_all(b"ping")
                assert await client.receive_some(100) == b"late"
                quiet_since = trio.current_time()
                assert await client.receive_some(100) == b""
                assert trio.current_time() - quiet_since >= IDLE_S
            assert listener.stats.idle_closed == 1
            nursery.cancel_scope.cancel()


async def test_a_silent_client_of_a_silent_replica_is_closed_by_the_same_timeout(
    clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            replica = _Replica()  # reads, never answers
            _, listener, port = await _start_relay(nursery, await _start_replica(nursery, replica))
            client = await trio.open_tcp_stream("127.0.0.1", port)
            async with client:
                accepted_at = trio.current_time()
                assert await client.receive_some(100) == b""
                idle_for = trio.current_time() - accepted_at
            await replica.closed.wait()
            assert IDLE_S <= idle_for <= LATEST_CLOSE_S
            assert listener.stats.idle_closed == 1 and replica.got == b""
            nursery.cancel_scope.cancel()


async def test_client_traffic_alone_keeps_a_connection_open_past_the_timeout(
    clock: trio.testing.MockClock,
) -> None:
    pings = 12  # one every third of the timeout: four timeouts in all
    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            replica = _Replica()  # never answers: only the client's bytes move
            _, listener, port = await _start_relay(nursery, await _start_replica(nursery, replica))
            client = await trio.open_tcp_stream("127.0.0.1", port)
            async with client:
                started = trio.current_time()
                for n in range(1, pings + 1):
                    await trio.sleep(IDLE_S / 3)
                    await client.send_all(b".")
                    await replica.until_got(n)
                assert trio.current_time() - started >= 4 * IDLE_S
                assert not replica.closed.is_set()
                assert listener.stats.idle_closed == 0 and listener.stats.active == 1
            nursery.cancel_scope.cancel()


async def test_replica_traffic_alone_keeps_a_connection_open_past_the_timeout(
    clock: trio.testing.MockClock,
) -> None:
    beats = 12
    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            replica = _Replica(push_every_s=IDLE_S / 3)  # only the replica's bytes move
            _, listener, port = await _start_relay(nursery, await _start_replica(nursery, replica))
            client = await trio.open_tcp_stream("127.0.0.1", port)
            async with client:
                started = trio.current_time()
                got = b""
                while len(got) < beats:
                    chunk = await client.receive_some(100)
                    assert chunk, "closed while the replica was still talking"
                    got += chunk
                assert trio.current_time() - started >= 4 * IDLE_S
                assert listener.stats.idle_closed == 0 and listener.stats.active == 1
            nursery.cancel_scope.cancel()


async def test_a_slow_reader_taking_part_of_a_send_counts_as_activity(
    clock: trio.testing.MockClock,
) -> None:
    # White-box: a send blocked on a client that reads, but slowly, must not look idle.
    with trio.fail_after(TIMEOUT_S):
        proxy_end, client_end = socket.socketpair()
        with proxy_end, client_end:
            proxy_end.setblocking(False)
            client_end.setblocking(False)
            session = _Session(proxy_end, PortStats())
            started = session.active_at
            data = b"x" * (1024 * 1024)  # several times what a socketpair holds (~200 KiB)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_send_all, proxy_end, data, session)
                read = 0
                while read < len(data):
                    await trio.sleep(IDLE_S / 3)  # longer than the timeout, in all
                    await trio.lowlevel.wait_readable(client_end)
                    read += len(client_end.recv(1 << 20))
            assert session.active_at >= started + IDLE_S


async def test_the_opening_bytes_are_freed_once_the_replica_answers(
    clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            replica = _Replica(echo=True)
            relay, _, port = await _start_relay(nursery, await _start_replica(nursery, replica))
            client = await trio.open_tcp_stream("127.0.0.1", port)
            async with client:
                await client.send_all(b"hello")
                assert await client.receive_some(100) == b"hello"
                session = _only_session(relay)
                assert session.sent == b"" and not session.replayable
                await client.send_all(b"more")  # a long-lived connection keeps no copy
                assert await client.receive_some(100) == b"more"
                assert session.sent == b""
            nursery.cancel_scope.cancel()


async def test_the_opening_bytes_are_freed_when_the_replay_window_ends(
    clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            replica = _Replica()  # never answers
            relay, _, port = await _start_relay(nursery, await _start_replica(nursery, replica))
            client = await trio.open_tcp_stream("127.0.0.1", port)
            async with client:
                await client.send_all(b"hello")
                await replica.until_got(5)
                session = _only_session(relay)
                assert session.sent == b"hello" and session.replayable  # kept for a replay
                await trio.sleep(REPLAY_WINDOW_S + 0.1)  # past its end, not at it: no tie
                assert session.sent == b"" and not session.replayable
            nursery.cancel_scope.cancel()


async def test_the_opening_bytes_are_freed_past_the_replay_limit(
    clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            replica = _Replica()  # never answers
            relay, _, port = await _start_relay(nursery, await _start_replica(nursery, replica))
            client = await trio.open_tcp_stream("127.0.0.1", port)
            async with client:
                await client.send_all(b"x" * (REPLAY_LIMIT_BYTES + 1))
                await replica.until_got(REPLAY_LIMIT_BYTES + 1)
                session = _only_session(relay)
                assert session.sent == b"" and not session.replayable
            nursery.cancel_scope.cancel()


async def test_the_opening_bytes_are_still_replayed_to_the_next_replica(
    clock: trio.testing.MockClock,
) -> None:
    async def dead(stream: trio.SocketStream) -> None:
        async with stream:  # reads the request, closes without a word
            dead_got.append(await stream.receive_some(100))

    dead_got: list[bytes] = []
    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(partial(trio.serve_tcp, dead, 0, host="127.0.0.1"))
            dead_endpoint = Endpoint(80, "tcp", "127.0.0.1", listeners[0].socket.getsockname()[1])
            good = _Replica(echo=True)
            relay, listener, port = await _start_relay(
                nursery, dead_endpoint, await _start_replica(nursery, good)
            )
            client = await trio.open_tcp_stream("127.0.0.1", port)
            async with client:
                await client.send_all(b"hello")
                assert await client.receive_some(100) == b"hello"
                assert dead_got == [b"hello"] and good.got == b"hello"
                assert listener.stats.retries == 1
                assert _only_session(relay).sent == b""
            nursery.cancel_scope.cancel()


def test_a_relay_refuses_an_idle_timeout_that_is_not_positive() -> None:
    with pytest.raises(ValueError, match="idle_timeout_s"):
        Relay("127.0.0.1", idle_timeout_s=0)
