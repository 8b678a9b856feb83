"""The network between agents: sealed UDP datagrams and sealed, framed TCP streams on one port.

Every byte that arrives from the network is untrusted. A datagram or frame that is oversized,
truncated, fails authentication or does not decode to an expected message is dropped and counted
in `Counters`; it never raises out of the receive loops and never stops the agent.

TCP connection layout: the first byte names the channel.
  ``C``  cluster channel: frames sealed with the cluster's message key.
  ``J``  join channel: followed by the 8-byte id of a join key; frames sealed with that key. Only
         the join handshake travels here (see `swarmlet.security.join`).
A frame is ``[u32 big-endian length][sealed msgpack]``; lengths above `max_frame_bytes` close the
connection before anything is allocated.
"""

from __future__ import annotations

import logging
import struct
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import trio

from swarmlet.crypto import AAD_GOSSIP, AAD_JOIN, AAD_TCP, KEY_ID_BYTES, Sealer
from swarmlet.errors import RemoteProtocolError, UsageError
from swarmlet.wire import codec as wire

log = logging.getLogger(__name__)

Address = tuple[str, int]
CHANNEL_CLUSTER = b"C"
CHANNEL_JOIN = b"J"
MAX_DATAGRAM_BYTES = 65507  # the largest UDP payload over IPv4
MAX_FRAME_BYTES = 64 * 1024 * 1024  # Raft snapshots travel in one frame
_LEN = struct.Struct(">I")


