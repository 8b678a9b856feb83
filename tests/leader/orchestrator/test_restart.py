"""Restart policy maths: back-off, conditions, max attempts within a window (table tests)."""

from __future__ import annotations

import pytest

from swarmlet.leader.orchestrator.restart import (
    RestartDecision,
    backoff_delay_s,
    decide,
    history_limit,
)
from swarmlet.state.model import RestartCondition, RestartPolicy, Task, TaskState


@pytest.mark.parametrize(
    ("attempt", "delay_s"),
    [(0, 0.0), (1, 0.5), (2, 1.0), (3, 2.0), (6, 16.0), (7, 30.0), (50, 30.0)],
)
def test_backoff_starts_at_zero_then_doubles_from_half_a_second_to_30s(
    attempt: int, delay_s: float
) -> None:
    assert backoff_delay_s(attempt) == delay_s


def dead(
    state: TaskState = TaskState.FAILED,
    *,
    attempt: int = 0,
    created_at: float = 100.0,
    ended_at: float = 101.0,
    version: int = 1,
    tid: str = "t",
) -> Task:
    return Task(
        tid,
        "s",
        1,
        version,
        state=state,
        node_id="n01",
        attempt=attempt,
        created_at=created_at,
        updated_at=ended_at,
    )


ANY = RestartPolicy()


@pytest.mark.parametrize(
    ("policy", "task", "expected"),
    [
        # swarmlet's back-off: first restart at once, then 0.5 s, 1 s, ...
        (ANY, dead(attempt=0), RestartDecision(True, 101.0, 1)),
        (ANY, dead(attempt=1), RestartDecision(True, 101.5, 2)),
        (ANY, dead(attempt=3), RestartDecision(True, 103.0, 4)),
        # a task that ran 10 s ends the crash streak
        (ANY, dead(attempt=5, created_at=80.0), RestartDecision(True, 101.0, 1)),
        # Swarm's fixed delay
        (RestartPolicy(delay_s=5.0), dead(attempt=0), RestartDecision(True, 106.0, 1)),
        (RestartPolicy(delay_s=5.0), dead(attempt=4), RestartDecision(True, 106.0, 5)),
        # any restarts a completed task; on-failure and none do not
        (ANY, dead(TaskState.COMPLETE), RestartDecision(True, 101.0, 1)),
        (
            RestartPolicy(RestartCondition.ON_FAILURE),
            dead(TaskState.COMPLETE),
            RestartDecision(False, message="complete; restart policy: on-failure"),
        ),
        (
            RestartPolicy(RestartCondition.ON_FAILURE),
            dead(TaskState.REJECTED),
            RestartDecision(True, 101.0, 1),
        ),
        (
            RestartPolicy(RestartCondition.NONE),
            dead(TaskState.FAILED),
            RestartDecision(False, message="failed; restart policy: none"),
        ),
        # a task lost with its node, or stopped from outside, is replaced at once, same attempt
        (
            RestartPolicy(RestartCondition.NONE),
            dead(TaskState.ORPHANED, attempt=3),
            RestartDecision(True, 200.0, 3),
        ),
        (ANY, dead(TaskState.SHUTDOWN, attempt=2), RestartDecision(True, 200.0, 2)),
    ],
)
def test_restart_decision(policy: RestartPolicy, task: Task, expected: RestartDecision) -> None:
    assert decide(policy, task, [task], 1, now=200.0) == expected


def history(*ended_at: float, version: int = 1) -> list[Task]:
    return [
        dead(ended_at=t, created_at=t - 1, tid=f"t{i}", version=version)
        for i, t in enumerate(ended_at)
    ]


@pytest.mark.parametrize(
    ("policy", "ended", "restart"),
    [
        (RestartPolicy(max_attempts=2), (10.0, 20.0), True),
        (RestartPolicy(max_attempts=2), (10.0, 20.0, 30.0), False),  # 2 restarts used
        (RestartPolicy(max_attempts=2, window_s=60.0), (10.0, 20.0, 95.0), True),  # 2 in window
        (RestartPolicy(max_attempts=2, window_s=60.0), (50.0, 60.0, 95.0), False),
        (RestartPolicy(max_attempts=0), tuple(float(t) for t in range(20)), True),  # unlimited
    ],
)
def test_max_attempts_counts_exits_within_the_window(
    policy: RestartPolicy, ended: tuple[float, ...], restart: bool
) -> None:
    tasks = history(*ended)
    assert decide(policy, tasks[-1], tasks, 1, now=100.0).restart is restart


def test_max_attempts_counts_only_the_current_spec_version() -> None:
    tasks = history(10.0, 20.0, version=1) + history(30.0, version=2)
    policy = RestartPolicy(max_attempts=1)
    assert decide(policy, tasks[-1], tasks, 2, now=100.0).restart


def test_history_keeps_enough_tasks_to_count_max_attempts() -> None:
    assert history_limit(RestartPolicy()) == 5
    assert history_limit(RestartPolicy(max_attempts=3)) == 5
    assert history_limit(RestartPolicy(max_attempts=9)) == 10
