"""What serving metrics costs an idle agent (issue #18): two idle 3-agent clusters side by side,
one with SWARMLET_METRICS_ADDR and a real Prometheus (Debian's) scraping it every 15 s, one without.

    .venv/bin/python -m bench.metrics_cost [--window 600]

CPU is utime+stime of each agent process (/proc/PID/stat) over the window after a 30 s warm-up;
RSS is VmRSS (/proc/PID/status), sampled every 5 s. Figures, not pass/fail checks.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from tests.integration.cluster import local_cluster
from tests.integration.test_metrics import Prometheus, environment

WARMUP_S = 30.0
TICK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def query(prom: Prometheus, promql: str) -> Any:
    q = urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(f"{prom.url}/api/v1/query?{q}") as r:
        return json.load(r)["data"]["result"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--window", type=float, default=600.0, help="seconds measured")
    window_s = parser.parse_args().window
    root = Path(tempfile.mkdtemp(prefix="bench-metrics-"))
    with contextlib.ExitStack() as stack:
        plain = stack.enter_context(local_cluster(root / "plain"))
        plain.start(managers=3)
        scraped = stack.enter_context(local_cluster(root / "scraped"))
        addrs = []
        for i in (1, 2, 3):
            addr = f"127.0.0.{i}:{scraped.port + 600}"
            addrs.append(addr)
            with environment("SWARMLET_METRICS_ADDR", addr):
                scraped.init() if i == 1 else scraped.join("manager")
        (root / "prom").mkdir()
        prom = Prometheus(root / "prom", addrs, scrape_interval_s=15)
        stack.callback(prom.stop)
        time.sleep(WARMUP_S)
        clusters = (("without", plain), ("with", scraped))
        pids = {name: [a.pid() or 0 for a in c.agents] for name, c in clusters}
        start = {n: [cpu_s(p) for p in ps] for n, ps in pids.items()}
        rss: dict[str, list[list[int]]] = {n: [[] for _ in ps] for n, ps in pids.items()}
        t0 = time.monotonic()
        while time.monotonic() - t0 < window_s:
            for n, ps in pids.items():
                for i, p in enumerate(ps):
                    rss[n][i].append(rss_bytes(p))
            time.sleep(5)
        elapsed = time.monotonic() - t0
        for n, ps in pids.items():
            cpu = [(cpu_s(p) - s) / elapsed * 100 for p, s in zip(ps, start[n], strict=True)]
            mib = [round(statistics.median(r) / 2**20, 1) for r in rss[n]]
            print(
                f"{n:8s} metrics: CPU % of a core per agent {[round(c, 2) for c in cpu]} "
                f"(median {statistics.median(cpu):.2f}); RSS MiB per agent (median) {mib}"
            )
        print("mean scrape duration (s):", query(prom, "avg(scrape_duration_seconds)"))
        print("scrapes:", query(prom, "sum(count_over_time(up[1h]))"), f"in {elapsed:.0f} s")


if __name__ == "__main__":
    main()
