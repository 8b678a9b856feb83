"""Rolling updates and rollbacks, driven through reconcile."""

from __future__ import annotations

import pytest

from swarmlet.leader.orchestrator import next_wakeup
from swarmlet.state.commands import SetUpdateStatus, UpdateService
from swarmlet.state.model import (
    AutoscalePolicy,
    FailureAction,
    PortConfig,
    Resources,
    ServiceMode,
    TaskState,
    UpdateConfig,
    UpdateOrder,
    UpdateState,
)
from swarmlet.state.replica_limit import MAX_REPLICAS
from tests.leader.orchestrator.cluster import GIB, Harness, active, add_service, make_state


def versions(h: Harness, service_id: str = "s-web") -> list[int]:
    return [t.spec_version for t in sorted(h.running(service_id), key=lambda t: t.slot)]


def status(h: Harness, service_id: str = "s-web") -> UpdateState:
    return h.state.services[service_id].update_status.state


def new_image(h: Harness, image: str = "busybox:2", service_id: str = "s-web") -> None:
    h.update_spec(service_id, image=image)


def test_stop_first_update_replaces_one_slot_at_a_time() -> None:
    h = Harness(make_state(3))
    add_service(h.state, "web", replicas=3, update=UpdateConfig(monitor_s=0.0))
    h.settle(2)
    new_image(h)
    commands = h.reconcile()
    assert any(isinstance(c, SetUpdateStatus) for c in commands)
    assert status(h) is UpdateState.UPDATING
    retired = [t for t in h.state.tasks.values() if t.desired_state is TaskState.SHUTDOWN]
    assert len(retired) == 1  # stop-first: the old task is stopped as the new one is created
    assert sorted(t.spec_version for t in active(h.state, "s-web")) == [1, 1, 2]
    assert h.reconcile() == []  # parallelism 1: waits for the new task to run
    h.agents()
    h.reconcile()
    assert sorted(t.spec_version for t in active(h.state, "s-web")) == [1, 2, 2]
    h.settle(6)
    assert versions(h) == [2, 2, 2]
    assert status(h) is UpdateState.COMPLETED


def test_update_waits_delay_between_slots_and_monitor_before_completing() -> None:
    h = Harness(make_state(2))
    add_service(h.state, "web", replicas=2, update=UpdateConfig(delay_s=10.0, monitor_s=30.0))
    h.settle(2)
    new_image(h)
    h.reconcile()
    h.agents()  # the first new task runs from now
    started = h.now
    h.now += 1
    h.reconcile()
    assert sorted(t.spec_version for t in active(h.state, "s-web")) == [1, 2]
    assert next_wakeup(h.state, h.observed(), h.now) == started + 10.0
    h.now = started + 10.0
    h.reconcile()
    assert sorted(t.spec_version for t in active(h.state, "s-web")) == [2, 2]
    h.agents()
    second = h.now
    h.now += 11.0
    h.reconcile()
    assert status(h) is UpdateState.UPDATING  # monitoring the last task
    assert next_wakeup(h.state, h.observed(), h.now) == started + 30.0  # the first's monitor
    h.now = started + 30.0
    h.reconcile()
    assert status(h) is UpdateState.UPDATING
    assert next_wakeup(h.state, h.observed(), h.now) == second + 30.0
    h.now = second + 30.0
    h.reconcile()
    assert status(h) is UpdateState.COMPLETED


@pytest.mark.parametrize("order", list(UpdateOrder))
def test_without_delay_the_monitor_holds_back_completion_but_never_the_next_batch(
    order: UpdateOrder,
) -> None:
    # Swarm's updater: a slot's worker takes the next slot once its new task runs, plus `delay`;
    # the monitor window counts failures and only then lets the update complete.
    h = Harness(make_state(3))
    config = UpdateConfig(parallelism=2, delay_s=0.0, order=order, monitor_s=5.0)
    add_service(h.state, "web", replicas=10, update=config)
    h.settle(2)
    new_image(h)
    for batch in range(1, 6):  # no time passes: each batch waits only for the last to run
        h.reconcile()
        assert sum(t.spec_version == 2 for t in active(h.state, "s-web")) == 2 * batch
        h.reconcile()
        assert sum(t.spec_version == 2 for t in active(h.state, "s-web")) == 2 * batch
        h.agents()
    h.reconcile()
    assert versions(h) == [2] * 10
    assert status(h) is UpdateState.UPDATING
    assert next_wakeup(h.state, h.observed(), h.now) == h.now + 5.0
    h.now += 5.0
    h.reconcile()
    assert status(h) is UpdateState.COMPLETED


