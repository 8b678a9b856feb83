"""A follower whose log lost its tail catches up, on real agents: three managers, 30 writes, the
follower killed with SIGKILL, the last 7 bytes of its newest log segment cut off (what a torn
write, or a disk that acknowledged an fsync it did not keep, leaves), the follower restarted.
Its storage cuts the torn record and keeps a vote floor; the leader, told by the follower's
answer to a heartbeat that its log is shorter than what it acknowledged, sends the entries
again, with no new write needed. The agents listen on 127.0.40.x, apart from other tests."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.cluster import AgentHandle, LocalCluster, run_cli, wait_for

pytestmark = pytest.mark.integration

WRITES = 30
CATCH_UP_TIMEOUT_S = 120.0  # generous: a bound so that a hang fails, not a speed claim


class Loopback40Cluster(LocalCluster):
    """Agent i on 127.0.40.i."""

    def handle(self, index: int) -> AgentHandle:
        return AgentHandle(index, self.root / f"n{index}", f"127.0.40.{index}", self.port)


@contextlib.contextmanager
def loopback40_cluster(root: Path) -> Iterator[Loopback40Cluster]:
    cluster = Loopback40Cluster(root, 17400 + os.getpid() % 500)
    try:
        yield cluster
    finally:
        cluster.cleanup()


def write(via: AgentHandle, key: str) -> None:
    run_cli("node", "update", "--label-add", f"{key}=1", "n1", data_dir=via.data_dir)


def labels(cluster: LocalCluster, via: AgentHandle) -> set[str]:
    nodes = {n["hostname"]: n for n in cluster.node_ls(via)}
    return set(nodes["n1"]["labels"])


def raft_status(cluster: LocalCluster, a: AgentHandle) -> dict[str, object]:
    raft: dict[str, object] = cluster.status(a)["raft"]
    return raft


def tear_newest_segment(a: AgentHandle, drop_bytes: int) -> int:
    segment = sorted((a.data_dir / "raft").glob("log-*.seg"))[-1]
    data = segment.read_bytes()
    segment.write_bytes(data[:-drop_bytes])
    return len(data) - drop_bytes


def test_a_follower_that_lost_the_tail_of_its_log_catches_up(tmp_path: Path) -> None:
    with loopback40_cluster(tmp_path) as cluster:
        cluster.start(managers=3)
        leader_id = cluster.leader_of(cluster.agents[0])
        leader = cluster.agent_by_node_id(str(leader_id))
        follower = next(a for a in cluster.agents if a is not leader)
        keys = {f"k{i}" for i in range(WRITES)}
        for i in range(WRITES):
            write(cluster.agents[i % 3], f"k{i}")
        wait_for("the follower to apply every write", lambda: keys <= labels(cluster, follower))
        cluster.kill(follower)
        tear_newest_segment(follower, 7)
        cluster.restart(follower)
        log = (follower.data_dir / "agent.log").read_text(errors="replace")
        assert "torn tail" in log and "may have acknowledged entry" in log, log[-2000:]

        def caught_up() -> bool:
            behind = raft_status(cluster, leader)["commit_index"]
            mine = raft_status(cluster, follower)["applied_index"]
            assert isinstance(behind, int) and isinstance(mine, int)
            return mine >= behind and keys <= labels(cluster, follower)

        # No write in between: the heartbeats alone must bring the entries back.
        wait_for("the follower to catch up", caught_up, timeout=CATCH_UP_TIMEOUT_S)
        assert not (follower.data_dir / "raft" / "votefloor").exists()  # it votes again
        counters = cluster.status(leader)["counters"]
        assert counters.get("raft_short_logs_repaired", 0) >= 1, counters
        for i in range(2):
            write(follower, f"after-{i}")  # forwarded to the leader
        wait_for(
            "the follower to apply the writes after its restart",
            lambda: keys | {"after-0", "after-1"} <= labels(cluster, follower),
            timeout=CATCH_UP_TIMEOUT_S,
        )
