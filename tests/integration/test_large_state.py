"""A cluster whose state outgrew 64 MiB, on real agents: five services of 14 MB of environment
each (a Raft snapshot of 70 MB once the log is compacted, which `SWARMLET_SNAPSHOT_EVERY` makes
happen after a few entries). A manager that joins then is sent the whole state in one
InstallSnapshot, past the 64 MiB every other frame is held to; both managers, killed with
SIGKILL, start again from their snapshots. Before, the frame was refused (the new manager never
caught up) and a restart after the compaction failed to decode the state, for good."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.cluster import AgentHandle, local_cluster, run_cli, wait_for

pytestmark = pytest.mark.integration

SERVICES = 5
ENV_VARS = 14_000  # of 1,000 bytes each: 14 MB a service, under the 16 MiB of one write
SNAPSHOT_OVER_BYTES = 64 * 1024 * 1024


def snapshots(a: AgentHandle) -> dict[int, int]:
    """Index -> size of each snapshot file in `a`'s Raft directory."""
    return {
        int(p.stem.split("-")[1]): p.stat().st_size
        for p in (a.data_dir / "raft").glob("snapshot-*.snap")
    }


def largest_snapshot(a: AgentHandle) -> int:
    return max(snapshots(a).values(), default=0)


def service_names(via: AgentHandle) -> set[str]:
    out = run_cli("service", "ls", "--format", "json", data_dir=via.data_dir).stdout
    return {s["name"] for s in json.loads(out)}


def env_of(via: AgentHandle, name: str) -> dict[str, str]:
    out = run_cli("service", "inspect", name, data_dir=via.data_dir, timeout=120).stdout
    (service,) = json.loads(out)
    env: dict[str, str] = service["spec"]["env"]
    return env


def test_a_state_over_64_mib_reaches_a_new_manager_and_survives_restarts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SWARMLET_SNAPSHOT_EVERY", "8")  # every agent started below inherits it
    env_file = tmp_path / "big.env"
    env_file.write_text("".join(f"K{j}={'x' * 1000}\n" for j in range(ENV_VARS)))
    names = {f"s{i}" for i in range(SERVICES)}
    with local_cluster(tmp_path) as cluster:
        first = cluster.init()
        for name in sorted(names):
            run_cli(
                "service",
                "create",
                "--name",
                name,
                "--replicas",
                "0",
                "--env-file",
                str(env_file),
                "busybox",
                data_dir=first.data_dir,
                timeout=120,
            )
        for i in range(4):  # small writes: past SWARMLET_SNAPSHOT_EVERY entries
            run_cli("node", "update", "--label-add", f"k{i}=1", "n1", data_dir=first.data_dir)
        wait_for(
            "the leader to compact its log into a snapshot over 64 MiB",
            lambda: largest_snapshot(first) > SNAPSHOT_OVER_BYTES,
            timeout=60,
        )
        (snapshot_index,) = [i for i, n in snapshots(first).items() if n > SNAPSHOT_OVER_BYTES]

        second = cluster.join("manager")
        # Its log starts after the leader's snapshot: the state can only have come whole.
        wait_for(
            "the new manager to install the leader's snapshot",
            lambda: snapshots(second).get(snapshot_index, 0) > SNAPSHOT_OVER_BYTES,
            timeout=120,
        )
        wait_for(
            "the new manager to apply past it",
            lambda: cluster.status(second)["raft"]["applied_index"] >= snapshot_index,
            timeout=60,
        )
        assert service_names(second) == names

        for a in (first, second):
            cluster.kill(a)
        for a in (first, second):
            cluster.restart(a)
        for a in (first, second):
            wait_for(f"n{a.index} to serve the state again", lambda a=a: service_names(a))
            assert service_names(a) == names
            assert a.running()
        env = env_of(second, "s3")
        assert env == {f"K{j}": "x" * 1000 for j in range(ENV_VARS)}
