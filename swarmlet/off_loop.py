"""Computation that would hold the event loop for long, run in a thread instead.

The loop goes on meanwhile (Raft's heartbeats, gossip, the mesh), but only as often as it gets
the GIL back: each time it gave it up for a system call it waits up to the interpreter's switch
interval, 5 ms by default, so a loop turn of a dozen system calls took tens of milliseconds,
and a leader creating 100,000 tasks sent its heartbeats late past the election timeout
(`bench.big_service`: an election in 3 of 5 runs at 5 ms, none in 6 at 1 ms). So while any such
thread runs, the interval is THREAD_SWITCH_INTERVAL_S; only meanwhile: at 1 ms throughout,
writes through a follower lost 4-8% (more hand-offs with the disk thread). And meanwhile the
cyclic garbage collector is paused: the thread's allocations set collections off, and a
collection holds the GIL whole (decoding a worker's 3.7 MiB frame of 174,080 objects beside a
heap of 300,000 held the loop 0.34 s in one; 0.03 s with the collector paused). What the thread
built dies by reference count; a cycle waits for the next collection after. The interval and the
collector are the process's: one count of the threads computing, for every agent in it (tests
and simulations run several), and what they were comes back when the last ends.
"""

from __future__ import annotations

import contextlib
import gc
import sys
from collections.abc import Callable, Iterator
from typing import TypeVar

import trio

T = TypeVar("T")

THREAD_SWITCH_INTERVAL_S = 0.001


class _Computing:
    threads = 0
    saved_interval = sys.getswitchinterval()
    collector_was_on = True


@contextlib.contextmanager
def gil_handed_back_quickly() -> Iterator[None]:
    """The short switch interval, and the collector paused, while the block runs (see the
    module's docstring)."""
    if not _Computing.threads:
        _Computing.saved_interval = sys.getswitchinterval()
        sys.setswitchinterval(THREAD_SWITCH_INTERVAL_S)
        _Computing.collector_was_on = gc.isenabled()
        gc.disable()
    _Computing.threads += 1
    try:
        yield
    finally:
        _Computing.threads -= 1
        if not _Computing.threads:
            sys.setswitchinterval(_Computing.saved_interval)
            if _Computing.collector_was_on:
                gc.enable()


async def run(compute: Callable[[], T], limiter: trio.CapacityLimiter | None = None) -> T:
    """`compute()` in a thread (one of `limiter`'s, if given), the GIL handed back quickly."""
    with gil_handed_back_quickly():
        return await trio.to_thread.run_sync(compute, limiter=limiter)
