"""node.status_reports: a node reports what changed of its own tasks, the leader commits it in the
sender's name only, and the cost of a change does not grow with the tasks a node runs (issue #16).

The reporter and the intake talk over real TLS on 127.0.0.1 with certificates of a test CA
(`tests.conftest.TestCA`). The leader's Raft is a fake that applies each proposal at once to the
one `ClusterState` both sides read: the follower's replica is always up to date, which is what
lets a test count exactly how many reports a change costs.
"""

from __future__ import annotations

import dataclasses
import math
import socket
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from types import SimpleNamespace
from typing import TYPE_CHECKING, cast

import pytest
import trio

from swarmlet import crypto
from swarmlet.certs import PeerIdentity
from swarmlet.errors import NotLeaderError, UsageError
from swarmlet.node import status_reports
from swarmlet.node.status_reports import (
    MAX_ENDPOINTS,
    MAX_ERROR_CHARS,
    MAX_PORT_ERRORS,
    MAX_STATUSES_PER_REPORT,
    REPORT_BYTES,
    REPORT_ENDPOINTS,
    StatusIntake,
    StatusReporter,
    is_news,
    news,
    vetted_observation,
    within_report,
)
from swarmlet.raft.driver import RaftDriver
from swarmlet.security import peer_policy
from swarmlet.state.commands import Command, ReportTasks
from swarmlet.state.machine import ApplyResult, ClusterState
from swarmlet.state.model import Node, PortConfig, Role, Service, ServiceSpec, Task, TaskState
from swarmlet.state.observed import (
    MAX_EXPOSED_PORTS,
    Endpoint,
    NodeLoad,
    StatusReport,
    TaskLoad,
    TaskObservation,
)
from swarmlet.wire import codec as wire
from swarmlet.wire.transport import Address, Counters, FramedStream, TlsConfig, Transport

if TYPE_CHECKING:
    from tests.conftest import TestCA

TIMEOUT_S = 30
HOST = "127.0.0.1"
LEADER, NODE, OTHER = "leader", "w1", "w2"
MESSAGE_KEY = crypto.ClusterKeys(crypto.new_key()).message_key


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def cluster(tasks_on_node: int = 2) -> ClusterState:
    """A leader and two workers; `tasks_on_node` tasks of service `s` on w1, one on w2."""
    state = ClusterState()
    state.cluster_id = "testcluster"
    for node_id, role in ((LEADER, Role.MANAGER), (NODE, Role.WORKER), (OTHER, Role.WORKER)):
        state.nodes[node_id] = Node(node_id, node_id, f"{HOST}:1", HOST, role)
    state.services["s"] = Service(id="s", spec=ServiceSpec(name="web", image="x"))
    for i in range(tasks_on_node):
        state.tasks[f"t{i}"] = Task(f"t{i}", "s", i + 1, 1, node_id=NODE)
    state.tasks["t-other"] = Task("t-other", "s", 0, 1, node_id=OTHER)
    return state


def running(task_id: str, port: int = 30000) -> TaskObservation:
    endpoint = Endpoint(80, "tcp", HOST, port)
    return TaskObservation(task_id, TaskState.RUNNING, container_id="c", endpoints=(endpoint,))


class FakeRaft:
    """Leads (or follows `LEADER`); applies each proposal to `state` at once, counting them."""

    def __init__(self, state: ClusterState, *, leader: bool) -> None:
        self.state = state
        self.is_leader = leader
        self.leader_id: str | None = None if leader else LEADER
        self.applied = 0
        self.proposed: list[Command] = []
        self.leader_changed = trio.Event()

    async def propose(self, command: Command) -> ApplyResult:
        if not self.is_leader:
            raise NotLeaderError(self.leader_id)
        await trio.lowlevel.checkpoint()
        command = wire.decode(wire.encode(command))  # what a log entry would carry
        self.proposed.append(command)
        self.applied += 1
        return self.state.apply(command)

    async def wait_applied(self, index: int) -> None:
        await trio.lowlevel.checkpoint()


