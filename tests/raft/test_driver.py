"""raft.driver with a state machine of its own: the driver replicates bytes, hands committed
entries to whatever `StateMachine` it is given, and returns its answers to the proposers. A
one-voter group on real storage and the real clock (a mock clock would race the fsyncs that run
in worker threads: it jumps ahead whenever the test looks idle, and on a busy machine an fsync
can look like idleness). A lone voter elects itself after a few ticks of 50 ms."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trio

from swarmlet import crypto
from swarmlet.raft.core import RaftConfig
from swarmlet.raft.driver import RaftDriver
from swarmlet.raft.storage import RaftStorage
from swarmlet.raft.types import ConfState, HardState, Snapshot, SnapshotMeta
from swarmlet.wire.transport import Transport

NODE = "n1"
TIMEOUT_S = 30  # a hang fails the test; nothing here waits for more than a few ticks


@dataclass
class Journal:
    """A state machine that keeps every applied entry's text; its results are strings."""

    lines: list[str] = field(default_factory=list)
    restored: list[bytes] = field(default_factory=list)

    def restore(self, data: bytes) -> None:
        self.restored.append(data)
        self.lines = data.decode().split("\n") if data else []

    def apply(self, index: int, data: bytes) -> str:
        self.lines.append(data.decode())
        return f"{index}:{data.decode()}"

    def snapshot(self) -> bytes:
        return "\n".join(self.lines).encode()


def _seeded(path: Path) -> RaftStorage:
    storage = RaftStorage.open(path)
    if storage.last_index == 0:
        meta = SnapshotMeta(index=1, term=1, conf=ConfState(voters=(NODE,)))
        storage.save(HardState(term=1, vote=None, commit=1), [], Snapshot(meta, b"seed"))
    return storage


def _driver(storage: RaftStorage, journal: Journal, snapshot_every: int = 2000) -> RaftDriver[str]:
    return RaftDriver(
        NODE,
        storage,
        journal,
        Transport(("127.0.0.1", 0), crypto.ClusterKeys(crypto.new_key()).message_key),
        lambda _node_id: None,
        config=RaftConfig(election_ticks=4, heartbeat_ticks=1),
        tick_interval_s=0.05,
        snapshot_every=snapshot_every,
    )


async def _lead(driver: RaftDriver[str]) -> None:
    while not driver.is_leader:
        await driver.leader_changed.wait()


async def test_a_proposer_gets_back_what_the_state_machine_answered(tmp_path: Path) -> None:
    journal = Journal()
    driver = _driver(_seeded(tmp_path), journal)
    assert journal.restored == [b"seed"]  # restored from the storage's snapshot at start
    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            await nursery.start(driver.run)
            await _lead(driver)
            first = await driver.propose(b"a")
            second = await driver.propose(b"b")
            nursery.cancel_scope.cancel()
    assert first.endswith(":a") and second.endswith(":b")
    assert int(second.split(":")[0]) == int(first.split(":")[0]) + 1
    # The leader's empty entry of its term is Raft's own: the state machine never sees it.
    assert journal.lines == ["seed", "a", "b"]
    assert driver.applied == int(second.split(":")[0])


async def test_an_empty_proposal_is_refused(tmp_path: Path) -> None:
    driver = _driver(_seeded(tmp_path), Journal())
    with pytest.raises(ValueError, match="no-op"):
        await driver.propose(b"")


async def test_the_log_is_compacted_into_the_state_machines_snapshot(tmp_path: Path) -> None:
    storage = _seeded(tmp_path)
    driver = _driver(storage, Journal(), snapshot_every=3)
    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            await nursery.start(driver.run)
            await _lead(driver)
            for text in ("a", "b", "c", "d"):
                await driver.propose(text.encode())
            nursery.cancel_scope.cancel()
    assert storage.snapshot_index > 1
    storage.close()
    again = Journal()
    _driver(RaftStorage.open(tmp_path), again)
    assert again.restored[0].decode().split("\n")[:2] == ["seed", "a"]
