"""The rolling-update state machine `update.step` (table tests)."""

from __future__ import annotations

import pytest

from swarmlet.leader.orchestrator.update import Progress, Step, step
from swarmlet.state.model import FailureAction, ServiceSpec, UpdateConfig, UpdateState, UpdateStatus

NOW = 50.0
UPDATING = UpdateStatus(UpdateState.UPDATING, started_at=10.0, message="update in progress")
ROLLING = UpdateStatus(UpdateState.ROLLBACK_STARTED, started_at=10.0)


def spec(
    parallelism: int = 1,
    action: FailureAction = FailureAction.PAUSE,
    ratio: float = 0.0,
    rollback_action: FailureAction = FailureAction.PAUSE,
) -> ServiceSpec:
    return ServiceSpec(
        "web",
        "img",
        update=UpdateConfig(
            parallelism=parallelism, failure_action=action, max_failure_ratio=ratio
        ),
        rollback=UpdateConfig(parallelism=2, failure_action=rollback_action),
    )


def progress(dirty: int = 0, busy: int = 0, failures: int = 0, *, settled: bool = True) -> Progress:
    return Progress(4, dirty, busy, failures, settled, "bad" if failures else "")


CASES = [
    # idle, nothing to do
    ("idle-clean", UpdateStatus(), spec(), progress(), False, True, Step()),
    # a dirty slot starts an update, with parallelism 1
    (
        "idle-start",
        UpdateStatus(),
        spec(),
        progress(dirty=4),
        False,
        True,
        Step(UpdateStatus(UpdateState.UPDATING, started_at=NOW, message="update in progress"), 1),
    ),
    (
        "completed-then-new-spec",
        UpdateStatus(UpdateState.COMPLETED, 1.0, 2.0),
        spec(parallelism=0),
        progress(dirty=3),
        False,
        True,
        Step(UpdateStatus(UpdateState.UPDATING, started_at=NOW, message="update in progress"), 3),
    ),
    # a paused update waits for the user, unless the spec changed again
    (
        "paused-waits",
        UpdateStatus(UpdateState.PAUSED, 10.0),
        spec(),
        progress(dirty=2),
        False,
        True,
        Step(),
    ),
    (
        "paused-superseded",
        UpdateStatus(UpdateState.PAUSED, 10.0),
        spec(),
        progress(dirty=2, failures=1),
        True,
        True,
        Step(UpdateStatus(UpdateState.UPDATING, started_at=NOW, message="update in progress"), 1),
    ),
    (
        "rollback-paused-waits",
        UpdateStatus(UpdateState.ROLLBACK_PAUSED, 10.0),
        spec(),
        progress(dirty=2),
        False,
        True,
        Step(),
    ),
    # a spec change that leaves nothing dirty lets an update in progress finish
    (
        "superseded-without-dirty-slots",
        UPDATING,
        spec(),
        progress(),
        True,
        True,
        Step(UpdateStatus(UpdateState.COMPLETED, 10.0, NOW, "update completed")),
    ),
    # parallelism counts slots in flight
    (
        "in-flight-full",
        UPDATING,
        spec(parallelism=2),
        progress(dirty=2, busy=2),
        False,
        True,
        Step(),
    ),
    (
        "in-flight-room",
        UPDATING,
        spec(parallelism=2),
        progress(dirty=2, busy=1),
        False,
        True,
        Step(None, 1),
    ),
    (
        "all-at-once",
        UPDATING,
        spec(parallelism=0),
        progress(dirty=3, busy=1),
        False,
        True,
        Step(None, 2),
    ),
    # completion waits for the monitor period
    ("monitoring", UPDATING, spec(), progress(settled=False), False, True, Step()),
    (
        "completed",
        UPDATING,
        spec(),
        progress(),
        False,
        True,
        Step(UpdateStatus(UpdateState.COMPLETED, 10.0, NOW, "update completed")),
    ),
    # failures: pause, continue, rollback
    (
        "failure-pauses",
        UPDATING,
        spec(),
        progress(dirty=2, failures=1),
        False,
        True,
        Step(
            UpdateStatus(
                UpdateState.PAUSED,
                10.0,
                message="update paused due to failure or early termination of task bad",
            )
        ),
    ),
    (
        "failure-continues",
        UPDATING,
        spec(action=FailureAction.CONTINUE),
        progress(dirty=2, failures=3),
        False,
        True,
        Step(None, 1),
    ),
    (
        "failure-within-ratio",
        UPDATING,
        spec(ratio=0.5),
        progress(dirty=2, failures=2),
        False,
        True,
        Step(None, 1),
    ),
    (
        "failure-rolls-back",
        UPDATING,
        spec(action=FailureAction.ROLLBACK),
        progress(dirty=2, failures=1),
        False,
        True,
        Step(rollback=True),
    ),
    (
        "failure-rollback-without-previous-spec-pauses",
        UPDATING,
        spec(action=FailureAction.ROLLBACK),
        progress(dirty=2, failures=1),
        False,
        False,
        Step(
            UpdateStatus(
                UpdateState.PAUSED,
                10.0,
                message="update paused due to failure or early termination of task bad "
                "(no previous spec to roll back to)",
            )
        ),
    ),
    # a rollback uses the rollback config and cannot roll back again
    ("rollback-parallelism", ROLLING, spec(), progress(dirty=4), False, True, Step(None, 2)),
    (
        "rollback-failure-pauses",
        ROLLING,
        spec(rollback_action=FailureAction.ROLLBACK),
        progress(dirty=2, failures=1),
        False,
        True,
        Step(
            UpdateStatus(
                UpdateState.ROLLBACK_PAUSED,
                10.0,
                message="rollback paused due to failure or early termination of task bad",
            )
        ),
    ),
    (
        "rollback-completed",
        ROLLING,
        spec(),
        progress(),
        False,
        True,
        Step(UpdateStatus(UpdateState.ROLLBACK_COMPLETED, 10.0, NOW, "rollback completed")),
    ),
]


@pytest.mark.parametrize(
    ("status", "service_spec", "prog", "stale", "can_rollback", "expected"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_update_step(
    status: UpdateStatus,
    service_spec: ServiceSpec,
    prog: Progress,
    stale: bool,
    can_rollback: bool,
    expected: Step,
) -> None:
    assert step(status, service_spec, prog, stale=stale, can_rollback=can_rollback, now=NOW) == (
        expected
    )
