"""Table tests of the SWIM/Lifeguard formulas against memberlist's numbers."""

from __future__ import annotations

import math

import pytest

from swarmlet.gossip import maths
from swarmlet.gossip.config import GossipConfig


@pytest.mark.parametrize(
    ("mult", "n", "interval_s", "expected_s"),
    [
        (4, 0, 1.0, 4.0),  # memberlist: max(1, log10(max(1, n)))
        (4, 1, 1.0, 4.0),
        (4, 10, 1.0, 4.0),
        (4, 100, 1.0, 8.0),
        (4, 1000, 1.0, 12.0),
        (4, 50, 0.3, 4 * math.log10(50) * 0.3),
        (3, 10, 0.5, 1.5),
    ],
)
def test_suspicion_timeout_scales_with_log10_of_cluster_size(
    mult: int, n: int, interval_s: float, expected_s: float
) -> None:
    assert maths.suspicion_timeout_s(mult, n, interval_s) == pytest.approx(expected_s)


@pytest.mark.parametrize(
    ("mult", "n", "expected_k"),
    [(4, 10, 2), (4, 4, 2), (4, 3, 0), (4, 2, 0), (5, 10, 3), (2, 10, 0), (1, 10, 0)],
)
def test_expected_confirmations_is_mult_minus_two_unless_too_few_members(
    mult: int, n: int, expected_k: int
) -> None:
    assert maths.suspicion_confirmations_k(mult, n) == expected_k


# memberlist suspicion_test.go TestSuspicion_remainingSuspicionTime, in seconds (elapsed = 0).
@pytest.mark.parametrize(
    ("confirmations", "k", "min_s", "max_s", "expected_s"),
    [
        (0, 3, 2.0, 30.0, 30.0),
        (1, 3, 2.0, 30.0, 16.0),  # memberlist: 14 s left after 2 s elapsed
        (2, 3, 2.0, 30.0, 7.81),  # memberlist: 4.81 s left after 3 s elapsed
        (3, 3, 2.0, 30.0, 2.0),
        (4, 3, 2.0, 30.0, 2.0),  # floored at min
        (5, 3, 2.0, 30.0, 2.0),
        (0, 0, 2.0, 30.0, 2.0),  # k < 1: no confirmations expected, min from the start
        (0, 2, 1.2, 7.2, 7.2),
        (1, 2, 1.2, 7.2, 7.2 - math.log(2) / math.log(3) * 6.0),
        (2, 2, 1.2, 7.2, 1.2),
    ],
)
def test_confirmations_shrink_the_suspicion_timeout_from_max_to_min(
    confirmations: int, k: int, min_s: float, max_s: float, expected_s: float
) -> None:
    got = maths.suspicion_remaining_timeout_s(confirmations, k, min_s, max_s)
    assert got == pytest.approx(expected_s, abs=1e-3)  # memberlist floors to milliseconds


@pytest.mark.parametrize(
    ("mult", "n", "expected"),
    [(4, 0, 0), (4, 1, 4), (4, 9, 4), (4, 10, 8), (4, 50, 8), (4, 99, 8), (4, 100, 12), (3, 5, 3)],
)
def test_retransmit_limit_is_mult_times_ceil_log10_n_plus_one(
    mult: int, n: int, expected: int
) -> None:
    assert maths.retransmit_limit(mult, n) == expected


@pytest.mark.parametrize(
    ("n", "expected_s"),
    [(1, 30.0), (32, 30.0), (33, 60.0), (64, 60.0), (65, 90.0), (128, 90.0), (129, 120.0)],
)
def test_push_pull_interval_grows_above_32_members(n: int, expected_s: float) -> None:
    assert maths.push_pull_interval_scaled_s(30.0, n) == pytest.approx(expected_s)


@pytest.mark.parametrize(
    ("score", "delta", "max_mult", "expected"),
    [(0, -1, 8, 0), (0, 1, 8, 1), (6, 1, 8, 7), (7, 1, 8, 7), (7, 3, 8, 7), (3, -5, 8, 0)],
)
def test_awareness_score_is_clamped_to_zero_and_max_minus_one(
    score: int, delta: int, max_mult: int, expected: int
) -> None:
    assert maths.awareness_apply_delta(score, delta, max_mult) == expected


@pytest.mark.parametrize(("score", "expected_s"), [(0, 0.3), (1, 0.6), (7, 2.4)])
def test_awareness_scales_timeouts_by_score_plus_one(score: int, expected_s: float) -> None:
    assert maths.awareness_scaled_s(0.3, score) == pytest.approx(expected_s)


def test_lan_default_leaves_room_for_nacks_before_the_probe_ends() -> None:
    cfg = GossipConfig.lan()
    assert cfg.probe_interval_s > 2 * cfg.probe_timeout_s
    assert cfg.suspicion_min_s(10) == pytest.approx(1.2)
    assert cfg.suspicion_max_s(10) == pytest.approx(7.2)


@pytest.mark.parametrize(
    "bad",
    [
        {"probe_timeout_s": 0.5, "probe_interval_s": 0.3},
        {"probe_interval_s": 0.0},
        {"max_meta_bytes": 40000},
        {"max_gossip_datagram_bytes": 70000, "max_meta_bytes": 60000},
        {"gossip_nodes": 0},
        {"max_datagram_bytes": 100},
    ],
)
def test_config_rejects_inconsistent_numbers(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - every message names the bad field
        GossipConfig(**bad)  # type: ignore[arg-type]
