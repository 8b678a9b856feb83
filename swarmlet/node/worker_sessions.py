"""Workers' sessions with managers (issue #16): how a worker gets its part of the state.

Chosen after swarmkit's dispatcher, not Nomad's blocking queries: a worker holds one session (a
TLS stream of the cluster channel, authenticated by its certificate) with any manager, which
serves it from its own applied state: the worker's view (`state.worker_view`) whole, then each
change as it is applied, coalesced while the worker is slow to read. Nomad's client pulls
instead, two round trips per change (the index, then the allocations); our streams are already
long-lived and authenticated, so pushing costs one frame per change and no polling.

  worker                                          any manager
    SessionHello  ------------------------------>   ViewBuilder(certificate's node id)
                  <------------------------------   ViewUpdate(reset) ... (complete)
                  <------------------------------   ViewUpdate (changes; or none, every
                                                      KEEPALIVE_S, carrying index and leader)

Statuses go the other way as before, batched, to the leader (`node.status_reports`).

Invariants:
  * a manager serves a session only while its own record says it is a manager, and only the
    view of the node its peer's certificate names, once its replica lists that node: a worker
    cannot ask for another's, nor an id no member has (an ex-manager that kept the CA key can
    mint certificates for such ids: `security.peer_policy`); one session per node (a newer one
    replaces the older);
  * a worker swaps a full view in only once all of it arrived, and applies a run of updates
    only once it is complete: its executor and proxy never see half a view;
  * a worker's view never goes back in Raft index: a manager serves only once its replica has
    caught up with the cluster since it started, and a worker holds a session's view back
    while it is older than the one it has (a restarted manager's replica starts where its disk
    left it, which may lack tasks the worker runs: taken in, the executor would stop them);
  * a worker keeps its last view while it has no session (no manager reachable, an election):
    its tasks keep running and its proxy keeps serving the routes it had; and across a restart,
    from its disk (`node.view_store`), though never as a current view (`live`).

Must not know: what a view holds (`state.worker_view`), Docker, the proxy.
"""

from __future__ import annotations

import hashlib
import logging
import random
from collections.abc import Awaitable, Callable, Sequence

import trio

from swarmlet import timers
from swarmlet.errors import RemoteProtocolError
from swarmlet.node.view_store import SAVE_INTERVAL_S, ViewStore
from swarmlet.raft.types import ConfState
from swarmlet.state.machine import ClusterState
from swarmlet.state.model import Role
from swarmlet.state.worker_view import (
    SessionHello,
    ViewBuilder,
    ViewUpdate,
    apply_update,
    updates,
)
from swarmlet.wire.protocol_version import SESSIONS_SINCE
from swarmlet.wire.transport import Address, Counters, FramedStream

log = logging.getLogger(__name__)

VIEW_PROTOCOL = 1  # of `SessionHello`/`ViewUpdate`; a manager refuses one it does not know
KEEPALIVE_S = 1.0  # a manager sends an update at least this often, changes or not
DEAD_AFTER_S = 4 * KEEPALIVE_S  # a worker gives a silent session up after this
CATCH_UP_S = 3.0  # a restarted manager's wait to catch up before it serves (< DEAD_AFTER_S)
# How long a session from a node this replica does not list waits for its record: a node that
# just joined opens its sessions once the manager that admitted it answers, maybe before this
# replica applied the join.
MEMBER_WAIT_S = 2.0
RETRY_S = 1.0  # a worker's pause between rounds of managers that all failed
OLD_MANAGER_RETRY_S = 30.0  # how long a manager too old for sessions is left alone
# A manager builds and sends one node a whole view at most this often: each is the node's
# tasks and every routed service (70 ms and 1.5 MiB at 10,000 routed tasks), and a worker
# that opened session after session had one built for each. A newer session waits out the
# rest (and replaces any waiting one); below DEAD_AFTER_S, so that an honest worker whose
# session broke gets its view before it would give the next one up.
MIN_VIEW_INTERVAL_S = 2.0


def rendezvous_order(
    node_id: str, managers: Sequence[tuple[str, Address]]
) -> list[tuple[str, Address]]:
    """`managers` in the order a worker tries them for its session: by rendezvous hashing
    (highest random weight) of the pair, so that the workers spread evenly over the managers
    rather than all on the leader, and a manager that goes moves only its own workers."""

    def weight(manager: tuple[str, Address]) -> bytes:
        return hashlib.blake2b(f"{node_id}/{manager[0]}".encode(), digest_size=8).digest()

    return sorted(managers, key=weight, reverse=True)


