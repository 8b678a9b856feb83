"""The dashboard's keys: a pure state machine, `handle_key(ui, key, view, logs) -> (ui, effect)`.

`UiState` is everything the screen needs besides the cluster's `View`: a stack of screens
(overview, then drill-downs), the selection and filter of each list, the mode (normal, typing a
filter, typing a number, waiting for `y`, help), the action waiting for confirmation and the last
action's result. The driver feeds it keys and carries out the `Effect` it returns (quit, call the
control API, follow or stop logs); the driver reports an action's result with `action_done`.

Keys are k9s's where they apply (`?`, `/`, Enter, Esc, `l`, `s`, `r`, `ctrl+d`, `y`), named as
Textual names them ("up", "enter", "escape", "ctrl+d"); a printable key is its character.

Decisions:

- A selection is an item's key (see `swarmlet.dashboard.lists`), kept with its last index: when
  the item goes (a task replaced, a filter that hides it), the selection moves to what is now at
  that index, so it never jumps to the top.
- Actions that change the cluster always ask: `s` asks for the number, then every action shows
  what it will do and waits for `y` (Esc or `n` cancel; any other key is ignored). On a worker
  the action is not offered: the footer says it needs a manager.
- Esc clears the filter first, then goes back one screen; `q` quits from any screen (README's
  contract), `ctrl+c` from any mode.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Sequence
from dataclasses import dataclass, field

from swarmlet.dashboard.lists import Hit, Item, Kind, LogLine, Pane, items
from swarmlet.dashboard.view import View

PAGE = 10
MAX_REPLICAS_DIGITS = 5


class Mode(enum.StrEnum):
    NORMAL = "normal"
    FILTER = "filter"  # typing into the current list's filter
    PROMPT = "prompt"  # typing a number (scale)
    CONFIRM = "confirm"  # waiting for `y`
    HELP = "help"


class ActionKind(enum.StrEnum):
    SCALE = "scale"
    RESTART = "restart"  # service update --force: a rolling restart
    ROLLBACK = "rollback"
    DRAIN = "drain"
    ACTIVATE = "activate"
    REMOVE = "remove"


@dataclass(frozen=True, slots=True)
class Action:
    kind: ActionKind
    target: str  # a service's name, or a node's id
    label: str  # what the user reads: the service's or node's name
    replicas: int | None = None  # scale only

    def question(self) -> str:
        return {
            ActionKind.SCALE: f"Scale {self.label} to {self.replicas} replicas?",
            ActionKind.RESTART: f"Restart every task of {self.label} (update --force)?",
            ActionKind.ROLLBACK: f"Roll {self.label} back to its previous spec?",
            ActionKind.DRAIN: f"Drain node {self.label} (its tasks move elsewhere)?",
            ActionKind.ACTIVATE: f"Activate node {self.label}?",
            ActionKind.REMOVE: f"Remove service {self.label} and all its tasks?",
        }[self.kind]

    def doing(self) -> str:
        return {
            ActionKind.SCALE: f"scaling {self.label} to {self.replicas}",
            ActionKind.RESTART: f"restarting {self.label}",
            ActionKind.ROLLBACK: f"rolling {self.label} back",
            ActionKind.DRAIN: f"draining {self.label}",
            ActionKind.ACTIVATE: f"activating {self.label}",
            ActionKind.REMOVE: f"removing {self.label}",
        }[self.kind]


@dataclass(frozen=True, slots=True)
class Cursor:
    selected: str = ""  # the selected item's key; "" is the first item
    index: int = 0  # where it was last seen
    filter: str = ""


@dataclass(frozen=True, slots=True)
class Level:
    """One screen of the stack: the overview, or what Enter (or `l`) opened."""

    kind: Kind
    key: str = ""  # the service name, node id or task id the screen is about
    pane: Pane = Pane.SERVICES  # the overview's focused pane
    cursors: tuple[Cursor, ...] = (Cursor(), Cursor(), Cursor(), Cursor())
    task: str = ""  # LOGS of one task: its id

    @property
    def slot(self) -> int:
        return int(self.pane) if self.kind is Kind.OVERVIEW else 0

    @property
    def cursor(self) -> Cursor:
        return self.cursors[self.slot]

    def with_cursor(self, cursor: Cursor) -> Level:
        cursors = list(self.cursors)
        cursors[self.slot] = cursor
        return dataclasses.replace(self, cursors=tuple(cursors))


class NoticeKind(enum.StrEnum):
    INFO = "info"
    WORKING = "working"
    OK = "ok"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class Notice:
    kind: NoticeKind
    text: str


@dataclass(frozen=True, slots=True)
class UiState:
    levels: tuple[Level, ...] = (Level(Kind.OVERVIEW),)
    mode: Mode = Mode.NORMAL
    input: str = ""  # PROMPT's digits
    pending: Action | None = None  # PROMPT's and CONFIRM's action
    notice: Notice | None = None
    running: tuple[Action, ...] = field(default=())  # actions sent, not yet answered

    @property
    def level(self) -> Level:
        return self.levels[-1]

    def with_level(self, level: Level) -> UiState:
        return dataclasses.replace(self, levels=(*self.levels[:-1], level))


# ---------------------------------------------------------------------------- effects


@dataclass(frozen=True, slots=True)
class Quit:
    pass


@dataclass(frozen=True, slots=True)
class Perform:
    action: Action


@dataclass(frozen=True, slots=True)
class FollowLogs:
    service: str
    task: str = ""  # a task's id: only its lines


@dataclass(frozen=True, slots=True)
class StopLogs:
    pass


Effect = Quit | Perform | FollowLogs | StopLogs | None


# ---------------------------------------------------------------------------- the selection


def current_items(ui: UiState, view: View, logs: Sequence[LogLine] = ()) -> list[Item]:
    lv = ui.level
    return items(view, lv.kind, lv.key, lv.pane, lv.cursor.filter, logs)


def tail_list(level: Level) -> bool:
    """A feed, newest last: with nothing selected, its newest item is (logs: and follows)."""
    return level.kind is Kind.LOGS or (level.kind is Kind.OVERVIEW and level.pane is Pane.EVENTS)


def selected_index(cursor: Cursor, found: Sequence[Item], tail: bool = False) -> int:
    """Where the selection is in `found`: its item, else the nearest to where it was; with
    nothing selected, the first item (the last of a feed). -1 if the list is empty."""
    if not found:
        return -1
    if not cursor.selected:
        return len(found) - 1 if tail else 0
    for i, item in enumerate(found):
        if item.key == cursor.selected:
            return i
    return max(0, min(cursor.index, len(found) - 1))


def selected_key(ui: UiState, view: View, logs: Sequence[LogLine] = ()) -> str:
    found = current_items(ui, view, logs)
    i = selected_index(ui.level.cursor, found, tail_list(ui.level))
    return found[i].key if i >= 0 else ""


def _move(ui: UiState, view: View, logs: Sequence[LogLine], delta: int | None) -> UiState:
    """Move the selection by `delta` rows; None goes to the end (in logs: follows again)."""
    found = current_items(ui, view, logs)
    if not found:
        return ui
    if delta is None and ui.level.kind is Kind.LOGS:
        cursor = dataclasses.replace(ui.level.cursor, selected="", index=0)
        return ui.with_level(ui.level.with_cursor(cursor))
    i = selected_index(ui.level.cursor, found, tail_list(ui.level))
    target = len(found) - 1 if delta is None else max(0, min(len(found) - 1, i + delta))
    cursor = dataclasses.replace(ui.level.cursor, selected=found[target].key, index=target)
    return ui.with_level(ui.level.with_cursor(cursor))


def _set_filter(ui: UiState, text: str) -> UiState:
    cursor = Cursor(selected="", index=0, filter=text)
    return ui.with_level(ui.level.with_cursor(cursor))


# ---------------------------------------------------------------------------- what keys act on


def _selected_task(ui: UiState, view: View) -> str:
    """The task the selection or the screen is about, or ""."""
    lv = ui.level
    if lv.kind is Kind.TASK:
        return lv.key
    if lv.kind in (Kind.SERVICE, Kind.NODE) or (lv.kind is Kind.OVERVIEW and lv.pane is Pane.TASKS):
        return selected_key(ui, view)
    return ""


def _task_service(view: View, task_id: str) -> str:
    return next((t.service for t in view.history if t.id == task_id), "") or next(
        (t.service for t in view.tasks if t.id == task_id), ""
    )


def target_service(ui: UiState, view: View) -> str:
    """The service `s`, `r`, `u`, ctrl+d and `l` act on, or "" if the screen shows none."""
    lv = ui.level
    if lv.kind is Kind.OVERVIEW:
        if lv.pane is Pane.SERVICES:
            return selected_key(ui, view)
        if lv.pane is Pane.EVENTS:
            return _event_service(ui, view)
    if lv.kind is Kind.SERVICE or lv.kind is Kind.LOGS:
        return lv.key
    task = _selected_task(ui, view)
    return _task_service(view, task) if task else ""


def _event_service(ui: UiState, view: View) -> str:
    seq = selected_key(ui, view)
    event = next((e for e in view.events if str(e.seq) == seq), None)
    if event is None:
        return ""
    names = {s.name for s in view.services}
    subject = event.subject
    for candidate in (subject, subject.rpartition(".")[0]):
        if candidate in names:
            return candidate
    return ""


def target_node(ui: UiState, view: View) -> tuple[str, str]:
    """The node (id, name) `d` and `a` act on, or ("", "")."""
    lv = ui.level
    node_id = ""
    if lv.kind is Kind.NODE:
        node_id = lv.key
    elif lv.kind is Kind.OVERVIEW and lv.pane is Pane.NODES:
        node_id = selected_key(ui, view)
    elif lv.kind is Kind.OVERVIEW and lv.pane is Pane.EVENTS:
        seq = selected_key(ui, view)
        event = next((e for e in view.events if str(e.seq) == seq), None)
        if event is not None and event.type == "node":
            node_id = next((n.id for n in view.nodes if n.name == event.subject), "")
    if not node_id:
        return "", ""
    name = next((n.name for n in view.nodes if n.id == node_id), node_id[:12])
    return node_id, name


def _drill(ui: UiState, view: View) -> UiState:
    """Enter: open what the selection is about."""
    lv = ui.level
    key = selected_key(ui, view)
    if not key:
        return ui
    level: Level | None = None
    if lv.kind is Kind.OVERVIEW and lv.pane is Pane.NODES:
        level = Level(Kind.NODE, key)
    elif lv.kind is Kind.OVERVIEW and lv.pane is Pane.SERVICES:
        level = Level(Kind.SERVICE, key)
    elif lv.kind is Kind.OVERVIEW and lv.pane is Pane.EVENTS:
        service = _event_service(ui, view)
        node_id, _ = target_node(ui, view)
        if service:
            level = Level(Kind.SERVICE, service)
        elif node_id:
            level = Level(Kind.NODE, node_id)
    elif lv.kind in (Kind.SERVICE, Kind.NODE) or lv.pane is Pane.TASKS:
        level = Level(Kind.TASK, key)
    if level is None:
        return ui
    return dataclasses.replace(ui, levels=(*ui.levels, level), notice=None)


def _needs_manager(ui: UiState, view: View, what: str) -> UiState | None:
    if not view.on_worker:
        return None
    me = view.self_node
    name = me.name if me is not None else "this node"
    text = f"{what} needs a manager: {name} is a worker (run the dashboard on a manager)"
    return dataclasses.replace(ui, notice=Notice(NoticeKind.ERROR, text))


def _info(ui: UiState, text: str) -> UiState:
    return dataclasses.replace(ui, notice=Notice(NoticeKind.INFO, text))


def _ask(ui: UiState, view: View, kind: ActionKind) -> UiState:
    """`s`, `r`, `u`, `d`, `a`, ctrl+d: the action on what is selected, asked first."""
    if kind in (ActionKind.DRAIN, ActionKind.ACTIVATE):
        node_id, name = target_node(ui, view)
        if not node_id:
            return _info(ui, f"{kind.value}: select a node first")
        action = Action(kind, node_id, name)
    else:
        service = target_service(ui, view)
        if not service:
            return _info(ui, f"{kind.value}: select a service first")
        row = next((s for s in view.services if s.name == service), None)
        if kind is ActionKind.SCALE and row is not None and row.mode == "global":
            return _info(ui, f"{service} is global (one task per node): it has no replica count")
        action = Action(kind, service, service)
    refused = _needs_manager(ui, view, kind.value)
    if refused is not None:
        return refused
    mode = Mode.PROMPT if kind is ActionKind.SCALE else Mode.CONFIRM
    return dataclasses.replace(ui, mode=mode, input="", pending=action, notice=None)


def _logs(ui: UiState, view: View) -> tuple[UiState, Effect]:
    task = _selected_task(ui, view)
    service = target_service(ui, view)
    if ui.level.kind is Kind.OVERVIEW and ui.level.pane is Pane.EVENTS:
        task = ""
    if not service:
        return _info(ui, "logs: select a service or a task"), None
    if ui.level.kind is Kind.LOGS:
        return ui, None
    level = Level(Kind.LOGS, service, task=task)
    ui = dataclasses.replace(ui, levels=(*ui.levels, level), notice=None)
    return ui, FollowLogs(service, task)


# ---------------------------------------------------------------------------- keys per mode

_ACTION_KEYS = {
    "s": ActionKind.SCALE,
    "r": ActionKind.RESTART,
    "u": ActionKind.ROLLBACK,
    "d": ActionKind.DRAIN,
    "a": ActionKind.ACTIVATE,
    "ctrl+d": ActionKind.REMOVE,
}
_MOVES: dict[str, int | None] = {
    "up": -1,
    "k": -1,
    "down": 1,
    "j": 1,
    "pageup": -PAGE,
    "pagedown": PAGE,
    "home": -(10**9),
    "g": -(10**9),
    "end": None,
    "G": None,
}
_PANE_KEYS = {"1": Pane.NODES, "2": Pane.SERVICES, "3": Pane.TASKS, "4": Pane.EVENTS}


def _normal(ui: UiState, key: str, view: View, logs: Sequence[LogLine]) -> tuple[UiState, Effect]:
    lv = ui.level
    if key == "q":
        return ui, Quit()
    if key in _MOVES:
        return _move(ui, view, logs, _MOVES[key]), None
    if lv.kind is Kind.OVERVIEW and key in ("tab", "right", "shift+tab", "left", *_PANE_KEYS):
        if key in _PANE_KEYS:
            pane = _PANE_KEYS[key]
        else:
            step = 1 if key in ("tab", "right") else -1
            pane = Pane((lv.pane + step) % len(Pane))
        return ui.with_level(dataclasses.replace(lv, pane=pane)), None
    if key == "enter":
        return _drill(ui, view), None
    if key == "escape":
        if lv.cursor.filter:
            return _set_filter(ui, ""), None
        if len(ui.levels) > 1:
            back = dataclasses.replace(ui, levels=ui.levels[:-1], notice=None)
            return back, StopLogs() if lv.kind is Kind.LOGS else None
        return dataclasses.replace(ui, notice=None), None
    if key == "/":
        return dataclasses.replace(ui, mode=Mode.FILTER), None
    if key == "?":
        return dataclasses.replace(ui, mode=Mode.HELP), None
    if key == "l":
        return _logs(ui, view)
    if key in _ACTION_KEYS:
        return _ask(ui, view, _ACTION_KEYS[key]), None
    return ui, None


def _filter(ui: UiState, key: str) -> UiState:
    text = ui.level.cursor.filter
    if key == "enter":
        return dataclasses.replace(ui, mode=Mode.NORMAL)
    if key == "escape":
        return dataclasses.replace(_set_filter(ui, ""), mode=Mode.NORMAL)
    if key == "backspace":
        return _set_filter(ui, text[:-1])
    if key == "space":
        key = " "
    if len(key) == 1 and key.isprintable():
        return _set_filter(ui, text + key)
    return ui


def _prompt(ui: UiState, key: str) -> UiState:
    if key == "escape":
        return dataclasses.replace(ui, mode=Mode.NORMAL, input="", pending=None)
    if key == "backspace":
        return dataclasses.replace(ui, input=ui.input[:-1])
    if key == "enter":
        if not ui.input or ui.pending is None:
            return ui
        action = dataclasses.replace(ui.pending, replicas=int(ui.input))
        return dataclasses.replace(ui, mode=Mode.CONFIRM, pending=action, input="")
    if len(key) == 1 and key.isdigit() and len(ui.input) < MAX_REPLICAS_DIGITS:
        return dataclasses.replace(ui, input=ui.input + key)
    return ui


def _confirm(ui: UiState, key: str) -> tuple[UiState, Effect]:
    action = ui.pending
    if key == "y" and action is not None:
        notice = Notice(NoticeKind.WORKING, action.doing() + "…")
        done = dataclasses.replace(
            ui,
            mode=Mode.NORMAL,
            pending=None,
            notice=notice,
            running=(*ui.running, action),
        )
        return done, Perform(action)
    if key in ("escape", "n"):
        return dataclasses.replace(
            ui, mode=Mode.NORMAL, pending=None, notice=Notice(NoticeKind.INFO, "cancelled")
        ), None
    return ui, None


def handle_key(
    ui: UiState, key: str, view: View, logs: Sequence[LogLine] = ()
) -> tuple[UiState, Effect]:
    """The state after `key`, and what the driver must do (None: only redraw)."""
    if key == "ctrl+c":
        return ui, Quit()
    if ui.mode is Mode.HELP:
        if key in ("escape", "?", "q", "enter"):
            return dataclasses.replace(ui, mode=Mode.NORMAL), None
        return ui, None
    if ui.mode is Mode.FILTER:
        return _filter(ui, key), None
    if ui.mode is Mode.PROMPT:
        return _prompt(ui, key), None
    if ui.mode is Mode.CONFIRM:
        return _confirm(ui, key)
    return _normal(ui, key, view, logs)


def click(
    ui: UiState, hit: Hit | None, view: View, logs: Sequence[LogLine] = ()
) -> tuple[UiState, Effect]:
    """A mouse click on a line that shows `hit` (see `screens.hit_at`): it focuses the pane and
    selects the row; a click on the row already selected opens it, as Enter does. Clicks count
    only in the normal mode (a question or a filter being typed waits for its keys)."""
    if hit is None or ui.mode is not Mode.NORMAL:
        return ui, None
    pane, row = hit
    lv = ui.level
    if pane is not None and lv.kind is Kind.OVERVIEW and pane is not lv.pane:
        lv = dataclasses.replace(lv, pane=pane)
        ui = ui.with_level(lv)
        if row < 0:
            return ui, None
    elif pane is not None and lv.kind is not Kind.OVERVIEW:
        return ui, None  # a stale hit of another screen
    found = current_items(ui, view, logs)
    if not 0 <= row < len(found):
        return ui, None
    if found[row].key == selected_key(ui, view, logs) and lv.cursor.selected:
        return _drill(ui, view), None
    cursor = dataclasses.replace(lv.cursor, selected=found[row].key, index=row)
    return ui.with_level(lv.with_cursor(cursor)), None


def action_done(ui: UiState, action: Action, error: str, answer: str = "") -> UiState:
    """The control API answered `action` (`answer`, in a few words) or refused it (`error`):
    the result, shown where the question was."""
    running = list(ui.running)
    if action in running:
        running.remove(action)
    if error:
        notice = Notice(NoticeKind.ERROR, f"{action.doing()} failed: {error}")
    else:
        notice = Notice(NoticeKind.OK, f"✓ {answer or action.doing() + ': done'}")
    return dataclasses.replace(ui, notice=notice, running=tuple(running))
