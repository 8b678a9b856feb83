"""10,000 idle connections through swarmlet's proxy: memory and file descriptors per connection,
and whether the proxy still answers a new request while holding them.

    .venv/bin/python -m bench.proxy_idle [--connections 10000]

The proxy under test is swarmlet's `Proxy` (the same class every agent runs), in this process;
the replica is a small trio server in a child process that holds every connection open; the
clients are a third process. Everything is on 127.0.0.1. Figures are printed, not asserted.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import socket
import time

import psutil
import trio

from bench.common import free_port
from swarmlet.observed import Endpoint
from swarmlet.proxy import Proxy, Route
from swarmlet.proxy_relay import FD_RESERVE, raise_fd_limit


def _replica(port_out: multiprocessing.connection.Connection) -> None:
    raise_fd_limit()

    async def main() -> None:
        async def hold(stream: trio.SocketStream) -> None:
            async with stream:
                while data := await stream.receive_some(65536):
                    await stream.send_all(data)

        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port_out.send(listeners[0].socket.getsockname()[1])
        await trio.serve_listeners(hold, listeners)

    trio.run(main)


def _clients(port: int, count: int, done: multiprocessing.connection.Connection) -> None:
    raise_fd_limit()
    socks = []
    for _ in range(count):
        s = socket.create_connection(("127.0.0.1", port))
        socks.append(s)
    done.send(len(socks))
    done.recv()  # hold them until told to stop
    for s in socks:
        s.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--connections", type=int, default=10_000)
    args = parser.parse_args()
    limit = raise_fd_limit()
    fit = (limit - FD_RESERVE) // 2
    print(f"file descriptor limit: {limit} (the proxy takes 2 per connection: room for {fit})")
    if args.connections > fit:
        print(
            f"capping at {fit} connections: this machine's hard limit is {limit} and raising it "
            "needs CAP_SYS_RESOURCE; the agent refuses connections beyond it instead of failing"
        )
        args.connections = fit

    rx, tx = multiprocessing.Pipe()
    replica = multiprocessing.Process(target=_replica, args=(tx,), daemon=True)
    replica.start()
    replica_port = rx.recv()

    async def run() -> None:
        port = free_port()
        route = Route("idle", port, "tcp", (Endpoint(80, "tcp", "127.0.0.1", replica_port),))
        # No worker processes: every connection is held in this process, whose memory we read.
        proxy = Proxy("127.0.0.1", lambda: [route], workers=0)
        me = psutil.Process(os.getpid())

        async with trio.open_nursery() as nursery:
            await nursery.start(proxy.run)
            listener = proxy.relay.listeners[route.key]
            rss_before = me.memory_info().rss
            fds_before = me.num_fds()
            crx, ctx = multiprocessing.Pipe()
            clients = multiprocessing.Process(
                target=_clients, args=(port, args.connections, ctx), daemon=True
            )
            started = time.monotonic()
            clients.start()
            opened = await trio.to_thread.run_sync(crx.recv)
            while listener.stats.active < opened:  # noqa: ASYNC110 - a counter, not an event
                await trio.sleep(0.1)
            elapsed = time.monotonic() - started
            await trio.sleep(2.0)
            rss = me.memory_info().rss
            fds = me.num_fds()
            # A new request still goes through while the proxy holds them all.
            t0 = time.monotonic()
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            await stream.send_all(b"ping")
            answer = await stream.receive_some(10)
            latency_ms = (time.monotonic() - t0) * 1000
            await stream.aclose()
            print(f"idle connections held: {listener.stats.active - 0} (opened in {elapsed:.1f} s)")
            print(
                f"proxy RSS: {rss_before / 2**20:.1f} MiB -> {rss / 2**20:.1f} MiB "
                f"({(rss - rss_before) / max(1, opened) / 1024:.1f} KiB per connection)"
            )
            print(f"proxy file descriptors: {fds_before} -> {fds} (2 per connection)")
            print(f"a new request meanwhile: answered {answer!r} in {latency_ms:.1f} ms")
            crx.send(True)
            clients.join(timeout=30)
            nursery.cancel_scope.cancel()

    trio.run(run)
    replica.terminate()
    print(f"getrusage maxrss: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
