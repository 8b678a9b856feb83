"""The dashboard's keys as tables: keys in, UiState and effect out (pure, on the fixed cluster)."""

from __future__ import annotations

import dataclasses
import itertools

import pytest

from swarmlet.dashboard.keys import (
    Action,
    ActionKind,
    Effect,
    FollowLogs,
    Mode,
    NoticeKind,
    Perform,
    Quit,
    StopLogs,
    UiState,
    action_done,
    handle_key,
    selected_key,
    target_service,
)
from swarmlet.dashboard.lists import Kind, LogLine, Pane
from swarmlet.dashboard.view import View, build_view

from .fixtures import EVENTS, NODES, SERVICES, STATUS, TASKS, fixed_view

VIEW = fixed_view()
NODE = {n.name: n.id for n in VIEW.nodes}


def press(
    keys: str | list[str], view: View = VIEW, ui: UiState | None = None
) -> tuple[UiState, list[Effect]]:
    """Keys given as a list, or a string of single-character keys."""
    ui = ui or UiState()
    effects: list[Effect] = []
    for key in keys:
        ui, effect = handle_key(ui, key, view)
        if effect is not None:
            effects.append(effect)
    return ui, effects


def worker_view() -> View:
    """The same cluster seen from n3, a worker."""
    nodes = {
        "stale": False,
        "nodes": [dict(n, self=n["hostname"] == "n3") for n in NODES["nodes"]],
    }
    return build_view(STATUS, nodes, SERVICES, TASKS, EVENTS, None, 0.0)


# ---------------------------------------------------------------------------- navigation

# keys -> (screen kind, its key, focused pane, selected item's key)
NAVIGATION = [
    ([], (Kind.OVERVIEW, "", Pane.SERVICES, "api")),
    (["down"], (Kind.OVERVIEW, "", Pane.SERVICES, "cache")),
    (["j", "j", "j", "j"], (Kind.OVERVIEW, "", Pane.SERVICES, "web")),  # stops at the end
    (["G", "k"], (Kind.OVERVIEW, "", Pane.SERVICES, "cache")),
    (["end", "home"], (Kind.OVERVIEW, "", Pane.SERVICES, "api")),
    (["shift+tab"], (Kind.OVERVIEW, "", Pane.NODES, NODE["n1"])),
    (["tab", "tab", "tab"], (Kind.OVERVIEW, "", Pane.NODES, NODE["n1"])),  # wraps around
    (["1", "down", "down"], (Kind.OVERVIEW, "", Pane.NODES, NODE["n3"])),
    (["4"], (Kind.OVERVIEW, "", Pane.EVENTS, "9")),  # a feed: the newest is selected
    (["G", "enter"], (Kind.SERVICE, "web", Pane.SERVICES, "t-web-1-1-running")),
    (["1", "down", "enter"], (Kind.NODE, NODE["n2"], Pane.SERVICES, "t-api-1-2-starting")),
    (
        ["G", "enter", "down", "down", "enter"],
        (Kind.TASK, "t-web-3-None-pending", Pane.SERVICES, ""),
    ),
    (["G", "enter", "escape"], (Kind.OVERVIEW, "", Pane.SERVICES, "web")),  # back, same selection
    (["escape", "escape"], (Kind.OVERVIEW, "", Pane.SERVICES, "api")),  # nothing to go back to
    (["4", "k", "enter"], (Kind.SERVICE, "web", Pane.SERVICES, "t-web-1-1-running")),  # an event's
    (["4", "k", "k", "k", "enter"], (Kind.NODE, NODE["n3"], Pane.SERVICES, "t-cache-0-3-orphaned")),
]


@pytest.mark.parametrize(
    ("keys", "expected"), NAVIGATION, ids=[" ".join(k) or "-" for k, _ in NAVIGATION]
)
def test_navigation(keys: list[str], expected: tuple[Kind, str, Pane, str]) -> None:
    ui, effects = press(keys)
    lv = ui.level
    assert (lv.kind, lv.key, lv.pane, selected_key(ui, VIEW)) == expected
    assert effects == []


def test_selection_follows_its_item_when_the_list_changes() -> None:
    ui, _ = press(["down"])  # cache
    fewer = dataclasses.replace(VIEW, services=tuple(s for s in VIEW.services if s.name != "api"))
    assert selected_key(ui, fewer) == "cache"
    gone = dataclasses.replace(VIEW, services=tuple(s for s in VIEW.services if s.name != "cache"))
    assert selected_key(ui, gone) == "web"  # what is now where it was


