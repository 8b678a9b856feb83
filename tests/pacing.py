"""The contract of a loop that follows the replicated state through a `timers.StateFollower`,
checked on the real loops (routing mesh, orchestration, executor): a change after a quiet spell
is looked at at once; a stream of them, one per applied batch, once per `FOLLOW_GAP_S`, the last
change included."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import trio
import trio.testing

from swarmlet.timers import FOLLOW_GAP_S


async def check_paced(notify: Callable[[], None], looks: list[float]) -> None:
    """Run under an autojump clock, with the loop started and quiet; `looks` holds trio's clock
    at each look the loop takes, `notify` tells it of a change."""
    looks.clear()
    now = trio.current_time()
    notify()
    await trio.testing.wait_all_tasks_blocked()
    assert looks == [now]  # at once

    looks.clear()
    for _ in range(100):  # a batch applied every millisecond for 0.1 s
        await trio.sleep(0.001)
        notify()
    last_change = trio.current_time()
    await trio.sleep(2 * FOLLOW_GAP_S)
    assert 0.1 / FOLLOW_GAP_S - 1 <= len(looks) <= 0.1 / FOLLOW_GAP_S + 2
    assert min(b - a for a, b in itertools.pairwise(looks)) >= FOLLOW_GAP_S - 1e-9
    assert looks[-1] >= last_change  # the last change was looked at too
