"""Reconcile for replicated services: slots, scaling, restarts, node failure, drain, history."""

from __future__ import annotations

import dataclasses
import math

import pytest

from swarmlet.leader.orchestrator import next_wakeup, reconcile, replicated
from swarmlet.state.commands import PutTasks, RemoveTasks, UpdateNode
from swarmlet.state.model import (
    Availability,
    Placement,
    RestartCondition,
    RestartPolicy,
    TaskState,
)
from tests.leader.orchestrator.cluster import Harness, active, add_service, make_state


def test_creates_one_task_per_slot_spread_over_nodes() -> None:
    h = Harness(make_state(3))
    add_service(h.state, "web", replicas=5)
    commands = h.reconcile()
    assert len(commands) == 1
    assert isinstance(commands[0], PutTasks)
    tasks = active(h.state, "s-web")
    assert [t.slot for t in tasks] == [1, 2, 3, 4, 5]
    assert all(t.state is TaskState.ASSIGNED for t in tasks)
    assert sorted(t.node_id for t in tasks) == ["n01", "n01", "n02", "n02", "n03"]


def test_reconcile_is_idempotent_once_its_commands_are_applied() -> None:
    h = Harness(make_state(3))
    add_service(h.state, "web", replicas=4)
    h.settle(3)
    assert h.reconcile() == []


def test_unplaceable_task_stays_pending_with_the_reason_written_once() -> None:
    h = Harness(make_state(2))
    add_service(h.state, "web", placement=Placement(constraints=("node.role==manager",)))
    h.reconcile()
    [task] = active(h.state, "s-web")
    assert task.state is TaskState.PENDING
    assert task.message == "no suitable node (2 nodes do not satisfy the constraints)"
    assert h.reconcile() == []


def test_scale_up_adds_the_lowest_free_slots() -> None:
    h = Harness(make_state(2))
    add_service(h.state, "web", replicas=2)
    h.settle(2)
    h.update_spec("s-web", replicas=4)
    h.settle(2)
    assert sorted(t.slot for t in h.running("s-web")) == [1, 2, 3, 4]
    assert all(t.spec_version == 2 for t in h.running("s-web"))  # scaling restarts nothing
    assert len(h.state.tasks) == 4


