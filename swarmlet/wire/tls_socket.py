"""TLS on the socket itself: a trio Stream over a non-blocking `ssl.SSLSocket`.

trio.SSLStream runs OpenSSL over memory BIOs: every record goes through Python (an
SSLWantReadError per read, the BIOs, a lock and conflict detectors), tens of microseconds per
frame, which every agent paid on every Raft message and forwarded write (bench/README.md: TLS was
the largest part of what a replicated write cost beyond the tree before it). Here OpenSSL reads
and writes the socket itself; Python runs only to wait for readiness when OpenSSL would block.

Contract: trio.abc.Stream's, for one receiving and one sending task at a time (FramedStream
has one reader and a send lock), plus the peer's certificate and the ALPN protocol the handshake
selected. Like trio's streams, every call is a checkpoint: a reader that always finds data
still lets the other tasks run. A close without TLS's close_notify reads as the end of the
stream (b""), as a TCP close would: the framing above says whether a frame was cut.
"""

from __future__ import annotations

import functools
import socket
import ssl
from collections.abc import Callable
from typing import TypeVar

import trio

T = TypeVar("T")

_RECEIVE_BYTES = 65536


class TlsSocketStream(trio.abc.Stream):
    def __init__(self, sock: ssl.SSLSocket) -> None:
        self._sock = sock

    @classmethod
    async def handshake(
        cls, stream: trio.SocketStream, context: ssl.SSLContext, *, server_side: bool
    ) -> TlsSocketStream:
        """Take over `stream`'s socket (the SocketStream is left empty: closing it does
        nothing) and complete the TLS handshake on it. trio.BrokenResourceError if the
        handshake fails; the socket is closed on any failure or cancellation."""
        plain = socket.socket(fileno=stream.socket.detach())
        plain.setblocking(False)
        sock = context.wrap_socket(
            plain, server_side=server_side, do_handshake_on_connect=False, server_hostname=None
        )
        self = cls(sock)
        try:
            await self._retry(sock.do_handshake)
        except BaseException:
            self._close()
            raise
        return self

    def setsockopt(self, level: int, option: int, value: int) -> None:
        self._sock.setsockopt(level, option, value)

    async def _retry(self, op: Callable[[], T]) -> T:
        """Call `op` until OpenSSL does not need to wait for the socket; OS and TLS errors as
        trio.BrokenResourceError, as trio's streams raise them."""
        while True:
            try:
                return op()
            except ssl.SSLWantReadError:
                await trio.lowlevel.wait_readable(self._sock)
            except ssl.SSLWantWriteError:
                await trio.lowlevel.wait_writable(self._sock)
            except (ssl.SSLError, OSError) as exc:
                if self._sock.fileno() == -1:
                    raise trio.ClosedResourceError("the stream was closed") from None
                raise trio.BrokenResourceError(f"TLS stream broken: {exc}") from exc

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        await trio.lowlevel.checkpoint_if_cancelled()
        size = max_bytes or _RECEIVE_BYTES

        def read() -> bytes:
            try:
                return self._sock.recv(size)
            except ssl.SSLZeroReturnError:  # the peer's close_notify
                return b""

        data = await self._retry(read)
        await trio.lowlevel.cancel_shielded_checkpoint()
        return data

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()
        view = memoryview(data)
        while view:
            sent = await self._retry(functools.partial(self._sock.send, view))
            view = view[sent:]
        await trio.lowlevel.cancel_shielded_checkpoint()

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.wait_writable(self._sock)

    def getpeercert(self) -> bytes | None:
        """The peer's certificate, DER (verified in the handshake by the context)."""
        return self._sock.getpeercert(binary_form=True)

    def selected_alpn_protocol(self) -> str | None:
        return self._sock.selected_alpn_protocol()

    def _close(self) -> None:
        if self._sock.fileno() != -1:
            trio.lowlevel.notify_closing(self._sock)  # wakes a task waiting on it
            self._sock.close()

    async def aclose(self) -> None:
        self._close()
        await trio.lowlevel.checkpoint()
