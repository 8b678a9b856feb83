"""One thread that does the Raft driver's blocking disk work, one call at a time, in order.

Why not `trio.to_thread.run_sync`, which the rest of the agent uses: the driver hands every
Ready's save (an fdatasync) to a thread, on every member, for every batch of writes, and the
hand-off is on the write's path. `to_thread` pays for what this caller does not need (a capacity
limiter, a copy of the context, a thread taken from and returned to a cache, a cancellation
protocol): 2,000 fdatasyncs of 200 bytes cost ~125-140 us of CPU and ~205-230 us wall each
through it, ~92 us and ~170-175 us through one waiting thread and a queue (~54 us and ~130 us
on the event loop, which must not wait for the disk: a stalled disk would stall gossip too, and
get the node declared dead).

Semantics are `to_thread.run_sync`'s default: the caller cannot be cancelled out of a call under
way (the driver never goes on while a save may be half done), and an exception in the call is
raised in the caller. The thread ends after `IDLE_S` without work, and a call starts another.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import outcome
import trio

T = TypeVar("T")

IDLE_S = 10.0  # a thread without work this long ends (as trio's own worker threads do)

_Job = tuple[Callable[..., Any], tuple[Any, ...], trio.lowlevel.TrioToken, trio.lowlevel.Task]


class DiskThread:
    def __init__(self, name: str = "raft-disk", *, idle_s: float = IDLE_S) -> None:
        self.name = name
        self.idle_s = idle_s
        self._jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        # Guards `_running` against the race of a job queued as the idle thread decides to end.
        self._lock = threading.Lock()
        self._running = False
        self.threads_started = 0  # for tests: how many threads this has started

    async def run_sync(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` in this object's thread, after every call queued before it."""
        task = trio.lowlevel.current_task()
        job = (fn, args, trio.lowlevel.current_trio_token(), task)
        with self._lock:
            self._jobs.put(job)
            if not self._running:
                self._running = True
                self.threads_started += 1
                threading.Thread(target=self._work, name=self.name, daemon=True).start()
        result: T = await trio.lowlevel.wait_task_rescheduled(
            lambda _: trio.lowlevel.Abort.FAILED  # not cancellable while the call is under way
        )
        return result

    def _work(self) -> None:
        while True:
            try:
                fn, args, token, task = self._jobs.get(timeout=self.idle_s)
            except queue.Empty:
                with self._lock:
                    if self._jobs.empty():
                        self._running = False
                        return
                continue
            result = outcome.capture(fn, *args)
            # RunFinishedError: the caller's trio run ended (the process stops): nobody waits.
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(trio.lowlevel.reschedule, task, result)
