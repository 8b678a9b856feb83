"""The dashboard's driver: poll the agent, follow its events, redraw, quit on `q` or Ctrl-C.

One trio nursery runs four tasks: the poll-and-draw loop, the events follower, the key reader and
a signal watcher. Everything they learn goes through the pure `build_view` and `render`; this
module only does I/O and timing.

- Polls: `status`, `node.ls`, `service.ls` and `service.ps` concurrently, every `interval_s`,
  under one `POLL_TIMEOUT_S` deadline. Reads wait up to 2 s for a leader (ReadIndex), so the
  deadline is longer than that: a stale answer is an answer, a hung agent is not.
- Events: a background `events` stream into a bounded deque, re-opened after a failure (the
  agent restarting) from the last event's time; duplicates of the reopen are skipped by
  (time, seq). A new event redraws at once, with the last poll's data.
- The agent unreachable or leaderless: keep running and show it (the view model says how).
- The terminal: stdin in cbreak mode (no echo, keys one at a time, but output processing and
  Ctrl-C's signal kept, unlike raw mode, so rich's newlines still return the carriage), restored
  in a `finally` around the whole trio run; the alternate screen is left by `Live`'s own exit,
  which runs on every way out. SIGINT/SIGTERM are received as signals (not as
  KeyboardInterrupt) so quitting always unwinds in order; SIGWINCH redraws at the new size.
"""

from __future__ import annotations

import collections
import contextlib
import math
import os
import signal
import sys
import termios
import time
import tty
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import trio
from rich.console import Console
from rich.live import Live

from swarmlet.api.control_socket import ControlClient
from swarmlet.dashboard.render import render
from swarmlet.dashboard.view import View, build_view, with_events
from swarmlet.errors import SwarmletError

DEFAULT_INTERVAL_S = 0.5
POLL_TIMEOUT_S = 5.0  # > the agents' 2 s read barrier
EVENTS_BACKLOG = 500  # events kept in memory; the view shows what fits
EVENTS_HISTORY_S = 3600.0  # on start, show events of the last hour the agent still has
EVENTS_RETRY_S = 1.0
QUIT_KEYS = frozenset(b"qQ\x03\x04")  # q, Q, and Ctrl-C/Ctrl-D should the tty pass them through

_FAILURES = (SwarmletError, OSError, trio.BrokenResourceError, trio.ClosedResourceError)


@dataclass(frozen=True, slots=True)
class PollResult:
    status: Mapping[str, Any] | None
    nodes: Mapping[str, Any] | None
    services: Mapping[str, Any] | None
    tasks: Mapping[str, Any] | None
    error: str  # the first failure, "" if every call answered


async def poll(client: ControlClient, timeout_s: float = POLL_TIMEOUT_S) -> PollResult:
    """One round of the four calls; a call that fails or times out gives None and a reason."""
    calls: dict[str, tuple[str, dict[str, Any]]] = {
        "status": ("status", {}),
        "nodes": ("node.ls", {}),
        "services": ("service.ls", {}),
        "tasks": ("service.ps", {}),
    }
    results: dict[str, Mapping[str, Any]] = {}
    errors: list[str] = []

    async def one(key: str, op: str, args: dict[str, Any]) -> None:
        try:
            result = await client.call(op, **args)
        except _FAILURES as exc:
            errors.append(str(exc) or type(exc).__name__)
            return
        if isinstance(result, Mapping):
            results[key] = result
        else:
            errors.append(f"{op}: unexpected answer {type(result).__name__}")

    with trio.move_on_after(timeout_s):
        async with trio.open_nursery() as nursery:
            for key, (op, args) in calls.items():
                nursery.start_soon(one, key, op, args)
    if len(results) < len(calls) and not errors:
        errors.append(f"the agent did not answer within {timeout_s:g} s")
    return PollResult(
        results.get("status"),
        results.get("nodes"),
        results.get("services"),
        results.get("tasks"),
        errors[0] if errors else "",
    )


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


async def read_keys(fd: int, quit_scope: trio.CancelScope) -> None:
    """Quit on q. End of input only stops reading keys (Ctrl-C still quits)."""
    while True:
        await trio.lowlevel.wait_readable(fd)
        try:
            data = os.read(fd, 64)
        except BlockingIOError:
            continue
        if not data:
            return
        if any(byte in QUIT_KEYS for byte in data):
            quit_scope.cancel()
            return


async def watch_signals(quit_scope: trio.CancelScope, redraw: Callable[[], None]) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGWINCH) as signals:
        async for signum in signals:
            if signum == signal.SIGWINCH:
                redraw()
            else:
                quit_scope.cancel()
                return


def _utc_offset_s(now: float) -> int:
    return time.localtime(now).tm_gmtoff


async def run_dashboard(
    client: ControlClient,
    console: Console,
    *,
    interval_s: float = DEFAULT_INTERVAL_S,
    keys_fd: int | None = None,
    signals: bool = True,
    max_polls: int | None = None,
    clock: Callable[[], float] = time.time,
) -> View | None:
    """Poll and draw until `q`, a signal, or `max_polls` rounds (tests); return the last view."""
    feed = EventFeed()
    view: View | None = None
    wake = trio.Event()

    def poke() -> None:
        wake.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(follow_events, client, feed, poke, clock)
        if keys_fd is not None:
            nursery.start_soon(read_keys, keys_fd, nursery.cancel_scope)
        if signals:
            nursery.start_soon(watch_signals, nursery.cancel_scope, poke)
        with Live(
            console=console,
            auto_refresh=False,
            screen=True,
            redirect_stdout=False,
            redirect_stderr=False,
        ) as live:
            polls = 0
            next_poll = trio.current_time()
            while True:
                if trio.current_time() >= next_poll:
                    result = await poll(client)
                    now = clock()
                    view = build_view(
                        result.status,
                        result.nodes,
                        result.services,
                        result.tasks,
                        feed.items,
                        view,
                        now,
                        error=result.error,
                        utc_offset_s=_utc_offset_s(now),
                    )
                    polls += 1
                    next_poll = trio.current_time() + interval_s
                else:
                    assert view is not None
                    view = with_events(view, feed.items)
                width, height = console.size
                live.update(render(view, width, height), refresh=True)
                if max_polls is not None and polls >= max_polls:
                    nursery.cancel_scope.cancel()
                    break
                with trio.move_on_at(next_poll):
                    await wake.wait()
                wake = trio.Event()
    return view


def run(
    socket_path: Path,
    console: Console,
    *,
    interval_s: float = DEFAULT_INTERVAL_S,
    stdin: TextIO | None = None,
) -> None:
    """The blocking entry point of `swarmlet dashboard`: the terminal is restored on any exit."""
    stdin = stdin if stdin is not None else sys.stdin
    fd: int | None = None
    saved: list[Any] | None = None
    with contextlib.suppress(AttributeError, ValueError, OSError):
        if stdin.isatty():
            fd = stdin.fileno()
            saved = termios.tcgetattr(fd)
    try:
        if fd is not None:
            tty.setcbreak(fd)
        trio.run(
            lambda: run_dashboard(
                ControlClient(socket_path), console, interval_s=interval_s, keys_fd=fd
            )
        )
    finally:
        if fd is not None and saved is not None:
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)
