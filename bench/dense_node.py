"""Dense node (issue #16): N replicas on one node, swarmlet beside single-node Docker Swarm mode.

    .venv/bin/python -m bench.dense_node [--replicas 300] [--runs 1] [--only swarmlet|swarm]
                                         [--quick] [--keep] [--json FILE]

Figures, not pass/fail checks. Both systems run N replicas of `swarmlet/busybox:1 sleep 36000`
on the same Docker engine, one after the other in the same process. Each run:

swarmlet: a 3-agent cluster on 127.0.0.1-3 (n1 manager and leader, n2 and n3 workers), built
once. `service.create` of N replicas with `--constraint node.hostname==n2` (a worker: its
statuses travel to the leader as reports, as they do for most nodes of a cluster), then
- the time from the create to all N running (the service's `replicas_running`, which counts the
  statuses the leader committed);
- meanwhile, once a second: each agent's pid (the same process throughout, or the run stops
  with the agent's log), its RSS (the agent and its children) and its gossip `meta_bytes`;
- across the ramp: the CPU seconds of each agent's process tree and of dockerd (psutil), the
  Raft entries committed (`commit_index` delta on the leader) beside the task statuses committed
  (`status_statuses_committed` delta), and `status_reports_sent` per agent;
- after it: every agent still the same pid, ready in the leader's `node.ls`, and
  `gossip_meta_too_large` still 0;
- `service.scale` to 0: the time until none of its containers runs, and until none is left.
Docker Swarm mode: `docker swarm init` on this engine (only if it is not in a swarm already,
left in a `finally` whatever happens), the same N replicas, image, command, grace period and an
equivalent constraint (this engine's hostname); the time to all running (`Status.State` running
with desired state running); dockerd's CPU seconds across the ramp (Swarm's whole control plane
runs inside dockerd); scale to 0 timed the same way; then the service is removed.

Timing choices (decided here):
- Each system is polled through its API from this process (swarmlet's control socket, the
  Engine API through the docker SDK), every POLL_S = 0.2 s, not bench/services.py's 20 ms: the
  ramps last tens of seconds, and on 2 cores a `service.ls` (a ReadIndex barrier on the leader)
  or a 300-task `service.tasks` every 20 ms would cost the systems measured more than the
  0.2 s of slack this gives the figures.
- Both use a stop grace period of 1 s: busybox `sleep` as PID 1 ignores SIGTERM, so each stop
  lasts the whole grace period, and the default 10 s would be measured instead of the
  orchestrators.
- The leader's CPU includes answering these polls (~5 a second) and the sampler's `status`
  calls (one a second per agent); dockerd's includes the SDK's polls on the Swarm side.
- Containers are found by label, and only ours are removed: other engineers share the engine.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import docker
import psutil
import trio
from docker.models.services import Service as DockerService
from docker.types import ServiceMode

from bench.common import (
    REGISTRY,
    Agent,
    SwarmletCluster,
    fmt,
    free_port,
    install_cleanup,
    log,
    make_root,
    print_load,
    print_table,
    write_json,
)
from bench.services import rm_cluster_containers, swarm_mode, swarm_running
from swarmlet.executor.labels import LABEL_CLUSTER, LABEL_SERVICE
from swarmlet.state.model import Placement, ServiceSpec
from swarmlet.testing.images import BUSYBOX_IMAGE, ensure_test_images
from swarmlet.wire import codec as wire

POLL_S = 0.2
SAMPLE_S = 1.0
REPLICAS = 300
COMMAND = ("sleep", "36000")
GRACE_S = 1.0
SERVICE = "bdense"
LEADER = "n1"  # the one manager (`swarmlet init`)
TARGET = "n2"  # the worker that runs them all
SWARM_LABEL = "com.docker.swarm.service.name"
MB = 1e6


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def timeout_for(replicas: int) -> float:
    """A generous bound on a ramp or a drain: 1 s per replica, at least 2 minutes."""
    return max(120.0, float(replicas))


# ----------------------------------------------------------------------------- processes


def process_tree(pid: int) -> list[psutil.Process]:
    try:
        p = psutil.Process(pid)
        return [p, *p.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) of `pid` and its live children so far."""
    total = 0.0
    for p in process_tree(pid):
        with contextlib.suppress(psutil.NoSuchProcess):
            t = p.cpu_times()
            total += t.user + t.system
    return total


