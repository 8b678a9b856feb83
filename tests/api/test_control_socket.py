"""api.control_socket: the control socket, served with fake handlers on a temporary Unix socket."""

from __future__ import annotations

import stat
import struct
import threading
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing, asynccontextmanager
from pathlib import Path
from typing import Any, cast

import msgpack
import pytest
import trio
import trio.lowlevel

from swarmlet import off_loop
from swarmlet.api import control_socket
from swarmlet.api.control_protocol import encode_frame
from swarmlet.api.control_socket import ControlClient, Emit, Handler, StreamHandler, serve_control
from swarmlet.errors import (
    AgentUnavailableError,
    NoLeaderError,
    NotLeaderError,
    SwarmletError,
    UsageError,
)
from tests.api import fake_handlers

TIMEOUT_S = 10
_Gen = AsyncGenerator[Any, None]
_LEN = struct.Struct(">I")


async def _crash(args: dict[str, Any]) -> Any:
    return args["missing"]  # a handler bug: KeyError


async def _forever(args: dict[str, Any], emit: Emit) -> None:
    i = 0
    while True:
        await emit(i)
        i += 1
        await trio.lowlevel.checkpoint()


HANDLERS: dict[str, Handler] = {**fake_handlers.HANDLERS, "crash": _crash}
STREAMS: dict[str, StreamHandler] = {**fake_handlers.STREAMS, "forever": _forever}


@asynccontextmanager
async def control(tmp_path: Path) -> AsyncIterator[tuple[ControlClient, Path]]:
    path = tmp_path / "c.sock"
    async with trio.open_nursery() as nursery:
        await nursery.start(serve_control, path, HANDLERS, STREAMS)
        yield ControlClient(path), path
        nursery.cancel_scope.cancel()


async def raw_exchange(path: Path, data: bytes) -> Any:
    """Send raw bytes; return the decoded answer, or None if the server just closed."""
    stream = await trio.open_unix_socket(str(path))
    async with stream:
        await stream.send_all(data)
        await stream.send_eof()
        buffer = b""
        try:
            while chunk := await stream.receive_some(65536):
                buffer += chunk
        except trio.BrokenResourceError:
            return None
    if not buffer:
        return None
    (length,) = _LEN.unpack(buffer[:4])
    return msgpack.unpackb(buffer[4 : 4 + length], raw=False)


def frame(body: Any) -> bytes:
    data = msgpack.packb(body, use_bin_type=True)
    return _LEN.pack(len(data)) + data


