"""The Raft simulation (`tests.raft.sim`) with a second client that proposes many writes at once,
as the driver's group commit does (`RaftNode.propose_batch`): 2 to 64 entries in one append,
among the single writes, reads, faults, crashes and membership changes of the plain schedule, and
checked by the same invariants after every event.

Its draws come from an rng of their own, so the plain schedule's draws are what they are without
it (the timeline still moves with the extra entries). A sweep: `python -m tests.raft.sim_batches
--seeds 0-9999 [--chaos-ticks 2000] [-j 2]`; one seed, every event: `--seed N -v`.
"""

from __future__ import annotations

import argparse
import multiprocessing
import random
import sys
import time

from swarmlet.errors import NotLeaderError

from .sim import SimFailure, SimParams, Simulation, _parse_range

MAX_BATCH = 64


class BatchSimulation(Simulation):
    def __init__(
        self,
        seed: int,
        params: SimParams | None = None,
        *,
        verbose: bool = False,
        chaos_ticks: int | None = None,
    ) -> None:
        super().__init__(seed, params, verbose=verbose, chaos_ticks=chaos_ticks)
        self.batch_rng = random.Random(f"{seed}/batches")
        self.replay = self.replay.replace("tests.raft.sim ", "tests.raft.sim_batches ", 1)

    def chaos_tick(self) -> bool:
        if self.batch_rng.random() < self.params.write_rate / 4:
            self.write_batch()
        return super().chaos_tick()

    def write_batch(self) -> None:
        """Propose 2..MAX_BATCH writes in one step on a random live node (refused unless it
        leads: a batch is never redirected, as the driver fails it and its writers retry)."""
        live = [n for n in self.nodes.values() if n.raft is not None]
        if not live:
            return
        node = self.batch_rng.choice(live)
        raft = node.raft
        assert raft is not None
        batch = []
        for _ in range(self.batch_rng.randint(2, MAX_BATCH)):
            self.next_write += 1
            batch.append(b"w%d" % self.next_write)
        try:
            indexes = raft.propose_batch(batch)
        except NotLeaderError:
            return
        pending = self.pending.setdefault(node.node_id, {})
        for index, data in zip(indexes, batch, strict=True):
            pending[index] = (raft.term, data)
        self.count("batches_proposed")
        self.log(f"batch of {len(batch)} on {node.node_id} at {indexes.start}")
        self.after(node.node_id)


def run_seed(
    seed: int, *, verbose: bool = False, chaos_ticks: int | None = None
) -> BatchSimulation:
    sim = BatchSimulation(seed, verbose=verbose, chaos_ticks=chaos_ticks)
    sim.run()
    return sim


def _run_one(args: tuple[int, bool, int | None]) -> tuple[int, str | None, int, int]:
    seed, verbose, chaos_ticks = args
    try:
        sim = run_seed(seed, verbose=verbose, chaos_ticks=chaos_ticks)
    except SimFailure as e:
        return seed, str(e), 0, 0
    return seed, None, sim.stats.get("batches_proposed", 0), len(sim.acked)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.raft.sim_batches", description=__doc__)
    ap.add_argument("--seed", type=int, help="run one seed")
    ap.add_argument("--seeds", type=_parse_range, help="run a range of seeds, e.g. 0-9999")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every event")
    ap.add_argument("--chaos-ticks", type=int, help="override the length of the chaos phase")
    ap.add_argument("-j", "--jobs", type=int, default=1, help="worker processes for a sweep")
    args = ap.parse_args(argv)
    seeds = [args.seed] if args.seed is not None else list(args.seeds or range(100))
    work = [(seed, args.verbose, args.chaos_ticks) for seed in seeds]
    started = time.monotonic()
    failures = batches = acked = 0
    with multiprocessing.Pool(max(1, args.jobs)) as pool:
        for _seed, error, n_batches, n_acked in pool.imap_unordered(_run_one, work, chunksize=16):
            batches += n_batches
            acked += n_acked
            if error is not None:
                failures += 1
                print(f"FAIL {error}", flush=True)
    print(
        f"{len(seeds)} seeds, {failures} failed, {batches} batches proposed, {acked} writes "
        f"acknowledged, {time.monotonic() - started:.1f} s"
    )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
