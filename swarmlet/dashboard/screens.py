"""The interactive dashboard's screens: `render_screen(view, ui, logs, width, height)`. Pure, total.

Whatever the state, the screen is at most `height` lines of at most `width` cells (the property
test says so for any view, any `UiState` and any size). Its last line is the footer: the filter
being typed, the number asked for, the question waiting for `y`, the last action's result, or the
keys that apply here. The rest is the screen on top of the stack:

- the overview (`swarmlet.dashboard.render` with a `Focus`);
- a service: what it runs (image, mode, replicas, ports, update progress, autoscaling), why
  replicas are pending, recent errors, then its tasks with their history;
- a node: address, role, status, availability, resources, labels, then its tasks;
- a task: its container, state and health, spec version, endpoints, error (with the exit code,
  as the executor words it), then the history of its slot;
- logs: the lines received, newest at the bottom, following unless a line is selected;
- help, over any of them: the keys.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Group
from rich.text import Text

from swarmlet.dashboard.cells import bar, clean, fit, format_bytes, one_line, styled
from swarmlet.dashboard.keys import (
    Mode,
    NoticeKind,
    UiState,
    current_items,
    selected_index,
    tail_list,
)
from swarmlet.dashboard.lists import Hit, Kind, LogLine, node_tasks, service_tasks, task_name
from swarmlet.dashboard.panels import banner, status_line
from swarmlet.dashboard.render import Focus, overview_lines_and_hits
from swarmlet.dashboard.table import Section, heading, visible_range
from swarmlet.dashboard.task_grid import task_glyph
from swarmlet.dashboard.task_list import age, task_list_section
from swarmlet.dashboard.view import Connection, TaskCell, View

HELP = (
    ("↑ ↓ j k, PgUp PgDn, g G", "move the selection"),
    ("Tab, ← →, 1-4", "next pane: nodes, services, tasks, events"),
    ("Enter", "open what is selected: a service, node or task"),
    ("Esc", "clear the filter, else go back"),
    ("/", "filter the list (words, any order); Enter keeps it"),
    ("l", "follow the logs of the selected service or task"),
    ("s", "scale a service (asks for the number)  [manager]"),
    ("r", "restart a service: update --force  [manager]"),
    ("u", "roll a service back to its previous spec  [manager]"),
    ("d / a", "drain / activate a node  [manager]"),
    ("ctrl+d", "remove a service  [manager]"),
    ("y", "confirm an action (Esc or n cancels)"),
    ("?", "this help"),
    ("q, ctrl+c", "quit"),
)

_NOTICE_STYLE = {
    NoticeKind.INFO: "yellow",
    NoticeKind.WORKING: "cyan",
    NoticeKind.OK: "bold green",
    NoticeKind.ERROR: "bold red",
}

_HINTS = {
    Kind.OVERVIEW: "Enter open  / filter  Tab pane  l logs  s scale  r restart  d drain  ? help",
    Kind.SERVICE: "Enter task  Esc back  / filter  l logs  s scale  r restart  u rollback  ? help",
    Kind.NODE: "Enter task  Esc back  / filter  d drain  a activate  ? help",
    Kind.TASK: "Esc back  l logs  ? help",
    Kind.LOGS: "Esc back  ↑↓ scroll  G follow  / filter  ? help",
}


def footer(view: View, ui: UiState, width: int) -> Text:
    """The last line: what is being typed or asked, else the last result, else the keys."""
    lv = ui.level
    if ui.mode is Mode.FILTER:
        text = Text("/", style="bold cyan")
        text.append(clean(lv.cursor.filter))
        text.append("▏", style="bold")
        text.append("  Enter keep  Esc clear", style="dim")
    elif ui.mode is Mode.PROMPT and ui.pending is not None:
        current = next((s for s in view.services if s.name == ui.pending.target), None)
        now = f" (now {current.desired})" if current is not None else ""
        text = Text(f"Replicas for {clean(ui.pending.label)}{now}: ", style="bold yellow")
        text.append(ui.input)
        text.append("▏", style="bold")
        text.append("  Enter next  Esc cancel", style="dim")
    elif ui.mode is Mode.CONFIRM and ui.pending is not None:
        text = Text(clean(ui.pending.question()), style="bold yellow")
        text.append("  y yes  Esc no", style="dim")
    elif ui.notice is not None:
        text = Text(clean(ui.notice.text), style=_NOTICE_STYLE[ui.notice.kind])
    else:
        hint = _HINTS[lv.kind]
        if view.on_worker:
            hint = "worker: actions need a manager  " + hint
        text = Text(hint, style="dim")
    return one_line([fit(text, width)])


# ---------------------------------------------------------------------------- descriptions


def _field(name: str, value: Text | str, width: int) -> Text:
    text = Text(f"{name:<13}", style="bold")
    text.append_text(value if isinstance(value, Text) else styled(value))
    return one_line([fit(text, width)])


def _service_lines(view: View, name: str, tasks: Sequence[TaskCell], width: int) -> list[Text]:
    s = next((s for s in view.services if s.name == name), None)
    if s is None:
        return [_field("service", Text(f"{clean(name)} no longer exists", style="bold red"), width)]
    replicas = Text(f"{s.running}/{s.desired} running  ")
    replicas.append_text(bar(s.running, s.desired))
    lines = [
        _field("image", s.image, width),
        _field(
            "mode", f"{s.mode}  version {s.version}" + (f"  stack {s.stack}" * bool(s.stack)), width
        ),
        _field("replicas", replicas, width),
        _field("ports", ", ".join(s.ports) or "-", width),
    ]
    if s.update_state:
        progress = Text(f"{s.update_state} ")
        if s.updating or s.paused:
            progress.append(f"{s.updated}/{s.desired} ")
            progress.append_text(bar(s.updated, s.desired))
        if s.update_message:
            progress.append(" " + clean(s.update_message), style="red" if s.paused else "")
        lines.append(_field("update", progress, width))
    if s.autoscaled:
        lines.append(_field("autoscale", "on", width))
    pending = sorted({t.message for t in tasks if t.state == "pending" and t.message})
    for reason in pending[:3]:
        lines.append(_field("pending", Text(clean(reason), style="yellow"), width))
    errors = sorted(((t.updated_at, t.error, task_name(t)) for t in tasks if t.error), reverse=True)
    seen: set[str] = set()
    for _, error, who in errors:
        if error not in seen and len(seen) < 3:
            seen.add(error)
            lines.append(_field("error", Text(f"{clean(who)}: {clean(error)}", style="red"), width))
    return lines


def _node_lines(view: View, node_id: str, width: int) -> list[Text]:
    n = next((n for n in view.nodes if n.id == node_id), None)
    if n is None:
        return [_field("node", Text(f"{node_id[:12]} is no longer known", style="bold red"), width)]
    status = Text("DOWN", style="bold red") if n.down else Text(clean(n.status), style="green")
    role = f"{n.role}, raft {n.raft}" + (", leader" if n.leader else "")
    labels = ", ".join(f"{k}={v}" for k, v in n.labels) or "-"
    return [
        _field("id", n.id, width),
        _field("address", n.addr, width),
        _field("role", role + (" (this dashboard's agent)" if n.is_self else ""), width),
        _field("status", status, width),
        _field("availability", n.availability, width),
        _field("cpu", f"{n.cpus:g} cores, {n.cpu_percent:.0f}% used", width),
        _field(
            "memory",
            f"{format_bytes(n.memory_used_bytes)} of {format_bytes(n.memory_bytes)} used",
            width,
        ),
        _field("labels", labels, width),
    ]


def _task_lines(view: View, t: TaskCell, width: int) -> list[Text]:
    glyph, style = task_glyph(t)
    state = Text(f"{glyph} {clean(t.state)}", style=style)
    state.append(f"  for {age(view.now - t.updated_at)}  desired {clean(t.desired_state)}")
    health = {None: "no health check", True: "healthy", False: "UNHEALTHY"}[t.healthy]
    lines = [
        _field("id", t.id, width),
        _field("service", f"{t.service}  slot {t.slot}" if t.slot else t.service, width),
        _field("node", t.node_name or t.node_id or "unassigned", width),
        _field("state", state, width),
        _field("health", health, width),
        _field("container", t.container_id[:12] or "-", width),
        _field("exit code", "-" if t.exit_code is None else str(t.exit_code), width),
        _field("version", f"spec version {t.spec_version}", width),
        _field("endpoints", ", ".join(t.endpoints) or "-", width),
    ]
    if t.error:
        lines.append(_field("error", Text(clean(t.error), style="bold red"), width))
    if t.message:
        lines.append(_field("message", t.message, width))
    return lines


# ---------------------------------------------------------------------------- screens


def _detail(
    view: View,
    ui: UiState,
    title: str,
    info: str,
    description: list[Text],
    tasks: Sequence[TaskCell],
    width: int,
    height: int,
    *,
    list_title: str,
    history: bool,
) -> list[tuple[Text, Hit | None]]:
    """A heading, the description (cut to leave the list at least 4 lines), the task list."""
    lines: list[tuple[Text, Hit | None]] = [(heading(title, info, width), None)]
    room = max(0, height - 1)
    keep = max(0, min(len(description), room - 4)) if tasks else min(len(description), room)
    lines.extend((line, None) for line in description[:keep])
    room -= keep
    if room >= 2:
        cursor = ui.level.cursor
        found = current_items(ui, view)
        index = selected_index(cursor, found)
        keys = {t.id: t for t in tasks}
        shown = [keys[item.key] for item in found if item.key in keys]
        info_list = f"{len(shown)}" + (f" · /{cursor.filter}" if cursor.filter else "")
        section = task_list_section(
            list_title,
            info_list,
            shown,
            view.now,
            max(1, width - 1),  # the focused list's gutter
            history=history,
            selected=index if index >= 0 else None,
            focused=True,
            height=room,
        )
        lines.extend(_hits(section, room, width))
    return lines


def _hits(section: Section, height: int, width: int) -> list[tuple[Text, Hit | None]]:
    """A drill-down's own list: a click on a row selects it."""
    return [
        (line, None if row is None else (None, row))
        for line, row in section.lines_and_rows(height, width)
    ]


