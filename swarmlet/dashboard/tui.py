"""`swarmlet dashboard`: the Textual app around the pure screens, with trio as its guest.

Why Textual: it is the interactive application layer built on rich (which the screens already
render to): it owns the terminal (raw keys, mouse, resize, the alternate screen, restoring the
tty on every way out) and runs headless under its pilot for tests. The screen stays one pure
function, `screens.render_screen(view, ui, logs, width, height)`, drawn by one widget; keys go
through the pure `keys.handle_key`. This module only wires them.

Concurrency: Textual runs on asyncio; the control client and the feeds are trio. trio runs as a
guest of Textual's asyncio loop (`trio.lowlevel.start_guest_run`), in the same thread, so trio's
tasks set the app's state directly, and the app hands work to trio with the trio token
(`run_sync_soon`, thread-safe) into a memory channel. The guest run is cancelled and awaited
when the app unmounts.

Redraws: what the cluster does (polls, events, log lines) only marks the screen dirty; a timer
redraws a dirty screen at most `REDRAWS_PER_S` times a second, however busy the cluster. A key
redraws at once (the user is waiting for it). The mouse, where the terminal has one: a click
selects a row (and focuses its pane), a click on the selected row opens it, the wheel moves the
selection.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import outcome
import trio
from rich.console import RenderableType
from textual import events
from textual.app import App, ComposeResult
from textual.widget import Widget

from swarmlet.api.control_socket import ControlClient
from swarmlet.dashboard import actions
from swarmlet.dashboard.feeds import (
    DEFAULT_INTERVAL_S,
    EventFeed,
    LogFeed,
    Poller,
    follow_events,
    follow_logs,
)
from swarmlet.dashboard.keys import (
    Effect,
    FollowLogs,
    Perform,
    Quit,
    StopLogs,
    UiState,
    action_done,
    click,
    handle_key,
)
from swarmlet.dashboard.screens import hit_at, render_screen
from swarmlet.dashboard.view import View, build_view, with_events
from swarmlet.errors import SwarmletError

REDRAWS_PER_S = 4


def key_name(event: events.Key) -> str:
    """The name `keys.handle_key` knows: the character of a printable key, else Textual's."""
    if event.character is not None and len(event.character) == 1 and event.character.isprintable():
        return event.character
    return event.key


def _utc_offset_s(now: float) -> int:
    return time.localtime(now).tm_gmtoff


class ScreenWidget(Widget):
    """The whole screen, drawn by `render_screen` at the widget's size."""

    def render(self) -> RenderableType:
        app = self.app
        assert isinstance(app, DashboardApp)
        width, height = self.size
        return render_screen(app.view, app.ui, tuple(app.logs.lines), width, height)

    def on_click(self, event: events.Click) -> None:
        app = self.app
        assert isinstance(app, DashboardApp)
        width, height = self.size
        hit = hit_at(app.view, app.ui, tuple(app.logs.lines), width, height, event.y)
        app.ui, _ = click(app.ui, hit, app.view, tuple(app.logs.lines))
        self.refresh()

    def on_mouse_scroll_down(self, event: events.MouseScrollDown) -> None:
        app = self.app
        assert isinstance(app, DashboardApp)
        app.press("down")

    def on_mouse_scroll_up(self, event: events.MouseScrollUp) -> None:
        app = self.app
        assert isinstance(app, DashboardApp)
        app.press("up")


