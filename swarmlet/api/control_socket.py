"""The control API: what the `swarmlet` command (and the dashboard) ask the local agent.

Transport: a Unix socket in the data dir, mode 0600 (owner only). Each request and response is a
length-prefixed msgpack map of plain values (JSON-like, since most results end up printed as JSON).

    request   {"op": "node.ls", "args": {...}}
    response  {"ok": true, "result": ...}
            | {"ok": false, "error": "message", "type": "UsageError"}
    stream    {"item": ...} ... then {"ok": true, "result": null}    (events, logs -f, ...)

One request per connection keeps the server trivial and makes a hung client harmless.
"""

from __future__ import annotations

import contextlib
import logging
import os
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import msgpack
import trio

from swarmlet import errors
from swarmlet.errors import AgentUnavailableError, RemoteProtocolError, SwarmletError

log = logging.getLogger(__name__)

_LEN = struct.Struct(">I")
MAX_API_FRAME_BYTES = 16 * 1024 * 1024

Handler = Callable[[dict[str, Any]], Awaitable[Any]]
Emit = Callable[[Any], Awaitable[None]]
StreamHandler = Callable[[dict[str, Any], Emit], Awaitable[None]]


async def _send(stream: trio.abc.SendStream, body: Any) -> None:
    data = msgpack.packb(body, use_bin_type=True)
    await stream.send_all(_LEN.pack(len(data)) + data)


async def _receive(stream: trio.abc.ReceiveStream, buffer: bytearray) -> Any | None:
    async def fill(n: int) -> bool:
        while len(buffer) < n:
            chunk = await stream.receive_some(65536)
            if not chunk:
                return False
            buffer.extend(chunk)
        return True

    if not await fill(_LEN.size):
        return None
    (length,) = _LEN.unpack(buffer[: _LEN.size])
    if length > MAX_API_FRAME_BYTES:
        raise RemoteProtocolError(f"API frame of {length} bytes is too large")
    if not await fill(_LEN.size + length):
        raise RemoteProtocolError("connection closed inside a frame")
    body = bytes(buffer[_LEN.size : _LEN.size + length])
    del buffer[: _LEN.size + length]
    try:
        return msgpack.unpackb(body, raw=False, strict_map_key=False)
    except Exception as exc:
        raise RemoteProtocolError(f"undecodable API frame: {exc}") from None


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

    async def handle(stream: trio.SocketStream) -> None:
        buffer = bytearray()
        try:
            request = await _receive(stream, buffer)
            if not isinstance(request, dict) or not isinstance(request.get("op"), str):
                await _send(stream, {"ok": False, "error": "bad request", "type": "UsageError"})
                return
            op = request["op"]
            args = request.get("args") or {}
            if not isinstance(args, dict):
                args = {}
            try:
                if op in handlers:
                    result = await handlers[op](args)
                    await _send(stream, {"ok": True, "result": result})
                elif op in streams:

                    async def emit(item: Any) -> None:
                        await _send(stream, {"item": item})

                    await streams[op](args, emit)
                    await _send(stream, {"ok": True, "result": None})
                else:
                    await _send(
                        stream,
                        {"ok": False, "error": f"unknown operation {op}", "type": "UsageError"},
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
                    {
                        "ok": False,
                        "error": f"internal error in {op}: {exc!r}",
                        "type": "SwarmletError",
                    },
                )
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


def _raise_error(body: dict[str, Any]) -> None:
    kind = getattr(errors, str(body.get("type", "")), None)
    message = str(body.get("error", "unknown error"))
    if kind is errors.NotLeaderError:
        raise errors.NotLeaderError(body.get("leader"))
    if isinstance(kind, type) and issubclass(kind, SwarmletError) and kind is not errors.StackError:
        raise kind(message)
    raise SwarmletError(message)


class ControlClient:
    """The CLI's side. Every method opens its own connection."""

    def __init__(self, path: Path) -> None:
        self.path = path

    async def _open(self) -> trio.SocketStream:
        try:
            return await trio.open_unix_socket(str(self.path))
        except OSError as exc:
            raise AgentUnavailableError(
                f"no agent answers at {self.path} ({exc.strerror or exc}); "
                "is it running? (`swarmlet agent --detach` starts it)"
            ) from None

    async def call(self, op: str, **args: Any) -> Any:
        stream = await self._open()
        async with stream:
            await _send(stream, {"op": op, "args": args})
            body = await _receive(stream, bytearray())
        if body is None:
            raise AgentUnavailableError("the agent closed the connection without answering")
        if not body.get("ok"):
            _raise_error(body)
        return body.get("result")

    @contextlib.asynccontextmanager
    async def stream(self, op: str, **args: Any) -> AsyncIterator[AsyncIterator[Any]]:
        stream = await self._open()

        async def items() -> AsyncIterator[Any]:
            buffer = bytearray()
            while True:
                body = await _receive(stream, buffer)
                if body is None:
                    raise AgentUnavailableError("the agent closed the stream")
                if "item" in body:
                    yield body["item"]
                    continue
                if not body.get("ok"):
                    _raise_error(body)
                return

        async with stream:
            await _send(stream, {"op": op, "args": args})
            yield items()
