"""node.worker_sessions: a manager serves a worker the view its certificate entitles it to, whole
and then as changes; the worker takes a view in only once all of it arrived; a manager that is
not one, a replaced session and a manager too old for sessions are handled as documented.

Both sides talk over `trio.testing.memory_stream_pair` with `FramedStream`s that know their
peers as a TLS handshake would have told them (the manager's end: the worker's certificate; the
worker's end: the protocol both speak). Either side is the real class, or the test drives the
other end by hand. Time is trio's `MockClock` with autojump: keepalives, retries and the
worker's dead-session timeout cost nothing, and a test can tell a push from a keepalive.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
import trio
import trio.testing

from swarmlet import crypto
from swarmlet.certs import PeerIdentity
from swarmlet.node.view_store import SAVE_INTERVAL_S, ViewStore, ViewToSave
from swarmlet.node.worker_sessions import (
    KEEPALIVE_S,
    MEMBER_WAIT_S,
    MIN_VIEW_INTERVAL_S,
    OLD_MANAGER_RETRY_S,
    RETRY_S,
    VIEW_PROTOCOL,
    SessionServer,
    WorkerSession,
    rendezvous_order,
)
from swarmlet.raft.types import ConfState
from swarmlet.state.machine import ClusterState
from swarmlet.state.model import Node, Role, Service, ServiceSpec, Task, TaskState
from swarmlet.state.observed import Endpoint, TaskObservation
from swarmlet.state.worker_view import (
    SessionHello,
    ViewBuilder,
    ViewChanges,
    ViewUpdate,
    updates,
)
from swarmlet.wire.protocol_version import SESSIONS_SINCE
from swarmlet.wire.transport import Address, Counters, FramedStream
from tests.task_wakeups import tasks_woken

TIMEOUT_S = 60  # virtual seconds under the autojump clock: a hang fails, at no cost
HOST = "127.0.0.1"
MANAGER, WORKER, OTHER = "m1", "w1", "w2"
MANAGER_ADDR: Address = (HOST, 1)
INDEX = 7  # the Raft index the manager's state is at


def cluster() -> ClusterState:
    """A manager and two workers; service `s` with two tasks on w1 (one reported running),
    unpublished service `u` with one task on w2."""
    state = ClusterState()
    state.cluster_id = "testcluster"
    for node_id, role in ((MANAGER, Role.MANAGER), (WORKER, Role.WORKER), (OTHER, Role.WORKER)):
        state.nodes[node_id] = Node(node_id, node_id, f"{HOST}:1", HOST, role)
    state.services["s"] = Service(
        id="s", spec=ServiceSpec(name="web", image="web:1", env={"MODE": "full"})
    )
    state.services["u"] = Service(id="u", spec=ServiceSpec(name="batch", image="batch:1"))
    state.tasks["t1"] = Task("t1", "s", 1, 1, node_id=WORKER)
    state.tasks["t2"] = Task("t2", "s", 2, 1, node_id=WORKER)
    state.tasks["t-other"] = Task("t-other", "u", 1, 1, node_id=OTHER)
    state.task_status["t1"] = running("t1")
    return state


def running(task_id: str, port: int = 30000) -> TaskObservation:
    endpoint = Endpoint(80, "tcp", HOST, port)
    return TaskObservation(task_id, TaskState.RUNNING, container_id="c", endpoints=(endpoint,))


def identity(node_id: str, role: str) -> PeerIdentity:
    return PeerIdentity(node_id, role, 0, 2e9, "testcluster", bytes(32))


def stream_pair(
    worker: str | None = WORKER,
    *,
    protocol: int = SESSIONS_SINCE,
    worker_frames: Counters | None = None,
) -> tuple[FramedStream, FramedStream]:
    """(the manager's end, knowing `worker` by its certificate; the worker's end, knowing the
    manager and the protocol both speak). `worker_frames`: the worker end's counters."""
    left, right = trio.testing.memory_stream_pair()
    peer = identity(worker, "worker") if worker is not None else None
    manager_end = FramedStream(left, None, b"", Counters(), peer=peer, peer_protocol=protocol)
    worker_end = FramedStream(
        right,
        None,
        b"",
        worker_frames if worker_frames is not None else Counters(),
        peer=identity(MANAGER, "manager"),
        peer_protocol=protocol,
    )
    return manager_end, worker_end


