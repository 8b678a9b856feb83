"""raft.driver with a state machine of its own: the driver replicates bytes, hands committed
entries to whatever `StateMachine` it is given, and returns its answers to the proposers. A
one-voter group on real storage and the real clock (a mock clock would race the fsyncs that run
in worker threads: it jumps ahead whenever the test looks idle, and on a busy machine an fsync
can look like idleness). A lone voter elects itself after a few ticks of 50 ms."""

from __future__ import annotations

import logging
import threading
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest
import trio
import trio.testing

from swarmlet.errors import NotLeaderError, ProposalTooLargeError
from swarmlet.raft.core import RaftConfig
from swarmlet.raft.driver import (
    DECODE_AHEAD_BYTES,
    DECODE_AHEAD_ENTRIES,
    MAX_PROPOSAL_BYTES,
    RaftDriver,
)
from swarmlet.raft.messages import (
    AppendEntries,
    AppendResp,
    Heartbeat,
    InstallSnapshot,
    Message,
    ReadIndexReq,
    Role,
    TimeoutNow,
    VoteResp,
)
from swarmlet.raft.storage import RaftStorage
from swarmlet.raft.types import (
    ConfState,
    Entry,
    EntryKind,
    HardState,
    Snapshot,
    SnapshotMeta,
    VoteFloor,
)
from swarmlet.wire.transport import Counters, Transport

from .net import role

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

    # Where each entry was decoded: (index, "ahead" in a thread, or "on apply").
    decodes: list[tuple[int, str]] = field(default_factory=list)

    def decode(self, data: bytes) -> object:
        return ("decoded", threading.current_thread() is not threading.main_thread(), data)

    def apply(self, index: int, data: bytes, decoded: object = None) -> str:
        if decoded is None:
            self.decodes.append((index, "on apply"))
        else:
            assert decoded == ("decoded", True, data), decoded  # in a thread, of this entry
            self.decodes.append((index, "ahead"))
        self.lines.append(data.decode())
        return f"{index}:{data.decode()}"

    def snapshot_later(self) -> Callable[[], bytes]:
        data = "\n".join(self.lines).encode()
        return lambda: data


class _Offline:
    """The transport, for a driver that reaches no peer here: only its counters are used."""

    def __init__(self) -> None:
        self.counters = Counters()


def _offline() -> Transport:
    return cast(Transport, _Offline())


def _seeded(path: Path) -> RaftStorage:
    storage = RaftStorage.open(path)
    if storage.last_index == 0:
        meta = SnapshotMeta(index=1, term=1, conf=ConfState(voters=(NODE,)))
        storage.save(HardState(term=1, vote=None, commit=1), [], Snapshot(meta, b"seed"))
    return storage


