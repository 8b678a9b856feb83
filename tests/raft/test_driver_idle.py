"""raft.driver at rest (issue #20): an idle loop sleeps through the ticks that only count
(`RaftNode.idle_ticks`) and counts them when it wakes, instead of waking at every tick. A
learner of a group whose voter is elsewhere: it never campaigns and writes nothing, so a
mock clock may jump ahead freely."""

from __future__ import annotations

import collections
from collections.abc import Callable
from pathlib import Path
from typing import cast

import trio
import trio.testing

from swarmlet.raft.core import RaftConfig
from swarmlet.raft.driver import RaftDriver
from swarmlet.raft.storage import RaftStorage
from swarmlet.raft.types import ConfState, HardState, Snapshot, SnapshotMeta
from swarmlet.wire.transport import Counters, Transport

NODE = "n1"
TICK_S = 0.05
CONFIG = RaftConfig(election_ticks=4, heartbeat_ticks=1)


class _Bytes:
    """A state machine that keeps nothing (nothing is applied here)."""

    def restore(self, data: bytes) -> None:
        pass

    def decode(self, data: bytes) -> object:
        return data

    def apply(self, index: int, data: bytes, decoded: object = None) -> str:
        return ""

    def snapshot_later(self) -> Callable[[], bytes]:
        return lambda: b""


class _Offline:
    def __init__(self) -> None:
        self.counters = Counters()


def _learner(path: Path) -> RaftDriver[str]:
    storage = RaftStorage.open(path)
    meta = SnapshotMeta(index=1, term=1, conf=ConfState(voters=("n9",), learners=(NODE,)))
    storage.save(HardState(term=1, vote=None, commit=1), [], Snapshot(meta, b""))
    return RaftDriver(
        NODE,
        storage,
        _Bytes(),
        cast(Transport, _Offline()),
        lambda _node_id: None,
        config=CONFIG,
        tick_interval_s=TICK_S,
    )


def test_an_idle_learner_counts_every_tick_in_few_wake_ups(tmp_path: Path) -> None:
    clock = trio.testing.MockClock(autojump_threshold=0)
    driver = _learner(tmp_path)
    ticked_at: collections.Counter[float] = collections.Counter()
    tick = driver.core.tick

    def recording_tick() -> None:
        ticked_at[trio.current_time()] += 1
        tick()

    driver.core.tick = recording_tick  # type: ignore[method-assign]

    async def main() -> None:
        with trio.fail_after(1000 * TICK_S):  # virtual time: a hang jumps here and fails
            async with trio.open_nursery() as nursery:
                await nursery.start(driver.run)
                await trio.sleep(100 * TICK_S)
                nursery.cancel_scope.cancel()

    trio.run(main, clock=clock)
    burst = driver.core.idle_ticks()
    assert burst == 2 * CONFIG.election_ticks
    # Every tick of the 100 is counted, in bursts of `burst` at one instant, not one a wake-up.
    assert sum(ticked_at.values()) >= 100 - burst
    assert max(ticked_at.values()) == burst
    assert len(ticked_at) <= 100 // burst + 1
