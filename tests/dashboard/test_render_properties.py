"""`render` and `render_screen` are total: any view, any UiState, any size from 20x10 to 200x60
(and below), fits the screen and never raises."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from rich.cells import cell_len

from swarmlet.dashboard.keys import (
    Action,
    ActionKind,
    Cursor,
    Level,
    Mode,
    Notice,
    NoticeKind,
    UiState,
    handle_key,
)
from swarmlet.dashboard.lists import Kind, LogLine, Pane
from swarmlet.dashboard.screens import render_screen
from swarmlet.dashboard.view import (
    ClusterSummary,
    Connection,
    EventRow,
    NodeRow,
    PortRate,
    ServiceRow,
    TaskCell,
    View,
)

from .fixtures import fixed_view
from .screen import screen_lines, screen_text

# Any text, including newlines, tabs, wide and zero-width characters; and words the code acts on.
TEXT = st.one_of(
    st.text(max_size=60),
    st.sampled_from(["", "ready", "down", "running", "failed", "paused", "updating", "global"]),
)
STATES = st.sampled_from(
    [
        "new",
        "pending",
        "assigned",
        "starting",
        "running",
        "complete",
        "shutdown",
        "failed",
        "rejected",
        "orphaned",
        "",
    ]
)
UPDATE_STATES = st.sampled_from(
    ["", "updating", "paused", "completed", "rollback_started", "rollback_paused", "x"]
)
NUMBER = st.one_of(st.floats(), st.integers(-(10**6), 10**15).map(float))
COUNT = st.integers(-5, 10**12)
NODE_IDS = st.sampled_from(["", "a", "b", "c", "d" * 40])
MAYBE_RATE = st.one_of(st.none(), NUMBER)

nodes = st.builds(
    NodeRow,
    id=NODE_IDS,
    name=TEXT,
    addr=TEXT,
    role=TEXT,
    leader=st.booleans(),
    raft=st.sampled_from(["voter", "learner", "none"]),
    status=st.sampled_from(["ready", "down", ""]),
    availability=st.sampled_from(["active", "pause", "drain", ""]),
    cpus=NUMBER,
    cpu_percent=NUMBER,
    memory_bytes=COUNT,
    memory_used_bytes=COUNT,
    tasks=COUNT,
    is_self=st.booleans(),
    labels=st.lists(st.tuples(TEXT, TEXT), max_size=3).map(tuple),
)
services = st.builds(
    ServiceRow,
    id=TEXT,
    name=TEXT,
    mode=st.sampled_from(["replicated", "global"]),
    image=TEXT,
    stack=TEXT,
    version=COUNT,
    desired=COUNT,
    running=COUNT,
    updated=COUNT,
    ports=st.lists(TEXT, max_size=4).map(tuple),
    update_state=UPDATE_STATES,
    update_message=TEXT,
    autoscaled=st.booleans(),
    connections_per_s=MAYBE_RATE,
    active_connections=st.one_of(st.none(), COUNT),
)
tasks = st.builds(
    TaskCell,
    id=TEXT,
    service=st.one_of(TEXT, st.sampled_from(["web", "api"])),
    slot=st.integers(0, 10**6),
    node_id=NODE_IDS,
    node_name=TEXT,
    state=STATES,
    desired_state=st.sampled_from(["running", "shutdown"]),
    healthy=st.one_of(st.none(), st.booleans()),
    error=TEXT,
    updated_at=NUMBER,
    message=TEXT,
    container_id=TEXT,
    spec_version=COUNT,
    created_at=NUMBER,
    endpoints=st.lists(TEXT, max_size=3).map(tuple),
    exit_code=st.one_of(st.none(), COUNT),
)
events = st.builds(
    EventRow,
    seq=COUNT,
    time=NUMBER,
    type=st.one_of(TEXT, st.sampled_from(["node", "task"])),
    action=TEXT,
    subject=TEXT,
    message=TEXT,
    count=COUNT,
)
clusters = st.builds(
    ClusterSummary,
    cluster_id=TEXT,
    node_id=TEXT,
    node_name=TEXT,
    raft_role=TEXT,
    term=COUNT,
    commit_index=COUNT,
    applied_index=COUNT,
    leader_id=st.one_of(st.none(), NODE_IDS),
    leader_name=TEXT,
    gossip_members=COUNT,
    gossip_alive=COUNT,
)
ports = st.builds(
    PortRate,
    key=TEXT,
    service=TEXT,
    connections=COUNT,
    active=COUNT,
    bytes_in=COUNT,
    bytes_out=COUNT,
    errors=COUNT,
    connections_per_s=MAYBE_RATE,
    bytes_per_s=MAYBE_RATE,
)
views = st.builds(
    View,
    now=NUMBER,
    connection=st.sampled_from(Connection),
    message=TEXT,
    cluster=clusters,
    nodes=st.lists(nodes, max_size=12).map(tuple),
    services=st.lists(services, max_size=12).map(tuple),
    tasks=st.lists(tasks, max_size=40).map(tuple),
    events=st.lists(events, max_size=70).map(tuple),
    proxy=st.lists(ports, max_size=4).map(tuple),
    proxy_sampled_at=st.one_of(st.none(), NUMBER),
    updated_at=st.one_of(st.none(), NUMBER),
    utc_offset_s=st.integers(-(10**9), 10**9),
    history=st.lists(tasks, max_size=40).map(tuple),
)
WIDTHS = st.integers(20, 200)
HEIGHTS = st.integers(10, 60)


def _assert_fits(view: View, width: int, height: int) -> None:
    lines = screen_lines(view, width, height)
    assert len(lines) <= height
    for line in lines:
        assert cell_len(line) <= width, line


@settings(max_examples=80, deadline=None)
@given(view=views, width=WIDTHS, height=HEIGHTS)
def test_render_never_raises_and_fits_any_screen(view: View, width: int, height: int) -> None:
    _assert_fits(view, width, height)


@settings(max_examples=40, deadline=None)
@given(width=WIDTHS, height=HEIGHTS)
def test_fixed_cluster_fits_every_size(width: int, height: int) -> None:
    _assert_fits(fixed_view(), width, height)


@settings(max_examples=40, deadline=None)
@given(view=views, width=st.integers(1, 19), height=st.integers(1, 9))
def test_render_survives_screens_below_the_promised_minimum(
    view: View, width: int, height: int
) -> None:
    _assert_fits(view, width, height)


# ---------------------------------------------------------------------------- interactive screens

cursors = st.builds(Cursor, selected=st.one_of(TEXT, NODE_IDS), index=COUNT, filter=TEXT)
levels = st.builds(
    Level,
    kind=st.sampled_from(Kind),
    key=st.one_of(TEXT, NODE_IDS, st.sampled_from(["web", "api"])),
    pane=st.sampled_from(Pane),
    cursors=st.lists(cursors, min_size=4, max_size=4).map(tuple),
    task=TEXT,
)
actions = st.builds(
    Action,
    kind=st.sampled_from(ActionKind),
    target=TEXT,
    label=TEXT,
    replicas=st.one_of(st.none(), COUNT),
)
ui_states = st.builds(
    UiState,
    levels=st.lists(levels, min_size=1, max_size=4).map(tuple),
    mode=st.sampled_from(Mode),
    input=st.text(alphabet="0123456789", max_size=6),
    pending=st.one_of(st.none(), actions),
    notice=st.one_of(st.none(), st.builds(Notice, kind=st.sampled_from(NoticeKind), text=TEXT)),
)
log_lines = st.lists(
    st.builds(LogLine, number=st.integers(0, 10**6), task=TEXT, node=TEXT, line=TEXT), max_size=30
)
KEYS = st.sampled_from(
    ["up", "down", "G", "enter", "escape", "tab", "3", "4", "/", "w", "s", "5", "y", "l", "?"]
)


def _assert_screen_fits(
    view: View, ui: UiState, logs: list[LogLine], width: int, height: int
) -> None:
    lines = screen_text(render_screen(view, ui, logs, width, height), width, height).splitlines()
    assert len(lines) <= height
    for line in lines:
        assert cell_len(line) <= width, line


@settings(max_examples=80, deadline=None)
@given(view=views, ui=ui_states, logs=log_lines, width=WIDTHS, height=HEIGHTS)
def test_any_screen_state_fits_any_screen(
    view: View, ui: UiState, logs: list[LogLine], width: int, height: int
) -> None:
    _assert_screen_fits(view, ui, logs, width, height)


@settings(max_examples=40, deadline=None)
@given(view=views, ui=ui_states, width=st.integers(1, 19), height=st.integers(1, 9))
def test_screen_states_survive_tiny_screens(
    view: View, ui: UiState, width: int, height: int
) -> None:
    _assert_screen_fits(view, ui, [], width, height)


@settings(max_examples=60, deadline=None)
@given(view=views, keys=st.lists(KEYS, max_size=12), width=WIDTHS, height=HEIGHTS)
def test_any_keys_on_any_view_give_a_screen_that_fits(
    view: View, keys: list[str], width: int, height: int
) -> None:
    ui = UiState()
    for key in keys:
        ui, _ = handle_key(ui, key, view)
    _assert_screen_fits(view, ui, [], width, height)
