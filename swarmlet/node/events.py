"""The cluster's event feed: what happened and what the orchestrator did about it.

Each agent records the events it sees (membership changes from gossip, elections from Raft,
commands it applies, task failures it reports) in a bounded ring, and streams them to subscribers
(`swarmlet events`, the dashboard). Events are for people: they are not replicated and may differ
slightly between agents.
"""

from __future__ import annotations

import collections
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from typing import Any

import trio

RING_SIZE = 2000


@dataclass(frozen=True, slots=True)
class Event:
    seq: int  # increases by one per event on this agent
    time: float  # wall clock, seconds since the epoch
    type: str  # node | service | task | raft | autoscale
    action: str  # e.g. "down", "elected", "failed", "scaled"
    subject: str  # a node, service or task name
    message: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class EventLog:
    def __init__(self, size: int = RING_SIZE) -> None:
        self._ring: collections.deque[Event] = collections.deque(maxlen=size)
        self._changed = trio.Event()
        self._seq = 0

    def record(self, type_: str, action: str, subject: str, message: str) -> Event:
        self._seq += 1
        event = Event(self._seq, time.time(), type_, action, subject, message)
        self._ring.append(event)
        self._changed.set()
        self._changed = trio.Event()
        return event

    def since(self, t: float) -> list[Event]:
        return [e for e in self._ring if e.time >= t]

    async def follow(self, since: float) -> AsyncIterator[Event]:
        """Events at or after `since` (wall clock), then every new one as it happens."""
        next_seq = next((e.seq for e in self._ring if e.time >= since), self._seq + 1)
        while True:
            changed = self._changed
            fresh = [e for e in self._ring if e.seq >= next_seq]
            for event in fresh:
                yield event
            if fresh:
                next_seq = fresh[-1].seq + 1
            await changed.wait()
