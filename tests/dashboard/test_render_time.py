"""How long a screen of a 1,000-task cluster takes to build and draw: measured and printed, never
asserted (the machine's load decides the figure). What is asserted is that the screens fit.

The state: 40 nodes, 50 services of 20 replicas (1,000 running tasks, plus a shut-down
predecessor for every fourth slot, as after an update), 500 raw events. Timed: `build_view` from
the control API's plain answers (what each poll costs), and `render_screen` to text at 80x24 and
200x60 for the overview with the tasks pane focused and a service's screen (what each redraw
costs), and a key on the tasks pane (what each key costs before its redraw).
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import pytest

from swarmlet.dashboard.keys import UiState, handle_key
from swarmlet.dashboard.screens import render_screen
from swarmlet.dashboard.view import View, build_view

from .fixtures import STATUS, T0
from .screen import screen_text

NODES, SERVICES, REPLICAS = 40, 50, 20
ROUNDS = 5


def generated_cluster() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], list[Any]]:
    nodes = [
        {
            "id": f"node{n:04d}" + "0" * 8,
            "hostname": f"host{n}",
            "addr": f"10.0.{n // 250}.{n % 250}:7946",
            "status": "down" if n == 7 else "ready",
            "availability": "active",
            "role": "manager" if n < 3 else "worker",
            "leader": n == 0,
            "raft": "voter" if n < 3 else "learner",
            "labels": {"zone": f"z{n % 3}"},
            "cpus": 8.0,
            "memory_bytes": 32 * 1024**3,
            "cpu_percent": float(n),
            "memory_used_bytes": n * 1024**3,
            "tasks": SERVICES * REPLICAS // NODES,
            "self": n == 0,
        }
        for n in range(NODES)
    ]
    services = []
    tasks = []
    for s in range(SERVICES):
        name = f"svc{s:02d}"
        services.append(
            {
                "id": f"s{s}",
                "name": name,
                "mode": "replicated",
                "image": f"registry.example/{name}:1",
                "replicas_desired": REPLICAS,
                "replicas_running": REPLICAS - (s % 3 == 0),
                "ports": [{"published": 8000 + s, "target": 80, "protocol": "tcp"}],
                "stack": "big",
                "version": 2,
                "update_status": {"state": "updating" if s % 10 == 0 else "", "message": ""},
                "autoscale": None,
            }
        )
        for slot in range(1, REPLICAS + 1):
            node = nodes[(s * REPLICAS + slot) % NODES]
            base = {
                "service": name,
                "slot": slot,
                "node": node["id"],
                "node_name": node["hostname"],
                "healthy": None,
                "message": "",
                "container_id": f"c{s}{slot}",
                "created_at": T0 - 600,
                "endpoints": [{"host": "10.0.0.1", "port": 30000 + slot, "target": 80}],
            }
            tasks.append(
                base
                | {
                    "id": f"t{s}-{slot}",
                    "desired_state": "running",
                    "state": "running",
                    "error": "",
                    "spec_version": 2,
                    "updated_at": T0 - slot,
                }
            )
            if slot % 4 == 0:
                tasks.append(
                    base
                    | {
                        "id": f"t{s}-{slot}-old",
                        "desired_state": "shutdown",
                        "state": "failed" if slot % 8 == 0 else "shutdown",
                        "error": "exit code 137" if slot % 8 == 0 else "",
                        "spec_version": 1,
                        "updated_at": T0 - 300,
                    }
                )
    events = [
        {
            "seq": i,
            "time": T0 - 500 + i,
            "type": "task",
            "action": "running/running",
            "subject": f"svc{i % SERVICES:02d}.{1 + i % REPLICAS}",
            "message": f"task t{i % SERVICES}-{1 + i % REPLICAS} on host1: desired running",
        }
        for i in range(500)
    ]
    return (
        {"stale": False, "nodes": nodes},
        {"stale": False, "services": services},
        {"tasks": tasks},
        events,
    )


def _median_ms(action: Any) -> float:
    times = []
    for _ in range(ROUNDS):
        start = time.perf_counter()
        action()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def test_render_time_of_a_1000_task_cluster(capsys: pytest.CaptureFixture[str]) -> None:
    nodes, services, tasks, events = generated_cluster()
    status = dict(STATUS, proxy={})

    def build() -> View:
        return build_view(status, nodes, services, tasks, events, None, T0)

    view = build()
    assert sum(1 for t in view.tasks if t.state == "running") == SERVICES * REPLICAS
    overview = UiState()
    for key in ("3",):
        overview, _ = handle_key(overview, key, view)
    service = UiState()
    for key in ("G", "enter"):
        service, _ = handle_key(service, key, view)

    key_ms = _median_ms(lambda: handle_key(overview, "down", view))
    figures = [f"build_view: {_median_ms(build):.1f} ms", f"a key (down): {key_ms:.1f} ms"]
    for name, ui in (("overview, tasks pane", overview), ("service screen", service)):
        for width, height in ((80, 24), (200, 60)):

            def draw(ui: UiState = ui, width: int = width, height: int = height) -> str:
                return screen_text(render_screen(view, ui, (), width, height), width, height)

            lines = draw().splitlines()
            assert len(lines) <= height
            figures.append(f"{name} {width}x{height}: {_median_ms(draw):.1f} ms")
    with capsys.disabled():
        print(
            f"\n1,000-task cluster ({len(view.history)} tasks in all), median of {ROUNDS}: "
            + "; ".join(figures)
        )
