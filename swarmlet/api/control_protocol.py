"""The control socket's protocol without its I/O: frames, and errors as they cross the socket.

A frame is a 4-byte big-endian length, then that many bytes of one msgpack value (the request,
response and stream bodies are described in `control_socket`). Both sides and both clients (the
trio one in `control_socket`, the blocking one in `control_client`) frame and parse with these
functions, so there is one definition of the format and of its limits.

Sans-I/O, in the manner of h11: the caller owns the socket and a receive buffer; `next_frame`
takes one complete frame off the front of the buffer, or says it needs more bytes. No trio, no
socket here: the `swarmlet` command loads this module, and a quick command must not pay for an
event loop it does not use.

Invariants: a frame longer than `MAX_API_FRAME_BYTES` is refused as soon as its length is read,
before its body is buffered; a frame that does not decode is a RemoteProtocolError, never a
crash; a peer that closes within a length prefix has sent nothing, one that closes within a body
has sent a truncated frame (`closed_inside_frame`).
"""

from __future__ import annotations

import struct
from pathlib import Path

import msgpack

from swarmlet import errors
from swarmlet.errors import RemoteProtocolError, SwarmletError

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at run time
if TYPE_CHECKING:
    from typing import Any, Final, NoReturn

FRAME_HEADER: Final = struct.Struct(">I")
MAX_API_FRAME_BYTES: Final = 16 * 1024 * 1024
RECEIVE_BYTES: Final = 65536  # one read from the socket

# What `next_frame` returns when the buffer holds no complete frame yet.
NEED_DATA: Final = object()


def encode_frame(body: Any) -> bytes:
    """`body` (plain values: maps, lists, str, bytes, numbers, bool, None) as one frame."""
    data = msgpack.packb(body, use_bin_type=True)
    return FRAME_HEADER.pack(len(data)) + data


def next_frame(buffer: bytearray) -> Any:
    """Take the first complete frame off `buffer` and return its value; NEED_DATA if the buffer
    does not hold a whole frame yet (it is left as it is). RemoteProtocolError for a frame too
    long or not msgpack."""
    if len(buffer) < FRAME_HEADER.size:
        return NEED_DATA
    (length,) = FRAME_HEADER.unpack_from(buffer)
    if length > MAX_API_FRAME_BYTES:
        raise RemoteProtocolError(f"API frame of {length} bytes is too large")
    end = FRAME_HEADER.size + length
    if len(buffer) < end:
        return NEED_DATA
    body = bytes(buffer[FRAME_HEADER.size : end])
    del buffer[:end]
    try:
        # Explicit per-object limits: nothing may declare more than the frame holds (what
        # `wire.bounds` gives msgpack; not imported here, the command must not load `wire`).
        return msgpack.unpackb(
            body,
            raw=False,
            strict_map_key=False,
            max_str_len=length,
            max_bin_len=length,
            max_array_len=length,
            max_map_len=length // 2,
            max_ext_len=0,
        )
    except Exception as exc:
        raise RemoteProtocolError(f"undecodable API frame: {exc}") from None


def closed_inside_frame(buffer: bytearray) -> bool:
    """The peer closed the connection with `buffer` left unparsed: did it cut a frame short?
    (Fewer bytes than a length prefix count as nothing sent.)"""
    return len(buffer) >= FRAME_HEADER.size


def agent_unavailable(path: Path, exc: OSError) -> errors.AgentUnavailableError:
    """The error for a control socket nothing answers on: where, why, and how to start one."""
    return errors.AgentUnavailableError(
        f"no agent answers at {path} ({exc.strerror or exc}); "
        "is it running? (`swarmlet agent --detach` starts it)"
    )


def response_result(body: Any) -> Any:
    """The result a response frame carries (None: the agent closed without answering)."""
    if body is None:
        raise errors.AgentUnavailableError("the agent closed the connection without answering")
    if not isinstance(body, dict):
        raise RemoteProtocolError(f"the agent answered with a {type(body).__name__}, not a map")
    if not body.get("ok"):
        raise_error(body)
    return body.get("result")


def stream_item(body: Any) -> tuple[bool, Any]:
    """`(True, item)` for a stream's item, `(False, None)` for its end; the error it ended with
    is raised (None: the agent closed the stream without ending it)."""
    if body is None:
        raise errors.AgentUnavailableError("the agent closed the stream")
    if isinstance(body, dict) and "item" in body:
        return True, body["item"]
    response_result(body)
    return False, None


def raise_error(body: dict[str, Any]) -> NoReturn:
    """Raise the error an `{"ok": false, ...}` response carries, as the class the agent raised
    if it is one of ours (a StackError arrives as its message: its file and key path are in it)."""
    kind = getattr(errors, str(body.get("type", "")), None)
    message = str(body.get("error", "unknown error"))
    if kind is errors.NotLeaderError:
        raise errors.NotLeaderError(body.get("leader"))
    if isinstance(kind, type) and issubclass(kind, SwarmletError) and kind is not errors.StackError:
        raise kind(message)
    raise SwarmletError(message)
