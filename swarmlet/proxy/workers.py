"""The routing mesh's worker processes: N extra processes that serve the agent's published ports
alongside it, so that the mesh uses more than the one core the agent's event loop runs on and
its bytes do not wait behind Raft and gossip.

The agent's `Proxy` keeps its own listeners (they detect port conflicts) and opens them with
SO_REUSEPORT; each worker opens the same ports the same way, and the kernel spreads new
connections over all of them. A worker serves with the agent's code (`swarmlet.proxy.tcp`).
The price of SO_REUSEPORT: another program of the same user that also sets it could share a
published port unnoticed, where without workers its bind would fail and be reported.

Agent -> worker, over a Unix socketpair, msgpack (`swarmlet.wire.codec`): a `RouteTable` each time
the agent's routes change, latest wins; the worker then listens on exactly the ports the agent
holds, with the same endpoints. Sent from the same `Proxy._sync` that updates the agent's own
table, so an endpoint that leaves (a replica being stopped: drain) leaves every worker in the
same round. Worker -> agent: a `WorkerReport` of its cumulative counters, when they changed, at
most every REPORT_INTERVAL_S (`swarmlet.proxy.counters` adds them up).

Invariants: a worker never outlives its agent. It dies with it even on SIGKILL (a parent-death
signal, PR_SET_PDEATHSIG, set by the worker itself since trio spawns from a thread and the
signal follows the spawning thread; this module spawns from the event loop's thread), and exits
when its control socket closes. A worker holds only ports that are in the agent's last table.
A worker that dies is restarted after RESTART_DELAY_S, its counters kept (`retire`).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass

import trio

from swarmlet.errors import RemoteProtocolError
from swarmlet.logs import configure_logging
from swarmlet.proxy.counters import PortCounters, PortKey, retire, snapshot
from swarmlet.proxy.routes import Route
from swarmlet.proxy.tcp import Relay, connection_budget
from swarmlet.wire import catalog
from swarmlet.wire import codec as wire

_WORKER_MAIN = "swarmlet.proxy.worker_main"

log = logging.getLogger(__name__)

REPORT_INTERVAL_S = 0.5
RESTART_DELAY_S = 1.0
CONTROL_MAX_BYTES = 16 * 1024 * 1024  # one route table or report, at most
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


@dataclass(frozen=True, slots=True)
class RouteTable:
    """Every port the agent listens on, with its endpoints: the worker listens on these."""

    version: int  # counts the tables the agent sent; a worker's reports echo the last applied
    publish_host: str
    routes: tuple[Route, ...]


@dataclass(frozen=True, slots=True)
class WorkerReport:
    """A worker's counters since it started, for each port it listens on. Sent when they
    changed, and at once after each route table is applied."""

    table_version: int
    ports: tuple[PortCounters, ...]


# Registered under `catalog.PROXY_WORKERS` (append only).
WIRE_TYPES: tuple[type, ...] = (Route, RouteTable, PortCounters, WorkerReport)
wire.register_all(catalog.PROXY_WORKERS, WIRE_TYPES)


def default_worker_count() -> int:
    """One worker per core beyond two: the agent serves too, and the host's other work (the
    replicas, the clients, the kernel's share of every connection) needs a core as well.
    Measured on 2 cores (bench/README.md): a worker there took CPU from the replicas and the
    clients and lost throughput and p99, so 2 cores get none."""
    return max(0, (os.cpu_count() or 1) - 2)


# ---------------------------------------------------------------------------- the agent's side


class _Worker:
    def __init__(self) -> None:
        self.report: dict[PortKey, PortCounters] = {}
        self.pid: int | None = None
        self.applied = -1  # the version of the last route table it applied


class WorkerPool:
    """Runs `count` workers (the first ones when the first route appears), feeds them the route
    table, and keeps their counters."""

    def __init__(self, count: int) -> None:
        if count < 1:
            raise ValueError(f"a worker pool needs at least 1 worker, got {count}")
        self._workers = [_Worker() for _ in range(count)]
        self._table = RouteTable(0, "", ())
        self._changed = trio.Event()
        self._retired: dict[PortKey, PortCounters] = {}

    @property
    def pids(self) -> list[int]:
        return [w.pid for w in self._workers if w.pid is not None]

    @property
    def table_version(self) -> int:
        """Counts the route tables published (each one a change)."""
        return self._table.version

    def in_step(self) -> bool:
        """Every worker runs and has applied the latest route table."""
        return all(w.pid is not None and w.applied == self._table.version for w in self._workers)

    def publish(self, publish_host: str, routes: tuple[Route, ...]) -> None:
        """The ports the agent holds now; every worker gets them at once (latest wins)."""
        if (publish_host, routes) == (self._table.publish_host, self._table.routes):
            return
        self._table = RouteTable(self._table.version + 1, publish_host, routes)
        self._changed.set()
        self._changed = trio.Event()
        held = {r.key for r in routes}
        self._retired = {k: c for k, c in self._retired.items() if k in held}

    def counters(self) -> list[Mapping[PortKey, PortCounters]]:
        """What the workers counted, the ones that died included, to add to the agent's own."""
        return [self._retired, *(w.report for w in self._workers)]

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            task_status.started()
            while not self._table.routes:  # no published port: no process to start
                await self._changed.wait()
            for worker in self._workers:
                nursery.start_soon(self._keep_running, worker)

    async def _keep_running(self, worker: _Worker) -> None:
        while True:
            await self._run_once(worker)
            self._retired = retire(self._retired, worker.report)
            worker.report, worker.applied = {}, -1
            await trio.sleep(RESTART_DELAY_S)

    async def _run_once(self, worker: _Worker) -> None:
        ours, theirs = socket.socketpair()
        try:
            # Spawned from this thread, not trio's thread pool: the worker's parent-death
            # signal follows the thread that forked it.
            process = subprocess.Popen(  # noqa: ASYNC220 - see above; a fork is quick
                [sys.executable, "-m", _WORKER_MAIN, str(theirs.fileno()), str(os.getpid())],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
            )
        except OSError as exc:
            ours.close()
            log.error("cannot start a proxy worker: %s", exc)
            return
        finally:
            theirs.close()
        worker.pid = process.pid
        stream = trio.SocketStream(trio.socket.from_stdlib_socket(ours))
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._send_tables, stream)
                await self._read_reports(worker, stream)
                nursery.cancel_scope.cancel()
        finally:
            worker.pid = None
            with trio.CancelScope(shield=True):
                await stream.aclose()
                status = await _kill_and_reap(process)
            if status != -signal.SIGKILL:  # not our own kill: it died by itself
                log.error("proxy worker %d exited with status %s", process.pid, status)

    async def _send_tables(self, stream: trio.SocketStream) -> None:
        sent = None
        while True:
            table, changed = self._table, self._changed
            if table != sent:
                await stream.send_all(wire.encode(table))
                sent = table
            await changed.wait()

    async def _read_reports(self, worker: _Worker, stream: trio.SocketStream) -> None:
        """Until the worker closes its end (it died)."""
        unpacker = wire.new_unpacker(CONTROL_MAX_BYTES)
        try:
            async for chunk in stream:
                unpacker.feed(chunk)
                for value in unpacker:
                    report = wire.from_plain(value, expect=(WorkerReport,))
                    worker.report = {c.key: c for c in report.ports}
                    worker.applied = report.table_version
        except (trio.BrokenResourceError, RemoteProtocolError) as exc:
            log.error("proxy worker %s: %s", worker.pid, exc)


