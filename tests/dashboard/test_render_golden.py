"""Golden files: the dashboard as a user reads it, for a fixed cluster at fixed sizes.

Regenerate after an intended change with `SWARMLET_UPDATE_GOLDENS=1 pytest tests/dashboard`, then
read the diff: the golden files are the review of the layout.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from rich.cells import cell_len

from swarmlet.dashboard.keys import UiState, action_done, handle_key
from swarmlet.dashboard.lists import LogLine
from swarmlet.dashboard.screens import render_screen
from swarmlet.dashboard.view import View, build_view

from .fixtures import EVENTS, T0, fixed_view
from .screen import screen_lines, screen_text

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("SWARMLET_UPDATE_GOLDENS") == "1"


def unreachable_view() -> View:
    """The agent stopped answering 12 s after the fixed view."""
    return build_view(
        None,
        None,
        None,
        None,
        EVENTS,
        fixed_view(),
        T0 + 12,
        error="no agent answers at /var/lib/swarmlet/control.sock (Connection refused)",
    )


VIEWS = {"cluster": fixed_view, "unreachable": unreachable_view}
CASES = [
    ("cluster", 80, 24),
    ("cluster", 160, 48),
    ("cluster", 40, 12),
    ("cluster", 20, 10),
    ("unreachable", 80, 24),
]


# The interactive screens, each reached by keys from the start, at 80x24 (and a few smaller).
LOGS = [
    LogLine(n, f"web.{1 + n % 2}.t-web-{1 + n % 2}", f"n{1 + n % 2}", f"GET / {n}")
    for n in range(40)
]
SCREENS = {
    "overview": [],
    "overview_nodes": ["1", "down"],
    "overview_tasks": ["3", "down"],
    "overview_events_filtered": ["4", "/", "w", "e", "b", "enter"],
    "service_web": ["G", "enter"],
    "service_api": ["enter"],
    "node_n2": ["1", "down", "enter"],
    "task_api_failed": ["enter", "enter"],
    "scale_prompt": ["G", "s", "5"],
    "scale_confirm": ["G", "s", "5", "enter"],
    "scale_done": ["G", "s", "5", "enter", "y", "<done>"],
    "help": ["?"],
    "logs_web": ["G", "l"],
}
SCREEN_SIZES = {"overview": [(80, 24), (40, 12)], "service_web": [(80, 24), (60, 16)]}
SCREEN_CASES = [(name, w, h) for name in SCREENS for w, h in SCREEN_SIZES.get(name, [(80, 24)])]


def _check_golden(path: Path, lines: list[str], width: int, height: int) -> None:
    assert len(lines) <= height
    assert all(cell_len(line) <= width for line in lines)
    text = "\n".join(line.rstrip() for line in lines) + "\n"
    if UPDATE:
        path.write_text(text)
    assert path.exists(), f"no golden file {path.name}: run with SWARMLET_UPDATE_GOLDENS=1"
    assert text == path.read_text()


@pytest.mark.parametrize(("name", "width", "height"), CASES)
def test_screen_matches_golden_file(name: str, width: int, height: int) -> None:
    lines = screen_lines(VIEWS[name](), width, height)
    _check_golden(GOLDEN / f"{name}_{width}x{height}.txt", lines, width, height)


@pytest.mark.parametrize(("name", "width", "height"), SCREEN_CASES)
def test_interactive_screen_matches_golden_file(name: str, width: int, height: int) -> None:
    view = fixed_view()
    ui = UiState()
    for key in SCREENS[name]:
        if key == "<done>":  # the control API answered the action
            ui = action_done(ui, ui.running[0], "")
        else:
            ui, _ = handle_key(ui, key, view, LOGS)
    screen = render_screen(view, ui, LOGS, width, height)
    lines = screen_text(screen, width, height).splitlines()
    _check_golden(GOLDEN / f"screen_{name}_{width}x{height}.txt", lines, width, height)


def test_golden_files_are_all_in_use() -> None:
    expected = {f"{name}_{w}x{h}.txt" for name, w, h in CASES}
    expected |= {f"screen_{name}_{w}x{h}.txt" for name, w, h in SCREEN_CASES}
    assert {p.name for p in GOLDEN.glob("*.txt")} == expected