def intake(state: ClusterState, raft: FakeRaft, counters: Counters | None = None) -> StatusIntake:
    return StatusIntake(
        raft=cast(RaftDriver[ApplyResult], raft),
        state=lambda: state,
        propose=raft.propose,
        counters=counters if counters is not None else Counters(),
    )


def peer(node_id: str) -> PeerIdentity:
    return PeerIdentity(node_id, "worker", 0, time.time() + 3600, "testcluster", b"")


# ---------------------------------------------------------------------------- what is news


@pytest.mark.parametrize(
    ("obs", "recorded", "expected"),
    [
        (running("t0"), None, True),
        (running("t0"), running("t0"), False),
        (running("t0", 30001), running("t0"), True),  # a new endpoint
        (TaskObservation("t0", TaskState.FAILED), running("t0"), True),
        (TaskObservation("t0", TaskState.STARTING), running("t0"), False),  # would go back
    ],
)
def test_is_news(obs: TaskObservation, recorded: TaskObservation | None, expected: bool) -> None:
    assert is_news(obs, recorded) is expected


def test_news_is_only_about_the_nodes_own_tasks_in_the_state() -> None:
    state = cluster()
    state.apply(ReportTasks(NODE, (running("t0"),)))
    observed = {o.task_id: o for o in (running("t0"), running("t1"), running("t-other"))}
    observed["t-gone"] = running("t-gone")  # reaped from the state, not yet by the executor
    assert news(NODE, state, observed) == [running("t1")]


# ---------------------------------------------------------------------------- the intake


async def test_the_intake_commits_only_the_senders_own_tasks_in_its_name() -> None:
    state = cluster()
    raft = FakeRaft(state, leader=True)
    counters = Counters()
    report = StatusReport(7, (running("t0"), running("t-other"), running("t-ghost")))
    reply = await intake(state, raft, counters).answer(peer(NODE), report)
    assert (reply.seq, reply.ok, reply.index) == (7, True, 1)
    assert raft.proposed == [ReportTasks(NODE, (running("t0"),))]
    assert counters["status_refused_report_other_nodes_task"] == 1
    assert counters["status_refused_report_unknown_task"] == 1
    assert set(state.task_status) == {"t0"}


async def test_a_report_that_changes_nothing_commits_nothing() -> None:
    state = cluster()
    state.apply(ReportTasks(NODE, (running("t0"),)))
    raft = FakeRaft(state, leader=True)
    going_back = TaskObservation("t0", TaskState.STARTING)
    reply = await intake(state, raft).answer(peer(NODE), StatusReport(1, (running("t0"),)))
    assert reply.ok and raft.proposed == []
    reply = await intake(state, raft).answer(peer(NODE), StatusReport(2, (going_back,)))
    assert reply.ok and raft.proposed == []


async def test_endpoints_off_the_nodes_own_host_are_cut_by_the_intake_and_the_reporter() -> None:
    """The executor publishes on its node's advertise host only, and every observer drops an
    endpoint elsewhere; the intake cuts them before they are committed (a made-up host of 3.5
    MB grew the state and every worker's view by as much: review). The reporter cuts the same
    way, so what the leader cut is not news to send again."""
    state = cluster()
    state.apply(ReportTasks(NODE, (running("t0"),)))
    raft = FakeRaft(state, leader=True)
    counters = Counters()
    real = running("t0")
    huge = Endpoint(81, "tcp", "h" * 3_500_000, 30001)
    elsewhere = Endpoint(82, "tcp", "127.0.0.2", 30002)
    same_ip = Endpoint(83, "tcp", "127.0.0.1", 30003)
    lie = dataclasses.replace(real, endpoints=(*real.endpoints, huge, elsewhere))
    reply = await intake(state, raft, counters).answer(peer(NODE), StatusReport(1, (lie,)))
    assert reply.ok and raft.proposed == []  # the rest is what the state holds
    assert counters["status_cut_foreign_endpoints"] == 1
    assert news(NODE, state, {"t0": lie}) == []
    kept = dataclasses.replace(real, endpoints=(*real.endpoints, same_ip, elsewhere))
    await intake(state, raft, counters).answer(peer(NODE), StatusReport(2, (kept,)))
    assert state.task_status["t0"].endpoints == (*real.endpoints, same_ip)
    assert news(NODE, state, {"t0": kept}) == []


