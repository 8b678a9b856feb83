"""Leader failover: kill -9 the Raft leader of 3 managers, time until a write commits again.

    .venv/bin/python -m bench.leader_failover [--runs 10] [--json FILE]
    .venv/bin/python -m bench.leader_failover --soak [SECONDS=600]

The write is issued through a survivor in a retry loop that starts at the kill (each attempt
bounded by `--attempt-timeout`); the figure is kill -> first successful write. Side by side with a
3-member etcd cluster on 127.0.0.21-23 (default 100 ms heartbeat / 1000 ms election timeout),
whose leader is found through `/v3/maintenance/status` (what `etcdctl endpoint status` reads) and
whose writes are `/v3/kv/put` through a survivor's HTTP gateway: `etcdctl put` would add a process
start (~30 ms) to every attempt. Between runs the killed member is restarted and the next run
waits until all three agree on a leader.

swarmlet's write is `node.update` (a label on the survivor's own node), through the survivor's
control API: a replicated write through Raft that returns when applied on that survivor, after
forwarding to the leader. Goal (issue): swarmlet median 1.0 s; etcd measured elsewhere: 1.50 s.

--soak: an idle 3-manager cluster for SECONDS, then the same cluster busy (a loop of writes
through the leader) for SECONDS; every manager's `status` is polled every 0.5 s and term changes
(and leader changes) are counted: on a healthy cluster each one is spurious.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Awaitable, Callable
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
from bench.reference import EtcdCluster, EtcdMember

ETCD_REFERENCE_MEDIAN_S = 1.50
GOAL_MEDIAN_S = 1.0


async def _status(a: Agent, timeout_s: float = 2.0) -> dict[str, Any] | None:
    with trio.move_on_after(timeout_s):
        try:
            result: dict[str, Any] = await a.client.call("status")
            return result
        except Exception:
            return None
    return None


async def _statuses(agents: list[Agent]) -> dict[str, dict[str, Any] | None]:
    out: dict[str, dict[str, Any] | None] = {}

    async def one(a: Agent) -> None:
        out[a.name] = await _status(a)

    async with trio.open_nursery() as nursery:
        for a in agents:
            nursery.start_soon(one, a)
    return out


def swarmlet_leader(cluster: SwarmletCluster, timeout_s: float = 60) -> Agent:
    """Wait until the group is whole, then return the leader: every manager answers, all name the
    same leader and have applied the same index, and all count every manager as a voter (no
    learner). Without the last check a run can start while a just-joined or just-restarted
    manager is still a learner (or was demoted while it was down, swarmlet/membership.py rule 5):
    the group then has two voters, and killing the leader leaves no quorum at all."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        sts = trio.run(_statuses, cluster.agents)
        last = sts
        if all(sts.values()):
            leaders = {s["raft"]["leader_id"] for s in sts.values() if s}
            commits = {s["raft"]["applied_index"] for s in sts.values() if s}
            whole = all(
                s is not None
                and len(s["raft"]["voters"]) == len(cluster.agents)
                and not s["raft"]["learners"]
                for s in sts.values()
            )
            if len(leaders) == 1 and None not in leaders and len(commits) == 1 and whole:
                (leader_id,) = leaders
                for a in cluster.agents:
                    s = sts[a.name]
                    if s and s["node_id"] == leader_id:
                        return a
        time.sleep(0.1)
    raise RuntimeError(f"swarmlet managers do not agree on a leader: {last}")


