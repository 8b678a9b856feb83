"""A big stack: N services deployed and removed with one command, on 3 managers, beside Docker
Swarm mode's `docker stack deploy`.

    .venv/bin/python -m bench.big_stack [--services 2000] [--runs 1] [--only swarmlet|swarm]
                                        [--keep] [--json FILE]

Figures, not pass/fail checks. Every service has `replicas: 0`: what is measured is the control
plane alone (the CLI's loading of the file, the write, every manager's apply), not containers.

swarmlet: 3 managers on 127.0.0.1-3, a new cluster per run. `swarmlet stack deploy` through a
follower (whose write goes to the leader), timed until the command returns (the services are
committed then), and `swarmlet stack rm`, timed the same way. Meanwhile, from this process:
- every manager's Raft term, once a second: the leader elections are the last term less the
  first (a member that holds its event loop for longer than the election timeout, 0.4-0.8 s,
  stops the heartbeats, or misses them);
- the leader's `status` answered, in a loop: its slowest answer is about the longest the
  leader's event loop was held (a control call is served on that loop).
Docker Swarm mode: `docker swarm init` on this engine (only if it is not in a swarm already,
left in a `finally`), `docker stack deploy --resolve-image never` of the same file and `docker
stack rm`, timed the same way (the CLI creates the services one API call at a time).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

import docker
import trio

from bench.common import (
    REGISTRY,
    SWARMLET,
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
from swarmlet.testing.images import BUSYBOX_IMAGE, ensure_test_images

STACK = "big"


def stack_file(path: Path, services: int) -> Path:
    lines = ["version: '3.8'", "services:"]
    for i in range(services):
        lines += [f"  s{i}:", f"    image: {BUSYBOX_IMAGE}", "    deploy: {replicas: 0}"]
    path.write_text("\n".join(lines) + "\n")
    return path


async def _timed(argv: list[str], env: dict[str, str]) -> float:
    began = time.monotonic()
    await trio.run_process(argv, capture_stdout=True, capture_stderr=True, env=env)
    return time.monotonic() - began


async def swarmlet_run(services: int, index: int, keep: bool) -> dict[str, Any]:
    root = make_root(f"big-stack-{index}", keep)
    cluster = SwarmletCluster(root, free_port())
    await trio.to_thread.run_sync(cluster.start, 3, 0)
    leader, follower = cluster.agents[0], cluster.agents[1]
    path = stack_file(root / "stack.yml", services)
    terms: list[list[int]] = []
    slowest = [0.0]

    async def probe_leader() -> None:
        async with leader.client.connection() as connection:
            while True:
                began = time.monotonic()
                await connection.call("status")
                slowest[0] = max(slowest[0], time.monotonic() - began)
                await trio.sleep(0.05)

    r: dict[str, Any] = {}
    cli = [*SWARMLET, "stack"]
    env = {**os.environ, "SWARMLET_DATA_DIR": str(follower.data_dir)}
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sample_terms, cluster.agents, terms)
        nursery.start_soon(probe_leader)
        await trio.sleep(2.0)  # the terms before
        r["deploy_s"] = await _timed([*cli, "deploy", "-c", str(path), STACK], env)
        listed = await leader.client.call("service.ls")
        r["listed"] = len(listed["services"])
        r["rm_s"] = await _timed([*cli, "rm", STACK], env)
        await trio.sleep(3.0)  # the terms after
        nursery.cancel_scope.cancel()
    r["elections"] = elections(terms, len(cluster.agents))
    r["slowest_status_s"] = slowest[0]
    log(
        f"swarmlet: deploy {r['deploy_s']:.2f} s ({r['listed']} services listed), rm "
        f"{r['rm_s']:.2f} s, elections {r['elections']}, slowest status {slowest[0]:.3f} s"
    )
    REGISTRY.cleanup()
    return r


def swarm_run(services: int, index: int, keep: bool) -> dict[str, Any]:
    path = stack_file(make_root(f"big-stack-swarm-{index}", keep) / "stack.yml", services)
    r: dict[str, Any] = {}
    began = time.monotonic()
    subprocess.run(
        ["docker", "stack", "deploy", "--resolve-image", "never", "-c", str(path), STACK],
        capture_output=True,
        check=True,
    )
    r["deploy_s"] = time.monotonic() - began
    r["listed"] = len(
        docker.from_env().services.list(filters={"label": f"com.docker.stack.namespace={STACK}"})
    )
    began = time.monotonic()
    subprocess.run(["docker", "stack", "rm", STACK], capture_output=True, check=True)
    r["rm_s"] = time.monotonic() - began
    log(
        f"swarm: deploy {r['deploy_s']:.2f} s ({r['listed']} services listed), rm {r['rm_s']:.2f} s"
    )
    return r


def report(results: dict[str, Any], services: int) -> None:
    s_runs, w_runs = results["swarmlet"], results["swarm"]

    def med(runs: list[dict[str, Any]], key: str) -> float:
        return statistics.median(r[key] for r in runs) if runs else float("nan")

    rows = []
    for label, key in (
        (f"stack deploy of {services} services (s)", "deploy_s"),
        ("stack rm (s)", "rm_s"),
    ):
        s, w = med(s_runs, key), med(w_runs, key)
        rows.append([label, fmt(s), fmt(w), fmt(s / w, 2) if s == s and w == w and w else "-"])
    rows.append(
        [
            "leader elections meanwhile",
            ", ".join(str(r["elections"]) for r in s_runs) or "-",
            "- (one manager)",
            "-",
        ]
    )
    rows.append(
        [
            "slowest `status` of the leader meanwhile (s)",
            ", ".join(fmt(r["slowest_status_s"]) for r in s_runs) or "-",
            "-",
            "-",
        ]
    )
    print_table(
        f"A stack of {services} services of no replicas, medians of "
        f"{max(len(s_runs), len(w_runs))} run(s) (swarmlet: 3 managers, through a follower; "
        "Swarm: one)",
        ["measure", "swarmlet", "Swarm", "swarmlet/Swarm"],
        rows,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--services", type=int, default=2_000)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--only", choices=("swarmlet", "swarm"), default=None)
    parser.add_argument("--keep", action="store_true", help="keep the agents' data dirs and logs")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    install_cleanup()
    ensure_test_images()
    results: dict[str, Any] = {"services": args.services, "swarmlet": [], "swarm": []}
    try:
        for i in range(args.runs):
            if args.only != "swarm":
                results["swarmlet"].append(trio.run(swarmlet_run, args.services, i, args.keep))
            if args.only != "swarmlet":
                client = docker.from_env()
                log("swarm: docker swarm init --advertise-addr 127.0.0.1")
                with swarm_mode(client):
                    results["swarm"].append(swarm_run(args.services, i, args.keep))
    finally:
        REGISTRY.cleanup()
        report(results, args.services)
        print_load()
        write_json(args.json, results)


if __name__ == "__main__":
    main()
