"""A worker's last view on its own disk, so that a restart while no manager answers is not blind.

Without it, a worker restarted while the managers are down or cut off starts with no state: its
mesh routes nothing (published ports refuse on that host) and its executor does nothing until a
manager serves a session. Swarm's agent keeps its assignments in a local store for the same
reason. Here the worker keeps its last whole view (`state.worker_view`: its own tasks and what
its mesh routes), sealed under its data key (`security.at_rest`: like the Raft log, it holds its
services' environment) and bound to the node (the node id is in the seal's associated data).

Written by `WorkerSession` after its view moved, at most once every `SAVE_INTERVAL_S` (a view
may be megabytes): a crash loses the last seconds of changes, which the next session brings.
Read once, at start. Removed when the node stops reading views (a promotion).

A stored view is never taken for a current one (`WorkerSession.live`): until a manager has
served a whole view, the executor removes no container it cannot place (it may belong to a
task assigned after the save) and the proxy routes what the view routes. A view that cannot be
opened or decoded (another key, a torn or altered file) is set aside, logged and counted: the
next session brings a whole one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import msgpack

from swarmlet.crypto import Sealer
from swarmlet.errors import RemoteProtocolError
from swarmlet.security.datadir import write_atomic
from swarmlet.state.machine import ClusterState
from swarmlet.wire.transport import Counters

log = logging.getLogger(__name__)

FILE_NAME = "worker-view.sealed"
SAVE_INTERVAL_S = 2.0  # at most one save per interval, however often the view moves
_AAD = b"swarmlet worker view "
_FORMAT = 1


@dataclass(frozen=True, slots=True)
class StoredView:
    state: ClusterState
    index: int  # the Raft index the view reflected when it was saved
    leader_id: str | None
    in_raft: bool  # whether the node was still in the managers' Raft configuration (a learner)


class ViewStore:
    def __init__(self, data_dir: Path, cipher: Sealer, node_id: str, counters: Counters) -> None:
        self.path = data_dir / FILE_NAME
        self._cipher = cipher
        self._aad = _AAD + node_id.encode()
        self._counters = counters

    def encode(
        self, view: ClusterState, index: int, leader_id: str | None, *, in_raft: bool
    ) -> bytes:
        """What `save` writes: taken on the event loop, where the view is never half-applied."""
        blob = msgpack.packb(
            {
                "format": _FORMAT,
                "index": index,
                "leader": leader_id or "",
                "in_raft": in_raft,
                "state": view.snapshot(),
            }
        )
        return self._cipher.seal(blob, self._aad)

    def save(self, sealed: bytes) -> None:
        """Replace the stored view with `sealed` (from `encode`); blocking: run it in a thread."""
        write_atomic(self.path, sealed)

    def load(self) -> StoredView | None:
        try:
            sealed = self.path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            fields = msgpack.unpackb(self._cipher.open(sealed, self._aad))
            if not isinstance(fields, dict) or fields.get("format") != _FORMAT:
                raise ValueError(f"not a stored view of format {_FORMAT}")
            index, leader, in_raft = fields["index"], fields["leader"], fields["in_raft"]
            if not (
                isinstance(index, int) and isinstance(leader, str) and isinstance(in_raft, bool)
            ):
                raise ValueError("malformed index, leader or Raft membership")
            state = ClusterState.restore(fields["state"])
            stored = StoredView(state, index, leader or None, bool(in_raft))
        except (RemoteProtocolError, ValueError, KeyError, TypeError) as exc:
            self._counters["worker_view_unreadable"] += 1
            aside = self.path.with_name(self.path.name + ".unreadable")
            self.path.replace(aside)
            log.warning("set aside the stored view %s, which cannot be read (%s)", aside, exc)
            return None
        log.info("loaded the view stored at index %d (until a manager serves one)", stored.index)
        return stored

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
