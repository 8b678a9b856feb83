"""Counting the trio tasks an event wakes: how a test shows that a notification reaches only
the tasks that have something to do (issue #20: each wake-up costs CPU, and some notifications
come with every applied batch of writes)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import trio


class _Woken(trio.abc.Instrument):
    def __init__(self, caller: trio.lowlevel.Task) -> None:
        self.caller = caller
        self.tasks: list[trio.lowlevel.Task] = []

    def task_scheduled(self, task: trio.lowlevel.Task) -> None:
        if task is not self.caller:  # the test's own task, resuming from its waits
            self.tasks.append(task)


@contextlib.contextmanager
def tasks_woken() -> Iterator[list[trio.lowlevel.Task]]:
    """The tasks other than the caller's scheduled to run within the block, in order."""
    instrument = _Woken(trio.lowlevel.current_task())
    trio.lowlevel.add_instrument(instrument)
    try:
        yield instrument.tasks
    finally:
        trio.lowlevel.remove_instrument(instrument)
