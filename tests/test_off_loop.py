"""While a thread of any agent computes, the GIL's switch interval is short and the cyclic
collector paused; both come back to what they were when the last of them ends, however their
work overlaps (both are the process's, and tests and simulations run several agents in one
process). `pack` gives msgpack's bytes, a piece at a time."""

from __future__ import annotations

import gc
import random
import sys
from typing import Any

import msgpack

from swarmlet import off_loop
from swarmlet.off_loop import THREAD_SWITCH_INTERVAL_S, gil_handed_back_quickly
from swarmlet.state.machine import ClusterState
from swarmlet.state.model import Task
from swarmlet.wire import codec as wire


def test_overlapping_reads_of_two_agents_restore_the_interval_the_process_had() -> None:
    before = sys.getswitchinterval()
    assert before != THREAD_SWITCH_INTERVAL_S
    assert gc.isenabled()
    first, second = gil_handed_back_quickly(), gil_handed_back_quickly()
    first.__enter__()
    second.__enter__()  # another agent's read begins while the first runs
    first.__exit__(None, None, None)
    assert sys.getswitchinterval() == THREAD_SWITCH_INTERVAL_S  # the second still reads
    assert not gc.isenabled()
    second.__exit__(None, None, None)
    assert sys.getswitchinterval() == before
    assert gc.isenabled()


def _plain_value(rng: random.Random, depth: int) -> Any:
    """A random msgpack value: scalars, and lists, tuples and maps (their items scalars when
    they are long), nested up to `depth`."""
    roll = rng.random()
    if depth == 0 or roll < 0.4:
        scalars = (None, True, rng.randint(-(2**63), 2**64 - 1), rng.random(), "é" * 40, b"\0" * 9)
        return rng.choice(scalars)
    size = rng.choice((0, 1, 2, 3, 255, 256, 257, 1000))
    child = depth - 1 if size < 100 else 0
    if roll < 0.6:
        return [_plain_value(rng, child) for _ in range(size)]
    if roll < 0.7:
        return tuple(_plain_value(rng, child) for _ in range(size))
    return {f"k{i}": _plain_value(rng, child) for i in range(size)}


def test_pack_gives_msgpacks_bytes_for_any_value() -> None:
    rng = random.Random(3)
    for _ in range(200):
        value = _plain_value(rng, 6)
        assert off_loop.pack(value) == msgpack.packb(value, use_bin_type=True)


def test_a_snapshot_packed_in_pieces_is_the_encoded_snapshot() -> None:
    state = ClusterState()
    state.tasks = {f"t{i}": Task(f"t{i}", "s1", i, 1, message="pending") for i in range(3000)}
    record = state.snapshot_record()
    assert off_loop.pack(wire.as_plain(record)) == wire.encode(record)


class _CountingPacker(msgpack.Packer):
    calls = 0

    def pack(self, obj: Any) -> Any:
        self.calls += 1
        return super().pack(obj)


def test_long_lists_near_the_top_are_packed_an_item_at_a_time() -> None:
    """What gives the loop the GIL back: a call per item of a long list, not one for all
    (msgpack's C code keeps the GIL until a call returns)."""
    rows = [{"id": i, "state": "pending"} for i in range(10_000)]
    packer = _CountingPacker(use_bin_type=True, autoreset=False)
    off_loop._pack_into(packer, {"ok": True, "result": {"tasks": rows}}, off_loop._PIECE_DEPTH)
    assert packer.calls >= len(rows)
    assert packer.bytes() == msgpack.packb({"ok": True, "result": {"tasks": rows}})
