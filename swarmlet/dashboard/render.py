"""Render a dashboard `View` for a terminal of a given size: pure, total, never wraps.

`render(view, width, height)` returns a rich `Group` of at most `height` lines, each exactly one
terminal line of at most `width` cells, for any view and any size (>= 1x1; the dashboard promises
20x10 and up, and 80x24 is the size it is designed for). It owns the layout only: what the numbers
mean is decided in `swarmlet.dashboard.view`.

Layout, top to bottom: a status line (connection state, cluster, Raft, gossip), a banner when the
connection is not OK, then the Nodes, Services, Tasks and Events sections. Each section is a
heading rule, a header row and one line per row. Lines are laid out here rather than by
`rich.table.Table` so that the height of every section is known before rendering: that is what
makes "never more lines than the screen" a property instead of a hope.

Priorities, where the screen is too small (decisions of this module):
- Lines: the status line first, then the banner, then a minimum of each section in the order
  Nodes, Services, Events, Tasks; what is left goes to Nodes, Services and Tasks up to their full
  length, and the rest to Events (newest at the bottom). A section that does not fit its minimum is
  dropped; a truncated list ends with "… N more".
- Columns: each has a priority and a comfortable width (its content, capped). Columns are taken
  in priority order at that width while they fit; the first that does not is taken at its minimum
  width if that fits, and the rest are dropped. Then the kept ones grow to their content in
  priority order, and the flexible one (a service's update state) takes what is left. Cells are
  cut with an ellipsis. A task-grid cell too narrow for its slots shows counts per state instead.
- Nothing relies on colour alone: down nodes say DOWN, task states have distinct glyphs, the
  progress bar uses two different characters.
- Control characters in names and messages (newlines in error messages) become spaces, so one
  row is always one line.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone

from rich.cells import cell_len
from rich.console import Group
from rich.text import Text

from swarmlet.dashboard.view import (
    ERROR_STATES,
    LIVE_STATES,
    Connection,
    EventRow,
    NodeRow,
    ServiceRow,
    TaskCell,
    View,
)

BAR_WIDTH = 8
_CONNECTION_STYLE = {
    Connection.OK: ("●", "bold green"),
    Connection.STALE: ("◐", "bold yellow"),
    Connection.UNREACHABLE: ("✗", "bold red"),
}
_BANNER_STYLE = {Connection.STALE: "black on yellow", Connection.UNREACHABLE: "bold white on red"}
# Task glyphs: distinct shapes, so the grid reads without colour (and in golden files).
TASK_LEGEND = (
    ("●", "running", "green"),
    ("◐", "starting", "cyan"),
    ("○", "pending", "yellow"),
    ("!", "unhealthy", "bold yellow"),
    ("◌", "stopping", "dim"),
    ("✗", "failed", "bold red"),
)
_EVENT_ACTION_STYLE = {
    "down": "bold red",
    "failed": "bold red",
    "rejected": "bold red",
    "orphaned": "bold red",
    "paused": "bold yellow",
    "suspect": "yellow",
    "up": "green",
    "ready": "green",
    "elected": "green",
    "joined": "green",
    "completed": "green",
}
_EVENT_TYPE_STYLE = {
    "node": "magenta",
    "service": "cyan",
    "task": "blue",
    "raft": "yellow",
    "autoscale": "green",
}


# ---------------------------------------------------------------------------- text helpers


def clean(text: str) -> str:
    """One line of printable text: control and format characters become spaces."""
    if text.isprintable():
        return text
    return "".join(
        " " if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn") else ch
        for ch in text
    )


def _text(text: str, style: str = "") -> Text:
    return Text(clean(text), style=style)


def fit(text: Text, width: int, justify: str = "left") -> Text:
    """`text` in exactly `width` cells: cut with an ellipsis, or padded."""
    width = max(0, width)
    if width == 0:
        return Text("")
    out = text.copy()
    if out.cell_len > width:
        out.truncate(width, overflow="ellipsis")  # pads a wide character cut in half
    pad = width - out.cell_len
    if pad > 0:
        if justify == "right":
            out = Text(" " * pad) + out
        else:
            out.append(" " * pad)
    return out


def _line(parts: Sequence[Text], style: str = "") -> Text:
    line = Text(style=style, no_wrap=True, overflow="crop", end="\n")
    for part in parts:
        line.append_text(part)
    return line


def format_bytes(n: float) -> str:
    for unit in ("B", "K", "M", "G", "T"):
        if abs(n) < 1024 or unit == "T":
            return f"{n:.0f}{unit}" if unit in ("B", "K") or abs(n) >= 100 else f"{n:.1f}{unit}"
        n /= 1024
    return f"{n:.0f}"  # unreachable: the loop returns at "T"


def format_rate(per_s: float | None) -> str:
    if per_s is None:
        return "-"
    if per_s >= 1000:
        return f"{per_s / 1000:.1f}k"
    return f"{per_s:.1f}"


def bar(done: int, total: int, width: int = BAR_WIDTH) -> Text:
    """A progress bar: ━ for done, ─ for to do (readable without colour)."""
    fraction = 1.0 if total <= 0 else min(1.0, max(0.0, done / total))
    filled = round(width * fraction)
    text = Text("━" * filled, style="green" if filled == width else "yellow")
    text.append("─" * (width - filled), style="dim")
    return text


def clock(t: float, utc_offset_s: int) -> str:
    offset_s = max(-86399, min(86399, utc_offset_s))
    try:
        stamp = datetime.fromtimestamp(t, UTC).astimezone(timezone(timedelta(seconds=offset_s)))
    except (OverflowError, OSError, ValueError):
        return "--:--:--"
    return stamp.strftime("%H:%M:%S")


# ---------------------------------------------------------------------------- columns


@dataclass
class Column:
    header: str
    cells: list[Text]
    priority: int  # 0 is kept longest
    min_width: int = 4  # the narrowest it is shown at, when it is the last column that fits
    max_width: int = 40  # its natural width never exceeds this
    comfort: int = 0  # the width it is chosen at (0: its natural width); grows from there
    justify: str = "left"
    flex: bool = False  # takes the width left over, up to its content
    compact: list[Text] | None = None  # shown instead of a cell that does not fit
    header_style: str = "bold"

    def natural(self) -> int:
        widest = max((c.cell_len for c in self.cells), default=0)
        return min(max(cell_len(self.header), widest), self.max_width)


def table(
    columns: Sequence[Column], width: int, row_styles: Sequence[str]
) -> tuple[Text, list[Text]]:
    """A header line and one line per row, each at most `width` cells."""
    if not columns:
        return _line([]), [_line([]) for _ in row_styles]
    gap = 2 if width >= 60 else 1
    natural = [c.natural() for c in columns]
    widths = [0] * len(columns)
    chosen: list[int] = []
    used = 0
    for i in sorted(range(len(columns)), key=lambda i: columns[i].priority):
        column = columns[i]
        spacing = gap if chosen else 0
        comfortable = max(1, min(natural[i], column.comfort or natural[i]))
        squeezed = max(1, min(natural[i], column.min_width))
        if used + spacing + comfortable <= width:
            widths[i] = comfortable
        elif used + spacing + squeezed <= width:
            widths[i] = squeezed  # the last column that fits: the screen is full
        elif not chosen:
            widths[i], spacing = max(0, width), 0
        else:
            break
        chosen.append(i)
        used += spacing + widths[i]
        if widths[i] < comfortable:
            break
    left = max(0, width - used)
    for flex in (False, True):
        for i in sorted(chosen, key=lambda i: columns[i].priority):
            if columns[i].flex is flex:
                grow = min(left, natural[i] - widths[i]) if natural[i] > widths[i] else 0
                widths[i] += grow
                left -= grow
    shown = sorted(chosen)
    sep = Text(" " * gap)

    def join(cells: list[Text], style: str) -> Text:
        parts: list[Text] = []
        for n, cell in enumerate(cells):
            if n:
                parts.append(sep)
            parts.append(cell)
        return _line(parts, style)

    header = join(
        [
            fit(
                Text(columns[i].header, style=columns[i].header_style),
                widths[i],
                columns[i].justify,
            )
            for i in shown
        ],
        "",
    )
    rows = []
    for r, style in enumerate(row_styles):
        cells = []
        for i in shown:
            c = columns[i]
            cell = c.cells[r] if r < len(c.cells) else Text("")
            if c.compact is not None and cell.cell_len > widths[i] and r < len(c.compact):
                cell = c.compact[r]
            cells.append(fit(cell, widths[i], c.justify))
        rows.append(join(cells, style))
    return header, rows


# ---------------------------------------------------------------------------- sections


@dataclass
class Section:
    title: str
    info: str
    header: Text | None
    rows: list[Text]
    min_rows: int
    tail: bool = False  # keep the last rows (a feed), not the first
    empty: str = ""  # the row shown when there are none
    more: Callable[[int], str] = field(default=lambda n: f"… {n} more")

    @property
    def overhead(self) -> int:
        return 1 + (1 if self.header is not None else 0)

    def wanted(self) -> int:
        return self.overhead + max(1, len(self.rows))

    def _note(self, hidden: int, width: int) -> Text:
        return _line([fit(_text(self.more(hidden), "dim"), width)])

    def lines(self, height: int, width: int) -> list[Text]:
        out = [heading(self.title, self.info, width)]
        if self.header is not None:
            out.append(self.header)
        room = max(0, height - len(out))
        rows = self.rows or [_line([fit(_text(self.empty, "dim italic"), width)])]
        if len(rows) <= room:
            out.extend(rows)
        elif room == 1:
            out.append(self._note(len(rows), width))
        elif room > 1:
            keep = room - 1
            note = self._note(len(rows) - keep, width)
            out.extend([note, *rows[-keep:]] if self.tail else [*rows[:keep], note])
        return out[:height]


def heading(title: str, info: str, width: int) -> Text:
    text = Text("── ", style="dim")
    text.append(clean(title), style="bold")
    if info:
        text.append(" · " + clean(info), style="")
    text.append(" ")
    text.append("─" * max(0, width - text.cell_len), style="dim")
    return _line([fit(text, width)])


def status_line(view: View, width: int) -> Text:
    c = view.cluster
    glyph, style = _CONNECTION_STYLE[view.connection]
    gossip = f"alive {c.gossip_alive}/{c.gossip_members}"
    leader = f"leader {clean(c.leader_name)}" if c.leader_id else "no leader"
    parts: list[tuple[int, Text]] = [
        (6, Text(f"swarmlet {clean(c.node_name)}".rstrip(), style="bold")),
        (5, Text(f"cluster {clean(c.cluster_id[:8]) or '?'}")),
        (3, Text(f"term {c.term}")),
        (4, Text(f"commit {c.commit_index}")),
        (1, Text(leader, style="" if c.leader_id else "bold yellow")),
        (2, Text(gossip)),
        (0, Text(f"{glyph} {view.connection.value}", style=style)),
        (7, Text("q quits", style="dim")),
    ]
    sep = "  "
    chosen: set[int] = set()
    used = 0
    for n in sorted(range(len(parts)), key=lambda n: parts[n][0]):
        need = parts[n][1].cell_len + (len(sep) if chosen else 0)
        if used + need <= width:
            chosen.add(n)
            used += need
    pieces: list[Text] = []
    for n in sorted(chosen):
        if pieces:
            pieces.append(Text(sep))
        pieces.append(parts[n][1])
    if not pieces:
        pieces = [parts[6][1]]
    return _line([fit(_line(pieces), width)])


def banner(view: View, width: int) -> Text:
    style = _BANNER_STYLE.get(view.connection, "")
    return _line([fit(Text(f"⚠ {clean(view.message)}", style=style), width)], style)


def nodes_section(view: View, width: int) -> Section:
    nodes = view.nodes
    down = sum(1 for n in nodes if n.down)
    columns = [
        Column("", [Text("★" if n.leader else " ", style="bold yellow") for n in nodes], 0),
        Column(
            "NODE",
            [_text(n.name + ("*" if n.is_self else ""), "bold") for n in nodes],
            0,
            min_width=4,
            max_width=20,
        ),
        Column("ADDRESS", [_text(n.addr) for n in nodes], 7, min_width=9, max_width=21),
        Column("ROLE", [_node_role(n) for n in nodes], 3, min_width=4),
        Column("STATUS", [_node_status(n) for n in nodes], 1, min_width=5),
        Column("AVAIL", [_availability(n) for n in nodes], 5, min_width=5),
        Column("CPU", [Text(f"{n.cpu_percent:.0f}%") for n in nodes], 4, justify="right"),
        Column(
            "MEMORY",
            [
                Text(f"{format_bytes(n.memory_used_bytes)}/{format_bytes(n.memory_bytes)}")
                for n in nodes
            ],
            6,
            justify="right",
        ),
        Column("TASKS", [Text(str(n.tasks)) for n in nodes], 2, justify="right"),
    ]
    header, rows = table(columns, width, ["red" if n.down else "" for n in nodes])
    info = f"{len(nodes)}" + (f" ({down} down)" if down else "")
    return Section("Nodes", info, header, rows, min_rows=3, empty="no nodes known yet")


def _node_role(n: NodeRow) -> Text:
    role = clean(n.role)
    if n.raft == "learner":
        role += " (standby)"
    return Text(role, style="bold" if n.leader else "")


def _node_status(n: NodeRow) -> Text:
    return Text("DOWN", style="bold red") if n.down else Text(clean(n.status), style="green")


def _availability(n: NodeRow) -> Text:
    style = {"active": "", "pause": "yellow", "drain": "yellow"}.get(n.availability, "")
    return _text(n.availability, style)


def _replicas(s: ServiceRow) -> Text:
    """ "2/3", followed by a progress bar while the service converges or updates."""
    if s.desired == 0:
        style = "dim"
    else:
        style = "yellow" if s.converging or s.updating or s.paused else "green"
    text = Text(f"{s.running}/{s.desired}", style=style)
    if s.updating or s.paused:
        text.append(" ")
        text.append_text(bar(s.updated, s.desired))
    elif s.converging:
        text.append(" ")
        text.append_text(bar(s.running, s.desired))
    return text


def _without_prefix(message: str, prefix: str) -> str:
    message = clean(message).strip()
    if message.lower().startswith(prefix):
        message = message[len(prefix) :].lstrip(" :")
    return message


def _update(s: ServiceRow) -> Text:
    rollback = s.update_state.startswith("rollback")
    if s.paused:
        label = "rollback paused" if rollback else "update paused"
        message = _without_prefix(s.update_message, label)
        shown = "ROLLBACK PAUSED" if rollback else "PAUSED"
        return Text(f"{shown}: {message}" if message else shown, style="bold red")
    if s.updating:
        label = "rolling back" if rollback else "updating"
        message = _without_prefix(s.update_message, label)
        text = f"{label} {s.updated}/{s.desired}"
        return Text(f"{text}: {message}" if message else text, style="yellow")
    if s.converging:
        return Text("converging", style="yellow")
    return Text("")


def services_section(view: View, width: int) -> Section:
    services = view.services
    updates = [_update(s) for s in services]
    rates = [s.connections_per_s for s in services]
    columns = [
        Column(
            "SERVICE",
            [_text(s.name, "bold") for s in services],
            0,
            min_width=6,
            max_width=28,
            comfort=20,
        ),
        Column(
            "MODE",
            [Text("global" if s.mode == "global" else "replicated") for s in services],
            7,
            min_width=6,
        ),
        Column("REPLICAS", [_replicas(s) for s in services], 1, min_width=3),
        Column(
            "PORTS",
            [_text(", ".join(s.ports)) for s in services],
            4,
            min_width=5,
            max_width=32,
            comfort=12,
        ),
    ]
    if any(r is not None for r in rates) or any(s.ports for s in services):
        columns.append(
            Column(
                "CONN/S",
                [Text(format_rate(s.connections_per_s) if s.ports else "") for s in services],
                5,
                justify="right",
                min_width=4,
            )
        )
    columns.append(
        Column(
            "IMAGE", [_text(s.image) for s in services], 6, min_width=10, max_width=40, comfort=24
        )
    )
    if any(u.cell_len for u in updates):
        columns.append(
            Column("STATE", updates, 2, min_width=8, max_width=200, comfort=16, flex=True)
        )
    header, rows = table(columns, width, ["" for _ in services])
    converging = sum(1 for s in services if s.converging or s.updating or s.paused)
    info = f"{len(services)}" + (f" ({converging} converging)" if converging else "")
    return Section("Services", info, header, rows, min_rows=3, empty="no services")


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


def tasks_section(view: View, width: int) -> Section:
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
    columns = [
        Column("SERVICE", [_text(s, "bold") for s in rows_services], 0, min_width=6, max_width=24)
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
    return Section("Tasks", legend, header, rows, min_rows=2, empty="no tasks")


def event_line(e: EventRow, utc_offset_s: int, width: int) -> Text:
    text = Text(clock(e.time, utc_offset_s), style="dim")
    text.append(" ")
    text.append(f"{clean(e.type):<7}", style=_EVENT_TYPE_STYLE.get(e.type, ""))
    text.append(" ")
    outcome = e.action.rsplit("/", 1)[-1]  # task events read "desired/observed"
    text.append(f"{clean(e.action):<9}", style=_EVENT_ACTION_STYLE.get(outcome, ""))
    text.append(" ")
    text.append(clean(e.subject), style="bold")
    if e.message:
        text.append(": " + clean(e.message))
    return _line([fit(text, width)])


def events_section(view: View, width: int) -> Section:
    rows = [event_line(e, view.utc_offset_s, width) for e in view.events]
    return Section(
        "Events",
        f"{len(view.events)}",
        None,
        rows,
        min_rows=2,
        tail=True,
        empty="no events yet",
        more=lambda n: f"… {n} earlier",
    )


# ---------------------------------------------------------------------------- layout


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
