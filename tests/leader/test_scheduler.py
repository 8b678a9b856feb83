"""The scheduler: each filter and its explanation, spread, preferences, batches."""

from __future__ import annotations

import dataclasses

import pytest

from swarmlet.leader.scheduler import NodeTallies, ObservedNode, Scheduler, explain, schedule
from swarmlet.state.commands import PutTasks, UpdateNode
from swarmlet.state.machine import ClusterState
from swarmlet.state.model import (
    Availability,
    Placement,
    PortConfig,
    Resources,
    Task,
    TaskState,
)
from tests.leader.orchestrator.cluster import GIB, add_service, all_ready, make_state
from tests.leader.orchestrator.throughput import run_throughput


def pending(service_id: str, n: int, *, start: int = 1, node: str = "") -> list[Task]:
    return [
        Task(id=f"{service_id}-{i}", service_id=service_id, slot=i, spec_version=1, node_id=node)
        for i in range(start, start + n)
    ]


def place(
    state: ClusterState, tasks: list[Task], observed: dict[str, ObservedNode] | None = None
) -> tuple[list[str], list[str]]:
    decisions = schedule(state, observed if observed is not None else all_ready(state), tasks)
    return [d.node_id for d in decisions], [d.message for d in decisions]


def commit(state: ClusterState, tasks: list[Task], nodes: list[str]) -> None:
    placed = [
        Task(t.id, t.service_id, t.slot, 1, state=TaskState.ASSIGNED, node_id=n)
        for t, n in zip(tasks, nodes, strict=True)
    ]
    assert state.apply(PutTasks(tuple(placed))).ok


# ----------------------------------------------------------------------------- explanations


def test_explanation_lists_counts_most_frequent_first() -> None:
    assert (
        explain({"down": 1, "memory": 2, "draining": 1})
        == "no suitable node (2 nodes lack memory; 1 node is draining; 1 node is down)"
    )


def test_explanation_without_nodes_says_so() -> None:
    assert explain({}) == "no suitable node (no nodes in the cluster)"


def test_down_node_is_filtered_and_explained() -> None:
    state = make_state(1)
    add_service(state, "web")
    nodes, messages = place(state, pending("s-web", 1), all_ready(state, "n01"))
    assert nodes == [""]
    assert messages == ["no suitable node (1 node is down)"]


def test_node_not_reported_by_gossip_takes_no_task() -> None:
    state = make_state(2)
    add_service(state, "web")
    observed = {"n01": ObservedNode("n01", ready=True)}
    nodes, _ = place(state, pending("s-web", 2), observed)
    assert nodes == ["n01", "n01"]
    _, messages = place(state, pending("s-web", 1), {})
    assert messages == ["no suitable node (2 nodes have not reported their status)"]


@pytest.mark.parametrize(
    ("availability", "reason"),
    [(Availability.PAUSE, "2 nodes are paused"), (Availability.DRAIN, "2 nodes are draining")],
)
def test_paused_and_draining_nodes_take_no_new_task(
    availability: Availability, reason: str
) -> None:
    state = make_state(2)
    assert state.apply(UpdateNode("n01", availability=availability)).ok
    add_service(state, "web")
    nodes, _ = place(state, pending("s-web", 2))
    assert nodes == ["n02", "n02"]
    assert state.apply(UpdateNode("n02", availability=availability)).ok
    _, messages = place(state, pending("s-web", 1))
    assert messages == [f"no suitable node ({reason})"]


def test_constraints_select_nodes_and_explain_rejections() -> None:
    state = make_state(3, labels={1: {"zone": "a"}, 2: {"zone": "b"}})
    add_service(state, "web", placement=Placement(constraints=("node.labels.zone==A",)))
    nodes, _ = place(state, pending("s-web", 2))
    assert nodes == ["n01", "n01"]  # values compare case-insensitively, as swarmkit
    add_service(state, "db", placement=Placement(constraints=("node.hostname==nowhere",)))
    _, messages = place(state, pending("s-db", 1))
    assert messages == ["no suitable node (3 nodes do not satisfy the constraints)"]


