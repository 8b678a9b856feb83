"""The routing mesh side by side: swarmlet's proxy vs HAProxy (mode tcp) vs one replica directly.

    .venv/bin/python -m bench.proxy [--rounds 3] [--duration 15] [--no-profile] [--quick] [--keep]
                                    [--profile-mode close|keep-alive] [--proxy-workers N]
                                    [--compare-workers M] [--metrics [--scrape-every S]]
                                    [--json FILE]

With --metrics, n1 serves Prometheus metrics and the target "mesh scraped" (n1's mesh while a
thread scrapes them every S seconds, 1 by default) is interleaved with "mesh" (the same, not
scraped): what metrics cost the mesh's throughput, in the same run (issue #18).

Figures, not pass/fail checks. A swarmlet cluster of 3 agents (127.0.0.1-3) runs a service of 3
nginx replicas (`swarmlet-bench/nginx:1`, built here from bench/images/ if missing) with a
published port; wrk (2 threads, 64 connections, `--latency`) hits:

- mesh:    node n1's publish address 127.0.0.1:PUBLISHED (swarmlet's proxy: the agent process
           and its proxy worker processes);
- haproxy: HAProxy 2.6 `mode tcp`, `balance roundrobin` over the same 3 replicas' host ports;
- direct:  one replica's host port (the ceiling: no proxy at all);

each with keep-alive and with a connection per request (`-H "Connection: close"`). Targets are
interleaved within each round so that load from the rest of this shared machine spreads evenly.
Reported: medians over rounds of requests/s, p50 and p99 latency; the mesh's ratio to HAProxy;
the agent's CPU use during the mesh runs (/proc/PID/stat, with its proxy workers), and once a
py-spy profile of the agent and its workers under load (`--profile-mode`, default close; top
frames by own and by total time).

n1's proxy runs with `--proxy-workers` worker processes (default: swarmlet's own default,
`swarmlet.proxy.worker_pool.default_worker_count`), n2's with `--compare-workers` (default: 1 if n1
has none, else none); n2 is measured too ("mesh w=M", at 127.0.0.2:PUBLISHED), so both set-ups
are compared in the same run.

Decided here (the issue is silent):
- HAProxy runs with its defaults (nbthread = the 2 CPUs, no `maxconn` limit below 64); timeouts
  5 s connect / 30 s client and server; it binds 127.0.0.1 like the mesh.
- Responses that are not 2xx/3xx (wrk's "Non-2xx") and socket errors are printed per run: a fast
  run full of errors is not a fast run.
- Image build: bench/images/build.sh (debootstrap --variant=minbase bookworm from the host's apt
  mirror, `docker import`, then the nginx Dockerfile). Its time is printed when it builds; a
  cached tag costs nothing. `swarmlet-test/debian:12` is reused as the base when present.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import re
import shutil
import statistics
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from bench.common import (
    REGISTRY,
    SwarmletCluster,
    ensure_installed,
    fmt,
    free_port,
    install_cleanup,
    log,
    make_root,
    print_load,
    print_table,
    spawn,
    write_json,
)
from bench.reference import wait_tcp
from swarmlet.proxy.worker_pool import default_worker_count
from swarmlet.state.model import PortConfig, ServiceSpec
from swarmlet.wire import codec as wire

IMAGE = "swarmlet-bench/nginx:1"
BUILD_SCRIPT = Path(__file__).with_name("images") / "build.sh"
SERVICE = "bnginx"
REPLICAS = 3
MODES = {"keep-alive": [], "close": ["-H", "Connection: close"]}
SCRAPED = "mesh scraped"  # n1's mesh while its metrics are scraped (--metrics)


def ensure_nginx_image() -> str:
    """Build the image if its tag is missing; say how long it took (or that it was cached)."""
    have = subprocess.run(["docker", "image", "inspect", IMAGE], capture_output=True, check=False)
    if have.returncode == 0:
        return f"{IMAGE}: cached (tag present), not rebuilt"
    ensure_installed(["debootstrap"], ["debootstrap"])
    log(f"building {IMAGE} with {BUILD_SCRIPT} (debootstrap + docker import + docker build)")
    start = time.monotonic()
    subprocess.run(["sh", str(BUILD_SCRIPT)], check=True)
    return f"{IMAGE}: built in {time.monotonic() - start:.1f} s"


# ----------------------------------------------------------------------------- wrk


@dataclass(frozen=True)
class WrkResult:
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: str  # "" when none


_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if not m:
        raise ValueError(f"wrk latency {text!r}")
    return float(m.group(1)) * _UNITS_MS[m.group(2)]


def parse_wrk(out: str) -> WrkResult:
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    errors = []
    if m := re.search(r"Socket errors: (.*)", out):
        errors.append(m.group(1).strip())
    if m := re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        errors.append(f"non-2xx {m.group(1)}")
    return WrkResult(rps, p50, p99, total, "; ".join(errors))


def wrk(url: str, mode: str, duration_s: int) -> WrkResult:
    cmd = ["wrk", "-t2", "-c64", f"-d{duration_s}s", "--latency", *MODES[mode], url]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return parse_wrk(proc.stdout)


# ----------------------------------------------------------------------------- CPU of a pid


def process_tree(pid: int) -> list[int]:
    """`pid` and its descendants (the agent and its proxy workers)."""
    tree = [pid]
    for p in tree:
        with contextlib.suppress(FileNotFoundError, ValueError):
            for task in Path(f"/proc/{p}/task").iterdir():
                tree += [int(c) for c in (task / "children").read_text().split()]
    return tree


def cpu_seconds(pid: int) -> float:
    """utime + stime of `pid` and its descendants (all threads), in seconds."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for p in process_tree(pid):
        with contextlib.suppress(FileNotFoundError):
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total / ticks


