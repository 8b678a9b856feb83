"""Rolling update of 10 replicas: swarmlet (3 agents on 127.0.0.1-3) vs single-node Docker Swarm.

    .venv/bin/python -m bench.rolling_update [--runs 3] [--orders stop-first start-first]
                                             [--only swarmlet|swarm] [--json out.json]
                                             [--timeline] [--no-requests] [--docker-floor]

Figures, not pass/fail checks. Per run and update order: a service of 10 replicas of
`swarmlet/web:1` with a published port, `--update-parallelism 2 --update-delay 0s`, is updated to
`swarmlet/web:2` while a request loop goes through the routing mesh. Measured, `--runs` times,
medians reported:

- `new_running_s`: from just before the update command to the first poll that sees all 10 tasks
  of the new version running (swarmlet: `spec_version` of the updated spec, state running;
  Swarm: task image `swarmlet/web:2`, `Status.State == running`, desired state running);
- `completed_s`: to the first poll that sees the update state `completed` (swarmlet's
  `update_status.state`, Swarm's `UpdateStatus.State`);
- `failed`: requests through the mesh that failed (connection refused/reset, timeout, HTTP error)
  between the update command and 2 s after completion; `ok` the ones that succeeded.

Where swarmlet's time goes (`phases`, always measured, printed after the table; `--timeline`
also prints every event): from the leader's `task` events (each recorded once its write
committed), each task's observed `since` and `docker events`, the steps of a slot's update,
medians over the 10 new tasks: command -> first new task written, written -> container created,
created -> started, started -> observed running, running -> the next slot's task written.
`--docker-floor` times the same update straight through the Docker API with no orchestration
(`docker_floor_run`): what is left once swarmlet's own costs are gone. `--no-requests` runs
swarmlet without the request loop, as Swarm runs here (the loop costs CPU on a 2-core machine).

Timing choices (the issue is silent on them; decided here):
- Both updates are issued through their CLI, detached (`swarmlet service update --detach`,
  `docker service update --detach --no-resolve-image`), so both figures include one CLI start
  (~0.1-0.5 s). `--no-resolve-image`: there is no registry here, and without it the Docker CLI
  first tries to resolve the digest; that would only add to Swarm's time.
- Polls go through each system's API from this process (swarmlet's `ControlClient`
  `service.ps` / `service.ls` / `service.inspect`; the docker SDK for Swarm), every 50 ms.
- Every other setting is the CLI's default on both sides (stop grace period 10 s; the image
  stops at once on SIGTERM, so it does not matter).
- One request at a time, a new HTTP connection each (`urllib`), through agent 2's address for
  swarmlet (not the leader's), 127.0.0.1 for Swarm's ingress.
- The swarmlet cluster is created once; each run creates and removes its service, on a new port.
- Swarm mode is entered only if the engine is not in a swarm; if another benchmark holds it, this
  one waits for it (up to `--swarm-wait` s) and never touches someone else's swarm. It leaves
  (`docker swarm leave --force`) in a `finally`, whatever happened.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import docker
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
from swarmlet.api.control_socket import ControlClient
from swarmlet.testing.images import ensure_test_images

REPLICAS = 10
NAME = "rweb"
POLL_S = 0.05
TIMEOUT_S = 180.0
TAIL_S = 2.0
# Swarm's ingress needs IPVS; where the kernel has none (this machine: no /proc/net/ip_vs, and
# dockerd logs "error reading the kernel parameter net.ipv4.vs.conn_reuse_mode"), published ports
# never answer. Swarm is then timed without a request loop.
INGRESS_S = 20.0
# `--update-monitor` for both systems; empty: the default, 5 s on both (Docker's and swarmlet's
# UpdateConfig.monitor_s), which "completed" always waits for after the last new task started.
MONITOR: list[str] = []  # requests still counted after completion
OLD, NEW = "swarmlet/web:1", "swarmlet/web:2"


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


class RequestLoop:
    """One request at a time in a thread; every outcome with its time."""

    def __init__(self, host: str, port: int) -> None:
        self.url = f"http://{host}:{port}/"
        self.enabled = bool(host)  # no host: no requests (Swarm without an ingress)
        self.outcomes: list[tuple[float, bool, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while self.enabled and not self._stop.is_set():
            at = time.monotonic()
            try:
                with urllib.request.urlopen(self.url, timeout=5) as response:
                    body = response.read().decode().strip()
                self.outcomes.append((at, True, body))
            except OSError as exc:
                self.outcomes.append((at, False, repr(exc)))

    def between(self, start: float, end: float) -> tuple[int, list[str]]:
        window = [o for o in self.outcomes if start <= o[0] <= end]
        return sum(1 for o in window if o[1]), [o[2] for o in window if not o[1]]

    def __enter__(self) -> RequestLoop:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def wait(what: str, done: Callable[[], bool], timeout_s: float = TIMEOUT_S) -> float:
    return wait_until(what, done, timeout_s=timeout_s, poll_s=POLL_S)


def answers(host: str, port: int, prefix: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/", timeout=2) as response:
            body: str = response.read().decode().strip()
            return body.startswith("v2") == (prefix == "v2")
    except OSError:
        return False


def sh(cmd: list[str]) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr.strip()}")
    return proc.stdout


def measure(
    loop: RequestLoop,
    update: list[str],
    new_running: Callable[[], bool],
    completed: Callable[[], bool],
) -> dict[str, Any]:
    """Issue the update; time both goals; count the requests in the window."""
    start = time.monotonic()
    wall_start = time.time()
    sh(update)
    cli_s = time.monotonic() - start
    running_at = wait("all new replicas running", new_running)
    completed_at = wait("update completed", completed)
    time.sleep(TAIL_S)
    ok, failures = loop.between(start, completed_at + TAIL_S)
    return {
        "wall_start": wall_start,
        "requests": bool(loop.outcomes),
        "new_running_s": running_at - start,
        "completed_s": completed_at - start,
        "cli_s": cli_s,
        "ok": ok,
        "failed": len(failures),
        "failures": failures[:10],
    }


# ----------------------------------------------------------------------------- swarmlet


class Swarmlet:
    def __init__(self, cluster: SwarmletCluster, *, timeline: bool, requests: bool) -> None:
        self.cluster = cluster
        self.show_timeline = timeline
        self.requests = requests
        # Not a flag: `service create IMAGE COMMAND ARG...` would swallow a trailing --data-dir.
        os.environ["SWARMLET_DATA_DIR"] = str(cluster.agents[0].data_dir)

    def call(self, op: str, **args: Any) -> Any:
        client = self.cluster.agents[0].client
        return trio.run(lambda: client.call(op, **args))

    def service(self) -> dict[str, Any] | None:
        for s in self.call("service.ls")["services"]:
            if s["name"] == NAME:
                return dict(s)
        return None

    def tasks(self) -> list[dict[str, Any]]:
        return list(self.call("service.ps", services=[NAME])["tasks"])

    def running(self, version: int) -> int:
        return sum(
            1
            for t in self.tasks()
            if t["desired_state"] == "running"
            and t["state"] == "running"
            and t["spec_version"] >= version
        )

    def cli(self, *args: str) -> list[str]:
        return [*SWARMLET, *args]

    def events(self, since: float) -> list[dict[str, Any]]:
        """Every agent's `task` events since `since` (the leader records its task writes)."""

        async def one(client: ControlClient) -> list[dict[str, Any]]:
            async with client.stream("events", since=since, types=["task"], no_follow=True) as it:
                return [dict(e) async for e in it]

        return [e for a in self.cluster.agents for e in trio.run(one, a.client)]

    def timeline(self, since: float, until: float, version: int) -> dict[str, Any]:
        """Where one update's time went, in wall-clock times (one machine, one clock):
        * `rows`: (time, slot, what): the leader's task writes (recorded once committed), each
          task's last observed state change (its `since`, from the agent that runs it), and
          Docker's container events (create, start, kill, die);
        * `phases`: medians over the new tasks of the steps of a slot's update."""
        tasks = {t["id"]: t for t in self.tasks()}
        rows: list[tuple[float, str, str]] = []
        written: dict[str, float] = {}  # new task -> when the leader's write of it committed
        for e in self.events(since):
            words = e["message"].split()  # "task <id[:10]> on <node>: desired ..., state ..."
            if len(words) < 4 or words[0] != "task" or words[2] != "on":
                continue  # an agent's own report (a failure), not a write
            task_id = next((k for k in tasks if k.startswith(words[1])), words[1])
            written.setdefault(task_id, e["time"])
            what = e["message"].split(": ", 1)[1]
            rows.append((e["time"], e["subject"], f"leader wrote {task_id[:6]}: {what}"))
        for t in tasks.values():
            if t["updated_at"] >= since and t["container_id"]:
                what = f"{t['node_name']} observed {t['id'][:6]} {t['state']}"
                rows.append((t["updated_at"], t["name"], what))
        docker: dict[tuple[str, str], float] = {}
        label = f"label=swarmlet.service={NAME}"
        out = sh(["docker", "events", "--since", f"{since:.3f}", "--until", f"{until:.3f}",
                  "--filter", label, "--format", "{{json .}}"])  # fmt: skip
        for line in out.splitlines():
            e = json.loads(line)
            task_id = e["Actor"]["Attributes"].get("swarmlet.task", "")
            action = e["Action"].split(":")[0]
            if action in ("create", "start", "kill", "die") and task_id in tasks:
                docker.setdefault((task_id, action), e["timeNano"] / 1e9)
                name = tasks[task_id]["name"]
                rows.append((e["timeNano"] / 1e9, name, f"docker {action} {task_id[:6]}"))
        new = [t for t in tasks.values() if t["spec_version"] == version and t["id"] in written]
        writes = sorted(written[t["id"]] for t in new)
        running = [t["updated_at"] for t in new if t["state"] == "running"]
        steps: dict[str, list[float]] = {
            "command_to_first_write": [writes[0] - since] if writes else [],
            "write_to_create": [],
            "create_to_start": [],
            "start_to_running": [],
            # The next slot's write after a task is seen running: gossip + plan + commit.
            "running_to_next_write": [
                min(w for w in writes if w >= r) - r for r in running if writes[-1] >= r
            ],
        }
        for t in new:
            created, started = docker.get((t["id"], "create")), docker.get((t["id"], "start"))
            if created is not None:
                steps["write_to_create"].append(created - written[t["id"]])
            if created is not None and started is not None:
                steps["create_to_start"].append(started - created)
            if started is not None and t["state"] == "running":
                steps["start_to_running"].append(t["updated_at"] - started)
        return {
            "rows": [(round(at - since, 3), name, what) for at, name, what in sorted(rows)],
            "phases": {k: median(v) for k, v in steps.items()},
        }

    def run(self, order: str, port: int) -> dict[str, Any]:
        create = self.cli(
            "service", "create", "--detach", "--name", NAME, "--replicas", str(REPLICAS),
            "-p", f"{port}:80", "--update-parallelism", "2", "--update-delay", "0s",
            "--update-order", order, *MONITOR, OLD,
        )  # fmt: skip
        sh(create)
        host = self.cluster.agents[1].host
        try:
            wait("10 running", lambda: (s := self.service()) is not None and s[
                "replicas_running"] == REPLICAS)  # fmt: skip
            wait("the mesh to answer", lambda: answers(host, port, "v1"))
            with RequestLoop(host if self.requests else "", port) as loop:
                wait("some traffic", lambda: not loop.enabled or len(loop.outcomes) > 20)
                before = self.service()
                assert before is not None
                version = int(before["version"]) + 1
                result = measure(
                    loop,
                    self.cli("service", "update", "--detach", "--image", NEW, NAME),
                    lambda: self.running(version) == REPLICAS,
                    lambda: (
                        (s := self.service()) is not None
                        and s["update_status"] is not None
                        and s["update_status"]["state"] == "completed"
                    ),
                )
            since = result["wall_start"]
            timeline = self.timeline(since, since + result["completed_s"], version)
            result["phases"] = timeline["phases"]
            if self.show_timeline:
                result["timeline"] = timeline["rows"]
                for at, name, what in timeline["rows"]:
                    print(f"  +{at:6.3f}  {name:8}  {what}")
            return result
        finally:
            with contextlib.suppress(Exception):
                self.call("service.rm", services=[NAME])
            wait("the service's containers to go", lambda: not containers(
                f"swarmlet.service={NAME}"), timeout_s=60)  # fmt: skip