def test_resources_count_tasks_already_on_the_node_and_in_the_batch() -> None:
    state = make_state(2, resources=Resources(0, 2 * GIB))
    add_service(state, "big", reservations=Resources(memory_bytes=GIB))
    first = pending("s-big", 1)
    commit(state, first, ["n01"])
    nodes, messages = place(state, pending("s-big", 4, start=2))
    assert sorted(n for n in nodes if n) == ["n01", "n02", "n02"]
    assert messages[-1] == "no suitable node (2 nodes lack memory)"


def test_cpu_reservation_is_checked_against_reported_capacity() -> None:
    state = make_state(1, resources=Resources(0, 0))
    add_service(state, "cpu", reservations=Resources(nano_cpus=3_000_000_000))
    observed = {"n01": ObservedNode("n01", True, total=Resources(2_000_000_000, GIB))}
    _, messages = place(state, pending("s-cpu", 1), observed)
    assert messages == ["no suitable node (1 node lacks CPU)"]


def test_unknown_capacity_does_not_limit() -> None:
    state = make_state(1, resources=Resources(0, 0))
    add_service(state, "big", reservations=Resources(memory_bytes=64 * GIB))
    nodes, _ = place(state, pending("s-big", 1))
    assert nodes == ["n01"]


def test_terminal_tasks_free_their_resources() -> None:
    state = make_state(1, resources=Resources(0, GIB))
    add_service(state, "big", reservations=Resources(memory_bytes=GIB))
    first = pending("s-big", 1)
    commit(state, first, ["n01"])
    assert place(state, pending("s-big", 1, start=2))[0] == [""]
    done = Task("s-big-1", "s-big", 1, 1, state=TaskState.FAILED, node_id="n01")
    assert state.apply(PutTasks((done,))).ok
    assert place(state, pending("s-big", 1, start=2))[0] == ["n01"]


def test_host_mode_port_allows_one_task_per_node() -> None:
    state = make_state(2)
    add_service(state, "edge", ports=(PortConfig(80, 8080, mode="host"),))
    nodes, messages = place(state, pending("s-edge", 3))
    assert nodes == ["n01", "n02", ""]
    assert messages[-1] == "no suitable node (2 nodes have host port 80/tcp in use)"


def test_host_port_used_by_another_process_is_respected() -> None:
    state = make_state(2)
    add_service(state, "edge", ports=(PortConfig(80, 8080, mode="host"),))
    observed = all_ready(state)
    observed["n01"] = ObservedNode("n01", True, host_ports_in_use=frozenset({(80, "tcp")}))
    nodes, _ = place(state, pending("s-edge", 1), observed)
    assert nodes == ["n02"]


def test_ingress_ports_do_not_limit_placement() -> None:
    state = make_state(1)
    add_service(state, "web", ports=(PortConfig(80, 8080),))
    assert place(state, pending("s-web", 3))[0] == ["n01"] * 3


def test_max_replicas_per_node() -> None:
    state = make_state(2)
    add_service(state, "web", placement=Placement(max_replicas_per_node=2))
    nodes, messages = place(state, pending("s-web", 5))
    assert sorted(n for n in nodes if n) == ["n01", "n01", "n02", "n02"]
    assert messages[-1] == (
        "no suitable node (2 nodes already run the maximum replicas per node (2))"
    )


def test_a_node_is_counted_against_the_first_filter_that_rejects_it() -> None:
    state = make_state(3, resources=Resources(0, GIB))
    assert state.apply(UpdateNode("n02", availability=Availability.DRAIN)).ok
    add_service(state, "big", reservations=Resources(memory_bytes=2 * GIB))
    _, messages = place(state, pending("s-big", 1), all_ready(state, "n02", "n03"))
    assert messages == ["no suitable node (2 nodes are down; 1 node lacks memory)"]


def test_invalid_constraint_in_a_stored_spec_leaves_tasks_pending_with_the_error() -> None:
    state = make_state(1)
    add_service(state, "web", placement=Placement(constraints=("node.labels.zone",)))
    nodes, messages = place(state, pending("s-web", 1))
    assert nodes == [""]
    assert "expected one operator" in messages[0]


