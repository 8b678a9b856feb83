"""`wire.tls_socket.TlsSocketStream` on real TCP sockets: what FramedStream relies on (bytes
through intact both ways at once, partial writes under back-pressure, the end of the stream,
a close while a task waits), against trio.SSLStream on the other end, so that an agent of this
release and any TLS peer speak the same TLS."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
import trio
import trio.testing

from swarmlet.wire.tls_socket import TlsSocketStream
from tests.test_certs import tls_context

TIMEOUT_S = 20


def _contexts(tmp_path: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    return tls_context(tmp_path, "s", server=True), tls_context(tmp_path, "c", server=False)


async def _pair(tmp_path: Path) -> tuple[TlsSocketStream, trio.SSLStream[trio.SocketStream]]:
    """Our stream as the server, trio's SSLStream as the client, over loopback TCP."""
    server_ctx, client_ctx = _contexts(tmp_path)
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    async with trio.open_nursery() as nursery:
        accepted: list[TlsSocketStream] = []

        async def accept() -> None:
            raw = await listener.accept()
            accepted.append(await TlsSocketStream.handshake(raw, server_ctx, server_side=True))

        nursery.start_soon(accept)
        client = trio.SSLStream(
            await trio.open_tcp_stream("127.0.0.1", port), client_ctx, server_hostname=None
        )
        await client.do_handshake()
    await listener.aclose()
    return accepted[0], client


async def _read(stream: trio.abc.ReceiveStream, n: int) -> bytes:
    data = bytearray()
    while len(data) < n:
        chunk = await stream.receive_some(65536)
        assert chunk, "the stream ended early"
        data += chunk
    return bytes(data)


async def test_large_payloads_both_ways_at_once_arrive_intact(tmp_path: Path) -> None:
    # 8 MiB each way, written before the other side reads: the socket buffers fill, so sends
    # are partial and wait for the socket, while the same stream also receives.
    ours_out, theirs_out = bytes(range(256)) * 32768, bytes(reversed(range(256))) * 32768
    with trio.fail_after(TIMEOUT_S):
        ours, theirs = await _pair(tmp_path)
        got: dict[str, bytes] = {}

        async def ours_reads() -> None:
            got["ours"] = await _read(ours, len(theirs_out))

        async def theirs_reads() -> None:
            got["theirs"] = await _read(theirs, len(ours_out))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(ours.send_all, ours_out)
            nursery.start_soon(theirs.send_all, theirs_out)
            nursery.start_soon(ours_reads)
            nursery.start_soon(theirs_reads)
        assert got == {"ours": theirs_out, "theirs": ours_out}
        assert ours.getpeercert() is not None
        await theirs.aclose()
        assert await ours.receive_some() == b""  # trio's close_notify: the end of the stream
        await ours.aclose()


async def test_a_close_without_close_notify_reads_as_the_end(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT_S):
        ours, theirs = await _pair(tmp_path)
        await theirs.send_all(b"last")
        await theirs.transport_stream.aclose()  # TCP close, no TLS goodbye
        assert await _read(ours, 4) == b"last"
        assert await ours.receive_some() == b""
        await ours.aclose()


async def test_closing_wakes_a_task_waiting_to_receive(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT_S):
        ours, theirs = await _pair(tmp_path)
        async with trio.open_nursery() as nursery:

            async def waits() -> None:
                with pytest.raises(trio.ClosedResourceError):
                    await ours.receive_some()

            nursery.start_soon(waits)
            await trio.testing.wait_all_tasks_blocked()
            await ours.aclose()
        with pytest.raises(trio.ClosedResourceError):
            await ours.send_all(b"x")
        await theirs.aclose()