def rss_mb(pid: int) -> float:
    total = 0
    for p in process_tree(pid):
        with contextlib.suppress(psutil.NoSuchProcess):
            total += p.memory_info().rss
    return total / MB


def identity(pid: int) -> tuple[int, float] | None:
    """(pid, start time): a recycled pid has another start time. None when it is gone."""
    try:
        p = psutil.Process(pid)
        if p.status() == psutil.STATUS_ZOMBIE:
            return None
        return pid, p.create_time()
    except psutil.NoSuchProcess:
        return None


def dockerd_pid() -> int:
    """The engine on /var/run/docker.sock (other dockerds may run in network namespaces)."""
    return int(Path("/var/run/docker.pid").read_text().strip())


def containers(client: docker.DockerClient, labels: list[str], *, all_: bool) -> int:
    return len(client.api.containers(all=all_, filters={"label": labels}))


async def poll_until(what: str, done: Callable[[], Awaitable[bool]], timeout_s: float) -> float:
    """Seconds until `done` first held, polled every POLL_S. Raises after `timeout_s`."""
    start = time.monotonic()
    while not await done():
        if time.monotonic() - start > timeout_s:
            raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        await trio.sleep(POLL_S)
    return time.monotonic() - start


# ----------------------------------------------------------------------------- swarmlet


class AgentChanged(RuntimeError):
    """An agent died or was replaced by another process: what issue #16 is about."""


class DenseSwarmlet:
    """One cluster (n1 manager, n2 and n3 workers); writes and `service.ls` through n1."""

    def __init__(self, cluster: SwarmletCluster, docker_client: docker.DockerClient) -> None:
        self.cluster = cluster
        self.docker = docker_client
        self.cluster_id = ""
        self.identities: dict[str, tuple[int, float]] = {}
        self.rss_max: dict[str, float] = {}
        self.meta_max: dict[str, int] = {}

    @property
    def leader(self) -> Agent:
        return self.cluster.agents[0]

    async def status(self, a: Agent, timeout_s: float = 30.0) -> dict[str, Any]:
        with trio.fail_after(timeout_s):
            result: dict[str, Any] = await a.client.call("status")
        return result

    async def statuses(self) -> dict[str, dict[str, Any]]:
        return {a.name: await self.status(a) for a in self.cluster.agents}

    def remember_identities(self) -> None:
        for a in self.cluster.agents:
            pid = a.pid()
            ident = identity(pid) if pid is not None else None
            if ident is None:
                raise AgentChanged(
                    f"{a.name} has no live agent process\n{self.cluster.log_tail(a)}"
                )
            self.identities[a.name] = ident

    def changed_agents(self) -> list[str]:
        """Agents that are no longer the process `remember_identities` saw."""
        changed = []
        for a in self.cluster.agents:
            pid = a.pid()
            now = identity(pid) if pid is not None else None
            if now != self.identities[a.name]:
                changed.append(f"{a.name}: {self.identities[a.name]} -> {now}")
        return changed

    def check_alive(self) -> None:
        changed = self.changed_agents()
        if changed:
            tails = "\n".join(
                f"--- {a.name} agent.log\n{self.cluster.log_tail(a, 40)}"
                for a in self.cluster.agents
            )
            raise AgentChanged(f"agent process changed: {'; '.join(changed)}\n{tails}")

    async def sample(self) -> None:
        """Every agent still the same process; its RSS and gossip meta size (maxima kept)."""
        self.check_alive()
        for a in self.cluster.agents:
            pid = self.identities[a.name][0]
            self.rss_max[a.name] = max(self.rss_max.get(a.name, 0.0), rss_mb(pid))
            with contextlib.suppress(Exception):
                meta = int((await self.status(a, 5.0))["gossip"]["meta_bytes"])
                self.meta_max[a.name] = max(self.meta_max.get(a.name, 0), meta)

    async def snapshot(self) -> dict[str, Any]:
        """Per agent: CPU s, RSS, gossip meta, counters; the leader's commit index; dockerd."""
        statuses = await self.statuses()
        agents = {}
        for a in self.cluster.agents:
            pid = self.identities[a.name][0]
            s = statuses[a.name]
            agents[a.name] = {
                "pid": pid,
                "role": s["raft"]["role"],
                "cpu_s": cpu_s(pid),
                "rss_mb": rss_mb(pid),
                "meta_bytes": int(s["gossip"]["meta_bytes"]),
                "counters": {
                    k: int(s["counters"].get(k, 0))
                    for k in (
                        "status_reports_sent",
                        "status_statuses_committed",
                        "gossip_meta_too_large",
                    )
                },
            }
        return {
            "agents": agents,
            "commit_index": int(statuses[self.leader.name]["raft"]["commit_index"]),
            "dockerd_cpu_s": cpu_s(dockerd_pid()),
            "dockerd_rss_mb": rss_mb(dockerd_pid()),
        }

    async def running(self) -> int:
        with trio.fail_after(30):
            services = (await self.leader.client.call("service.ls"))["services"]
        for s in services:
            if s["name"] == SERVICE:
                return int(s["replicas_running"])
        return -1

    async def all_ready(self) -> bool:
        with contextlib.suppress(Exception), trio.fail_after(10):
            nodes = (await self.leader.client.call("node.ls"))["nodes"]
            return len(nodes) == len(self.cluster.agents) and all(
                n["status"] == "ready" for n in nodes
            )
        return False

    async def our_containers(self, *, all_: bool) -> int:
        labels = [f"{LABEL_CLUSTER}={self.cluster_id}", f"{LABEL_SERVICE}={SERVICE}"]
        return await trio.to_thread.run_sync(lambda: containers(self.docker, labels, all_=all_))


