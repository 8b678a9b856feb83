"""Restart policy: whether, when and with which attempt number a dead task's slot starts again.

Pure functions of the slot's history and `now`; table-tested. Swarm semantics (swarmkit
`manager/orchestrator/restart/restart.go`) with swarmlet's default back-off:

* condition `any` restarts after any exit, `on-failure` only after a failure (FAILED or REJECTED),
  `none` never. A task that ended because its node went down (ORPHANED) or that was stopped from
  outside (SHUTDOWN while desired running) is replaced at once whatever the condition: it did not
  exit by itself. Its replacement keeps its attempt number.
* `max_attempts` (0: unlimited) counts the slot's own exits (COMPLETE, FAILED, REJECTED) of the
  current spec version that ended within the last `window_s` (0: since that version began). Swarm
  keeps this history in the leader's memory; swarmlet reads it from the retained task history,
  which therefore keeps at least `max_attempts + 1` tasks per slot (see `history_limit`).
* a job's task that completed (exit 0) is done whatever the condition: a job runs each task to
  completion once (`orchestrator.jobs`); its failures are restarted as above.
* delay: `delay_s` if set (Swarm's fixed delay), else exponential: 0 s for the first restart of a
  crash streak, then 0.5 s doubling up to 30 s. A task that ran (from creation to its end) at least
  10 s ends the streak. `Task.attempt` counts restarts in the current streak.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from swarmlet.state.model import RestartCondition, RestartPolicy, Task, TaskState

BACKOFF_BASE_S = 0.5
BACKOFF_MAX_S = 30.0
BACKOFF_RESET_AFTER_S = 10.0
TASK_HISTORY_RETENTION = 5  # Swarm's default TaskHistoryRetentionLimit

_OWN_EXITS = (TaskState.COMPLETE, TaskState.FAILED, TaskState.REJECTED)


def backoff_delay_s(attempt: int) -> float:
    """Delay before restarting a task that was attempt `attempt` of its streak (0: the first)."""
    if attempt <= 0:
        return 0.0
    return min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2.0 ** min(attempt - 1, 16))


def history_limit(policy: RestartPolicy) -> int:
    """Terminal tasks kept per slot: Swarm's 5, or enough to count `max_attempts`."""
    return max(TASK_HISTORY_RETENTION, policy.max_attempts + 1)


@dataclass(frozen=True, slots=True)
class RestartDecision:
    restart: bool  # False: give up (the slot is done)
    at: float = 0.0  # not before this time
    attempt: int = 0  # the replacement's attempt number
    message: str = ""  # why not, when giving up


def exits_in_window(
    history: Iterable[Task], policy: RestartPolicy, spec_version: int, now: float
) -> int:
    return sum(
        1
        for t in history
        if t.state in _OWN_EXITS
        and t.spec_version == spec_version
        and (policy.window_s <= 0 or t.updated_at >= now - policy.window_s)
    )


def decide(
    policy: RestartPolicy,
    dead: Task,
    history: Iterable[Task],
    spec_version: int,
    now: float,
    *,
    job: bool = False,
) -> RestartDecision:
    """`dead` is the slot's latest task, terminal (state recorded) while desired running;
    `history` is every task of the slot, `dead` included; `updated_at` of a terminal task is when
    it ended. `job`: the service is a job."""
    if dead.state in (TaskState.ORPHANED, TaskState.SHUTDOWN):
        return RestartDecision(True, now, dead.attempt)
    if job and dead.state is TaskState.COMPLETE:
        return RestartDecision(False, message="completed")
    if policy.condition is RestartCondition.NONE:
        return RestartDecision(False, message=f"{dead.state}; restart policy: none")
    if policy.condition is RestartCondition.ON_FAILURE and dead.state is TaskState.COMPLETE:
        return RestartDecision(False, message="complete; restart policy: on-failure")
    if policy.max_attempts > 0:
        exits = exits_in_window(history, policy, spec_version, now)
        if exits > policy.max_attempts:
            return RestartDecision(
                False,
                message=f"{dead.state}; restart policy: {policy.max_attempts} attempts used",
            )
    ran_s = dead.updated_at - dead.created_at
    streak = 0 if ran_s >= BACKOFF_RESET_AFTER_S else dead.attempt
    delay_s = policy.delay_s if policy.delay_s is not None else backoff_delay_s(streak)
    return RestartDecision(True, dead.updated_at + delay_s, streak + 1)
