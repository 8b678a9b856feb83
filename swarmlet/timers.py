"""Shared wake-ups: a deadline that may come early, when the process is awake anyway.

An idle agent pays for each time it wakes up (on a 2-core virtual machine a few hundred
microseconds of CPU, mostly cold caches), far more than for the little work it then does. A
periodic job that may run a little early (a gossip probe) joins a wake-up that something else
paid for (a Raft heartbeat, a datagram), as the kernel's timer slack does for sleeping threads
(issue #20).

`wake_from(moment, event)` sets `event` in the first pass of trio's run loop at or after
`moment` that follows an I/O wait, whatever woke the loop. The caller still sleeps until its own
deadline, and when woken looks at what is due then: this only makes it look earlier. A trio
instrument watches the waits; it costs a peek at a heap per pass of the loop.

`on_beat(now, period)` is the other way to share: loops of one period that wait for the next
multiple of it on the clock wake together, in one pass, instead of each at its own phase.
"""

from __future__ import annotations

import heapq
import itertools
import math

import trio


class _Riders(trio.abc.Instrument):
    def __init__(self) -> None:
        self._heap: list[tuple[float, int, trio.Event]] = []
        self._order = itertools.count()  # ties in time: first come, first set

    def add(self, moment: float, event: trio.Event) -> None:
        heapq.heappush(self._heap, (moment, next(self._order), event))

    def after_io_wait(self, timeout: float) -> None:
        heap = self._heap
        if heap and heap[0][0] <= (now := trio.current_time()):
            while heap and heap[0][0] <= now:
                heapq.heappop(heap)[2].set()  # an event nobody waits for any more: harmless


_RIDERS = trio.lowlevel.RunVar[_Riders]("swarmlet_timers_riders")


def wake_from(moment: float, event: trio.Event) -> None:
    """Set `event` at the first wake-up of this trio run at or after `moment` (trio's clock)."""
    try:
        riders = _RIDERS.get()
    except LookupError:
        riders = _Riders()
        _RIDERS.set(riders)
        trio.lowlevel.add_instrument(riders)
    riders.add(moment, event)


def on_beat(now: float, period: float) -> float:
    """The first multiple of `period` on the clock after `now`."""
    return (math.floor(now / period) + 1) * period
