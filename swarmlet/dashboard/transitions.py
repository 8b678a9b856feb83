"""The events pane's changes: one line per real task transition, grouped when many tasks of one
service move together. Pure: events in, events out.

Why: the leader records an event for every task of every `PutTasks` it commits
(`leader/duties.py`), and a scale or an update re-puts tasks whose states did not change, so the
raw feed repeats `running/running` for every existing replica. An operator wants what changed.

Rules, in order:

- A leader's task event (action `DESIRED/STATE`, message `task ID on NODE: ...`) is a
  restatement when the same task's previous event had the same action: it is dropped. The task is
  known by the id in its message (the subject `web.3` names a slot, which outlives its tasks),
  or by the subject when the message has none.
- Events of other kinds (the executor's `failed`/`unhealthy`, nodes, services, Raft) are each a
  change of their own and pass unchanged.
- Task events of one service with the same action within `GROUP_WINDOW_S` of the first of them
  are one line: the first one's time, subject the service, `count` the number of tasks, and the
  message listing the first few task subjects. Other events between them do not split a group:
  a scale's events interleave with the scheduler's.

Invariants: the output is in input order (of each group's first event); every task
transition of the input is counted exactly once in the output; nothing else is invented.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable
from dataclasses import dataclass

GROUP_WINDOW_S = 2.0
NAMES_SHOWN = 4

_LEADER_MESSAGE = re.compile(r"^task (\S+) on ")


@dataclass(frozen=True, slots=True)
class EventRow:
    """One line of the events pane (defined here, not in `view`, which uses this module)."""

    seq: int
    time: float  # seconds since the epoch
    type: str
    action: str
    subject: str
    message: str
    count: int = 1  # how many tasks' transitions this line stands for


def task_key(event: EventRow) -> str:
    """Which task an event is about: the id its message names, else its subject."""
    match = _LEADER_MESSAGE.match(event.message)
    return match.group(1) if match else event.subject


def service_of(subject: str) -> str:
    """`web` for the task subjects `web.3` and `web.a1b2c3d4`; a bare id stays itself."""
    service, dot, _ = subject.rpartition(".")
    return service if dot else subject


def is_leader_task_event(event: EventRow) -> bool:
    return event.type == "task" and "/" in event.action


def without_restatements(events: Iterable[EventRow]) -> list[EventRow]:
    """Drop the leader's task events that repeat the same task's previous action."""
    last_action: dict[str, str] = {}
    kept = []
    for e in events:
        if is_leader_task_event(e):
            key = task_key(e)
            if last_action.get(key) == e.action:
                continue
            last_action[key] = e.action
        kept.append(e)
    return kept


def _group_message(subjects: list[str]) -> str:
    shown = ", ".join(subjects[:NAMES_SHOWN])
    hidden = len(subjects) - NAMES_SHOWN
    return f"{len(subjects)} tasks: {shown}" + (f" and {hidden} more" if hidden > 0 else "")


def grouped(events: Iterable[EventRow], window_s: float = GROUP_WINDOW_S) -> list[EventRow]:
    """Task events of one service and action within `window_s` of a group's first become one."""
    out: list[EventRow] = []
    members: list[list[str]] = []  # per output row: the task subjects it stands for
    open_groups: dict[tuple[str, str], int] = {}  # (service, action) -> index in `out`
    for e in events:
        if e.type != "task":
            out.append(e)
            members.append([])
            continue
        key = (service_of(e.subject), e.action)
        at = open_groups.get(key)
        if at is not None and 0 <= e.time - out[at].time <= window_s:
            members[at].append(e.subject)
            first = out[at]
            out[at] = dataclasses.replace(
                first,
                subject=key[0],
                count=len(members[at]),
                message=_group_message(members[at]),
            )
            continue
        open_groups[key] = len(out)
        out.append(e)
        members.append([e.subject])
    return out


def changes(events: Iterable[EventRow], window_s: float = GROUP_WINDOW_S) -> list[EventRow]:
    """The events pane's lines: restatements dropped, then simultaneous moves grouped."""
    return grouped(without_restatements(events), window_s)