def _service_screen(
    view: View, ui: UiState, width: int, height: int
) -> list[tuple[Text, Hit | None]]:
    name = ui.level.key
    tasks = service_tasks(view, name)
    s = next((s for s in view.services if s.name == name), None)
    info = f"{s.mode} · {s.running}/{s.desired} running" if s is not None else "gone"
    return _detail(
        view,
        ui,
        f"Service {name}",
        info,
        _service_lines(view, name, tasks, width),
        tasks,
        width,
        height,
        list_title="Tasks, with history",
        history=True,
    )


def _node_screen(view: View, ui: UiState, width: int, height: int) -> list[tuple[Text, Hit | None]]:
    node_id = ui.level.key
    n = next((n for n in view.nodes if n.id == node_id), None)
    name = n.name if n is not None else node_id[:12]
    info = ("DOWN" if n.down else n.status) + f" · {n.availability}" if n is not None else "gone"
    tasks = node_tasks(view, node_id)
    return _detail(
        view,
        ui,
        f"Node {name}",
        info,
        _node_lines(view, node_id, width),
        tasks,
        width,
        height,
        list_title="Tasks",
        history=False,
    )


def _task_screen(view: View, ui: UiState, width: int, height: int) -> list[Text]:
    task_id = ui.level.key
    t = next((t for t in view.history if t.id == task_id), None)
    if t is None:
        t = next((t for t in view.tasks if t.id == task_id), None)
    if t is None:
        gone = _field("task", Text(f"{task_id[:12]} is no longer known", style="bold red"), width)
        return [heading("Task", "gone", width), gone][:height]
    slot = [
        x
        for x in service_tasks(view, t.service)
        if x.slot == t.slot and (t.slot or x.node_id == t.node_id)
    ]
    lines = [heading(f"Task {task_name(t)}", t.state, width), *_task_lines(view, t, width)]
    if len(lines) + 3 <= height and slot:
        section = task_list_section(
            "This slot's history", f"{len(slot)}", slot, view.now, width, history=True
        )
        section.selected = next((i for i, x in enumerate(slot) if x.id == t.id), None)
        lines.extend(section.lines(height - len(lines), width))
    return lines[:height]