def containers(label: str) -> list[str]:
    out = subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"label={label}"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    return out.split()


def remove_containers(label: str) -> None:
    """Whatever the agents left behind (they were killed, so nobody else will remove it)."""
    ids = containers(label)
    if ids:
        subprocess.run(["docker", "rm", "-f", *ids], capture_output=True, check=False)


def run_swarmlet(args: argparse.Namespace, results: dict[str, Any]) -> None:
    root = make_root("rolling", args.keep)
    cluster = SwarmletCluster(root, free_port())
    log("swarmlet: starting 3 managers")
    cluster.start(managers=3, workers=0)
    side = Swarmlet(cluster, timeline=args.timeline, requests=not args.no_requests)
    out: dict[str, list[dict[str, Any]]] = results.setdefault("swarmlet", {})
    for i in range(args.runs):
        for order in args.orders:
            r = side.run(order, free_port())
            out.setdefault(order, []).append(r)
            log(f"swarmlet {order} #{i + 1}: {brief(r)}")


def brief(r: dict[str, Any]) -> str:
    return (
        f"new running {r['new_running_s']:.3f} s, completed {r['completed_s']:.3f} s, "
        f"cli {r['cli_s']:.3f} s, requests ok {r['ok']} failed {r['failed']} {r['failures'][:3]}"
    )