async def first_success(
    attempt: Callable[[int], Awaitable[str | None]],
    *,
    interval_s: float,
    attempt_timeout_s: float,
    timeout_s: float,
    start: float,
) -> tuple[float, int, list[str]]:
    """Start `attempt(i)` every `interval_s` (each bounded by `attempt_timeout_s`, earlier ones
    left running) until one returns None (success): (seconds since start, attempts, errors).

    Attempts overlap so that the figure does not depend on a client timeout: a write sent to a
    dead leader may hang until the server gives up, and a fresh attempt 100 ms later must not wait
    for it. Each failed attempt returns an error text."""
    errors: list[str] = []
    attempts = 0
    done: list[float] = []

    async def one(i: int, nursery: trio.Nursery) -> None:
        with trio.move_on_after(attempt_timeout_s):
            error = await attempt(i)
            if error is None:
                if not done:
                    done.append(time.monotonic() - start)
                nursery.cancel_scope.cancel()
            elif len(errors) < 5:
                errors.append(error)

    with trio.move_on_after(timeout_s):
        async with trio.open_nursery() as nursery:
            while True:
                attempts += 1
                nursery.start_soon(one, attempts, nursery)
                await trio.sleep(interval_s)
    return (done[0] if done else math.nan), attempts, errors


def swarmlet_attempt(a: Agent, label: str) -> Callable[[int], Awaitable[str | None]]:
    async def attempt(i: int) -> str | None:
        try:
            await a.client.call("node.update", node=a.name, label_add=[f"{label}{i}"])
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"
        return None

    return attempt


async def write_until_ok(
    a: Agent, label: str, args: argparse.Namespace, start: float
) -> tuple[float, int, list[str]]:
    return await first_success(
        swarmlet_attempt(a, label),
        interval_s=args.attempt_interval,
        attempt_timeout_s=args.attempt_timeout,
        timeout_s=args.timeout,
        start=start,
    )


def swarmlet_runs(args: argparse.Namespace, root: Path) -> list[dict[str, Any]]:
    cluster = SwarmletCluster(root / "swarmlet", common.free_port())
    cluster.start(managers=3, workers=0)
    log(f"swarmlet: 3 managers up (port {cluster.port})")
    runs = []
    for run in range(args.runs):
        leader = swarmlet_leader(cluster)
        survivors = [a for a in cluster.agents if a is not leader]
        via = survivors[run % len(survivors)]
        # A warm-up write, so the survivor's forwarding path is established as in steady state.
        trio.run(write_until_ok, via, f"warm{run}=", args, time.monotonic())
        pid = leader.pid()
        assert pid is not None

        async def go(
            pid: int = pid, via: Agent = via, run: int = run
        ) -> tuple[float, int, list[str]]:
            start = time.monotonic()
            common.kill9(pid)
            return await write_until_ok(via, f"run{run}=", args, start)

        elapsed, attempts, errors = trio.run(go)
        sts = trio.run(_statuses, survivors)
        new_leader = next(
            (s["raft"]["leader_id"] for s in sts.values() if s and s["raft"]["leader_id"]), None
        )
        r = {
            "killed": leader.name,
            "via": via.name,
            "write_s": elapsed,
            "attempts": attempts,
            "errors": errors,
            "new_leader_id": new_leader,
            "terms": {n: s["raft"]["term"] if s else None for n, s in sts.items()},
        }
        runs.append(r)
        log(
            f"swarmlet run {run + 1}/{args.runs}: killed leader {leader.name}, write through "
            f"{via.name} ok after {fmt(elapsed)} s ({attempts} attempts)"
            + (f"; errors {errors[:2]}" if errors else "")
        )
        if math.isnan(elapsed):
            log(f"agent.log of {via.name}:\n{cluster.log_tail(via)}")
        cluster.restart(leader)
    for a in cluster.agents:
        pid = a.pid()
        if pid is not None:
            common.kill9(pid)
    return runs


def etcd_attempt(m: EtcdMember, key: str) -> Callable[[int], Awaitable[str | None]]:
    async def attempt(i: int) -> str | None:
        conn = reference.HttpConnection(m.host, m.client_port)
        try:
            body = {"key": reference.b64(key), "value": reference.b64(str(i))}
            status, reply = await conn.post_json("/v3/kv/put", body)
        except (OSError, ConnectionError, ValueError) as exc:
            return f"{type(exc).__name__}: {exc}"
        finally:
            await conn.aclose()
        if status == 200 and isinstance(reply, dict) and "error" not in reply:
            return None
        return f"HTTP {status}: {str(reply)[:120]}"

    return attempt


