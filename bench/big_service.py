"""A big service: N replicas that no node may run, on 3 managers, beside Docker Swarm mode.

    .venv/bin/python -m bench.big_service [--replicas 100000] [--watch 30] [--runs 1]
                                          [--only swarmlet|swarm] [--quick] [--keep]
                                          [--json FILE]

Figures, not pass/fail checks. What is measured is the control plane alone: every replica has
the constraint `node.labels.nowhere==1`, so each task is created, goes through the scheduler,
and stays pending with its reason; no container starts, on either side.

swarmlet: 3 managers on 127.0.0.1-3, a new cluster per run. `service.create` of N replicas,
then, polled through the control API from this process every POLL_S:
- the time until `service.ps` lists all N tasks (a read barrier, then every task's row);
- every manager's Raft term, once a second for `--watch` seconds after the create: the leader
  elections are the last term less the first (a leader that stops its heartbeats for longer
  than the election timeout, 0.4-0.8 s, is replaced);
- one more `service.ps`, timed: the answer's size is what a user's `service ps` reads;
- with `--writes W`, then W small writes (a config each, 8 writers on kept-alive connections
  to the leader), timed: every 2,000 of them each member compacts its Raft log into a snapshot
  of the 100,000 tasks, and the elections are counted over this phase too. (Not a node label:
  a label may satisfy the constraint, so each one has the leader plan the 100,000 tasks again.)
Docker Swarm mode: `docker swarm init` on this engine (only if it is not in a swarm already,
left in a `finally` whatever happens; its one manager has no one to lose an election to), the
same service through the Engine API, and the same two times (until the service's task list
holds N tasks, and one more listing).
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import docker
import trio
from docker.types import ServiceMode

from bench.common import (
    REGISTRY,
    SwarmletCluster,
    elections,
    fmt,
    free_port,
    install_cleanup,
    log,
    make_root,
    print_load,
    print_table,
    sample_terms,
    write_json,
)
from bench.services import swarm_mode
from swarmlet.api.control_socket import ControlClient
from swarmlet.state.model import Placement, ServiceSpec
from swarmlet.testing.images import BUSYBOX_IMAGE, ensure_test_images
from swarmlet.wire import codec as wire

POLL_S = 0.5  # a listing of 100,000 tasks takes longer than this on both sides
NAME = "big"
NOWHERE = "node.labels.nowhere==1"


async def swarmlet_run(
    replicas: int, watch_s: float, index: int, keep: bool, writes: int = 0
) -> dict[str, Any]:
    cluster = SwarmletCluster(make_root(f"big-service-{index}", keep), free_port())
    await trio.to_thread.run_sync(cluster.start, 3, 0)
    leader = cluster.agents[0]
    managers = cluster.agents
    terms: list[list[int]] = []

    r: dict[str, Any] = {}
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sample_terms, managers, terms)
        await trio.sleep(2.0)  # the terms before
        start = time.monotonic()
        spec = ServiceSpec(
            name=NAME,
            image=BUSYBOX_IMAGE,
            replicas=replicas,
            placement=Placement(constraints=(NOWHERE,)),
        )
        await leader.client.call("service.create", spec=wire.encode(spec))
        while True:
            listed = len((await leader.client.call("service.ps", services=[NAME]))["tasks"])
            if listed >= replicas:
                break
            await trio.sleep(POLL_S)
        r["all_tasks_s"] = time.monotonic() - start
        log(f"swarmlet: {replicas} tasks listed after {r['all_tasks_s']:.2f} s")
        await trio.sleep(max(0.0, watch_s - (time.monotonic() - start)))
        began = time.monotonic()
        listed = len((await leader.client.call("service.ps", services=[NAME]))["tasks"])
        r["ps_s"] = time.monotonic() - began
        if writes:
            r["writes_s"] = await _writes(leader.client, writes)
            log(f"swarmlet: {writes} writes in {r['writes_s']:.2f} s")
        await trio.sleep(2.0)  # the terms after
        nursery.cancel_scope.cancel()
    r["elections"] = elections(terms, len(managers))
    r["terms"] = terms
    log(f"swarmlet: service ps {r['ps_s']:.2f} s ({listed} rows); elections {r['elections']}")
    REGISTRY.cleanup()
    return r


async def _writes(client: ControlClient, writes: int, writers: int = 8) -> float:
    """`writes` new configs of a few bytes, `writers` at a time; their wall time."""
    todo = iter(range(writes))
    began = time.monotonic()

    async def writer() -> None:
        async with client.connection() as connection:
            for i in todo:
                await connection.call("secret.create", name=f"c{i}", data=b"x", is_config=True)

    async with trio.open_nursery() as nursery:
        for _ in range(writers):
            nursery.start_soon(writer)
    return time.monotonic() - began


def swarm_run(client: docker.DockerClient, replicas: int) -> dict[str, Any]:
    r: dict[str, Any] = {}
    start = time.monotonic()
    service = client.services.create(  # type: ignore[no-untyped-call]  # docker SDK: untyped
        BUSYBOX_IMAGE,
        name=NAME,
        mode=ServiceMode("replicated", replicas=replicas),
        constraints=[NOWHERE],
    )
    try:
        while len(service.tasks()) < replicas:
            time.sleep(POLL_S)
        r["all_tasks_s"] = time.monotonic() - start
        log(f"swarm: {replicas} tasks listed after {r['all_tasks_s']:.2f} s")
        began = time.monotonic()
        listed = len(service.tasks())
        r["ps_s"] = time.monotonic() - began
        log(f"swarm: service ps {r['ps_s']:.2f} s ({listed} rows)")
    finally:
        service.remove()
    return r


def report(results: dict[str, Any], replicas: int) -> None:
    s_runs = results.get("swarmlet", [])
    w_runs = results.get("swarm", [])

    def med(runs: list[dict[str, Any]], key: str) -> float:
        return statistics.median(r[key] for r in runs) if runs else float("nan")

    rows = []
    for label, key in (
        (f"create -> all {replicas} tasks listed (s)", "all_tasks_s"),
        (f"one listing of {replicas} tasks (s)", "ps_s"),
    ):
        s, w = med(s_runs, key), med(w_runs, key)
        rows.append([label, fmt(s), fmt(w), fmt(s / w, 2) if s == s and w == w and w else "-"])
    if any("writes_s" in r for r in s_runs):
        rows.append(["then the small writes (s)", fmt(med(s_runs, "writes_s")), "-", "-"])
    rows.append(
        [
            "leader elections in the watch window (and the writes)",
            ", ".join(str(r["elections"]) for r in s_runs) or "-",
            "- (one manager)",
            "-",
        ]
    )
    print_table(
        f"A service of {replicas} replicas that no node may run, medians of "
        f"{max(len(s_runs), len(w_runs))} run(s) (swarmlet: 3 managers; Swarm: one)",
        ["measure", "swarmlet", "Swarm", "swarmlet/Swarm"],
        rows,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--replicas", type=int, default=100_000)
    parser.add_argument("--watch", type=float, default=30.0, help="seconds of terms watched")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--only", choices=("swarmlet", "swarm"), default=None)
    parser.add_argument("--keep", action="store_true", help="keep the agents' data dirs and logs")
    parser.add_argument("--quick", action="store_true", help="smoke run: 2,000 replicas, 8 s")
    parser.add_argument("--json", default=None)
    parser.add_argument(
        "--writes", type=int, default=0, help="small writes after the listing (swarmlet only)"
    )
    args = parser.parse_args()
    if args.quick:
        args.replicas, args.watch = 2_000, 8.0
    install_cleanup()
    ensure_test_images()
    results: dict[str, Any] = {"replicas": args.replicas, "swarmlet": [], "swarm": []}
    try:
        for i in range(args.runs):
            if args.only != "swarm":
                results["swarmlet"].append(
                    trio.run(swarmlet_run, args.replicas, args.watch, i, args.keep, args.writes)
                )
            if args.only != "swarmlet":
                client = docker.from_env()
                log("swarm: docker swarm init --advertise-addr 127.0.0.1")
                with swarm_mode(client):
                    results["swarm"].append(swarm_run(client, args.replicas))
    finally:
        REGISTRY.cleanup()
        report(results, args.replicas)
        print_load()
        write_json(args.json, results)


if __name__ == "__main__":
    main()