def parse_addr(text: str) -> Address:
    """`HOST:PORT` as an Address; a UsageError says what was expected."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise UsageError(f"invalid address {text!r}: expected HOST:PORT")
    return host, int(port)


class Counters(Counter[str]):
    """Named event counts (dropped_*, datagrams_in, frames_out, ...), readable through the API."""


class FramedStream:
    """Length-prefixed, sealed messages over one TCP stream. Sends are serialised by a lock."""

    def __init__(
        self,
        stream: trio.abc.Stream,
        sealer: Sealer,
        aad: bytes,
        counters: Counters,
        *,
        max_frame_bytes: int = MAX_FRAME_BYTES,
        buffered: bytes = b"",
    ) -> None:
        self.stream = stream
        self._sealer = sealer
        self._aad = aad
        self._counters = counters
        self._max = max_frame_bytes
        self._buffer = bytearray(buffered)
        self._send_lock = trio.Lock()

    async def send(self, msg: Any) -> None:
        sealed = self._sealer.seal(wire.encode(msg), self._aad)
        async with self._send_lock:
            await self.stream.send_all(_LEN.pack(len(sealed)) + sealed)
        self._counters["frames_out"] += 1

    async def send_many(self, msgs: Sequence[Any]) -> None:
        """Send each of `msgs` as its own frame, all with one write (fewer system calls when a
        sender has several messages queued; the receiver sees the same frames as from `send`)."""
        parts: list[bytes] = []
        for msg in msgs:
            sealed = self._sealer.seal(wire.encode(msg), self._aad)
            parts.append(_LEN.pack(len(sealed)))
            parts.append(sealed)
        async with self._send_lock:
            await self.stream.send_all(b"".join(parts))
        self._counters["frames_out"] += len(msgs)

    async def _read_exactly(self, n: int) -> bytes | None:
        while len(self._buffer) < n:
            chunk = await self.stream.receive_some(max(65536, n - len(self._buffer)))
            if not chunk:
                return None
            self._buffer += chunk
        data = bytes(self._buffer[:n])
        del self._buffer[:n]
        return data

    async def receive(self, *, expect: tuple[type[Any], ...] | None = None) -> Any | None:
        """The next message, or None at a clean end of stream.

        Raises RemoteProtocolError (after counting it) for a bad frame: the caller closes the
        connection, since the framing can no longer be trusted.
        """
        header = await self._read_exactly(_LEN.size)
        if header is None:
            if self._buffer:
                self._counters["dropped_frame_truncated"] += 1
                raise RemoteProtocolError("connection closed inside a frame header")
            return None
        (length,) = _LEN.unpack(header)
        if length > self._max:
            self._counters["dropped_frame_oversized"] += 1
            raise RemoteProtocolError(f"frame of {length} bytes exceeds {self._max}")
        body = await self._read_exactly(length)
        if body is None:
            self._counters["dropped_frame_truncated"] += 1
            raise RemoteProtocolError("connection closed inside a frame")
        try:
            msg = wire.decode(self._sealer.open(body, self._aad), expect=expect)
        except RemoteProtocolError:
            self._counters["dropped_frame_invalid"] += 1
            raise
        self._counters["frames_in"] += 1
        return msg

    async def aclose(self) -> None:
        await self.stream.aclose()


StreamHandler = Callable[[FramedStream, Address], Awaitable[None]]
JoinHandler = Callable[[trio.SocketStream, bytes, Address], Awaitable[None]]
DatagramHandler = Callable[[Address, Any], None]


class Transport:
    """The agent's UDP socket and TCP listener (same port), and outgoing connections."""

    def __init__(self, bind: Address, message_key: bytes, *, connect_timeout_s: float = 2.0):
        self.bind = bind
        self.counters = Counters()
        self._sealer = Sealer(message_key)
        self._udp: trio.socket.SocketType | None = None
        self._connect_timeout_s = connect_timeout_s

    def set_key(self, message_key: bytes) -> None:
        self._sealer = Sealer(message_key)

    # ------------------------------------------------------------------------------- UDP

    async def open_udp(self) -> None:
        sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
        # A burst (a gossip round to several members, push-pull fan-in) must not overflow the
        # kernel's default ~200 KiB buffer while the event loop is busy for a few milliseconds.
        sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_RCVBUF, 4 * 1024 * 1024)
        await sock.bind(self.bind)
        self._udp = sock

    async def send_datagram(self, addr: Address, msg: Any) -> bool:
        """Seal and send; False (and counted) if it could not be sent (UDP: loss is normal)."""
        assert self._udp is not None, "open_udp first"
        sealed = self._sealer.seal(wire.encode(msg), AAD_GOSSIP)
        if len(sealed) > MAX_DATAGRAM_BYTES:
            self.counters["dropped_datagram_out_oversized"] += 1
            return False
        try:
            await self._udp.sendto(sealed, addr)
        except OSError:
            self.counters["datagram_send_errors"] += 1
            return False
        self.counters["datagrams_out"] += 1
        return True

    async def serve_udp(self, handler: DatagramHandler) -> None:
        assert self._udp is not None, "open_udp first"
        while True:
            data, addr = await self._udp.recvfrom(MAX_DATAGRAM_BYTES + 1)
            self.counters["datagrams_in"] += 1
            try:
                msg = wire.decode(self._sealer.open(data, AAD_GOSSIP))
            except RemoteProtocolError as exc:
                self.counters["dropped_datagram_invalid"] += 1
                log.debug("dropped datagram from %s: %s", addr, exc)
                continue
            handler((addr[0], addr[1]), msg)

    # ------------------------------------------------------------------------------- TCP

    async def serve_tcp(
        self,
        on_stream: StreamHandler,
        on_join: JoinHandler,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        async def handle(stream: trio.SocketStream) -> None:
            addr: Address = ("?", 0)
            try:
                # Inside the try: a connection reset before we get here raises ENOTCONN.
                peer = stream.socket.getpeername()
                addr = (peer[0], peer[1])
                with trio.move_on_after(self._connect_timeout_s * 2) as hello_scope:
                    channel = await stream.receive_some(1)
                if hello_scope.cancelled_caught or not channel:
                    return
                if channel == CHANNEL_CLUSTER:
                    framed = FramedStream(stream, self._sealer, AAD_TCP, self.counters)
                    await on_stream(framed, addr)
                elif channel == CHANNEL_JOIN:
                    head = await _receive_exactly(stream, KEY_ID_BYTES)
                    if head is None:
                        return
                    await on_join(stream, head, addr)
                else:
                    self.counters["dropped_connection_bad_channel"] += 1
            except RemoteProtocolError as exc:
                log.debug("closed connection from %s: %s", addr, exc)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                self.counters["connections_broken"] += 1
            finally:
                await stream.aclose()

        listeners = await trio.open_tcp_listeners(self.bind[1], host=self.bind[0])
        task_status.started()
        await trio.serve_listeners(handle, listeners)

    async def connect(self, addr: Address) -> FramedStream:
        """A cluster-channel connection to a peer. Raises OSError if it cannot be reached."""
        with trio.fail_after(self._connect_timeout_s):
            # From our own address: peers (and firewalls) see connections come from the address
            # we advertise, not whatever source the kernel would pick (127.0.0.1 on loopback).
            stream = await trio.open_tcp_stream(addr[0], addr[1], local_address=self.bind[0])
        try:
            await stream.send_all(CHANNEL_CLUSTER)
        except BaseException:
            await stream.aclose()
            raise
        return FramedStream(stream, self._sealer, AAD_TCP, self.counters)


async def _receive_exactly(stream: trio.abc.ReceiveStream, n: int) -> bytes | None:
    data = b""
    while len(data) < n:
        chunk = await stream.receive_some(n - len(data))
        if not chunk:
            return None
        data += chunk
    return data


JOIN_ACCEPTED = b"\x00"
JOIN_REFUSED = b"\x01"


async def open_join_stream(addr: Address, join_key: bytes, key_id: bytes) -> FramedStream | None:
    """The joiner's side of the join channel; None if the cluster does not know the token."""
    stream = await trio.open_tcp_stream(addr[0], addr[1])
    await stream.send_all(CHANNEL_JOIN + key_id)
    status = await _receive_exactly(stream, 1)
    if status != JOIN_ACCEPTED:
        await stream.aclose()
        return None
    return FramedStream(stream, Sealer(join_key), AAD_JOIN, Counters())


def join_stream(stream: trio.SocketStream, join_key: bytes, counters: Counters) -> FramedStream:
    """The accepting side of the join channel, once the key id has been matched to a token."""
    return FramedStream(stream, Sealer(join_key), AAD_JOIN, counters, max_frame_bytes=1 << 20)
