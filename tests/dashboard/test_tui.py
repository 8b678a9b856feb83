"""The Textual app headless (Textual's pilot) at 80x24, against the fake agent on a real control
socket: keys drive it, the screen it draws is read back, the agent sees the calls.

Textual runs on asyncio, so these tests are plain functions around `asyncio.run` (pytest-trio's
trio mode is for the trio tests), each under an absolute `asyncio.timeout`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

from textual.geometry import Region
from textual.pilot import Pilot

from swarmlet.api.control_socket import ControlClient
from swarmlet.dashboard.tui import DashboardApp, ScreenWidget

from .fake_agent import FakeAgent, serve_in_thread
from .fixtures import EVENTS

TIMEOUT_S = 60
SIZE = (80, 24)

Scenario = Callable[[DashboardApp, Pilot[None]], Awaitable[None]]


def screen(app: DashboardApp) -> str:
    """What the app's one widget draws now, as text."""
    widget = app.query_one(ScreenWidget)
    width, height = widget.size
    return "\n".join(strip.text for strip in widget.render_lines(Region(0, 0, width, height)))


async def wait_screen(app: DashboardApp, pilot: Pilot[None], text: str) -> str:
    """Wait (under the test's timeout) until the screen shows `text`."""
    while text not in (shown := screen(app)):
        await pilot.pause(0.05)
    return shown


def run_app(tmp_path: Path, agent: FakeAgent, scenario: Scenario) -> DashboardApp:
    path = tmp_path / "control.sock"

    async def main() -> DashboardApp:
        app = DashboardApp(ControlClient(path), interval_s=0.1)
        async with asyncio.timeout(TIMEOUT_S), app.run_test(size=SIZE) as pilot:
            await wait_screen(app, pilot, "● ok")
            await scenario(app, pilot)
        return app

    with serve_in_thread(path, agent):
        return asyncio.run(main())


def test_draws_the_cluster_and_quits_on_q(tmp_path: Path) -> None:
    async def scenario(app: DashboardApp, pilot: Pilot[None]) -> None:
        shown = screen(app)
        assert "━━ ▶ Services" in shown and "DOWN" in shown and "PAUSED" in shown
        assert len(shown.splitlines()) == 24
        await pilot.press("q")
        await pilot.pause()

    app = run_app(tmp_path, FakeAgent([EVENTS]), scenario)
    assert app.return_code == 0


def test_drill_down_filter_and_back(tmp_path: Path) -> None:
    async def scenario(app: DashboardApp, pilot: Pilot[None]) -> None:
        await pilot.press("G", "enter")
        shown = await wait_screen(app, pilot, "── Service web")
        assert "no suitable node: 1 node is draining" in shown  # the pending reason
        assert "\\_ web.3" in shown  # the slot's history
        await pilot.press("/", "o", "r", "p", "h", "enter")
        shown = await wait_screen(app, pilot, "/orph")
        assert "orphaned" in shown and "● running" not in shown
        await pilot.press("enter")
        shown = await wait_screen(app, pilot, "── Task web.3")
        assert "t-web-3-3-orphaned" in shown
        await pilot.press("escape", "escape", "escape")  # back; clear the filter; back
        await wait_screen(app, pilot, "━━ ▶ Services")
        await pilot.press("?")
        await wait_screen(app, pilot, "── Keys")
        await pilot.press("escape", "q")

    run_app(tmp_path, FakeAgent([EVENTS]), scenario)


def test_scale_asks_then_calls_the_agent_and_shows_the_result(tmp_path: Path) -> None:
    agent = FakeAgent([EVENTS])

    async def scenario(app: DashboardApp, pilot: Pilot[None]) -> None:
        await pilot.press("G", "s", "5")
        await wait_screen(app, pilot, "Replicas for web (now 3): 5")
        await pilot.press("enter")
        await wait_screen(app, pilot, "Scale web to 5 replicas?  y yes")
        assert agent.writes == []  # nothing before `y`
        await pilot.press("y")
        shown = await wait_screen(app, pilot, "✓ web scaled to 5")
        while "2/5" not in shown:  # the next poll shows the new count
            await pilot.pause(0.05)
            shown = screen(app)
        await pilot.press("q")

    run_app(tmp_path, agent, scenario)
    assert agent.writes == [("service.scale", {"scale": {"web": 5}})]


