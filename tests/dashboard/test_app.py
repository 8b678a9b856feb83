"""The dashboard's driver against a fake agent on a real control socket (no Docker, no sleeps)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
import trio
from rich.console import Console

from swarmlet.api.control_socket import ControlClient, Emit, serve_control
from swarmlet.dashboard import app
from swarmlet.dashboard.view import Connection

from .fixtures import EVENTS, NODES, SERVICES, STATUS, TASKS


class FakeAgent:
    """Answers the dashboard's calls with the fixture cluster; streams `EVENTS` in batches."""

    def __init__(self, batches: list[list[dict[str, Any]]]) -> None:
        self.batches = batches
        self.since: list[float] = []

    def handlers(self) -> dict[str, Any]:
        def answer(value: Any) -> Any:
            async def handler(args: dict[str, Any]) -> Any:
                return value

            return handler

        return {
            "status": answer(STATUS),
            "node.ls": answer(NODES),
            "service.ls": answer(SERVICES),
            "service.ps": answer(TASKS),
        }

    async def events(self, args: dict[str, Any], emit: Emit) -> None:
        self.since.append(float(args["since"]))
        batch = self.batches.pop(0) if self.batches else []
        for event in batch:
            await emit(event)
        if not self.batches:
            await trio.sleep_forever()  # a follower: the stream stays open


async def _serve(nursery: trio.Nursery, path: Path, agent: FakeAgent) -> ControlClient:
    await nursery.start(serve_control, path, agent.handlers(), {"events": agent.events})
    return ControlClient(path)


async def test_poll_returns_every_answer_when_the_agent_answers(tmp_path: Path) -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            client = await _serve(nursery, tmp_path / "c.sock", FakeAgent([]))
            result = await app.poll(client)
            nursery.cancel_scope.cancel()
    assert (result.status, result.nodes, result.services, result.tasks, result.error) == (
        STATUS,
        NODES,
        SERVICES,
        TASKS,
        "",
    )


async def test_poll_of_a_missing_agent_gives_nothing_and_says_why(tmp_path: Path) -> None:
    with trio.fail_after(10):
        result = await app.poll(ControlClient(tmp_path / "none.sock"))
    assert result.status is None and result.nodes is None
    assert "no agent answers" in result.error


def test_event_feed_skips_duplicates_and_garbage() -> None:
    feed = app.EventFeed(maxlen=5)
    assert [feed.add(e) for e in EVENTS[:3]] == [True, True, True]
    assert feed.add(EVENTS[1]) is False  # replayed by a reopened stream
    assert feed.add({"seq": "x"}) is False
    assert feed.add(7) is False
    assert [e["seq"] for e in feed.items] == [1, 2, 3]
    assert feed.since(0.0) == EVENTS[2]["time"]
    for e in EVENTS[3:]:
        feed.add(e)
    assert [e["seq"] for e in feed.items] == [5, 6, 7, 8, 9]  # bounded


def test_event_feed_starts_an_hour_back() -> None:
    assert app.EventFeed().since(10_000.0) == 10_000.0 - app.EVENTS_HISTORY_S


async def test_reopened_event_stream_resumes_from_the_last_event(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(app, "EVENTS_RETRY_S", 0)
    agent = FakeAgent([EVENTS[:3], EVENTS[2:5]])  # the first stream ends; the second overlaps
    feed = app.EventFeed()
    got_five = trio.Event()

    def changed() -> None:
        if len(feed.items) == 5:
            got_five.set()

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            client = await _serve(nursery, tmp_path / "c.sock", agent)
            nursery.start_soon(app.follow_events, client, feed, changed, lambda: 1000.0)
            await got_five.wait()
            nursery.cancel_scope.cancel()
    assert [e["seq"] for e in feed.items] == [1, 2, 3, 4, 5]
    assert agent.since == [1000.0 - app.EVENTS_HISTORY_S, EVENTS[2]["time"]]


async def test_dashboard_draws_the_polled_cluster(tmp_path: Path) -> None:
    out = io.StringIO()
    console = Console(
        file=out, width=100, height=30, force_terminal=True, color_system=None, record=True
    )
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            client = await _serve(nursery, tmp_path / "c.sock", FakeAgent([EVENTS]))
            view = await app.run_dashboard(
                client, console, interval_s=0, signals=False, max_polls=3
            )
            nursery.cancel_scope.cancel()
    assert view is not None and view.connection is Connection.OK
    assert [n.name for n in view.nodes] == ["n1", "n2", "n3"]
    screen = out.getvalue()
    assert "\x1b[?1049h" in screen and "\x1b[?1049l" in screen  # alternate screen, then back
    assert "DOWN" in screen and "PAUSED" in screen


async def test_dashboard_keeps_running_without_an_agent(tmp_path: Path) -> None:
    console = Console(file=io.StringIO(), width=80, height=24, force_terminal=True)
    with trio.fail_after(20):
        view = await app.run_dashboard(
            ControlClient(tmp_path / "none.sock"),
            console,
            interval_s=0,
            signals=False,
            max_polls=2,
        )
    assert view is not None and view.connection is Connection.UNREACHABLE