def _driver(
    storage: RaftStorage,
    journal: Journal,
    snapshot_every: int = 2000,
    on_applied: Callable[[], None] | None = None,
    snapshot_growth: float = 0.0,  # by count alone, unless a test says
    snapshot_max_entries: int = 20_000,
    apply_budget_s: float = 0.02,
) -> RaftDriver[str]:
    return RaftDriver(
        NODE,
        storage,
        journal,
        _offline(),
        lambda _node_id: None,
        config=RaftConfig(election_ticks=4, heartbeat_ticks=1),
        tick_interval_s=0.05,
        snapshot_every=snapshot_every,
        snapshot_growth=snapshot_growth,
        snapshot_max_entries=snapshot_max_entries,
        apply_budget_s=apply_budget_s,
        on_applied=on_applied,
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


async def test_a_large_entry_is_decoded_in_a_thread_and_applied_in_its_turn(
    tmp_path: Path,
) -> None:
    """Entries of DECODE_AHEAD_BYTES and more are decoded off the loop before they are applied;
    smaller ones on it; whatever the decoding, they apply in log order, each once."""
    journal = Journal()
    driver = _driver(_seeded(tmp_path), journal)
    large = [bytes([65 + i]) * DECODE_AHEAD_BYTES for i in range(3)]
    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            await nursery.start(driver.run)
            await _lead(driver)
            answers = await driver.propose_many([b"a", large[0], b"b", large[1], large[2], b"c"])
            nursery.cancel_scope.cancel()
    indexes = [int(str(a).split(":")[0]) for a in answers]
    assert indexes == list(range(indexes[0], indexes[0] + 6))
    assert journal.lines[1:] == ["a", *[x.decode() for x in large[:1]], "b"] + [
        x.decode() for x in large[1:]
    ] + ["c"]
    ways = dict(journal.decodes)
    assert [ways[i] for i in indexes] == [
        "on apply",
        "ahead",
        "on apply",
        "ahead",
        "ahead",
        "on apply",
    ]
    assert not driver._decoded  # nothing kept once applied


async def test_no_more_than_a_few_large_entries_wait_decoded(tmp_path: Path) -> None:
    """While applies are held, the decoding goes ahead by DECODE_AHEAD_ENTRIES entries and no
    more (each is several times its bytes once decoded); after the hold, all apply in order."""
    journal = Journal()
    driver = _driver(_seeded(tmp_path), journal)
    large = [bytes([65 + i]) * DECODE_AHEAD_BYTES for i in range(6)]
    answered = trio.Event()

    async def propose() -> None:
        await driver.propose_many(large)
        answered.set()

    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            await nursery.start(driver.run)
            await _lead(driver)
            async with driver.applies_held():
                nursery.start_soon(propose)
                while driver.core.commit_index < driver.applied + len(large):
                    await _settle()
                await trio.sleep(0.5)  # time to decode them all, were it allowed
                assert len(driver._decoded) == DECODE_AHEAD_ENTRIES
            await answered.wait()
            nursery.cancel_scope.cancel()
    assert journal.lines[-len(large) :] == [x.decode() for x in large]
    assert not driver._decoded and not driver._to_decode


async def test_wait_applied_wakes_each_waiter_once_its_index_is_applied(tmp_path: Path) -> None:
    """Waiters are released in index order as applying reaches them, not woken by every apply;
    a cancelled waiter leaves its index to the others, and waits on one index share one event
    (what is held is bounded by the distinct indexes awaited, not by the calls)."""
    driver = _driver(_seeded(tmp_path), Journal())
    released: list[tuple[int, int]] = []  # (index awaited, applied when released)

    async def waiter(index: int) -> None:
        await driver.wait_applied(index)
        released.append((index, driver.applied))

    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            await nursery.start(driver.run)
            await _lead(driver)
            start = driver.applied
            await driver.wait_applied(start)  # already applied: returns at once
            for offset in (3, 1, 2, 2):
                nursery.start_soon(waiter, start + offset)
            with trio.move_on_after(0):
                await driver.wait_applied(start + 5)  # cancelled at once
            await _settle()
            assert released == []
            assert len(driver._applied_events) == 4  # start + 1, 2, 3, 5: one event per index
            for text in ("a", "b", "c"):
                await driver.propose(text.encode())
                await _settle()
                reached = driver.applied - start
                assert all(index - start <= reached for index, _ in released)
                assert {index - start for index, _ in released} == {1, 2, 3} & set(
                    range(1, reached + 1)
                )
            assert sorted(i - start for i, _ in released) == [1, 2, 2, 3]
            assert all(applied >= index for index, applied in released)
            assert list(driver._applied_events) == [start + 5]  # left until applied reaches it
            nursery.cancel_scope.cancel()


async def test_an_empty_proposal_is_refused(tmp_path: Path) -> None:
    driver = _driver(_seeded(tmp_path), Journal())
    with pytest.raises(ValueError, match="no-op"):
        await driver.propose(b"")


async def test_a_proposal_over_the_size_limit_is_refused_and_the_leader_goes_on(
    tmp_path: Path,
) -> None:
    """One larger than the storage's record limit was refused in the disk thread, which stopped
    the node (a worker's 64 MiB status report did it to every leader in turn)."""
    journal = Journal()
    driver = _driver(_seeded(tmp_path), journal)
    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            await nursery.start(driver.run)
            await _lead(driver)
            with pytest.raises(ProposalTooLargeError, match="over the limit"):
                await driver.propose(b"x" * (MAX_PROPOSAL_BYTES + 1))
            with pytest.raises(ProposalTooLargeError, match="over the limit"):
                await driver.propose_many([b"a", b"x" * (MAX_PROPOSAL_BYTES + 1)])
            assert (await driver.propose(b"b")).endswith(":b")
            nursery.cancel_scope.cancel()
    assert journal.lines == ["seed", "b"]


async def test_the_log_is_compacted_into_the_state_machines_snapshot(tmp_path: Path) -> None:
    storage = _seeded(tmp_path)
    driver = _driver(storage, Journal(), snapshot_every=3)
    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            await nursery.start(driver.run)
            await _lead(driver)
            for text in ("a", "b", "c", "d"):
                await driver.propose(text.encode())
            # The driver's own task encodes the snapshot, then compacts.
            await _compacted_past(storage, 1)
            nursery.cancel_scope.cancel()
    assert storage.snapshot_index > 1
    storage.close()
    again = Journal()
    _driver(RaftStorage.open(tmp_path), again)
    assert again.restored[0].decode().split("\n")[:2] == ["seed", "a"]


async def test_a_larger_state_is_compacted_after_more_log(tmp_path: Path) -> None:
    """With `snapshot_growth` 1, a compaction waits for entries that weigh the last snapshot:
    b"seed" (4 bytes), then the one it made."""
    storage = _seeded(tmp_path)
    driver = _driver(storage, Journal(), snapshot_every=1, snapshot_growth=1.0)
    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            await nursery.start(driver.run)
            await _lead(driver)
            await driver.propose(b"abc")
            await _settle()
            assert storage.snapshot_index == 1  # 3 bytes applied: not yet
            await driver.propose(b"d")
            await _compacted_past(storage, 1)
            compacted = storage.snapshot_index
            weight = len(driver.core.snapshot.data)  # b"seed\nabc\nd"
            await driver.propose(b"e" * (weight - 2))
            await driver.propose(b"f")
            await _settle()
            assert storage.snapshot_index == compacted
            await driver.propose(b"o")
            await _compacted_past(storage, compacted)
            nursery.cancel_scope.cancel()


async def test_many_light_entries_are_compacted_at_the_ceiling(tmp_path: Path) -> None:
    """A restart replays the log entry by entry: however little the entries weigh, at
    `snapshot_max_entries` (3 here: the leader's empty entry, a, b) the log is compacted."""
    storage = _seeded(tmp_path)
    driver = _driver(
        storage, Journal(), snapshot_every=1, snapshot_growth=1.0, snapshot_max_entries=3
    )
    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            await nursery.start(driver.run)
            await _lead(driver)
            await driver.propose(b"a")
            await _settle()
            assert storage.snapshot_index == 1  # 2 entries, 1 byte of b"seed"'s 4
            await driver.propose(b"b")
            await _compacted_past(storage, 1)
            nursery.cancel_scope.cancel()


class SlowSnapshots(Journal):
    """A journal whose first snapshot's encoding, in the driver's thread, waits for `release`
    (as a large state's encoding takes its time) and says when it started; what each encoding
    returned is kept."""

    def __init__(self) -> None:
        super().__init__()
        self.encoding = threading.Event()
        self.release = threading.Event()
        self.encoded: list[bytes] = []

    def snapshot_later(self) -> Callable[[], bytes]:
        encode = super().snapshot_later()

        def slowly() -> bytes:
            self.encoding.set()
            self.release.wait(TIMEOUT_S)
            self.encoded.append(encode())
            return self.encoded[-1]

        return slowly


async def test_writes_commit_while_the_snapshot_is_encoded(tmp_path: Path) -> None:
    # On the loop, a large state's encoding (half a second at 100,000 tasks) stopped Raft:
    # a leader sent no heartbeat meanwhile.
    storage = _seeded(tmp_path)
    journal = SlowSnapshots()
    driver = _driver(storage, journal, snapshot_every=3)
    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            await nursery.start(driver.run)
            await _lead(driver)  # the leader's empty entry is index 2
            for text in ("a", "b", "c"):
                await driver.propose(text.encode())
            await trio.to_thread.run_sync(journal.encoding.wait)  # taken at index 4 (a, b)
            for text in ("d", "e", "f", "g"):  # commit meanwhile: the loop goes on
                await driver.propose(text.encode())
            assert storage.snapshot_index == 1
            journal.release.set()
            # The next compaction fell due meanwhile; none started while one was under way,
            # and it follows this one by itself (no write comes to start it).
            while storage.snapshot_index != 9:  # noqa: ASYNC110  # the driver's own task
                await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
    # Each snapshot is of the state when it was taken, not when it was written.
    assert [data.decode().split("\n") for data in journal.encoded] == [
        ["seed", "a", "b"],
        ["seed", "a", "b", "c", "d", "e", "f", "g"],
    ]
    storage.close()
    again = Journal()
    _driver(RaftStorage.open(tmp_path), again)
    assert again.restored[0] == journal.encoded[-1]


def test_the_driver_hands_the_storages_vote_floor_to_the_core(tmp_path: Path) -> None:
    storage = _seeded(tmp_path)
    storage.save(HardState(term=2, vote=NODE, commit=1), [Entry(2, i) for i in range(2, 6)])
    storage.close()
    last = sorted(tmp_path.glob("log-*.seg"))[-1]
    last.write_bytes(last.read_bytes()[:-1])  # a torn write of entry 5
    driver = _driver(RaftStorage.open(tmp_path), Journal())
    assert driver.storage.vote_floor == VoteFloor(5, 2)
    assert driver.core.vote_floor == VoteFloor(5, 2)


# ---------------------------------------------------------------------------- group commit


class CountingStorage(RaftStorage):
    """Counts the saves that write entries; `gate`, once armed, holds the next such save until
    it is released (the test then sees what the driver does while its fsync is under way)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.entry_saves = 0
        self.armed = False
        self.saving = threading.Event()
        self.release = threading.Event()

    def save(
        self,
        hard_state: HardState | None,
        entries: Sequence[Entry] = (),
        snapshot: Snapshot | None = None,
    ) -> None:
        if entries:
            self.entry_saves += 1
            if self.armed:
                self.armed = False
                self.saving.set()
                self.release.wait(TIMEOUT_S)
        super().save(hard_state, entries, snapshot)


def _counting(
    path: Path, voters: tuple[str, ...], learners: tuple[str, ...] = ()
) -> CountingStorage:
    storage = CountingStorage.open(path)
    assert isinstance(storage, CountingStorage)
    meta = SnapshotMeta(index=1, term=1, conf=ConfState(voters=voters, learners=learners))
    storage.save(HardState(term=1, vote=None, commit=1), [], Snapshot(meta, b"seed"))
    return storage


async def test_concurrent_proposals_share_appends_and_fsyncs(tmp_path: Path) -> None:
    storage = _counting(tmp_path, (NODE,))
    journal = Journal()
    driver = _driver(storage, journal)
    results: dict[int, str] = {}

    async def write(i: int) -> None:
        results[i] = await driver.propose(f"w{i}".encode())

    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            await nursery.start(driver.run)
            await _lead(driver)
            before = storage.entry_saves
            async with trio.open_nursery() as writers:
                for i in range(100):
                    writers.start_soon(write, i)
            nursery.cancel_scope.cancel()
    assert sorted(results) == list(range(100))
    # Each proposer got its own entry's answer, and the entries are those proposed, once each.
    assert all(results[i].endswith(f":w{i}") for i in range(100))
    assert sorted(journal.lines[1:]) == sorted(f"w{i}" for i in range(100))
    # Proposals pending together went into the log together: far fewer writes than entries.
    assert storage.entry_saves - before <= 10


async def test_propose_many_appends_a_batch_in_order_and_answers_each_entry(
    tmp_path: Path,
) -> None:
    """One caller for a batch (a follower's forwarded writes): consecutive entries in one
    append, each with its own answer, in the order given."""
    storage = _counting(tmp_path, (NODE,))
    journal = Journal()
    driver = _driver(storage, journal)
    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            await nursery.start(driver.run)
            await _lead(driver)
            saves = storage.entry_saves
            answers = await driver.propose_many([f"b{i}".encode() for i in range(20)])
            assert await driver.propose_many([]) == []
            nursery.cancel_scope.cancel()
    assert all(isinstance(a, str) for a in answers)
    assert [str(a).split(":")[1] for a in answers] == [f"b{i}" for i in range(20)]
    indexes = [int(str(a).split(":")[0]) for a in answers]
    assert indexes == list(range(indexes[0], indexes[0] + 20))
    assert storage.entry_saves - saves == 1
    assert driver.proposal_outcomes["committed"] == 20


async def test_propose_many_on_a_follower_refuses_the_batch_at_once(tmp_path: Path) -> None:
    driver = _driver(_counting(tmp_path, (NODE, "n2", "n3")), Journal())
    with pytest.raises(NotLeaderError):
        await driver.propose_many([b"x", b"y"])
    with pytest.raises(ValueError, match="no-op"):
        await driver.propose_many([b"x", b""])
    assert driver.proposal_outcomes["not_leader"] == 2


async def test_on_applied_is_called_once_per_applied_batch_before_its_proposers_resume(
    tmp_path: Path,
) -> None:
    """What follows the state (the executor, the proxy, the leader's duties) is woken once per
    batch of applied entries, not once per entry, and already knows of an entry when its
    proposer gets the answer."""
    storage = _counting(tmp_path, (NODE,))
    journal = Journal()
    calls: list[int] = []  # entries applied at each call
    driver = _driver(storage, journal, on_applied=lambda: calls.append(len(journal.lines)))

    async def write(i: int) -> None:
        await driver.propose(f"w{i}".encode())
        assert calls and calls[-1] >= journal.lines.index(f"w{i}") + 1

    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            await nursery.start(driver.run)
            await _lead(driver)
            before, saves = len(calls), storage.entry_saves
            async with trio.open_nursery() as writers:
                for i in range(100):
                    writers.start_soon(write, i)
            nursery.cancel_scope.cancel()
    batches = calls[before:]
    assert batches[-1] == len(journal.lines) == 101  # the seed, then the 100 writes
    assert len(batches) <= storage.entry_saves - saves + 1  # once per batch, not per entry
    assert batches == sorted(batches)


async def test_a_follower_refuses_proposals_at_once(tmp_path: Path) -> None:
    storage = _counting(tmp_path, (NODE, "n2", "n3"))
    driver = _driver(storage, Journal())  # three voters: it cannot elect itself alone
    with pytest.raises(NotLeaderError):
        await driver.propose(b"x")


def test_a_peer_outside_the_voters_holds_a_share_of_the_inbox_only(tmp_path: Path) -> None:
    """A learner that streams messages (here read requests, each a round of heartbeats to
    every member) kept the 4,096 places of the inbox full, and the voters' acknowledgements
    were dropped with its own (review). It holds 256 of them a turn; a voter's still go in."""
    with _counting(tmp_path, (NODE, "n2", "n3")) as storage:
        driver = _elected(storage, Journal())
        term = driver.core.term
        for i in range(5000):
            driver.deliver(ReadIndexReq("w9", NODE, term, b"%d" % i))
        driver.deliver(AppendResp("n2", NODE, term, index=1))
        assert len(driver._inbox) == 257 and driver._inbox[-1].from_id == "n2"
        assert driver.transport.counters["raft_dropped_inbox_share"] == 5000 - 256
        driver._take_inputs()  # the loop's turn: the share is the learner's again
        driver.deliver(ReadIndexReq("w9", NODE, term, b"again"))
        assert len(driver._inbox) == 1


def _recording(driver: RaftDriver[str]) -> list[Message]:
    sent: list[Message] = []
    driver._send = sent.append  # type: ignore[method-assign,assignment]  # the network: a list
    return sent


def _appends_of(sent: list[Message], data: bytes) -> set[str]:
    return {
        m.to_id
        for m in sent
        if isinstance(m, AppendEntries) and any(e.data == data for e in m.entries)
    }


def _elected(storage: RaftStorage, journal: Journal) -> RaftDriver[str]:
    """A driver of NODE in the group of n1-n3, made leader by hand (n2's vote), not running."""
    driver = RaftDriver(
        NODE,
        storage,
        journal,
        _offline(),
        lambda _node_id: None,
        config=RaftConfig(election_ticks=1000, heartbeat_ticks=1, pre_vote=False),
        tick_interval_s=0.05,
    )
    core = driver.core
    while role(core) is not Role.CANDIDATE:
        core.tick()
    core.step(VoteResp("n2", NODE, core.term, granted=True))
    assert role(core) is Role.LEADER
    return driver


def _proposer(driver: RaftDriver[str], answers: list[object]) -> Callable[[bytes], Awaitable[None]]:
    """A task that proposes `data` and appends what it got: the answer, or the NotLeaderError."""

    async def propose(data: bytes) -> None:
        try:
            answers.append(await driver.propose(data))
        except NotLeaderError as exc:
            answers.append(exc)

    return propose


def _acknowledged(driver: RaftDriver[str], term: int) -> None:
    """n2 and n3, the followers of `_elected`'s leader, acknowledge all it has sent."""
    for peer in ("n2", "n3"):
        driver.deliver(AppendResp(peer, NODE, term, driver.core.last_index))


async def _compacted_past(storage: RaftStorage, index: int) -> None:
    """Until the driver's own task has compacted the log past `index`."""
    while storage.snapshot_index == index:  # noqa: ASYNC110
        await trio.sleep(0.01)


async def _settle() -> None:
    for _ in range(20):
        await trio.testing.wait_all_tasks_blocked()
        await trio.sleep(0.01)


async def test_a_leader_sends_before_its_own_fsync_but_commits_only_after_it(
    tmp_path: Path,
) -> None:
    # Raft thesis §10.2.1: the leader's append leaves while its own disk write is under way, and
    # an entry acknowledged by every follower meanwhile is still not committed (nor answered)
    # until the leader's write has returned.
    storage = _counting(tmp_path, (NODE, "n2", "n3"))
    driver = _elected(storage, Journal())
    core = driver.core
    sent = _recording(driver)
    term = core.term
    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            await nursery.start(driver.run)
            await _settle()
            noop = core.last_index
            driver.deliver(AppendResp("n2", NODE, term, noop))
            driver.deliver(AppendResp("n3", NODE, term, noop))
            while core.commit_index < noop:
                await _settle()
            storage.armed = True
            answer: list[str] = []

            async def propose() -> None:
                answer.append(await driver.propose(b"x"))

            nursery.start_soon(propose)
            await trio.to_thread.run_sync(storage.saving.wait, TIMEOUT_S)
            await _settle()
            index = core.last_index
            assert storage.release.is_set() is False
            assert _appends_of(sent, b"x") == {"n2", "n3"}  # sent while the save is held
            driver.deliver(AppendResp("n2", NODE, term, index))
            driver.deliver(AppendResp("n3", NODE, term, index))
            await _settle()
            assert core.commit_index < index and not answer  # not before the leader's fsync
            storage.release.set()
            while not answer:
                await _settle()
            assert core.commit_index >= index
            nursery.cancel_scope.cancel()
    assert answer[0].endswith(":x")


async def test_while_applies_are_held_raft_goes_on_and_applies_after_in_order(
    tmp_path: Path,
) -> None:
    """The leader's orchestration pass reads the state from a thread with applies held
    (`applies_held`): for the length of the pass the state machine must not change, and Raft
    must not stop (a pass of two seconds on the event loop cost the leader its lead). Held for
    longer than an election timeout: heartbeats keep going out, a proposal commits, and nothing
    is applied or answered until the hold ends; then everything is, in order."""
    storage = _counting(tmp_path, (NODE, "n2", "n3"))
    journal = Journal()
    driver = _elected(storage, journal)
    core = driver.core
    sent = _recording(driver)
    term = core.term
    answers: list[str] = []

    async def propose(data: bytes) -> None:
        answers.append(await driver.propose(data))

    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            await nursery.start(driver.run)
            await _settle()
            nursery.start_soon(propose, b"before")
            while not answers:
                _acknowledged(driver, term)
                await _settle()
            applied, lines = driver.applied, list(journal.lines)
            async with driver.applies_held():
                heartbeats = sum(isinstance(m, Heartbeat) for m in sent)
                nursery.start_soon(propose, b"x")
                nursery.start_soon(propose, b"y")
                while core.last_index < applied + 2:
                    await _settle()
                _acknowledged(driver, term)
                await trio.sleep(20 * driver.tick_interval_s)
                assert core.commit_index == applied + 2  # committed, as always
                assert (driver.applied, journal.lines, answers) == (applied, lines, [answers[0]])
                assert sum(isinstance(m, Heartbeat) for m in sent) >= heartbeats + 10
                assert driver.is_leader
            while len(answers) < 3:
                await _settle()
            nursery.cancel_scope.cancel()
    # In the order of the log (the two proposers' own order is trio's to choose).
    assert journal.lines[: len(lines)] == lines and sorted(journal.lines[len(lines) :]) == [
        "x",
        "y",
    ]
    assert sorted(answers[1:]) == [
        f"{applied + 1}:{journal.lines[-2]}",
        f"{applied + 2}:{journal.lines[-1]}",
    ]
    assert driver.applied == applied + 2


async def test_a_write_committed_while_applies_are_held_is_answered_after_a_lost_lead(
    tmp_path: Path,
) -> None:
    """A proposal whose entry committed while applies were held, then the leader lost its lead
    before the hold ended: the entry is committed and will be applied, so its proposer gets the
    state machine's answer. Failed as "lost with the leadership", the caller would retry a
    write that is in the log, and apply it twice."""
    storage = _counting(tmp_path, (NODE, "n2", "n3"))
    journal = Journal()
    driver = _elected(storage, journal)
    core = driver.core
    _recording(driver)
    term = core.term
    answers: list[object] = []
    propose = _proposer(driver, answers)

    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            await nursery.start(driver.run)
            await _settle()
            async with driver.applies_held():
                nursery.start_soon(propose, b"x")
                while core.last_index < 3:  # the seed, the no-op, x
                    await _settle()
                _acknowledged(driver, term)
                while core.commit_index < core.last_index:
                    await _settle()
                # n2 is elected in a later term: this node follows it.
                driver.deliver(Heartbeat("n2", NODE, term + 1, commit=0))
                while driver.is_leader:
                    await _settle()
                assert answers == [] and journal.lines == ["seed"]
            while not answers:
                await _settle()
            nursery.cancel_scope.cancel()
    assert journal.lines == ["seed", "x"]
    assert answers == [f"{core.commit_index}:x"]


async def test_holds_that_overlap_let_what_they_held_be_applied_between_them(
    tmp_path: Path,
) -> None:
    """Holders of a second each, a new one every half second (two clients listing 100,000
    tasks in turn): a new hold waits while entries held by the one before wait for their
    apply, so a write is answered, not held off for as long as holds keep coming."""
    storage = _counting(tmp_path, (NODE, "n2", "n3"))
    driver = _elected(storage, Journal())
    core = driver.core
    _recording(driver)
    term = core.term
    answers: list[str] = []

    async def propose(data: bytes) -> None:
        answers.append(await driver.propose(data))

    async def holder(seconds: float) -> None:
        async with driver.applies_held():
            await trio.sleep(seconds)

    async def followers() -> None:  # acknowledge all that was sent, as they go
        while True:
            _acknowledged(driver, term)
            await trio.sleep(0.05)

    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            await nursery.start(driver.run)
            nursery.start_soon(followers)
            await _settle()
            nursery.start_soon(holder, 1.0)
            await _settle()
            nursery.start_soon(propose, b"x")
            started = trio.current_time()
            while trio.current_time() - started < 4:
                nursery.start_soon(holder, 1.0)
                await trio.sleep(0.5)
            answered_while_holds_came = list(answers)
            nursery.cancel_scope.cancel()
    assert [a.split(":")[1] for a in answered_while_holds_came] == ["x"]


def _with_committed_log(path: Path, lines: list[str]) -> RaftStorage:
    """What a restarting node finds: after the seed snapshot, `lines` as entries, committed."""
    storage = _seeded(path)
    entries = [
        Entry(index=i + 2, term=1, kind=EntryKind.NORMAL, data=line.encode())
        for i, line in enumerate(lines)
    ]
    storage.save(HardState(term=1, vote=NODE, commit=len(lines) + 1), entries)
    return storage


async def test_a_long_replay_is_applied_over_turns_of_the_loop_in_order(tmp_path: Path) -> None:
    """A restarted manager applies up to 20,000 entries of its log: in one turn of the loop
    that held the gossip's answers for seconds (the others could declare the node dead). A
    turn applies for `apply_budget_s` (here nothing: one entry a turn), and between turns the
    other tasks run; the entries are applied in order, once each, and the node then writes.
    What follows the state hears of it once, at the end: the states on the way are older than
    the one the node stopped with."""
    lines = [f"w{i}" for i in range(50)]
    journal = Journal()
    told: list[int] = []  # `on_applied`: what follows the state is told of none of the replay
    storage = _with_committed_log(tmp_path, lines)
    driver = _driver(storage, journal, on_applied=lambda: told.append(driver.applied))
    driver.apply_budget_s = 0.0
    seen: set[int] = set()
    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            await nursery.start(driver.run)
            while driver.applied < len(lines) + 1:
                seen.add(driver.applied)
                await trio.lowlevel.checkpoint()
            await _lead(driver)
            written = await driver.propose(b"after")
            nursery.cancel_scope.cancel()
    assert len(seen) > 25, f"another task ran at only {len(seen)} points of the replay"
    assert journal.lines == ["seed", *lines, "after"]
    assert written.endswith(":after")
    assert told[0] == driver.startup_commit == len(lines) + 1  # then the no-op's, the write's


async def test_a_start_applies_the_committed_log_at_once(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """The loop slept at its start until a message or an election timeout woke it, with the
    log's committed entries unapplied: a lone manager's restart waited 1-2 s (its election
    timeout) before its state was current. Virtual time: no tick passes before the replay."""
    lines = [f"w{i}" for i in range(50)]
    driver = _driver(_with_committed_log(tmp_path, lines), Journal())
    started = trio.current_time()
    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            await nursery.start(driver.run)
            await driver.wait_applied(len(lines) + 1)
            replayed_after = trio.current_time() - started
            nursery.cancel_scope.cancel()
    assert replayed_after < driver.tick_interval_s


async def test_a_holder_finds_everything_committed_applied_even_beyond_the_budget(
    tmp_path: Path,
) -> None:
    """A hold asked for during a replay starts once the loop has applied what had committed
    when it was asked for: the holder reads a state with all of it (as before the budget),
    and the loop applies it over its turns meanwhile (the holder applying it all at once held
    the loop as the replay did)."""
    lines = [f"w{i}" for i in range(50)]
    journal = Journal()
    driver = _driver(_with_committed_log(tmp_path, lines), journal, apply_budget_s=0.0)
    seen: set[int] = set()
    held: list[object] = []

    async def holder() -> None:
        async with driver.applies_held():
            held.extend((driver.applied, driver.core.commit_index, list(journal.lines)))

    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            await nursery.start(driver.run)
            while driver.applied < 3:
                await trio.lowlevel.checkpoint()
            assert driver.applied < len(lines) + 1  # the replay is under way
            nursery.start_soon(holder)
            while not held:
                seen.add(driver.applied)
                await trio.lowlevel.checkpoint()
            nursery.cancel_scope.cancel()
    applied, committed, applied_lines = held
    assert applied == committed >= len(lines) + 1  # (and the no-op, if it was elected since)
    assert applied_lines == ["seed", *lines]
    assert len(seen) > 25, f"another task ran at only {len(seen)} points while the hold waited"


class _Failing(Journal):
    def apply(self, index: int, data: bytes, decoded: object = None) -> str:
        if data == b"bad":
            raise RuntimeError("the state machine failed")
        return super().apply(index, data, decoded)


async def test_an_error_applying_stops_the_driver_even_while_a_holder_waits(
    tmp_path: Path,
) -> None:
    """Only the loop applies: a state machine that fails stops the driver (and the node), as it
    always did, rather than failing whichever holder applied, which would go on with the entry
    skipped and its replica's state no longer the others'."""
    journal = _Failing()
    storage = _with_committed_log(tmp_path, [f"w{i}" for i in range(20)] + ["bad", "after"])
    driver = _driver(storage, journal, apply_budget_s=0.0)
    entered: list[int] = []

    async def holder() -> None:
        async with driver.applies_held():
            entered.append(driver.applied)

    with (
        trio.fail_after(TIMEOUT_S),
        pytest.RaisesGroup(pytest.RaisesExc(RuntimeError, match="failed"), flatten_subgroups=True),
    ):
        async with trio.open_nursery() as nursery:
            await nursery.start(driver.run)
            while driver.applied < 3:
                await trio.lowlevel.checkpoint()
            nursery.start_soon(holder)  # while the replay is under way
            await trio.sleep_forever()
    assert entered == [] and "after" not in journal.lines


async def test_a_leader_deposed_by_a_snapshot_fails_its_pending_proposal(tmp_path: Path) -> None:
    """A proposal in flight when an InstallSnapshot of a later term deposes the leader: its
    entry may or may not be in the snapshot, so its caller is told it was lost (and retries),
    and is never left waiting."""
    storage = _counting(tmp_path, (NODE, "n2", "n3"))
    journal = Journal()
    driver = _elected(storage, journal)
    core = driver.core
    _recording(driver)
    term = core.term
    answers: list[object] = []
    propose = _proposer(driver, answers)

    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            await nursery.start(driver.run)
            await _settle()
            nursery.start_soon(propose, b"x")
            while core.last_index < 3:
                await _settle()
            snapshot = Snapshot(SnapshotMeta(10, term + 1, core.conf), b"seed\nother")
            driver.deliver(InstallSnapshot("n2", NODE, term + 1, snapshot))
            while not answers:
                await _settle()
            nursery.cancel_scope.cancel()
    assert isinstance(answers[0], NotLeaderError)
    assert journal.lines == ["seed", "other"] and driver.applied == 10


async def test_a_snapshot_that_comes_during_a_hold_waits_for_it_and_the_loop_goes_on(
    tmp_path: Path,
) -> None:
    """A follower listing its state for a client (a hold) when the leader sends it a snapshot:
    the loop goes on (it still answers the leader), and the snapshot replaces the state once
    the hold ends, after the entries held before it."""
    storage = _counting(tmp_path, (NODE, "n2", "n3"))
    journal = Journal()
    driver = _driver(storage, journal)
    sent = _recording(driver)
    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            await nursery.start(driver.run)
            await _settle()
            async with driver.applies_held():
                snapshot = Snapshot(SnapshotMeta(10, 5, driver.core.conf), b"seed\nfrom n2")
                driver.deliver(InstallSnapshot("n2", NODE, 5, snapshot))
                while driver.core.commit_index < 10:
                    await _settle()
                answered = len(sent)
                driver.deliver(Heartbeat("n2", NODE, 5, commit=10))
                while len(sent) == answered:  # the loop answers the leader meanwhile
                    await _settle()
                assert journal.lines == ["seed"] and driver.applied == 1
            while driver.applied < 10:
                await _settle()
            nursery.cancel_scope.cancel()
    assert journal.restored[-1] == b"seed\nfrom n2" and journal.lines == ["seed", "from n2"]


async def test_a_group_that_commits_on_append_persists_before_it_sends(tmp_path: Path) -> None:
    # One voter commits its entry as soon as it is appended: the append that tells the learner
    # so must not leave before the entry is on the voter's disk.
    storage = _counting(tmp_path, (NODE,), learners=("l1",))
    driver = _driver(storage, Journal())
    sent = _recording(driver)
    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            await nursery.start(driver.run)
            await _lead(driver)
            core = driver.core
            driver.deliver(AppendResp("l1", NODE, core.term, core.last_index))  # replicating
            await _settle()
            storage.armed = True
            nursery.start_soon(driver.propose, b"x")
            await trio.to_thread.run_sync(storage.saving.wait, TIMEOUT_S)
            await _settle()
            assert _appends_of(sent, b"x") == set()  # held back with the save
            storage.release.set()
            while not _appends_of(sent, b"x"):
                await _settle()
            nursery.cancel_scope.cancel()


async def test_a_new_leader_has_caught_up_only_once_it_applied_its_own_no_op(
    tmp_path: Path,
) -> None:
    """A restarted member applies only what its disk knew as committed (here index 1, its
    entries 2-3 committed by others while it ran): elected, its state lacks them until its
    no-op commits, and `leader_caught_up`, which the leader's duties wait for, says so."""
    storage = _counting(tmp_path, (NODE, "n2", "n3"))
    storage.save(None, [Entry(1, 2, EntryKind.NORMAL, b"a"), Entry(1, 3, EntryKind.NORMAL, b"b")])
    journal = Journal()
    driver = _elected(storage, journal)
    core = driver.core
    _recording(driver)
    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            await nursery.start(driver.run)
            await _settle()
            assert driver.is_leader and not driver.leader_caught_up
            assert journal.lines == ["seed"]  # what the state holds: not yet a and b
            noop = core.last_index
            driver.deliver(AppendResp("n2", NODE, core.term, noop))
            while driver.applied < noop:
                await _settle()
            assert driver.leader_caught_up
            assert journal.lines == ["seed", "a", "b"]
            nursery.cancel_scope.cancel()


async def test_a_leader_that_lost_its_batches_in_flight_and_leads_again_takes_new_writes(
    tmp_path: Path,
) -> None:
    """Two batches in flight (the limit), cut from the log by the next leader; this node wins
    again. The ends of those batches were kept and never committed, so they counted as in
    flight for good: every later write waited in the queue while this node led (found by a
    review; the orchestrator, which waits for each write's fate, would have stopped)."""
    storage = _counting(tmp_path, (NODE, "n2", "n3"))
    driver = _elected(storage, Journal())
    core = driver.core
    _recording(driver)
    answers: list[object] = []
    propose = _proposer(driver, answers)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            await nursery.start(driver.run)
            await _settle()
            term = core.term
            noop = core.last_index
            _acknowledged(driver, term)
            while core.commit_index < noop:
                await _settle()
            for batch in (b"a", b"b"):  # never acknowledged
                for i in range(5):
                    nursery.start_soon(propose, batch + bytes([i]))
                await _settle()
            assert len(driver._batch_ends) == driver.max_batches_in_flight
            # n2 leads the next term with only the no-op: our batches are cut from the log.
            cut = Entry(term + 1, noop + 1, data=b"n2")
            driver.deliver(AppendEntries("n2", NODE, term + 1, noop, term, (cut,), noop + 1))
            while len(answers) < 10:
                await _settle()
            assert all(isinstance(a, NotLeaderError) for a in answers)
            driver.deliver(TimeoutNow("n2", NODE, term + 1))  # n2 hands the lead back
            await _settle()
            driver.deliver(VoteResp("n2", NODE, core.term, granted=True))
            await _settle()
            assert role(core) is Role.LEADER
            _acknowledged(driver, core.term)
            while not driver.leader_caught_up:
                await _settle()
            answers.clear()
            nursery.start_soon(propose, b"after")
            while not answers:
                _acknowledged(driver, core.term)
                await _settle()
            assert answers == [f"{core.last_index}:after"]
            nursery.cancel_scope.cancel()


async def test_a_change_of_leader_is_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    driver = _driver(_seeded(tmp_path), Journal())
    with caplog.at_level(logging.INFO, logger="swarmlet.raft.driver"), trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            await nursery.start(driver.run)
            await _lead(driver)
            nursery.cancel_scope.cancel()
    assert f"this node leads, term {driver.core.term}" in caplog.text


# ------------------------------------------------------------------ holds and restarts by index


async def test_a_holder_right_after_the_start_waits_for_the_replay(tmp_path: Path) -> None:
    """Before the loop's first turn nothing is queued, yet the whole log has committed: a holder
    that came then reads the state only once all of it is applied (found by review: a count
    of what the loop had queued let it in at once, on a half-replayed state)."""
    lines = [f"w{i}" for i in range(50)]
    journal = Journal()
    driver = _driver(_with_committed_log(tmp_path, lines), journal, apply_budget_s=0.0)
    read_at: list[int] = []
    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            await nursery.start(driver.run)
            committed = driver.core.commit_index
            async with driver.applies_held():
                read_at.append(driver.applied)
            nursery.cancel_scope.cancel()
    assert committed == len(lines) + 1
    assert read_at[0] >= committed


async def test_a_holder_waits_for_what_committed_while_its_ready_is_saved(tmp_path: Path) -> None:
    """A lone voter commits on append: the core counts a batch as committed while the loop is
    still saving it. A holder that comes then waits for that batch to be applied."""
    storage = _counting(tmp_path, (NODE,))
    journal = Journal()
    driver = _driver(storage, journal, apply_budget_s=0.0)
    read_at: list[int] = []
    read = trio.Event()
    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            await nursery.start(driver.run)
            await _lead(driver)
            await driver.propose(b"first")
            storage.armed = True
            nursery.start_soon(driver.propose_many, [f"x{i}".encode() for i in range(30)])
            await trio.to_thread.run_sync(storage.saving.wait)
            committed = driver.core.commit_index

            async def holder() -> None:
                async with driver.applies_held():
                    read_at.append(driver.applied)
                read.set()

            nursery.start_soon(holder)
            await trio.sleep(0.05)
            assert not read_at  # the save is still held back
            storage.release.set()
            await read.wait()
            nursery.cancel_scope.cancel()
    assert read_at[0] >= committed


async def test_a_restart_tells_no_state_older_than_the_one_it_stopped_with(tmp_path: Path) -> None:
    """The commit index on disk is rewritten only with the term or the vote, so after writes
    it lags what the node had applied. The restart's catch-up past it is still the replay:
    `on_applied` hears of nothing before the log's last entry at the start is applied (found
    by review: it heard of every 20-ms slice from the stale commit index on)."""
    storage = _seeded(tmp_path)
    journal = Journal()
    driver = _driver(storage, journal)
    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            await nursery.start(driver.run)
            await _lead(driver)
            for i in range(30):
                await driver.propose(f"w{i}".encode())
            nursery.cancel_scope.cancel()
    stopped_at = driver.applied
    storage.close()

    told: list[int] = []
    replaying: list[tuple[int, bool]] = []  # (index, `replaying`) as each entry is applied

    class Watched(Journal):
        def apply(self, index: int, data: bytes, decoded: object = None) -> str:
            replaying.append((index, again.replaying))
            return super().apply(index, data, decoded)

    journal = Watched()
    again = _driver(
        RaftStorage.open(tmp_path),
        journal,
        apply_budget_s=0.0,
        on_applied=lambda: told.append(again.applied),
    )
    assert again.startup_commit < stopped_at  # what makes this a test
    assert again.replaying
    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            await nursery.start(again.run)
            await again.wait_applied(stopped_at)
            await again.propose(b"after")
            nursery.cancel_scope.cancel()
    assert told and min(told) >= stopped_at, told[:5]
    # What the keyring asks (`settled`): replaying until the state is the one it stopped with.
    assert not again.replaying
    assert {flag for index, flag in replaying if index < stopped_at} == {True}
    assert {flag for index, flag in replaying if index > stopped_at} == {False}
