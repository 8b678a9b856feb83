"""The dashboard's I/O with the agent, in trio: polls, the events feed, the logs feed.

`swarmlet.dashboard.tui` runs these in trio's guest mode inside the Textual app's loop; what they
learn goes through the pure `build_view` (and `screens.render_screen`); this module only does I/O.

- Polls: `status`, `node.ls`, `service.ls` and `service.ps` concurrently, every `interval_s`,
  under one `POLL_TIMEOUT_S` deadline. Reads wait up to 2 s for a leader (ReadIndex), so the
  deadline is longer than that: a stale answer is an answer, a hung agent is not. Each call
  keeps its connection from one poll to the next (`Poller`).
- Events: a background `events` stream into a bounded deque, re-opened after a failure (the
  agent restarting) from the last event's time; duplicates of the reopen are skipped by
  (time, seq). A new event updates the view at once, with the last poll's data.
- The agent unreachable or leaderless: keep running and show it (the view model says how).
- Logs: `service.logs` (follow, the last `LOGS_TAIL` lines of each task first), the one call the
  CLI's `service logs` makes, merged across nodes by the agent; a task's logs are its lines of
  the service's stream. The stream ending or failing is said in the feed, not retried: the user
  opens it again with `l`.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import trio

from swarmlet.api.control_socket import ControlClient, ControlConnection
from swarmlet.dashboard.lists import LogLine
from swarmlet.errors import AgentUnavailableError, SwarmletError

DEFAULT_INTERVAL_S = 0.5
POLL_TIMEOUT_S = 5.0  # > the agents' 2 s read barrier
EVENTS_BACKLOG = 500  # events kept in memory; the view shows what fits
EVENTS_HISTORY_S = 3600.0  # on start, show events of the last hour the agent still has
EVENTS_RETRY_S = 1.0
LOGS_TAIL = 200  # lines of each task's past shown when its logs open
LOGS_KEPT = 5000  # lines kept in memory while following

_FAILURES = (SwarmletError, OSError, trio.BrokenResourceError, trio.ClosedResourceError)


@dataclass(frozen=True, slots=True)
class PollResult:
    status: Mapping[str, Any] | None
    nodes: Mapping[str, Any] | None
    services: Mapping[str, Any] | None
    tasks: Mapping[str, Any] | None
    error: str  # the first failure, "" if every call answered


class Poller:
    """The four calls of a poll, each over a connection kept from one poll to the next: a
    connection per call cost the agent an accept, a task and a close each time (eight a second
    at the default interval). A call that fails, or that the deadline cuts, drops its
    connection; one found closed (the agent restarted, or closed it idle) is made again at once
    on a new connection. Close it with `aclose`."""

    CALLS: Mapping[str, tuple[str, Mapping[str, Any]]] = {
        "status": ("status", {}),
        "nodes": ("node.ls", {}),
        "services": ("service.ls", {}),
        "tasks": ("service.ps", {}),
    }

    def __init__(self, client: ControlClient) -> None:
        self.client = client
        self._connections: dict[str, ControlConnection] = {}

    async def poll(self, timeout_s: float = POLL_TIMEOUT_S) -> PollResult:
        """One round of the four calls; a call that fails or times out gives None and a reason."""
        results: dict[str, Mapping[str, Any]] = {}
        errors: list[str] = []

        async def one(key: str, op: str, args: Mapping[str, Any]) -> None:
            try:
                result = await self._call(key, op, args)
            except _FAILURES as exc:
                errors.append(str(exc) or type(exc).__name__)
                return
            if isinstance(result, Mapping):
                results[key] = result
            else:
                errors.append(f"{op}: unexpected answer {type(result).__name__}")

        with trio.move_on_after(timeout_s):
            async with trio.open_nursery() as nursery:
                for key, (op, args) in self.CALLS.items():
                    nursery.start_soon(one, key, op, args)
        if len(results) < len(self.CALLS) and not errors:
            errors.append(f"the agent did not answer within {timeout_s:g} s")
        return PollResult(
            results.get("status"),
            results.get("nodes"),
            results.get("services"),
            results.get("tasks"),
            errors[0] if errors else "",
        )

    async def _call(self, key: str, op: str, args: Mapping[str, Any]) -> Any:
        kept = self._connections.pop(key, None)
        if kept is not None:
            try:
                result = await self._over(kept, op, args)
            except AgentUnavailableError:
                pass  # closed meanwhile: once more, on a new connection
            else:
                self._connections[key] = kept
                return result
        connection = await self.client.open_connection()
        result = await self._over(connection, op, args)
        self._connections[key] = connection
        return result

    @staticmethod
    async def _over(connection: ControlConnection, op: str, args: Mapping[str, Any]) -> Any:
        """`op` over `connection`, which is closed if the call does not answer (an error, or a
        cancellation: an answer may still be on its way, and would be taken for the next's)."""
        try:
            return await connection.call(op, **args)
        except BaseException:
            with trio.CancelScope(shield=True):
                await connection.aclose()
            raise

    async def aclose(self) -> None:
        connections, self._connections = self._connections, {}
        for connection in connections.values():
            await connection.aclose()


class EventFeed:
    """The events received so far, oldest first, without the duplicates of a reconnection."""

    def __init__(self, maxlen: int = EVENTS_BACKLOG) -> None:
        self.items: collections.deque[Mapping[str, Any]] = collections.deque(maxlen=maxlen)
        self.last: tuple[float, int] = (-math.inf, -1)

    def add(self, item: Any) -> bool:
        if not isinstance(item, Mapping):
            return False
        t, seq = item.get("time"), item.get("seq")
        if not isinstance(t, int | float) or not isinstance(seq, int):
            return False
        key = (float(t), seq)
        if key <= self.last:
            return False
        self.last = key
        self.items.append(item)
        return True

    def since(self, now: float) -> float:
        return self.last[0] if self.items else now - EVENTS_HISTORY_S


async def follow_events(
    client: ControlClient, feed: EventFeed, changed: Callable[[], None], clock: Callable[[], float]
) -> None:
    while True:
        try:
            async with client.stream("events", since=feed.since(clock())) as items:
                async for item in items:
                    if feed.add(item):
                        changed()
        except _FAILURES:
            pass  # the agent is gone or restarting; the poll loop shows it
        await trio.sleep(EVENTS_RETRY_S)


class LogFeed:
    """The lines of the logs being followed, numbered, the oldest dropped past `maxlen`."""

    def __init__(self, maxlen: int = LOGS_KEPT) -> None:
        self.lines: collections.deque[LogLine] = collections.deque(maxlen=maxlen)
        self.count = 0

    def clear(self) -> None:
        self.lines.clear()

    def add(self, task: str, node: str, line: str) -> None:
        self.count += 1
        self.lines.append(LogLine(self.count, task, node, line))


def is_task_line(task_name: str, task_id: str) -> bool:
    """Whether a `service.logs` line named `SERVICE.SLOT.TASKID10` is `task_id`'s."""
    return bool(task_id) and task_name.rsplit(".", 1)[-1] == task_id[:10]


async def follow_logs(
    client: ControlClient,
    service: str,
    task_id: str,
    feed: LogFeed,
    changed: Callable[[], None],
    tail: int = LOGS_TAIL,
) -> None:
    """Follow `service`'s logs (only `task_id`'s lines, if given) into `feed` until cancelled."""
    try:
        async with client.stream("service.logs", service=service, follow=True, tail=tail) as items:
            async for item in items:
                if not isinstance(item, Mapping):
                    continue
                task = str(item.get("task", ""))
                if task_id and not is_task_line(task, task_id):
                    continue
                feed.add(task, str(item.get("node", "")), str(item.get("line", "")))
                changed()
        feed.add("-", "-", "(the logs stream ended)")
    except _FAILURES as exc:
        feed.add("-", "-", f"(logs unavailable: {exc or type(exc).__name__})")
    changed()
