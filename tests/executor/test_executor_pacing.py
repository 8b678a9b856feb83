"""The executor follows the replicated state, which under a stream of writes moves at every
applied batch, every few milliseconds on every member: it reconciles at once for a change after
a quiet spell, and at most once per `FOLLOW_GAP_S` under a stream of them, the last change
included (issue #20)."""

from __future__ import annotations

import itertools
from pathlib import Path

import trio
import trio.testing

from swarmlet.timers import FOLLOW_GAP_S
from tests.executor.test_secretfiles import FakeRuntime, Harness, _state


async def test_the_executor_reconciles_at_once_after_quiet_and_once_per_gap_under_a_stream(
    secrets_root: Path, autojump_clock: trio.testing.MockClock
) -> None:
    harness = Harness(secrets_root, FakeRuntime(secrets_root), _state())
    passes = harness.networks.synced_at
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(harness.executor.run)
            await trio.sleep(0.5)  # quiet (the periodic look comes on the beat of 5 s)
            passes.clear()
            now = trio.current_time()
            harness.executor.notify()
            await trio.testing.wait_all_tasks_blocked()
            assert passes == [now]  # at once

            passes.clear()
            for _ in range(100):  # a batch applied every millisecond for 0.1 s
                await trio.sleep(0.001)
                harness.executor.notify()
            last_change = trio.current_time()
            await trio.sleep(2 * FOLLOW_GAP_S)
            assert 0.1 / FOLLOW_GAP_S - 1 <= len(passes) <= 0.1 / FOLLOW_GAP_S + 2
            assert min(b - a for a, b in itertools.pairwise(passes)) >= FOLLOW_GAP_S - 1e-9
            assert passes[-1] >= last_change  # the last change was looked at too
            nursery.cancel_scope.cancel()
