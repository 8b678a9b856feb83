"""wire.histogram: the fixed-bucket histogram the drivers record durations in."""

from __future__ import annotations

import math

import pytest

from swarmlet.wire.histogram import DOCKER_CALL_BUCKETS_S, PROPOSAL_BUCKETS_S, Histogram


@pytest.mark.parametrize(
    ("value", "slot"),
    [
        (0.0, 0),
        (0.5, 0),
        (1.0, 0),  # on a bound: in that bound's bucket (Prometheus' `le`)
        (1.5, 1),
        (2.0, 1),
        (5.0, 2),
        (5.0001, 3),  # above the last bound: the +Inf bucket
        (1e9, 3),
    ],
)
def test_a_value_lands_in_the_first_bucket_whose_bound_is_not_below_it(
    value: float, slot: int
) -> None:
    h = Histogram((1.0, 2.0, 5.0))
    h.observe(value)
    assert h.counts == [int(i == slot) for i in range(4)]
    assert h.sum == value
    assert h.count == 1


def test_cumulative_counts_grow_to_everything_at_infinity() -> None:
    h = Histogram((1.0, 2.0, 5.0))
    for v in (0.1, 0.2, 1.5, 7.0, 9.0):
        h.observe(v)
    assert list(h.cumulative()) == [(1.0, 2), (2.0, 3), (5.0, 3), (math.inf, 5)]
    assert h.count == 5
    assert h.sum == pytest.approx(17.8)


@pytest.mark.parametrize(
    "bounds",
    [(), (1.0, 1.0), (2.0, 1.0), (0.0, 1.0), (-1.0, 1.0), (1.0, math.inf), (math.nan,)],
)
def test_bounds_that_are_not_finite_positive_and_increasing_are_refused(
    bounds: tuple[float, ...],
) -> None:
    with pytest.raises(ValueError, match="bucket"):
        Histogram(bounds)


def test_the_shipped_bucket_sets_are_valid() -> None:
    for bounds in (PROPOSAL_BUCKETS_S, DOCKER_CALL_BUCKETS_S):
        assert len(Histogram(bounds).counts) == len(bounds) + 1