@pytest.mark.parametrize(
    ("sender", "report", "error"),
    [
        (None, StatusReport(1, (running("t0"),)), "the sender is not a member"),
        ("removed", StatusReport(1, (running("t0"),)), "the sender is not a member"),
        (
            NODE,
            StatusReport(1, tuple(running("t0") for _ in range(MAX_STATUSES_PER_REPORT + 1))),
            f"more than {MAX_STATUSES_PER_REPORT} statuses",
        ),
    ],
)
async def test_the_intake_refuses_and_counts(
    sender: str | None, report: StatusReport, error: str
) -> None:
    state = cluster()
    raft = FakeRaft(state, leader=True)
    counters = Counters()
    reply = await intake(state, raft, counters).answer(peer(sender) if sender else None, report)
    assert not reply.ok and error in reply.error
    assert counters["status_report_refused"] == 1
    assert raft.proposed == [] and state.task_status == {}


MALFORMED_ENDPOINTS = [
    Endpoint(80, "tcp", HOST, 70000),  # OverflowError in every proxy's connect: agents stopped
    Endpoint(80, "tcp", HOST, -1),
    Endpoint(80, "tcp", HOST, 0),
    Endpoint(0, "tcp", HOST, 30000),
    Endpoint(80, "sctp", HOST, 30000),
]


@pytest.mark.parametrize("endpoint", MALFORMED_ENDPOINTS)
async def test_a_status_with_a_malformed_endpoint_is_refused_and_counted(
    endpoint: Endpoint,
) -> None:
    state = cluster()
    raft = FakeRaft(state, leader=True)
    counters = Counters()
    bad = dataclasses.replace(running("t0"), endpoints=(endpoint,))
    reply = await intake(state, raft, counters).answer(peer(NODE), StatusReport(1, (bad,)))
    assert reply.ok and raft.proposed == [] and state.task_status == {}
    assert counters["status_refused_malformed"] == 1
    assert vetted_observation(bad) is None
    assert news(NODE, state, {"t0": bad}) == []  # and an honest reporter never sends one


async def test_too_many_endpoints_are_refused() -> None:
    state = cluster()
    raft = FakeRaft(state, leader=True)
    counters = Counters()
    many = tuple(Endpoint(80, "tcp", HOST, 1 + i % 65535) for i in range(MAX_ENDPOINTS + 1))
    bad = dataclasses.replace(running("t0"), endpoints=many)
    await intake(state, raft, counters).answer(peer(NODE), StatusReport(1, (bad,)))
    assert raft.proposed == [] and counters["status_refused_malformed"] == 1


async def test_a_task_publishing_a_range_of_two_thousand_ports_is_reported() -> None:
    """`10000-12000:10000-12000/udp` (RTP, for a SIP server) makes 2,001 endpoints: an honest
    status, taken whole."""
    state = cluster()
    rtp_ports = tuple(PortConfig(p, p, "udp") for p in range(10000, 12001))
    service = state.services["s"]
    state.services["s"] = dataclasses.replace(
        service, spec=dataclasses.replace(service.spec, ports=rtp_ports)
    )
    raft = FakeRaft(state, leader=True)
    ports = tuple(Endpoint(p, "udp", HOST, p) for p in range(10000, 12001))
    rtp = dataclasses.replace(running("t0"), endpoints=ports)
    assert news(NODE, state, {"t0": rtp}) == [rtp]
    await intake(state, raft).answer(peer(NODE), StatusReport(1, (rtp,)))
    assert state.task_status["t0"] == rtp


