"""`service.logs` (`swarmlet.api.logs`): which tasks an operand selects, Docker's timestamps and
the time-ordered merge (tables), and the handler on one node: lines merged in time order, the
flags passed to the runtime, and `follow` opening a replica that starts after it began."""

from __future__ import annotations

import collections
import contextlib
from collections.abc import AsyncGenerator
from typing import Any

import pytest
import trio
import trio.testing

from swarmlet.api import logs as logs_module
from swarmlet.api.logs import (
    FOLLOW_POLL_INTERVAL_S,
    MAX_LINES_PER_TASK,
    Selection,
    ServiceLogs,
    _Line,
    in_time_order,
    select,
    split_timestamp,
    timestamp_ns,
)
from swarmlet.errors import UsageError
from swarmlet.leader.observation import ObservedView, observe
from swarmlet.state.commands import PutTasks, RemoveService, RemoveTasks
from swarmlet.state.machine import ClusterState
from swarmlet.state.model import Task, TaskState
from swarmlet.wire.peer_rpc import EndOfStream, LogLine, LogsRequest
from tests.leader.orchestrator.cluster import add_service, make_state, node_id

WEB_1 = "webtask1aaaaaaaaaaaaaaaaa"
WEB_2 = "webtask2bbbbbbbbbbbbbbbbb"
API_1 = "apitask1ccccccccccccccccc"


def task(task_id: str, service: str, slot: int, state: TaskState = TaskState.RUNNING) -> Task:
    return Task(task_id, f"s-{service}", slot, 1, state=state, node_id=node_id(1))


def put(state: ClusterState, *tasks: Task) -> None:
    assert state.apply(PutTasks(tasks)).ok


@pytest.fixture
def state() -> ClusterState:
    s = make_state(3)
    add_service(s, "web")
    add_service(s, "api")
    put(s, task(WEB_1, "web", 1), task(WEB_2, "web", 2), task(API_1, "api", 1))
    return s


# ---------------------------------------------------------------------------- select


@pytest.mark.parametrize(
    ("refs", "expected"),
    [
        (["web"], Selection(services=frozenset({"s-web"}))),
        (["s-api"], Selection(services=frozenset({"s-api"}))),
        (["web", "api"], Selection(services=frozenset({"s-web", "s-api"}))),
        ([WEB_2], Selection(tasks=frozenset({WEB_2}))),
        (["webtask2"], Selection(tasks=frozenset({WEB_2}))),  # a unique prefix
        ([f"web.2.{WEB_2[:12]}"], Selection(tasks=frozenset({WEB_2}))),  # as the prefix shows it
        (["web.2"], Selection(slots=frozenset({("s-web", 2)}))),
        (["web.7"], Selection(slots=frozenset({("s-web", 7)}))),  # a slot to come
        (
            ["api", WEB_1],
            Selection(services=frozenset({"s-api"}), tasks=frozenset({WEB_1})),
        ),
    ],
)
def test_operands_select_services_slots_and_tasks(
    state: ClusterState, refs: list[str], expected: Selection
) -> None:
    assert select(state, refs) == expected


@pytest.mark.parametrize(
    ("refs", "error"),
    [
        (["db"], "no such service or task: db"),
        (["db.1"], "no such service or task: db.1"),
        (["web.x"], "no such service or task: web.x"),
        ([""], "no such service or task: "),
        (["webtask"], "ambiguous"),
    ],
)
def test_an_operand_that_matches_nothing_or_several_is_refused(
    state: ClusterState, refs: list[str], error: str
) -> None:
    with pytest.raises(UsageError, match=error):
        select(state, refs)


def test_a_selection_matches_later_tasks_of_its_services_and_slots_only(
    state: ClusterState,
) -> None:
    later_web_3 = task("later3", "web", 3)
    later_web_2 = task("later2", "web", 2)
    by_slot = select(state, ["web.2"])
    assert (by_slot.matches(later_web_2), by_slot.matches(later_web_3)) == (True, False)
    assert select(state, ["web"]).matches(later_web_3)
    assert not select(state, [WEB_2]).matches(later_web_2)
    assert (select(state, ["web"]).grows(), select(state, [WEB_2]).grows()) == (True, False)


