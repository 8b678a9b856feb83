"""The events pane shows changes: restatements dropped, simultaneous moves grouped (tables)."""

from __future__ import annotations

import pytest

from swarmlet.dashboard.transitions import (
    EventRow,
    changes,
    grouped,
    service_of,
    task_key,
    without_restatements,
)

_seq = iter(range(1, 10_000))


def leader(t: float, subject: str, task_id: str, action: str) -> EventRow:
    """A task event as the leader records it for every task of a `PutTasks`."""
    desired, state = action.split("/")
    message = f"task {task_id} on n1: desired {desired}, state {state}"
    return EventRow(next(_seq), t, "task", action, subject, message)


def other(t: float, type_: str, action: str, subject: str) -> EventRow:
    return EventRow(next(_seq), t, type_, action, subject, "")


def lines(rows: list[EventRow]) -> list[tuple[str, str, int]]:
    return [(r.subject, r.action, r.count) for r in rows]


@pytest.mark.parametrize(
    ("event", "key"),
    [
        (leader(0, "web.3", "abc123", "running/assigned"), "abc123"),
        (EventRow(1, 0, "task", "failed", "fffff", "exit code 1"), "fffff"),
        (EventRow(1, 0, "task", "running/running", "web.1", "no id here"), "web.1"),
    ],
)
def test_task_key_is_the_id_in_the_message_else_the_subject(event: EventRow, key: str) -> None:
    assert task_key(event) == key


@pytest.mark.parametrize(
    ("subject", "service"),
    [("web.3", "web"), ("demo_web.a1b2c3d4", "demo_web"), ("abcdef", "abcdef"), ("", "")],
)
def test_service_of_a_task_subject(subject: str, service: str) -> None:
    assert service_of(subject) == service


# Each case: the raw feed, and the (subject, action, count) lines the pane shows.
CASES = {
    "a scale re-puts running tasks: only the new ones show, as one line": (
        [
            leader(0.0, "web.1", "t1", "running/running"),
            leader(0.0, "web.2", "t2", "running/running"),
            leader(10.0, "web.1", "t1", "running/running"),  # restated by the scale
            leader(10.0, "web.2", "t2", "running/running"),
            leader(10.0, "web.3", "t3", "running/assigned"),
            leader(10.1, "web.4", "t4", "running/assigned"),
            leader(10.2, "web.5", "t5", "running/assigned"),
        ],
        [("web", "running/running", 2), ("web", "running/assigned", 3)],
    ),
    "one task moving is one line with its own subject": (
        [leader(0, "web.1", "t1", "running/assigned"), leader(5, "web.1", "t1", "running/running")],
        [("web.1", "running/assigned", 1), ("web.1", "running/running", 1)],
    ),
    "a new task in an old slot is a change, not a restatement": (
        [leader(0, "web.1", "t1", "running/running"), leader(9, "web.1", "t9", "running/running")],
        [("web.1", "running/running", 1), ("web.1", "running/running", 1)],
    ),
    "a task going back to an earlier action after another is a change": (
        [
            leader(0, "api.1", "t1", "running/running"),
            leader(5, "api.1", "t1", "shutdown/running"),
            leader(9, "api.1", "t1", "running/running"),
        ],
        [
            ("api.1", "running/running", 1),
            ("api.1", "shutdown/running", 1),
            ("api.1", "running/running", 1),
        ],
    ),
    "moves further apart than the window stay separate": (
        [leader(0, "web.1", "t1", "running/failed"), leader(3, "web.2", "t2", "running/failed")],
        [("web.1", "running/failed", 1), ("web.2", "running/failed", 1)],
    ),
    "two services moving together make two groups, interleaved events do not split them": (
        [
            leader(0.0, "web.1", "w1", "running/assigned"),
            leader(0.0, "api.1", "a1", "running/assigned"),
            other(0.1, "node", "suspect", "n3"),
            leader(0.2, "web.2", "w2", "running/assigned"),
            leader(0.3, "api.2", "a2", "running/assigned"),
        ],
        [
            ("web", "running/assigned", 2),
            ("api", "running/assigned", 2),
            ("n3", "suspect", 1),
        ],
    ),
    "different actions of one service are different lines": (
        [
            leader(0.0, "web.1", "w1", "shutdown/running"),
            leader(0.0, "web.4", "w4", "running/assigned"),
        ],
        [("web.1", "shutdown/running", 1), ("web.4", "running/assigned", 1)],
    ),
    "node, service and raft events pass unchanged even when repeated": (
        [
            other(0, "node", "down", "n3"),
            other(0, "node", "down", "n3"),
            other(1, "service", "updating", "api"),
            other(2, "raft", "elected", "n1"),
        ],
        [("n3", "down", 1), ("n3", "down", 1), ("api", "updating", 1), ("n1", "elected", 1)],
    ),
    "the executor's failures of several replicas group too": (
        [
            EventRow(1, 0.0, "task", "failed", "web.aaaa", "exit code 1"),
            EventRow(2, 0.5, "task", "failed", "web.bbbb", "exit code 1"),
        ],
        [("web", "failed", 2)],
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_events_pane_shows_changes(name: str) -> None:
    feed, expected = CASES[name]
    assert lines(changes(feed)) == expected


def test_group_keeps_its_first_time_and_lists_its_tasks() -> None:
    feed = [leader(100.0 + i / 10, f"web.{i}", f"t{i}", "running/assigned") for i in range(1, 7)]
    [row] = changes(feed)
    assert (row.time, row.seq, row.count) == (feed[0].time, feed[0].seq, 6)
    assert row.message == "6 tasks: web.1, web.2, web.3, web.4 and 2 more"


def test_every_transition_is_counted_once() -> None:
    feed = [
        leader(
            i * 0.7, f"s{i % 3}.{i}", f"t{i % 5}", ("running/running", "shutdown/running")[i % 2]
        )
        for i in range(40)
    ]
    kept = without_restatements(feed)
    assert sum(r.count for r in grouped(kept)) == len(kept)


def test_no_events_give_no_lines() -> None:
    assert changes([]) == []


def test_executor_events_are_named_like_the_leaders_and_group_with_them() -> None:
    from swarmlet.dashboard.view import TaskCell, event_rows

    def task(id_: str, slot: int) -> TaskCell:
        return TaskCell(id_, "web", slot, "n1id", "n1", "failed", "shutdown", None, "", 0.0)

    raw = [
        {
            "seq": 1,
            "time": 5.0,
            "type": "task",
            "action": "failed",
            "subject": "aaa",
            "message": "",
        },
        {
            "seq": 2,
            "time": 5.5,
            "type": "task",
            "action": "failed",
            "subject": "bbb",
            "message": "",
        },
        {
            "seq": 3,
            "time": 6.0,
            "type": "task",
            "action": "failed",
            "subject": "ccc",
            "message": "",
        },
    ]
    [grouped_row, unknown] = event_rows(raw, [task("aaa", 1), task("bbb", 2)])
    assert (grouped_row.subject, grouped_row.count) == ("web", 2)
    assert grouped_row.message == "2 tasks: web.1, web.2"
    assert (unknown.subject, unknown.count) == ("ccc", 1)  # a task no longer listed: its id