def dense_spec(replicas: int) -> ServiceSpec:
    return ServiceSpec(
        name=SERVICE,
        image=BUSYBOX_IMAGE,
        command=COMMAND,
        replicas=replicas,
        placement=Placement(constraints=(f"node.hostname=={TARGET}",)),
        stop_grace_period_s=GRACE_S,
    )


async def ramp(side: DenseSwarmlet, replicas: int, start: float, timeout_s: float) -> float:
    """Seconds from `start` until the leader counts `replicas` running, polled every POLL_S;
    every agent sampled every SAMPLE_S meanwhile. Raises AgentChanged as soon as one died."""
    running, sampled = -1, 0.0
    try:
        while running != replicas:
            now = time.monotonic()
            if now - start > timeout_s:
                raise TimeoutError(
                    f"{running} of {replicas} running after {timeout_s:.0f} s (last poll answered)"
                )
            if now - sampled >= SAMPLE_S:
                sampled = now
                await side.sample()
            try:
                running = await side.running()
            except Exception as e:  # a poll that fails or times out: an agent died, or is busy
                side.check_alive()
                log(f"swarmlet: service.ls failed ({e!r}); polling on")
            if running != replicas:
                await trio.sleep(POLL_S)
    except AgentChanged as e:
        elapsed = time.monotonic() - start
        raise AgentChanged(
            f"{elapsed:.1f} s into the ramp, {running} of {replicas} running (last poll): {e}"
        ) from None
    return time.monotonic() - start


async def swarmlet_run(side: DenseSwarmlet, replicas: int) -> dict[str, Any]:
    """One create -> all running -> scale 0 -> none left; the service is removed after it."""
    timeout_s = timeout_for(replicas)
    side.remember_identities()
    side.rss_max.clear()
    side.meta_max.clear()
    before = await side.snapshot()
    r: dict[str, Any] = {"before": before}
    start = time.monotonic()
    await side.leader.client.call("service.create", spec=wire.encode(dense_spec(replicas)))
    r["ramp_s"] = await ramp(side, replicas, start, timeout_s)
    r["at_running"] = await side.snapshot()
    log(f"swarmlet: {replicas} running after {r['ramp_s']:.3f} s")
    side.check_alive()
    r["same_pids"] = True
    r["all_ready"] = await side.all_ready()
    r["rss_max_mb"] = dict(side.rss_max)
    r["meta_max_bytes"] = dict(side.meta_max)

    start = time.monotonic()
    await side.leader.client.call("service.scale", scale={SERVICE: 0})

    async def none_running() -> bool:
        return await side.our_containers(all_=False) == 0

    async def none_left() -> bool:
        return await side.our_containers(all_=True) == 0

    r["drain_running_s"] = await poll_until("none running", none_running, timeout_s)
    r["drain_s"] = time.monotonic() - start
    with contextlib.suppress(TimeoutError):
        await poll_until("no container left", none_left, timeout_s)
        r["drain_s"] = time.monotonic() - start
    r["drain_left"] = await side.our_containers(all_=True)
    r["after_drain"] = await side.snapshot()
    side.check_alive()
    log(
        f"swarmlet: scale to 0: none running after {r['drain_running_s']:.3f} s, "
        f"{r['drain_left']} left after {r['drain_s']:.3f} s"
    )
    await side.leader.client.call("service.rm", services=[SERVICE])
    await poll_until("the service's containers to go", none_left, timeout_s)
    return r