# ---------------------------------------------------------------------------- timestamps


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            b"2025-12-03T08:00:00.123456789Z hello world",
            ("2025-12-03T08:00:00.123456789Z", b"hello world"),
        ),
        (b"2025-12-03T08:00:00Z x", ("2025-12-03T08:00:00Z", b"x")),
        (b"2025-12-03T08:00:00.5+01:00 x", ("2025-12-03T08:00:00.5+01:00", b"x")),
        (b"2025-12-03T08:00:00.123456789Z ", ("2025-12-03T08:00:00.123456789Z", b"")),
        (b"no timestamp here", ("", b"no timestamp here")),
        (b"2025-12-03T08:00:00.123456789Z", ("", b"2025-12-03T08:00:00.123456789Z")),
        (b"", ("", b"")),
    ],
)
def test_dockers_timestamp_is_split_off_the_line(raw: bytes, expected: tuple[str, bytes]) -> None:
    assert split_timestamp(raw) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1970-01-01T00:00:00.000000001Z", 1),
        ("2025-12-03T08:00:00.123456789Z", 1_764_748_800_123_456_789),
        ("2025-12-03T08:00:00.5Z", 1_764_748_800_500_000_000),
        ("2025-12-03T08:00:00Z", 1_764_748_800_000_000_000),
        ("2025-12-03T09:00:00.5+01:00", 1_764_748_800_500_000_000),
        ("", 0),
        ("yesterday", 0),
    ],
)
def test_timestamps_read_to_the_nanosecond(text: str, expected: int) -> None:
    assert timestamp_ns(text) == expected


def test_merged_lines_sort_by_time_and_keep_each_streams_order_on_ties() -> None:
    a1 = _Line("n1", "a", "2025-12-03T08:00:00.000000003Z", "a1")
    a2 = _Line("n1", "a", "2025-12-03T08:00:00.000000003Z", "a2")
    b1 = _Line("n2", "b", "2025-12-03T08:00:00.000000001Z", "b1")
    b2 = _Line("n2", "b", "2025-12-03T08:00:00.000000010Z", "b2")
    note = _Line("n3", "", "", "(node is down: no logs)")
    assert in_time_order([a1, a2, b1, b2, note]) == [note, b1, a1, a2, b2]


# ---------------------------------------------------------------------------- the handler


class FakeRuntime:
    """`DockerRuntime.logs` over canned lines (each stamped as Docker stamps them); a followed
    container's stream ends when its `stopped` event is set. Records each call's flags."""

    def __init__(self) -> None:
        self.lines: dict[str, list[bytes]] = {}
        self.stopped: dict[str, trio.Event] = {}
        self.calls: list[tuple[str, bool, int | None, float | None, bool]] = []

    async def logs(
        self,
        container_id: str,
        *,
        follow: bool,
        tail: int | None = None,
        since: float | None = None,
        timestamps: bool = False,
        details: bool = False,  # no attributes here: tests/api/test_logs_details.py has them
    ) -> AsyncGenerator[bytes, None]:
        assert not details
        self.calls.append((container_id, follow, tail, since, timestamps))
        lines = self.lines[container_id]
        for line in lines[len(lines) - tail :] if tail is not None else lines:
            yield line
        if follow:
            await self.stopped[container_id].wait()


class FakeExecutor:
    def __init__(self) -> None:
        self.runtime = FakeRuntime()
        self.containers: dict[str, str] = {}

    def container_of(self, task_id: str) -> str | None:
        return self.containers.get(task_id)


class StandIn:
    """The agent as `ServiceLogs` sees it, on node 1 of a cluster whose tasks all run there."""

    def __init__(self, state: ClusterState) -> None:
        self.state = state
        self.node_id = node_id(1)
        self.executor = FakeExecutor()
        self.stream_handlers: dict[type, Any] = {}
        self.down_since: dict[str, float] = {}

    async def read_barrier(self) -> bool:
        return True

    def reads_view(self) -> bool:
        return False  # a manager's (or a learner's) replica: the logs of any task

    def node_name(self, node: str) -> str:
        return self.state.nodes[node].name

    def is_ready(self, node: str) -> bool:
        return True

    def member_state(self, node: str) -> None:
        return None

    def node_meta(self, node: str) -> None:
        return None

    def local_observations(self) -> tuple[()]:
        return ()

    def observed(self) -> ObservedView:
        return observe(self)  # the agent's is `observe` kept current (`ObservationCache`)

    def run(self, task_id: str, *lines: tuple[str, str]) -> None:
        """`task_id`'s container, with (timestamp, text) lines."""
        self.executor.containers[task_id] = f"c-{task_id}"
        self.executor.runtime.lines[f"c-{task_id}"] = [f"{t} {x}".encode() for t, x in lines]
        self.executor.runtime.stopped[f"c-{task_id}"] = trio.Event()