# ----------------------------------------------------------------------------- Docker Swarm


@contextlib.contextmanager
def swarm_mode(client: docker.DockerClient, wait_s: float) -> Iterator[None]:
    deadline = time.monotonic() + wait_s
    while client.info().get("Swarm", {}).get("LocalNodeState", "") != "inactive":
        if time.monotonic() > deadline:
            raise RuntimeError("the engine stayed in swarm mode (someone else's); Swarm skipped")
        log("the engine is in swarm mode (another benchmark?); waiting for it to leave")
        time.sleep(10)
    subprocess.run(
        ["docker", "swarm", "init", "--advertise-addr", "127.0.0.1"],
        capture_output=True,
        check=True,
    )
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            for s in client.services.list(filters={"name": NAME}):
                s.remove()  # type: ignore[no-untyped-call]  # docker SDK: untyped
        out = subprocess.run(
            ["docker", "swarm", "leave", "--force"], capture_output=True, text=True, check=False
        )
        log(f"docker swarm leave --force: exit {out.returncode} {out.stdout.strip()}")


def swarm_run(client: docker.DockerClient, order: str, port: int) -> dict[str, Any]:
    sh(
        ["docker", "service", "create", "--detach", "--no-resolve-image", "--name", NAME,
         "--replicas", str(REPLICAS), "-p", f"{port}:80", "--update-parallelism", "2",
         "--update-delay", "0s", "--update-order", order, *MONITOR, OLD]
    )  # fmt: skip
    service = client.services.get(NAME)  # type: ignore[no-untyped-call]  # docker SDK: untyped

    def tasks() -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = service.tasks(filters={"desired-state": "running"})
        return found

    def running(image: str) -> int:
        return sum(
            1
            for t in tasks()
            if t["Status"]["State"] == "running"
            and t["Spec"]["ContainerSpec"]["Image"].startswith(image)
        )

    def completed() -> bool:
        service.reload()
        state: str = service.attrs.get("UpdateStatus", {}).get("State", "")
        return state == "completed"

    try:
        wait("10 running", lambda: running(OLD) == REPLICAS)
        try:
            wait("the ingress", lambda: answers("127.0.0.1", port, "v1"), timeout_s=INGRESS_S)
            host = "127.0.0.1"
        except TimeoutError:
            log(f"Swarm's ingress does not answer on 127.0.0.1:{port}: timed without requests")
            host = ""
        with RequestLoop(host, port) as loop:
            wait("some traffic", lambda: not host or len(loop.outcomes) > 20)
            return measure(
                loop,
                [
                    "docker",
                    "service",
                    "update",
                    "--detach",
                    "--no-resolve-image",
                    "--image",
                    NEW,
                    NAME,
                ],
                lambda: running(NEW) == REPLICAS,
                completed,
            )
    finally:
        with contextlib.suppress(Exception):
            service.remove()
        wait("the service's containers to go", lambda: not containers(
            f"com.docker.swarm.service.name={NAME}"), timeout_s=60)  # fmt: skip