def with_ports(state: ClusterState, *ports: int, previous: tuple[int, ...] = ()) -> None:
    """Service `s` publishes `ports` (tcp), and published `previous` before its last update."""
    service = state.services["s"]
    spec = dataclasses.replace(service.spec, ports=tuple(PortConfig(p, p) for p in ports))
    before = dataclasses.replace(service.spec, ports=tuple(PortConfig(p, p) for p in previous))
    state.services["s"] = dataclasses.replace(service, spec=spec, previous_spec=before)


async def test_a_status_with_two_endpoints_of_one_target_is_refused() -> None:
    """A container publishes each port once: a worker's status with 65,535 endpoints of one
    target made every proxy try each for every connection (found by review). The reporter does
    not send such a status either (it would send it again at every turn)."""
    state = cluster()
    with_ports(state, 80)
    raft = FakeRaft(state, leader=True)
    counters = Counters()
    twice = (Endpoint(80, "tcp", HOST, 30000), Endpoint(80, "tcp", HOST, 30001))
    obs = dataclasses.replace(running("t0"), endpoints=twice)
    assert news(NODE, state, {"t0": obs}) == []
    await intake(state, raft, counters).answer(peer(NODE), StatusReport(1, (obs,)))
    assert "t0" not in state.task_status
    assert counters["status_refused_endpoints"] == 1


async def test_a_report_dense_with_endpoints_lets_the_loop_run_while_it_is_vetted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A worker's 4 MiB frame holds 512 statuses of 340 endpoints: vetting them all in one turn
    of the loop, after decoding, cost a leader its lead on a slow machine (CI). A status about
    a task the node does not run is refused before its endpoints are looked at; the rest are
    vetted a share at a time, the loop running in between."""
    state = cluster()
    raft = FakeRaft(state, leader=True)
    counters = Counters()
    endpoints = tuple(Endpoint(80, "tcp", HOST, 30000 + i) for i in range(340))
    own = (TaskObservation("t0", TaskState.RUNNING, endpoints=endpoints),) * 512
    not_its = tuple(dataclasses.replace(obs, task_id="t-other") for obs in own)
    turns = 0
    vetted: list[str] = []

    def vetting(obs: TaskObservation) -> TaskObservation | None:
        vetted.append(obs.task_id)
        return vetted_observation(obs)

    monkeypatch.setattr(status_reports, "vetted_observation", vetting)

    async def count_turns() -> None:
        nonlocal turns
        while True:
            await trio.lowlevel.checkpoint()
            turns += 1

    the_intake = intake(state, raft, counters)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(count_turns)
        await trio.lowlevel.checkpoint()
        await the_intake.answer(peer(NODE), StatusReport(1, not_its))
        assert vetted == [] and turns == 0  # refused at one lookup each
        await the_intake.answer(peer(NODE), StatusReport(2, own))
        assert len(vetted) == 512
        assert turns >= 10, turns  # 174,080 endpoints, at least once per 17,408
        nursery.cancel_scope.cancel()
    assert counters["status_refused_report_other_nodes_task"] == 512
    assert counters["status_refused_endpoints"] == 512  # one target, 340 times


async def test_a_node_removed_while_its_report_is_vetted_leaves_no_budget_behind(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The intake forgets a removed node's rate budget at the next membership change it sees.
    A report still being vetted when that happened must not put the budget back afterwards: it
    would stay until the next removal (found by review; the intake's memory is the state's)."""
    monkeypatch.setattr(status_reports, "_ENDPOINTS_PER_TURN", 0)  # the loop runs every status
    state = cluster(tasks_on_node=64)
    raft = FakeRaft(state, leader=True)
    the_intake = intake(state, raft)
    first_vetted = trio.Event()

    def vetting(obs: TaskObservation) -> TaskObservation | None:
        first_vetted.set()
        return vetted_observation(obs)

    monkeypatch.setattr(status_reports, "vetted_observation", vetting)

    async def remove_the_node() -> None:
        await first_vetted.wait()
        del state.nodes[NODE]
        state.removed_nodes[NODE] = 0.0
        # Another node's report: the intake sees the membership change and forgets NODE.
        await the_intake.answer(peer(OTHER), StatusReport(1, (running("t-other"),)))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(remove_the_node)
        statuses = tuple(running(f"t{i}") for i in range(64))
        await the_intake.answer(peer(NODE), StatusReport(1, statuses))
    assert NODE not in state.nodes
    assert set(the_intake._budgets) == {OTHER}


