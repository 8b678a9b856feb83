"""What each screen of the dashboard lists, in order, and what `/` searches in each item. Pure.

The overview has four panes (nodes, services, tasks, events); a service's screen lists its tasks
with their history (each slot's newest task first), a node's screen the tasks it runs or ran, a
logs screen the lines received. An item is known by a stable key (an id, an event's seq, a log
line's number), so a selection stays on the same item while the lists change under it.

A filter keeps the items whose text contains every word of it, case-insensitively ("web fail"
keeps web's failed tasks).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from swarmlet.dashboard.view import LIVE_STATES, EventRow, NodeRow, ServiceRow, TaskCell, View


class Pane(enum.IntEnum):
    NODES = 0
    SERVICES = 1
    TASKS = 2
    EVENTS = 3


class Kind(enum.StrEnum):
    OVERVIEW = "overview"
    SERVICE = "service"  # key: the service's name
    NODE = "node"  # key: the node's id
    TASK = "task"  # key: the task's id
    LOGS = "logs"  # key: the service's name; `task` of the LogsTarget narrows it


# What a click on a screen line selects: (the overview's pane, or None for a drill-down's own
# list; the row's index in that list as shown, filtered; -1 for a line that only focuses a pane).
Hit = tuple[Pane | None, int]


@dataclass(frozen=True, slots=True)
class LogLine:
    """One line of `service.logs`, numbered in arrival order."""

    number: int
    task: str  # as the agent names it: SERVICE.SLOT.TASKID10
    node: str
    line: str


@dataclass(frozen=True, slots=True)
class Item:
    key: str
    text: str  # what `/` searches


def matches(text: str, filter_text: str) -> bool:
    words = filter_text.lower().split()
    haystack = text.lower()
    return all(w in haystack for w in words)


def node_item(n: NodeRow) -> Item:
    text = f"{n.name} {n.addr} {n.role} {n.status} {n.availability} {n.id}"
    return Item(n.id, text)


def service_item(s: ServiceRow) -> Item:
    text = f"{s.name} {s.image} {s.mode} {s.stack} {' '.join(s.ports)} {s.update_state}"
    return Item(s.name, text)


def task_name(t: TaskCell) -> str:
    return f"{t.service}.{t.slot or t.node_name or t.node_id[:8]}"


def task_item(t: TaskCell) -> Item:
    text = f"{task_name(t)} {t.node_name} {t.state} {t.desired_state} {t.error} {t.message} {t.id}"
    return Item(t.id, text)


def event_item(e: EventRow) -> Item:
    return Item(str(e.seq), f"{e.type} {e.action} {e.subject} {e.message}")


def service_tasks(view: View, service: str) -> list[TaskCell]:
    """The service's tasks: by slot (global: by node), each slot's newest first."""
    tasks = [t for t in view.history if t.service == service]
    tasks.sort(key=lambda t: (t.slot, t.node_name, -t.updated_at, t.id))
    return tasks


def node_tasks(view: View, node_id: str) -> list[TaskCell]:
    """The tasks a node runs (or was told to), then the rest of its history, newest first."""
    tasks = [t for t in view.history if t.node_id == node_id]
    tasks.sort(
        key=lambda t: (
            not (t.desired_state == "running" or t.state in LIVE_STATES),
            t.service,
            t.slot,
            -t.updated_at,
        )
    )
    return tasks


def all_items(
    view: View, kind: Kind, key: str, pane: Pane, logs: Sequence[LogLine] = ()
) -> list[Item]:
    """Every item of a screen's list, before any filter."""
    if kind is Kind.OVERVIEW:
        if pane is Pane.NODES:
            return [node_item(n) for n in view.nodes]
        if pane is Pane.SERVICES:
            return [service_item(s) for s in view.services]
        if pane is Pane.TASKS:
            return [task_item(t) for t in view.tasks]
        return [event_item(e) for e in view.events]
    if kind is Kind.SERVICE:
        return [task_item(t) for t in service_tasks(view, key)]
    if kind is Kind.NODE:
        return [task_item(t) for t in node_tasks(view, key)]
    if kind is Kind.LOGS:
        return [Item(str(line.number), f"{line.task} {line.node} {line.line}") for line in logs]
    return []  # a task's screen is a description, not a list


def items(
    view: View,
    kind: Kind,
    key: str,
    pane: Pane,
    filter_text: str,
    logs: Sequence[LogLine] = (),
) -> list[Item]:
    """The items a screen shows: its list, filtered."""
    found = all_items(view, kind, key, pane, logs)
    if not filter_text.strip():
        return found
    return [item for item in found if matches(item.text, filter_text)]
