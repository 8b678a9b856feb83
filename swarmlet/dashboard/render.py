"""Render a dashboard `View` for a terminal of a given size: pure, total, never wraps.

`render(view, width, height)` returns a rich `Group` of at most `height` lines, each exactly one
terminal line of at most `width` cells, for any view and any size (>= 1x1; the dashboard promises
20x10 and up, and 80x24 is the size it is designed for). It owns the layout only: what the numbers
mean is decided in `swarmlet.dashboard.view`.

Layout, top to bottom: a status line (connection state, cluster, Raft, gossip), a banner when the
connection is not OK, then the Nodes, Services, Tasks and Events sections (built in
`swarmlet.dashboard.panels` and `swarmlet.dashboard.task_grid`, laid out line by line by
`swarmlet.dashboard.table`). Every section knows its height before it is rendered: that is what
makes "never more lines than the screen" a property instead of a hope.

Lines, where the screen is too short (decisions of this module): the status line first, then the
banner, then a minimum of each section in the order Nodes, Services, Events, Tasks; what is left
goes to Nodes, Services and Tasks up to their full length, and the rest to Events (newest at the
bottom). A section that does not fit its minimum is dropped; a truncated list ends with "… N
more". How columns share a width is decided in `swarmlet.dashboard.table`.

With a `Focus` (the interactive dashboard), the focused pane's heading says so, its list is
filtered and its selected row is highlighted and always on screen; the focused Tasks pane is a
list of tasks (`swarmlet.dashboard.task_list`) instead of the grid, since a grid cell holds several
tasks and a selection needs one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from rich.console import Group
from rich.text import Text

from swarmlet.dashboard.lists import (
    Hit,
    Item,
    Pane,
    event_item,
    matches,
    node_item,
    service_item,
    task_item,
)
from swarmlet.dashboard.panels import (
    banner,
    events_section,
    nodes_section,
    services_section,
    status_line,
)
from swarmlet.dashboard.table import Section
from swarmlet.dashboard.task_grid import tasks_section
from swarmlet.dashboard.task_list import task_list_section
from swarmlet.dashboard.view import Connection, View


@dataclass(frozen=True, slots=True)
class Focus:
    """The pane the keys act on, its selected item's key ("": none), and each pane's filter
    (by `Pane`; a pane keeps its filter when the keys move to another)."""

    pane: Pane
    selected: str = ""
    filters: tuple[str, ...] = ()

    def filter_of(self, pane: Pane) -> str:
        return self.filters[pane] if pane < len(self.filters) else ""


_PANE_ITEMS: dict[Pane, tuple[str, Callable[[Any], Item]]] = {
    Pane.NODES: ("nodes", node_item),
    Pane.SERVICES: ("services", service_item),
    Pane.TASKS: ("tasks", task_item),
    Pane.EVENTS: ("events", event_item),
}


def _focused_view(view: View, focus: Focus) -> tuple[View, int | None]:
    """The view with each pane's list filtered, and the selected row's index in the focused
    pane's list."""
    changes: dict[str, Any] = {}
    selected = None
    for pane, (field, item_of) in _PANE_ITEMS.items():
        rows = getattr(view, field)
        text = focus.filter_of(pane)
        if text.strip():
            rows = tuple(r for r in rows if matches(item_of(r).text, text))
            changes[field] = rows
        if pane is focus.pane:
            keys = [item_of(r).key for r in rows]
            selected = keys.index(focus.selected) if focus.selected in keys else None
    return dataclasses.replace(view, **changes), selected


def allocate(sections: Sequence[Section | None], height: int) -> list[int]:
    """Lines per section (0: dropped). Minimums in list order, then the rest (see the docstring):
    `sections` is [nodes, services, events, tasks]; None is a section not shown at all."""
    alloc = [0] * len(sections)
    left = height
    for i, s in enumerate(sections):
        if s is None:
            continue
        need = s.overhead + min(s.min_rows, max(1, s.count))
        if need <= left:
            alloc[i] = need
            left -= need
    # Grow to full length: nodes, services, tasks; then events take what is left.
    for i in (0, 1, 3, 2):
        s = sections[i] if i < len(sections) else None
        if s is None or not alloc[i]:
            continue
        grow = min(left, s.wanted() - alloc[i]) if i != 2 else left
        alloc[i] += max(0, grow)
        left -= max(0, grow)
    return alloc


def render(view: View, width: int, height: int, focus: Focus | None = None) -> Group:
    """The whole screen: at most `height` lines of at most `width` cells."""
    return Group(*overview_lines(view, width, height, focus))


def overview_lines(view: View, width: int, height: int, focus: Focus | None = None) -> list[Text]:
    """`render`'s lines."""
    return [line for line, _ in overview_lines_and_hits(view, width, height, focus)]


def overview_lines_and_hits(
    view: View, width: int, height: int, focus: Focus | None = None
) -> list[tuple[Text, Hit | None]]:
    """`render`'s lines, each with what a click on it selects."""
    width = max(1, width)
    height = max(1, height)
    hint = "q quits" if focus is None else "? help"
    lines: list[tuple[Text, Hit | None]] = [(status_line(view, width, hint), None)]
    if view.connection is not Connection.OK and height >= 3:
        lines.append((banner(view, width), None))
    shown, selected = (view, None) if focus is None else _focused_view(view, focus)

    def w(pane: Pane) -> int:  # the focused section's rows leave a cell for its gutter
        return max(1, width - 1) if focus is not None and focus.pane is pane else width

    def sel(pane: Pane) -> int | None:
        return selected if focus is not None and focus.pane is pane else None

    grid = focus is None or focus.pane is not Pane.TASKS
    if not grid:
        tasks: Section | None = task_list_section(
            "Tasks",
            f"{len(shown.tasks)}",
            shown.tasks,
            view.now,
            w(Pane.TASKS),
            selected=selected,
            height=height,
        )
    else:
        tasks = tasks_section(shown, width, height) if shown.services or shown.tasks else None
    sections: list[Section | None] = [
        nodes_section(shown, w(Pane.NODES), sel(Pane.NODES), height),
        services_section(shown, w(Pane.SERVICES), sel(Pane.SERVICES), height),
        events_section(shown, w(Pane.EVENTS), sel(Pane.EVENTS), height),
        tasks,
    ]
    panes = (Pane.NODES, Pane.SERVICES, Pane.EVENTS, Pane.TASKS)  # of `sections`
    if focus is not None:
        for pane, section in zip(panes, sections, strict=True):
            if section is None:
                continue
            section.focused = pane is focus.pane
            if focus.filter_of(pane):
                section.info += f" · /{focus.filter_of(pane)}"
    alloc = allocate(sections, height - len(lines))
    for i in (0, 1, 3, 2):  # display order: nodes, services, tasks, events
        s = sections[i]
        if s is None or not alloc[i]:
            continue
        for line, row in s.lines_and_rows(alloc[i], width):
            if panes[i] is Pane.TASKS and grid:
                row = -1  # a grid row is a service's, not a task: a click focuses the pane
            lines.append((line, None if row is None else (panes[i], row)))
    return lines[:height]
