"""Autoscaling: (a) a CPU load step to new replicas serving through the mesh (real agents);
(b) scaling decisions over 10 minutes of noisy load (the pure core, in VIRTUAL time).

    .venv/bin/python -m bench.autoscale [--runs 3] [--seeds 10] [--skip-real] [--json out.json]

Figures, not pass/fail checks; there is no reference system here.

(a) Real agents: 1 manager (127.0.0.1) and 1 worker (127.0.0.2), as tests/integration/
test_autoscale.py. A service `--limit-cpu 0.2 --autoscale min=1,max=4,cpu=50 -p PORT:80` of
`swarmlet/busybox:1` whose replicas serve their hostname (= the container id's first 12 hex
digits) with busybox httpd, and idle until /tmp/burn exists, then burn their CPU limit. The step:
`docker exec <replica> touch /tmp/burn` on every replica running at that moment (one, the min).
Replicas started later do not burn; so the step asks for exactly one decision (1 -> 2: the
burning replica is at 100% of its limit, twice the target), and the service then sits on target.
Measured from the step (the clock starts just before the first `docker exec`):
- `decision_s`: to the `autoscale` event's own time stamp (wall clock of the leader; read after
  the run with `swarmlet events --filter type=autoscale`), and `desired_s`: to the first poll that
  sees `replicas_desired` raised (`service.ls`, polled every 100 ms);
- `running_s`: to the first poll that sees every desired replica running;
- `serving_s`: to the first answer, through the mesh (agent 2's address, not the one holding
  the first replica necessarily), that names a container of the new replicas. A request loop
  (one request at a time, new connection each) runs throughout; it also counts failures.
Why the exec'd flag and not a request rate: with an rps target, the time to "serve" would mostly
be the time the load generator needs to push the rate up, and what a new replica serves is hard
to tell from what it would have served anyway; here the step is an instant and every answer names
its replica. This decides honestly "time until new replicas serve": a new replica counts when a
request through the mesh reaches it, not when the orchestrator says it runs.

(b) VIRTUAL time, no agents: `leader.autoscaler.decide` with the default `AutoscaleConfig` and
policy min=1, max=10, cpu=50, fed one sample every 5 virtual seconds for 600 virtual seconds
(121 samples). The service starts at 3 replicas, and the load is 3 replicas' worth at the target
(150% of one core in all) times (1 + noise), shared by the replicas running (decisions take
effect at once, as in tests/leader/autoscaler/world.py). Noise: independent Gaussian per sample with
sigma 5, 10, 20 and 30%, and a slow variant (AR(1), coefficient 0.9, the same stationary sigma),
which looks more like real load. Each seeded with `random.Random(seed)`, seeds 0..N-1. Counted:
decisions (any replica change) and flaps (a decision whose direction reverses the previous one).
It is deterministic and takes well under a second; nothing real waits 10 minutes.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import random
import statistics
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable
from typing import Any

import trio

from bench.common import (
    REGISTRY,
    SWARMLET,
    SwarmletCluster,
    fmt,
    free_port,
    install_cleanup,
    log,
    make_root,
    print_load,
    print_table,
    wait_until,
    write_json,
)
from swarmlet.leader.autoscaler import AutoscaleConfig, AutoscalerState, Sample, decide
from swarmlet.state.model import AutoscalePolicy
from swarmlet.testing.images import BUSYBOX_IMAGE, ensure_test_images

NAME = "ascale"
POLL_S = 0.1
TIMEOUT_S = 120.0
SERVE = (
    "mkdir -p /www; hostname > /www/index.html; httpd -p 80 -h /www; "
    "while true; do if [ -e /tmp/burn ]; then :; else sleep 0.2; fi; done"
)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


# ----------------------------------------------------------------------------- (a) real


class BodyLoop:
    """One request at a time in a thread: the first time each body was seen; failures."""

    def __init__(self, host: str, port: int) -> None:
        self.url = f"http://{host}:{port}/"
        self.first_seen: dict[str, float] = {}
        self.ok = 0
        self.failures: list[tuple[float, str]] = []  # (monotonic time, error)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with urllib.request.urlopen(self.url, timeout=5) as response:
                    body = response.read().decode().strip()
                self.first_seen.setdefault(body, time.monotonic())
                self.ok += 1
            except OSError as exc:
                self.failures.append((time.monotonic(), repr(exc)))
                time.sleep(0.05)

    def __enter__(self) -> BodyLoop:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def wait(what: str, done: Callable[[], bool], timeout_s: float = TIMEOUT_S) -> float:
    return wait_until(what, done, timeout_s=timeout_s, poll_s=POLL_S)


def docker(*args: str) -> str:
    return subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=60, check=False
    ).stdout


class Side:
    def __init__(self, cluster: SwarmletCluster) -> None:
        self.cluster = cluster
        # Not a flag: `service create IMAGE COMMAND ARG...` would swallow a trailing --data-dir.
        os.environ["SWARMLET_DATA_DIR"] = str(cluster.agents[0].data_dir)

    def call(self, op: str, **args: Any) -> Any:
        client = self.cluster.agents[0].client
        return trio.run(lambda: client.call(op, **args))

    def service(self) -> dict[str, Any]:
        for s in self.call("service.ls")["services"]:
            if s["name"] == NAME:
                return dict(s)
        raise KeyError(NAME)

    def running_containers(self) -> list[str]:
        tasks = self.call("service.ps", services=[NAME])["tasks"]
        return [
            t["container_id"]
            for t in tasks
            if t["desired_state"] == "running" and t["state"] == "running" and t["container_id"]
        ]

    def cli(self, *args: str) -> str:
        proc = subprocess.run(
            [*SWARMLET, *args],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"swarmlet {' '.join(args)} exited {proc.returncode}: {proc.stderr}")
        return proc.stdout

    def autoscale_events(self) -> list[dict[str, Any]]:
        out = self.cli(
            "events", "--no-follow", "--since", "1h", "--format", "json",
            "--filter", "type=autoscale",
        )  # fmt: skip
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def run(self, port: int) -> dict[str, Any]:
        self.cli(
            "service", "create", "--detach", "--name", NAME, "--limit-cpu", "0.2",
            "--autoscale", "min=1,max=4,cpu=50", "-p", f"{port}:80", BUSYBOX_IMAGE,
            "sh", "-c", SERVE,
        )  # fmt: skip
        host = self.cluster.agents[1].host
        try:
            wait("1 running", lambda: self.service()["replicas_running"] == 1)
            first = self.running_containers()
            with BodyLoop(host, port) as loop:
                wait("the mesh to answer", lambda: loop.ok > 10)
                seen_before = len(self.autoscale_events())
                wall0, t0 = time.time(), time.monotonic()
                for cid in first:
                    docker("exec", cid, "touch", "/tmp/burn")
                desired_at = wait("a scale-up", lambda: self.service()["replicas_desired"] > 1)
                desired = int(self.service()["replicas_desired"])
                running_at = wait(
                    "the new replicas running",
                    lambda: self.service()["replicas_running"] >= desired,
                )
                new = {c[:12] for c in self.running_containers()} - {c[:12] for c in first}
                serving_at = wait(
                    "a new replica answering through the mesh",
                    lambda: any(b in loop.first_seen for b in new),
                )
                events = self.autoscale_events()[seen_before:]
                failures = list(loop.failures)
            decision_s = events[0]["time"] - wall0 if events else float("nan")
            return {
                "decision_s": decision_s,
                "desired_s": desired_at - t0,
                "running_s": running_at - t0,
                "serving_s": serving_at - t0,
                "to_replicas": desired,
                "event": events[0]["message"] if events else "",
                "ok": loop.ok,
                "failed": len(failures),
                # seconds from the step (negative: before it) and the error
                "failures": [(round(at - t0, 3), error) for at, error in failures[:20]],
            }
        finally:
            for cid in self.running_containers():
                docker("exec", cid, "rm", "-f", "/tmp/burn")
            self.call("service.rm", services=[NAME])
            wait("the containers to go", lambda: not containers(), timeout_s=60)


def containers() -> list[str]:
    return docker("ps", "-aq", "--filter", f"label=swarmlet.service={NAME}").split()


def run_real(args: argparse.Namespace, results: dict[str, Any]) -> None:
    root = make_root("autoscale", args.keep)
    cluster = SwarmletCluster(root, free_port())
    log("starting 1 manager and 1 worker")
    cluster.start(managers=1, workers=1)
    side = Side(cluster)
    runs: list[dict[str, Any]] = results.setdefault("step", [])
    try:
        for i in range(args.runs):
            r = side.run(free_port())
            runs.append(r)
            log(
                f"step #{i + 1}: decision {r['decision_s']:.3f} s (event), desired seen "
                f"{r['desired_s']:.3f} s, running {r['running_s']:.3f} s, serving "
                f"{r['serving_s']:.3f} s; 1 -> {r['to_replicas']}; {r['event']!r}; "
                f"requests ok {r['ok']} failed {r['failed']}"
            )
    finally:
        REGISTRY.cleanup()
        ids = containers()
        if ids:
            docker("rm", "-f", *ids)


# ----------------------------------------------------------------------------- (b) virtual


TICK_S = 5.0
DURATION_S = 600.0
POLICY = AutoscalePolicy(min_replicas=1, max_replicas=10, cpu_percent=50.0)
START_REPLICAS = 3


def noise(kind: str, sigma: float, rng: random.Random, n: int) -> list[float]:
    if kind == "iid":
        return [rng.gauss(0.0, sigma) for _ in range(n)]
    phi = 0.9  # AR(1): x' = phi x + e, e ~ N(0, sigma sqrt(1 - phi^2)) keeps the sigma
    x, out = rng.gauss(0.0, sigma), []
    for _ in range(n):
        out.append(x)
        x = phi * x + rng.gauss(0.0, sigma * math.sqrt(1 - phi * phi))
    return out


def virtual_run(kind: str, sigma: float, seed: int) -> dict[str, Any]:
    """121 samples, 5 virtual seconds apart; replicas follow each decision at once."""
    config = AutoscaleConfig()
    state = AutoscalerState(NAME)
    steps = int(DURATION_S / TICK_S) + 1
    values = noise(kind, sigma, random.Random(seed), steps)
    replicas, moves = START_REPLICAS, []
    for i in range(steps):
        t = i * TICK_S
        total = max(0.0, START_REPLICAS * POLICY.cpu_percent * (1.0 + values[i]))
        sample = Sample(t, replicas, total / replicas, None, None)
        decision, state = decide(POLICY, config, state, sample, t)
        if decision is not None:
            moves.append((t, decision.from_replicas, decision.to_replicas))
            replicas = decision.to_replicas
    directions = [1 if b > a else -1 for _, a, b in moves]
    flaps = sum(1 for x, y in itertools.pairwise(directions) if x != y)
    return {"decisions": len(moves), "flaps": flaps, "moves": moves, "final": replicas}


def run_virtual(args: argparse.Namespace, results: dict[str, Any]) -> None:
    rows: list[list[object]] = []
    out: dict[str, Any] = results.setdefault("virtual", {})
    for kind in ("iid", "ar1"):
        for sigma in (0.05, 0.10, 0.20, 0.30):
            runs = [virtual_run(kind, sigma, seed) for seed in range(args.seeds)]
            out[f"{kind}/{sigma}"] = runs
            decisions = [r["decisions"] for r in runs]
            flaps = [r["flaps"] for r in runs]
            rows.append(
                [
                    kind,
                    f"{sigma:.0%}",
                    len(runs),
                    fmt(median([float(x) for x in decisions]), 1),
                    max(decisions),
                    sum(1 for x in decisions if x == 0),
                    fmt(median([float(x) for x in flaps]), 1),
                    max(flaps),
                    " ".join(str(x) for x in decisions),
                ]
            )
    print_table(
        "(b) VIRTUAL time: scaling decisions over 600 s of noisy load around the target "
        "(pure core, 5 s samples, start 3 replicas, load 3 x 50%)",
        [
            "noise",
            "sigma",
            "seeds",
            "decisions, median",
            "max",
            "seeds with none",
            "flaps, median",
            "max",
            "decisions per seed",
        ],
        rows,
    )


# ----------------------------------------------------------------------------- report


def report(results: dict[str, Any]) -> None:
    runs = results.get("step", [])
    if not runs:
        return
    rows = [
        [label, fmt(median([r[key] for r in runs])), fmt(min(r[key] for r in runs)),
         fmt(max(r[key] for r in runs)), " ".join(fmt(r[key]) for r in runs)]
        for key, label in (
            ("decision_s", "first scale decision (event time)"),
            ("desired_s", "desired count raised (seen by poll)"),
            ("running_s", "new replicas running"),
            ("serving_s", "a new replica answering through the mesh"),
        )
    ]  # fmt: skip
    print_table(
        f"(a) CPU load step -> new replicas serving ({len(runs)} runs, seconds from the step)",
        ["figure", "median", "min", "max", "runs"],
        rows,
    )
    print(
        "failed requests through the mesh per run: "
        + " ".join(f"{r['failed']}/{r['ok'] + r['failed']}" for r in runs)
    )
    for i, r in enumerate(runs):
        if r["failures"]:
            print(f"run {i + 1} failures, s from the step: {r['failures']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="real load steps")
    parser.add_argument("--seeds", type=int, default=10, help="virtual runs per noise level")
    parser.add_argument("--skip-real", action="store_true", help="(b) only: no agents")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    results: dict[str, Any] = {"date": time.ctime()}
    run_virtual(args, results)
    if args.skip_real:
        write_json(args.json, results)
        return
    install_cleanup()
    ensure_test_images()
    try:
        run_real(args, results)
    finally:
        REGISTRY.cleanup()
        report(results)
        print_load()
        write_json(args.json, results)


if __name__ == "__main__":
    main()
