"""`swarmlet.timers.on_beat`: the next multiple of a period, the moment loops of that period
share."""

from __future__ import annotations

from swarmlet.timers import on_beat


def test_on_beat_is_the_next_multiple_of_the_period_after_now() -> None:
    assert [on_beat(t, 1.0) for t in (0.0, 0.25, 0.999, 1.0, 41.5)] == [1, 1, 1, 2, 42]
    assert on_beat(7.3, 2.0) == 8.0