# ----------------------------------------------------------------------------- spread


def test_spread_evens_out_tasks_of_the_service() -> None:
    state = make_state(3)
    add_service(state, "web")
    nodes, _ = place(state, pending("s-web", 7))
    assert nodes == ["n01", "n02", "n03", "n01", "n02", "n03", "n01"]


def test_spread_prefers_fewest_tasks_of_the_service_then_fewest_overall() -> None:
    state = make_state(3)
    add_service(state, "web")
    add_service(state, "db")
    commit(state, pending("s-db", 2), ["n01", "n02"])
    commit(state, pending("s-web", 1), ["n03"])
    nodes, _ = place(state, pending("s-web", 3, start=2))
    # n01/n02 have no web task (n03 has one); among them the fewest overall, then by id.
    assert nodes == ["n01", "n02", "n03"]


def test_tasks_desired_shutdown_do_not_count_for_spread() -> None:
    state = make_state(2)
    add_service(state, "web")
    stopping = Task("old", "s-web", 9, 1, TaskState.SHUTDOWN, TaskState.RUNNING, node_id="n01")
    assert state.apply(PutTasks((stopping,))).ok
    assert place(state, pending("s-web", 1))[0] == ["n01"]


def test_preferences_spread_over_label_values_first() -> None:
    labels = {1: {"zone": "a"}, 2: {"zone": "a"}, 3: {"zone": "a"}, 4: {"zone": "b"}}
    state = make_state(4, labels=labels)
    add_service(state, "web", placement=Placement(preferences=("spread=node.labels.zone",)))
    nodes, _ = place(state, pending("s-web", 4))
    per_zone = {"a": 0, "b": 0}
    for n in nodes:
        per_zone[labels[int(n[1:])]["zone"]] += 1
    assert per_zone == {"a": 2, "b": 2}
    assert nodes.count("n04") == 2


def test_nodes_missing_the_preference_label_form_their_own_group() -> None:
    state = make_state(3, labels={1: {"zone": "a"}, 2: {"zone": "b"}})
    add_service(state, "web", placement=Placement(preferences=("node.labels.zone",)))
    nodes, _ = place(state, pending("s-web", 3))
    assert sorted(nodes) == ["n01", "n02", "n03"]


def test_nested_preferences_spread_level_by_level() -> None:
    labels = {
        1: {"dc": "east", "rack": "1"},
        2: {"dc": "east", "rack": "2"},
        3: {"dc": "west", "rack": "1"},
    }
    state = make_state(3, labels=labels)
    add_service(
        state,
        "web",
        placement=Placement(preferences=("spread=node.labels.dc", "spread=node.labels.rack")),
    )
    nodes, _ = place(state, pending("s-web", 4))
    assert nodes.count("n03") == 2  # west gets half
    assert nodes.count("n01") == nodes.count("n02") == 1


def test_a_state_with_more_preferences_than_the_limit_is_placed_by_the_first_ones() -> None:
    # An older release took any number: 1,100 overflowed the tree's recursion, and the pass
    # stopped every leader in turn. The first 16 are followed (validate_spec allows no more).
    labels = {1: {"l0": "a"}, 2: {"l0": "a"}, 3: {"l0": "b"}}
    state = make_state(3, labels=labels)
    prefs = tuple(f"spread=node.labels.l{i}" for i in range(1100))
    add_service(state, "web", placement=Placement(preferences=prefs))
    nodes, _ = place(state, pending("s-web", 4))
    assert nodes.count("n03") == 2  # spread over l0 first, as with l0 alone


def test_preference_group_that_fills_up_gives_way_to_the_others() -> None:
    state = make_state(3, labels={1: {"zone": "a"}, 2: {"zone": "b"}, 3: {"zone": "b"}})
    add_service(
        state,
        "web",
        placement=Placement(preferences=("node.labels.zone",), max_replicas_per_node=1),
    )
    nodes, messages = place(state, pending("s-web", 4))
    assert sorted(n for n in nodes if n) == ["n01", "n02", "n03"]
    assert messages[-1].startswith("no suitable node (3 nodes already run")


