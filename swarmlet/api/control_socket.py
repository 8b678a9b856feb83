"""The control API: what the `swarmlet` command (and the dashboard) ask the local agent.

Transport: a Unix socket in the data dir, mode 0600 (owner only). Each request and response is a
length-prefixed msgpack map of plain values (JSON-like, since most results end up printed as JSON).

    request   {"op": "node.ls", "args": {...}}
    response  {"ok": true, "result": ...}
            | {"ok": false, "error": "message", "type": "UsageError"}
    stream    {"item": ...} ... then {"ok": true, "result": null}    (events, logs -f, ...)

A connection carries requests one after another, each answered before the next is read (the
`swarmlet` command sends one and closes; a benchmark or the dashboard may keep one open, as an
HTTP client keeps a connection alive). A stream takes the rest of its connection. Each connection
is its own task, so a hung client is harmless, and one idle for `IDLE_CONNECTION_S` between
requests is closed. The framing and the error mapping are `control_protocol`'s, shared with the
blocking client the `swarmlet` command uses (`control_client`); `ControlClient` here is the same
client for trio code.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import trio

from swarmlet import errors, off_loop
from swarmlet.api.control_protocol import (
    MAX_API_REQUEST_BYTES,
    NEED_DATA,
    RECEIVE_BYTES,
    agent_unavailable,
    closed_inside_frame,
    encode_frame,
    frames_of,
    next_frame,
    response_result,
    stream_item,
)
from swarmlet.errors import RemoteProtocolError, SwarmletError

log = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any]], Awaitable[Any]]
Emit = Callable[[Any], Awaitable[None]]
StreamHandler = Callable[[dict[str, Any], Emit], Awaitable[None]]

IDLE_CONNECTION_S = 300.0  # a kept-alive connection with no request for this long is closed
_CLOSED = object()  # what the server's `_receive` returns when the client closed


async def _send(stream: trio.abc.SendStream, body: Any) -> None:
    await stream.send_all(encode_frame(body))


# A result listing more items than this (at its top or one level down) is encoded in a thread:
# `service ps` of 100,000 tasks took the event loop 0.2-0.5 s, the leader's heartbeats with it.
LARGE_LISTING = 1_000


async def _send_result(stream: trio.abc.SendStream, result: Any) -> None:
    body = {"ok": True, "result": result}
    values = result.values() if isinstance(result, dict) else (result,)
    if any(isinstance(v, list | tuple) and len(v) > LARGE_LISTING for v in values):
        await stream.send_all(await off_loop.run(lambda: frames_of(off_loop.pack(body))))
    else:
        await _send(stream, body)


async def _receive(
    stream: trio.abc.ReceiveStream,
    buffer: bytearray,
    closed: Any = None,
    max_message_bytes: int | None = None,
) -> Any | None:
    """The next frame's value; `closed` if the peer closed before sending one."""
    while True:
        body = next_frame(buffer, max_message_bytes)
        if body is not NEED_DATA:
            return body
        chunk = await stream.receive_some(RECEIVE_BYTES)
        if not chunk:
            if closed_inside_frame(buffer):
                raise RemoteProtocolError("connection closed inside a frame")
            return closed
        buffer.extend(chunk)


def _error_body(exc: SwarmletError) -> dict[str, Any]:
    body: dict[str, Any] = {"ok": False, "error": str(exc), "type": type(exc).__name__}
    if isinstance(exc, errors.NotLeaderError):
        body["leader"] = exc.leader_hint
    return body


