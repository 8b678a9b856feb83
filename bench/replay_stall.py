"""A restart's replay: how long applying the log holds the event loop of a manager.

.venv/bin/python -m bench.replay_stall [--tasks 100000] [--entries 20000] [--kind config]
    [--runs 3] [--after-s 3] [--json FILE]

A manager that restarts applies every entry after its last snapshot before its state is
current: up to `RaftDriver.snapshot_max_entries` (20,000). Its gossip has started by then, so
while the Raft loop applies, the node answers no probe: held for more than the suspicion
timeout (about 1.5 s at 10 nodes), the others declare it dead and move its tasks. This builds
what such a manager finds on its disk (a snapshot of a cluster with `--tasks` tasks and
`--entries` small writes after it, all committed), starts a real `RaftDriver` on it, and
measures, beside it, how late a task that asks to wake every 10 ms wakes (the loop's longest
stall) until the log is applied and for `--after-s` more (20,000 entries make the log due for
compaction, whose snapshot is encoded in a thread beside the loop).

Kinds of writes: `config` (a config created, as `swarmlet config create` writes it), `status`
(one task's status report, the commonest write of a running cluster). No reference system:
etcd applies its log on a goroutine of its own, beside the one that answers its peers.

What is real: the storage on disk, the driver, the replicated state and its codec. The group
has one voter: it elects itself and commits its no-op, and otherwise only replays. Not here:
what an agent does each time the driver has applied a turn's entries (`on_applied`: its
keyring, executor, mesh and leader look at the new state, at most every 20 ms).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import cast

import trio

from bench.common import print_table, write_json
from swarmlet.node.replicated import ReplicatedState, encode_command
from swarmlet.raft.core import RaftConfig
from swarmlet.raft.driver import RaftDriver
from swarmlet.raft.storage import RaftStorage
from swarmlet.raft.types import ConfState, Entry, EntryKind, HardState, Snapshot, SnapshotMeta
from swarmlet.state.commands import AddNode, CreateSecret, CreateService, InitCluster, ReportTasks
from swarmlet.state.machine import ClusterState
from swarmlet.state.model import Node, Role, Secret, Service, ServiceSpec, Task, TaskState
from swarmlet.state.observed import TaskObservation
from swarmlet.wire.transport import Counters, Transport

NODE = "n1"
NODES = 10
SERVICES = 100
TICK_S = 0.01


def build_state(tasks: int) -> ClusterState:
    state = ClusterState()
    state.apply(InitCluster("bench", 1.0, b"w", b"m"))
    for i in range(NODES):
        role = Role.MANAGER if i == 0 else Role.WORKER
        node_id = NODE if i == 0 else f"n{i + 1}"
        state.apply(AddNode(Node(node_id, node_id, f"10.0.0.{i + 1}:7946", node_id, role)))
    for s in range(SERVICES):
        state.apply(CreateService(Service(f"s{s}", ServiceSpec(f"svc{s}", "img", replicas=0))))
    state.tasks = {
        f"t{i}": Task(
            f"t{i}",
            f"s{i % SERVICES}",
            i // SERVICES + 1,
            1,
            state=TaskState.RUNNING,
            node_id=NODE if i % NODES == 0 else f"n{i % NODES + 1}",
        )
        for i in range(tasks)
    }
    return state


def write(kind: str, i: int, tasks: int) -> bytes:
    if kind == "config":
        config = Secret(f"c{i}", f"config-{i}", b"x" * 64, is_config=True, created_at=float(i))
        return encode_command(CreateSecret(config))
    task_id = f"t{(i * 7919) % tasks}"
    node = NODE if int(task_id[1:]) % NODES == 0 else f"n{int(task_id[1:]) % NODES + 1}"
    seen = TaskObservation(task_id, TaskState.RUNNING, f"container {i}", since=float(i))
    return encode_command(ReportTasks(node, (seen,)))


def prepare(root: Path, tasks: int, entries: int, kind: str) -> int:
    """A storage as a restarting manager finds it; returns the last index."""
    snapshot_data = build_state(tasks).snapshot()
    storage = RaftStorage.open(root)
    meta = SnapshotMeta(index=1, term=1, conf=ConfState(voters=(NODE,)))
    storage.save(HardState(term=1, vote=NODE, commit=1), [], Snapshot(meta, snapshot_data))
    batch: list[Entry] = []
    for i in range(entries):
        batch.append(Entry(index=i + 2, term=1, kind=EntryKind.NORMAL, data=write(kind, i, tasks)))
        if len(batch) == 1000:
            storage.save(None, batch, None)
            batch = []
    last = entries + 1
    storage.save(HardState(term=1, vote=NODE, commit=last), batch, None)
    storage.close()
    return last


class _Offline:
    """The transport of a driver that reaches no peer: only its counters are used."""

    def __init__(self) -> None:
        self.counters = Counters()


async def replay(root: Path, last: int, after_s: float) -> dict[str, float]:
    storage = RaftStorage.open(root)
    started = time.perf_counter()
    driver: RaftDriver[object] = RaftDriver(
        NODE,
        storage,
        ReplicatedState(),
        cast(Transport, _Offline()),
        lambda _node_id: None,
        config=RaftConfig(),
        tick_interval_s=0.1,
    )
    loaded = time.perf_counter()
    stalls: list[float] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(driver.run)
        done: float | None = None
        while done is None or time.perf_counter() < done + after_s:
            asked = time.perf_counter()
            await trio.sleep(TICK_S)
            stalls.append(time.perf_counter() - asked - TICK_S)
            if done is None and driver.applied >= last:
                done = time.perf_counter()
        nursery.cancel_scope.cancel()
    compacted = storage.snapshot_index >= last
    storage.close()
    assert done is not None
    return {
        "load_s": loaded - started,
        "replay_s": done - loaded,
        "longest_stall_s": max(stalls),
        "stalls_over_100ms": sum(s > 0.1 for s in stalls),
        "wakeups": len(stalls),
        "compacted": float(compacted),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--entries", type=int, default=20_000)
    parser.add_argument("--kind", choices=("config", "status"), default="config")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--after-s", type=float, default=3.0)
    parser.add_argument("--json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-replay-") as tmp:
        prepared = Path(tmp) / "prepared"
        last = prepare(prepared, args.tasks, args.entries, args.kind)
        results = []
        for run in range(args.runs):  # each on a copy: a run compacts the log it replayed
            root = shutil.copytree(prepared, Path(tmp) / f"run{run}")
            results.append(trio.run(replay, root, last, args.after_s))
    medians = {key: statistics.median(r[key] for r in results) for key in results[0]}
    print_table(
        f"replay of {args.entries:,} '{args.kind}' writes after a snapshot of {args.tasks:,} "
        f"tasks (median of {args.runs})",
        ["figure", "value"],
        [
            [key, f"{value:.3f}" if isinstance(value, float) else value]
            for key, value in medians.items()
        ],
    )
    write_json(args.json, {"args": vars(args), "median": medians, "runs": results})


if __name__ == "__main__":
    main()
