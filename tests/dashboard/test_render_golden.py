"""Golden files: the dashboard as a user reads it, for a fixed cluster at fixed sizes.

Regenerate after an intended change with `SWARMLET_UPDATE_GOLDENS=1 pytest tests/dashboard`, then
read the diff: the golden files are the review of the layout.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from rich.cells import cell_len

from swarmlet.dashboard.view import View, build_view

from .fixtures import EVENTS, T0, fixed_view
from .screen import screen_lines

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


@pytest.mark.parametrize(("name", "width", "height"), CASES)
def test_screen_matches_golden_file(name: str, width: int, height: int) -> None:
    lines = screen_lines(VIEWS[name](), width, height)
    assert len(lines) <= height
    assert all(cell_len(line) <= width for line in lines)
    text = "\n".join(line.rstrip() for line in lines) + "\n"
    path = GOLDEN / f"{name}_{width}x{height}.txt"
    if UPDATE:
        path.write_text(text)
    assert path.exists(), f"no golden file {path.name}: run with SWARMLET_UPDATE_GOLDENS=1"
    assert text == path.read_text()


def test_golden_files_are_all_in_use() -> None:
    expected = {f"{name}_{w}x{h}.txt" for name, w, h in CASES}
    assert {p.name for p in GOLDEN.glob("*.txt")} == expected