def test_pinned_task_only_considers_its_node() -> None:
    state = make_state(2)
    add_service(state, "agent", mode="global")
    nodes, _ = place(state, pending("s-agent", 1, node="n02"))
    assert nodes == ["n02"]
    _, messages = place(state, pending("s-agent", 1, node="n02"), all_ready(state, "n02"))
    assert messages == ["no suitable node (1 node is down)"]


def test_tasks_not_waiting_for_a_node_are_returned_unchanged() -> None:
    state = make_state(1)
    add_service(state, "web")
    task = Task("t", "s-web", 1, 1, state=TaskState.ASSIGNED, node_id="n01")
    assert place(state, [task])[0] == ["n01"]


def test_throughput_helper_places_every_task() -> None:
    placed, elapsed_s = run_throughput(nodes=50, tasks=2_000, services=10)
    assert placed == 2_000
    assert elapsed_s >= 0


def tallies(scheduler: Scheduler) -> dict[str, tuple[object, ...]]:
    return {
        nid: (i.total, dict(i.by_service), i.reserved_cpu, i.reserved_mem, sorted(i.ports.items()))
        for nid, i in scheduler.infos.items()
    }


def test_scheduler_tallies_follow_changes_like_a_fresh_count() -> None:
    state = make_state(2)
    add_service(
        state,
        "edge",
        reservations=Resources(memory_bytes=GIB),
        ports=(PortConfig(80, 8080, mode="host"),),
    )
    scheduler = Scheduler(state, all_ready(state))
    tasks = pending("s-edge", 2)
    decisions = scheduler.schedule(tasks)
    placed = [
        Task(t.id, t.service_id, t.slot, 1, state=TaskState.ASSIGNED, node_id=d.node_id)
        for t, d in zip(tasks, decisions, strict=True)
    ]
    assert state.apply(PutTasks(tuple(placed))).ok
    assert tallies(scheduler) == tallies(Scheduler(state, all_ready(state)))
    # a task retired (still running) and one that ended
    stopping = Task("s-edge-1", "s-edge", 1, 1, TaskState.SHUTDOWN, TaskState.ASSIGNED, "n01")
    ended = Task("s-edge-2", "s-edge", 2, 1, TaskState.RUNNING, TaskState.FAILED, "n02")
    for new in (stopping, ended):
        scheduler.changed(state.tasks[new.id], new)
        assert state.apply(PutTasks((new,))).ok
    assert tallies(scheduler) == tallies(Scheduler(state, all_ready(state)))
    probe = pending("s-edge", 1, start=3)[0]
    assert scheduler.probe(probe).node_id == "n02"
    assert tallies(scheduler) == tallies(Scheduler(state, all_ready(state)))


def test_a_port_two_tasks_hold_is_free_only_when_both_let_go() -> None:
    """A handover: the task leaving and the one taking over both hold host port 80 on n01 for
    a moment. The first to end leaves the port held. (The scheduler's per-pass tallies kept
    ports in a set, so a pass that followed that change placed a third task on the port: a
    fuzzer comparing scoped and full passes found it.)"""
    state = make_state(1)
    add_service(state, "edge", ports=(PortConfig(80, 8080, mode="host"),))
    leaving = Task("s-edge-1", "s-edge", 1, 1, TaskState.SHUTDOWN, TaskState.RUNNING, "n01")
    taking_over = Task("s-edge-2", "s-edge", 2, 1, TaskState.RUNNING, TaskState.ASSIGNED, "n01")
    assert state.apply(PutTasks((leaving, taking_over))).ok
    scheduler = Scheduler(state, all_ready(state), NodeTallies(state))
    ended = dataclasses.replace(leaving, state=TaskState.SHUTDOWN)
    scheduler.changed(leaving, ended)
    assert state.apply(PutTasks((ended,))).ok
    assert tallies(scheduler) == tallies(Scheduler(state, all_ready(state)))
    [decision] = scheduler.schedule(pending("s-edge", 1, start=3))
    assert decision.message == "no suitable node (1 node has host port 80/tcp in use)"
