"""A leader's plan goes to Raft in entries of a bounded number of tasks, in order
(`leader.duties.plan_entries`): as one entry, a plan over the driver's limit was refused and
planned again forever."""

from __future__ import annotations

import random

import pytest

from swarmlet.leader.duties import entry_tasks, plan_entries
from swarmlet.state.commands import Command, PutTasks, RemoveTasks, SetUpdateStatus
from swarmlet.state.model import Task, UpdateState, UpdateStatus


def tasks(service: str, n: int) -> tuple[Task, ...]:
    return tuple(Task(f"{service}-{i}", service, i + 1, 1) for i in range(n))


def flattened(commands: tuple[Command, ...] | list[Command]) -> list[tuple[str, object]]:
    """What a plan does, in order: one item per task put or removed, one per other command."""
    out: list[tuple[str, object]] = []
    for c in commands:
        if isinstance(c, PutTasks):
            out.extend(("put", t) for t in c.tasks)
        elif isinstance(c, RemoveTasks):
            out.extend(("remove", i) for i in c.task_ids)
        else:
            out.append(("other", c))
    return out


def test_a_small_plan_is_one_entry_as_it_was() -> None:
    plan: tuple[Command, ...] = (
        PutTasks(tasks("a", 3)),
        PutTasks(tasks("b", 2)),
        RemoveTasks(("x", "y")),
        SetUpdateStatus("a", UpdateStatus(UpdateState.COMPLETED)),
    )
    assert plan_entries(plan, 10) == [plan]


def test_a_large_command_is_cut_and_small_ones_share_an_entry() -> None:
    plan: tuple[Command, ...] = (
        PutTasks(tasks("a", 25)),
        PutTasks(tasks("b", 3)),
        RemoveTasks(tuple(f"r{i}" for i in range(12))),
        SetUpdateStatus("a", UpdateStatus(UpdateState.COMPLETED)),
    )
    entries = plan_entries(plan, 10)
    assert [entry_tasks(e) for e in entries] == [10, 10, 8, 10, 3]
    assert flattened([c for e in entries for c in e]) == flattened(plan)


@pytest.mark.parametrize("seed", range(20))
def test_every_task_once_in_order_and_no_entry_over_the_bound(seed: int) -> None:
    rng = random.Random(seed)
    plan: list[Command] = []
    for s in range(rng.randint(0, 8)):
        kind = rng.choice(("put", "remove", "status"))
        n = rng.randint(0, 40)
        if kind == "put":
            plan.append(PutTasks(tasks(f"s{s}", n)))
        elif kind == "remove":
            plan.append(RemoveTasks(tuple(f"s{s}-{i}" for i in range(n))))
        else:
            plan.append(SetUpdateStatus(f"s{s}", UpdateStatus(UpdateState.UPDATING)))
    bound = rng.randint(1, 15)
    entries = plan_entries(tuple(plan), bound)
    assert all(e and entry_tasks(e) <= bound for e in entries)
    assert flattened([c for e in entries for c in e]) == flattened(plan)