def test_start_first_update_starts_the_new_task_before_stopping_the_old() -> None:
    h = Harness(make_state(2))
    add_service(
        h.state,
        "web",
        replicas=2,
        update=UpdateConfig(order=UpdateOrder.START_FIRST, monitor_s=0.0),
    )
    h.settle(2)
    new_image(h)
    h.reconcile()
    slot_tasks = [t for t in active(h.state, "s-web") if t.slot == 1]
    assert [t.spec_version for t in slot_tasks] == [1, 2]  # both desired running: handover
    h.agents()
    h.reconcile()
    slot_tasks = [t for t in active(h.state, "s-web") if t.slot == 1]
    assert [t.spec_version for t in slot_tasks] == [2]
    h.settle(6)
    assert versions(h) == [2, 2]
    assert status(h) is UpdateState.COMPLETED


def test_failed_update_pauses_and_leaves_the_rest_on_the_old_version() -> None:
    h = Harness(make_state(3))
    add_service(h.state, "web", replicas=3)
    h.settle(2)
    new_image(h)
    h.failing_nodes.update({"n01", "n02", "n03"})
    h.settle(3)
    service = h.state.services["s-web"]
    assert service.update_status.state is UpdateState.PAUSED
    assert service.update_status.message.startswith(
        "update paused due to failure or early termination of task"
    )
    h.failing_nodes.clear()
    h.settle(5)
    assert sorted(versions(h)) == [1, 1, 2]  # the failed slot restarted on the new spec


def test_a_new_spec_resumes_a_paused_update() -> None:
    h = Harness(make_state(2))
    add_service(h.state, "web", replicas=2, update=UpdateConfig(monitor_s=0.0))
    h.settle(2)
    new_image(h)
    h.failing_nodes.update({"n01", "n02"})
    h.settle(3)
    assert status(h) is UpdateState.PAUSED
    h.failing_nodes.clear()
    new_image(h, "busybox:3")
    h.settle(8)
    assert versions(h) == [3, 3]
    assert status(h) is UpdateState.COMPLETED


def test_failure_action_rollback_goes_back_to_the_previous_spec() -> None:
    h = Harness(make_state(2))
    add_service(
        h.state,
        "web",
        replicas=2,
        update=UpdateConfig(failure_action=FailureAction.ROLLBACK, monitor_s=0.0),
        rollback=UpdateConfig(monitor_s=0.0),
    )
    h.settle(2)
    untouched = max(h.running("s-web"), key=lambda t: t.slot)
    new_image(h)
    h.failing_nodes.update({"n01", "n02"})
    rollback = None
    for _ in range(4):
        commands = h.reconcile()
        rollback = next((c for c in commands if isinstance(c, UpdateService)), None)
        if rollback is not None:
            break
        h.agents()
        h.now += 1
    assert rollback is not None
    assert rollback.is_rollback
    assert rollback.spec.image == "busybox"
    assert status(h) is UpdateState.ROLLBACK_STARTED
    h.failing_nodes.clear()
    h.settle(8)
    service = h.state.services["s-web"]
    assert service.version == 3
    assert service.spec.image == "busybox"
    assert versions(h) == [3, 3]
    assert status(h) is UpdateState.ROLLBACK_COMPLETED
    assert h.state.tasks[untouched.id].desired_state is TaskState.RUNNING  # never restarted


