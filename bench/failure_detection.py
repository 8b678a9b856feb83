"""Failure detection: kill -9 one of N agents, time until EVERY survivor reports it down.

    .venv/bin/python -m bench.failure_detection [--nodes 10] [--runs 10] [--json FILE]
    .venv/bin/python -m bench.failure_detection --soak [SECONDS=600] [--loss 0.05]

Side by side with HashiCorp Serf (LAN defaults) on the same loopback addresses, in the same run.
swarmlet: 3 managers + N-3 workers; the victim is a worker (round robin), so Raft is not disturbed
and only gossip is measured; each survivor's `node.ls` is polled through the control API every
50 ms; between runs the victim is restarted (`swarmlet agent --detach`) and the next run waits
until every agent sees every node ready. Serf: a fresh cluster per run (restarting a Serf agent
under the same name is also possible, but a fresh cluster is simpler and costs ~1 s); each
survivor's members list is polled over Serf's RPC every 50 ms.

A run's figure is the time from SIGKILL to the LAST survivor reporting the victim down (also kept:
the first survivor). The goal (issue): swarmlet median <= 2 s; Serf ~6 s on this kind of machine.

--soak: N agents, `--loss` packet loss between every pair of agent addresses (iptables statistic
rules, removed at the end) and a CPU hog pinned to core 0; every agent's `node.ls` is polled every
0.5 s and any node reported down by anyone is a false positive; at the end `swarmlet events
--no-follow --since START` of every agent is scanned for node down/suspect events, and the gossip
counters (suspects, refutes, failed) are compared with their values at the start.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import trio

from bench import common, reference
from bench.common import (
    REGISTRY,
    Agent,
    SwarmletCluster,
    fmt,
    log,
    print_table,
    ratio,
    summary,
)
from bench.reference import SerfCluster

SERF_REFERENCE_MEDIAN_S = 6.0
GOAL_MEDIAN_S = 2.0


def start_swarmlet(root: Path, nodes: int, managers: int) -> SwarmletCluster:
    cluster = SwarmletCluster(root / "swarmlet", common.free_port())
    t0 = time.monotonic()
    cluster.start(managers=min(managers, nodes), workers=max(0, nodes - managers))
    names = {a.name for a in cluster.agents}
    seen = common.wait_all_see_sync(
        cluster.agents,
        lambda v: set(v) >= names and all(v[n] == "ready" for n in names),
        timeout_s=60,
    )
    if len(seen) != len(cluster.agents):
        raise RuntimeError(f"swarmlet cluster did not converge: {sorted(seen)}")
    log(f"swarmlet: {nodes} agents up in {time.monotonic() - t0:.1f} s (port {cluster.port})")
    return cluster


def swarmlet_run(cluster: SwarmletCluster, victim: Agent, timeout_s: float) -> dict[str, Any]:
    survivors = [a for a in cluster.agents if a is not victim]
    pid = victim.pid()
    assert pid is not None

    async def go() -> dict[str, float]:
        start = time.monotonic()
        common.kill9(pid)
        return await common.wait_all_see(
            survivors, lambda v: v.get(victim.name) == "down", timeout_s=timeout_s, start=start
        )

    seen = trio.run(go)
    missing = sorted(a.name for a in survivors if a.name not in seen)
    return {
        "victim": victim.name,
        "all_s": max(seen.values()) if not missing else math.nan,
        "first_s": min(seen.values()) if seen else math.nan,
        "per_observer_s": seen,
        "missing": missing,
    }


def swarmlet_recover(cluster: SwarmletCluster, victim: Agent) -> float:
    t0 = time.monotonic()
    cluster.restart(victim)
    names = {a.name for a in cluster.agents}
    seen = common.wait_all_see_sync(
        cluster.agents, lambda v: all(v.get(n) == "ready" for n in names), timeout_s=60
    )
    if len(seen) != len(cluster.agents):
        raise RuntimeError(f"after restarting {victim.name}, not all see it ready: {sorted(seen)}")
    return time.monotonic() - t0


def serf_run(root: Path, nodes: int, run: int, timeout_s: float) -> dict[str, Any]:
    cluster = SerfCluster(root / "serf", common.free_port(), common.free_port())
    cluster.root.mkdir(parents=True, exist_ok=True)
    try:
        cluster.start(nodes)
        names = {a.name for a in cluster.agents}
        seen = trio.run(
            lambda: reference.serf_wait_all_see(
                cluster.agents,
                lambda v: all(v.get(n) == "alive" for n in names),
                timeout_s=30,
            )
        )
        if len(seen) != nodes:
            raise RuntimeError(f"serf cluster did not converge: {sorted(seen)}")
        victim = cluster.agents[1 + run % (nodes - 1)]
        survivors = [a for a in cluster.agents if a is not victim]
        assert victim.proc is not None
        pid = victim.proc.pid

        async def go() -> dict[str, float]:
            start = time.monotonic()
            common.kill9(pid)
            return await reference.serf_wait_all_see(
                survivors,
                lambda v: v.get(victim.name) == "failed",
                timeout_s=timeout_s,
                start=start,
            )

        seen = trio.run(go)
        victim.proc.wait()
        missing = sorted(a.name for a in survivors if a.name not in seen)
        return {
            "victim": victim.name,
            "all_s": max(seen.values()) if not missing else math.nan,
            "first_s": min(seen.values()) if seen else math.nan,
            "per_observer_s": seen,
            "missing": missing,
        }
    finally:
        cluster.stop_all()


def detection(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    result: dict[str, Any] = {"nodes": args.nodes, "runs": args.runs}
    if not args.no_swarmlet:
        cluster = start_swarmlet(root, args.nodes, args.managers)
        workers = [a for a in cluster.agents if a.role == "worker"] or cluster.agents[1:]
        runs = []
        for run in range(args.runs):
            victim = workers[run % len(workers)]
            r = swarmlet_run(cluster, victim, args.timeout)
            runs.append(r)
            log(
                f"swarmlet run {run + 1}/{args.runs}: {victim.name} down everywhere after "
                f"{fmt(r['all_s'])} s (first {fmt(r['first_s'])} s)"
                + (f"; NOT seen by {r['missing']}" if r["missing"] else "")
            )
            if r["missing"]:
                log(
                    f"agent.log of {r['missing'][0]}:\n"
                    f"{cluster.log_tail(cluster.by_name(r['missing'][0]))}"
                )
            rec = swarmlet_recover(cluster, victim)
            r["recover_s"] = rec
        result["swarmlet"] = runs
        for a in cluster.agents:
            pid = a.pid()
            if pid is not None:
                common.kill9(pid)
    if not args.no_serf:
        common.ensure_installed(["serf"], ["serf"])
        runs = []
        for run in range(args.runs):
            r = serf_run(root, args.nodes, run, args.timeout)
            runs.append(r)
            log(
                f"serf run {run + 1}/{args.runs}: {r['victim']} failed everywhere after "
                f"{fmt(r['all_s'])} s (first {fmt(r['first_s'])} s)"
            )
        result["serf"] = runs
    report_detection(result)
    return result


def report_detection(result: dict[str, Any]) -> None:
    rows = []
    medians: dict[str, float] = {}
    for system in ("swarmlet", "serf"):
        runs = result.get(system)
        if not runs:
            continue
        alls = [r["all_s"] for r in runs if not math.isnan(r["all_s"])]
        firsts = [r["first_s"] for r in runs if not math.isnan(r["first_s"])]
        s, f = summary(alls), summary(firsts)
        medians[system] = s["median"]
        result[f"{system}_summary"] = {"all": s, "first": f, "failed_runs": len(runs) - len(alls)}
        rows.append(
            [
                system,
                len(runs),
                len(runs) - len(alls),
                fmt(s["median"]),
                fmt(s["min"]),
                fmt(s["max"]),
                fmt(f["median"]),
            ]
        )
    print_table(
        f"failure detection, {result['nodes']} agents: "
        "kill -9 -> every survivor reports it down (s)",
        ["system", "runs", "undetected", "median", "min", "max", "first-observer median"],
        rows,
    )
    if "swarmlet" in medians:
        ref = medians.get("serf", math.nan)
        print(
            f"swarmlet/serf median ratio: {fmt(ratio(medians['swarmlet'], ref), 2)} "
            f"(serf measured here: {fmt(ref)} s; serf elsewhere: {SERF_REFERENCE_MEDIAN_S} s; "
            f"goal: swarmlet median <= {GOAL_MEDIAN_S} s)"
        )


# ----------------------------------------------------------------------------- soak


async def _soak_poll(agents: list[Agent], seconds: float, interval_s: float) -> dict[str, Any]:
    downs: list[dict[str, Any]] = []
    polls = {"ok": 0, "unanswered": 0}
    start = time.monotonic()

    async def poll(a: Agent) -> None:
        while time.monotonic() - start < seconds:
            view = await common.node_status(a, timeout_s=5)
            if view is None:
                polls["unanswered"] += 1
            else:
                polls["ok"] += 1
                for name, status in view.items():
                    if status != "ready":
                        downs.append(
                            {
                                "t_s": round(time.monotonic() - start, 2),
                                "observer": a.name,
                                "subject": name,
                                "status": status,
                            }
                        )
            await trio.sleep(interval_s)

    async with trio.open_nursery() as nursery:
        for a in agents:
            nursery.start_soon(poll, a)
    return {"down_reports": downs, "polls": polls}


def _counters(cluster: SwarmletCluster) -> dict[str, dict[str, int]]:
    """Gossip counters of every agent, through the control API (the CLI is slow under load)."""
    out: dict[str, dict[str, int]] = {}

    async def one(a: Agent) -> None:
        out[a.name] = {}
        with trio.move_on_after(10):
            try:
                c = (await a.client.call("status"))["counters"]
            except Exception:
                return
            out[a.name] = {k: c.get(f"gossip_{k}", 0) for k in ("suspects", "refutes", "failed")}

    async def all_agents() -> None:
        async with trio.open_nursery() as nursery:
            for a in cluster.agents:
                nursery.start_soon(one, a)

    trio.run(all_agents)
    return out


def _episodes(events: list[dict[str, Any]], gap_s: float) -> list[dict[str, Any]]:
    """Merge the events every agent logged about one suspicion into one episode: same subject and
    action, each within `gap_s` of the previous one (each agent records its own view)."""
    out: list[dict[str, Any]] = []

    def key(e: dict[str, Any]) -> tuple[str, str, float]:
        return str(e.get("subject")), str(e.get("action")), float(e.get("time", 0))

    for e in sorted(events, key=key):
        subject, action, t = key(e)
        last = out[-1] if out else None
        if (
            last
            and (last["subject"], last["action"]) == (subject, action)
            and t - last["last"] <= gap_s
        ):
            last["last"] = t
            last["observers"] += 1
        else:
            out.append(
                {"subject": subject, "action": action, "first": t, "last": t, "observers": 1}
            )
    return out


def soak(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    cluster = start_swarmlet(root, args.nodes, args.managers)
    hosts = [a.host for a in cluster.agents]
    for src in hosts:
        for dst in hosts:
            if src != dst:
                common.add_drop_rule(src, dst, args.loss)
    hog = common.start_cpu_hog(0)
    log(
        f"soak: {args.soak:.0f} s, {args.loss:.0%} loss on {len(hosts) * (len(hosts) - 1)} "
        f"address pairs, CPU hog pid {hog} on core 0"
    )
    before = _counters(cluster)
    wall_start = time.time()
    polled = trio.run(_soak_poll, cluster.agents, args.soak, 0.5)
    after = _counters(cluster)
    common.kill9(hog)
    common.remove_iptables_rules()
    events: dict[str, list[dict[str, Any]]] = {}
    for a in cluster.agents:
        try:
            out = common.run_cli(
                "events",
                "--no-follow",
                "--since",
                f"{wall_start:.3f}",
                "--format",
                "json",
                "--data-dir",
                str(a.data_dir),
            ).stdout
        except common.CommandFailed as exc:
            events[a.name] = [{"error": str(exc)}]
            continue
        lines = [json.loads(x) for x in out.splitlines() if x.strip().startswith("{")]
        events[a.name] = [e for e in lines if e.get("action") in ("down", "suspect")]
    distinct_events = _episodes(
        [e for evs in events.values() for e in evs if "error" not in e], gap_s=2.0
    )
    delta = {
        name: {k: after.get(name, {}).get(k, 0) - v for k, v in c.items()}
        for name, c in before.items()
    }
    totals = {
        k: sum(d.get(k, 0) for d in delta.values()) for k in ("suspects", "refutes", "failed")
    }
    downs = polled["down_reports"]
    result = {
        "mode": "soak",
        "seconds": args.soak,
        "loss": args.loss,
        "nodes": args.nodes,
        "down_reports": downs,
        "distinct_down_subjects": sorted({d["subject"] for d in downs}),
        "polls": polled["polls"],
        "events_down_or_suspect": events,
        "distinct_events": len(distinct_events),
        "episodes": distinct_events,
        "gossip_counter_delta": delta,
        "gossip_counter_totals": totals,
    }
    print_table(
        f"soak: {args.nodes} agents, {args.soak:.0f} s, {args.loss:.0%} loss, one core hogged",
        ["measure", "value"],
        [
            [
                "node.ls polls answered / unanswered",
                f"{polled['polls']['ok']} / {polled['polls']['unanswered']}",
            ],
            ["false positives: (observer, poll) reports of a node down", len(downs)],
            ["  distinct nodes ever reported down", len(result["distinct_down_subjects"])],
            [
                "down/suspect episodes in events (same subject+action within 2 s = one)",
                len(distinct_events),
            ],
            ["gossip suspicions raised (sum over agents)", totals["suspects"]],
            ["gossip refutations (sum)", totals["refutes"]],
            ["gossip members declared failed (sum)", totals["failed"]],
        ],
    )
    if downs:
        print("first down reports:", downs[:10])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", type=int, default=10)
    parser.add_argument("--managers", type=int, default=3)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--timeout", type=float, default=30.0, help="per-run detection timeout (s)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 5 agents, 2 runs")
    parser.add_argument("--no-serf", action="store_true")
    parser.add_argument("--no-swarmlet", action="store_true")
    parser.add_argument(
        "--soak",
        type=float,
        nargs="?",
        const=600.0,
        default=None,
        help="soak mode for SECONDS (default 600) instead of detection runs",
    )
    parser.add_argument("--loss", type=float, default=0.05, help="soak: packet loss per pair")
    parser.add_argument("--json", help="write the figures to this file")
    parser.add_argument("--keep", action="store_true", help="keep data dirs and logs")
    args = parser.parse_args()
    if args.quick:
        args.nodes, args.runs = min(args.nodes, 5), min(args.runs, 2)
        if args.soak is not None:
            args.soak = min(args.soak, 30.0)
    with common.cleanup_on_exit():
        root = common.make_root("detect", keep=args.keep)
        log(f"data dirs and logs under {root}")
        result = soak(args, root) if args.soak is not None else detection(args, root)
        if REGISTRY.keep_dirs:
            result["root"] = str(root)
        common.print_load()
        common.write_json(args.json, result)


if __name__ == "__main__":
    main()
