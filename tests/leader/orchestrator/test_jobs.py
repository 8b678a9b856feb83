"""Jobs (`leader.orchestrator.jobs`): replicated-job and global-job services run their tasks to
completion, at most max_concurrent at once; `update --force` runs them again."""

from __future__ import annotations

import pytest

from swarmlet.leader.orchestrator import jobs
from swarmlet.state.model import (
    Placement,
    RestartCondition,
    RestartPolicy,
    Role,
    ServiceMode,
    TaskState,
)
from tests.leader.orchestrator.cluster import Harness, add_node, add_service, make_state


def running_now(h: Harness, service_id: str) -> list[str]:
    return sorted(
        t.id for t in h.state.tasks_of(service_id) if t.desired_state is TaskState.RUNNING
    )


def complete_running(h: Harness, service_id: str) -> int:
    """Every running task of the job exits 0; how many did."""
    done = 0
    for task in h.running(service_id):
        h.observe(task.id, TaskState.COMPLETE, exit_code=0)
        done += 1
    return done


def completions(h: Harness, service_id: str) -> int:
    service = h.state.services[service_id]
    return sum(
        1
        for t in h.state.tasks_of(service_id)
        if t.spec_version == service.version and t.state is TaskState.COMPLETE
    )


def test_a_replicated_job_runs_its_completions_max_concurrent_at_a_time() -> None:
    h = Harness(make_state(3))
    add_service(h.state, "batch", mode=ServiceMode.REPLICATED_JOB, replicas=5, max_concurrent=2)
    waves = []
    for _ in range(10):
        h.settle(2)
        assert len(running_now(h, "s-batch")) <= 2
        waves.append(complete_running(h, "s-batch"))
        if completions(h, "s-batch") == 5 and not running_now(h, "s-batch"):
            break
    h.settle(2)
    assert waves[:3] == [2, 2, 1]
    assert completions(h, "s-batch") == 5
    assert running_now(h, "s-batch") == []  # done: nothing restarts a completed job
    assert sorted(t.slot for t in h.state.tasks_of("s-batch")) == [1, 2, 3, 4, 5]
    assert h.reconcile() == []


def test_a_job_runs_no_more_slots_than_the_replica_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    # As a replicated service (test_replicated): the slots were listed before max_concurrent
    # was applied, so a job of 3,000,000 completions built that list at every pass.
    monkeypatch.setattr(jobs, "MAX_REPLICAS", 4)
    h = Harness(make_state(3))
    add_service(h.state, "batch", mode=ServiceMode.REPLICATED_JOB, replicas=30)
    h.settle(2)
    assert sorted(t.slot for t in h.state.tasks_of("s-batch")) == [1, 2, 3, 4]
    # Slots a state holds past the limit (planned before it) run on, and complete.
    monkeypatch.setattr(jobs, "MAX_REPLICAS", 2)
    h.settle(2)
    assert sorted(running_now(h, "s-batch")) == sorted(t.id for t in h.state.tasks_of("s-batch"))
    complete_running(h, "s-batch")
    h.settle(2)
    assert completions(h, "s-batch") == 4
    assert sorted(t.slot for t in h.state.tasks_of("s-batch")) == [1, 2, 3, 4]


def test_a_failed_job_task_is_restarted_and_a_completed_one_never() -> None:
    h = Harness(make_state(2))
    # The restart condition `any` would restart a completed service task; not a job's.
    policy = RestartPolicy(condition=RestartCondition.ANY, delay_s=0.0)
    add_service(h.state, "batch", mode=ServiceMode.REPLICATED_JOB, replicas=2, restart=policy)
    h.settle(2)
    first, second = h.running("s-batch")
    h.observe(first.id, TaskState.COMPLETE, exit_code=0)
    h.fail(second.id)
    h.settle(2)
    again = [t for t in h.running("s-batch")]
    assert [t.slot for t in again] == [second.slot] and again[0].id != second.id
    h.observe(again[0].id, TaskState.COMPLETE, exit_code=0)
    h.settle(2)
    assert completions(h, "s-batch") == 2 and running_now(h, "s-batch") == []


def test_a_failed_job_task_with_restart_none_is_given_up() -> None:
    h = Harness(make_state(1))
    policy = RestartPolicy(condition=RestartCondition.NONE)
    add_service(h.state, "batch", mode=ServiceMode.REPLICATED_JOB, replicas=1, restart=policy)
    h.settle(2)
    [task] = h.running("s-batch")
    h.fail(task.id)
    h.settle(3)
    assert running_now(h, "s-batch") == []
    assert h.state.tasks[task.id].desired_state is TaskState.COMPLETE  # done, though failed


def test_update_force_runs_the_job_again_and_more_replicas_run_only_the_extra() -> None:
    h = Harness(make_state(2))
    add_service(h.state, "batch", mode=ServiceMode.REPLICATED_JOB, replicas=2)
    h.settle(2)
    complete_running(h, "s-batch")
    h.settle(2)
    assert completions(h, "s-batch") == 2
    h.update_spec("s-batch", replicas=3)  # does not reach the tasks: keeps the completions
    h.settle(2)
    assert len(h.running("s-batch")) == 1
    complete_running(h, "s-batch")
    h.settle(2)
    assert completions(h, "s-batch") == 3
    forced = h.update_spec("s-batch", force_update=1)  # a new run
    h.settle(2)
    assert completions(h, "s-batch") == 0
    assert len(h.running("s-batch")) == 3
    assert all(t.spec_version == forced.version for t in h.running("s-batch"))


def test_a_global_job_completes_once_per_node_and_on_nodes_that_join_later() -> None:
    h = Harness(make_state(3))
    add_node(h.state, 4, role=Role.MANAGER)
    add_service(
        h.state,
        "setup",
        mode=ServiceMode.GLOBAL_JOB,
        max_concurrent=2,
        placement=Placement(constraints=("node.role==worker",)),
    )
    h.settle(2)
    assert len(running_now(h, "s-setup")) == 2
    for _ in range(3):
        complete_running(h, "s-setup")
        h.settle(2)
    assert sorted(t.node_id for t in h.state.tasks_of("s-setup")) == ["n01", "n02", "n03"]
    assert completions(h, "s-setup") == 3 and running_now(h, "s-setup") == []
    add_node(h.state, 5)
    h.settle(2)
    [late] = h.running("s-setup")
    assert late.node_id == "n05"


def test_a_job_task_on_a_node_that_goes_down_is_replaced_elsewhere() -> None:
    h = Harness(make_state(2))
    add_service(h.state, "batch", mode=ServiceMode.REPLICATED_JOB, replicas=1)
    h.settle(2)
    [task] = h.running("s-batch")
    h.down.add(task.node_id)
    h.settle(2)
    [again] = h.running("s-batch")
    assert again.node_id != task.node_id and again.slot == task.slot
