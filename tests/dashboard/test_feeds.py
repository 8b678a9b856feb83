"""The dashboard's I/O (polls, events, logs, actions) against a fake agent on a real control
socket (no Docker; sleeps only where a poll's deadline is under test)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio

from swarmlet.api.control_socket import ControlClient, ControlConnection
from swarmlet.dashboard import actions, feeds
from swarmlet.dashboard.keys import Action, ActionKind
from swarmlet.errors import SwarmletError
from swarmlet.state.model import ServiceSpec
from swarmlet.wire import codec as wire

from .fake_agent import FakeAgent, serve
from .fixtures import EVENTS, NODES, SERVICES, STATUS, TASKS


async def _serve(nursery: trio.Nursery, path: Path, agent: FakeAgent) -> ControlClient:
    await serve(nursery, path, agent)
    return ControlClient(path)


class CountingClient(ControlClient):
    """A client that counts the connections it opens."""

    opened = 0

    async def open_connection(self) -> ControlConnection:
        self.opened += 1
        return await super().open_connection()


ANSWERED = (STATUS, NODES, SERVICES, TASKS, "")


def answers(result: feeds.PollResult) -> tuple[object, ...]:
    return (result.status, result.nodes, result.services, result.tasks, result.error)


async def test_polls_return_every_answer_over_connections_kept_from_poll_to_poll(
    tmp_path: Path,
) -> None:
    client = CountingClient(tmp_path / "c.sock")
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await serve(nursery, client.path, FakeAgent([]))
            poller = feeds.Poller(client)
            results = [await poller.poll() for _ in range(5)]
            await poller.aclose()
            nursery.cancel_scope.cancel()
    assert [answers(r) for r in results] == [ANSWERED] * 5
    assert client.opened == 4  # one per call, not one per call and poll


async def test_polls_go_on_over_new_connections_after_the_agent_restarts(tmp_path: Path) -> None:
    client = CountingClient(tmp_path / "c.sock")
    poller = feeds.Poller(client)
    with trio.fail_after(10):
        for _ in range(2):  # the same poller, across the agent's restart
            async with trio.open_nursery() as nursery:
                await serve(nursery, client.path, FakeAgent([]))
                assert answers(await poller.poll()) == ANSWERED
                nursery.cancel_scope.cancel()  # the agent stops: its connections close
        await poller.aclose()
    assert client.opened == 8


async def test_a_call_cut_by_the_deadline_drops_its_connection_and_its_late_answer(
    tmp_path: Path,
) -> None:
    class SlowOnce(FakeAgent):
        def handlers(self) -> dict[str, Any]:
            handlers = super().handlers()
            calls = 0

            async def ps(args: dict[str, Any]) -> Any:
                nonlocal calls
                calls += 1
                if calls == 1:
                    await trio.sleep(0.5)
                    return {"tasks": "the late answer of the first poll"}
                return TASKS

            return handlers | {"service.ps": ps}

    client = CountingClient(tmp_path / "c.sock")
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await serve(nursery, client.path, SlowOnce([]))
            poller = feeds.Poller(client)
            first = await poller.poll(timeout_s=0.2)
            await trio.sleep(0.5)  # the late answer is sent, to a connection nobody reads
            second = await poller.poll()
            await poller.aclose()
            nursery.cancel_scope.cancel()
    assert first.tasks is None and "did not answer within 0.2 s" in first.error
    assert answers(second) == ANSWERED  # not the first poll's late answer
    assert client.opened == 5


async def test_poll_of_a_missing_agent_gives_nothing_and_says_why(tmp_path: Path) -> None:
    with trio.fail_after(10):
        result = await feeds.Poller(ControlClient(tmp_path / "none.sock")).poll()
    assert result.status is None and result.nodes is None
    assert "no agent answers" in result.error


def test_event_feed_skips_duplicates_and_garbage() -> None:
    feed = feeds.EventFeed(maxlen=5)
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
    assert feeds.EventFeed().since(10_000.0) == 10_000.0 - feeds.EVENTS_HISTORY_S


async def test_reopened_event_stream_resumes_from_the_last_event(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(feeds, "EVENTS_RETRY_S", 0)
    agent = FakeAgent([EVENTS[:3], EVENTS[2:5]])  # the first stream ends; the second overlaps
    feed = feeds.EventFeed()
    got_five = trio.Event()

    def changed() -> None:
        if len(feed.items) == 5:
            got_five.set()

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            client = await _serve(nursery, tmp_path / "c.sock", agent)
            nursery.start_soon(feeds.follow_events, client, feed, changed, lambda: 1000.0)
            await got_five.wait()
            nursery.cancel_scope.cancel()
    assert [e["seq"] for e in feed.items] == [1, 2, 3, 4, 5]
    assert agent.since == [1000.0 - feeds.EVENTS_HISTORY_S, EVENTS[2]["time"]]


async def test_follow_logs_keeps_the_selected_tasks_lines(tmp_path: Path) -> None:
    feed = feeds.LogFeed()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            client = await _serve(nursery, tmp_path / "c.sock", FakeAgent())
            four = trio.Event()

            def changed() -> None:
                if len(feed.lines) >= 4:  # every web task that has a node
                    four.set()

            nursery.start_soon(feeds.follow_logs, client, "web", "", feed, changed)
            await four.wait()
            nursery.cancel_scope.cancel()
    assert [(line.number, line.node) for line in feed.lines] == [
        (1, "n1"),
        (2, "n2"),
        (3, "n3"),
        (4, "n1"),
    ]

    feed = feeds.LogFeed()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            client = await _serve(nursery, tmp_path / "c.sock", FakeAgent())
            one = trio.Event()
            nursery.start_soon(feeds.follow_logs, client, "web", "t-web-2-2-running", feed, one.set)
            await one.wait()
            nursery.cancel_scope.cancel()
    assert [line.line for line in feed.lines] == ["hello from t-web-2-2-running"]


async def test_logs_of_a_missing_agent_say_so_in_the_feed(tmp_path: Path) -> None:
    feed = feeds.LogFeed()
    with trio.fail_after(10):
        await feeds.follow_logs(
            ControlClient(tmp_path / "none.sock"), "web", "", feed, lambda: None
        )
    [only] = feed.lines
    assert only.line.startswith("(logs unavailable: ")


@pytest.mark.parametrize(
    ("action", "op", "args"),
    [
        (Action(ActionKind.SCALE, "web", "web", 5), "service.scale", {"scale": {"web": 5}}),
        (Action(ActionKind.ROLLBACK, "api", "api"), "service.rollback", {"service": "api"}),
        (Action(ActionKind.REMOVE, "api", "api"), "service.rm", {"services": ["api"]}),
        (
            Action(ActionKind.DRAIN, "a1b2c3d4e5f60003", "n3"),
            "node.update",
            {"node": "a1b2c3d4e5f60003", "availability": "drain", "label_add": [], "label_rm": []},
        ),
        (
            Action(ActionKind.ACTIVATE, "a1b2c3d4e5f60002", "n2"),
            "node.update",
            {"node": "a1b2c3d4e5f60002", "availability": "active", "label_add": [], "label_rm": []},
        ),
    ],
)
async def test_actions_make_the_clis_calls(
    tmp_path: Path, action: Action, op: str, args: dict[str, object]
) -> None:
    agent = FakeAgent()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            client = await _serve(nursery, tmp_path / "c.sock", agent)
            answer = await actions.perform(client, action)
            nursery.cancel_scope.cancel()
    assert agent.writes == [(op, args)]
    assert action.label in answer


async def test_restart_is_update_force_on_the_current_spec(tmp_path: Path) -> None:
    agent = FakeAgent()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            client = await _serve(nursery, tmp_path / "c.sock", agent)
            answer = await actions.perform(client, Action(ActionKind.RESTART, "web", "web"))
            nursery.cancel_scope.cancel()
    [(op, args)] = agent.writes
    assert (op, args["service"], answer) == ("service.update", "web", "web restarting (version 7)")
    spec = wire.decode(args["spec"], expect=(ServiceSpec,))
    assert isinstance(spec, ServiceSpec)
    assert (spec.name, spec.image, spec.force_update) == ("web", "swarmlet/web:1", 3)


async def test_an_action_refused_by_the_agent_raises_its_message(tmp_path: Path) -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            client = await _serve(nursery, tmp_path / "c.sock", FakeAgent(worker=True))
            with pytest.raises(SwarmletError, match="run this on a manager"):
                await actions.perform(client, Action(ActionKind.SCALE, "web", "web", 2))
            nursery.cancel_scope.cancel()