def test_worker_says_actions_need_a_manager(tmp_path: Path) -> None:
    agent = FakeAgent([EVENTS], worker=True)
    for node in agent.nodes["nodes"]:
        node["self"] = node["hostname"] == "n3"

    async def scenario(app: DashboardApp, pilot: Pilot[None]) -> None:
        await wait_screen(app, pilot, "worker: actions need a manager")
        await pilot.press("r")
        await wait_screen(app, pilot, "restart needs a manager: n3 is a worker")
        await pilot.press("q")

    run_app(tmp_path, agent, scenario)
    assert agent.writes == []


def test_l_follows_the_logs_of_the_selected_service(tmp_path: Path) -> None:
    async def scenario(app: DashboardApp, pilot: Pilot[None]) -> None:
        await pilot.press("G", "l")
        shown = await wait_screen(app, pilot, "hello from t-web-2-2-running")
        assert "Logs of service web" in shown and "hello from t-web-1-1-running" in shown
        await pilot.press("escape")
        await wait_screen(app, pilot, "━━ ▶ Services")
        await pilot.press("q")

    run_app(tmp_path, FakeAgent([EVENTS]), scenario)


def test_keeps_running_without_an_agent(tmp_path: Path) -> None:
    async def main() -> None:
        app = DashboardApp(ControlClient(tmp_path / "none.sock"), interval_s=0.05)
        async with asyncio.timeout(TIMEOUT_S), app.run_test(size=SIZE) as pilot:
            shown = await wait_screen(app, pilot, "✗ unreachable")
            assert "agent unreachable" in shown
            while app.polls < 3:
                await pilot.pause(0.05)
            await pilot.press("G", "enter", "s", "?", "escape", "q")

    asyncio.run(main())


def test_mouse_click_selects_and_opens_a_node(tmp_path: Path) -> None:
    async def scenario(app: DashboardApp, pilot: Pilot[None]) -> None:
        y = next(y for y, line in enumerate(screen(app).splitlines()) if "127.0.0.2:7946" in line)
        await pilot.click(ScreenWidget, offset=(10, y))
        await wait_screen(app, pilot, "━━ ▶ Nodes")
        await pilot.click(ScreenWidget, offset=(10, y))
        await wait_screen(app, pilot, "── Node n2")
        await pilot.press("q")

    run_app(tmp_path, FakeAgent([EVENTS]), scenario)


def test_tab_moves_between_panes_and_ctrl_c_quits(tmp_path: Path) -> None:
    async def scenario(app: DashboardApp, pilot: Pilot[None]) -> None:
        await pilot.press("tab")  # Textual's focus keys reach the dashboard's panes
        await wait_screen(app, pilot, "━━ ▶ Tasks")
        await pilot.press("shift+tab", "shift+tab")
        await wait_screen(app, pilot, "━━ ▶ Nodes")
        await pilot.press("ctrl+c")
        await pilot.pause()

    app = run_app(tmp_path, FakeAgent([EVENTS]), scenario)
    assert app.return_code == 0


def test_changes_between_two_redraw_ticks_make_one_redraw(tmp_path: Path) -> None:
    async def scenario(app: DashboardApp, pilot: Pilot[None]) -> None:
        before = app.redraws
        for _ in range(50):  # polls, events and log lines arriving between two ticks
            app.mark_dirty()
        app._redraw_if_dirty()  # the timer's tick (REDRAWS_PER_S a second)
        app._redraw_if_dirty()  # the next tick, nothing new
        assert app.redraws == before + 1
        await pilot.press("q")

    run_app(tmp_path, FakeAgent([EVENTS]), scenario)


def test_quits_at_once_even_before_the_first_poll(tmp_path: Path) -> None:
    async def main() -> DashboardApp:
        app = DashboardApp(ControlClient(tmp_path / "none.sock"), interval_s=0.05)
        async with asyncio.timeout(TIMEOUT_S), app.run_test(size=SIZE) as pilot:
            await pilot.press("q")
        return app

    app = asyncio.run(main())
    assert app.return_code == 0 and app.failure() is None
