"""The Tasks section: a grid of services (rows) by nodes (columns), each cell listing the tasks
of that service on that node as a slot number and a state glyph ("1● 3◐").

Owns the glyphs (`TASK_LEGEND`): distinct shapes, so the grid reads without colour (and in golden
files). Tasks on nodes the view does not list get a column of their own, tasks not yet assigned
a node an "unassigned" column first. A cell too narrow for its slots shows counts per glyph
instead ("1● 1◐").
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text

from swarmlet.dashboard.cells import clean, styled
from swarmlet.dashboard.table import Column, Section, table
from swarmlet.dashboard.view import ERROR_STATES, LIVE_STATES, TaskCell, View

TASK_LEGEND = (
    ("●", "running", "green"),
    ("◐", "starting", "cyan"),
    ("○", "pending", "yellow"),
    ("!", "unhealthy", "bold yellow"),
    ("◌", "stopping", "dim"),
    ("✗", "failed", "bold red"),
)


def task_glyph(t: TaskCell) -> tuple[str, str]:
    if t.state in ERROR_STATES:
        return "✗", "bold red"
    if t.desired_state != "running" and t.state in LIVE_STATES:
        return "◌", "dim"
    if t.state == "running":
        return ("!", "bold yellow") if t.healthy is False else ("●", "green")
    if t.state in ("assigned", "starting"):
        return "◐", "cyan"
    if t.state in ("new", "pending"):
        return "○", "yellow"
    return "■", "dim"


def _task_cell(tasks: Sequence[TaskCell]) -> tuple[Text, Text]:
    """The cell listing `tasks` ("1● 3◐"), and its compact form counting per glyph ("1● 1◐")."""
    full = Text()
    counts: dict[tuple[str, str], int] = {}
    for n, t in enumerate(tasks):
        glyph, style = task_glyph(t)
        counts[(glyph, style)] = counts.get((glyph, style), 0) + 1
        if n:
            full.append(" ")
        full.append(f"{t.slot}{glyph}" if t.slot else glyph, style=style)
    compact = Text()
    for n, ((glyph, style), count) in enumerate(counts.items()):
        if n:
            compact.append(" ")
        compact.append(f"{count}{glyph}", style=style)
    return full, compact


def tasks_section(view: View, width: int, height: int | None = None) -> Section:
    """`height`: the most lines the screen could give it (only those rows are built)."""
    services = [s.name for s in view.services]
    services += sorted({t.service for t in view.tasks} - set(services))
    node_names = {n.id: n.name for n in view.nodes}
    down = {n.id for n in view.nodes if n.down}
    node_ids = [n.id for n in view.nodes]
    node_ids += sorted({t.node_id for t in view.tasks if t.node_id} - set(node_ids))
    grid: dict[tuple[str, str], list[TaskCell]] = {}
    for t in view.tasks:
        grid.setdefault((t.service, t.node_id), []).append(t)
    rows_services = [s for s in services if any((s, n) in grid for n in [*node_ids, ""])]
    count = len(rows_services)
    rows_services = rows_services[: max(1, height or count)]
    columns = [
        Column("SERVICE", [styled(s, "bold") for s in rows_services], 0, min_width=6, max_width=24)
    ]

    def column(header: str, node_id: str, priority: int, style: str) -> Column:
        cells = [_task_cell(grid.get((s, node_id), [])) for s in rows_services]
        return Column(
            header,
            [full for full, _ in cells],
            priority,
            min_width=3,
            max_width=48,
            compact=[compact for _, compact in cells],
            header_style=style,
        )

    if any((s, "") in grid for s in rows_services):
        columns.append(column("unassigned", "", 1, "bold yellow"))
    for n, node_id in enumerate(node_ids):
        name = node_names.get(node_id) or next(
            (t.node_name for t in view.tasks if t.node_id == node_id and t.node_name), node_id[:8]
        )
        columns.append(
            column(
                clean(name) + (" DOWN" if node_id in down else ""),
                node_id,
                2 + n,
                "bold red" if node_id in down else "bold",
            )
        )
    header, rows = table(columns, width, ["" for _ in rows_services])
    legend = " ".join(f"{glyph} {word}" for glyph, word, _ in TASK_LEGEND)
    return Section(
        "Tasks",
        legend,
        header,
        rows,
        min_rows=2,
        empty="no tasks",
        hidden_below=count - len(rows_services),
    )
