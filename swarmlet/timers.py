"""Shared wake-ups: periodic looks that wait for the beat of their period.

An idle agent pays for each time it wakes up (on a 2-core virtual machine a few hundred
microseconds of CPU, mostly cold caches), far more than for the little work it then does
(issue #20). Loops that wait for the next multiple of their period on trio's clock
(`next_beat`), rather than for a period after their last turn, wake together, in one pass of the
run loop: a manager's keepalives to all its workers, and every periodic look of an agent whose
period divides another's.
"""

from __future__ import annotations

import math

import trio


def on_beat(now: float, period: float) -> float:
    """The first multiple of `period` on the clock after `now`."""
    return (math.floor(now / period) + 1) * period


def next_beat(period: float) -> float:
    """`on_beat` of trio's clock now: the deadline a periodic loop of `period` waits for."""
    return on_beat(trio.current_time(), period)