def test_each_pane_keeps_its_own_selection() -> None:
    ui, _ = press(["G", "tab", "G", "shift+tab"])
    assert selected_key(ui, VIEW) == "web"
    ui, _ = press(["tab"], ui=ui)
    assert selected_key(ui, VIEW) == VIEW.tasks[-1].id


# ---------------------------------------------------------------------------- filter

FILTERS = [
    (["/", "w", "e", "b", "enter"], "web", Mode.NORMAL, ["web"]),
    (["/", "c", "a", "c"], "cac", Mode.FILTER, ["cache"]),
    (["/", "x", "y", "z", "enter"], "xyz", Mode.NORMAL, []),
    (["/", "w", "e", "backspace", "backspace", "a", "p"], "ap", Mode.FILTER, ["api"]),
    (["/", "w", "escape"], "", Mode.NORMAL, ["api", "cache", "web"]),  # Esc clears it
    (["/", "w", "enter", "escape"], "", Mode.NORMAL, ["api", "cache", "web"]),
    # Several words, any order, any case: the tasks pane, web's pending task.
    (
        ["3", "/", "P", "E", "N", "D", "space", "w", "e", "b"],
        "PEND web",
        Mode.FILTER,
        ["t-web-3-None-pending"],
    ),
    # Typed keys are text in the filter: q does not quit, j does not move.
    (["/", "q", "j"], "qj", Mode.FILTER, []),
]


@pytest.mark.parametrize(
    ("keys", "text", "mode", "shown"), FILTERS, ids=[" ".join(k) for k, *_ in FILTERS]
)
def test_filter(keys: list[str], text: str, mode: Mode, shown: list[str]) -> None:
    from swarmlet.dashboard.keys import current_items

    ui, effects = press(keys)
    assert (ui.level.cursor.filter, ui.mode) == (text, mode)
    assert [i.key for i in current_items(ui, VIEW)] == shown
    assert effects == []


def test_filter_applies_in_a_drill_down() -> None:
    from swarmlet.dashboard.keys import current_items

    ui, _ = press(["G", "enter", "/", "n", "3"])
    assert [i.key for i in current_items(ui, VIEW)] == ["t-web-3-3-orphaned"]


# ---------------------------------------------------------------------------- actions

ACTIONS = [
    # keys, the question asked (None: refused), then after `y`: the effect
    (
        ["G", "s", "5", "enter"],
        "Scale web to 5 replicas?",
        Action(ActionKind.SCALE, "web", "web", 5),
    ),
    (
        ["G", "s", "1", "2", "backspace", "0", "enter"],
        "Scale web to 10 replicas?",
        Action(ActionKind.SCALE, "web", "web", 10),
    ),
    (
        ["r"],
        "Restart every task of api (update --force)?",
        Action(ActionKind.RESTART, "api", "api"),
    ),
    (
        ["G", "enter", "r"],
        "Restart every task of web (update --force)?",
        Action(ActionKind.RESTART, "web", "web"),
    ),
    (["u"], "Roll api back to its previous spec?", Action(ActionKind.ROLLBACK, "api", "api")),
    (["ctrl+d"], "Remove service api and all its tasks?", Action(ActionKind.REMOVE, "api", "api")),
    (
        ["1", "G", "d"],
        "Drain node n3 (its tasks move elsewhere)?",
        Action(ActionKind.DRAIN, NODE["n3"], "n3"),
    ),
    (["1", "j", "enter", "a"], "Activate node n2?", Action(ActionKind.ACTIVATE, NODE["n2"], "n2")),
    # A task's service: scale from the tasks pane or a task's screen.
    (
        ["3", "G", "enter", "s", "2", "enter"],
        "Scale web to 2 replicas?",
        Action(ActionKind.SCALE, "web", "web", 2),
    ),
]


@pytest.mark.parametrize(
    ("keys", "question", "action"), ACTIONS, ids=[" ".join(k) for k, *_ in ACTIONS]
)
def test_action_asks_then_performs_on_y(keys: list[str], question: str, action: Action) -> None:
    ui, effects = press(keys)
    assert ui.mode is Mode.CONFIRM and effects == []
    assert ui.pending is not None and ui.pending.question() == question
    ui, effects = press(["y"], ui=ui)
    assert effects == [Perform(action)]
    assert ui.mode is Mode.NORMAL and ui.running == (action,)
    assert ui.notice is not None and ui.notice.kind is NoticeKind.WORKING