def test_no_more_slots_than_the_replica_limit_are_planned_whatever_the_state_says(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A state a release before the limit wrote (`state.replica_limit`): 3,000,000 replicas had
    # the leader creating task records past 2 GB until it ran out of memory.
    monkeypatch.setattr(replicated, "MAX_REPLICAS", 7)
    h = Harness(make_state(2))
    add_service(h.state, "web", replicas=30)
    h.settle(2)
    assert sorted(t.slot for t in active(h.state, "s-web")) == list(range(1, 8))
    # Slots a state holds past the limit (planned before it) are kept, not scaled down.
    monkeypatch.setattr(replicated, "MAX_REPLICAS", 5)
    h.settle(2)
    assert sorted(t.slot for t in active(h.state, "s-web")) == list(range(1, 8))


def test_scale_down_prefers_tasks_not_running_then_the_most_loaded_node() -> None:
    h = Harness(make_state(2))
    add_service(h.state, "web", replicas=3)
    h.settle(2)
    assert h.placement("s-web") == {"n01": 2, "n02": 1}
    h.update_spec("s-web", replicas=4)
    h.reconcile()  # slot 4 is assigned but not running yet
    h.update_spec("s-web", replicas=2)
    h.reconcile()
    remaining = active(h.state, "s-web")
    # slot 4 (not running) goes first, then one of n01's two tasks: the highest slot there.
    assert sorted((t.slot, t.node_id) for t in remaining) == [(1, "n01"), (2, "n02")]


def test_failed_task_is_restarted_in_its_slot_at_once_the_first_time() -> None:
    h = Harness(make_state(2))
    add_service(h.state, "web", replicas=1)
    h.settle(2)
    [first] = h.running("s-web")
    h.fail(first.id)
    h.reconcile()
    old = h.state.tasks[first.id]
    assert (old.desired_state, old.state, old.error) == (
        TaskState.SHUTDOWN,
        TaskState.FAILED,
        "exit 1",
    )
    [new] = active(h.state, "s-web")
    assert (new.slot, new.attempt, new.state) == (1, 1, TaskState.ASSIGNED)


def test_repeated_failures_back_off_and_next_wakeup_says_when() -> None:
    h = Harness(make_state(1))
    add_service(h.state, "web", replicas=1)
    h.settle(1)
    [first] = h.running("s-web")
    h.fail(first.id)
    h.reconcile()  # first restart: immediate
    h.agents()
    [second] = h.running("s-web")
    h.fail(second.id)
    h.reconcile()
    assert h.state.tasks[second.id].state is TaskState.FAILED
    assert [t.id for t in active(h.state, "s-web")] == []
    assert next_wakeup(h.state, h.observed(), h.now) == h.now + 0.5
    h.now += 0.5
    h.reconcile()
    [third] = active(h.state, "s-web")
    assert third.attempt == 2


def test_fixed_restart_delay_of_swarm() -> None:
    h = Harness(make_state(1))
    add_service(h.state, "web", restart=RestartPolicy(delay_s=5.0))
    h.settle(1)
    [first] = h.running("s-web")
    h.fail(first.id)
    h.reconcile()
    assert active(h.state, "s-web") == []
    assert next_wakeup(h.state, h.observed(), h.now) == h.now + 5.0
    h.now += 5.0
    h.reconcile()
    assert len(active(h.state, "s-web")) == 1


@pytest.mark.parametrize("since", [1e300, math.inf, math.nan])
def test_a_failure_reported_since_a_time_that_cannot_be_is_taken_as_now(since: float) -> None:
    """A node says when its task ended; one that said 1e300 (a lie, or a clock far ahead) held
    its slot's restart off for good: the time is taken within [created, now]."""
    h = Harness(make_state(1))
    add_service(h.state, "web", restart=RestartPolicy(delay_s=5.0))
    h.settle(1)
    [first] = h.running("s-web")
    h.observe(first.id, TaskState.FAILED, error="exit 1")
    h.tasks[first.id] = dataclasses.replace(h.tasks[first.id], since=since)
    h.reconcile()
    assert h.state.tasks[first.id].updated_at == h.now
    assert next_wakeup(h.state, h.observed(), h.now) == h.now + 5.0
    h.now += 5.0
    h.reconcile()
    assert len(active(h.state, "s-web")) == 1


def test_a_task_created_by_a_leader_whose_clock_was_ahead_is_not_taken_to_end_later_than_now() -> (
    None
):
    h = Harness(make_state(1))
    add_service(h.state, "web", restart=RestartPolicy(delay_s=5.0))
    h.settle(1)
    [first] = h.running("s-web")
    ahead = dataclasses.replace(first, created_at=h.now + 60.0)  # an earlier leader's clock
    h.state.tasks[first.id] = ahead
    h.observe(first.id, TaskState.FAILED, error="exit 1")
    h.reconcile()
    assert h.state.tasks[first.id].updated_at == h.now
    assert next_wakeup(h.state, h.observed(), h.now) == h.now + 5.0


def test_on_failure_policy_leaves_a_completed_slot_done() -> None:
    h = Harness(make_state(1))
    add_service(h.state, "job", replicas=2, restart=RestartPolicy(RestartCondition.ON_FAILURE))
    h.settle(1)
    done, _ = h.running("s-job")
    h.fail(done.id, TaskState.COMPLETE)
    h.settle(3)
    assert h.state.tasks[done.id].desired_state is TaskState.COMPLETE
    assert len(h.running("s-job")) == 1  # the slot is not refilled by the replica count
    assert next_wakeup(h.state, h.observed(), h.now) is None


def test_max_attempts_gives_up_after_that_many_restarts() -> None:
    h = Harness(make_state(1))
    add_service(h.state, "web", restart=RestartPolicy(delay_s=0.0, max_attempts=2))
    h.failing_nodes.add("n01")
    h.settle(10)
    tasks = h.state.tasks_of("s-web")
    assert len(tasks) == 3  # the first attempt and 2 restarts
    assert [t.attempt for t in tasks] == [0, 1, 2]
    assert tasks[-1].desired_state is TaskState.COMPLETE
    assert "2 attempts used" in tasks[-1].message


def test_rejected_tasks_retry_with_backoff_without_blocking_other_services() -> None:
    h = Harness(make_state(1))
    add_service(h.state, "bad", replicas=1)
    h.reconcile()
    [bad] = active(h.state, "s-bad")
    h.observe(bad.id, TaskState.REJECTED, error="image missing")
    add_service(h.state, "good", replicas=2)
    h.reconcile()
    assert len(active(h.state, "s-good")) == 2
    [retry] = active(h.state, "s-bad")  # first retry is immediate
    h.observe(retry.id, TaskState.REJECTED, error="image missing")
    h.reconcile()
    assert active(h.state, "s-bad") == []
    assert next_wakeup(h.state, h.observed(), h.now) == h.now + 0.5


def test_down_node_tasks_are_orphaned_and_replaced_at_once() -> None:
    h = Harness(make_state(3))
    add_service(h.state, "web", replicas=6)
    h.settle(2)
    lost = [t for t in h.running("s-web") if t.node_id == "n01"]
    assert len(lost) == 2
    h.down.add("n01")
    h.reconcile()
    for task in lost:
        gone = h.state.tasks[task.id]
        assert (gone.desired_state, gone.state) == (TaskState.SHUTDOWN, TaskState.ORPHANED)
    replacements = active(h.state, "s-web")
    assert len(replacements) == 6
    assert all(t.node_id in ("n02", "n03") for t in replacements)
    assert {t.slot for t in replacements} == {1, 2, 3, 4, 5, 6}


def test_node_not_yet_reported_by_gossip_keeps_its_tasks() -> None:
    h = Harness(make_state(2))
    add_service(h.state, "web", replicas=2)
    h.settle(2)
    h.unknown.add("n01")
    assert h.reconcile() == []


def test_drain_moves_tasks_and_pause_keeps_them() -> None:
    h = Harness(make_state(3))
    add_service(h.state, "web", replicas=3)
    h.settle(2)
    h.set_availability("n01", Availability.PAUSE)
    assert h.reconcile() == []
    h.set_availability("n01", Availability.DRAIN)
    h.settle(3)
    assert h.placement("s-web") == {"n02": 2, "n03": 1}
    drained = [t for t in h.state.tasks.values() if t.node_id == "n01"]
    assert drained[0].desired_state is TaskState.SHUTDOWN
    assert drained[0].message == "node drained"


def test_task_on_a_node_that_no_longer_satisfies_constraints_moves() -> None:
    h = Harness(make_state(2, labels={1: {"tier": "web"}, 2: {"tier": "web"}}))
    add_service(
        h.state, "web", replicas=2, placement=Placement(constraints=("node.labels.tier==web",))
    )
    h.settle(2)
    assert h.state.apply(UpdateNode("n01", labels_rm=("tier",))).ok
    h.settle(3)
    assert h.placement("s-web") == {"n02": 2}


def test_removed_service_tasks_are_removed_once_stopped() -> None:
    h = Harness(make_state(2))
    add_service(h.state, "web", replicas=2)
    h.settle(2)
    h.remove_service("s-web")
    assert h.reconcile() == []  # still running: the agents stop them first
    h.agents()
    commands = h.reconcile()
    assert len(commands) == 1
    assert isinstance(commands[0], RemoveTasks)
    assert h.state.tasks == {}


def test_task_history_keeps_five_terminal_tasks_per_slot() -> None:
    h = Harness(make_state(1))
    add_service(h.state, "web", restart=RestartPolicy(delay_s=0.0))
    h.failing_nodes.add("n01")
    h.settle(20)
    tasks = h.state.tasks_of("s-web")
    retired = [t for t in tasks if t.desired_state is TaskState.SHUTDOWN]
    assert len(retired) == 5
    assert len(tasks) <= 6


def test_reconcile_can_be_limited_to_some_services() -> None:
    h = Harness(make_state(2))
    add_service(h.state, "a", replicas=1)
    add_service(h.state, "b", replicas=1)
    commands = reconcile(h.state, h.observed(), h.now, h.ids, services={"s-a"})
    assert [{t.service_id for t in c.tasks} for c in commands if isinstance(c, PutTasks)] == [
        {"s-a"}
    ]


def test_removed_service_tasks_on_a_down_node_are_orphaned_then_removed() -> None:
    h = Harness(make_state(2))
    add_service(h.state, "web", replicas=2)
    h.settle(2)
    h.remove_service("s-web")
    h.down.add("n01")
    h.reconcile()
    # the task on the down node is written off and removed at once; n02's is being stopped
    assert [t.node_id for t in h.state.tasks.values()] == ["n02"]
    h.agents()
    h.reconcile()
    assert h.state.tasks == {}
