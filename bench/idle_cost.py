"""Idle cost: RSS and CPU per agent of an idle cluster, over a minute, beside Serf.

    .venv/bin/python -m bench.idle_cost [--nodes 10] [--duration 60] [--json FILE]

swarmlet: N agents (3 managers, the rest workers), left alone for `--settle` seconds after every
agent sees every other ready, then measured for `--duration` seconds with psutil on the agent pids
(and any children): CPU% = CPU time (user + system) used over the window / wall time (100% = one
core); RSS sampled every second (median and maximum of each agent). Nothing polls the agents
during the window. Goal (issue): < 60 MB and < 2% of a core per agent.

Serf: N agents joined together (LAN defaults), measured the same way, after swarmlet (not at the
same time, so the two do not share the CPU during their windows).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import time
from pathlib import Path
from typing import Any

import psutil

from bench import common
from bench.common import REGISTRY, SwarmletCluster, fmt, log, print_table, summary
from bench.reference import SerfCluster

GOAL_RSS_MB = 60.0
GOAL_CPU_PERCENT = 2.0


def _tree(pid: int) -> list[psutil.Process]:
    try:
        p = psutil.Process(pid)
        return [p, *p.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _cpu_s(procs: list[psutil.Process]) -> float:
    total = 0.0
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            t = p.cpu_times()
            total += t.user + t.system
    return total


def _rss_bytes(procs: list[psutil.Process]) -> int:
    total = 0
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += p.memory_info().rss
    return total


def measure(pids: dict[str, int], duration_s: float) -> dict[str, dict[str, float]]:
    """Per agent: cpu_percent over the window, rss_mb median and max of 1 s samples."""
    trees = {name: _tree(pid) for name, pid in pids.items()}
    cpu0 = {name: _cpu_s(t) for name, t in trees.items()}
    rss: dict[str, list[float]] = {name: [] for name in trees}
    start = time.monotonic()
    while time.monotonic() - start < duration_s:
        for name, t in trees.items():
            rss[name].append(_rss_bytes(t) / 1e6)
        time.sleep(1.0)
    wall = time.monotonic() - start
    out = {}
    for name, t in trees.items():
        out[name] = {
            "cpu_percent": 100.0 * (_cpu_s(t) - cpu0[name]) / wall,
            "rss_mb_median": summary(rss[name])["median"],
            "rss_mb_max": max(rss[name]) if rss[name] else math.nan,
            "alive_at_end": float(all(p.is_running() for p in t)),
        }
    return out


def swarmlet_idle(args: argparse.Namespace, root: Path) -> dict[str, dict[str, float]]:
    cluster = SwarmletCluster(root / "swarmlet", common.free_port())
    cluster.start(managers=min(3, args.nodes), workers=max(0, args.nodes - 3))
    names = {a.name for a in cluster.agents}
    seen = common.wait_all_see_sync(
        cluster.agents, lambda v: all(v.get(x) == "ready" for x in names), timeout_s=60
    )
    if len(seen) != len(cluster.agents):
        raise RuntimeError(f"swarmlet cluster did not converge: {sorted(seen)}")
    log(f"swarmlet: {args.nodes} agents ready; settling {args.settle:.0f} s")
    time.sleep(args.settle)
    log(f"swarmlet: measuring {args.duration:.0f} s")
    try:
        return measure(cluster.pids(), args.duration)
    finally:
        for pid in cluster.pids().values():
            common.kill9(pid)


def serf_idle(args: argparse.Namespace, root: Path) -> dict[str, dict[str, float]]:
    common.ensure_installed(["serf"], ["serf"])
    cluster = SerfCluster(root / "serf", common.free_port(), common.free_port())
    cluster.root.mkdir(parents=True, exist_ok=True)
    try:
        cluster.start(args.nodes)
        log(f"serf: {args.nodes} agents joined; settling {args.settle:.0f} s")
        time.sleep(args.settle)
        log(f"serf: measuring {args.duration:.0f} s")
        pids = {a.name: a.proc.pid for a in cluster.agents if a.proc is not None}
        return measure(pids, args.duration)
    finally:
        cluster.stop_all()


def report(result: dict[str, Any]) -> None:
    rows = []
    for system in ("swarmlet", "serf"):
        per = result.get(system)
        if not per:
            continue
        cpu = [v["cpu_percent"] for v in per.values()]
        rss = [v["rss_mb_median"] for v in per.values()]
        rss_max = [v["rss_mb_max"] for v in per.values()]
        result[f"{system}_summary"] = {
            "cpu_percent": summary(cpu),
            "rss_mb": summary(rss),
            "rss_mb_max": max(rss_max),
            "cpu_percent_total": sum(cpu),
        }
        rows.append(
            [
                system,
                len(per),
                fmt(summary(rss)["median"], 1),
                fmt(max(rss_max), 1),
                fmt(summary(cpu)["median"], 2),
                fmt(max(cpu), 2),
                fmt(sum(cpu), 1),
            ]
        )
    print_table(
        f"idle cost per agent over {result['duration_s']:.0f} s ({result['nodes']} agents)",
        [
            "system",
            "agents",
            "RSS MB median",
            "RSS MB max",
            "CPU% median",
            "CPU% max",
            "CPU% all agents",
        ],
        rows,
    )
    print(f"(goal: < {GOAL_RSS_MB:.0f} MB and < {GOAL_CPU_PERCENT:.0f}% of a core per agent)")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", type=int, default=10)
    parser.add_argument("--duration", type=float, default=60.0, help="measurement window (s)")
    parser.add_argument("--settle", type=float, default=10.0, help="idle time before it (s)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 4 agents, 10 s")
    parser.add_argument("--no-serf", action="store_true")
    parser.add_argument("--no-swarmlet", action="store_true")
    parser.add_argument("--json", help="write the figures to this file")
    parser.add_argument("--keep", action="store_true", help="keep data dirs and logs")
    args = parser.parse_args()
    if args.quick:
        args.nodes, args.duration, args.settle = min(args.nodes, 4), 10.0, 2.0
    with common.cleanup_on_exit():
        root = common.make_root("idle", keep=args.keep)
        log(f"data dirs and logs under {root}")
        result: dict[str, Any] = {"nodes": args.nodes, "duration_s": args.duration}
        if not args.no_swarmlet:
            result["swarmlet"] = swarmlet_idle(args, root)
        if not args.no_serf:
            result["serf"] = serf_idle(args, root)
        report(result)
        if REGISTRY.keep_dirs:
            result["root"] = str(root)
        common.print_load()
        common.write_json(args.json, result)


if __name__ == "__main__":
    main()