async def test_a_call_round_trips_its_arguments(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with control(tmp_path) as (client, _):
            args = {"name": "web", "n": 3, "labels": {"a": "b"}, "data": b"\x00", "l": [1, None]}
            assert await client.call("echo", **args) == args
            assert await client.call("echo") == {}


async def test_a_long_listing_is_encoded_off_the_loop_and_answered_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`service ps` of 100,000 tasks held the event loop while its answer was encoded."""
    answers: list[tuple[bool, bool]] = []  # (encoded on the loop's thread, a listing)

    def recording(body: Any) -> bytes:
        if isinstance(body, dict) and "ok" in body:
            on_loop = threading.current_thread() is threading.main_thread()
            answers.append((on_loop, "rows" in (body.get("result") or {})))
        return encode_frame(body)

    pack = off_loop.pack

    def packing(body: Any) -> bytes:  # the long listing's way: packed in pieces, then framed
        recording(body)
        return pack(body)

    monkeypatch.setattr("swarmlet.api.control_socket.encode_frame", recording)
    monkeypatch.setattr("swarmlet.off_loop.pack", packing)
    rows = [{"id": f"t{i}", "slot": i} for i in range(control_socket.LARGE_LISTING + 1)]
    with trio.fail_after(TIMEOUT_S):
        async with control(tmp_path) as (client, _):
            assert await client.call("echo", rows=rows) == {"rows": rows}
            assert await client.call("echo", n=1) == {"n": 1}
    assert answers == [(False, True), (True, False)]


async def test_a_kept_connection_answers_calls_in_turn_errors_included(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with control(tmp_path) as (client, _), client.connection() as connection:
            assert await connection.call("echo", n=1) == {"n": 1}
            with pytest.raises(UsageError, match="no such service"):
                await connection.call("usage")
            with pytest.raises(UsageError, match="unknown operation nope"):
                await connection.call("nope")
            assert [await connection.call("echo", n=i) for i in range(50)] == [
                {"n": i} for i in range(50)
            ]


async def test_pipelined_requests_are_answered_in_order(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with control(tmp_path) as (_, path):
            stream = await trio.open_unix_socket(str(path))
            async with stream:
                await stream.send_all(
                    b"".join(frame({"op": "echo", "args": {"i": i}}) for i in range(5))
                )
                await stream.send_eof()
                data = b""
                while chunk := await stream.receive_some(65536):
                    data += chunk
            answers = []
            while data:
                (length,) = _LEN.unpack(data[:4])
                answers.append(msgpack.unpackb(data[4 : 4 + length], raw=False))
                data = data[4 + length :]
            assert answers == [{"ok": True, "result": {"i": i}} for i in range(5)]


async def test_a_stream_or_a_malformed_request_ends_its_connection(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with control(tmp_path) as (_, path):
            for first in (
                {"op": "count", "args": {"n": 2}},
                {"op": "count_then_fail", "args": {"n": 1}},
                {"op": 7},
            ):
                stream = await trio.open_unix_socket(str(path))
                async with stream:
                    await stream.send_all(frame(first) + frame({"op": "echo", "args": {}}))
                    data = b""
                    while chunk := await stream.receive_some(65536):
                        data += chunk
                assert msgpack.packb({"ok": True, "result": {}}) not in data  # echo not answered


async def test_a_connection_idle_too_long_is_closed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:

    monkeypatch.setattr(control_socket, "IDLE_CONNECTION_S", 0.2)
    with trio.fail_after(TIMEOUT_S):
        async with control(tmp_path) as (client, _), client.connection() as connection:
            assert await connection.call("echo", n=1) == {"n": 1}
            await trio.sleep(0.5)
            with pytest.raises(AgentUnavailableError, match="closed the connection"):
                await connection.call("echo", n=2)


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
        async with control(tmp_path) as (client, _):
            with pytest.raises(error, match=match) as caught:
                await client.call(op)
            if error is SwarmletError:
                assert type(caught.value) is SwarmletError  # StackError is not rebuilt


async def test_not_leader_carries_the_leader_hint(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with control(tmp_path) as (client, _):
            with pytest.raises(NotLeaderError) as caught:
                await client.call("not_leader", hint="node-7")
            assert caught.value.leader_hint == "node-7"
            with pytest.raises(NotLeaderError) as caught:
                await client.call("not_leader")
            assert caught.value.leader_hint is None


async def test_a_stream_delivers_its_items_then_ends(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with control(tmp_path) as (client, _):
            async with client.stream("count", n=4) as items:
                assert [item async for item in items] == [{"i": i} for i in range(4)]
            async with client.stream("count", n=0) as items:
                assert [item async for item in items] == []


async def test_a_stream_that_fails_delivers_its_items_then_the_error(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with control(tmp_path) as (client, _):
            got: list[Any] = []

            async def consume() -> None:
                async with client.stream("count_then_fail") as items:
                    async for item in items:
                        got.append(item)

            with pytest.raises(UsageError, match="stream broke"):
                await consume()
            assert got == ["first"]


async def test_a_client_leaving_a_stream_early_does_not_disturb_the_server(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with control(tmp_path) as (client, _):
            # (the caller must close the generator it breaks out of: see the report)
            async with client.stream("forever") as items, aclosing(cast(_Gen, items)):
                async for item in items:
                    if item == 3:
                        break
            assert await client.call("echo", x=1) == {"x": 1}


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="nothing"),
        pytest.param(b"\x00\x00", id="half-a-length"),
        pytest.param(b"\xff\xff\xff\xff" + b"x" * 10, id="huge-length"),
        pytest.param(_LEN.pack(10) + b"abc", id="truncated"),
        pytest.param(_LEN.pack(1) + b"\xc1", id="not-msgpack"),
        pytest.param(_LEN.pack(3) + b"\x81\x91\x01\x01", id="unhashable-key"),
    ],
)
async def test_garbage_is_dropped_and_the_server_keeps_serving(tmp_path: Path, data: bytes) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with control(tmp_path) as (client, path):
            answer = await raw_exchange(path, data)
            # (an empty request, or one cut inside its length, is answered as a bad request)
            assert answer in (None, {"ok": False, "error": "bad request", "type": "UsageError"})
            assert await client.call("echo", ok=True) == {"ok": True}


@pytest.mark.parametrize(
    "request_body",
    [[1, 2], "node.ls", {"args": {}}, {"op": 7}, None],
    ids=["list", "str", "no-op", "op-not-str", "nil"],
)
async def test_a_malformed_request_gets_a_usage_error(tmp_path: Path, request_body: Any) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with control(tmp_path) as (client, path):
            answer = await raw_exchange(path, frame(request_body))
            assert answer == {"ok": False, "error": "bad request", "type": "UsageError"}
            assert await client.call("echo") == {}


async def test_args_that_are_not_a_map_are_ignored(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with control(tmp_path) as (_, path):
            answer = await raw_exchange(path, frame({"op": "echo", "args": [1, 2]}))
            assert answer == {"ok": True, "result": {}}


async def test_a_handler_bug_does_not_stop_the_server(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with control(tmp_path) as (client, _):
            with pytest.raises(SwarmletError):
                await client.call("crash")
            assert await client.call("echo") == {}


async def test_the_socket_is_owner_only_and_removed_on_exit(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with control(tmp_path) as (_, path):
            mode = path.stat().st_mode
            assert stat.S_ISSOCK(mode)
            assert stat.S_IMODE(mode) == 0o600
        assert not path.exists()


async def test_a_stale_socket_file_is_replaced(tmp_path: Path) -> None:
    (tmp_path / "c.sock").write_bytes(b"left over")
    with trio.fail_after(TIMEOUT_S):
        async with control(tmp_path) as (client, _):
            assert await client.call("echo") == {}


async def test_no_agent_is_an_agent_unavailable_error(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT_S), pytest.raises(AgentUnavailableError, match="is it running"):
        await ControlClient(tmp_path / "none.sock").call("echo")
