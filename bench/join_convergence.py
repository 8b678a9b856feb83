"""Join convergence: time from `swarmlet join` starting until every member sees the new agent ready.

    .venv/bin/python -m bench.join_convergence [--nodes 10 30] [--runs 10] [--json FILE]

For each cluster size N: N-1 agents are started (3 managers, the rest workers); then, in each run,
a new worker joins on a fresh address (127.0.0.(N+run)) with `swarmlet join` (the clock starts just
before the process is spawned, so Python start-up counts: it is part of what a user waits for),
and every member's `node.ls` (through the control API) is polled until all N report it ready.
The joiner then leaves (`swarmlet leave`), so each run joins an N-1 member cluster.

Side by side with Serf (LAN defaults): N-1 agents joined together; each run spawns `serf agent
-join` for the new member and polls every member's RPC `members` until all N see it alive; it then
leaves gracefully. Serf measured elsewhere: 0.33 s median at N = 10.

Observation (swarmlet): by default each member's `status` (its local view: `gossip.alive`, the
number of nodes of its replicated node list that gossip sees alive, reaching N); `--probe node.ls`
polls `node.ls` instead, which costs a ReadIndex barrier through the leader per poll: at N = 30 on
this 2-core machine those polls (30 every 150 ms) timed out (> 2 s; a CLI `node ls` took 13.7 s)
and no member was ever seen to report the joiner ready, so the cheaper probe is the default.

Under load (`--load K`, issue #20: "at most 2x Serf's time in the same run under load"): K busy
processes (`common.start_cpu_hog`, one per core in turn) run through every measurement of both
systems, so swarmlet and Serf share the CPU with the same competitors.

Polling: every 50 ms per member at N <= 10, scaled as 50 ms * N / 10 above (at N = 30 every
150 ms), so that the observers' own load (N clients, each a read barrier on swarmlet) stays
roughly constant on a small machine; the resolution of a figure is therefore about one interval.
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import trio

from bench import common, reference
from bench.common import (
    REGISTRY,
    SwarmletCluster,
    fmt,
    log,
    print_table,
    ratio,
    summary,
)
from bench.reference import SerfCluster

SERF_REFERENCE_MEDIAN_S = 0.33


def poll_interval_s(n: int) -> float:
    return 0.05 * max(1.0, n / 10)


def swarmlet_size(args: argparse.Namespace, root: Path, n: int) -> list[dict[str, Any]]:
    cluster = SwarmletCluster(root / f"swarmlet-{n}", common.free_port())
    t0 = time.monotonic()
    cluster.start(managers=min(args.managers, n - 1), workers=max(0, n - 1 - args.managers))
    names = {a.name for a in cluster.agents}
    seen = common.wait_all_see_sync(
        cluster.agents, lambda v: all(v.get(x) == "ready" for x in names), timeout_s=120
    )
    if len(seen) != len(cluster.agents):
        raise RuntimeError(f"swarmlet {n - 1} agents did not converge: {sorted(seen)}")
    log(f"swarmlet: {n - 1} agents up in {time.monotonic() - t0:.1f} s")
    runs = []
    interval = poll_interval_s(n)
    try:
        for run in range(args.runs):
            index = n + run
            joiner = cluster._agent(index, "worker", f"n{index}")
            observers = [*cluster.agents, joiner]
            cmd = cluster.join_command(joiner)

            async def go(
                cmd: list[str] = cmd,
                name: str = joiner.name,
                observers: list[common.Agent] = observers,
            ) -> tuple[dict[str, float], float]:
                start = time.monotonic()
                proc = await trio.lowlevel.open_process(
                    cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
                )
                cli_s: list[float] = []

                async def reap() -> None:
                    await proc.wait()
                    cli_s.append(time.monotonic() - start)

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(reap)
                    if args.probe == "node.ls":
                        seen = await common.wait_all_see(
                            observers,
                            lambda v: v.get(name) == "ready",
                            timeout_s=args.timeout,
                            interval_s=interval,
                            start=start,
                        )
                    else:
                        # Every member of the N-1 was ready before (checked), and the ones that
                        # left are down: `alive` reaching N means this observer has the new node
                        # in its replicated node list and gossip sees it alive.
                        seen = await common.wait_all_status(
                            observers,
                            lambda st: int(st["gossip"]["alive"]) >= n,
                            timeout_s=args.timeout,
                            interval_s=interval,
                            start=start,
                        )
                return seen, (cli_s[0] if cli_s else math.nan)

            seen, cli_s = trio.run(go)
            missing = sorted(a.name for a in observers if a.name not in seen)
            r: dict[str, Any] = {
                "joiner": joiner.name,
                "all_s": max(seen.values()) if not missing else math.nan,
                "cli_s": cli_s,
                "per_observer_s": seen,
                "missing": missing,
            }
            runs.append(r)
            log(
                f"swarmlet N={n} run {run + 1}/{args.runs}: {joiner.name} ready everywhere after "
                f"{fmt(r['all_s'])} s (join command took {fmt(cli_s)} s)"
                + (f"; NOT seen by {missing}" if missing else "")
            )
            pid = joiner.pid()
            try:
                common.run_cli("leave", "--data-dir", str(joiner.data_dir), timeout=30)
            except (common.CommandFailed, subprocess.TimeoutExpired) as exc:
                log(f"leave of {joiner.name} failed ({exc}); killing it")
            if pid is not None and common.alive(pid):
                common.kill9(pid)
    finally:
        for a in cluster.agents:
            pid = a.pid()
            if pid is not None:
                common.kill9(pid)
    return runs


def serf_size(args: argparse.Namespace, root: Path, n: int) -> list[dict[str, Any]]:
    cluster = SerfCluster(root / f"serf-{n}", common.free_port(), common.free_port())
    cluster.root.mkdir(parents=True, exist_ok=True)
    runs = []
    interval = poll_interval_s(n)
    try:
        cluster.start(n - 1)
        names = {a.name for a in cluster.agents}
        seen = trio.run(
            lambda: reference.serf_wait_all_see(
                cluster.agents, lambda v: all(v.get(x) == "alive" for x in names), timeout_s=60
            )
        )
        if len(seen) != n - 1:
            raise RuntimeError(f"serf {n - 1} agents did not converge: {sorted(seen)}")
        base = list(cluster.agents)
        for run in range(args.runs):
            index = n + run

            async def go(index: int = index) -> tuple[reference.SerfAgent, dict[str, float]]:
                start = time.monotonic()
                joiner = cluster.spawn(index, join=base[0].addr)
                seen = await reference.serf_wait_all_see(
                    [*base, joiner],
                    lambda v: v.get(joiner.name) == "alive",
                    timeout_s=args.timeout,
                    interval_s=interval,
                    start=start,
                )
                return joiner, seen

            joiner, seen = trio.run(go)
            missing = sorted(a.name for a in [*base, joiner] if a.name not in seen)
            r: dict[str, Any] = {
                "joiner": joiner.name,
                "all_s": max(seen.values()) if not missing else math.nan,
                "per_observer_s": seen,
                "missing": missing,
            }
            runs.append(r)
            log(
                f"serf N={n} run {run + 1}/{args.runs}: {joiner.name} alive everywhere after "
                f"{fmt(r['all_s'])} s" + (f"; NOT seen by {missing}" if missing else "")
            )
            subprocess.run(
                ["serf", "leave", "-rpc-addr", f"{joiner.host}:{joiner.rpc_port}"],
                capture_output=True,
                timeout=30,
                check=False,
            )
            assert joiner.proc is not None
            try:
                joiner.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                common.kill9(joiner.proc.pid)
    finally:
        cluster.stop_all()
    return runs


def report(result: dict[str, Any], sizes: list[int]) -> None:
    rows = []
    for n in sizes:
        medians: dict[str, float] = {}
        for system in ("swarmlet", "serf"):
            runs = result.get(f"{system}_{n}")
            if runs is None:
                continue
            ok = [r["all_s"] for r in runs if not math.isnan(r["all_s"])]
            s = summary(ok)
            medians[system] = s["median"]
            result[f"{system}_{n}_summary"] = s | {"failed_runs": len(runs) - len(ok)}
            extra = ""
            if system == "swarmlet":
                cli = [r["cli_s"] for r in runs if not math.isnan(r["cli_s"])]
                extra = fmt(summary(cli)["median"])
            rows.append(
                [
                    system,
                    n,
                    len(runs),
                    len(runs) - len(ok),
                    fmt(s["median"]),
                    fmt(s["min"]),
                    fmt(s["max"]),
                    extra,
                ]
            )
        if "swarmlet" in medians:
            rows.append(
                [
                    "  swarmlet/serf",
                    n,
                    "",
                    "",
                    fmt(ratio(medians["swarmlet"], medians.get("serf", math.nan)), 2),
                    "",
                    "",
                    "",
                ]
            )
    print_table(
        "join convergence: join starts -> every member sees the new one ready/alive (s)",
        ["system", "N", "runs", "unconverged", "median", "min", "max", "join cmd median"],
        rows,
    )
    print(f"(serf measured elsewhere: {SERF_REFERENCE_MEDIAN_S} s median at N = 10)")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--nodes",
        type=int,
        nargs="+",
        default=[10, 30],
        help="cluster sizes N (members after the join)",
    )
    parser.add_argument("--managers", type=int, default=3)
    parser.add_argument(
        "--probe",
        choices=["status", "node.ls"],
        default="status",
        help="swarmlet observation: `status` (alive count of the local view, cheap) or "
        "`node.ls` (a ReadIndex barrier through the leader per poll, too heavy at N = 30 here)",
    )
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--timeout", type=float, default=60.0, help="per-run timeout (s)")
    parser.add_argument("--quick", action="store_true", help="smoke run: N = 5, 2 runs")
    parser.add_argument(
        "--load",
        type=int,
        default=0,
        metavar="K",
        help="K busy processes on the cores, in turn, throughout (0: none)",
    )
    parser.add_argument("--no-serf", action="store_true")
    parser.add_argument("--no-swarmlet", action="store_true")
    parser.add_argument("--json", help="write the figures to this file")
    parser.add_argument("--keep", action="store_true", help="keep data dirs and logs")
    args = parser.parse_args()
    if args.quick:
        args.nodes, args.runs = [5], min(args.runs, 2)
    if max(args.nodes) + args.runs > 254:
        parser.error("N + runs must stay below 255 (one 127.0.0.x address per agent)")
    with common.cleanup_on_exit():
        root = common.make_root("join", keep=args.keep)
        log(f"data dirs and logs under {root}")
        result: dict[str, Any] = {"sizes": args.nodes, "runs": args.runs, "load": args.load}
        hogs = [common.start_cpu_hog(k % (os.cpu_count() or 1)) for k in range(args.load)]
        if hogs:
            log(f"under load: {len(hogs)} busy processes ({', '.join(map(str, hogs))})")
        for n in args.nodes:
            if not args.no_swarmlet:
                try:
                    result[f"swarmlet_{n}"] = swarmlet_size(args, root, n)
                except (RuntimeError, common.CommandFailed, subprocess.TimeoutExpired) as exc:
                    log(f"swarmlet N={n} could not run: {exc}")
                    result[f"swarmlet_{n}_error"] = str(exc)
            if not args.no_serf:
                common.ensure_installed(["serf"], ["serf"])
                result[f"serf_{n}"] = serf_size(args, root, n)
        for pid in hogs:
            common.kill9(pid)
        report(result, args.nodes)
        if REGISTRY.keep_dirs:
            result["root"] = str(root)
        common.print_load()
        common.write_json(args.json, result)


if __name__ == "__main__":
    main()
