"""Reconcile for global services, and rebalancing of replicated ones."""

from __future__ import annotations

from swarmlet.leader.orchestrator import next_wakeup
from swarmlet.leader.orchestrator.rebalance import COOLDOWN_S
from swarmlet.state.model import Availability, Placement, Role, ServiceMode, TaskState
from tests.leader.orchestrator.cluster import Harness, active, add_node, add_service, make_state


def global_nodes(h: Harness) -> list[str]:
    return sorted(t.node_id for t in active(h.state, "s-agent"))


# ----------------------------------------------------------------------------- global


def test_global_service_runs_one_task_per_eligible_node() -> None:
    h = Harness(make_state(3))
    add_node(h.state, 4, role=Role.MANAGER)
    add_service(
        h.state,
        "agent",
        mode=ServiceMode.GLOBAL,
        placement=Placement(constraints=("node.role==worker",)),
    )
    h.reconcile()
    tasks = active(h.state, "s-agent")
    assert global_nodes(h) == ["n01", "n02", "n03"]
    assert all(t.slot == 0 and t.state is TaskState.ASSIGNED for t in tasks)
    assert h.reconcile() == []


def test_global_service_follows_nodes_that_join_later() -> None:
    h = Harness(make_state(2))
    add_service(h.state, "agent", mode=ServiceMode.GLOBAL)
    h.settle(2)
    add_node(h.state, 3)
    h.reconcile()
    assert global_nodes(h) == ["n01", "n02", "n03"]


def test_global_task_leaves_a_drained_or_down_node_and_stays_on_a_paused_one() -> None:
    h = Harness(make_state(3))
    add_service(h.state, "agent", mode=ServiceMode.GLOBAL)
    h.settle(2)
    h.set_availability("n01", Availability.PAUSE)
    h.set_availability("n02", Availability.DRAIN)
    h.down.add("n03")
    h.reconcile()
    assert global_nodes(h) == ["n01"]
    orphaned = [t for t in h.state.tasks.values() if t.node_id == "n03"]
    assert orphaned[0].state is TaskState.ORPHANED
    # back to normal: each node gets a task again
    h.set_availability("n02", Availability.ACTIVE)
    h.down.clear()
    h.settle(2)
    assert global_nodes(h) == ["n01", "n02", "n03"]


def test_failed_global_task_restarts_on_its_node() -> None:
    h = Harness(make_state(2))
    add_service(h.state, "agent", mode=ServiceMode.GLOBAL)
    h.settle(2)
    [first, _] = h.running("s-agent")
    h.fail(first.id)
    h.reconcile()
    [again] = [t for t in active(h.state, "s-agent") if t.node_id == first.node_id]
    assert again.attempt == 1
    assert again.id != first.id


# ----------------------------------------------------------------------------- rebalance


def test_returning_node_gets_replicas_back_one_at_a_time_start_before_stop() -> None:
    h = Harness(make_state(3))
    add_service(h.state, "web", replicas=6)
    h.settle(2)
    h.down.add("n03")
    h.settle(2)
    assert h.placement("s-web") == {"n01": 3, "n02": 3}
    h.down.clear()
    h.reconcile()
    # one new task, assigned straight to the returning node; nothing is stopped yet
    moving = [t for t in active(h.state, "s-web") if t.node_id == "n03"]
    assert len(moving) == 1
    assert moving[0].message.startswith("rebalancing from node")
    assert len(active(h.state, "s-web")) == 7
    assert h.reconcile() == []  # waits for the new task to run; no second move meanwhile
    h.agents()
    h.reconcile()  # now the old one is shut down, and no new move until it has stopped
    assert len(active(h.state, "s-web")) == 6
    assert h.reconcile() == []
    h.settle(6)
    assert h.placement("s-web") == {"n01": 2, "n02": 2, "n03": 2}
    assert h.reconcile() == []


def test_spread_uneven_by_one_is_left_alone() -> None:
    h = Harness(make_state(2))
    add_service(h.state, "web", replicas=3)
    h.settle(3)
    assert h.placement("s-web") == {"n01": 2, "n02": 1}
    assert h.reconcile() == []


def test_rebalance_disabled_keeps_tasks_where_they_are() -> None:
    h = Harness(make_state(2))
    add_service(h.state, "web", replicas=4, rebalance=False)
    h.down.add("n02")
    h.settle(2)
    h.down.clear()
    h.settle(4)
    assert h.placement("s-web") == {"n01": 4}


def test_failed_move_keeps_the_old_task_and_waits_before_trying_again() -> None:
    h = Harness(make_state(2))
    add_service(h.state, "web", replicas=4)
    h.down.add("n02")
    h.settle(2)
    h.down.clear()
    h.failing_nodes.add("n02")
    h.reconcile()
    h.agents()  # the new task fails on n02
    h.reconcile()
    assert h.placement("s-web") == {"n01": 4}
    assert len(active(h.state, "s-web")) == 4
    wake = next_wakeup(h.state, h.observed(), h.now)
    assert wake == h.now + COOLDOWN_S
    assert h.reconcile() == []


def test_no_rebalance_when_the_lighter_node_cannot_take_the_task() -> None:
    h = Harness(make_state(2))
    add_service(h.state, "web", replicas=4, placement=Placement(max_replicas_per_node=2))
    add_service(h.state, "other", replicas=1)
    h.settle(3)
    assert h.placement("s-web") == {"n01": 2, "n02": 2}
    assert h.reconcile() == []


def test_global_service_leaves_a_node_gossip_has_not_reported_alone() -> None:
    h = Harness(make_state(2))
    add_service(h.state, "agent", mode=ServiceMode.GLOBAL)
    h.settle(2)
    h.unknown.add("n02")
    assert h.reconcile() == []
    add_node(h.state, 3)
    h.unknown.add("n03")
    assert h.reconcile() == []  # no task for a node nobody has heard from yet