@pytest.mark.parametrize(
    ("targets", "kept"),
    [
        ((80,), 1),  # its service's port
        ((8080,), 1),  # the port before the update: old tasks still run
        ((80, *range(20000, 20000 + MAX_EXPOSED_PORTS)), 1 + MAX_EXPOSED_PORTS),  # EXPOSE ports
        ((*range(20000, 20500), 80, *range(30000, 31000)), 1 + MAX_EXPOSED_PORTS),  # the first
    ],
)
async def test_a_status_keeps_the_endpoints_its_task_can_publish(
    targets: tuple[int, ...], kept: int
) -> None:
    """Its service's ports (this version's and the one before) and at most `MAX_EXPOSED_PORTS`
    others, the first ones: a worker's status with 65,535 targets made every node listen on each
    at the service's addresses (found by review). Cut, not refused, so the task's state still
    commits (an old version's task with a wide range, two updates on, was refused whole); the
    reporter cuts it the same way, so it does not send it again."""
    state = cluster()
    with_ports(state, 80, previous=(8080,))
    raft = FakeRaft(state, leader=True)
    counters = Counters()
    endpoints = tuple(Endpoint(t, "tcp", HOST, 40000 + i) for i, t in enumerate(targets))
    obs = dataclasses.replace(running("t0"), endpoints=endpoints)
    await intake(state, raft, counters).answer(peer(NODE), StatusReport(1, (obs,)))
    committed = state.task_status["t0"]
    assert len(committed.endpoints) == kept
    assert {e.target for e in committed.endpoints} >= {80} & set(targets)
    others = [e for e in obs.endpoints if e.target not in (80, 8080)]
    assert [e for e in committed.endpoints if e.target not in (80, 8080)] == others[:1024]
    assert counters["status_cut_endpoints"] == (kept < len(targets))
    assert counters["status_report_refused"] == 0
    assert news(NODE, state, {"t0": obs}) == []  # nothing to send again


def test_a_report_holds_statuses_up_to_about_a_mib_and_at_least_one() -> None:
    """A worker's frames are at most 4 MiB (`transport.MAX_NON_MANAGER_FRAME_BYTES`)."""
    big = dataclasses.replace(running("t"), error="x" * MAX_ERROR_CHARS)
    taken = within_report([dataclasses.replace(big, task_id=f"t{i}") for i in range(400)])
    assert 100 < len(taken) < 400
    assert sum(len(wire.encode(o)) for o in taken) <= REPORT_BYTES
    huge = dataclasses.replace(
        running("h"), endpoints=tuple(Endpoint(p, "tcp", HOST, p) for p in range(1, 60001))
    )
    assert within_report([huge, running("t1")]) == [huge]
    assert len(wire.encode(huge)) < 4 * 1024 * 1024
    assert within_report([running(f"t{i}") for i in range(600)]) == [
        running(f"t{i}") for i in range(MAX_STATUSES_PER_REPORT)
    ]
    ranged = dataclasses.replace(running("r"), endpoints=huge.endpoints[:3000])
    assert len(within_report([ranged] * 5)) == REPORT_ENDPOINTS // 3000  # 2: 6,000 endpoints


