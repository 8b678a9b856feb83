"""One routing-mesh worker process: serves the published ports of the route tables its agent
sends over the control socket, and reports its counters back (`swarmlet.proxy.worker_protocol`).
Started by `swarmlet.proxy.worker_pool.WorkerPool` only, through `swarmlet.proxy.worker_main`.

A worker serves with the agent's own code (`swarmlet.proxy.tcp`, listeners opened with
SO_REUSEPORT beside the agent's): it listens on exactly the ports of the last table applied,
with the same endpoints. It reports its cumulative counters at once after each table, then
when they changed, at most every REPORT_INTERVAL_S; each report echoes the version of the last
table applied, so the agent knows when every worker is in step.

Invariants: a worker never outlives its agent. It dies with it even on SIGKILL (a parent-death
signal, PR_SET_PDEATHSIG, set here in the worker since it only follows the thread that
spawned it), and returns when its control socket closes. It holds only ports that are in the
agent's last table. It knows nothing of the cluster: no state, no Raft, no gossip, only routes.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import socket
import sys

import trio

from swarmlet.logs import configure_logging
from swarmlet.proxy.counters import snapshot
from swarmlet.proxy.tcp import Relay, connection_budget
from swarmlet.proxy.worker_protocol import ControlDecoder, RouteTable, WorkerReport, encode

log = logging.getLogger(__name__)

REPORT_INTERVAL_S = 0.5
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


async def serve_worker(control: socket.socket) -> None:
    """Serve the ports of each route table the agent sends, report the counters; return when
    the agent closes the control socket (it is gone)."""
    relay = Relay("", reuse_port=True)
    relay.max_connections = connection_budget()
    reporter = _Reporter(relay, trio.SocketStream(trio.socket.from_stdlib_socket(control)))
    decoder = ControlDecoder(RouteTable)
    async with trio.open_nursery() as nursery:
        await nursery.start(relay.run)
        nursery.start_soon(reporter.run)
        with contextlib.suppress(trio.BrokenResourceError):
            async for chunk in reporter.stream:
                for table in decoder.feed(chunk):
                    relay.publish_host = table.publish_host
                    failed = await relay.sync({r.key: r for r in table.routes})
                    for (host, port, _), exc in failed.items():
                        log.error(
                            "proxy worker %d: cannot listen on %s:%d: %s",
                            os.getpid(),
                            host or table.publish_host,
                            port,
                            exc,
                        )
                    reporter.table_version = table.version
                    await reporter.send()
        nursery.cancel_scope.cancel()


class _Reporter:
    """The worker's counters to the agent: at once after a table, then when they change."""

    def __init__(self, relay: Relay, stream: trio.SocketStream) -> None:
        self.relay = relay
        self.stream = stream
        self.table_version = -1
        self._last: WorkerReport | None = None
        self._sending = trio.Lock()  # two tasks send: the table loop and `run`

    async def send(self) -> None:
        report = WorkerReport(
            self.table_version,
            tuple(snapshot(key, lst.stats) for key, lst in self.relay.listeners.items()),
        )
        async with self._sending:
            if report != self._last:
                await self.stream.send_all(encode(report))
                self._last = report

    async def run(self) -> None:
        while True:
            await trio.sleep(REPORT_INTERVAL_S)
            await self.send()


def _die_with(agent_pid: int) -> None:
    """SIGKILL when the agent dies, however it dies; exit now if it is already gone."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG)")
    if os.getppid() != agent_pid:  # the agent died before the signal was set
        sys.exit(0)


def main(argv: list[str]) -> int:
    """The worker process (`swarmlet.proxy.worker_main CONTROL_FD AGENT_PID`)."""
    _die_with(int(argv[2]))
    # Ctrl-C on a foreground agent reaches its whole process group: the agent stops us.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    configure_logging()
    control = socket.socket(fileno=int(argv[1]))
    trio.run(serve_worker, control)
    return 0
