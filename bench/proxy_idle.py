"""10,000 idle connections through swarmlet's proxy: memory and file descriptors per connection,
and whether the proxy still answers a new request while holding them.

    .venv/bin/python -m bench.proxy_idle [--connections 10000] [--workers N]

The proxy under test is swarmlet's `Proxy` (the same class every agent runs), in this process,
with N worker processes (`SWARMLET_PROXY_WORKERS`) sharing the port; the replica is a small trio
server in a child process that holds every connection open; the clients are another process.
Everything is on 127.0.0.1. Each proxy process needs 2 descriptors per connection it holds: where
the hard limit is too low for all of them in one process (and cannot be raised without
CAP_SYS_RESOURCE), workers split them (the kernel spreads new connections over the processes).
Figures are printed, not asserted.
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
from swarmlet.proxy.mesh import Proxy, Route
from swarmlet.proxy.tcp import FD_RESERVE, raise_fd_limit
from swarmlet.state.observed import Endpoint


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
    parser.add_argument("--workers", type=int, default=0, help="proxy worker processes")
    args = parser.parse_args()
    limit = raise_fd_limit()
    # Per process, and the kernel does not split exactly evenly: keep 10% slack.
    fit = (
        (limit - FD_RESERVE) // 2 * (args.workers + 1) * 9 // 10
        if args.workers
        else ((limit - FD_RESERVE) // 2)
    )
    print(
        f"file descriptor limit: {limit} per process, {args.workers + 1} proxy process(es) "
        f"taking 2 per connection: room for {fit}"
    )
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
        proxy = Proxy("127.0.0.1", lambda: [route], workers=args.workers)
        me = psutil.Process(os.getpid())

        def processes() -> list[psutil.Process]:
            pids = proxy.workers.pids if proxy.workers is not None else []
            return [me, *(psutil.Process(pid) for pid in pids)]

        def held() -> int:
            return sum(c.active for c in proxy._counters() if c.key == route.key)

        def rss() -> int:
            return sum(p.memory_info().rss for p in processes())

        def fds() -> int:
            return sum(p.num_fds() for p in processes())

        async with trio.open_nursery() as nursery:
            await nursery.start(proxy.run)
            while proxy.workers is not None and not proxy.workers.in_step():  # noqa: ASYNC110
                await trio.sleep(0.1)  # the workers report no event
            rss_before = rss()
            fds_before = fds()
            crx, ctx = multiprocessing.Pipe()
            clients = multiprocessing.Process(
                target=_clients, args=(port, args.connections, ctx), daemon=True
            )
            started = time.monotonic()
            clients.start()
            opened = await trio.to_thread.run_sync(crx.recv)
            while held() < opened:  # noqa: ASYNC110 - a counter, not an event
                await trio.sleep(0.1)
            elapsed = time.monotonic() - started
            await trio.sleep(2.0)
            rss_after = rss()
            fds_after = fds()
            # A new request still goes through while the proxy holds them all.
            t0 = time.monotonic()
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            await stream.send_all(b"ping")
            answer = await stream.receive_some(10)
            latency_ms = (time.monotonic() - t0) * 1000
            await stream.aclose()
            per_process = [
                sum(c.active for c in report.values() if c.key == route.key)
                for report in (proxy.workers.counters()[1:] if proxy.workers else [])
            ]
            own = proxy.relay.listeners[route.key].stats.active
            print(
                f"idle connections held: {held()} (opened in {elapsed:.1f} s; agent process "
                f"{own}, workers {per_process})"
            )
            print(
                f"proxy RSS, all processes: {rss_before / 2**20:.1f} MiB -> "
                f"{rss_after / 2**20:.1f} MiB "
                f"({(rss_after - rss_before) / max(1, opened) / 1024:.1f} KiB per connection)"
            )
            print(f"proxy file descriptors: {fds_before} -> {fds_after} (2 per connection)")
            print(f"a new request meanwhile: answered {answer!r} in {latency_ms:.1f} ms")
            crx.send(True)
            clients.join(timeout=30)
            nursery.cancel_scope.cancel()

    trio.run(run)
    replica.terminate()
    print(f"getrusage maxrss: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
