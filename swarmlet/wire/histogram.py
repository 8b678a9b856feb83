"""A fixed-bucket histogram of durations: what a hot path records for Prometheus, cheaply.

`Histogram.observe` costs one `bisect` over a short tuple and two additions, with no lock and
no allocation: the drivers call it on the trio thread (proposals, Docker calls), and
`node.metrics` reads `counts` and `sum` only when Prometheus scrapes. Durations come in as
data (the caller reads its own clock), so this module is pure.

It sits in `wire` beside `transport.Counters` because `wire` is the lowest package that every
layer that records durations (raft, gossip, executor) may import; it knows nothing of the wire.

Invariants: `bounds` are finite, positive and strictly increasing; `counts` has one slot per
bound plus one for everything above the last (Prometheus' `+Inf`); a value equal to a bound
counts in that bound's bucket (Prometheus' `le`).
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Iterator

# Seconds. A Raft proposal commits in about a millisecond on an idle loopback cluster and in
# seconds when a disk or a quorum is slow; Docker calls take milliseconds (inspect) to minutes
# (a pull over a slow link).
PROPOSAL_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
DOCKER_CALL_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Histogram:
    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        if not bounds:
            raise ValueError("a histogram needs at least one bucket bound")
        if not all(math.isfinite(b) and b > 0 for b in bounds):
            raise ValueError(f"bucket bounds must be finite and positive, got {bounds}")
        if any(a >= b for a, b in itertools.pairwise(bounds)):
            raise ValueError(f"bucket bounds must increase, got {bounds}")
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> Iterator[tuple[float, int]]:
        """(upper bound, observations at or below it), the last bound being +inf."""
        total = 0
        for bound, n in zip((*self.bounds, math.inf), self.counts, strict=True):
            total += n
            yield bound, total
