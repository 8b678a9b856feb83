"""The routing mesh follows the replicated state, which under a stream of writes moves at every
applied batch, every few milliseconds: its routes are read at once for a change after a quiet
spell, and at most once per `FOLLOW_GAP_S` under a stream of them, the last change included
(issue #20: reading them at every batch was a twentieth of a follower's CPU under writes)."""

from __future__ import annotations

import itertools

import trio
import trio.testing

from swarmlet.proxy.mesh import Proxy, Route
from swarmlet.timers import FOLLOW_GAP_S


async def test_the_routes_are_read_at_once_after_quiet_and_once_per_gap_under_a_stream(
    autojump_clock: trio.testing.MockClock,
) -> None:
    read_at: list[float] = []

    def routes() -> list[Route]:
        read_at.append(trio.current_time())
        return []

    proxy = Proxy("127.0.0.1", routes)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(proxy.run)
            await trio.sleep(0.5)  # quiet (the periodic look comes on the beat of 2 s)
            read_at.clear()
            now = trio.current_time()
            proxy.notify()
            await trio.testing.wait_all_tasks_blocked()
            assert read_at == [now]  # at once

            read_at.clear()
            for _ in range(100):  # a batch applied every millisecond for 0.1 s
                await trio.sleep(0.001)
                proxy.notify()
            last_change = trio.current_time()
            await trio.sleep(2 * FOLLOW_GAP_S)
            assert 0.1 / FOLLOW_GAP_S - 1 <= len(read_at) <= 0.1 / FOLLOW_GAP_S + 2
            assert min(b - a for a, b in itertools.pairwise(read_at)) >= FOLLOW_GAP_S - 1e-9
            assert read_at[-1] >= last_change  # the last change was read too
            nursery.cancel_scope.cancel()