@pytest.mark.parametrize("cancel", ["escape", "n"])
def test_action_cancelled_does_nothing(cancel: str) -> None:
    ui, effects = press(["ctrl+d", "x", "enter", cancel])  # other keys are ignored
    assert effects == [] and ui.mode is Mode.NORMAL and ui.pending is None
    assert ui.notice is not None and ui.notice.text == "cancelled"


def test_scale_prompt_takes_digits_only_and_needs_one() -> None:
    ui, _ = press(["s", "a", "-", "enter"])
    assert ui.mode is Mode.PROMPT and ui.input == ""
    ui, _ = press(["escape"], ui=ui)
    assert ui.mode is Mode.NORMAL and ui.pending is None


REFUSALS = [
    (["1", "s"], "scale: select a service first"),
    (["d"], "drain: select a node first"),
    (["down", "s"], "cache is global (one task per node): it has no replica count"),
    (["1", "l"], "logs: select a service or a task"),
]


@pytest.mark.parametrize(("keys", "notice"), REFUSALS, ids=[" ".join(k) for k, _ in REFUSALS])
def test_action_without_a_target_says_why(keys: list[str], notice: str) -> None:
    ui, effects = press(keys)
    assert effects == [] and ui.mode is Mode.NORMAL
    assert ui.notice is not None and ui.notice.text == notice


@pytest.mark.parametrize("keys", [["G", "s"], ["r"], ["u"], ["ctrl+d"], ["1", "d"], ["1", "a"]])
def test_on_a_worker_actions_say_they_need_a_manager(keys: list[str]) -> None:
    ui, effects = press(keys, view=worker_view())
    assert effects == [] and ui.mode is Mode.NORMAL and ui.pending is None
    assert ui.notice is not None and ui.notice.kind is NoticeKind.ERROR
    assert "needs a manager: n3 is a worker" in ui.notice.text


def test_action_result_replaces_the_working_notice() -> None:
    action = Action(ActionKind.SCALE, "web", "web", 5)
    ui, _ = press(["G", "s", "5", "enter", "y"])
    ok = action_done(ui, action, "")
    assert ok.notice is not None and (ok.notice.kind, ok.notice.text) == (
        NoticeKind.OK,
        "✓ scaling web to 5: done",
    )
    assert ok.running == ()
    said = action_done(ui, action, "", "web scaled to 5")
    assert said.notice is not None and said.notice.text == "✓ web scaled to 5"
    failed = action_done(ui, action, "no leader")
    assert failed.notice is not None and failed.notice.kind is NoticeKind.ERROR
    assert failed.notice.text == "scaling web to 5 failed: no leader"


# ---------------------------------------------------------------------------- logs, help, quit

LOGS = [
    (["G", "l"], FollowLogs("web", "")),
    (["G", "enter", "l"], FollowLogs("web", "t-web-1-1-running")),  # the selected task's
    (["3", "l"], FollowLogs("api", VIEW.tasks[0].id)),
    (["3", "enter", "l"], FollowLogs("api", VIEW.tasks[0].id)),
    (["4", "l"], FollowLogs("web", "")),  # the newest event is web.3's
]


@pytest.mark.parametrize(("keys", "effect"), LOGS, ids=[" ".join(k) for k, _ in LOGS])
def test_l_follows_logs_of_the_selected_service_or_task(
    keys: list[str], effect: FollowLogs
) -> None:
    ui, effects = press(keys)
    assert effects == [effect]
    assert (ui.level.kind, ui.level.key, ui.level.task) == (Kind.LOGS, effect.service, effect.task)
    back, effects = press(["escape"], ui=ui)
    assert effects == [StopLogs()] and back.level.kind is not Kind.LOGS


def test_logs_scroll_back_and_follow_again() -> None:
    logs = [LogLine(n, "web.1.abc", "n1", f"line {n}") for n in range(1, 30)]
    ui, _ = press(["G", "l"])
    assert selected_key(ui, VIEW, logs) == "29" and not ui.level.cursor.selected  # following
    ui, _ = handle_key(ui, "up", VIEW, logs)
    assert selected_key(ui, VIEW, logs) == "28" and ui.level.cursor.selected  # paused
    ui, _ = handle_key(ui, "G", VIEW, logs)
    assert not ui.level.cursor.selected