async def test_a_report_of_more_than_one_reports_worth_commits_what_fits_of_it() -> None:
    """512 statuses of 340 ports each, all news (what the reporter never sends: `within_report`;
    one of an older release may): a 4 MB Raft entry, 0.8 s of decoding on every manager's event
    loop as it applied it (review). What fits one report is committed, and counted; the rest is
    still news to the node, for its next report (refused whole, a reporter of the release
    before sent the same report for ever: review)."""
    state = cluster(tasks_on_node=512)
    raft = FakeRaft(state, leader=True)
    counters = Counters()
    endpoints = tuple(Endpoint(p, "tcp", HOST, 30000 + p) for p in range(1, 341))
    sent = [dataclasses.replace(running(f"t{i}"), endpoints=endpoints) for i in range(512)]
    reply = await intake(state, raft, counters).answer(peer(NODE), StatusReport(1, tuple(sent)))
    fits = REPORT_ENDPOINTS // 340
    assert reply.ok and counters["status_cut_report_size"] == 1
    assert [len(c.statuses) for c in raft.proposed if isinstance(c, ReportTasks)] == [fits]
    assert news(NODE, state, {o.task_id: o for o in sent}) == sent[fits:]


async def test_a_long_error_is_cut_to_size_and_committed_once() -> None:
    """A 60 MiB error in one status made a Raft entry over the log's record limit: the save
    raised in the leader's disk thread and stopped it, on every leader in turn."""
    state = cluster()
    raft = FakeRaft(state, leader=True)
    counters = Counters()
    long = TaskObservation("t0", TaskState.FAILED, container_id="c" * 200, error="x" * 60_000_000)
    await intake(state, raft, counters).answer(peer(NODE), StatusReport(1, (long,)))
    [command] = raft.proposed
    assert isinstance(command, ReportTasks)
    [taken] = command.statuses
    assert len(taken.error) == MAX_ERROR_CHARS and len(taken.container_id) == 128
    assert counters["status_cut_to_size"] == 1
    assert news(NODE, state, {"t0": long}) == []  # the reporter does not send it again
    await intake(state, raft, counters).answer(peer(NODE), StatusReport(2, (long,)))
    assert len(raft.proposed) == 1


async def test_a_report_over_the_size_of_one_write_is_refused_not_raised() -> None:
    state = cluster()
    raft = FakeRaft(state, leader=True)

    async def too_large(command: Command) -> ApplyResult:
        raise UsageError("a write of 17000000 bytes is over the limit of 16777216 bytes")

    counters = Counters()
    taker = intake(state, raft, counters)
    taker._propose = too_large
    reply = await taker.answer(peer(NODE), StatusReport(1, (running("t0"),)))
    assert not reply.ok and "over the limit" in reply.error
    assert counters["status_report_refused"] == 1


@pytest.mark.parametrize(
    ("figure", "kept"),
    [
        (TaskLoad("t0", 50.0, 1 << 20), True),
        (TaskLoad("t0", math.nan, 1 << 20), False),  # made the mean "missing": no scale-down
        (TaskLoad("t0", math.inf, 1 << 20), False),
        (TaskLoad("t0", -50.0, 1 << 20), False),  # pulled the others' mean down
        (TaskLoad("t0", 50.0, -1), False),
    ],
)
async def test_a_load_figure_no_measurement_gives_is_dropped(figure: TaskLoad, kept: bool) -> None:
    state = cluster()
    state.tasks["t0"] = Task("t0", "s", 1, 1, state=TaskState.RUNNING, node_id=NODE)
    leader = intake(state, FakeRaft(state, leader=True))
    load = NodeLoad((figure,), {"web": -(10**12)})  # a count never goes below zero either
    assert (await leader.answer(peer(NODE), StatusReport(1, (), None, load))).ok
    assert leader.loads[NODE] == NodeLoad((figure,) if kept else (), {})


async def test_a_follower_sends_the_reporter_to_the_leader() -> None:
    state = cluster()
    raft = FakeRaft(state, leader=False)
    reply = await intake(state, raft).answer(peer(NODE), StatusReport(3, (running("t0"),)))
    assert (reply.ok, reply.not_leader, reply.leader_hint) == (False, True, LEADER)