async def etcd_put_until_ok(
    m: EtcdMember, key: str, args: argparse.Namespace, start: float
) -> tuple[float, int, list[str]]:
    return await first_success(
        etcd_attempt(m, key),
        interval_s=args.attempt_interval,
        attempt_timeout_s=args.attempt_timeout,
        timeout_s=args.timeout,
        start=start,
    )


def etcd_runs(args: argparse.Namespace, root: Path) -> list[dict[str, Any]]:
    common.ensure_installed(["etcd", "etcdctl"], ["etcd-server", "etcd-client"])
    cluster = EtcdCluster(
        root / "etcd", peer_port=common.free_port(), client_port=common.free_port()
    )
    cluster.root.mkdir(parents=True, exist_ok=True)
    cluster.start()
    log(f"etcd: 3 members up (client port {cluster.client_port})")
    runs = []
    try:
        for run in range(args.runs):
            leader = cluster.wait_leader(60)
            survivors = [m for m in cluster.members if m is not leader]
            via = survivors[run % len(survivors)]
            trio.run(etcd_put_until_ok, via, "bench-warm", args, time.monotonic())
            assert leader.proc is not None
            pid = leader.proc.pid

            async def go(pid: int = pid, via: EtcdMember = via) -> tuple[float, int, list[str]]:
                start = time.monotonic()
                common.kill9(pid)
                return await etcd_put_until_ok(via, "bench", args, start)

            elapsed, attempts, errors = trio.run(go)
            leader.proc.wait()
            runs.append(
                {
                    "killed": leader.name,
                    "via": via.name,
                    "write_s": elapsed,
                    "attempts": attempts,
                    "errors": errors,
                }
            )
            log(
                f"etcd run {run + 1}/{args.runs}: killed leader {leader.name}, put through "
                f"{via.name} ok after {fmt(elapsed)} s ({attempts} attempts)"
                + (f"; errors {errors[:2]}" if errors else "")
            )
            cluster.launch(leader)
    finally:
        cluster.stop_all()
    return runs


def report(result: dict[str, Any]) -> None:
    rows = []
    medians: dict[str, float] = {}
    for system in ("swarmlet", "etcd"):
        runs = result.get(system)
        if not runs:
            continue
        ok = [r["write_s"] for r in runs if not math.isnan(r["write_s"])]
        s = summary(ok)
        medians[system] = s["median"]
        result[f"{system}_summary"] = s | {"failed_runs": len(runs) - len(ok)}
        rows.append(
            [system, len(runs), len(runs) - len(ok), fmt(s["median"]), fmt(s["min"]), fmt(s["max"])]
        )
    print_table(
        "leader failover, 3 members: "
        "kill -9 leader -> first write committed through a survivor (s)",
        ["system", "runs", "no write", "median", "min", "max"],
        rows,
    )
    if "swarmlet" in medians:
        ref = medians.get("etcd", math.nan)
        print(
            f"swarmlet/etcd median ratio: {fmt(ratio(medians['swarmlet'], ref), 2)} "
            f"(etcd measured here: {fmt(ref)} s; elsewhere: {ETCD_REFERENCE_MEDIAN_S} s; "
            f"goal: swarmlet median <= {GOAL_MEDIAN_S} s)"
        )


# ----------------------------------------------------------------------------- soak


