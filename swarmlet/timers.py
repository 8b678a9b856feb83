"""Shared wake-ups: periodic looks that wait for the beat of their period, and looks at a
moving state paced under a stream of writes.

An idle agent pays for each time it wakes up (on a 2-core virtual machine a few hundred
microseconds of CPU, mostly cold caches), far more than for the little work it then does
(issue #20). Loops that wait for the next multiple of their period on trio's clock
(`next_beat`), rather than for a period after their last turn, wake together, in one pass of the
run loop: a manager's keepalives to all its workers, and every periodic look of an agent whose
period divides another's.

What follows the replicated state (the routing mesh's routes, the leader's orchestration, the
executor's reconcile) is notified at every applied batch of writes, which under load is every
few milliseconds on every member. Such a loop waits on a `StateFollower`, and looks again at
most every `FOLLOW_GAP_S`: a change after a quiet spell is seen at once, and a stream of them
once per gap, each look covering all that came meanwhile.
"""

from __future__ import annotations

import math

import trio

FOLLOW_GAP_S = 0.02  # the least time between two looks at the state by a loop that follows it


def on_beat(now: float, period: float) -> float:
    """The first multiple of `period` on the clock after `now`."""
    return (math.floor(now / period) + 1) * period


def next_beat(period: float) -> float:
    """`on_beat` of trio's clock now: the deadline a periodic loop of `period` waits for."""
    return on_beat(trio.current_time(), period)


class StateFollower:
    """The wake-up of a loop that follows the replicated state: `notify` at each change; the
    loop's `wait` returns at the first change since the previous `wait` returned (or at the
    deadline), but not sooner than `FOLLOW_GAP_S` after it."""

    def __init__(self) -> None:
        self._changed = trio.Event()
        self._returned_at = -math.inf

    def notify(self) -> None:
        self._changed.set()

    async def wait(self, deadline: float = math.inf) -> None:
        with trio.move_on_at(deadline):
            await self._changed.wait()
        await trio.sleep_until(self._returned_at + FOLLOW_GAP_S)
        # Reset only now: the look that follows sees whatever came during the pause.
        self._changed = trio.Event()
        self._returned_at = trio.current_time()
