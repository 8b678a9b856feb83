"""Scheduler throughput at scale: placements per second (a figure, not a pass/fail check).

.venv/bin/python -m bench.scheduler_throughput [--nodes 1000] [--tasks 100000] [--services 100]
"""

from __future__ import annotations

import argparse

from tests.leader.orchestrator.throughput import run_throughput


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nodes", type=int, default=1_000)
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--services", type=int, default=100)
    args = parser.parse_args()
    placed, elapsed_s = run_throughput(args.nodes, args.tasks, args.services)
    rate = placed / elapsed_s if elapsed_s else float("inf")
    print(
        f"scheduler: {placed} of {args.tasks} tasks ({args.services} services) on "
        f"{args.nodes} nodes in {elapsed_s:.3f} s: {rate:,.0f} placements/s"
    )


if __name__ == "__main__":
    main()