class DashboardApp(App[None]):
    CSS = "Screen { overflow: hidden; } ScreenWidget { width: 1fr; height: 1fr; }"
    ENABLE_COMMAND_PALETTE = False

    def __init__(
        self,
        client: ControlClient,
        *,
        interval_s: float = DEFAULT_INTERVAL_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__()
        self.client = client
        self.interval_s = interval_s
        self.clock = clock
        now = clock()
        self.view: View = build_view(None, None, None, None, [], None, now, error="connecting")
        self.ui = UiState()
        self.logs = LogFeed()
        self.feed = EventFeed()
        self.polls = 0  # rounds done: tests wait on it
        self.redraws = 0  # screens drawn because the cluster changed
        self._dirty = False
        self._token: trio.lowlevel.TrioToken | None = None
        self._send: trio.MemorySendChannel[Effect] | None = None
        self._trio_done = asyncio.Event()
        self._trio_failure: BaseException | None = None
        self._cancel_trio: Callable[[], None] | None = None
        self._quitting = False  # set on unmount: a trio side not started yet ends at once
        self._poll_now = trio.Event()

    # ------------------------------------------------------------------------ Textual side

    def compose(self) -> ComposeResult:
        yield ScreenWidget()

    def on_mount(self) -> None:
        loop = asyncio.get_running_loop()
        trio.lowlevel.start_guest_run(
            self._trio_main,
            run_sync_soon_threadsafe=loop.call_soon_threadsafe,
            run_sync_soon_not_threadsafe=loop.call_soon,
            done_callback=self._on_trio_done,
            host_uses_signal_set_wakeup_fd=True,
        )
        self.set_interval(1 / REDRAWS_PER_S, self._redraw_if_dirty)

    async def on_unmount(self) -> None:
        # One thread: either `_trio_main` has begun (the token and the cancel are set, with no
        # checkpoint between them) or it will see `_quitting` when it does.
        self._quitting = True
        if self._token is not None and self._cancel_trio is not None:
            self._token.run_sync_soon(self._cancel_trio)
        await self._trio_done.wait()

    def _on_trio_done(self, result: outcome.Outcome[None]) -> None:
        if isinstance(result, outcome.Error):
            self._trio_failure = result.error
            self.exit()
        self._trio_done.set()

    def _redraw_if_dirty(self) -> None:
        if self._dirty:
            self._dirty = False
            self.redraws += 1
            self._redraw()

    def _redraw(self) -> None:
        self.query_one(ScreenWidget).refresh()

    def mark_dirty(self) -> None:
        self._dirty = True

    def on_key(self, event: events.Key) -> None:
        event.stop()
        event.prevent_default()
        self.press(key_name(event))

    def press(self, key: str) -> None:
        """One key through the pure state machine; its effect handed to trio."""
        self.ui, effect = handle_key(self.ui, key, self.view, tuple(self.logs.lines))
        self._redraw()
        if isinstance(effect, Quit):
            self.exit()
        elif effect is not None and self._token is not None and self._send is not None:
            self._token.run_sync_soon(self._send.send_nowait, effect)

    def on_resize(self, event: events.Resize) -> None:
        self._redraw()

    # ------------------------------------------------------------------------ trio side

    async def _trio_main(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        send, receive = trio.open_memory_channel[Effect](64)
        self._send = send
        async with trio.open_nursery() as nursery:
            self._cancel_trio = nursery.cancel_scope.cancel
            if self._quitting:
                nursery.cancel_scope.cancel()
            nursery.start_soon(follow_events, self.client, self.feed, self._on_event, self.clock)
            nursery.start_soon(self._poll_loop)
            logs_scope: trio.CancelScope | None = None
            async for effect in receive:
                if isinstance(effect, Perform):
                    nursery.start_soon(self._perform, effect)
                elif isinstance(effect, FollowLogs):
                    if logs_scope is not None:
                        logs_scope.cancel()
                    logs_scope = trio.CancelScope()
                    self.logs.clear()
                    nursery.start_soon(self._follow_logs, effect, logs_scope)
                elif isinstance(effect, StopLogs) and logs_scope is not None:
                    logs_scope.cancel()
                    logs_scope = None

    def _on_event(self) -> None:
        self.view = with_events(self.view, self.feed.items)
        self.mark_dirty()

    async def _poll_loop(self) -> None:
        poller = Poller(self.client)
        try:
            while True:
                result = await poller.poll()
                now = self.clock()
                self.view = build_view(
                    result.status,
                    result.nodes,
                    result.services,
                    result.tasks,
                    self.feed.items,
                    self.view if self.polls else None,
                    now,
                    error=result.error,
                    utc_offset_s=_utc_offset_s(now),
                )
                self.polls += 1
                self.mark_dirty()
                with trio.move_on_after(self.interval_s):
                    await self._poll_now.wait()
                self._poll_now = trio.Event()
        finally:
            with trio.CancelScope(shield=True):
                await poller.aclose()

    async def _perform(self, effect: Perform) -> None:
        error = answer = ""
        try:
            answer = await actions.perform(self.client, effect.action)
        except (SwarmletError, OSError, ValueError, KeyError, TypeError) as exc:
            error = str(exc) or type(exc).__name__
        self.ui = action_done(self.ui, effect.action, error, answer)
        self._poll_now.set()  # show the action's first effects without waiting a round
        self.mark_dirty()

    async def _follow_logs(self, effect: FollowLogs, scope: trio.CancelScope) -> None:
        with scope:
            await follow_logs(self.client, effect.service, effect.task, self.logs, self.mark_dirty)

    def failure(self) -> BaseException | None:
        """What ended the trio side, if it was not the app quitting."""
        return self._trio_failure


def run(socket_path: Path, *, interval_s: float = DEFAULT_INTERVAL_S, **kwargs: Any) -> None:
    """The blocking entry point of `swarmlet dashboard`; Textual restores the terminal on exit."""
    app = DashboardApp(ControlClient(socket_path), interval_s=interval_s, **kwargs)
    app.run()
    failure = app.failure()
    if failure is not None:
        raise failure
