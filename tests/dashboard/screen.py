"""Render a dashboard view to plain text, as the golden files hold it."""

from __future__ import annotations

import io

from rich.console import Console, RenderableType

from swarmlet.dashboard.render import render
from swarmlet.dashboard.view import View


def screen_text(renderable: RenderableType | View, width: int, height: int) -> str:
    """A renderable (or a View, through `render`) as the terminal shows it, without styles."""
    if isinstance(renderable, View):
        renderable = render(renderable, width, height)
    console = Console(
        record=True,
        width=width,
        height=height,
        force_terminal=True,
        color_system=None,
        file=io.StringIO(),
    )
    console.print(renderable)
    return console.export_text()


def screen_lines(view: View, width: int, height: int) -> list[str]:
    return screen_text(view, width, height).splitlines()