class Manager:
    """A manager's applied state and Raft facts, as its `SessionServer` reads them."""

    def __init__(self, state: ClusterState) -> None:
        self.state = state
        self.index = INDEX
        self.leader: str | None = MANAGER
        self.conf = ConfState((MANAGER,), ())
        self.counters = Counters()
        self.catch_ups: list[bool] = []  # what each catch-up asked for answers (default: True)
        self.catch_up_calls = 0
        self.catch_up_gate: trio.Event | None = None  # a catch-up waits for it when set
        self.server = SessionServer(
            node_id=MANAGER,
            state=lambda: self.state,
            applied=lambda: self.index,
            leader_id=lambda: self.leader,
            conf=lambda: self.conf,
            catch_up=self._catch_up,
            counters=self.counters,
        )
        self.ended = 0  # streams whose handling ended

    async def _catch_up(self) -> bool:
        """A read barrier: answers the next of `catch_ups`, or True."""
        self.catch_up_calls += 1
        await trio.lowlevel.checkpoint()
        if self.catch_up_gate is not None:
            await self.catch_up_gate.wait()
        return self.catch_ups.pop(0) if self.catch_ups else True

    async def on_stream(self, stream: FramedStream) -> None:
        """What the agent does with an incoming stream: its first frame picks the handler, and
        the transport closes the stream once the handler returned."""
        async with stream.stream:
            first = await stream.receive()
            if isinstance(first, SessionHello):
                await self.server.serve(stream, first)
        self.ended += 1


class Worker:
    """A `WorkerSession` of w1 whose `connect` hands out the streams in `streams`, then fails as
    an unreachable manager would; each call is recorded as (when, manager id)."""

    def __init__(
        self,
        managers: Sequence[tuple[str, Address]] = ((MANAGER, MANAGER_ADDR),),
        *,
        wanted: bool = True,
        store: ViewStore | None = None,
    ) -> None:
        self.streams: list[FramedStream] = []
        self.connects: list[tuple[float, str]] = []
        self.wanted = wanted
        self.counters = Counters()
        self.updates = 0  # calls of `on_update`
        self._updated = trio.Event()
        self.session = WorkerSession(
            node_id=WORKER,
            connect=self._connect,
            managers=lambda: managers,
            wanted=lambda: self.wanted,
            on_update=self._on_update,
            counters=self.counters,
            store=store,
        )

    async def _connect(self, addr: Address, node_id: str) -> FramedStream:
        self.connects.append((trio.current_time(), node_id))
        await trio.lowlevel.checkpoint()
        if not self.streams:
            raise OSError("connection refused")
        return self.streams.pop(0)

    def _on_update(self) -> None:
        self.updates += 1
        self._updated.set()
        self._updated = trio.Event()

    async def until(self, condition: Callable[[], bool]) -> None:
        """Wait for the view to move until `condition` holds."""
        while not condition():
            await self._updated.wait()


def in_parts(changes: ViewChanges, *, index: int, reset: bool, per_update: int) -> list[ViewUpdate]:
    return list(
        updates(
            changes,
            index=index,
            leader_id=MANAGER,
            in_raft=False,
            reset=reset,
            per_update=per_update,
        )
    )


async def serve_whole_view(manager_end: FramedStream, state: ClusterState) -> None:
    """Be the manager at the other end of a worker's new session: take its hello, send the
    worker's whole view of `state` at INDEX."""
    assert await manager_end.receive() == SessionHello(VIEW_PROTOCOL)
    whole = ViewBuilder(WORKER).full(state)
    for update in in_parts(whole, index=INDEX, reset=True, per_update=500):
        await manager_end.send(update)


def serving(session: WorkerSession) -> str | None:
    """The manager serving `session` now (read afresh, not narrowed by an earlier assert)."""
    return session.manager_id


async def drain(stream: FramedStream) -> int:
    """Read `stream` to its end; how many frames it still carried."""
    frames = 0
    while await stream.receive() is not None:
        frames += 1
    return frames


# ------------------------------------------------------------------------ a session end to end


