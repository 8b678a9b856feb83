"""The piggyback queue: membership updates waiting to ride on outgoing datagrams.

memberlist queue.go `TransmitLimitedQueue`, simplified:
  - at most one queued update per member: a new update about a member supersedes the queued one
    (memberlist's named-broadcast invalidation), so the queue never holds more than n items;
  - `take` hands out the least-transmitted updates first and, among equals, the newest first
    (memberlist also prefers larger messages among equals; we do not, so fresh news wins);
  - an update that does not fit the remaining budget is skipped, not truncated, and stays queued;
  - an update is dropped once it has been sent `limit` times (SWIM §4.1: O(log n) retransmissions).

It knows message sizes only through `messages.estimate_size`; it has no clock and no randomness.
"""

from __future__ import annotations

from dataclasses import dataclass

from .messages import BroadcastMessage, estimate_size


@dataclass(slots=True)
class _Item:
    msg: BroadcastMessage
    size_bytes: int
    item_id: int
    transmits: int = 0


class BroadcastQueue:
    def __init__(self) -> None:
        self._items: dict[str, _Item] = {}
        self._next_id = 0

    def __len__(self) -> int:
        return len(self._items)

    def queue(self, msg: BroadcastMessage) -> int:
        """Queue `msg`, superseding any queued update about the same member; return its id."""
        self._next_id += 1
        self._items[msg.node] = _Item(msg, estimate_size(msg), self._next_id)
        return self._next_id

    def is_queued(self, item_id: int) -> bool:
        return any(item.item_id == item_id for item in self._items.values())

    def queued_about(self, node: str) -> BroadcastMessage | None:
        item = self._items.get(node)
        return item.msg if item is not None else None

    def take(self, budget_bytes: int, limit: int) -> list[BroadcastMessage]:
        """Updates whose estimated sizes sum to at most `budget_bytes`, least-sent and newest
        first; each counts as one transmission and is dropped after `limit` of them."""
        if budget_bytes <= 0 or not self._items:
            return []
        ordered = sorted(self._items.values(), key=lambda it: (it.transmits, -it.item_id))
        taken: list[BroadcastMessage] = []
        for item in ordered:
            if item.size_bytes > budget_bytes:
                continue
            budget_bytes -= item.size_bytes
            taken.append(item.msg)
            item.transmits += 1
            if item.transmits >= limit:
                del self._items[item.msg.node]
        return taken