async def test_load_and_port_errors_are_kept_within_what_the_node_may_speak_for() -> None:
    state = cluster()
    state.tasks["t0"] = Task("t0", "s", 1, 1, state=TaskState.RUNNING, node_id=NODE)
    raft = FakeRaft(state, leader=True)
    leader = intake(state, raft)
    load = NodeLoad(
        (TaskLoad("t0", 50.0, 1 << 20), TaskLoad("t-other", 99.0, 1), TaskLoad("t-x", 1.0, 1)),
        {"web": 10, f"made-up-{'x' * 1000}": 1},
    )
    errors = {f"{port}/tcp": "taken " * 200 for port in range(MAX_PORT_ERRORS * 3)}
    reply = await leader.answer(peer(NODE), StatusReport(1, (), errors, load))
    assert reply.ok
    assert leader.loads[NODE] == NodeLoad((TaskLoad("t0", 50.0, 1 << 20),), {"web": 10})
    kept = state.port_errors[NODE]
    assert len(kept) == MAX_PORT_ERRORS and all(len(v) <= 300 for v in kept.values())
    # Its reporter sees them kept: nothing to send (it compared them whole, and sent them again
    # every 20 ms, for ever: review).
    node = StatusReporter(
        node_id=NODE,
        raft=cast(RaftDriver[ApplyResult], FakeRaft(state, leader=False)),
        state=lambda: state,
        observed=dict,
        port_errors=lambda: errors,
        load=lambda: NodeLoad((), {}),
        propose=raft.propose,
        transport=cast(Transport, SimpleNamespace(counters=Counters())),
        resolve=lambda _node_id: None,
    )
    assert node.pending(with_load=False) is None
    # An empty set of errors clears them.
    assert (await leader.answer(peer(NODE), StatusReport(2, (), {}))).ok
    assert NODE not in state.port_errors


# ---------------------------------------------------------------------------- end to end


def tls(ca: TestCA, state: ClusterState, node_id: str, role: str) -> TlsConfig:
    def admit(p: PeerIdentity) -> PeerIdentity | str:
        return peer_policy.admit(p, state, ca.cluster_id, time.time())

    return ca.tls(node_id, role=role, admit=admit)


class LeaderNode:
    def __init__(self, ca: TestCA, state: ClusterState) -> None:
        self.addr = (HOST, free_port())
        self.raft = FakeRaft(state, leader=True)
        self.transport = Transport(self.addr, MESSAGE_KEY, tls(ca, state, LEADER, "manager"))
        self.intake = intake(state, self.raft, self.transport.counters)
        self.connections = 0

    async def on_stream(self, stream: FramedStream, addr: Address) -> None:
        self.connections += 1
        first = await stream.receive()
        if isinstance(first, StatusReport):
            await self.intake.serve(stream, first)


@asynccontextmanager
async def leader_serving(ca: TestCA, state: ClusterState) -> AsyncIterator[LeaderNode]:
    leader = LeaderNode(ca, state)

    async def no_join(*_args: object) -> None:
        return

    async with trio.open_nursery() as nursery:
        await nursery.start(leader.transport.serve_tcp, leader.on_stream, no_join)
        yield leader
        nursery.cancel_scope.cancel()


class Executor:
    """What the reporter reads of this node: its observations, load and port errors."""

    def __init__(self) -> None:
        self.observations: dict[str, TaskObservation] = {}
        self.load = NodeLoad()
        self.port_errors: dict[str, str] = {}


def reporter(
    ca: TestCA,
    state: ClusterState,
    leader: LeaderNode,
    executor: Executor,
    load_interval_s: float = 5.0,
) -> StatusReporter:
    raft = FakeRaft(state, leader=False)
    return StatusReporter(
        node_id=NODE,
        raft=cast(RaftDriver[ApplyResult], raft),
        state=lambda: state,
        observed=lambda: executor.observations,
        port_errors=lambda: executor.port_errors,
        load=lambda: executor.load,
        propose=raft.propose,
        transport=Transport((HOST, 0), MESSAGE_KEY, tls(ca, state, NODE, "worker")),
        resolve=lambda _node_id: leader.addr,
        load_interval_s=load_interval_s,
    )


