"""The dashboard's panels, each built from a `View` for a given width: the status line, the
connection banner, and the Nodes, Services and Events sections (the task grid is in
`swarmlet.dashboard.task_grid`).

Owns which columns each panel shows, their priorities and widths, and the styles of its cells.
Nothing relies on colour alone: down nodes say DOWN, a paused update says PAUSED, the progress bar
uses two different characters. What the numbers mean is decided in `swarmlet.dashboard.view`;
how much of each panel fits on the screen, in `swarmlet.dashboard.render`.
"""

from __future__ import annotations

from rich.text import Text

from swarmlet.dashboard.cells import (
    bar,
    clean,
    clock,
    fit,
    format_bytes,
    format_rate,
    one_line,
    styled,
)
from swarmlet.dashboard.table import Column, Section, table, visible_range
from swarmlet.dashboard.view import Connection, EventRow, NodeRow, ServiceRow, View

_CONNECTION_STYLE = {
    Connection.OK: ("●", "bold green"),
    Connection.STALE: ("◐", "bold yellow"),
    Connection.UNREACHABLE: ("✗", "bold red"),
}
_BANNER_STYLE = {Connection.STALE: "black on yellow", Connection.UNREACHABLE: "bold white on red"}
_EVENT_ACTION_STYLE = {
    "down": "bold red",
    "failed": "bold red",
    "rejected": "bold red",
    "orphaned": "bold red",
    "paused": "bold yellow",
    "suspect": "yellow",
    "up": "green",
    "ready": "green",
    "alive": "green",
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


def status_line(view: View, width: int, hint: str = "q quits") -> Text:
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
        (7, Text(hint, style="dim")),
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
    return one_line([fit(one_line(pieces), width)])


def banner(view: View, width: int) -> Text:
    style = _BANNER_STYLE.get(view.connection, "")
    return one_line([fit(Text(f"⚠ {clean(view.message)}", style=style), width)], style)


def nodes_section(
    view: View, width: int, selected: int | None = None, height: int | None = None
) -> Section:
    """`height`: the most lines the screen could give it (only those rows are built)."""
    shown = visible_range(len(view.nodes), selected, height or len(view.nodes))
    nodes = view.nodes[shown.start : shown.stop]
    down = sum(1 for n in view.nodes if n.down)
    columns = [
        Column("", [Text("★" if n.leader else " ", style="bold yellow") for n in nodes], 0),
        Column(
            "NODE",
            [styled(n.name + ("*" if n.is_self else ""), "bold") for n in nodes],
            0,
            min_width=4,
            max_width=20,
        ),
        Column("ADDRESS", [styled(n.addr) for n in nodes], 7, min_width=9, max_width=21),
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
        Column(
            "TASKS",
            [Text("-" if n.tasks is None else str(n.tasks)) for n in nodes],
            2,
            justify="right",
        ),
    ]
    header, rows = table(columns, width, ["red" if n.down else "" for n in nodes])
    info = f"{len(view.nodes)}" + (f" ({down} down)" if down else "")
    return Section(
        "Nodes",
        info,
        header,
        rows,
        min_rows=3,
        empty="no nodes known yet",
        selected=selected,
        hidden_above=shown.start,
        hidden_below=len(view.nodes) - shown.stop,
    )


def _node_role(n: NodeRow) -> Text:
    role = clean(n.role)
    if n.raft == "learner":
        role += " (standby)"
    return Text(role, style="bold" if n.leader else "")


def _node_status(n: NodeRow) -> Text:
    return Text("DOWN", style="bold red") if n.down else Text(clean(n.status), style="green")


def _availability(n: NodeRow) -> Text:
    style = {"active": "", "pause": "yellow", "drain": "yellow"}.get(n.availability, "")
    return styled(n.availability, style)


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


def services_section(
    view: View, width: int, selected: int | None = None, height: int | None = None
) -> Section:
    """`height`: the most lines the screen could give it (only those rows are built)."""
    shown = visible_range(len(view.services), selected, height or len(view.services))
    services = view.services[shown.start : shown.stop]
    updates = [_update(s) for s in services]
    rates = [s.connections_per_s for s in services]
    columns = [
        Column(
            "SERVICE",
            [styled(s.name, "bold") for s in services],
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
            [styled(", ".join(s.ports)) for s in services],
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
            "IMAGE", [styled(s.image) for s in services], 6, min_width=10, max_width=40, comfort=24
        )
    )
    if any(u.cell_len for u in updates):
        columns.append(
            Column("STATE", updates, 2, min_width=8, max_width=200, comfort=16, flex=True)
        )
    header, rows = table(columns, width, ["" for _ in services])
    converging = sum(1 for s in view.services if s.converging or s.updating or s.paused)
    info = f"{len(view.services)}" + (f" ({converging} converging)" if converging else "")
    return Section(
        "Services",
        info,
        header,
        rows,
        min_rows=3,
        empty="no services",
        selected=selected,
        hidden_above=shown.start,
        hidden_below=len(view.services) - shown.stop,
    )


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
    return one_line([fit(text, width)])


def events_section(
    view: View, width: int, selected: int | None = None, height: int | None = None
) -> Section:
    """`height`: the most lines the screen could give it (only those rows are built)."""
    events = view.events
    shown = visible_range(len(events), selected, height or len(events), tail=True)
    rows = [event_line(e, view.utc_offset_s, width) for e in events[shown.start : shown.stop]]
    return Section(
        "Events",
        f"{len(view.events)}",
        None,
        rows,
        min_rows=2,
        tail=True,
        empty="no events yet",
        more=lambda n: f"… {n} earlier",
        selected=selected,
        hidden_above=shown.start,
        hidden_below=len(events) - shown.stop,
    )
