"""The dashboard headless (Textual's pilot) against a real cluster: a manager and a worker on
loopback addresses, a service on the real Docker Engine. Drill down, filter, scale a service from
the dashboard and see it converge; the worker's dashboard says that services need a manager and
refuses the same action, saying why.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from textual.pilot import Pilot

from swarmlet.api.control_socket import ControlClient
from swarmlet.dashboard.tui import DashboardApp
from swarmlet.security.datadir_location import control_socket_path
from tests.integration.cluster import local_cluster, run_cli, services, wait_for

from .test_tui import screen, wait_screen

pytestmark = [pytest.mark.integration, pytest.mark.docker, pytest.mark.usefixtures("docker_images")]

TIMEOUT_S = 180


async def _drive(data_dir: Path, scenario_name: str) -> None:
    app = DashboardApp(ControlClient(control_socket_path(data_dir)), interval_s=0.3)
    async with asyncio.timeout(TIMEOUT_S), app.run_test(size=(80, 24)) as pilot:
        await SCENARIOS[scenario_name](app, pilot)
        await pilot.press("q")


async def _scale_from_the_manager(app: DashboardApp, pilot: Pilot[None]) -> None:
    await wait_screen(app, pilot, "● ok")
    await wait_screen(app, pilot, "dash")
    # Drill down: the service's screen lists its one running task.
    await pilot.press("enter")
    shown = await wait_screen(app, pilot, "── Service dash")
    assert "swarmlet/web:1" in shown
    await wait_screen(app, pilot, "● running")
    # Filter the task list: a word no task has leaves none, its slot's name leaves it.
    await pilot.press("/", "z", "z", "z", "enter")
    await wait_screen(app, pilot, "Tasks, with history · 0")
    await pilot.press("escape", "/", "d", "a", "s", "h", ".", "1", "enter")
    await wait_screen(app, pilot, "Tasks, with history · 1")
    await pilot.press("escape", "escape")
    await wait_screen(app, pilot, "━━ ▶ Services")
    # Scale to 3 from the overview, confirm, and watch it converge.
    await pilot.press("s", "3", "enter")
    await wait_screen(app, pilot, "Scale dash to 3 replicas?")
    await pilot.press("y")
    await wait_screen(app, pilot, "✓ dash scaled to 3")
    await wait_screen(app, pilot, "3/3")
    await pilot.press("enter")
    shown = await wait_screen(app, pilot, "Tasks, with history · 3")
    while screen(app).count("● running") < 3:
        await pilot.pause(0.1)


async def _refused_on_the_worker(app: DashboardApp, pilot: Pilot[None]) -> None:
    # A worker holds only its own tasks' part of the state (issue #16): it lists the nodes, and
    # says that the services need a manager, naming it.
    await wait_screen(app, pilot, "n1")
    await wait_screen(app, pilot, "this node is a worker")
    await wait_screen(app, pilot, "worker: actions need a manager")
    # Drain a node from the nodes pane (the first row, n1): refused, and why.
    await pilot.press("1", "d")
    await wait_screen(app, pilot, "drain needs a manager: n2 is a worker")


SCENARIOS = {"manager": _scale_from_the_manager, "worker": _refused_on_the_worker}


def test_drill_down_filter_and_scale_from_the_dashboard(tmp_path: Path) -> None:
    with local_cluster(tmp_path) as cluster:
        cluster.start(managers=1, workers=1)
        manager, worker = cluster.agents
        run_cli(
            "service",
            "create",
            "--name",
            "dash",
            "--replicas",
            "1",
            "swarmlet/web:1",
            data_dir=manager.data_dir,
            timeout=120,
        )
        asyncio.run(_drive(manager.data_dir, "manager"))
        service = wait_for(
            "the CLI to see 3 replicas running",
            lambda: (s := services(cluster)["dash"])["replicas_running"] == 3 and s,
            timeout=60,
        )
        assert service["replicas_desired"] == 3
        asyncio.run(_drive(worker.data_dir, "worker"))
        assert services(cluster)["dash"]["replicas_desired"] == 3  # unchanged by the worker
        assert all(n["availability"] == "active" for n in cluster.node_ls(manager))