async def run_swarmlet(args: argparse.Namespace, results: dict[str, Any]) -> None:
    root = make_root("dense", keep=args.keep)
    cluster = SwarmletCluster(root, free_port())
    log(f"swarmlet: n1 manager, n2 n3 workers on 127.0.0.1-3:{cluster.port}")
    side = DenseSwarmlet(cluster, docker.from_env())
    runs: list[dict[str, Any]] = []
    results["swarmlet"] = {"runs": runs, "target": TARGET}
    try:
        await trio.to_thread.run_sync(lambda: cluster.start(managers=1, workers=2))
        side.cluster_id = str((await side.status(side.leader))["cluster_id"])
        await poll_until("3 ready nodes", side.all_ready, 60)
        await trio.sleep(2.0)  # let the joins' after-effects settle before the "before" figures
        for i in range(args.runs):
            runs.append(await swarmlet_run(side, args.replicas))
            log(f"swarmlet run {i + 1}/{args.runs} done")
    except (AgentChanged, TimeoutError) as e:
        results["swarmlet"]["failure"] = str(e)
        log(f"swarmlet: FAILED: {e}")
    finally:
        REGISTRY.cleanup()  # kills the agents
        if side.cluster_id:
            remove_cluster_containers(side.cluster_id)


def remove_cluster_containers(cluster_id: str) -> None:
    """This cluster's containers (only: other engineers share the engine), until none is left.

    A create the engine was still doing when the agents were killed lands after the first
    listing, so this lists again until a second look, 1 s later, finds nothing."""
    label = f"{LABEL_CLUSTER}={cluster_id}"
    client = docker.from_env()
    for _ in range(30):
        rm_cluster_containers(cluster_id)
        time.sleep(1.0)
        if containers(client, [label], all_=True) == 0:
            return
    log(f"warning: containers labelled {label} are still there; remove them by hand")


# ----------------------------------------------------------------------------- Docker Swarm


def poll_sync(what: str, done: Callable[[], bool], timeout_s: float) -> float:
    start = time.monotonic()
    while not done():
        if time.monotonic() - start > timeout_s:
            raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(POLL_S)
    return time.monotonic() - start


def swarm_remove(client: docker.DockerClient, timeout_s: float) -> None:
    """Remove our service if it exists, and wait until its containers are gone."""
    for s in client.services.list(filters={"name": SERVICE}):
        if s.name == SERVICE:
            s.remove()  # type: ignore[no-untyped-call]  # docker SDK: untyped
    poll_sync(
        f"{SERVICE}'s containers to go",
        lambda: containers(client, [f"{SWARM_LABEL}={SERVICE}"], all_=True) == 0,
        timeout_s,
    )


def swarm_run(client: docker.DockerClient, replicas: int) -> dict[str, Any]:
    timeout_s = timeout_for(replicas)
    label = [f"{SWARM_LABEL}={SERVICE}"]
    hostname = client.info()["Name"]
    pid = dockerd_pid()
    r: dict[str, Any] = {"before": {"dockerd_cpu_s": cpu_s(pid), "dockerd_rss_mb": rss_mb(pid)}}
    start = time.monotonic()
    service: DockerService = client.services.create(  # type: ignore[no-untyped-call]  # docker SDK: untyped
        BUSYBOX_IMAGE,
        command=list(COMMAND),
        name=SERVICE,
        mode=ServiceMode("replicated", replicas),
        constraints=[f"node.hostname=={hostname}"],
        stop_grace_period=int(GRACE_S * 1e9),
    )
    poll_sync(f"{replicas} running", lambda: swarm_running(service) == replicas, timeout_s)
    r["ramp_s"] = time.monotonic() - start
    r["at_running"] = {"dockerd_cpu_s": cpu_s(pid), "dockerd_rss_mb": rss_mb(pid)}
    log(f"swarm: {replicas} running after {r['ramp_s']:.3f} s")

    start = time.monotonic()
    service.reload()
    service.scale(0)
    r["drain_running_s"] = poll_sync(
        "none running", lambda: containers(client, label, all_=False) == 0, timeout_s
    )
    r["drain_s"] = time.monotonic() - start
    with contextlib.suppress(TimeoutError):
        poll_sync("no container left", lambda: containers(client, label, all_=True) == 0, timeout_s)
        r["drain_s"] = time.monotonic() - start
    r["drain_left"] = containers(client, label, all_=True)
    r["after_drain"] = {"dockerd_cpu_s": cpu_s(pid), "dockerd_rss_mb": rss_mb(pid)}
    log(
        f"swarm: scale to 0: none running after {r['drain_running_s']:.3f} s, "
        f"{r['drain_left']} left after {r['drain_s']:.3f} s"
    )
    swarm_remove(client, timeout_s)
    return r