def run_queue_wait_s(pid: int) -> float:
    """Seconds the threads of `pid` and its descendants spent runnable but waiting for a CPU
    (schedstat field 2): on a shared machine, how much of the agent's slowness is starvation
    rather than work."""
    total_ns = 0
    for p in process_tree(pid):
        with contextlib.suppress(FileNotFoundError):
            for task in Path(f"/proc/{p}/task").iterdir():
                with contextlib.suppress(FileNotFoundError, ValueError, IndexError):
                    total_ns += int((task / "schedstat").read_text().split()[1])
    return total_ns / 1e9


# ----------------------------------------------------------------------------- set-up


@contextlib.contextmanager
def proxy_workers(count: int) -> Iterator[None]:
    """Agents started within get `count` proxy worker processes."""
    os.environ["SWARMLET_PROXY_WORKERS"] = str(count)
    try:
        yield
    finally:
        del os.environ["SWARMLET_PROXY_WORKERS"]


@contextlib.contextmanager
def metrics_served(addr: str | None) -> Iterator[None]:
    """Agents started within serve Prometheus metrics on `addr` (SWARMLET_METRICS_ADDR)."""
    if addr is None:
        yield
        return
    os.environ["SWARMLET_METRICS_ADDR"] = addr
    try:
        yield
    finally:
        del os.environ["SWARMLET_METRICS_ADDR"]


@contextlib.contextmanager
def scraping(url: str | None, every_s: float) -> Iterator[list[float]]:
    """Scrape `url` every `every_s` in a thread while the block runs (a Prometheus at a far
    higher rate than its usual 15 s, so that the cost shows); yields each scrape's seconds."""
    took: list[float] = []
    if url is None:
        yield took
        return
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(every_s):
            start = time.monotonic()
            with urllib.request.urlopen(url, timeout=10) as response:
                response.read()
            took.append(time.monotonic() - start)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield took
    finally:
        stop.set()
        thread.join()


def start_haproxy(root: Path, backends: list[tuple[str, int]]) -> int:
    port = free_port()
    servers = "\n".join(f"    server r{i} {h}:{p}" for i, (h, p) in enumerate(backends))
    cfg = root / "haproxy.cfg"
    cfg.write_text(
        "global\n"
        "    log stdout format raw local0 warning\n"
        "defaults\n"
        "    mode tcp\n"
        "    timeout connect 5s\n"
        "    timeout client 30s\n"
        "    timeout server 30s\n"
        "frontend mesh\n"
        f"    bind 127.0.0.1:{port}\n"
        "    default_backend replicas\n"
        "backend replicas\n"
        "    balance roundrobin\n"
        f"{servers}\n"
    )
    subprocess.run(["haproxy", "-c", "-f", str(cfg)], capture_output=True, check=True)
    spawn(["haproxy", "-db", "-f", str(cfg)], root / "haproxy.log")
    wait_tcp("127.0.0.1", port, 10)
    return port


async def _call(cluster: SwarmletCluster, method: str, **args: Any) -> Any:
    return await cluster.agents[0].client.call(method, **args)


