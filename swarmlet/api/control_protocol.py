"""The control socket's protocol without its I/O: frames, and errors as they cross the socket.

A message is one msgpack value (the request, response and stream bodies are described in
`control_socket`), sent as frames: a 4-byte big-endian header, then that many bytes. The header's
top bit (`MORE`) says the message goes on in the next frame; its other bits are the frame's
length, at most `MAX_API_FRAME_BYTES`. Most messages are one frame; an answer larger than that (a
`service ps` of 100,000 tasks is about 30 MB, a backup of a large state more) is cut in frames,
and a message is at most `MAX_API_MESSAGE_BYTES` in all; only a full frame says more follows.
A request is one frame (the agent reads at most `MAX_API_REQUEST_BYTES`). A client of a release
that knew only single frames reads the first header as a frame too long, and refuses it as it
did before. Both sides and both clients (the trio one in `control_socket`, the blocking one in
`control_client`) frame and parse with these functions, so there is one definition of the
format and its limits.

Sans-I/O, in the manner of h11: the caller owns the socket and a receive buffer; `next_frame`
takes one complete message off the front of the buffer, or says it needs more bytes. No trio, no
socket here: the `swarmlet` command loads this module, and a quick command must not pay for an
event loop it does not use.

Invariants: a frame longer than `MAX_API_FRAME_BYTES`, one shorter that says more follows, or
one that takes its message past the reader's limit, is refused as soon as its header is read,
before its body is buffered (so a message is at most 64 frames: empty frames that each said
more follows were an endless message held in memory, parsed again at every read);
a message that does not decode is a RemoteProtocolError, never a crash; a peer that closes
within a header has sent nothing, one that closes within a body or between the frames of one
message has sent a truncated message (`closed_inside_frame`).
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
MAX_API_MESSAGE_BYTES: Final = 1024 * 1024 * 1024  # one message, in all its frames
# What the agent reads of a request: one frame. Only answers are long (a listing, a backup).
MAX_API_REQUEST_BYTES: Final = MAX_API_FRAME_BYTES
MORE: Final = 0x8000_0000  # in a frame's header: the message goes on in the next frame
RECEIVE_BYTES: Final = 65536  # one read from the socket

# What `next_frame` returns when the buffer holds no complete frame yet.
NEED_DATA: Final = object()


def encode_frame(body: Any) -> bytes:
    """`body` (plain values: maps, lists, str, bytes, numbers, bool, None) as one message: one
    frame, or as many as its size takes. SwarmletError if it is over MAX_API_MESSAGE_BYTES."""
    return frames_of(msgpack.packb(body, use_bin_type=True))


def frames_of(data: bytes) -> bytes:
    """`data`, one packed message, as one frame or as many as its size takes (see
    `encode_frame`)."""
    if len(data) <= MAX_API_FRAME_BYTES:
        return FRAME_HEADER.pack(len(data)) + data
    if len(data) > MAX_API_MESSAGE_BYTES:
        raise SwarmletError(
            f"an answer of {len(data)} bytes is over the {MAX_API_MESSAGE_BYTES} bytes the "
            "control socket carries"
        )
    frames = []
    for start in range(0, len(data), MAX_API_FRAME_BYTES):
        piece = data[start : start + MAX_API_FRAME_BYTES]
        more = MORE if start + MAX_API_FRAME_BYTES < len(data) else 0
        frames.append(FRAME_HEADER.pack(len(piece) | more) + piece)
    return b"".join(frames)


def next_frame(buffer: bytearray, max_message_bytes: int | None = None) -> Any:
    """Take the first complete message (all its frames) off `buffer` and return its value;
    NEED_DATA if the buffer does not hold a whole message yet (it is left as it is).
    RemoteProtocolError for a frame or a message too long (`max_message_bytes`: the reader's
    limit; MAX_API_MESSAGE_BYTES if None), a short frame that says more follows, or a message
    that is not msgpack."""
    limit = MAX_API_MESSAGE_BYTES if max_message_bytes is None else max_message_bytes
    pieces: list[tuple[int, int]] = []  # (start, end) of each frame's body in `buffer`
    offset = total = 0
    while True:
        if len(buffer) < offset + FRAME_HEADER.size:
            return NEED_DATA
        (header,) = FRAME_HEADER.unpack_from(buffer, offset)
        length = header & ~MORE
        if length > MAX_API_FRAME_BYTES:
            raise RemoteProtocolError(f"API frame of {length} bytes is too large")
        if header & MORE and length != MAX_API_FRAME_BYTES:
            raise RemoteProtocolError(f"API frame of {length} bytes says more follows")
        total += length
        if total + bool(header & MORE) > limit:  # (more follows: longer still)
            raise RemoteProtocolError(f"API message of more than {total} bytes is too large")
        start = offset + FRAME_HEADER.size
        offset = start + length
        if len(buffer) < offset:
            return NEED_DATA
        pieces.append((start, offset))
        if not header & MORE:
            break
    body = b"".join(buffer[a:b] for a, b in pieces)
    del buffer[:offset]
    try:
        # Explicit per-object limits: nothing may declare more than the message holds (what
        # `wire.bounds` gives msgpack; not imported here, the command must not load `wire`).
        return msgpack.unpackb(
            body,
            raw=False,
            strict_map_key=False,
            max_str_len=total,
            max_bin_len=total,
            max_array_len=total,
            max_map_len=total // 2,
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