async def _watch_terms(cluster: SwarmletCluster, seconds: float, busy: bool) -> dict[str, Any]:
    terms: dict[str, list[tuple[float, int, str | None]]] = {a.name: [] for a in cluster.agents}
    writes = {"ok": 0, "failed": 0}
    latencies: list[float] = []
    start = time.monotonic()

    async def watch(a: Agent) -> None:
        while time.monotonic() - start < seconds:
            s = await _status(a)
            if s is not None:
                term, leader = s["raft"]["term"], s["raft"]["leader_id"]
                seq = terms[a.name]
                if not seq or seq[-1][1:] != (term, leader):
                    seq.append((round(time.monotonic() - start, 2), term, leader))
            await trio.sleep(0.5)

    async def write_loop() -> None:
        i = 0
        while time.monotonic() - start < seconds:
            a = cluster.agents[i % len(cluster.agents)]
            i += 1
            t0 = time.monotonic()
            with trio.move_on_after(10):
                try:
                    await a.client.call("node.update", node=a.name, label_add=[f"busy={i % 10}"])
                    writes["ok"] += 1
                    latencies.append(time.monotonic() - t0)
                    continue
                except Exception:
                    pass
            writes["failed"] += 1
            await trio.sleep(0.05)

    async with trio.open_nursery() as nursery:
        for a in cluster.agents:
            nursery.start_soon(watch, a)
        if busy:
            nursery.start_soon(write_loop)
    all_terms = sorted({t for seq in terms.values() for _, t, _ in seq})
    leaders = sorted({str(ld) for seq in terms.values() for _, _, ld in seq})
    return {
        "term_changes": len(all_terms) - 1 if all_terms else 0,
        "terms_seen": all_terms,
        "leaders_seen": leaders,
        "timeline": terms,
        "writes": writes,
        "write_latency": summary(latencies) if busy else None,
    }


def soak(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    cluster = SwarmletCluster(root / "swarmlet", common.free_port())
    cluster.start(managers=3, workers=0)
    swarmlet_leader(cluster)
    log(f"soak: idle {args.soak:.0f} s, then busy {args.soak:.0f} s")
    idle = trio.run(_watch_terms, cluster, args.soak, False)
    log(f"idle: {idle['term_changes']} term changes")
    busy = trio.run(_watch_terms, cluster, args.soak, True)
    log(f"busy: {busy['term_changes']} term changes, writes {busy['writes']}")
    lat = busy["write_latency"] or {}
    print_table(
        f"leader stability, 3 managers, {args.soak:.0f} s each",
        ["phase", "term changes", "terms seen", "leaders seen", "writes ok/failed", "write p50 s"],
        [
            ["idle", idle["term_changes"], idle["terms_seen"], len(idle["leaders_seen"]), "-", "-"],
            [
                "busy",
                busy["term_changes"],
                busy["terms_seen"],
                len(busy["leaders_seen"]),
                f"{busy['writes']['ok']}/{busy['writes']['failed']}",
                fmt(lat.get("median", math.nan)),
            ],
        ],
    )
    return {"mode": "soak", "seconds": args.soak, "idle": idle, "busy": busy}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--timeout", type=float, default=30.0, help="per-run write timeout (s)")
    parser.add_argument("--attempt-timeout", type=float, default=5.0, help="one write attempt (s)")
    parser.add_argument(
        "--attempt-interval",
        type=float,
        default=0.1,
        help="a new write attempt starts this often (s), earlier ones still running",
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 runs")
    parser.add_argument("--no-etcd", action="store_true")
    parser.add_argument("--no-swarmlet", action="store_true")
    parser.add_argument(
        "--soak",
        type=float,
        nargs="?",
        const=600.0,
        default=None,
        help="soak mode: SECONDS idle then SECONDS busy (default 600)",
    )
    parser.add_argument("--json", help="write the figures to this file")
    parser.add_argument("--keep", action="store_true", help="keep data dirs and logs")
    args = parser.parse_args()
    if args.quick:
        args.runs = min(args.runs, 2)
        if args.soak is not None:
            args.soak = min(args.soak, 20.0)
    with common.cleanup_on_exit():
        root = common.make_root("failover", keep=args.keep)
        log(f"data dirs and logs under {root}")
        if args.soak is not None:
            result = soak(args, root)
        else:
            result = {"runs": args.runs}
            if not args.no_swarmlet:
                result["swarmlet"] = swarmlet_runs(args, root)
            if not args.no_etcd:
                result["etcd"] = etcd_runs(args, root)
            report(result)
        if REGISTRY.keep_dirs:
            result["root"] = str(root)
        common.print_load()
        common.write_json(args.json, result)


if __name__ == "__main__":
    main()