async def test_a_worker_holds_the_view_its_manager_serves_and_follows_each_change(
    autojump_clock: trio.testing.MockClock,
) -> None:
    manager, worker = Manager(cluster()), Worker()
    manager_end, worker_end = stream_pair()
    worker.streams.append(worker_end)
    session, state = worker.session, manager.state
    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(manager.on_stream, manager_end)
            await nursery.start(session.run)
            await worker.until(lambda: session.view is not None)

            view = session.view
            assert view is not None
            assert dict(view.tasks) == {"t1": state.tasks["t1"], "t2": state.tasks["t2"]}
            assert dict(view.services) == {"s": state.services["s"]}  # in full: env and all
            assert "t-other" not in view.tasks and "u" not in view.services
            assert dict(view.task_status) == {"t1": state.task_status["t1"]}
            assert set(view.nodes) == {MANAGER, WORKER, OTHER}
            # (applied, leader, in Raft, serving by): compared at once, not narrowed for mypy
            assert (session.applied, session.leader_id, session.in_raft, session.manager_id) == (
                INDEX,
                MANAGER,
                False,
                MANAGER,
            )
            assert manager.server.sessions == 1
            assert worker.counters["worker_sessions_opened"] == 1

            before = trio.current_time()
            state.tasks["t3"] = Task("t3", "s", 3, 1, node_id=WORKER)
            state.task_status["t2"] = running("t2", 30001)
            manager.index = INDEX + 2
            manager.conf = ConfState((MANAGER,), (WORKER,))
            manager.server.notify()
            await worker.until(lambda: session.applied == INDEX + 2)
            assert trio.current_time() - before < KEEPALIVE_S  # pushed, not a keepalive

            view = session.view
            assert view is not None
            assert dict(view.tasks) == {t: state.tasks[t] for t in ("t1", "t2", "t3")}
            assert view.task_status["t2"] == running("t2", 30001)
            assert "t-other" not in view.tasks
            assert session.in_raft is True
            assert session.manager_id == MANAGER
            nursery.cancel_scope.cancel()
    assert serving(session) is None  # no session any more; the view stays
    assert session.view is not None


# ------------------------------------------------------------------------ the view on disk


class Disk(ViewStore):
    """The real store, saving on the event loop: a thread's work would look like idleness to
    the autojump clock (the integration test saves in the thread); refuses the first
    `failures` saves, as a full disk would."""

    def __init__(self, path: Path, key: bytes, *, failures: int = 0) -> None:
        self.counters = Counters()  # the store's own (unreadable views)
        super().__init__(path, crypto.Sealer(key), WORKER, self.counters)
        self.failures = failures

    def save(self, taken: ViewToSave) -> None:
        if self.failures:
            self.failures -= 1
            raise OSError(28, "No space left on device")
        super().save(taken)

    async def write(self, taken: ViewToSave) -> None:
        self.save(taken)
        await trio.lowlevel.checkpoint()


async def saves(counters: Counters, n: int) -> None:
    """Until the worker saved its view `n` times (counted after each save, no event)."""
    while counters["worker_view_saved"] < n:  # noqa: ASYNC110
        await trio.sleep(0.01)


