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
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Group

from swarmlet.dashboard.panels import (
    banner,
    events_section,
    nodes_section,
    services_section,
    status_line,
)
from swarmlet.dashboard.table import Section
from swarmlet.dashboard.task_grid import tasks_section
from swarmlet.dashboard.view import Connection, View


def allocate(sections: Sequence[Section | None], height: int) -> list[int]:
    """Lines per section (0: dropped). Minimums in list order, then the rest (see the docstring):
    `sections` is [nodes, services, events, tasks]; None is a section not shown at all."""
    alloc = [0] * len(sections)
    left = height
    for i, s in enumerate(sections):
        if s is None:
            continue
        need = s.overhead + min(s.min_rows, max(1, len(s.rows)))
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


def render(view: View, width: int, height: int) -> Group:
    """The whole screen: at most `height` lines of at most `width` cells."""
    width = max(1, width)
    height = max(1, height)
    lines = [status_line(view, width)]
    if view.connection is not Connection.OK and height >= 3:
        lines.append(banner(view, width))
    tasks = tasks_section(view, width) if view.services or view.tasks else None
    sections: list[Section | None] = [
        nodes_section(view, width),
        services_section(view, width),
        events_section(view, width),
        tasks,
    ]
    alloc = allocate(sections, height - len(lines))
    for i in (0, 1, 3, 2):  # display order: nodes, services, tasks, events
        s = sections[i]
        if s is not None and alloc[i]:
            lines.extend(s.lines(alloc[i], width))
    return Group(*lines[:height])