def run_swarm(args: argparse.Namespace, results: dict[str, Any]) -> None:
    client = docker.from_env()
    out: dict[str, list[dict[str, Any]]] = results.setdefault("swarm", {})
    with swarm_mode(client, args.swarm_wait):
        log("swarm: docker swarm init --advertise-addr 127.0.0.1")
        for i in range(args.runs):
            for order in args.orders:
                r = swarm_run(client, order, free_port())
                out.setdefault(order, []).append(r)
                log(f"swarm {order} #{i + 1}: {brief(r)}")


# ----------------------------------------------------------------------------- Docker floor

FLOOR_LABEL = {"swarmlet.bench": "rolling-floor"}


def docker_floor_run(order: str) -> float:
    """The same update straight through the Docker API, with no orchestration: 10 containers of
    OLD, each with a published port on 127.0.0.2 as swarmlet's tasks have, replaced two at a
    time in `order`; a pair starts once both containers of the previous pair have started, and
    stops run in the background, as swarmlet's do. Returns the time from the first stop or
    start to the last start: compare with swarmlet's `new_running_s - command_to_first_write`."""
    api = docker.from_env().api

    def start(image: str) -> str:
        host_config = api.create_host_config(port_bindings={80: ("127.0.0.2", None)})
        created = api.create_container(
            image, ports=[80], host_config=host_config, labels=FLOOR_LABEL
        )
        api.start(created["Id"])
        return str(created["Id"])

    try:
        with ThreadPoolExecutor(max_workers=2 * REPLICAS) as pool:
            old = list(pool.map(lambda _: start(OLD), range(REPLICAS)))
            begin = time.monotonic()
            for i in range(0, REPLICAS, 2):
                pair = old[i : i + 2]
                if order == "stop-first":
                    for c in pair:
                        pool.submit(api.stop, c, timeout=10)
                for future in [pool.submit(start, NEW) for _ in pair]:
                    future.result()
                if order == "start-first":
                    for c in pair:
                        pool.submit(api.stop, c, timeout=10)
            return time.monotonic() - begin
    finally:
        remove_containers(f"swarmlet.bench={FLOOR_LABEL['swarmlet.bench']}")


