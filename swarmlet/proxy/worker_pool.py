"""The agent's side of the routing mesh's worker processes: `WorkerPool` starts N workers
(`swarmlet.proxy.worker_process`), feeds each the agent's route table, restarts the ones that
die and keeps their counters, so that the mesh uses more than the one core the agent's event
loop runs on and its bytes do not wait behind Raft and gossip.

The agent's `Proxy` keeps its own listeners (they detect port conflicts) and opens them with
SO_REUSEPORT; each worker opens the same ports the same way, and the kernel spreads new
connections over all of them. The price of SO_REUSEPORT: another program of the same user that
also sets it could share a published port unnoticed, where without workers its bind would fail
and be reported.

The pool sends a `RouteTable` (`swarmlet.proxy.worker_protocol`) from the same `Proxy._sync`
that updates the agent's own table, so an endpoint that leaves (a replica being stopped: drain)
leaves every worker in the same round, and reads each worker's `WorkerReport`s.

Invariants: a worker never outlives its agent: the pool spawns it from the event loop's thread
(its parent-death signal follows the spawning thread, and trio's thread pool would spawn from
another), and closing its control socket stops it. A worker that dies is restarted after
RESTART_DELAY_S, its last counters kept (`retire`), so the totals stay monotonic. This module
does not know how a worker serves: that is the worker process's own.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping

import trio

from swarmlet.errors import RemoteProtocolError
from swarmlet.proxy.counters import PortCounters, PortKey, retire
from swarmlet.proxy.routes import Route
from swarmlet.proxy.worker_protocol import ControlDecoder, RouteTable, WorkerReport, encode

_WORKER_MAIN = "swarmlet.proxy.worker_main"

log = logging.getLogger(__name__)

RESTART_DELAY_S = 1.0


def default_worker_count() -> int:
    """One worker per core beyond two: the agent serves too, and the host's other work (the
    replicas, the clients, the kernel's share of every connection) needs a core as well. On 2
    cores a worker only takes CPU from the replicas and the clients (`bench.proxy --workers`
    shows the cost), so 2 cores get none."""
    return max(0, (os.cpu_count() or 1) - 2)


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
                await stream.send_all(encode(table))
                sent = table
            await changed.wait()

    async def _read_reports(self, worker: _Worker, stream: trio.SocketStream) -> None:
        """Until the worker closes its end (it died)."""
        decoder = ControlDecoder(WorkerReport)
        try:
            async for chunk in stream:
                for report in decoder.feed(chunk):
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