def run_swarm(args: argparse.Namespace, results: dict[str, Any]) -> None:
    client = docker.from_env()
    runs: list[dict[str, Any]] = []
    results["swarm"] = {"runs": runs}
    log("swarm: docker swarm init --advertise-addr 127.0.0.1")
    with swarm_mode(client):
        try:
            for i in range(args.runs):
                runs.append(swarm_run(client, args.replicas))
                log(f"swarm run {i + 1}/{args.runs} done")
        finally:
            # Before swarm_mode leaves the swarm: our containers go with our service.
            with contextlib.suppress(Exception):
                swarm_remove(client, timeout_for(args.replicas))


# ----------------------------------------------------------------------------- report


def _delta(run: dict[str, Any], key: Callable[[dict[str, Any]], float], end: str) -> float:
    return key(run[end]) - key(run["before"])


def _med(runs: list[dict[str, Any]], value: Callable[[dict[str, Any]], float]) -> float:
    return median([float(value(r)) for r in runs])


def report(results: dict[str, Any], replicas: int) -> None:
    s_runs: list[dict[str, Any]] = results.get("swarmlet", {}).get("runs", [])
    w_runs: list[dict[str, Any]] = results.get("swarm", {}).get("runs", [])

    def dockerd_cpu(end: str) -> Callable[[dict[str, Any]], float]:
        return lambda r: _delta(r, lambda x: float(x["dockerd_cpu_s"]), end)

    def agents_cpu(end: str) -> Callable[[dict[str, Any]], float]:
        return lambda r: _delta(
            r, lambda x: sum(float(a["cpu_s"]) for a in x["agents"].values()), end
        )

    def leader_cpu(r: dict[str, Any]) -> float:
        return _delta(r, lambda x: float(x["agents"][LEADER]["cpu_s"]), "at_running")

    Value = Callable[[dict[str, Any]], float] | None

    def row(label: str, swarmlet: Value, swarm: Value) -> list[str]:
        """Medians of each side's runs (None: not a figure of that side) and Swarm/swarmlet."""
        sm = _med(s_runs, swarmlet) if swarmlet else float("nan")
        wm = _med(w_runs, swarm) if swarm else float("nan")
        ratio = fmt(wm / sm, 2) if sm == sm and wm == wm and sm else "-"
        return [label, fmt(sm), fmt(wm), ratio]

    def both(value: Value) -> tuple[Value, Value]:
        return value, value

    rows = [
        row(f"create -> all {replicas} running (s)", *both(lambda r: r["ramp_s"])),
        row("scale to 0 -> none running (s)", *both(lambda r: r["drain_running_s"])),
        row("scale to 0 -> no container left (s)", *both(lambda r: r["drain_s"])),
        row("dockerd CPU s, ramp", *both(dockerd_cpu("at_running"))),
        row("agents' CPU s, ramp (all 3)", agents_cpu("at_running"), None),
        row("leader's CPU s, ramp", leader_cpu, None),
        row(
            "agents + dockerd CPU s, ramp",
            lambda r: dockerd_cpu("at_running")(r) + agents_cpu("at_running")(r),
            dockerd_cpu("at_running"),
        ),
        row("dockerd CPU s, drain", *both(dockerd_cpu("after_drain"))),
        row("agents' CPU s, drain (all 3)", agents_cpu("after_drain"), None),
        row("dockerd RSS MB before", *both(lambda r: r["before"]["dockerd_rss_mb"])),
        row("dockerd RSS MB, all running", *both(lambda r: r["at_running"]["dockerd_rss_mb"])),
    ]
    n = max(len(s_runs), len(w_runs))
    print_table(
        f"Dense node: {replicas} x `sleep 36000` on one node, medians of {n} "
        "run(s) (swarmlet: 3 agents; Swarm: single node, same engine)",
        ["measure", "swarmlet", "Swarm", "Swarm/swarmlet"],
        rows,
    )
    print(
        "CPU s of a ramp: the machine has 2 cores, so 1 CPU s per wall second is half of it; "
        "the engine's containerd and shims are not counted on either side."
    )
    failure = results.get("swarmlet", {}).get("failure")
    if failure:
        print(f"\nswarmlet FAILED: {failure.splitlines()[0]}")
    for i, r in enumerate(s_runs):
        _report_agents(i + 1, r, replicas)
    for i, r in enumerate(w_runs):
        print(f"Swarm run {i + 1}: containers left after the drain: {r['drain_left']}")