def _logs_screen(
    view: View, ui: UiState, logs: Sequence[LogLine], width: int, height: int
) -> list[tuple[Text, Hit | None]]:
    lv = ui.level
    what = f"task {lv.task[:10]} of {lv.key}" if lv.task else f"service {lv.key}"
    found = current_items(ui, view, logs)
    index = selected_index(lv.cursor, found, tail=True)
    following = not lv.cursor.selected
    by_number = {str(line.number): line for line in logs}
    selected = None if following else index
    shown = visible_range(len(found), selected, height, tail=True)
    rows = []
    for item in found[shown.start : shown.stop]:
        line = by_number[item.key]
        text = Text(f"{clean(line.task)}@{clean(line.node)} ", style="cyan")
        text.append("| ", style="dim")
        text.append(clean(line.line))
        rows.append(one_line([fit(text, max(1, width - 1))]))  # the gutter
    info = f"{len(found)} lines" + (" · following" if following else " · paused (G follows)")
    if lv.cursor.filter:
        info += f" · /{lv.cursor.filter}"
    section = Section(
        f"Logs of {what}",
        info,
        None,
        rows,
        min_rows=1,
        tail=True,
        empty="waiting for lines…",
        more=lambda n: f"… {n} earlier",
        selected=selected,
        focused=True,
        hidden_above=shown.start,
        hidden_below=len(found) - shown.stop,
    )
    return _hits(section, height, width)


