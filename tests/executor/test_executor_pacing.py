"""The executor follows the replicated state, which under a stream of writes moves at every
applied batch, every few milliseconds on every member: it reconciles as `tests.pacing` says
(issue #20)."""

from __future__ import annotations

from pathlib import Path

import trio
import trio.testing

from tests.executor.test_secretfiles import FakeRuntime, Harness, _state
from tests.pacing import check_paced


async def test_the_executor_reconciles_at_once_after_quiet_and_once_per_gap_under_a_stream(
    secrets_root: Path, autojump_clock: trio.testing.MockClock
) -> None:
    harness = Harness(secrets_root, FakeRuntime(secrets_root), _state())
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(harness.executor.run)
            await trio.sleep(0.5)  # quiet (the periodic look comes on the beat of 5 s)
            await check_paced(harness.executor.notify, harness.networks.synced_at)
            nursery.cancel_scope.cancel()
