"""api.control_client and api.control_protocol: the blocking client the `swarmlet` command uses,
against the real server (`serve_control`, under trio), and against agents that misbehave; the
framing, sans-I/O."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
import trio

from swarmlet.api import control_protocol
from swarmlet.api.control_client import BlockingControlClient
from swarmlet.api.control_protocol import (
    FRAME_HEADER,
    MAX_API_FRAME_BYTES,
    MAX_API_REQUEST_BYTES,
    MORE,
    NEED_DATA,
    closed_inside_frame,
    encode_frame,
    next_frame,
)
from swarmlet.api.control_socket import ControlClient, serve_control
from swarmlet.errors import (
    AgentUnavailableError,
    NoLeaderError,
    NotLeaderError,
    RemoteProtocolError,
    SwarmletError,
    UsageError,
)
from tests.api import fake_handlers

TIMEOUT_S = 10


@contextlib.asynccontextmanager
async def served(tmp_path: Path) -> AsyncIterator[BlockingControlClient]:
    path = tmp_path / "c.sock"
    async with trio.open_nursery() as nursery:
        await nursery.start(serve_control, path, fake_handlers.HANDLERS, fake_handlers.STREAMS)
        yield BlockingControlClient(path)
        nursery.cancel_scope.cancel()


async def in_thread(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Run the blocking client off the trio thread, as a separate process would."""
    return await trio.to_thread.run_sync(lambda: fn(*args, **kwargs))


# ---------------------------------------------------------------------------- the real server


async def test_a_call_round_trips_its_arguments(tmp_path: Path) -> None:
    args = {"name": "web", "n": 3, "labels": {"a": "b"}, "data": b"\x00", "l": [1, None]}
    with trio.fail_after(TIMEOUT_S):
        async with served(tmp_path) as client:
            assert await in_thread(client.call, "echo", **args) == args
            assert await in_thread(client.call, "echo") == {}


@pytest.mark.parametrize(
    ("op", "error", "match"),
    [
        ("usage", UsageError, "no such service 'web'"),
        ("no_leader", NoLeaderError, "retry later"),
        ("stack", SwarmletError, "services.app.image: required"),
        ("nope", UsageError, "unknown operation nope"),
    ],
)
async def test_errors_reach_the_client_with_their_type(
    tmp_path: Path, op: str, error: type[Exception], match: str
) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with served(tmp_path) as client:
            with pytest.raises(error, match=match) as caught:
                await in_thread(client.call, op)
            if error is SwarmletError:
                assert type(caught.value) is SwarmletError  # StackError is not rebuilt


