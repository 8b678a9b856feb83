"""raft.disk_thread: the Raft driver's disk calls run in one thread, in order, and hand back
their result or their exception; a caller is not cancelled out of a call under way (the driver
must not go on while a save may be half done); an idle thread ends and the next call starts
another, losing no call queued as it ends. Real threads, no mocks."""

from __future__ import annotations

import threading
import time

import pytest
import trio

from swarmlet.raft.disk_thread import DiskThread

TIMEOUT_S = 10


async def test_calls_run_in_one_other_thread_in_the_order_they_were_made() -> None:
    disk = DiskThread()
    ran: list[tuple[int, str]] = []

    def call(i: int) -> int:
        time.sleep(0.001 * (i % 3))  # the first calls are not always the quickest
        ran.append((i, threading.current_thread().name))
        return i * i

    results: dict[int, int] = {}

    async def caller(i: int) -> None:
        results[i] = await disk.run_sync(call, i)

    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            for i in range(20):
                nursery.start_soon(caller, i)
                await trio.lowlevel.checkpoint()  # queued in this order
    assert [i for i, _ in ran] == list(range(20))
    assert {name for _, name in ran} == {"raft-disk"}
    assert results == {i: i * i for i in range(20)}
    assert disk.threads_started == 1


async def test_an_exception_in_the_call_is_raised_in_the_caller() -> None:
    disk = DiskThread()

    def full_disk() -> None:
        raise OSError(28, "No space left on device")

    with trio.fail_after(TIMEOUT_S), pytest.raises(OSError, match="No space left"):
        await disk.run_sync(full_disk)
    assert await disk.run_sync(lambda: "still working") == "still working"


async def test_a_cancelled_caller_waits_for_its_call_to_finish() -> None:
    disk = DiskThread()
    started, release = threading.Event(), threading.Event()
    finished: list[bool] = []

    def save() -> str:
        started.set()
        release.wait(TIMEOUT_S)
        finished.append(True)
        return "saved"

    got: list[str] = []
    scope = trio.CancelScope()

    async def caller() -> None:
        with scope:
            got.append(await disk.run_sync(save))
            await trio.lowlevel.checkpoint()  # the cancellation lands here
            got.append("not cancelled")

    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(caller)
            await trio.to_thread.run_sync(started.wait, TIMEOUT_S)
            scope.cancel()
            await trio.sleep(0.05)  # the caller stays in its call meanwhile
            assert finished == []
            release.set()
    assert scope.cancelled_caught
    assert finished == [True]
    assert got == ["saved"]  # the call's result was returned, then the caller was cancelled


async def test_an_idle_thread_ends_and_the_next_call_starts_another() -> None:
    disk = DiskThread(idle_s=0.02)
    with trio.fail_after(TIMEOUT_S):
        assert await disk.run_sync(lambda: 1) == 1
        await trio.sleep(0.1)  # well past idle_s: the first thread has ended
        assert disk.threads_started == 1
        # Calls made while threads end and start: none is lost.
        for i in range(50):
            assert await disk.run_sync(lambda i=i: i) == i
            await trio.sleep(0.02 * (i % 2))
    assert disk.threads_started >= 2
