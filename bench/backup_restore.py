"""Backup and restore times at 1,000 services (issue #18), on a 1-manager local cluster.

    .venv/bin/python -m bench.backup_restore [--services 1000] [--runs 3]

The services have 0 replicas, so no container runs: this measures the control plane (the
committed state, its sealing and its restore) and the state's size, not Docker. They come from
one `swarmlet stack deploy` of a generated compose file; a few secrets sit beside them.

Each run: time `swarmlet backup FILE` (wall time of the CLI process; the file's size), destroy
the cluster (SIGKILL the agent, remove its data dir), then time `swarmlet init --restore FILE`
on a fresh data dir: the CLI's own wall time, and the time until `swarmlet service ls --format
json` lists all N services (polled through the CLI, so that figure carries up to one CLI start
of slack). The restored cluster is the next run's source. Figures, not pass/fail checks.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.integration.cluster import AgentHandle, LocalCluster, local_cluster, run_cli, wait_for

STACK = "bench"
SECRETS = 5
PASSPHRASE = "a long enough bench passphrase"
CLI_TIMEOUT_S = 900.0


def compose_file(n: int) -> dict[str, Any]:
    """N replicated services with 0 replicas: in the state, nothing to schedule."""
    service = {"image": "swarmlet/busybox:1", "command": ["sleep", "3600"]}
    return {"services": {f"s{i:04d}": {**service, "deploy": {"replicas": 0}} for i in range(n)}}


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def listed(a: AgentHandle) -> int:
    out = run_cli("service", "ls", "--format", "json", data_dir=a.data_dir, timeout=120).stdout
    return len(json.loads(out))


def populate(cluster: LocalCluster, root: Path, n: int) -> None:
    a = cluster.agents[0]
    for i in range(SECRETS):
        value = root / f"secret{i}"
        value.write_text(f"value {i}\n")
        run_cli("secret", "create", f"secret{i}", str(value), data_dir=a.data_dir)
    compose = root / "stack.json"  # JSON is YAML
    compose.write_text(json.dumps(compose_file(n)))
    t0 = time.monotonic()
    run_cli(
        "stack",
        "deploy",
        "--resolve-image",
        "never",
        "--detach",
        "-c",
        str(compose),
        STACK,
        data_dir=a.data_dir,
        timeout=CLI_TIMEOUT_S,
    )
    print(f"stack deploy of {n} services: {time.monotonic() - t0:.2f} s")
    wait_for(f"{n} services", lambda: listed(a) == n, timeout=CLI_TIMEOUT_S, interval=1.0)


def backup(a: AgentHandle, path: Path, passphrase_file: Path) -> float:
    t0 = time.monotonic()
    run_cli(
        "backup",
        "--passphrase-file",
        str(passphrase_file),
        str(path),
        data_dir=a.data_dir,
        timeout=CLI_TIMEOUT_S,
    )
    return time.monotonic() - t0


def restore(
    cluster: LocalCluster, path: Path, passphrase_file: Path, n: int
) -> tuple[float, float]:
    """(the `init --restore` CLI's wall time, the time until `service ls` lists all N)."""
    a = cluster.handle(1)
    t0 = time.monotonic()
    run_cli(
        "init",
        "--restore",
        str(path),
        "--passphrase-file",
        str(passphrase_file),
        "--advertise-addr",
        a.host,
        "--port",
        str(a.port),
        "--publish-addr",
        a.host,
        "--name",
        "n1",
        data_dir=a.data_dir,
        timeout=CLI_TIMEOUT_S,
    )
    init_s = time.monotonic() - t0
    cluster.agents.append(a)
    wait_for(f"{n} restored services", lambda: listed(a) == n, timeout=CLI_TIMEOUT_S, interval=0.1)
    listed_s = time.monotonic() - t0
    cluster.cluster_id = cluster.status(a)["cluster_id"]  # its cleanup looks for containers by it
    return init_s, listed_s


def destroy(cluster: LocalCluster) -> None:
    """SIGKILL the agent and wait until it is gone (it must not write into what is removed)."""
    for a in cluster.agents:
        cluster.kill(a)
    cluster.cleanup()
    for a in cluster.agents:
        shutil.rmtree(a.data_dir)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--services", type=int, default=1000, help="services in the state")
    parser.add_argument("--runs", type=int, default=3, help="backup + restore cycles")
    args = parser.parse_args()
    if args.services < 1 or args.runs < 1:
        parser.error("--services and --runs must be at least 1")
    n: int = args.services

    def on_sigterm(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)  # so that every cluster's cleanup runs

    signal.signal(signal.SIGTERM, on_sigterm)
    root = Path(tempfile.mkdtemp(prefix="bench-backup-"))
    passphrase_file = root / "passphrase"
    passphrase_file.write_text(PASSPHRASE + "\n")
    print(f"load average at start: {os.getloadavg()}")
    runs: list[dict[str, float]] = []
    try:
        with contextlib.ExitStack() as stack:
            cluster = stack.enter_context(local_cluster(root / "c0"))
            cluster.init()
            populate(cluster, root, n)
            for run in range(1, args.runs + 1):
                source = cluster.agents[0]
                data_dir_size = dir_bytes(source.data_dir)
                path = root / f"run{run}.bak"
                backup_s = backup(source, path, passphrase_file)
                destroy(cluster)
                cluster = stack.enter_context(local_cluster(root / f"c{run}"))
                init_s, listed_s = restore(cluster, path, passphrase_file, n)
                runs.append(
                    {
                        "backup_s": backup_s,
                        "backup_bytes": path.stat().st_size,
                        "data_dir_bytes": data_dir_size,
                        "restore_init_s": init_s,
                        "restore_listed_s": listed_s,
                    }
                )
                print(
                    f"run {run}: backup {backup_s:.2f} s ({path.stat().st_size} bytes), "
                    f"data dir before it {data_dir_size} bytes; restore: init {init_s:.2f} s, "
                    f"all {n} listed {listed_s:.2f} s"
                )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"load average at end: {os.getloadavg()}")
    print(f"{n} services (0 replicas), {SECRETS} secrets, {len(runs)} runs; medians:")
    for key in ("backup_s", "restore_init_s", "restore_listed_s"):
        print(f"  {key:18s} {statistics.median(r[key] for r in runs):.2f} s")
    for key in ("backup_bytes", "data_dir_bytes"):
        print(f"  {key:18s} {statistics.median(r[key] for r in runs):.0f} bytes")


if __name__ == "__main__":
    main()
