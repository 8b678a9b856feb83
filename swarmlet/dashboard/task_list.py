"""Tasks as a list, one row per task, as `swarmlet service ps` shows them: the Tasks pane when the
keys are on it, and the task lists of a service's and a node's screens.

Owns the columns (task, node, desired and current state with its age, error or message) and,
in a history, the `\\_` marking a slot's older tasks under its newest (as `docker service ps`).
Pure: what the rows are and in which order is decided by the caller (`swarmlet.dashboard.lists`).
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text

from swarmlet.dashboard.cells import styled
from swarmlet.dashboard.lists import task_name
from swarmlet.dashboard.table import Column, Section, table, visible_range
from swarmlet.dashboard.task_grid import task_glyph
from swarmlet.dashboard.view import ERROR_STATES, TaskCell


def age(seconds: float) -> str:
    """`42s`, `5m`, `3h`, `2d`: how long ago, coarse; `-` when unknown."""
    if not 0 <= seconds <= 10**10:  # nan, clock skew, garbage
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def _state(t: TaskCell, now: float) -> Text:
    glyph, style = task_glyph(t)
    text = Text(f"{glyph} ", style=style)
    text.append(styled(t.state, "bold red" if t.state in ERROR_STATES else style))
    text.append(f" {age(now - t.updated_at)}", style="dim")
    return text


def _why(t: TaskCell) -> Text:
    if t.error:
        return styled(t.error, "red")
    return styled(t.message, "dim")


def task_list_section(
    title: str,
    info: str,
    tasks: Sequence[TaskCell],
    now: float,
    width: int,
    *,
    history: bool = False,
    selected: int | None = None,
    focused: bool = False,
    min_rows: int = 2,
    height: int | None = None,
) -> Section:
    """`history`: rows are grouped by slot, newest first, and the older ones are marked.
    `height`: the most lines the screen could give it (only those rows are built)."""
    total = len(tasks)
    shown = visible_range(total, selected, height or total)
    previous = task_name(tasks[shown.start - 1]) if shown.start > 0 else None
    tasks = tasks[shown.start : shown.stop]
    names: list[Text] = []
    for t in tasks:
        name = task_name(t)
        if history and name == previous:
            names.append(styled(f" \\_ {name}", "dim"))
        else:
            names.append(styled(name, "bold"))
        previous = name
    columns = [
        Column("TASK", names, 0, min_width=6, max_width=30),
        Column("ID", [styled(t.id[:10], "dim") for t in tasks], 6, min_width=6, max_width=10),
        Column("NODE", [styled(t.node_name or "-") for t in tasks], 2, min_width=4, max_width=16),
        Column("DESIRED", [styled(t.desired_state) for t in tasks], 4, min_width=7),
        Column("STATE", [_state(t, now) for t in tasks], 1, min_width=7, max_width=24),
        Column(
            "ERROR / MESSAGE",
            [_why(t) for t in tasks],
            3,
            min_width=8,
            max_width=200,
            comfort=20,
            flex=True,
        ),
    ]
    header, rows = table(columns, width, ["" for _ in tasks])
    return Section(
        title,
        info,
        header,
        rows,
        min_rows=min_rows,
        empty="no tasks",
        selected=selected,
        focused=focused,
        hidden_above=shown.start,
        hidden_below=total - shown.stop,
    )