class SessionServer:
    """A manager's side: serve each worker that asks the view its certificate entitles it to."""

    def __init__(
        self,
        *,
        node_id: str,
        state: Callable[[], ClusterState],
        applied: Callable[[], int],
        leader_id: Callable[[], str | None],
        conf: Callable[[], ConfState],
        catch_up: Callable[[], Awaitable[bool]],
        counters: Counters,
    ) -> None:
        """`catch_up`: bring this manager's replica up to date with the cluster (a read
        barrier); False if it could not (no leader)."""
        self.node_id = node_id
        self._state = state
        self._applied = applied
        self._leader_id = leader_id
        self._conf = conf
        self._catch_up = catch_up
        self._caught_up = False  # once since the start: then its replica follows the leader's
        self._catching_up: trio.Event | None = None  # set when the attempt under way ends
        self.counters = counters
        self._changed = trio.Event()
        # Node id -> its session here: one per node, the newest (a worker that reconnects
        # replaces its old session; a node cannot hold more than one view's worth of memory).
        self._open: dict[str, trio.CancelScope] = {}
        self._last_view: dict[str, float] = {}  # node id -> when its last whole view began

    def notify(self) -> None:
        """The state or the leader changed: every session looks."""
        self._changed.set()
        self._changed = trio.Event()

    def _serves(self) -> bool:
        own = self._state().nodes.get(self.node_id)
        return own is not None and own.role is Role.MANAGER

    async def serve(self, stream: FramedStream, hello: object) -> None:
        """A stream handler of the agent, for a first frame `SessionHello`."""
        assert isinstance(hello, SessionHello)
        if stream.peer is None or hello.protocol != VIEW_PROTOCOL or not self._serves():
            self.counters["worker_sessions_refused"] += 1
            return
        if not await self._has_caught_up():
            self.counters["worker_sessions_refused_behind"] += 1
            return
        worker = stream.peer.node_id
        if not await self._lists(worker):
            self.counters["worker_sessions_refused_not_member"] += 1
            return
        if (older := self._open.pop(worker, None)) is not None:
            older.cancel()
            self.counters["worker_sessions_replaced"] += 1
        with trio.CancelScope() as scope:
            self._open[worker] = scope
            try:
                await self._paced(worker)
                await self._serve(stream, worker)
            finally:
                if self._open.get(worker) is scope:
                    del self._open[worker]

    async def _has_caught_up(self) -> bool:
        """Whether this manager's replica has caught up since the agent started. Until then it
        holds what it had applied when it stopped (its commit index is not kept on every
        write), maybe older than the view its workers hold."""
        if self._caught_up:
            return True
        if self._catching_up is not None:  # one barrier for all the workers asking at once
            await self._catching_up.wait()
            return self._caught_up
        done = self._catching_up = trio.Event()
        try:
            with trio.move_on_after(CATCH_UP_S):
                self._caught_up = await self._catch_up()
        finally:
            self._catching_up = None
            done.set()
        return self._caught_up

    async def _lists(self, worker: str) -> bool:
        """Whether this replica lists `worker`, waiting up to MEMBER_WAIT_S for it to."""
        with trio.move_on_after(MEMBER_WAIT_S):
            while worker not in self._state().nodes:
                await self._changed.wait()
            return True
        return False

    async def _paced(self, worker: str) -> None:
        """Wait, if `worker` had a whole view less than MIN_VIEW_INTERVAL_S ago."""
        now = trio.current_time()
        last = self._last_view.get(worker)
        if last is not None and now < last + MIN_VIEW_INTERVAL_S:
            self.counters["worker_sessions_paced"] += 1
            await trio.sleep_until(last + MIN_VIEW_INTERVAL_S)
            now = trio.current_time()
        # Only the nodes of the last interval are remembered.
        for node in [n for n, t in self._last_view.items() if t + MIN_VIEW_INTERVAL_S <= now]:
            del self._last_view[node]
        self._last_view[worker] = now

    @property
    def sessions(self) -> int:
        """Sessions open now."""
        return len(self._open)

    async def _serve(self, stream: FramedStream, worker: str) -> None:
        builder = ViewBuilder(worker)
        self.counters["worker_sessions_served"] += 1
        changes, reset = builder.full(self._state()), True
        said: tuple[str, bool] | None = None  # (leader, in Raft) as last sent
        quiet_until = 0.0  # an update with nothing in it goes only as a keepalive
        try:
            while self._serves():
                changed = self._changed
                state, index = self._state(), self._applied()
                if not reset:
                    found = builder.changes(state)
                    if found is None:
                        changes, reset = builder.full(state), True
                    else:
                        changes = found
                conf = self._conf()
                now = (self._leader_id() or "", worker in conf.voters or worker in conf.learners)
                # A change elsewhere in the cluster costs this worker nothing.
                if reset or changes or now != said or trio.current_time() >= quiet_until:
                    for update in updates(
                        changes, index=index, leader_id=now[0], in_raft=now[1], reset=reset
                    ):
                        await stream.send(update)
                        self.counters["worker_view_updates_sent"] += 1
                    said, reset = now, False
                    # On the beat, the same for every session: a manager's keepalives to all
                    # its workers go out in one wake-up, not one each (issue #20).
                    quiet_until = timers.next_beat(KEEPALIVE_S)
                with trio.move_on_at(quiet_until):
                    await changed.wait()
        except (trio.BrokenResourceError, trio.ClosedResourceError, RemoteProtocolError):
            pass  # the worker went; it opens another session when it wants one