async def until(predicate: Callable[[], object]) -> None:
    """Poll `predicate` (the fakes signal nothing); each test's `fail_after` bounds it."""
    while True:
        if predicate():
            return
        await trio.sleep(0.01)


async def test_a_thousand_tasks_on_one_node_cost_a_few_reports_and_one_change_one(
    test_ca: TestCA,
) -> None:
    """1,000 tasks start on one node: their statuses reach the state in a few reports over one
    connection (`MAX_STATUSES_PER_REPORT` each, not one per task), and a later change of one
    task costs one report carrying that one status, whatever else the node runs."""
    state = cluster(tasks_on_node=1000)
    executor = Executor()
    with trio.fail_after(TIMEOUT_S):
        async with leader_serving(test_ca, state) as leader, trio.open_nursery() as nursery:
            node = reporter(test_ca, state, leader, executor)
            await nursery.start(node.run)
            executor.observations = {f"t{i}": running(f"t{i}", 30000 + i) for i in range(1000)}
            node.notify()
            await until(lambda: len(state.task_status) == 1000)
            first = [c for c in leader.raft.proposed if isinstance(c, ReportTasks)]
            assert first == leader.raft.proposed and {c.node_id for c in first} == {NODE}
            assert len(first) <= 1000 // MAX_STATUSES_PER_REPORT + 2
            assert sum(len(c.statuses) for c in first) == 1000

            executor.observations["t500"] = TaskObservation("t500", TaskState.FAILED, error="x")
            node.notify()
            await until(lambda: state.task_status["t500"].state is TaskState.FAILED)
            await trio.sleep(0.1)  # anything else it would send, it has sent by now
            assert leader.raft.proposed[len(first) :] == [
                ReportTasks(NODE, (executor.observations["t500"],))
            ]
            assert leader.connections == 1  # one connection throughout
            nursery.cancel_scope.cancel()


async def test_a_report_lost_with_the_leader_is_sent_again_to_the_next(test_ca: TestCA) -> None:
    """Level-triggered: nothing is remembered but what the replica shows, so the news survive a
    leader that went away before committing them."""
    state = cluster()
    executor = Executor()
    executor.observations = {"t0": running("t0")}
    with trio.fail_after(TIMEOUT_S):
        async with leader_serving(test_ca, state) as leader, trio.open_nursery() as nursery:
            leader.raft.is_leader = False  # lost the leadership: answers not_leader
            leader.raft.leader_id = "elsewhere"
            node = reporter(test_ca, state, leader, executor)
            await nursery.start(node.run)
            node.notify()
            await until(lambda: node.counters["status_report_retries"] >= 2)
            assert state.task_status == {}
            leader.raft.is_leader = True  # ... and won it back (or another leader took over)
            await until(lambda: "t0" in state.task_status)
            assert state.task_status["t0"] == running("t0")
            nursery.cancel_scope.cancel()


async def test_load_goes_to_the_leader_only_when_it_changed(test_ca: TestCA) -> None:
    """Load is not committed, and an idle node sends none: only a changed figure travels."""
    state = cluster()
    executor = Executor()
    executor.load = NodeLoad((), {"web": 3})
    with trio.fail_after(TIMEOUT_S):
        async with leader_serving(test_ca, state) as leader, trio.open_nursery() as nursery:
            node = reporter(test_ca, state, leader, executor, load_interval_s=0.05)
            await nursery.start(node.run)
            # Counted once the leader's answer is back (the intake keeps the load before).
            await until(lambda: node.counters["status_reports_sent"] == 1)
            assert leader.intake.loads[NODE] == NodeLoad((), {"web": 3})
            sent = node.counters["status_reports_sent"]
            await trio.sleep(0.5)  # ten intervals
            assert node.counters["status_reports_sent"] == sent  # nothing new to say
            executor.load = NodeLoad((), {"web": 4})
            await until(lambda: leader.intake.loads[NODE] == NodeLoad((), {"web": 4}))
            assert leader.raft.proposed == []
            nursery.cancel_scope.cancel()
