"""Computation that would hold the event loop for long, run in a thread instead.

The loop goes on meanwhile (Raft's heartbeats, gossip, the mesh), but only as often as it gets
the GIL back: each time it gave it up for a system call it waits up to the interpreter's switch
interval, 5 ms by default, so a loop turn of a dozen system calls took tens of milliseconds,
and a leader creating 100,000 tasks sent its heartbeats late past the election timeout
(`bench.big_service`: an election in 3 of 5 runs at 5 ms, none in 6 at 1 ms). So while any such
thread runs, the interval is THREAD_SWITCH_INTERVAL_S; only meanwhile: at 1 ms throughout,
writes through a follower lost 4-8% (more hand-offs with the disk thread). And meanwhile the
cyclic garbage collector is paused: the thread's allocations set collections off, and a
collection holds the GIL whole (decoding a worker's 3.7 MiB frame of 174,080 objects beside a
heap of 300,000 held the loop 0.34 s in one; 0.03 s with the collector paused). What the thread
built dies by reference count; a cycle waits for the next collection after. The interval and the
collector are the process's: one count of the threads computing, for every agent in it (tests
and simulations run several), and what they were comes back when the last ends.

A C call holds the GIL until it returns, whatever the interval: msgpack packed a snapshot of
100,000 tasks (4.5 MB) in one call of 0.1 s, in which the loop could not run. `pack` packs the
same bytes a piece at a time.
"""

from __future__ import annotations

import contextlib
import gc
import sys
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import msgpack
import trio

T = TypeVar("T")

THREAD_SWITCH_INTERVAL_S = 0.001

# `pack`: a list longer than this is packed an item at a time, a shorter one whole; containers
# are looked into only this far from the top (where a snapshot's or a listing's long lists are).
_PIECE_ITEMS = 256
_PIECE_DEPTH = 4


class _Computing:
    threads = 0
    saved_interval = sys.getswitchinterval()
    collector_was_on = True


@contextlib.contextmanager
def gil_handed_back_quickly() -> Iterator[None]:
    """The short switch interval, and the collector paused, while the block runs (see the
    module's docstring)."""
    if not _Computing.threads:
        _Computing.saved_interval = sys.getswitchinterval()
        sys.setswitchinterval(THREAD_SWITCH_INTERVAL_S)
        _Computing.collector_was_on = gc.isenabled()
        gc.disable()
    _Computing.threads += 1
    try:
        yield
    finally:
        _Computing.threads -= 1
        if not _Computing.threads:
            sys.setswitchinterval(_Computing.saved_interval)
            if _Computing.collector_was_on:
                gc.enable()


async def run(compute: Callable[[], T], limiter: trio.CapacityLimiter | None = None) -> T:
    """`compute()` in a thread (one of `limiter`'s, if given), the GIL handed back quickly."""
    with gil_handed_back_quickly():
        return await trio.to_thread.run_sync(compute, limiter=limiter)


# A codec's work on more records or bytes than these goes to a thread (`run_if`); less stays on
# the loop, where a thread hop costs more than it would save.
HEAVY_RECORDS = 256
HEAVY_BYTES = 64 * 1024


async def run_if(heavy: bool, compute: Callable[[], T]) -> T:
    """`compute()` in a thread (as `run`) if `heavy`, else here on the loop."""
    return await run(compute) if heavy else compute()


def pack(value: Any) -> bytes:
    """`msgpack.packb(value)`, byte for byte, for a thread beside the loop: the long lists near
    the top of `value` are packed an item at a time, so that the loop gets the GIL back between
    items instead of waiting for the whole (see the module's docstring). The loop runs between
    pieces, so nothing it changes may be in `value`: a copy, or values built for the answer."""
    packer = msgpack.Packer(use_bin_type=True, autoreset=False)
    _pack_into(packer, value, _PIECE_DEPTH)
    return packer.bytes()


def _pack_into(packer: msgpack.Packer, value: Any, depth: int) -> None:
    kind = type(value)
    if depth and (kind is list or kind is tuple):
        packer.pack_array_header(len(value))
        if len(value) > _PIECE_ITEMS:
            for item in value:
                packer.pack(item)
        else:
            for item in value:
                _pack_into(packer, item, depth - 1)
    elif depth and kind is dict:
        packer.pack_map_header(len(value))
        for key, item in value.items():
            packer.pack(key)
            _pack_into(packer, item, depth - 1)
    else:
        packer.pack(value)
