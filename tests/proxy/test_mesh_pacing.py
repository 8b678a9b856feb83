"""The routing mesh follows the replicated state, which under a stream of writes moves at every
applied batch, every few milliseconds: it reads its routes as `tests.pacing` says (issue #20:
reading them at every batch was a twentieth of a follower's CPU under writes)."""

from __future__ import annotations

import trio
import trio.testing

from swarmlet.proxy.mesh import Proxy, Route
from tests.pacing import check_paced


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
            await check_paced(proxy.notify, read_at)
            nursery.cancel_scope.cancel()
