"""leader.duties.request_rate: the autoscaler's requests a second from each node's cumulative
count of its proxy's connections to a service. Each node's own increase counts, never below
zero: a node whose count went down (its agent restarted, or it lies) took away, as a difference
of totals, what the others had counted (found by review: a worker reporting ever lower counts
held a loaded service at its minimum)."""

from __future__ import annotations

import pytest

from swarmlet.leader.duties import request_rate


def test_each_nodes_increase_counts() -> None:
    assert request_rate((0.0, {"a": 100, "b": 50}), (10.0, {"a": 200, "b": 150})) == 20.0


def test_a_count_that_went_down_takes_nothing_from_the_others() -> None:
    before = {"a": 100, "liar": 10**12}
    assert request_rate((0.0, before), (10.0, {"a": 300, "liar": 0})) == 20.0


def test_a_node_new_since_the_last_sample_counts_from_its_first_count() -> None:
    assert request_rate((0.0, {"a": 0}), (10.0, {"a": 100, "new": 10**6})) == 10.0


@pytest.mark.parametrize("at", [0.0, -1.0])
def test_no_time_between_the_samples_gives_no_rate(at: float) -> None:
    assert request_rate((0.0, {"a": 0}), (at, {"a": 100})) is None
