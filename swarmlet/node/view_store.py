"""A worker's last view on its own disk, so that a restart while no manager answers is not blind.

Without it, a worker restarted while the managers are down or cut off starts with no state: its
mesh routes nothing (published ports refuse on that host) and its executor does nothing until a
manager serves a session. Swarm's agent keeps its assignments in a local store for the same
reason. Here the worker keeps its last whole view (`state.worker_view`: its own tasks and what
its mesh routes), sealed under its data key (`security.at_rest`: like the Raft log, it holds its
services' environment) and bound to the node (`crypto.AAD_WORKER_VIEW` + its id).

Written by `WorkerSession` after its view moved, at most once every `SAVE_INTERVAL_S` (a view
may be megabytes), and once more when the agent stops: a crash loses the last seconds of
changes, which the next session brings. Read once, at start. Removed when the node stops
reading views (a promotion), and at the start of a node that holds the managers' key: a
manager reads its Raft replica, never a view left from its worker days.

A stored view is never taken for a current one (`WorkerSession.live`): until a manager has
served a whole view, the executor removes no container it cannot place (it may belong to a
task assigned after the save), and replaces no task (the leader does); it does start a task
the view assigns to this node that has no container yet, as Swarm's agent does from its store.
A view that cannot be read (another node's or another key's, torn, altered, too large, an I/O
error) is set aside, logged and counted, never loaded: the next session brings a whole one.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path

import msgpack
import trio

from swarmlet.crypto import AAD_WORKER_VIEW, Sealer
from swarmlet.errors import RemoteProtocolError
from swarmlet.security.datadir import remove_durably, write_atomic
from swarmlet.state.machine import ClusterState, StateSnapshot
from swarmlet.wire import bounds
from swarmlet.wire import codec as wire
from swarmlet.wire.transport import Counters

log = logging.getLogger(__name__)

SAVE_INTERVAL_S = 2.0  # at most one save per interval, however often the view moves
# What a view may weigh on disk: a part of the state, so no more than a Raft snapshot of all of it
# (a bigger file is not ours). It was the 64 MiB of one message, and a worker running a few
# services with large specs never saved its view (review).
MAX_BYTES = wire.MAX_SNAPSHOT_BYTES + 4096
_FORMAT = 1


@dataclass(frozen=True, slots=True)
class StoredView:
    state: ClusterState
    index: int  # the Raft index the view reflected when it was saved
    leader_id: str | None
    in_raft: bool  # whether the node was still in the managers' Raft configuration (a learner)


@dataclass(frozen=True, slots=True)
class ViewToSave:
    """A view's records as they were at one moment on the event loop (immutable records, so
    the thread that encodes them sees that moment, whatever the loop applies meanwhile)."""

    snapshot: StateSnapshot
    index: int
    leader_id: str | None
    in_raft: bool


class UnreadableView(Exception):
    pass


class ViewStore:
    def __init__(self, path: Path, cipher: Sealer, node_id: str, counters: Counters) -> None:
        self.path = path
        self._cipher = cipher  # this store's own: its nonces are a counter
        self._aad = AAD_WORKER_VIEW + node_id.encode()
        self._counters = counters

    @staticmethod
    def take(view: ClusterState, index: int, leader_id: str | None, in_raft: bool) -> ViewToSave:
        """On the event loop, where the view is never half-applied: cheap (tuples of records)."""
        return ViewToSave(view.snapshot_record(), index, leader_id, in_raft)

    def save(self, taken: ViewToSave) -> bool:
        """Replace the stored view (blocking, and CPU for a large view: run it in a thread);
        False if the view is too large to be loaded back, and then it is not written. Raises
        OSError if the disk refuses. Touches no counter: the agent's are the event loop's."""
        body = [_FORMAT, taken.index, taken.leader_id or "", taken.in_raft]
        body.append(wire.encode(taken.snapshot))
        sealed = self._cipher.seal(msgpack.packb(body, use_bin_type=True), self._aad)
        if len(sealed) > MAX_BYTES:
            log.warning("the view (%d bytes) is too large to be kept on disk", len(sealed))
            return False
        write_atomic(self.path, sealed)
        return True

    async def write(self, taken: ViewToSave) -> None:
        """`save` in a thread: the disk, and the encoding of a large view, off the event loop."""
        if not await trio.to_thread.run_sync(self.save, taken):
            self._counters["worker_view_too_large"] += 1

    def read(self) -> StoredView | None:
        """The stored view, None if there is none; UnreadableView (with why) if there is one
        that cannot be read. Touches nothing."""
        try:
            size = self.path.stat().st_size
            if size > MAX_BYTES:
                raise UnreadableView(f"{size} bytes, more than a view may weigh ({MAX_BYTES})")
            sealed = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise UnreadableView(str(exc)) from None
        try:
            fields = bounds.unpack(self._cipher.open(sealed, self._aad), MAX_BYTES)
            if not isinstance(fields, list) or len(fields) != 5 or fields[0] != _FORMAT:
                raise UnreadableView(f"not a view of format {_FORMAT}")
            _, index, leader, in_raft, state = fields
            if not (
                isinstance(index, int)
                and isinstance(leader, str)
                and isinstance(in_raft, bool)
                and isinstance(state, bytes)
            ):
                raise UnreadableView("a malformed index, leader, Raft membership or state")
            return StoredView(ClusterState.restore(state), index, leader or None, in_raft)
        except RemoteProtocolError as exc:  # the seal, the msgpack bounds, the snapshot
            raise UnreadableView(str(exc)) from None

    def load(self) -> StoredView | None:
        """`read`, with a view that cannot be read set aside (renamed `.unreadable`, for a
        person to look at), logged and counted."""
        try:
            stored = self.read()
        except UnreadableView as exc:
            self._counters["worker_view_unreadable"] += 1
            aside = self.path.with_name(self.path.name + ".unreadable")
            with contextlib.suppress(OSError):
                self.path.replace(aside)
            log.warning("set aside the stored view %s, which cannot be read: %s", aside, exc)
            return None
        if stored is not None:
            log.info(
                "loaded the view stored at index %d (until a manager serves one)", stored.index
            )
        return stored

    def remove(self) -> None:
        try:
            remove_durably(self.path)
        except OSError as exc:  # it is then set aside at the next start, or overwritten
            self._counters["worker_view_remove_errors"] += 1
            log.warning("could not remove the stored view %s: %s", self.path, exc)