async def collect(logs: ServiceLogs, **args: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []

    async def emit(item: Any) -> None:
        items.append(item)

    with trio.fail_after(10):
        await logs.logs(args, emit)
    return items


async def test_lines_of_several_tasks_are_merged_in_dockers_time_order(
    state: ClusterState,
) -> None:
    agent = StandIn(state)
    agent.run(WEB_1, ("2025-12-03T08:00:00.000000001Z", "one"), ("2025-12-03T08:00:03Z", "four"))
    agent.run(WEB_2, ("2025-12-03T08:00:01Z", "two"), ("2025-12-03T08:00:02Z", "three"))
    logs = ServiceLogs(agent)  # type: ignore[arg-type]
    assert agent.stream_handlers[LogsRequest] == logs._serve
    items = await collect(logs, targets=["web"], tail="all", since=1_764_748_000.5)
    assert [(i["task"], i["slot"], i["node"], i["line"]) for i in items] == [
        (f"web.1.{WEB_1[:10]}", "1", "host1", "one"),
        (f"web.2.{WEB_2[:10]}", "2", "host1", "two"),
        (f"web.2.{WEB_2[:10]}", "2", "host1", "three"),
        (f"web.1.{WEB_1[:10]}", "1", "host1", "four"),
    ]
    assert items[0]["timestamp"] == "2025-12-03T08:00:00.000000001Z"
    assert (items[0]["task_id"], items[0]["service_id"], items[0]["node_id"]) == (
        WEB_1,
        "s-web",
        node_id(1),
    )
    assert sorted(agent.executor.runtime.calls) == [  # "all": the newest MAX_LINES_PER_TASK
        (f"c-{WEB_1}", False, MAX_LINES_PER_TASK, 1_764_748_000.5, True),
        (f"c-{WEB_2}", False, MAX_LINES_PER_TASK, 1_764_748_000.5, True),
    ]


async def test_a_task_operand_reads_only_that_task_with_its_tail(state: ClusterState) -> None:
    agent = StandIn(state)
    agent.run(WEB_1, ("2025-12-03T08:00:00Z", "a"), ("2025-12-03T08:00:01Z", "b"))
    agent.run(WEB_2, ("2025-12-03T08:00:00Z", "other"))
    items = await collect(ServiceLogs(agent), targets=[WEB_1[:12]], tail=1)  # type: ignore[arg-type]
    assert [i["line"] for i in items] == ["b"]
    assert agent.executor.runtime.calls == [(f"c-{WEB_1}", False, 1, None, True)]


async def test_the_older_single_service_argument_still_works(state: ClusterState) -> None:
    agent = StandIn(state)
    agent.run(API_1, ("2025-12-03T08:00:00Z", "api up"))
    items = await collect(ServiceLogs(agent), service="api", tail=5)  # type: ignore[arg-type]
    assert [i["line"] for i in items] == ["api up"]


async def test_a_task_not_running_yet_is_not_opened(state: ClusterState) -> None:
    agent = StandIn(state)
    put(state, task("starting1", "api", 2, TaskState.STARTING))
    agent.run(API_1, ("2025-12-03T08:00:00Z", "api up"))
    agent.run("starting1", ("2025-12-03T08:00:00Z", "too early"))
    items = await collect(ServiceLogs(agent), targets=["api"])  # type: ignore[arg-type]
    assert [i["line"] for i in items] == ["api up"]


async def test_follow_opens_a_replica_started_after_it_began(
    state: ClusterState, autojump_clock: trio.testing.MockClock
) -> None:
    agent = StandIn(state)
    agent.run(WEB_1, ("2025-12-03T08:00:00Z", "first"))
    logs = ServiceLogs(agent)  # type: ignore[arg-type]
    send, receive = trio.open_memory_channel[dict[str, Any]](16)

    async def follow() -> None:
        await logs.logs({"targets": ["web"], "follow": True}, send.send)

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(follow)
            assert (await receive.receive())["line"] == "first"
            put(state, task("web3later", "web", 3, TaskState.ASSIGNED))
            agent.run("web3later", ("2025-12-03T08:00:05Z", "new replica"))
            await trio.sleep(FOLLOW_POLL_INTERVAL_S * 4)
            assert receive.statistics().current_buffer_used == 0  # not running yet: not opened
            put(state, task("web3later", "web", 3, TaskState.RUNNING))
            item = await receive.receive()
            assert (item["line"], item["task"]) == ("new replica", "web.3.web3later")
            nursery.cancel_scope.cancel()
    assert [c[0] for c in agent.executor.runtime.calls] == [f"c-{WEB_1}", "c-web3later"]


async def test_follow_ends_once_its_service_is_removed_and_its_containers_stopped(
    state: ClusterState, autojump_clock: trio.testing.MockClock
) -> None:
    agent = StandIn(state)
    agent.run(API_1, ("2025-12-03T08:00:00Z", "api up"))
    items: list[dict[str, Any]] = []

    async def emit(item: Any) -> None:
        items.append(item)
        assert state.apply(RemoveTasks((API_1,))).ok
        assert state.apply(RemoveService("s-api", 1.0)).ok
        agent.executor.runtime.stopped[f"c-{API_1}"].set()

    with trio.fail_after(60):  # virtual time: a follow that never ends fails here
        await ServiceLogs(agent).logs({"targets": ["api"], "follow": True}, emit)  # type: ignore[arg-type]
    assert [i["line"] for i in items] == ["api up"]


class ScriptedNode:
    """Another node's side of a logs stream, as a compromised one may play it: `lines` sent
    in order, then an end only if `ends`."""

    def __init__(self, lines: list[LogLine], *, ends: bool) -> None:
        self.script: list[object] = [*lines, *([EndOfStream()] if ends else [])]
        self.asked: list[object] = []
        self.stream = contextlib.nullcontext()

    async def send(self, msg: object) -> None:
        self.asked.append(msg)

    async def receive(self, expect: tuple[type, ...]) -> object:
        if not self.script:
            await trio.sleep_forever()  # a node need not end its stream
        return self.script.pop(0)


class ScriptedTransport:
    def __init__(self, node: ScriptedNode) -> None:
        self.node = node
        self.counters: collections.Counter[str] = collections.Counter()

    async def connect(self, addr: object, node_id: str) -> ScriptedNode:
        return self.node


def remote_task(state: ClusterState) -> str:
    put(state, Task("remote1", "s-api", 2, 1, state=TaskState.RUNNING, node_id=node_id(2)))
    return "remote1"


async def test_lines_another_node_sends_for_tasks_not_asked_of_it_are_dropped_and_counted(
    state: ClusterState,
) -> None:
    own = remote_task(state)
    node = ScriptedNode(
        [
            LogLine(own, b"mine", "2025-12-03T08:00:00Z"),
            LogLine(WEB_1, b"passed off as web.1's", "2025-12-03T08:00:01Z"),
        ],
        ends=True,
    )
    agent = StandIn(state)
    agent.transport = ScriptedTransport(node)  # type: ignore[attr-defined]
    items = await collect(ServiceLogs(agent), targets=[own])  # type: ignore[arg-type]
    assert [i["line"] for i in items] == ["mine"]
    assert agent.transport.counters["logs_dropped_foreign_task"] == 1  # type: ignore[attr-defined]


async def test_without_follow_a_node_that_never_ends_its_stream_is_cut(
    state: ClusterState, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An honest node sends the newest `tail` lines a task; one that goes on is cut (its lines
    are held in memory until every node is done)."""
    monkeypatch.setattr(logs_module, "MAX_LINES_PER_TASK", 5)
    own = remote_task(state)
    endless = [LogLine(own, b"%d" % i, "2025-12-03T08:00:00Z") for i in range(500)]
    agent = StandIn(state)
    agent.transport = ScriptedTransport(ScriptedNode(endless, ends=False))  # type: ignore[attr-defined]
    items = await collect(ServiceLogs(agent), targets=[own])  # type: ignore[arg-type]
    assert [i["line"] for i in items] == [  # notes without a timestamp sort first
        "(more lines than the 5 asked for: cut)",
        "(the newest 5 lines only: see --since)",
        *"01234",
    ]
    assert agent.transport.counters["logs_cut_beyond_tail"] == 1  # type: ignore[attr-defined]
    assert node_asked_tail(agent) == 5  # the newest 5 asked of the node


def node_asked_tail(agent: StandIn) -> int:
    [request] = agent.transport.node.asked  # type: ignore[attr-defined]
    assert isinstance(request, LogsRequest)
    return request.tail


async def test_a_line_over_the_limit_is_cut_and_marked(
    state: ClusterState, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A node may send 4 MiB lines (a frame's worth), with as many attributes: a manager held
    256 of them in flight, and every one without --follow (a compromised worker ran it out of
    memory). A line over the limit, its timestamp and the attributes asked for counted, is cut
    with a mark saying so, and loses its attributes; attributes not asked for are not kept."""
    monkeypatch.setattr(logs_module, "MAX_LINE_BYTES", 40)
    own = remote_task(state)
    stamp = "2025-12-03T08:00:0{}Z"  # 20 characters
    lines = [
        LogLine(own, b"short", stamp.format(0), {"k": "v"}),
        LogLine(own, b"x" * 50, stamp.format(1)),
        LogLine(own, b"short", stamp.format(2), {"k": "v" * 50}),
    ]
    for details in (True, False):
        agent = StandIn(state)
        agent.transport = ScriptedTransport(ScriptedNode(lines, ends=True))  # type: ignore[attr-defined]
        items = await collect(ServiceLogs(agent), targets=[own], details=details)  # type: ignore[arg-type]
        shown = [(i["line"], i.get("details") or {}) for i in items]
        if details:
            assert shown == [
                ("short", {"k": "v"}),
                ("x" * 40 + " ... (cut: 70 bytes with its attributes, over 40)", {}),
                ("short ... (cut: 76 bytes with its attributes, over 40)", {}),
            ]
        else:  # the attributes were not asked for: neither kept nor counted
            assert shown == [
                ("short", {}),
                ("x" * 40 + " ... (cut: 70 bytes with its attributes, over 40)", {}),
                ("short", {}),
            ]
        counted = agent.transport.counters["logs_cut_long_line"]  # type: ignore[attr-defined]
        assert counted == (2 if details else 1)


async def test_without_follow_a_nodes_lines_beyond_the_bytes_held_are_cut(
    state: ClusterState, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(logs_module, "MAX_BYTES_PER_NODE", 100)
    own = remote_task(state)
    lines = [LogLine(own, b"%02d" % i + b"." * 8, "2025-12-03T08:00:00Z") for i in range(50)]
    agent = StandIn(state)
    agent.transport = ScriptedTransport(ScriptedNode(lines, ends=True))  # type: ignore[attr-defined]
    items = await collect(ServiceLogs(agent), targets=[own])  # type: ignore[arg-type]
    shown = [i["line"] for i in items]
    assert shown[0] == "(more than 0 MiB of lines from this node: cut; see --since or --tail)"
    assert 0 < len(shown) - 1 < 50
    assert agent.transport.counters["logs_cut_beyond_bytes"] == 1  # type: ignore[attr-defined]


async def test_without_follow_this_nodes_own_lines_are_held_as_another_nodes(
    state: ClusterState, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A task of the agent's own node logging 800 MB took the agent to 867 MB (review).
    monkeypatch.setattr(logs_module, "MAX_BYTES_PER_NODE", 100)
    monkeypatch.setattr(logs_module, "MAX_LINE_BYTES", 40)
    agent = StandIn(state)
    agent.transport = ScriptedTransport(ScriptedNode([], ends=True))  # type: ignore[attr-defined]
    agent.run(API_1, *[(f"2025-12-03T08:00:{i:02d}Z", f"{i:02d}........") for i in range(50)])
    items = await collect(ServiceLogs(agent), targets=["api"])  # type: ignore[arg-type]
    shown = [i["line"] for i in items]
    assert shown[0] == "(more than 0 MiB of lines from this node: cut; see --since or --tail)"
    assert 0 < len(shown) - 1 < 50
    assert agent.transport.counters["logs_cut_beyond_bytes"] == 1  # type: ignore[attr-defined]

    monkeypatch.setattr(logs_module, "MAX_BYTES_PER_NODE", 1000)
    agent = StandIn(state)
    agent.transport = ScriptedTransport(ScriptedNode([], ends=True))  # type: ignore[attr-defined]
    agent.run(WEB_1, ("2025-12-03T08:00:00Z", "y" * 50))
    items = await collect(ServiceLogs(agent), targets=["web"])  # type: ignore[arg-type]
    assert [i["line"] for i in items] == [
        "y" * 40 + " ... (cut: 70 bytes with its attributes, over 40)"
    ]
    assert agent.transport.counters["logs_cut_long_line"] == 1  # type: ignore[attr-defined]


def test_a_timestamp_of_the_right_shape_for_no_date_sorts_first() -> None:
    """A node's `2024-13-45T00:00:00Z` raised ValueError: the whole request failed ("internal
    error"), the other nodes' lines with it."""
    assert timestamp_ns("2024-13-45T00:00:00Z") == 0