async def deploy(cluster: SwarmletCluster, published: int) -> list[tuple[str, int]]:
    """Create the service; wait for 3 running replicas; their (host, port) endpoints."""
    spec = ServiceSpec(
        name=SERVICE,
        image=IMAGE,
        replicas=REPLICAS,
        ports=(PortConfig(published=published, target=80),),
        stop_grace_period_s=1.0,
    )
    await _call(cluster, "service.create", spec=wire.encode(spec))
    with trio.fail_after(120):
        while True:
            tasks = (await _call(cluster, "service.ps", services=[SERVICE]))["tasks"]
            up = [t for t in tasks if t["state"] == "running" and t["endpoints"]]
            if len(up) == REPLICAS:
                return [(e["host"], int(e["port"])) for t in up for e in t["endpoints"]]
            await trio.sleep(0.1)


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def wait_http(url: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not http_ok(url):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not answer 200 within {timeout_s} s")
        time.sleep(0.1)


# ----------------------------------------------------------------------------- profile


def profile(pid: int, url: str, mode: str, duration_s: int, out_dir: Path) -> list[str]:
    """py-spy the agent and its proxy workers while wrk (`mode`) runs through the mesh; summary
    lines."""
    py_spy = shutil.which("py-spy") or str(Path(__file__).parents[1] / ".venv/bin/py-spy")
    if not Path(py_spy).exists():
        return ["py-spy not installed (`.venv/bin/pip install py-spy`): no profile"]
    raw = out_dir / "mesh-profile.txt"
    record = [py_spy, "record", "--pid", str(pid), "--duration", str(duration_s), "--gil"]
    record.append("--subprocesses")  # the agent's proxy workers too
    spy_raw = subprocess.Popen(
        [*record, "--format", "raw", "--output", str(raw)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    REGISTRY.pids.add(spy_raw.pid)
    time.sleep(0.5)
    result = wrk(url, mode, duration_s)
    spy_raw.wait(timeout=60)
    lines = [
        f"under py-spy (100 Hz, --gil: samples holding the GIL only): "
        f"{result.requests_per_s:,.0f} req/s (profiling costs some)"
    ]
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    parts: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        samples += count
        frames = [_short(f) for f in stack.split(";")]
        own[frames[-1]] += count
        parts[_part(stack)] += count
        for f in set(frames):
            total[f] += count
    lines.append(
        f"{samples} samples of {100 * duration_s} possible: the agent held the GIL "
        f"{samples / duration_s:.0f}% of the time; by part of the agent:"
    )
    lines += [f"  {100 * n / samples:5.1f}%  {part}" for part, n in parts.most_common()]
    lines.append("top frames by own time (% of samples):")
    lines += [f"  {100 * n / samples:5.1f}%  {f}" for f, n in own.most_common(15)]
    lines.append("top frames by total time (inclusive), swarmlet/trio only:")
    interesting = [(f, n) for f, n in total.most_common(200) if "swarmlet" in f or "trio" in f]
    lines += [f"  {100 * n / samples:5.1f}%  {f}" for f, n in interesting[:20]]
    lines.append(f"raw stacks (collapsed, for flamegraph.pl): {raw}")
    return lines


def _part(stack: str) -> str:
    if "swarmlet/proxy" in stack:
        return "routing mesh (swarmlet/proxy*.py and the trio calls they make)"
    if any(k in stack for k in ("gossip", "raft", "transport", "rpc.py")):
        return "gossip / raft / transport"
    if "runtime.py" in stack or "docker" in stack:
        return "docker runtime adapter"
    if "trio/_core" in stack or "outcome" in stack:
        return "trio scheduler and I/O manager (outside any task)"
    return "other"


def _short(frame: str) -> str:
    """'receive_some (trio/_highlevel_socket.py:123)' -> without the long path prefix."""
    frame = re.sub(r"\(/[^)]*?/site-packages/", "(", frame)
    return re.sub(r"\(/work/main/", "(", frame)


# ----------------------------------------------------------------------------- main


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def run(args: argparse.Namespace, results: dict[str, Any]) -> None:
    root = make_root("proxy", keep=args.keep)
    cluster = SwarmletCluster(root, free_port())
    workers = args.proxy_workers
    compare = args.compare_workers
    if compare is None:
        compare = 0 if workers else 1
    log(
        f"swarmlet: starting 3 managers on 127.0.0.1-3:{cluster.port}; proxy worker processes: "
        f"n1 {workers}, n2 {compare}, n3 0"
    )
    # With --metrics, n1 serves metrics; "mesh scraped" is n1's mesh while they are scraped.
    metrics_addr = f"127.0.0.1:{free_port()}" if args.metrics else None
    with proxy_workers(workers), metrics_served(metrics_addr):
        cluster.init()
    with proxy_workers(compare):
        cluster.join("manager")
    with proxy_workers(0):
        cluster.join("manager")
    published = free_port()
    backends = trio.run(deploy, cluster, published)
    log(f"replicas at {backends}")
    haproxy_port = start_haproxy(root, backends)
    # n1 is the mesh as configured; n2 (the agent alone) only to compare, when they differ.
    meshes = {"mesh": (cluster.agents[0], "127.0.0.1")}
    if metrics_addr is not None:
        meshes[SCRAPED] = meshes["mesh"]
    if compare != workers:
        meshes[f"mesh w={compare}"] = (cluster.agents[1], "127.0.0.2")
    urls = {t: f"http://{host}:{published}/" for t, (_, host) in meshes.items()}
    urls["haproxy"] = f"http://127.0.0.1:{haproxy_port}/"
    urls["direct"] = f"http://{backends[0][0]}:{backends[0][1]}/"
    for url in urls.values():
        wait_http(url)
    pids = {t: a.pid() for t, (a, _) in meshes.items()}
    agent_pid = pids["mesh"]
    assert agent_pid is not None and None not in pids.values()
    runs: dict[str, dict[str, list[WrkResult]]] = {t: {m: [] for m in MODES} for t in urls}
    agent_cpu: dict[str, dict[str, list[float]]] = {t: {m: [] for m in MODES} for t in meshes}
    agent_wait: dict[str, dict[str, list[float]]] = {t: {m: [] for m in MODES} for t in meshes}
    results["proxy_workers"] = workers
    results["compare_workers"] = compare
    results["agent_cpu_cores"] = agent_cpu
    results["agent_run_queue_wait"] = agent_wait
    scrape_s: list[float] = []
    for round_ in range(args.rounds):
        for mode in MODES:
            for target, url in urls.items():
                pid = pids.get(target)
                if pid is not None:
                    cpu0, t0 = cpu_seconds(pid), time.monotonic()
                    wait0 = run_queue_wait_s(pid)
                metrics_url = f"http://{metrics_addr}/metrics" if target == SCRAPED else None
                with scraping(metrics_url, args.scrape_every) as took:
                    r = wrk(url, mode, args.duration)
                scrape_s.extend(took)
                if pid is not None:
                    wall_s = time.monotonic() - t0
                    agent_cpu[target][mode].append((cpu_seconds(pid) - cpu0) / wall_s)
                    agent_wait[target][mode].append((run_queue_wait_s(pid) - wait0) / wall_s)
                runs[target][mode].append(r)
                log(
                    f"round {round_ + 1} {mode:10} {target:7}: {r.requests_per_s:9,.0f} req/s "
                    f"p50 {r.p50_ms:6.2f} ms p99 {r.p99_ms:6.2f} ms"
                    + (f"  errors: {r.errors}" if r.errors else "")
                )
                time.sleep(2)  # let TIME_WAIT and the replicas settle a little
    results["runs"] = {
        t: {m: [vars(r) for r in rs] for m, rs in v.items()} for t, v in runs.items()
    }
    if not args.no_profile:
        results["profile_mode"] = args.profile_mode
        results["profile"] = profile(
            agent_pid, urls["mesh"], args.profile_mode, args.duration, root
        )
    if scrape_s:
        results["scrapes"] = {"count": len(scrape_s), "median_s": median(scrape_s)}
    report(runs, agent_cpu, agent_wait, results)
    run_cli_rm(cluster)


def run_cli_rm(cluster: SwarmletCluster) -> None:
    async def rm() -> None:
        await _call(cluster, "service.rm", services=[SERVICE])

    trio.run(rm)


def report(
    runs: dict[str, dict[str, list[WrkResult]]],
    agent_cpu: dict[str, dict[str, list[float]]],
    agent_wait: dict[str, dict[str, list[float]]],
    results: dict[str, Any],
) -> None:
    rows = []
    summary: dict[str, dict[str, dict[str, float]]] = {}
    for mode in MODES:
        for target in runs:
            rs = runs[target][mode]
            s = {
                "rps": median([r.requests_per_s for r in rs]),
                "p50_ms": median([r.p50_ms for r in rs]),
                "p99_ms": median([r.p99_ms for r in rs]),
            }
            summary.setdefault(target, {})[mode] = s
            rows.append(
                [
                    mode,
                    target,
                    f"{s['rps']:,.0f}",
                    " ".join(f"{r.requests_per_s:,.0f}" for r in rs),
                    fmt(s["p50_ms"], 2),
                    fmt(s["p99_ms"], 2),
                    "; ".join(sorted({r.errors for r in rs if r.errors})) or "-",
                ]
            )
    print_table(
        "Routing mesh: wrk -t2 -c64, medians over rounds",
        ["mode", "target", "req/s", "runs", "p50 ms", "p99 ms", "errors"],
        rows,
    )
    print(
        f"\nmesh vs HAProxy (goal: throughput >= 70%, p99 < 2x); n1's proxy has "
        f"{results['proxy_workers']} worker processes:"
    )
    for target in agent_cpu:
        for mode in MODES:
            m, h = summary[target][mode], summary["haproxy"][mode]
            d = summary["direct"][mode]
            print(
                f"  {target:8} {mode:10}: throughput {100 * m['rps'] / h['rps']:.0f}% of HAProxy "
                f"({100 * m['rps'] / d['rps']:.0f}% of direct; HAProxy "
                f"{100 * h['rps'] / d['rps']:.0f}% of direct); p99 "
                f"{m['p99_ms'] / h['p99_ms']:.2f}x HAProxy's; agent + workers CPU "
                f"{median(agent_cpu[target][mode]):.2f} cores, runnable-but-waiting "
                f"{median(agent_wait[target][mode]):.2f} (thread-seconds per second)"
            )
    print(
        "  issue reference (this kind of machine): HAProxy 19.1k req/s keep-alive (p99 13.8 ms), "
        "6.7k connection-per-request; direct 28.9k"
    )
    results["summary"] = summary
    if SCRAPED in summary:
        scrapes = results["scrapes"]
        print(
            f"\nmetrics scraped every {results['scrape_every_s']} s during '{SCRAPED}' runs "
            f"({scrapes['count']} scrapes, median {1000 * scrapes['median_s']:.1f} ms):"
        )
        for mode in MODES:
            m, sc = summary["mesh"][mode], summary[SCRAPED][mode]
            print(
                f"  {mode:10}: throughput scraped/unscraped {sc['rps'] / m['rps']:.3f}, "
                f"p99 {sc['p99_ms'] / m['p99_ms']:.2f}x"
            )
    if "image" in results:
        print(f"\nimage: {results['image']}")
    if "profile" in results:
        print(f"\nprofile of agent n1 and its workers, {results['profile_mode']} load, mesh:")
        print("\n".join(results["profile"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=15, help="seconds per wrk run")
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument("--profile-mode", choices=list(MODES), default="close")
    parser.add_argument(
        "--proxy-workers",
        type=int,
        default=default_worker_count(),
        help="n1's proxy worker processes (SWARMLET_PROXY_WORKERS); default: swarmlet's",
    )
    parser.add_argument("--compare-workers", type=int, default=None, help="n2's")
    parser.add_argument("--keep", action="store_true", help="keep the data dirs and profile")
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 round of 3 s")
    parser.add_argument("--json", default=None)
    parser.add_argument(
        "--metrics",
        action="store_true",
        help="n1 serves Prometheus metrics; adds the target 'mesh scraped' (n1 while scraped)",
    )
    parser.add_argument("--scrape-every", type=float, default=1.0, help="seconds, with --metrics")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.duration, args.no_profile = 1, 3, True
    install_cleanup()
    ensure_installed(["wrk"], ["wrk"])
    ensure_installed(["haproxy"], ["haproxy"])
    results: dict[str, Any] = {"rounds": args.rounds, "duration_s": args.duration}
    results["scrape_every_s"] = args.scrape_every
    results["image"] = ensure_nginx_image()
    log(results["image"])
    try:
        run(args, results)
    finally:
        REGISTRY.cleanup()  # agents, haproxy, py-spy
        remove_service_containers()
        print_load()
        write_json(args.json, results)


def remove_service_containers() -> None:
    out = subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"label=swarmlet.service={SERVICE}"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    if out.split():
        subprocess.run(["docker", "rm", "-f", *out.split()], capture_output=True, check=False)


if __name__ == "__main__":
    main()