def _report_agents(n: int, r: dict[str, Any], replicas: int) -> None:
    before, at, after = r["before"], r["at_running"], r["after_drain"]
    rows = []
    for name, b in before["agents"].items():
        a, d = at["agents"][name], after["agents"][name]
        rows.append(
            [
                name + (f" ({TARGET}: the {replicas})" if name == TARGET else ""),
                b["role"],
                b["pid"],
                f"{b['rss_mb']:.1f} / {r['rss_max_mb'].get(name, float('nan')):.1f} / "
                f"{a['rss_mb']:.1f} / {d['rss_mb']:.1f}",
                f"{b['meta_bytes']} / {r['meta_max_bytes'].get(name, '-')} / "
                f"{a['meta_bytes']} / {d['meta_bytes']}",
                fmt(a["cpu_s"] - b["cpu_s"], 2),
                a["counters"]["status_reports_sent"] - b["counters"]["status_reports_sent"],
                d["counters"]["status_reports_sent"] - a["counters"]["status_reports_sent"],
                d["counters"]["gossip_meta_too_large"],
            ]
        )
    print_table(
        f"swarmlet run {n}: per agent (same pid and ready after the ramp: "
        f"{r['same_pids']} / {r['all_ready']})",
        [
            "agent",
            "raft",
            "pid",
            "RSS MB before/max/running/drained",
            "gossip meta bytes before/max/running/drained",
            "CPU s ramp",
            "reports sent ramp",
            "reports sent drain",
            "meta too large",
        ],
        rows,
    )
    entries = at["commit_index"] - before["commit_index"]
    committed = (
        at["agents"][LEADER]["counters"]["status_statuses_committed"]
        - before["agents"][LEADER]["counters"]["status_statuses_committed"]
    )
    drain_entries = after["commit_index"] - at["commit_index"]
    drain_committed = (
        after["agents"][LEADER]["counters"]["status_statuses_committed"]
        - at["agents"][LEADER]["counters"]["status_statuses_committed"]
    )
    print(
        f"Raft entries committed during the ramp: {entries}, for {committed} task statuses "
        f"committed ({committed / replicas:.2f} per task, {committed / max(entries, 1):.1f} per "
        f"entry); during the drain: {drain_entries} entries for {drain_committed} statuses"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--replicas", type=int, default=REPLICAS)
    parser.add_argument("--runs", type=int, default=1, help="create/drain cycles per system")
    parser.add_argument("--only", choices=("swarmlet", "swarm"), default=None)
    parser.add_argument("--keep", action="store_true", help="keep the agents' data dirs and logs")
    parser.add_argument("--quick", action="store_true", help="smoke run: --replicas 20")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    if args.quick:
        args.replicas = 20
    install_cleanup()
    ensure_test_images()
    results: dict[str, Any] = {"replicas": args.replicas, "runs": args.runs}
    try:
        if args.only != "swarm":
            trio.run(run_swarmlet, args, results)
        if args.only != "swarmlet":
            run_swarm(args, results)
    finally:
        REGISTRY.cleanup()
        report(results, args.replicas)
        print_load()
        write_json(args.json, results)


if __name__ == "__main__":
    main()
