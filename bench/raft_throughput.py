"""Raft write throughput and latency: K concurrent writers through the leader and through a
follower, commands per second and p50/p99 latency, beside a 3-member etcd cluster.

    .venv/bin/python -m bench.raft_throughput [--writers 1 8 32] [--duration 10] [--json FILE]

swarmlet: 3 managers; each writer loops on `node.update` (a label `wK=i` on the target manager's
own node, so the state does not grow) through the target's control API: a replicated write that
returns once applied on that node (a follower forwards it to the leader). Each writer keeps its
control connection alive, as etcd's writers do; `--connection-per-call` opens one per write, as
the `swarmlet` command does (the figures before 2026-12-04 were measured so).

etcd: 3 members on 127.0.0.21-23 (defaults); each writer loops on `/v3/kv/put` (key `wK`, base64)
through the target member's HTTP/JSON gateway, on its own keep-alive connection (a process per
write with `etcdctl put` would measure process start-up, not etcd).

Both load generators are the same trio loop in this one Python process; on a 2-core machine the
generator, and the three servers share the CPU, so the figures are for comparison, not capacity.
Beside each point: the CPU time (user + system, from /proc) the three members spent per write,
and the load generator's own, which say where a gap comes from when the machine is shared.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import math
import os
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
    quantile,
    ratio,
)
from bench.reference import EtcdCluster, EtcdMember

Op = Callable[[int, int], Awaitable[None]]  # (writer, sequence number)
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of these processes so far (those that are gone count 0)."""
    total = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        total += (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS
    return total


def measured(point: Callable[[], dict[str, Any]], pids: list[int]) -> dict[str, Any]:
    """Run one point; add the members' and this process's CPU time per write (microseconds)."""
    servers, client = cpu_seconds(pids), sum(os.times()[:2])
    r = point()
    writes = max(r["ops"], 1)
    r["server_cpu_us_per_write"] = 1e6 * (cpu_seconds(pids) - servers) / writes
    r["client_cpu_us_per_write"] = 1e6 * (sum(os.times()[:2]) - client) / writes
    return r


async def load(
    make_op: Callable[[int], Awaitable[Op]], writers: int, duration_s: float, warmup_s: float
) -> dict[str, Any]:
    """`writers` loops for warmup + duration; counts only operations started after the warm-up."""
    latencies: list[float] = []
    errors: list[str] = []
    error_count = 0
    t_start = time.monotonic()
    t_measure = t_start + warmup_s
    t_end = t_measure + duration_s

    async def writer(k: int) -> None:
        nonlocal error_count
        op = await make_op(k)
        i = 0
        while True:
            now = time.monotonic()
            if now >= t_end:
                return
            i += 1
            try:
                with trio.fail_after(10):
                    await op(k, i)
            except Exception as exc:
                if now >= t_measure:
                    error_count += 1
                    if len(errors) < 5:
                        errors.append(f"{type(exc).__name__}: {exc}")
                await trio.sleep(0.05)
                continue
            if now >= t_measure:
                latencies.append(time.monotonic() - now)

    async with trio.open_nursery() as nursery:
        for k in range(writers):
            nursery.start_soon(writer, k)
    elapsed = time.monotonic() - t_measure
    return {
        "writers": writers,
        "ops": len(latencies),
        "ops_per_s": len(latencies) / elapsed if elapsed > 0 else math.nan,
        "p50_ms": 1000 * quantile(latencies, 0.5),
        "p99_ms": 1000 * quantile(latencies, 0.99),
        "max_ms": 1000 * max(latencies) if latencies else math.nan,
        "errors": error_count,
        "error_samples": errors,
    }


def swarmlet_op(
    target: Agent, connections: contextlib.AsyncExitStack, per_call: bool
) -> Callable[[int], Awaitable[Op]]:
    async def make(k: int) -> Op:
        client = target.client
        # A kept-alive control connection per writer, as etcd's writers keep theirs; or, with
        # `per_call`, a connection per write, as the `swarmlet` command opens one per run.
        call = (
            client.call
            if per_call
            else (await connections.enter_async_context(client.connection())).call
        )

        async def op(k: int, i: int) -> None:
            await call("node.update", node=target.name, label_add=[f"w{k}={i}"])

        return op

    return make


async def with_connections(
    run: Callable[[contextlib.AsyncExitStack], Awaitable[dict[str, Any]]],
) -> dict[str, Any]:
    """`run` with an exit stack that closes the writers' connections when it returns."""
    async with contextlib.AsyncExitStack() as connections:
        return await run(connections)


def etcd_op(
    target: EtcdMember, connections: contextlib.AsyncExitStack
) -> Callable[[int], Awaitable[Op]]:
    async def make(k: int) -> Op:
        conn = reference.HttpConnection(target.host, target.client_port)
        connections.push_async_callback(conn.aclose)
        key = reference.b64(f"w{k}")

        async def op(k: int, i: int) -> None:
            status, body = await conn.post_json(
                "/v3/kv/put", {"key": key, "value": reference.b64(str(i))}
            )
            if status != 200:
                raise RuntimeError(f"HTTP {status}: {str(body)[:100]}")

        return op

    return make


def _leader(cluster: SwarmletCluster) -> Agent:
    from bench.leader_failover import swarmlet_leader

    return swarmlet_leader(cluster)


def swarmlet_bench(args: argparse.Namespace, root: Path) -> list[dict[str, Any]]:
    cluster = SwarmletCluster(root / "swarmlet", common.free_port())
    cluster.start(managers=3, workers=0)
    leader = _leader(cluster)
    follower = next(a for a in cluster.agents if a is not leader)
    log(f"swarmlet: 3 managers up; leader {leader.name}, follower {follower.name}")
    rows = []
    try:
        for role, target in (("leader", leader), ("follower", follower)):
            for k in args.writers:
                point = functools.partial(
                    trio.run,
                    with_connections,
                    lambda connections, k=k, target=target: load(
                        swarmlet_op(target, connections, args.connection_per_call),
                        k,
                        args.duration,
                        args.warmup,
                    ),
                )
                r = measured(point, list(cluster.pids().values()))
                r |= {"system": "swarmlet", "via": role}
                rows.append(r)
                log(
                    f"swarmlet via {role}, {k} writers: {r['ops_per_s']:.0f} writes/s, p50 "
                    f"{fmt(r['p50_ms'], 1)} ms, p99 {fmt(r['p99_ms'], 1)} ms, {r['errors']} errors"
                )
        if _leader(cluster) is not leader:
            log("note: the swarmlet leader changed during the benchmark")
    finally:
        for pid in cluster.pids().values():
            common.kill9(pid)
    return rows


def etcd_bench(args: argparse.Namespace, root: Path) -> list[dict[str, Any]]:
    common.ensure_installed(["etcd", "etcdctl"], ["etcd-server", "etcd-client"])
    cluster = EtcdCluster(
        root / "etcd", peer_port=common.free_port(), client_port=common.free_port()
    )
    cluster.root.mkdir(parents=True, exist_ok=True)
    rows = []
    try:
        cluster.start()
        leader = cluster.wait_leader(30)
        follower = next(m for m in cluster.members if m is not leader)
        log(f"etcd: 3 members up; leader {leader.name}, follower {follower.name}")
        for role, target in (("leader", leader), ("follower", follower)):
            for k in args.writers:
                point = functools.partial(
                    trio.run,
                    with_connections,
                    lambda connections, k=k, target=target: load(
                        etcd_op(target, connections), k, args.duration, args.warmup
                    ),
                )
                pids = [m.proc.pid for m in cluster.members if m.proc is not None]
                r = measured(point, pids)
                r |= {"system": "etcd", "via": role}
                rows.append(r)
                log(
                    f"etcd via {role}, {k} writers: {r['ops_per_s']:.0f} writes/s, p50 "
                    f"{fmt(r['p50_ms'], 1)} ms, p99 {fmt(r['p99_ms'], 1)} ms, {r['errors']} errors"
                )
    finally:
        cluster.stop_all()
    return rows


def report(rows: list[dict[str, Any]]) -> None:
    by = {(r["system"], r["via"], r["writers"]): r for r in rows}
    table = []
    for (system, via, k), r in by.items():
        ref = by.get(("etcd", via, k)) if system == "swarmlet" else None
        table.append(
            [
                system,
                via,
                k,
                r["ops"],
                f"{r['ops_per_s']:.0f}",
                fmt(r["p50_ms"], 1),
                fmt(r["p99_ms"], 1),
                r["errors"],
                f"{r['server_cpu_us_per_write']:.0f}",
                f"{r['client_cpu_us_per_write']:.0f}",
                fmt(ratio(r["ops_per_s"], ref["ops_per_s"]), 2) if ref else "",
                fmt(ratio(r["p50_ms"], ref["p50_ms"]), 2) if ref else "",
            ]
        )
    print_table(
        "replicated writes, 3 members",
        [
            "system",
            "via",
            "writers",
            "writes",
            "writes/s",
            "p50 ms",
            "p99 ms",
            "errors",
            "members' CPU us/write",
            "client CPU us/write",
            "throughput vs etcd",
            "p50 vs etcd",
        ],
        table,
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--writers",
        type=int,
        nargs="+",
        default=[1, 8, 32],
        help="concurrent writers K (one measurement per value)",
    )
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds per point")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds before")
    parser.add_argument("--quick", action="store_true", help="smoke run: K = 4, 3 s")
    parser.add_argument("--no-etcd", action="store_true")
    parser.add_argument(
        "--connection-per-call",
        action="store_true",
        help="swarmlet's writers open a control connection per write (as the CLI does)",
    )
    parser.add_argument("--no-swarmlet", action="store_true")
    parser.add_argument("--json", help="write the figures to this file")
    parser.add_argument("--keep", action="store_true", help="keep data dirs and logs")
    args = parser.parse_args()
    if args.quick:
        args.writers, args.duration, args.warmup = [4], 3.0, 0.5
    with common.cleanup_on_exit():
        root = common.make_root("raft", keep=args.keep)
        log(f"data dirs and logs under {root}")
        rows: list[dict[str, Any]] = []
        if not args.no_swarmlet:
            rows += swarmlet_bench(args, root)
        if not args.no_etcd:
            rows += etcd_bench(args, root)
        report(rows)
        result: dict[str, Any] = {"duration_s": args.duration, "points": rows}
        if REGISTRY.keep_dirs:
            result["root"] = str(root)
        common.print_load()
        common.write_json(args.json, result)


if __name__ == "__main__":
    main()