def test_help_opens_and_closes_and_q_there_does_not_quit() -> None:
    ui, effects = press(["?"])
    assert ui.mode is Mode.HELP
    ui, effects = press(["down", "q"], ui=ui)
    assert ui.mode is Mode.NORMAL and effects == []


@pytest.mark.parametrize(
    "keys",
    [["q"], ["G", "enter", "q"], ["ctrl+c"], ["/", "ctrl+c"], ["s", "ctrl+c"], ["?", "ctrl+c"]],
)
def test_quit(keys: list[str]) -> None:
    _, effects = press(keys)
    assert effects == [Quit()]


def test_target_service_of_a_task_screen_is_the_tasks_service() -> None:
    ui, _ = press(["3", "enter"])
    assert target_service(ui, VIEW) == "api"


def test_any_key_sequence_on_any_screen_never_raises() -> None:
    keys = ["up", "down", "enter", "escape", "tab", "/", "s", "5", "y", "l", "?", "ctrl+d", "a"]
    empty = build_view(None, None, None, None, [], None, 0.0)
    for view in (VIEW, empty, worker_view()):
        for sequence in itertools.product(keys, repeat=3):
            press(list(sequence), view=view)


# ---------------------------------------------------------------------------- the mouse


def _y_of(ui: UiState, text: str, view: View = VIEW) -> int:
    """The line of the 80x24 screen that shows `text`."""
    from swarmlet.dashboard.screens import render_screen

    from .screen import screen_text

    lines = screen_text(render_screen(view, ui, (), 80, 24), 80, 24).splitlines()
    return next(y for y, line in enumerate(lines) if text in line)


def _click_on(ui: UiState, text: str) -> UiState:
    from swarmlet.dashboard.keys import click
    from swarmlet.dashboard.screens import hit_at

    hit = hit_at(VIEW, ui, (), 80, 24, _y_of(ui, text))
    ui, effect = click(ui, hit, VIEW)
    assert effect is None
    return ui


@pytest.mark.parametrize(
    ("text", "hit"),
    [
        ("127.0.0.2:7946", (Pane.NODES, 1)),
        ("swarmlet/web:1", (Pane.SERVICES, 2)),
        ("cache                ●", (Pane.TASKS, -1)),  # the grid: focuses the pane only
        ("n3: no ack from n3", (Pane.EVENTS, 5)),
        ("── Nodes", None),  # a heading
        ("… 4 earlier", None),  # a note
        ("swarmlet n1  cluster", None),  # the status line
        ("Enter open  / filter", None),  # the footer
    ],
)
def test_hit_at_says_what_a_line_shows(text: str, hit: tuple[Pane | None, int] | None) -> None:
    from swarmlet.dashboard.screens import hit_at

    assert hit_at(VIEW, UiState(), (), 80, 24, _y_of(UiState(), text)) == hit


def test_click_selects_and_a_second_click_opens() -> None:
    ui = _click_on(UiState(), "127.0.0.3:7946")
    assert (ui.level.kind, ui.level.pane, selected_key(ui, VIEW)) == (
        Kind.OVERVIEW,
        Pane.NODES,
        NODE["n3"],
    )
    ui = _click_on(ui, "127.0.0.3:7946")
    assert (ui.level.kind, ui.level.key) == (Kind.NODE, NODE["n3"])


def test_click_in_a_drill_down_selects_its_task_then_opens_it() -> None:
    ui, _ = press(["G", "enter"])
    ui = _click_on(ui, "orphaned 50s")
    assert selected_key(ui, VIEW) == "t-web-3-3-orphaned"
    ui = _click_on(ui, "orphaned 50s")
    assert (ui.level.kind, ui.level.key) == (Kind.TASK, "t-web-3-3-orphaned")


def test_click_on_the_grid_focuses_the_tasks_pane() -> None:
    ui = _click_on(UiState(), "cache                ●")
    assert (ui.level.pane, ui.level.kind) == (Pane.TASKS, Kind.OVERVIEW)


def test_clicks_wait_while_a_question_is_asked() -> None:
    from swarmlet.dashboard.keys import click

    ui, _ = press(["G", "s"])
    assert click(ui, (Pane.NODES, 0), VIEW) == (ui, None)
