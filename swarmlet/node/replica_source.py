"""Where this node's state comes from now: its Raft replica, or its worker session's view.

A manager, and a worker that an older leader keeps as a Raft learner, read the state Raft
applies; a worker served by a session reads the view (`node.worker_sessions`). What reads the
state and waits on it (status reports, secret delivery, the executor's start) asks this object,
which answers for whichever source the agent reads now, so that none of them needs to know
which (the agent's `state` property makes the same choice for the records themselves).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import trio


class AppliedSource(Protocol):
    """What the Raft driver and a worker session both offer."""

    @property
    def leader_id(self) -> str | None: ...

    @property
    def is_leader(self) -> bool: ...

    @property
    def applied(self) -> int: ...

    @property
    def leader_changed(self) -> trio.Event: ...

    async def wait_applied(self, index: int) -> None: ...


class ReplicaSource:
    # How often a wait looks whether the source changed under it (a promotion, a demotion).
    RECHECK_S = 1.0

    def __init__(
        self, raft: AppliedSource, session: AppliedSource, use_session: Callable[[], bool]
    ) -> None:
        """`use_session`: whether the session's view is what the node reads now."""
        self._raft = raft
        self._session = session
        self._use_session = use_session

    @property
    def current(self) -> AppliedSource:
        return self._session if self._use_session() else self._raft

    @property
    def leader_id(self) -> str | None:
        return self.current.leader_id

    @property
    def is_leader(self) -> bool:
        return self.current.is_leader

    @property
    def applied(self) -> int:
        return self.current.applied

    @property
    def leader_changed(self) -> trio.Event:
        return self.current.leader_changed

    async def wait_applied(self, index: int) -> None:
        while True:
            source = self.current
            if source.applied >= index:
                return
            with trio.move_on_after(self.RECHECK_S):
                await source.wait_applied(index)