async def _kill_and_reap(process: subprocess.Popen[bytes]) -> int | None:
    """SIGKILL the worker and wait for it off the event loop's back (a pidfd)."""
    with contextlib.suppress(ProcessLookupError):
        process.kill()
    try:
        pidfd = os.pidfd_open(process.pid)
    except OSError:  # already reaped, or no pidfd on this kernel: it is dead or dies now
        return process.wait()
    try:
        with trio.move_on_after(5.0):
            await trio.lowlevel.wait_readable(pidfd)
    finally:
        os.close(pidfd)
    return process.poll()


# ---------------------------------------------------------------------------- the worker's side


async def serve_worker(control: socket.socket) -> None:
    """Serve the ports of each route table the agent sends, report the counters; return when
    the agent closes the control socket (it is gone)."""
    relay = Relay("", reuse_port=True)
    relay.max_connections = connection_budget()
    reporter = _Reporter(relay, trio.SocketStream(trio.socket.from_stdlib_socket(control)))
    unpacker = wire.new_unpacker(CONTROL_MAX_BYTES)
    async with trio.open_nursery() as nursery:
        await nursery.start(relay.run)
        nursery.start_soon(reporter.run)
        with contextlib.suppress(trio.BrokenResourceError):
            async for chunk in reporter.stream:
                unpacker.feed(chunk)
                for value in unpacker:
                    table = wire.from_plain(value, expect=(RouteTable,))
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
                await self.stream.send_all(wire.encode(report))
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
    """The worker process (`swarmlet.proxy.worker_main`), started by `WorkerPool` only."""
    _die_with(int(argv[2]))
    # Ctrl-C on a foreground agent reaches its whole process group: the agent stops us.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    configure_logging()
    control = socket.socket(fileno=int(argv[1]))
    trio.run(serve_worker, control)
    return 0