async def serve_control(
    path: Path,
    handlers: Mapping[str, Handler],
    streams: Mapping[str, StreamHandler],
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the control socket until cancelled. Errors of one request never stop the server."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)  # a socket path: metadata only, never blocks for long
    sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
    old_umask = os.umask(0o177)  # the socket file is created 0600: owner only
    try:
        await sock.bind(str(path))
    finally:
        os.umask(old_umask)
    os.chmod(path, 0o600)
    sock.listen(128)
    listener = trio.SocketListener(sock)

    async def answer(stream: trio.SocketStream, request: Any) -> bool:
        """Answer one request; False when the connection is done: a stream took it (however
        it ended), or the request was malformed."""
        if not isinstance(request, dict) or not isinstance(request.get("op"), str):
            await _send(stream, {"ok": False, "error": "bad request", "type": "UsageError"})
            return False
        op = request["op"]
        args = request.get("args") or {}
        if not isinstance(args, dict):
            args = {}
        try:
            if op in handlers:
                await _send_result(stream, await handlers[op](args))
            elif op in streams:

                async def emit(item: Any) -> None:
                    await _send(stream, {"item": item})

                await streams[op](args, emit)
                await _send(stream, {"ok": True, "result": None})
            else:
                await _send(
                    stream, {"ok": False, "error": f"unknown operation {op}", "type": "UsageError"}
                )
        except SwarmletError as exc:
            await _send(stream, _error_body(exc))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise  # the client went away before the answer: not an error of ours
        except Exception as exc:
            # A bug of ours in one handler: answer and log it loudly, but keep serving.
            log.exception("control operation %s failed", op)
            await _send(
                stream,
                {"ok": False, "error": f"internal error in {op}: {exc!r}", "type": "SwarmletError"},
            )
        return op not in streams

    async def handle(stream: trio.SocketStream) -> None:
        buffer = bytearray()
        try:
            while True:
                request = _CLOSED  # also when the client stays silent too long
                with trio.move_on_after(IDLE_CONNECTION_S):
                    request = await _receive(
                        stream, buffer, closed=_CLOSED, max_message_bytes=MAX_API_REQUEST_BYTES
                    )
                if request is _CLOSED or not await answer(stream, request):
                    return
        except (trio.BrokenResourceError, trio.ClosedResourceError, RemoteProtocolError):
            pass  # the client went away or spoke nonsense: nothing to answer
        finally:
            await stream.aclose()

    task_status.started()
    try:
        await trio.serve_listeners(handle, [listener])
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # a socket path: metadata only, never blocks for long


class ControlConnection:
    """One kept-alive connection: calls go one after another over it (not concurrently)."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self._stream = stream
        self._buffer = bytearray()

    async def call(self, op: str, **args: Any) -> Any:
        try:
            await _send(self._stream, {"op": op, "args": args})
            body = await _receive(self._stream, self._buffer)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            body = None  # the agent closed it (idle too long, or gone): as a closed answer
        return response_result(body)

    async def aclose(self) -> None:
        await self._stream.aclose()


class ControlClient:
    """The trio client (the dashboard's, the benchmarks'). `call` and `stream` open a connection
    each; `connection` keeps one for many calls. The `swarmlet` command uses
    `control_client.BlockingControlClient`, which needs no trio."""

    def __init__(self, path: Path) -> None:
        self.path = path

    async def _open(self) -> trio.SocketStream:
        try:
            return await trio.open_unix_socket(str(self.path))
        except OSError as exc:
            raise agent_unavailable(self.path, exc) from None

    async def call(self, op: str, **args: Any) -> Any:
        async with self.connection() as connection:
            return await connection.call(op, **args)

    async def open_connection(self) -> ControlConnection:
        """A kept-alive connection, which the caller closes (`ControlConnection.aclose`)."""
        return ControlConnection(await self._open())

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[ControlConnection]:
        connection = await self.open_connection()
        try:
            yield connection
        finally:
            await connection.aclose()

    @contextlib.asynccontextmanager
    async def stream(self, op: str, **args: Any) -> AsyncIterator[AsyncIterator[Any]]:
        stream = await self._open()

        async def items() -> AsyncIterator[Any]:
            buffer = bytearray()
            while True:
                is_item, item = stream_item(await _receive(stream, buffer))
                if not is_item:
                    return
                yield item

        async with stream:
            await _send(stream, {"op": op, "args": args})
            yield items()