class WorkerSession:
    """A worker's side: hold a session with some manager, keep the view it serves, and stand in
    for the Raft driver towards what reads the state (`leader_id`, `applied`, `wait_applied`,
    `leader_changed`): `applied` is the Raft index the view reflects."""

    def __init__(
        self,
        *,
        node_id: str,
        connect: Callable[[Address, str], Awaitable[FramedStream]],
        managers: Callable[[], Sequence[tuple[str, Address]]],
        wanted: Callable[[], bool],
        on_update: Callable[[], None],
        counters: Counters,
        store: ViewStore | None = None,
        rng: random.Random | None = None,
    ) -> None:
        """`managers`: (node id, address) of the managers that may serve; `wanted`: whether this
        node should hold a session now (a worker); `on_update`: the view moved; `store`: where
        the view is kept across restarts (the last one is loaded here); `rng`: the jitter of
        retries."""
        self.node_id = node_id
        self._connect = connect
        self._managers = managers
        self._wanted = wanted
        self._on_update = on_update
        self.counters = counters
        self.view: ClusterState | None = None  # None until a whole view arrived
        self.applied = 0
        self.leader_id: str | None = None
        self.in_raft = False
        self.manager_id: str | None = None  # serving now
        self.leader_changed = trio.Event()
        self._moved = trio.Event()
        self._rng = rng or random.Random()
        self._poked = trio.Event()
        self._state_moved = trio.Event()
        self._too_old: dict[str, float] = {}  # manager id -> when it turned out to be too old
        # Whether a manager served the view in this run: a view loaded from the disk is the
        # last one this node saw, not a current one.
        self.live = False
        self._store = store
        self._unsaved = trio.Event()
        stored = store.load() if store is not None else None
        if stored is not None:
            self.view, self.applied = stored.state, stored.index
            self.leader_id, self.in_raft = stored.leader_id, stored.in_raft

    is_leader = False  # a worker never leads

    def drop_view(self) -> None:
        """Stop reading from the view (this node now replicates the state through Raft)."""
        self.view, self.applied, self.live = None, 0, False
        if self._store is not None:
            self._store.remove()

    async def wait_live(self) -> None:
        """Until a manager has served this run a whole view."""
        while not self.live:
            await self._moved.wait()

    def poke(self) -> None:
        """A member joined or came back: try the managers again now, not after the pause (a
        worker that just joined learns of its first manager this way)."""
        self._poked.set()

    def state_moved(self) -> None:
        """The state this node reads moved: whether it wants a session may have changed. Only
        a node that now wants one is woken: on a manager this is every applied batch of writes."""
        if self._wanted():
            self._state_moved.set()

    async def wait_applied(self, index: int) -> None:
        while self.applied < index:
            await self._moved.wait()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            if self._store is not None:
                nursery.start_soon(self._keep, self._store)
            if self.view is not None:
                self._on_update()  # the stored view: what follows the state looks at it
            task_status.started()
            await self._hold_sessions()

    async def _keep(self, store: ViewStore) -> None:
        """Save the view after it moved, at most once every SAVE_INTERVAL_S (off the event
        loop); a change not saved yet when the agent stops is saved then (shielded: the stop
        waits for the disk)."""
        try:
            while True:
                await self._unsaved.wait()
                await self._save(store)
                await trio.sleep(SAVE_INTERVAL_S)
        finally:
            if self._unsaved.is_set():
                with trio.CancelScope(shield=True):
                    await self._save(store)

    async def _save(self, store: ViewStore) -> None:
        self._unsaved = trio.Event()
        view = self.view
        if view is None:
            return
        try:
            await store.write(store.take(view, self.applied, self.leader_id, self.in_raft))
        except OSError as exc:  # a full or read-only disk: tried again after the interval
            self._unsaved.set()
            self.counters["worker_view_save_errors"] += 1
            log.warning("could not keep the view on disk: %s", exc)
        else:
            self.counters["worker_view_saved"] += 1
        if self.view is None:  # dropped (promoted) while it was written
            store.remove()

    async def _hold_sessions(self) -> None:
        while True:
            if not self._wanted():  # a manager: until it is demoted (`state_moved`)
                await self._state_moved.wait()
                self._state_moved = trio.Event()
                continue
            now = trio.current_time()
            for manager_id, addr in rendezvous_order(self.node_id, self._managers()):
                if manager_id == self.node_id or not self._wanted():
                    continue
                if self._too_old.get(manager_id, -OLD_MANAGER_RETRY_S) > now - OLD_MANAGER_RETRY_S:
                    continue
                try:
                    await self._session(manager_id, addr)
                except (OSError, trio.TooSlowError, trio.BrokenResourceError) as exc:
                    log.info("no session with manager %s: %s", manager_id[:12], exc)
                except RemoteProtocolError as exc:
                    self.counters["worker_session_errors"] += 1
                    log.warning("session with manager %s ended: %s", manager_id[:12], exc)
                finally:
                    self.manager_id = None
            with trio.move_on_after(RETRY_S * (0.5 + self._rng.random())):
                await self._poked.wait()
            self._poked = trio.Event()

    async def _session(self, manager_id: str, addr: Address) -> None:
        stream = await self._connect(addr, manager_id)
        async with stream.stream:
            if (stream.peer_protocol or 0) < SESSIONS_SINCE:
                # An older manager serves no sessions (its leader keeps this node a learner):
                # asked again only once in a while, as it may be upgraded meanwhile.
                self._too_old[manager_id] = trio.current_time()
                return
            await stream.send(SessionHello(VIEW_PROTOCOL))
            self.counters["worker_sessions_opened"] += 1
            staged: list[ViewUpdate] = []
            served: ClusterState | None = None  # this session's view, once a whole one came
            while self._wanted():
                with trio.fail_after(DEAD_AFTER_S):
                    update = await stream.receive(expect=(ViewUpdate,))
                if update is None:
                    return
                staged.append(update)
                if update.complete:
                    served = self._apply(staged, served)
                    staged = []
                    if served is self.view:
                        self.manager_id = manager_id

    def _apply(self, run: list[ViewUpdate], served: ClusterState | None) -> ClusterState:
        """A complete run of updates: onto the session's view `served`, or (a reset) as a new
        one, taken in as this node's view unless it is older. A session's first run must be a
        whole view: changes are relative to what that manager served. Returns the session's
        view."""
        last = run[-1]
        if run[0].reset:
            served = ClusterState()
        elif served is None:
            raise RemoteProtocolError("a session began with changes, not a whole view")
        for update in run:
            apply_update(served, update, self.node_id)
        if served is not self.view and last.index < self.applied:
            # Behind the view held (a manager restarted, not caught up yet): kept aside, and
            # followed, until it reaches the index of the one held.
            self.counters["worker_view_behind"] += 1
            return served
        # Saved, and told to what follows the view, when the view moved, not for a keepalive's
        # index alone: an idle worker writes nothing, and does not look again at its tasks,
        # routes and certificate every second (issue #20: that was most of its idle work).
        changed = served is not self.view
        changed |= any(u.cluster is not None or u.records() for u in run)
        changed |= (last.leader_id or None, last.in_raft) != (self.leader_id, self.in_raft)
        if changed:
            self._unsaved.set()
        self.view, self.applied, self.in_raft = served, last.index, last.in_raft
        self.live = True  # a session's first view taken in: `changed`
        self.counters["worker_view_updates_applied"] += len(run)
        if (last.leader_id or None) != self.leader_id:
            self.leader_id = last.leader_id or None
            self.leader_changed.set()
            self.leader_changed = trio.Event()
        self._moved.set()
        self._moved = trio.Event()
        if changed:
            self._on_update()
        return served