def run_docker_floor(args: argparse.Namespace, results: dict[str, Any]) -> None:
    out: dict[str, list[float]] = results.setdefault("docker_floor", {})
    for i in range(args.runs):
        for order in args.orders:
            out.setdefault(order, []).append(docker_floor_run(order))
            log(f"Docker API floor {order} #{i + 1}: {out[order][-1]:.3f} s")


# ----------------------------------------------------------------------------- report


def report(results: dict[str, Any]) -> None:
    s, w = results.get("swarmlet", {}), results.get("swarm", {})
    rows: list[list[object]] = []
    for order in results["orders"]:
        for key, label, goal, ref in (
            ("new_running_s", "all new running", "", "21.5"),
            ("completed_s", "update completed", "<= 6", "26.5"),
        ):
            a = [r[key] for r in s.get(order, [])]
            b = [r[key] for r in w.get(order, [])]
            rows.append(
                [
                    order,
                    label,
                    fmt(median(a)),
                    len(a),
                    fmt(median(b)),
                    len(b),
                    fmt(median(a) / median(b), 2) if a and b else "-",
                    goal,
                    ref if order == "stop-first" else "",
                ]
            )
        for key, label in (("new_running_s", "all new running"), ("completed_s", "completed")):
            a = [r[key] - r["cli_s"] for r in s.get(order, [])]
            b = [r[key] - r["cli_s"] for r in w.get(order, [])]
            rows.append(
                [
                    order,
                    f"{label}, from CLI exit",
                    fmt(median(a)),
                    len(a),
                    fmt(median(b)),
                    len(b),
                    fmt(median(a) / median(b), 2) if a and b else "-",
                    "",
                    "",
                ]
            )
        for name, side in (("swarmlet", s), ("Swarm", w)):
            runs = side.get(order, [])
            if runs:
                rows.append(
                    [
                        order,
                        f"failed requests ({name})",
                        " ".join(
                            str(r["failed"]) if r.get("requests", True) else "n/a" for r in runs
                        ),
                        len(runs),
                        f"of {' '.join(str(r['ok'] + r['failed']) for r in runs)}",
                        "",
                        "",
                        "0" if name == "swarmlet" else "",
                        "",
                    ]
                )
    print_table(
        "Rolling update 10 replicas web:1 -> web:2, parallelism 2, delay 0 (seconds, medians)",
        [
            "order",
            "figure",
            "swarmlet",
            "runs",
            "Swarm",
            "runs",
            "swarmlet/Swarm",
            "goal",
            "Swarm elsewhere",
        ],
        rows,
    )
    for name, side in (("swarmlet", s), ("Swarm", w)):
        for order, runs in side.items():
            for key in ("new_running_s", "completed_s", "cli_s"):
                print(f"{name} {order} {key}: " + " ".join(fmt(r[key]) for r in runs))
    for order, runs in s.items():
        print(f"swarmlet {order}, steps of a slot's update (s, median over tasks, then runs):")
        for key in runs[0]["phases"]:
            print(f"  {key}: {fmt(median([r['phases'][key] for r in runs]))}")
        after_write = [r["new_running_s"] - r["phases"]["command_to_first_write"] for r in runs]
        print(f"  first write to all new running: {fmt(median(after_write))}")
    for order, floor in results.get("docker_floor", {}).items():
        print(f"Docker API floor {order} (no orchestration), first stop or start to last start: "
              f"median {fmt(median(floor))} ({' '.join(fmt(x) for x in floor)})")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--orders", nargs="+", choices=("stop-first", "start-first"),
        default=["stop-first", "start-first"],
    )  # fmt: skip
    parser.add_argument("--only", choices=("swarmlet", "swarm"), default=None)
    parser.add_argument("--swarm-wait", type=float, default=900.0, help="s to wait for a swarm")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument(
        "--timeline", action="store_true", help="print each swarmlet update's task timeline"
    )
    parser.add_argument(
        "--no-requests", action="store_true", help="no request loop on the swarmlet side"
    )
    parser.add_argument(
        "--docker-floor", action="store_true", help="also time the update through Docker alone"
    )
    parser.add_argument("--json", default=None)
    parser.add_argument("--update-monitor", default=None, help="e.g. 1s (default: 5 s on both)")
    args = parser.parse_args()
    if args.update_monitor:
        MONITOR.extend(["--update-monitor", args.update_monitor])
    install_cleanup()
    ensure_test_images()
    results: dict[str, Any] = {
        "runs": args.runs,
        "orders": args.orders,
        "update_monitor": args.update_monitor or "default (5s)",
        "date": time.ctime(),
    }
    try:
        if args.only != "swarm":
            try:
                run_swarmlet(args, results)
            finally:
                REGISTRY.cleanup()
                remove_containers(f"swarmlet.service={NAME}")
        if args.docker_floor:
            run_docker_floor(args, results)
        if args.only != "swarmlet":
            run_swarm(args, results)
    finally:
        REGISTRY.cleanup()
        report(results)
        print_load()
        write_json(args.json, results)


if __name__ == "__main__":
    main()
