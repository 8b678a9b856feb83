"""Small pure formulas of SWIM, memberlist and Lifeguard, tested with tables.

Owns only arithmetic: no state, no clock, no randomness. Every function cites the code or paper it
reproduces, so a reader can check the numbers against the source.
"""

from __future__ import annotations

import math

# memberlist state.go: pushPullScaleThreshold. Below this many members the push-pull interval is
# used as configured; above it, it grows with log2(n) so total TCP traffic stays bounded.
PUSH_PULL_SCALE_THRESHOLD = 32


def suspicion_timeout_s(suspicion_mult: int, n: int, probe_interval_s: float) -> float:
    """The minimum suspicion timeout for a cluster of `n` members.

    memberlist util.go `suspicionTimeout`: mult * max(1, log10(max(1, n))) * interval. The log10
    term gives gossip time to reach O(log n) more members before a suspect is declared dead.
    """
    node_scale = max(1.0, math.log10(max(1.0, float(n))))
    return suspicion_mult * node_scale * probe_interval_s


def suspicion_confirmations_k(suspicion_mult: int, n: int) -> int:
    """How many independent confirmations shrink a suspicion from its max to its min timeout.

    memberlist state.go `suspectNode`: k = mult - 2 (so the nominal timeout is reached two probe
    intervals short of mult intervals); 0 if fewer than k other members could confirm (n - 2:
    without ourselves and the suspect).
    """
    k = suspicion_mult - 2
    if n - 2 < k:
        return 0
    return max(0, k)


def suspicion_remaining_timeout_s(
    confirmations: int, k: int, min_timeout_s: float, max_timeout_s: float
) -> float:
    """Total suspicion timeout (from the start of the suspicion) after `confirmations` of `k`.

    Lifeguard §IV-B (dynamic suspicion), memberlist suspicion.go `remainingSuspicionTime`:
    timeout = max - (log(c + 1) / log(k + 1)) * (max - min), floored at min. With k < 1 no
    confirmation is expected and the timeout is min from the start.
    """
    if k < 1:
        return min_timeout_s
    frac = math.log(confirmations + 1.0) / math.log(k + 1.0)
    raw = max_timeout_s - frac * (max_timeout_s - min_timeout_s)
    return max(min_timeout_s, raw)


def retransmit_limit(retransmit_mult: int, n: int) -> int:
    """How many times one update is piggybacked before it is dropped from the queue.

    memberlist util.go `retransmitLimit`: mult * ceil(log10(n + 1)). SWIM §4.1: O(log n)
    retransmissions reach every member with high probability.
    """
    node_scale = math.ceil(math.log10(float(max(0, n) + 1)))
    return retransmit_mult * int(node_scale)


def push_pull_interval_scaled_s(interval_s: float, n: int) -> float:
    """The push-pull interval for a cluster of `n` members.

    memberlist util.go `pushPullScale`: unchanged up to 32 members, then multiplied by
    ceil(log2(n) - log2(32)) + 1.
    """
    if n <= PUSH_PULL_SCALE_THRESHOLD:
        return interval_s
    multiplier = math.ceil(math.log2(n) - math.log2(PUSH_PULL_SCALE_THRESHOLD)) + 1.0
    return multiplier * interval_s


def awareness_scaled_s(timeout_s: float, awareness_score: int) -> float:
    """Lifeguard §IV-A (local health aware probe), memberlist awareness.go `ScaleTimeout`:
    timeout * (score + 1). A score of 0 is healthy."""
    return timeout_s * (awareness_score + 1)


def awareness_apply_delta(score: int, delta: int, max_multiplier: int) -> int:
    """memberlist awareness.go `ApplyDelta`: the score stays within [0, max_multiplier - 1]."""
    return min(max(score + delta, 0), max_multiplier - 1)
