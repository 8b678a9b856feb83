"""The routing mesh with worker processes, on real loopback sockets: a published port served by
the agent's `Proxy` and a worker (SO_REUSEPORT) still goes round-robin over every endpoint, the
counters add up, endpoint and route changes reach the worker, and no worker outlives its agent
or holds a port after its route is gone."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
from collections import Counter
from collections.abc import Callable
from functools import partial
from pathlib import Path

import trio

from swarmlet.proxy.mesh import Proxy
from swarmlet.proxy.routes import Route
from swarmlet.state.observed import Endpoint

TIMEOUT_S = 30  # a worker is a new Python process: allow for a loaded machine


async def _replica(nursery: trio.Nursery, name: bytes) -> Endpoint:
    """Answers every connection with its name, then closes."""

    async def handle(stream: trio.SocketStream) -> None:
        async with stream:
            await stream.receive_some(100)
            await stream.send_all(name)

    listeners = await nursery.start(partial(trio.serve_tcp, handle, 0, host="127.0.0.1"))
    return Endpoint(80, "tcp", "127.0.0.1", listeners[0].socket.getsockname()[1])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def _ask(port: int) -> bytes:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(b"hi")
        answer = b""
        while chunk := await stream.receive_some(100):
            answer += chunk
        return answer


async def _until(done: Callable[[], bool]) -> None:
    while not done():  # noqa: ASYNC110 - the state lives in another process
        await trio.sleep(0.05)


async def _synced(proxy: Proxy) -> None:
    """Until the proxy has re-read its routes and every worker has applied them."""
    workers = proxy.workers
    assert workers is not None
    version = workers.table_version
    proxy.notify()
    await _until(lambda: workers.table_version > version and workers.in_step())


def _port_is_free(port: int) -> bool:
    with socket.socket() as s:
        # SO_REUSEADDR passes over the port's TIME_WAIT connections, not over a listener.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            s.listen()
        except OSError:
            return False
        return True


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


async def test_with_a_worker_every_endpoint_is_reached_in_turn_and_the_counters_add_up() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            names = [b"r0", b"r1", b"r2"]
            endpoints = [await _replica(nursery, name) for name in names]
            port = _free_port()
            route = Route("web", port, "tcp", tuple(endpoints))
            proxy = Proxy("127.0.0.1", lambda: [route], workers=1)
            await nursery.start(proxy.run)
            assert proxy.workers is not None
            await _until(proxy.workers.in_step)

            answers = Counter([await _ask(port) for _ in range(60)])
            # Each process goes round-robin over its share of the connections: per endpoint,
            # 20 give or take one per process.
            assert set(answers) == set(names)
            assert all(18 <= n <= 22 for n in answers.values()), answers

            key = f"{port}/tcp"
            await _until(lambda: proxy.stats()[key]["connections"] == 60)
            stats = proxy.stats()[key]
            by_endpoint = {
                f"{e.host}:{e.port}": answers[n] for e, n in zip(endpoints, names, strict=True)
            }
            assert stats["endpoints"] == by_endpoint
            assert stats["active"] == 0 and stats["errors"] == 0
            assert stats["bytes_in"] == 2 * 60 and stats["bytes_out"] == 2 * 60
            assert proxy.connection_counts() == {"web": 60}
            # Both processes served: the kernel spread the connections over both listeners.
            own = proxy.relay.listeners[route.key].stats.connections
            assert 0 < own < 60
            nursery.cancel_scope.cancel()


async def test_endpoint_and_route_changes_reach_the_worker_and_free_the_port() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            a = await _replica(nursery, b"a")
            b = await _replica(nursery, b"b")
            port = _free_port()
            routes = [Route("web", port, "tcp", (a, b))]
            proxy = Proxy("127.0.0.1", lambda: routes, workers=1)
            await nursery.start(proxy.run)
            assert proxy.workers is not None
            await _until(proxy.workers.in_step)

            routes = [Route("web", port, "tcp", (b,))]  # `a` drains
            await _synced(proxy)
            assert {await _ask(port) for _ in range(20)} == {b"b"}

            routes = []
            await _synced(proxy)
            assert _port_is_free(port)
            nursery.cancel_scope.cancel()


async def test_a_worker_that_dies_is_replaced_and_its_counts_are_kept() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            port = _free_port()
            route = Route("web", port, "tcp", (await _replica(nursery, b"a"),))
            proxy = Proxy("127.0.0.1", lambda: [route], workers=1)
            await nursery.start(proxy.run)
            workers = proxy.workers
            assert workers is not None
            await _until(workers.in_step)
            for _ in range(30):
                assert await _ask(port) == b"a"
            key = f"{port}/tcp"
            await _until(lambda: proxy.stats()[key]["connections"] == 30)

            (first,) = workers.pids
            os.kill(first, signal.SIGKILL)
            await _until(lambda: workers.in_step() and workers.pids != [first])
            assert proxy.stats()[key]["connections"] == 30
            assert await _ask(port) == b"a"
            nursery.cancel_scope.cancel()


AGENT = textwrap.dedent(
    """
    import sys, trio
    from swarmlet.state.observed import Endpoint
    from swarmlet.proxy.mesh import Proxy
    from swarmlet.proxy.routes import Route

    async def main():
        route = Route("web", int(sys.argv[1]), "tcp", (Endpoint(80, "tcp", "127.0.0.1", 9),))
        proxy = Proxy("127.0.0.1", lambda: [route], workers=1)
        async with trio.open_nursery() as nursery:
            await nursery.start(proxy.run)
            while not proxy.workers.in_step():
                await trio.sleep(0.05)
            print(*proxy.workers.pids, flush=True)

    trio.run(main)
    """
)


async def test_workers_die_with_their_agent_even_on_sigkill() -> None:
    port = _free_port()
    agent = subprocess.Popen(  # noqa: ASYNC220 - started once, before anything runs
        [sys.executable, "-c", AGENT, str(port)], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL
    )
    try:
        with trio.fail_after(TIMEOUT_S):
            assert agent.stdout is not None
            line = await trio.to_thread.run_sync(agent.stdout.readline)
            (worker,) = map(int, line.split())
            assert _alive(worker) and not _port_is_free(port)
            agent.kill()
            await _until(lambda: not _alive(worker))
            await _until(lambda: _port_is_free(port))
    finally:
        agent.kill()
        agent.wait()
        if agent.stdout is not None:
            agent.stdout.close()