async def test_a_restarted_worker_starts_from_its_stored_view_but_never_as_a_current_one(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """A worker keeps the view a manager served on its disk (at most once an interval, and
    what is left at its stop); restarted while no manager answers, it starts from that view
    (what follows the state is told once), though not `live`: `sync_state` waits for a
    manager's; a promotion removes it."""
    key, stored = crypto.new_key(), tmp_path / "worker-view.sealed"
    manager = Manager(cluster())
    worker = Worker(store=Disk(stored, key))
    manager_end, worker_end = stream_pair()
    worker.streams.append(worker_end)

    async def change(task_id: str, index: int) -> None:
        manager.state.tasks[task_id] = Task(task_id, "s", 3, 1, node_id=WORKER)
        manager.index = index
        manager.server.notify()
        await worker.until(lambda: worker.session.applied == index)

    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(manager.on_stream, manager_end)
            await nursery.start(worker.session.run)
            await worker.session.wait_live()
            await saves(worker.counters, 1)
            assert stored.exists()
            await change("t3", INDEX + 1)  # two changes within an interval: one save
            await change("t4", INDEX + 2)
            started = trio.current_time()
            await saves(worker.counters, 2)
            assert trio.current_time() - started >= SAVE_INTERVAL_S - 0.1
            updates, applied = worker.updates, worker.counters["worker_view_updates_applied"]
            await trio.sleep(3 * SAVE_INTERVAL_S)  # keepalives alone: nothing to save ...
            assert worker.counters["worker_view_saved"] == 2
            assert worker.counters["worker_view_updates_applied"] > applied  # (they came)
            assert worker.updates == updates  # ... and nothing for the agent to look at again
            await change("t5", INDEX + 3)
            await change("t6", INDEX + 4)  # within the interval after the save of t5's
            nursery.cancel_scope.cancel()  # the agent stops: what is left is saved now
    served = worker.session.view
    assert served is not None and worker.session.live
    assert worker.counters["worker_view_saved"] == 4

    disk = Disk(stored, key)
    restarted = Worker(store=disk)
    session = restarted.session  # every manager refuses its connections
    assert session.view is not None and not session.live
    assert session.view.snapshot() == served.snapshot()
    assert (session.applied, session.leader_id, session.in_raft) == (INDEX + 4, MANAGER, False)
    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            await nursery.start(session.run)
            assert restarted.updates == 1  # the executor and the proxy look at the stored view
            with trio.move_on_after(10 * RETRY_S):
                await session.wait_live()
            assert not session.live and len(restarted.connects) > 1
            session.drop_view()  # promoted: the node reads its Raft replica from now on
            assert not stored.exists()
            nursery.cancel_scope.cancel()
    assert disk.counters["worker_view_unreadable"] == 0
    assert not stored.exists()  # nothing left to save for a view dropped


async def test_a_save_the_disk_refused_is_tried_again_without_another_change(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    manager, worker = (
        Manager(cluster()),
        Worker(store=Disk(tmp_path / "view", crypto.new_key(), failures=2)),
    )
    manager_end, worker_end = stream_pair()
    worker.streams.append(worker_end)
    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(manager.on_stream, manager_end)
            await nursery.start(worker.session.run)
            await saves(worker.counters, 1)
            nursery.cancel_scope.cancel()
    assert worker.counters["worker_view_save_errors"] == 2
    assert (tmp_path / "view").exists()


# ---------------------------------------------------------------------------------- staging


async def test_a_worker_takes_a_view_or_a_run_of_changes_in_only_once_all_of_it_arrived(
    autojump_clock: trio.testing.MockClock,
) -> None:
    state, builder, worker = cluster(), ViewBuilder(WORKER), Worker()
    frames = Counters()  # the worker end's: proof that it read each frame
    manager_end, worker_end = stream_pair(worker_frames=frames)
    worker.streams.append(worker_end)
    session = worker.session
    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            await nursery.start(session.run)
            assert await manager_end.receive() == SessionHello(VIEW_PROTOCOL)

            # The first view, in three frames: none of it before the last.
            first = in_parts(builder.full(state), index=INDEX, reset=True, per_update=3)
            assert [(u.reset, u.complete) for u in first] == [
                (True, False),
                (False, False),
                (False, True),
            ]
            for update in first[:-1]:
                await manager_end.send(update)
                await trio.testing.wait_all_tasks_blocked()
                assert session.view is None
                assert session.applied == 0
            assert frames["frames_in"] == 2
            await manager_end.send(first[-1])
            await trio.testing.wait_all_tasks_blocked()
            held = session.view
            assert held is not None
            assert set(held.tasks) == {"t1", "t2"}
            assert session.applied == INDEX

            # A whole view again: the one held stays, untouched, until all of the new one is in.
            state.tasks["t3"] = Task("t3", "s", 3, 1, node_id=WORKER)
            second = in_parts(builder.full(state), index=INDEX + 1, reset=True, per_update=3)
            assert [u.complete for u in second] == [False, False, True]
            for update in second[:-1]:
                await manager_end.send(update)
                await trio.testing.wait_all_tasks_blocked()
                assert session.view is held
                assert set(held.tasks) == {"t1", "t2"}
                assert session.applied == INDEX
            assert frames["frames_in"] == 5
            await manager_end.send(second[-1])
            await trio.testing.wait_all_tasks_blocked()
            view = session.view
            assert view is not None and view is not held
            assert set(view.tasks) == {"t1", "t2", "t3"}
            assert session.applied == INDEX + 1

            # A run of changes in two frames: nothing of it before the last.
            state.tasks["t4"] = Task("t4", "s", 4, 1, node_id=WORKER)
            state.task_status["t2"] = running("t2")
            changes = builder.changes(state)
            assert changes is not None
            run = in_parts(changes, index=INDEX + 2, reset=False, per_update=1)
            assert [u.complete for u in run] == [False, True]
            await manager_end.send(run[0])
            await trio.testing.wait_all_tasks_blocked()
            assert frames["frames_in"] == 7
            assert set(view.tasks) == {"t1", "t2", "t3"}
            assert set(view.task_status) == {"t1"}
            assert session.applied == INDEX + 1
            await manager_end.send(run[1])
            await trio.testing.wait_all_tasks_blocked()
            assert session.view is not None
            assert set(session.view.tasks) == {"t1", "t2", "t3", "t4"}
            assert set(session.view.task_status) == {"t1", "t2"}
            assert session.applied == INDEX + 2
            assert worker.counters["worker_session_errors"] == 0
            nursery.cancel_scope.cancel()


async def test_a_session_that_begins_with_changes_is_dropped_and_gives_no_view(
    autojump_clock: trio.testing.MockClock,
) -> None:
    state, worker = cluster(), Worker()
    manager_end, worker_end = stream_pair()
    worker.streams.append(worker_end)
    session = worker.session
    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            await nursery.start(session.run)
            assert await manager_end.receive() == SessionHello(VIEW_PROTOCOL)
            await manager_end.send(
                ViewUpdate(index=INDEX, leader_id=MANAGER, tasks=(state.tasks["t1"],))
            )
            assert await manager_end.receive() is None  # the worker hung up
            await trio.testing.wait_all_tasks_blocked()
            assert worker.counters["worker_session_errors"] == 1
            assert session.view is None
            assert session.applied == 0
            assert session.manager_id is None
            nursery.cancel_scope.cancel()


async def test_a_later_session_that_begins_with_changes_leaves_the_view_held_as_it_was(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The worker keeps its view between sessions; a new session must still begin with a whole
    view, or its changes would be laid over another manager's state at another index."""
    state, worker = cluster(), Worker()
    first_manager, first_worker = stream_pair()
    second_manager, second_worker = stream_pair()
    worker.streams += [first_worker, second_worker]
    session = worker.session
    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            await nursery.start(session.run)
            await serve_whole_view(first_manager, state)
            await worker.until(lambda: session.view is not None)
            held = session.view
            assert held is not None
            await first_manager.aclose()  # that manager went; the worker finds another

            assert await second_manager.receive() == SessionHello(VIEW_PROTOCOL)
            stray = Task("t9", "s", 9, 1, node_id=WORKER)
            await second_manager.send(ViewUpdate(index=INDEX - 4, leader_id="m2", tasks=(stray,)))
            await trio.testing.wait_all_tasks_blocked()
            assert session.view is held
            assert set(held.tasks) == {"t1", "t2"}
            assert session.applied == INDEX
            assert worker.counters["worker_session_errors"] == 1
            nursery.cancel_scope.cancel()


async def test_a_view_older_than_the_one_held_is_held_back_until_it_catches_up(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A manager restarted with an old replica (issue: found as a worker's replicas stopped
    and replaced after its only manager restarted under load): the worker keeps its view, and
    what follows it is not told, until that manager's view reaches the index held; then it
    is taken in whole, with the changes that came meanwhile."""
    state, worker = cluster(), Worker()
    first_manager, first_worker = stream_pair()
    second_manager, second_worker = stream_pair()
    worker.streams += [first_worker, second_worker]
    session = worker.session
    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            await nursery.start(session.run)
            await serve_whole_view(first_manager, state)
            await worker.until(lambda: session.view is not None)
            held, updates = session.view, worker.updates
            await first_manager.aclose()

            # The second manager's replica predates t2 (and t1's status).
            assert await second_manager.receive() == SessionHello(VIEW_PROTOCOL)
            old = cluster()
            del old.tasks["t2"], old.task_status["t1"]
            builder = ViewBuilder(WORKER)
            for update in in_parts(builder.full(old), index=INDEX - 3, reset=True, per_update=2):
                await second_manager.send(update)
            old.tasks["t2"] = state.tasks["t2"]
            changes = builder.changes(old)
            assert changes is not None
            for update in in_parts(changes, index=INDEX - 1, reset=False, per_update=500):
                await second_manager.send(update)
            await trio.testing.wait_all_tasks_blocked()
            assert session.view is held and session.applied == INDEX
            assert worker.updates == updates
            assert serving(session) is None  # it does not serve this node (yet)
            assert worker.counters["worker_view_behind"] == 2

            # Caught up: its view, changes included, is taken in at once.
            old.task_status["t1"] = running("t1")
            old.tasks["t3"] = Task("t3", "s", 3, 1, node_id=WORKER)
            changes = builder.changes(old)
            assert changes is not None
            for update in in_parts(changes, index=INDEX + 1, reset=False, per_update=500):
                await second_manager.send(update)
            await worker.until(lambda: session.applied == INDEX + 1)
            view = session.view
            assert view is not None and view is not held
            assert set(view.tasks) == {"t1", "t2", "t3"}
            assert view.task_status["t1"] == running("t1")
            assert worker.updates == updates + 1
            assert serving(session) == MANAGER
            assert worker.counters["worker_session_errors"] == 0
            nursery.cancel_scope.cancel()


# ------------------------------------------------------------------------- the manager's side


@pytest.mark.parametrize("reason", ["not a manager", "unknown view protocol", "no certificate"])
async def test_a_manager_refuses_a_session_it_must_not_serve_and_sends_nothing(
    reason: str, autojump_clock: trio.testing.MockClock
) -> None:
    state = cluster()
    if reason == "not a manager":
        state.nodes[MANAGER] = Node(MANAGER, MANAGER, f"{HOST}:1", HOST, Role.WORKER)
    manager = Manager(state)
    manager_end, worker_end = stream_pair(None if reason == "no certificate" else WORKER)
    protocol = VIEW_PROTOCOL + 1 if reason == "unknown view protocol" else VIEW_PROTOCOL
    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(manager.on_stream, manager_end)
            await worker_end.send(SessionHello(protocol))
        assert manager.ended == 1
        assert await worker_end.receive() is None
    assert manager.counters["worker_sessions_refused"] == 1
    assert manager.counters["worker_sessions_served"] == 0
    assert manager.server.sessions == 0


async def test_a_session_for_an_id_no_member_has_is_refused_and_a_new_members_is_served(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """An ex-manager that kept the CA key can mint certificates for ids no member has, which
    `peer_policy.admit` takes as a worker's: such a session got a whole view (every node, the
    routed services, their tasks and endpoints), one unpaced for each id (review). Now the
    manager waits MEMBER_WAIT_S for the node's record, then refuses, sending nothing; a node
    whose join this replica applies meanwhile (it opened its session as soon as the manager
    that admitted it answered) is served."""
    manager = Manager(cluster())
    with trio.fail_after(TIMEOUT_S):
        manager_end, worker_end = stream_pair("ghost")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(manager.on_stream, manager_end)
            await worker_end.send(SessionHello(VIEW_PROTOCOL))
            assert await worker_end.receive() is None
        assert trio.current_time() >= MEMBER_WAIT_S
        assert manager.counters["worker_sessions_refused_not_member"] == 1

        manager_end, worker_end = stream_pair("newcomer")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(manager.on_stream, manager_end)
            await worker_end.send(SessionHello(VIEW_PROTOCOL))
            await trio.sleep(MEMBER_WAIT_S / 2)
            manager.state.nodes["newcomer"] = Node("newcomer", "n", f"{HOST}:1", HOST, Role.WORKER)
            manager.server.notify()
            first = await worker_end.receive(expect=(ViewUpdate,))
            assert first is not None and first.reset
            await worker_end.aclose()
    assert manager.counters["worker_sessions_refused_not_member"] == 1
    assert manager.counters["worker_sessions_served"] == 1


async def test_a_manager_serves_only_once_its_replica_has_caught_up_and_asks_only_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Restarted, a manager's replica holds what its disk held; it refuses sessions, sending
    nothing, while it cannot catch up (no leader answers its read barrier), and once it has,
    serves every later session without asking again: from then on it follows the leader."""
    manager = Manager(cluster())
    manager.catch_ups = [False]
    with trio.fail_after(TIMEOUT_S):
        for served in (False, True, True):
            manager_end, worker_end = stream_pair()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(manager.on_stream, manager_end)
                await worker_end.send(SessionHello(VIEW_PROTOCOL))
                first = await worker_end.receive(expect=(ViewUpdate,))
                assert (first is not None) == served
                await worker_end.aclose()
    assert manager.counters["worker_sessions_refused_behind"] == 1
    assert manager.counters["worker_sessions_served"] == 2
    assert manager.catch_up_calls == 2


async def test_workers_asking_a_restarted_manager_at_once_share_one_catch_up(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A restarted manager with many workers: their sessions wait on one read barrier, not
    one each (a barrier is a round trip to the leader)."""
    manager = Manager(cluster())
    gate = manager.catch_up_gate = trio.Event()
    ends = [stream_pair(worker) for worker in (WORKER, OTHER)]
    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            for manager_end, worker_end in ends:
                nursery.start_soon(manager.on_stream, manager_end)
                await worker_end.send(SessionHello(VIEW_PROTOCOL))
            await trio.testing.wait_all_tasks_blocked()
            assert manager.catch_up_calls == 1
            gate.set()
            for _, worker_end in ends:
                first = await worker_end.receive(expect=(ViewUpdate,))
                assert first is not None and first.reset
                await worker_end.aclose()
    assert manager.counters["worker_sessions_served"] == 2
    assert manager.catch_up_calls == 1


async def test_a_manager_demoted_while_serving_ends_the_session(
    autojump_clock: trio.testing.MockClock,
) -> None:
    manager = Manager(cluster())
    manager_end, worker_end = stream_pair()
    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(manager.on_stream, manager_end)
            await worker_end.send(SessionHello(VIEW_PROTOCOL))
            first = await worker_end.receive(expect=(ViewUpdate,))
            assert first is not None and first.reset and first.complete
            assert manager.server.sessions == 1
            manager.state.nodes[MANAGER] = Node(MANAGER, MANAGER, f"{HOST}:1", HOST, Role.WORKER)
            manager.server.notify()
            await drain(worker_end)  # ends: no keepalive keeps it open
        assert manager.ended == 1
    assert manager.server.sessions == 0


async def test_a_change_elsewhere_in_the_cluster_costs_a_worker_only_its_keepalive(
    autojump_clock: trio.testing.MockClock,
) -> None:
    manager = Manager(cluster())
    manager_end, worker_end = stream_pair()
    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(manager.on_stream, manager_end)
            await worker_end.send(SessionHello(VIEW_PROTOCOL))
            first = await worker_end.receive(expect=(ViewUpdate,))
            assert first is not None and first.complete
            sent_at = trio.current_time()

            # w2's task of an unpublished service: not in w1's view.
            manager.state.task_status["t-other"] = running("t-other")
            manager.state.tasks["t-other2"] = Task("t-other2", "u", 2, 1, node_id=OTHER)
            manager.index = INDEX + 1
            manager.server.notify()
            with trio.move_on_after(KEEPALIVE_S / 2):
                assert await worker_end.receive() is None, "a frame for a change elsewhere"
            keepalive = await worker_end.receive(expect=(ViewUpdate,))
            assert keepalive is not None
            assert trio.current_time() - sent_at == pytest.approx(KEEPALIVE_S)
            assert keepalive.records() == 0 and keepalive.complete and not keepalive.reset
            assert keepalive.index == INDEX + 1  # the index travels with it
            nursery.cancel_scope.cancel()


async def test_a_managers_keepalives_to_all_its_workers_go_out_together(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """On the beat of KEEPALIVE_S, whenever each session began: one wake-up of the manager for
    all of them (issue #20)."""
    manager = Manager(cluster())
    arrivals: dict[str, list[float]] = {WORKER: [], OTHER: []}

    async def worker(name: str, manager_end: FramedStream, worker_end: FramedStream) -> None:
        await worker_end.send(SessionHello(VIEW_PROTOCOL))
        while len(arrivals[name]) < 4:
            update = await worker_end.receive(expect=(ViewUpdate,))
            assert update is not None
            arrivals[name].append(trio.current_time())

    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            async with trio.open_nursery() as workers:
                for name, delay in ((WORKER, 0.0), (OTHER, 0.37)):
                    await trio.sleep(delay)
                    manager_end, worker_end = stream_pair(name)
                    nursery.start_soon(manager.on_stream, manager_end)
                    workers.start_soon(worker, name, manager_end, worker_end)
            nursery.cancel_scope.cancel()
    # Each one's whole view when it began (w2's 0.37 s later), then the keepalives: at the same
    # instants for both, KEEPALIVE_S apart.
    assert arrivals[OTHER][0] - arrivals[WORKER][0] == pytest.approx(0.37)
    assert arrivals[WORKER][1:] == arrivals[OTHER][1:]
    assert arrivals[WORKER][2] - arrivals[WORKER][1] == pytest.approx(KEEPALIVE_S)


async def test_a_second_session_of_a_node_replaces_its_first(
    autojump_clock: trio.testing.MockClock,
) -> None:
    manager = Manager(cluster())
    old_manager_end, old_worker_end = stream_pair()
    new_manager_end, new_worker_end = stream_pair()
    server = manager.server
    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(manager.on_stream, old_manager_end)
            await old_worker_end.send(SessionHello(VIEW_PROTOCOL))
            first = await old_worker_end.receive(expect=(ViewUpdate,))
            assert first is not None and first.reset
            assert server.sessions == 1

            nursery.start_soon(manager.on_stream, new_manager_end)
            await new_worker_end.send(SessionHello(VIEW_PROTOCOL))
            first = await new_worker_end.receive(expect=(ViewUpdate,))
            assert first is not None and first.reset
            await drain(old_worker_end)  # the first session's stream ends
            await trio.testing.wait_all_tasks_blocked()
            assert manager.ended == 1
            assert manager.counters["worker_sessions_replaced"] == 1
            assert manager.counters["worker_sessions_served"] == 2
            assert server.sessions == 1

            # The newer one goes on being served...
            manager.state.tasks["t3"] = Task("t3", "s", 3, 1, node_id=WORKER)
            manager.index = INDEX + 1
            server.notify()
            change = await new_worker_end.receive(expect=(ViewUpdate,))
            while change is not None and change.index < INDEX + 1:  # a keepalive before
                change = await new_worker_end.receive(expect=(ViewUpdate,))
            assert change is not None and not change.reset
            assert [t.id for t in change.tasks] == ["t3"]
            assert server.sessions == 1

            # ... until its worker goes: then no session of the node is left.
            await new_worker_end.aclose()
        assert manager.ended == 2
    assert server.sessions == 0
    assert manager.counters["worker_sessions_replaced"] == 1


async def test_a_node_that_opens_session_after_session_gets_a_whole_view_every_interval_only(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Each new session was a whole view built and sent (its tasks and every routed service):
    a worker looping on hellos had the manager build them back to back. Twenty hellos a
    second for 10 s: the manager builds at most one a MIN_VIEW_INTERVAL_S, and another node
    is served at once meanwhile."""
    manager = Manager(cluster())
    views = 0
    start = trio.current_time()
    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            ends: list[FramedStream] = []
            while trio.current_time() < start + 10.0:
                manager_end, worker_end = stream_pair()
                ends.append(worker_end)
                nursery.start_soon(manager.on_stream, manager_end)
                await worker_end.send(SessionHello(VIEW_PROTOCOL))
                await trio.sleep(0.05)
            other_manager_end, other_end = stream_pair(OTHER)
            nursery.start_soon(manager.on_stream, other_manager_end)
            await other_end.send(SessionHello(VIEW_PROTOCOL))
            first = await other_end.receive(expect=(ViewUpdate,))
            assert first is not None and first.reset
            assert trio.current_time() < start + 10.1  # not paced by w1's sessions
            for end in ends:
                update = await end.receive(expect=(ViewUpdate,))
                views += update is not None and update.reset
            nursery.cancel_scope.cancel()
    assert views <= 10.0 / MIN_VIEW_INTERVAL_S + 1
    assert manager.counters["worker_sessions_paced"] >= 150


# -------------------------------------------------------------------------- the worker's side


async def test_a_worker_asks_a_manager_too_old_for_sessions_only_once_in_a_while(
    autojump_clock: trio.testing.MockClock,
) -> None:
    worker = Worker()
    pairs = [stream_pair(protocol=SESSIONS_SINCE - 1) for _ in range(5)]
    worker.streams += [worker_end for _, worker_end in pairs]
    with trio.fail_after(TIMEOUT_S * 3):
        async with trio.open_nursery() as nursery:
            await nursery.start(worker.session.run)
            await trio.sleep(2 * OLD_MANAGER_RETRY_S + 5)
            nursery.cancel_scope.cancel()
        times = [when for when, _ in worker.connects]
        assert len(times) == 3
        for earlier, later in itertools.pairwise(times):
            # not before the pause; soon after it (the manager may have been upgraded)
            assert OLD_MANAGER_RETRY_S <= later - earlier < OLD_MANAGER_RETRY_S + 2 * RETRY_S
        for manager_end, _ in pairs[: len(times)]:
            assert await manager_end.receive() is None  # no SessionHello: the stream just ends
    assert worker.counters["worker_sessions_opened"] == 0
    assert worker.session.view is None


async def test_a_node_that_wants_no_session_opens_none(
    autojump_clock: trio.testing.MockClock,
) -> None:
    worker = Worker(wanted=False)
    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            await nursery.start(worker.session.run)
            await trio.sleep(10 * RETRY_S)
            assert worker.connects == []
            assert worker.counters["worker_sessions_opened"] == 0

            with tasks_woken() as woken:  # a manager is told of every applied batch ...
                for _ in range(3):
                    worker.session.state_moved()
                    await trio.testing.wait_all_tasks_blocked()
            assert woken == []  # ... which wakes nothing while it wants no session

            worker.wanted = True  # it became a worker ...
            await trio.sleep(2 * RETRY_S)
            assert worker.connects == []  # ... unknown to the session until the state moved
            worker.session.state_moved()  # as the agent says at every change: now it asks
            await trio.sleep(2 * RETRY_S)
            assert worker.connects != []
            assert {manager_id for _, manager_id in worker.connects} == {MANAGER}
            nursery.cancel_scope.cancel()
    assert worker.session.view is None


# ------------------------------------------------------------------ which manager serves whom


def test_workers_spread_over_the_managers_and_a_lost_manager_moves_only_its_own() -> None:
    managers = [(f"m{i}", ("127.0.0.1", 7946 + i)) for i in range(3)]
    workers = [f"w{i:03d}" for i in range(300)]
    first = {w: rendezvous_order(w, managers)[0][0] for w in workers}
    counts = Counter(first.values())
    assert set(counts) == {"m0", "m1", "m2"} and min(counts.values()) >= 70, counts
    # Every worker tries every manager, each in its own stable order.
    assert all(sorted(rendezvous_order(w, managers)) == sorted(managers) for w in workers)
    assert rendezvous_order("w000", managers) == rendezvous_order("w000", managers[::-1])
    # m1 gone: its workers move to the others; no other worker moves.
    after = {w: rendezvous_order(w, [managers[0], managers[2]])[0][0] for w in workers}
    assert {w for w in workers if after[w] != first[w]} == {w for w in workers if first[w] == "m1"}