def test_parallelism_zero_updates_every_slot_at_once() -> None:
    h = Harness(make_state(2))
    add_service(h.state, "web", replicas=4, update=UpdateConfig(parallelism=0, monitor_s=0.0))
    h.settle(2)
    new_image(h)
    h.reconcile()
    assert sorted(t.spec_version for t in active(h.state, "s-web")) == [2, 2, 2, 2]


def test_scaling_changes_the_version_but_restarts_nothing() -> None:
    h = Harness(make_state(2))
    add_service(h.state, "web", replicas=2)
    h.settle(2)
    before = {t.id for t in h.running("s-web")}
    h.update_spec("s-web", replicas=3)
    h.settle(2)
    assert before < {t.id for t in h.running("s-web")}
    assert status(h) is UpdateState.NONE


def test_global_service_updates_node_by_node() -> None:
    h = Harness(make_state(3))
    add_service(h.state, "agent", mode=ServiceMode.GLOBAL, update=UpdateConfig(monitor_s=0.0))
    h.settle(2)
    new_image(h, service_id="s-agent")
    h.reconcile()
    assert sorted(t.spec_version for t in active(h.state, "s-agent")) == [1, 1, 2]
    h.settle(8)
    assert sorted(t.spec_version for t in h.running("s-agent")) == [2, 2, 2]
    assert sorted(t.node_id for t in h.running("s-agent")) == ["n01", "n02", "n03"]
    assert status(h, "s-agent") is UpdateState.COMPLETED


def test_start_first_global_task_that_finds_no_room_falls_back_to_stop_first() -> None:
    h = Harness(make_state(1, resources=Resources(0, 2 * GIB)))
    add_service(
        h.state,
        "agent",
        mode=ServiceMode.GLOBAL,
        reservations=Resources(memory_bytes=GIB + 1),
        update=UpdateConfig(order=UpdateOrder.START_FIRST, monitor_s=0.0),
    )
    h.settle(2)
    [old] = h.running("s-agent")
    new_image(h, service_id="s-agent")
    h.reconcile()  # the new task is pending: the node cannot hold both
    [new] = [t for t in active(h.state, "s-agent") if t.id != old.id]
    assert new.state is TaskState.PENDING
    h.reconcile()
    assert h.state.tasks[old.id].desired_state is TaskState.SHUTDOWN
    h.settle(4)
    assert [t.spec_version for t in h.running("s-agent")] == [2]


def test_rollback_that_the_state_refuses_pauses_the_update() -> None:
    h = Harness(make_state(1))
    add_service(
        h.state,
        "web",
        ports=(PortConfig(80, 8080),),
        update=UpdateConfig(failure_action=FailureAction.ROLLBACK),
    )
    h.settle(2)
    h.update_spec("s-web", image="busybox:2", ports=(PortConfig(81, 8080),))
    add_service(h.state, "squatter", ports=(PortConfig(80, 8080),))  # takes the old port
    h.failing_nodes.add("n01")
    h.settle(3)
    service = h.state.services["s-web"]
    assert service.update_status.state is UpdateState.PAUSED
    assert "cannot roll back" in service.update_status.message
    assert service.spec.image == "busybox:2"


def test_a_rollback_past_the_replica_limit_pauses_the_update() -> None:
    # Scaled down with an update that fails, then another service takes the room: going back
    # to the previous spec would have the services want more than the limit (review).
    h = Harness(make_state(1))
    add_service(
        h.state, "web", replicas=6, update=UpdateConfig(failure_action=FailureAction.ROLLBACK)
    )
    h.settle(2)
    h.update_spec("s-web", image="busybox:2", replicas=1)
    # Autoscaled at 0 for now: it holds its maximum, and no task need be made for it here.
    add_service(h.state, "other", replicas=0, autoscale=AutoscalePolicy(0, MAX_REPLICAS - 2, 70.0))
    h.failing_nodes.add("n01")
    h.settle(3)
    service = h.state.services["s-web"]
    assert service.update_status.state is UpdateState.PAUSED
    assert "cannot roll back" in service.update_status.message
    assert "would want 100,004 replicas in all" in service.update_status.message
    assert (service.spec.image, service.spec.replicas) == ("busybox:2", 1)
