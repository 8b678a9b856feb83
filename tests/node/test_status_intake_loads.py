"""node.status_reports: the loads the leader keeps. One entry per member of the state, not one per
node it has ever heard from: a removed node's entry goes at the next report after its removal,
and the intake looks for such entries only when the membership changed, not on every report.
What it drops of a load, or cuts of port errors, is counted."""

from __future__ import annotations

import trio
import trio.testing

from swarmlet.node.status_reports import (
    MAX_ERROR_CHARS,
    MAX_PORT_ERRORS,
    STATUS_BURST_BYTES,
    STATUS_BYTES_PER_S,
    StatusIntake,
)
from swarmlet.state.commands import AddNode, RemoveNode
from swarmlet.state.machine import ClusterState
from swarmlet.state.model import Node, Role, TaskState
from swarmlet.state.observed import (
    NodeLoad,
    StatusReport,
    TaskLoad,
    TaskObservation,
    status_bytes,
)
from swarmlet.wire.transport import Counters
from tests.node.test_status_reports import (
    HOST,
    LEADER,
    NODE,
    OTHER,
    FakeRaft,
    cluster,
    intake,
    peer,
)

WEB_LOAD = NodeLoad((), {"web": 3})


async def report_load(leader: StatusIntake, node_id: str, seq: int) -> None:
    reply = await leader.answer(peer(node_id), StatusReport(seq, (), None, WEB_LOAD))
    assert reply.ok, reply.error


async def loads_of_both_workers() -> tuple[ClusterState, StatusIntake]:
    state = cluster()
    leader = intake(state, FakeRaft(state, leader=True))
    await report_load(leader, NODE, 1)
    await report_load(leader, OTHER, 1)
    assert set(leader.loads) == {NODE, OTHER}
    return state, leader


async def test_a_removed_nodes_load_goes_at_the_next_report() -> None:
    state, leader = await loads_of_both_workers()
    assert state.apply(RemoveNode(OTHER, removed_at=1.0)).ok
    # Any member's report will do, with a load or without.
    reply = await leader.answer(peer(NODE), StatusReport(2, ()))
    assert reply.ok
    assert leader.loads == {NODE: WEB_LOAD}


async def test_a_node_removed_while_another_joins_is_forgotten_too() -> None:
    # The node count is back where it was; the revocation list has grown.
    state, leader = await loads_of_both_workers()
    assert state.apply(RemoveNode(OTHER, removed_at=1.0)).ok
    assert state.apply(AddNode(Node("w3", "w3", f"{HOST}:1", HOST, Role.WORKER))).ok
    await report_load(leader, NODE, 2)
    assert set(leader.loads) == {NODE}


async def test_the_loads_are_scanned_only_when_the_membership_changed() -> None:
    state, leader = await loads_of_both_workers()
    # An entry that no membership change explains (the state never held it) stays until the
    # membership changes: proof that an unchanged membership costs no scan.
    leader.loads["never-a-member"] = WEB_LOAD
    await report_load(leader, NODE, 2)
    assert "never-a-member" in leader.loads
    assert state.apply(RemoveNode(LEADER, removed_at=1.0)).ok
    await report_load(leader, NODE, 3)
    assert set(leader.loads) == {NODE, OTHER}


async def test_what_the_intake_drops_of_loads_and_port_errors_is_counted() -> None:
    state = cluster()
    counters = Counters()
    leader = intake(state, FakeRaft(state, leader=True), counters)
    load = NodeLoad((TaskLoad("t-other", 1.0, 1), TaskLoad("t-x", 1.0, 1)), {"web": 1, "no": 2})
    errors = {f"{port}/tcp": "taken" for port in range(MAX_PORT_ERRORS + 1)}
    assert (await leader.answer(peer(NODE), StatusReport(1, (), errors, load))).ok
    assert counters["status_refused_load_entries"] == 3  # two others' tasks, one made-up service
    assert counters["status_refused_port_errors"] == 1  # per report cut to its bounds
    within = {"8080/tcp": "taken"}
    assert (await leader.answer(peer(NODE), StatusReport(2, (), within, WEB_LOAD))).ok
    assert counters["status_refused_load_entries"] == 3
    assert counters["status_refused_port_errors"] == 1


async def test_a_task_named_many_times_in_a_load_is_kept_once() -> None:
    """A 4 MB load repeating one of the worker's own tasks 90,000 times was held whole (16 MiB a
    worker) and scanned at every autoscaling pass, and weighed that task 90,000 times in its
    service's mean: the first figure is kept, the rest dropped and counted."""
    state = cluster()
    counters = Counters()
    leader = intake(state, FakeRaft(state, leader=True), counters)
    load = NodeLoad(tuple(TaskLoad("t0", float(i), 1) for i in range(1000)), {})
    assert (await leader.answer(peer(NODE), StatusReport(1, (), None, load))).ok
    assert leader.loads[NODE].tasks == (TaskLoad("t0", 0.0, 1),)
    assert counters["status_refused_load_entries"] == 999


async def test_only_as_many_figures_as_an_honest_node_sends_are_looked_at() -> None:
    """A 4 MiB load of 226,000 figures held the leader's loop for 71 ms, 600,000 port errors
    for 31 (review). An honest node sends about a figure per task it runs, a count per
    service, an error per published port: the intake looks at twice that many and a few, and
    at most 4,096 port errors; what follows is dropped unread, and counted."""
    state = cluster(tasks_on_node=2)
    counters = Counters()
    leader = intake(state, FakeRaft(state, leader=True), counters)
    junk = tuple(TaskLoad("t-x", 1.0, 1) for _ in range(1000))
    late = NodeLoad(
        (*junk, TaskLoad("t0", 1.0, 1)), {**{f"x{i}": 1 for i in range(1000)}, "web": 3}
    )
    errors = {f"{port}/tcp": "taken" for port in range(10_000, 20_000)}
    errors["1/tcp"] = "taken"  # the smallest, after the first 4,096
    assert (await leader.answer(peer(NODE), StatusReport(1, (), errors, late))).ok
    assert leader.loads[NODE] == NodeLoad((), {})
    assert counters["status_refused_load_entries"] == 2002
    assert "1/tcp" not in state.port_errors[NODE] and len(state.port_errors[NODE]) == 64


async def test_a_node_that_reports_faster_than_its_rate_is_refused_until_it_has_waited(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Each report changes the error text of the worker's tasks: news every time, and each one
    was a Raft write on every manager, as fast as the worker sent them. Past a burst of two
    full reports the intake refuses, counted, and takes the node's reports again at its rate."""
    state = cluster(tasks_on_node=2)
    counters = Counters()
    raft = FakeRaft(state, leader=True)
    leader = intake(state, raft, counters)
    error = "e" * MAX_ERROR_CHARS
    per_report = 2 * status_bytes(failed("t0", error))
    taken = 0
    for seq in range(1, 10_000):
        statuses = (failed("t0", f"{seq}{error}"), failed("t1", f"{seq}{error}"))
        reply = await leader.answer(peer(NODE), StatusReport(seq, statuses))
        if not reply.ok:
            assert "over the node's rate of statuses" in reply.error
            break
        taken += 1
    assert taken * per_report <= STATUS_BURST_BYTES + per_report
    assert counters["status_refused_rate"] == 1
    await trio.sleep(2 * per_report / STATUS_BYTES_PER_S)
    statuses = (failed("t0", "later"),)
    assert (await leader.answer(peer(NODE), StatusReport(seq + 1, statuses))).ok


def failed(task_id: str, error: str) -> TaskObservation:
    return TaskObservation(task_id, TaskState.FAILED, error=error[:MAX_ERROR_CHARS])
