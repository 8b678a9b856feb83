"""The blocking client of the control socket: what the `swarmlet` command asks its local agent.

One request per connection (the server would take more: `control_socket`): connect, send the
request frame, read response frames until the answer. A plain blocking `socket` does this in a few
system calls; the command runs one request at a time and has nothing to do while it waits, so
it does not load trio (an event loop costs more to import than the whole request takes).
`control_socket.ControlClient` is the same client for trio code (the dashboard, the benchmarks);
both frame and parse with `control_protocol`, so they cannot drift apart.

Errors: an agent that does not answer is an AgentUnavailableError that says how to start one; an
error the agent raised is re-raised as its class (`control_protocol.raise_error`); garbage on the
socket is a RemoteProtocolError. Nothing here waits forever on its own account: it blocks only
as long as the agent takes to answer, as `docker` waits for its daemon.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from pathlib import Path

from swarmlet.api.control_protocol import (
    NEED_DATA,
    RECEIVE_BYTES,
    agent_unavailable,
    closed_inside_frame,
    encode_frame,
    next_frame,
    response_result,
    stream_item,
)
from swarmlet.errors import AgentUnavailableError, RemoteProtocolError

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at run time
if TYPE_CHECKING:
    from typing import Any


class BlockingControlClient:
    """Requests to the agent whose control socket is `path`; every call opens its own
    connection."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _open(self, op: str, args: dict[str, Any]) -> socket.socket:
        """A connection with the request sent on it."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(str(self.path))
        except OSError as exc:
            sock.close()
            raise agent_unavailable(self.path, exc) from None
        try:
            sock.sendall(encode_frame({"op": op, "args": args}))
        except OSError as exc:  # EPIPE: the agent closed before reading the request
            sock.close()
            raise AgentUnavailableError(f"the agent dropped the connection ({exc})") from None
        return sock

    def call(self, op: str, **args: Any) -> Any:
        """Send one request; return its result, or raise the error the agent answered with."""
        with self._open(op, args) as sock:
            body = _receive(sock, bytearray())
        return response_result(body)

    @contextlib.contextmanager
    def stream(self, op: str, **args: Any) -> Iterator[Iterator[Any]]:
        """Send one streaming request (`events`, `service.logs`); iterate over its items. The
        iteration ends when the agent ends the stream, and raises the error it ended with."""
        with self._open(op, args) as sock:
            yield _items(sock)


def _items(sock: socket.socket) -> Iterator[Any]:
    buffer = bytearray()
    while True:
        is_item, item = stream_item(_receive(sock, buffer))
        if not is_item:
            return
        yield item


def _receive(sock: socket.socket, buffer: bytearray) -> Any | None:
    """The next frame's value; None if the agent closed the connection before sending one."""
    while True:
        body = next_frame(buffer)
        if body is not NEED_DATA:
            return body
        try:
            chunk = sock.recv(RECEIVE_BYTES)
        except OSError as exc:  # ECONNRESET: the agent went away mid-answer
            raise AgentUnavailableError(f"the agent dropped the connection ({exc})") from None
        if not chunk:
            if closed_inside_frame(buffer):
                raise RemoteProtocolError("connection closed inside a frame")
            return None
        buffer.extend(chunk)