async def test_not_leader_carries_the_leader_hint(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with served(tmp_path) as client:
            with pytest.raises(NotLeaderError) as caught:
                await in_thread(client.call, "not_leader", hint="node-7")
            assert caught.value.leader_hint == "node-7"


def _collect(client: BlockingControlClient, op: str, got: list[Any], **args: Any) -> None:
    with client.stream(op, **args) as items:
        got.extend(items)


async def test_a_stream_delivers_its_items_then_ends(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with served(tmp_path) as client:
            got: list[Any] = []
            await in_thread(_collect, client, "count", got, n=4)
            assert got == [{"i": i} for i in range(4)]


async def test_a_stream_that_fails_delivers_its_items_then_the_error(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with served(tmp_path) as client:
            got: list[Any] = []
            with pytest.raises(UsageError, match="stream broke"):
                await in_thread(_collect, client, "count_then_fail", got)
            assert got == ["first"]


async def test_no_agent_is_the_same_error_from_both_clients(tmp_path: Path) -> None:
    path = tmp_path / "none.sock"
    with pytest.raises(AgentUnavailableError) as blocking:
        BlockingControlClient(path).call("echo")
    with trio.fail_after(TIMEOUT_S), pytest.raises(AgentUnavailableError) as trio_client:
        await ControlClient(path).call("echo")
    assert str(blocking.value) == str(trio_client.value)
    assert "no agent answers at" in str(blocking.value) and "swarmlet agent --detach" in str(
        blocking.value
    )


# ---------------------------------------------------------------------------- agents that misbehave


@contextlib.contextmanager
def raw_agent(path: Path, reply: bytes) -> Iterator[None]:
    """Accept one connection, read the request, send `reply` as raw bytes, close."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(1)
    listener.settimeout(TIMEOUT_S)

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            buffer = bytearray()
            while next_frame(buffer) is NEED_DATA:
                buffer.extend(conn.recv(65536))
            conn.sendall(reply)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield
    finally:
        thread.join(timeout=TIMEOUT_S)
        listener.close()


@pytest.mark.parametrize(
    ("reply", "error", "match"),
    [
        (b"", AgentUnavailableError, "closed the connection without answering"),
        (b"\x00\x00", AgentUnavailableError, "closed the connection without answering"),
        (FRAME_HEADER.pack(10) + b"abc", RemoteProtocolError, "closed inside a frame"),
        (FRAME_HEADER.pack(MAX_API_FRAME_BYTES + 1), RemoteProtocolError, "too large"),
        (FRAME_HEADER.pack(1) + b"\xc1", RemoteProtocolError, "undecodable"),
        (encode_frame([1, 2]), RemoteProtocolError, "not a map"),
    ],
    ids=["nothing", "half-a-length", "truncated", "huge", "not-msgpack", "not-a-map"],
)
def test_an_agent_that_misbehaves_is_an_error_not_a_crash(
    tmp_path: Path, reply: bytes, error: type[Exception], match: str
) -> None:
    path = tmp_path / "c.sock"
    with raw_agent(path, reply), pytest.raises(error, match=match):
        BlockingControlClient(path).call("node.ls")


# ---------------------------------------------------------------------------- framing


def test_frames_are_taken_one_at_a_time_from_the_front() -> None:
    first, second = encode_frame({"op": "a"}), encode_frame({"op": "b", "args": {"x": b"\x01"}})
    buffer = bytearray(first + second[:5])
    assert next_frame(buffer) == {"op": "a"}
    assert next_frame(buffer) is NEED_DATA
    assert buffer == bytearray(second[:5])  # an incomplete frame is left as it is
    buffer.extend(second[5:])
    assert next_frame(buffer) == {"op": "b", "args": {"x": b"\x01"}}
    assert buffer == bytearray()


def test_a_frame_too_long_is_refused_from_its_length_alone() -> None:
    with pytest.raises(RemoteProtocolError, match="too large"):
        next_frame(bytearray(FRAME_HEADER.pack(MAX_API_FRAME_BYTES + 1)))
    body = msgpack.packb("x" * 10)
    assert next_frame(bytearray(FRAME_HEADER.pack(len(body)) + body)) == "x" * 10


def test_a_message_over_one_frame_is_cut_in_frames_and_read_whole() -> None:
    data = bytes(range(256)) * (MAX_API_FRAME_BYTES // 256 * 2 + 7)  # a bit over two frames
    wire = encode_frame({"d": data})
    headers, offset = [], 0
    while offset < len(wire):
        (header,) = FRAME_HEADER.unpack_from(wire, offset)
        headers.append(header)
        offset += FRAME_HEADER.size + (header & ~MORE)
    assert offset == len(wire)
    assert [bool(h & MORE) for h in headers] == [True, True, False]
    assert all(h & ~MORE <= MAX_API_FRAME_BYTES for h in headers)
    buffer = bytearray(wire[: MAX_API_FRAME_BYTES + 100])  # the first frame and a bit
    assert next_frame(buffer) is NEED_DATA
    assert len(buffer) == MAX_API_FRAME_BYTES + 100  # left as it is
    assert closed_inside_frame(buffer)  # closed now: a message cut short
    buffer.extend(wire[MAX_API_FRAME_BYTES + 100 :] + encode_frame("next"))
    assert next_frame(buffer) == {"d": data}
    assert next_frame(buffer) == "next"


def test_a_message_over_its_limit_is_refused_from_a_header_and_not_sent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(control_protocol, "MAX_API_FRAME_BYTES", 100)
    monkeypatch.setattr(control_protocol, "MAX_API_MESSAGE_BYTES", 250)
    wire = encode_frame(b"x" * 240)  # 243 bytes of msgpack: three frames
    assert next_frame(bytearray(wire)) == b"x" * 240
    # A third frame that would take the message past 250 bytes: refused from its header, before
    # its body arrives.
    too_long = FRAME_HEADER.pack(100 | MORE) + b"a" * 100 + FRAME_HEADER.pack(100 | MORE)
    too_long += b"b" * 100 + FRAME_HEADER.pack(60)
    with pytest.raises(RemoteProtocolError, match="too large"):
        next_frame(bytearray(too_long))
    with pytest.raises(SwarmletError, match="over the 250 bytes the control socket carries"):
        encode_frame(b"x" * 300)


async def test_an_answer_larger_than_a_frame_reaches_both_clients(tmp_path: Path) -> None:
    """`service ps` of 100,000 tasks answers about 30 MB: one frame refused it."""
    size = MAX_API_FRAME_BYTES + 1000
    data = b"\x01" * size
    with trio.fail_after(60):
        async with served(tmp_path) as client:
            assert await in_thread(client.call, "big", size=size) == {"data": data}
            assert await ControlClient(client.path).call("big", size=size) == {"data": data}


def test_a_short_frame_that_says_more_follows_is_refused_from_its_header() -> None:
    """Only a full frame says more follows: empty ones that did were a message without end,
    held in memory and parsed again from its first header at every read."""
    for length in (0, 1, MAX_API_FRAME_BYTES - 1):
        with pytest.raises(RemoteProtocolError, match="says more follows"):
            next_frame(bytearray(FRAME_HEADER.pack(length | MORE)))


def test_a_reader_refuses_a_message_over_its_own_limit_from_a_header() -> None:
    two_frames = FRAME_HEADER.pack(MAX_API_FRAME_BYTES | MORE)
    with pytest.raises(RemoteProtocolError, match="too large"):
        next_frame(bytearray(two_frames), max_message_bytes=MAX_API_REQUEST_BYTES)
    assert next_frame(bytearray(two_frames)) is NEED_DATA  # an answer may go on


@pytest.mark.parametrize(
    "attack",
    [
        FRAME_HEADER.pack(MORE) * 100_000,  # empty frames, each saying more follows
        FRAME_HEADER.pack(MAX_API_FRAME_BYTES | MORE),  # a request past one frame
    ],
    ids=["empty-more-frames", "request-over-a-frame"],
)
async def test_a_request_the_agent_will_not_read_closes_its_connection_and_nothing_else(
    tmp_path: Path, attack: bytes
) -> None:
    """On the real socket: the agent closes the connection from the first header it refuses,
    before it buffers what follows, and serves the next client as before."""
    with trio.fail_after(TIMEOUT_S):
        async with served(tmp_path) as client:
            stream = await trio.open_unix_socket(str(client.path))
            with contextlib.suppress(trio.BrokenResourceError):
                await stream.send_all(attack)
            try:
                answer = await stream.receive_some(10)
            except trio.BrokenResourceError:  # reset: closed with our bytes unread
                answer = b""
            assert answer == b""  # closed, unanswered
            await stream.aclose()
            assert await in_thread(client.call, "echo", n=1) == {"n": 1}


@pytest.mark.parametrize(
    ("left", "cut"),
    [(b"", False), (b"\x00\x00\x00", False), (FRAME_HEADER.pack(9), True), (b"\x00" * 6, True)],
)
def test_closing_inside_a_body_is_a_cut_frame_inside_a_length_is_nothing(
    left: bytes, cut: bool
) -> None:
    assert closed_inside_frame(bytearray(left)) is cut


def test_the_protocol_needs_no_socket_and_the_client_no_event_loop() -> None:
    probe = (
        "import sys, swarmlet.api.control_protocol as p; a = set(sys.modules); "
        "import swarmlet.api.control_client; b = set(sys.modules); "
        "print(' '.join(sorted(a)), '|', ' '.join(sorted(b)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    protocol, client = (set(half.split()) for half in out.split("|"))
    assert not {"trio", "socket", "asyncio", "selectors"} & protocol
    assert "socket" in client
    assert not {"trio", "asyncio", "swarmlet.api.control_socket"} & client