def _help_screen(view: View, width: int, height: int) -> list[Text]:
    lines = [heading("Keys", "k9s's where they apply", width)]
    for keys, what in HELP:
        text = Text(f"{keys:<24}", style="bold")
        text.append(what)
        lines.append(one_line([fit(text, width)]))
    if view.on_worker:
        note = "this agent is a worker: [manager] actions are refused here"
        lines.append(one_line([fit(Text(note, style="yellow"), width)]))
    lines.append(one_line([fit(Text("Esc, ? or q close this help", style="dim"), width)]))
    return lines[:height]


def body_lines_and_hits(
    view: View, ui: UiState, logs: Sequence[LogLine], width: int, height: int
) -> list[tuple[Text, Hit | None]]:
    """The screen above the footer, each line with what a click on it selects."""
    lv = ui.level
    if ui.mode is Mode.HELP:
        return [(line, None) for line in _help_screen(view, width, height)]
    if lv.kind is Kind.OVERVIEW:
        found = current_items(ui, view)
        index = selected_index(lv.cursor, found, tail=tail_list(lv))
        filters = tuple(c.filter for c in lv.cursors)
        focus = Focus(lv.pane, found[index].key if index >= 0 else "", filters)
        return overview_lines_and_hits(view, width, height, focus)
    lines: list[tuple[Text, Hit | None]] = [(status_line(view, width, hint="? help"), None)]
    if view.connection is not Connection.OK and height >= 4:
        lines.append((banner(view, width), None))
    room = max(0, height - len(lines))
    if lv.kind is Kind.SERVICE:
        lines.extend(_service_screen(view, ui, width, room))
    elif lv.kind is Kind.NODE:
        lines.extend(_node_screen(view, ui, width, room))
    elif lv.kind is Kind.TASK:
        lines.extend((line, None) for line in _task_screen(view, ui, width, room))
    else:
        lines.extend(_logs_screen(view, ui, logs, width, room))
    return lines[:height]


def body_lines(
    view: View, ui: UiState, logs: Sequence[LogLine], width: int, height: int
) -> list[Text]:
    """The screen above the footer."""
    return [line for line, _ in body_lines_and_hits(view, ui, logs, width, height)]


def hit_at(
    view: View, ui: UiState, logs: Sequence[LogLine], width: int, height: int, y: int
) -> Hit | None:
    """What a click on line `y` of a `width` x `height` screen selects (None: nothing)."""
    if y < 0 or y >= height - 1:  # the footer's line selects nothing
        return None
    lines = body_lines_and_hits(view, ui, logs, max(1, width), max(1, height - 1))
    return lines[y][1] if y < len(lines) else None


def render_screen(
    view: View, ui: UiState, logs: Sequence[LogLine], width: int, height: int
) -> Group:
    """The whole screen: at most `height` lines of at most `width` cells, the footer last."""
    width = max(1, width)
    height = max(1, height)
    if height == 1:
        return Group(footer(view, ui, width))
    lines = body_lines(view, ui, logs, width, height - 1)
    return Group(*lines, footer(view, ui, width))
