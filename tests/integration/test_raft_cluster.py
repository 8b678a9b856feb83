"""Raft with real agent processes: failover, a real network partition, a full restart."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.cluster import AgentHandle, LocalCluster, local_cluster, run_cli, wait_for

pytestmark = pytest.mark.integration


def _write(cluster: LocalCluster, via: AgentHandle, key: str, *, timeout: float = 60) -> bool:
    """An acknowledged write is one whose command exited 0."""
    proc = run_cli(
        "node",
        "update",
        "--label-add",
        f"{key}=1",
        "n1",
        data_dir=via.data_dir,
        check=False,
        timeout=timeout,
    )
    return proc.returncode == 0


def _labels(cluster: LocalCluster, a: AgentHandle) -> set[str]:
    nodes = {n["hostname"]: n for n in cluster.node_ls(a)}
    return set(nodes["n1"]["labels"])


def _leader_id(cluster: LocalCluster, a: AgentHandle) -> str | None:
    return cluster.leader_of(a)


def test_a_manager_joins_while_a_node_other_than_the_first_leads(tmp_path: Path) -> None:
    """The leader sends a joining manager the snapshot it holds: before 2,000 entries, the one
    `init` wrote, which lists the first node alone. The new manager follows the leader all
    the same (found by review: a manager's certificate judged by the replica alone, every
    append after that snapshot was refused, for good)."""
    with local_cluster(tmp_path) as cluster:
        cluster.start(managers=3)
        n1, n2, _ = cluster.agents
        first_id = cluster.node_id(n1)
        assert _write(cluster, n2, "before")
        wait_for("three voters", lambda: len(cluster.status(n2)["raft"]["voters"]) == 3)
        cluster.kill(n1)
        wait_for("another leader", lambda: _leader_id(cluster, n2) not in (None, first_id))
        joined = cluster.join("manager", via=n2)
        assert _write(cluster, n2, "after")
        wait_for(
            "the new manager to apply every write",
            lambda: {"before", "after"} <= _labels(cluster, joined),
        )
        assert _leader_id(cluster, joined) == _leader_id(cluster, n2)


def test_killed_leader_is_replaced_and_the_cluster_accepts_writes(tmp_path: Path) -> None:
    with local_cluster(tmp_path) as cluster:
        cluster.start(managers=3, workers=2)
        old_id = cluster.leader_of(cluster.agents[0]) or ""
        old_leader = cluster.agent_by_node_id(old_id)
        follower = next(a for a in cluster.agents[:3] if a is not old_leader)
        assert _write(cluster, follower, "before")
        cluster.kill(old_leader)
        survivors = [a for a in cluster.agents[:3] if a is not old_leader]  # the managers

        def new_leader() -> str | None:
            lid = _leader_id(cluster, survivors[0])
            return lid if lid and lid != old_id else None

        wait_for("a new leader", new_leader)
        for a in survivors:  # every surviving manager takes writes (forwarded to the leader)
            assert _write(cluster, a, f"after-{a.index}")
        worker = cluster.agents[4]  # workers refuse them, as Swarm's do
        proc = run_cli(
            "node", "update", "--label-add", "w=1", "n1", data_dir=worker.data_dir, check=False
        )
        assert proc.returncode != 0 and "this node is not a manager" in proc.stderr, proc.stderr
        for a in [*survivors, worker]:
            wait_for(
                f"n{a.index} to apply every write",
                lambda a=a: (
                    {"before", *(f"after-{s.index}" for s in survivors)} <= _labels(cluster, a)
                ),
            )


def test_partitioned_leader_cannot_commit_and_the_majority_can(tmp_path: Path) -> None:
    with local_cluster(tmp_path) as cluster:
        cluster.start(managers=3, workers=2)
        leader_id = cluster.leader_of(cluster.agents[0]) or ""
        old_leader = cluster.agent_by_node_id(leader_id)
        others = [a for a in cluster.agents[:3] if a is not old_leader]  # the other managers
        assert _write(cluster, old_leader, "w0")
        cluster.partition(old_leader)
        try:
            wait_for(
                "the majority to elect a new leader",
                lambda: (lid := _leader_id(cluster, others[0])) is not None and lid != leader_id,
            )
            acknowledged = {"w0"}
            for i, a in enumerate(others):
                if _write(cluster, a, f"majority-{i}"):
                    acknowledged.add(f"majority-{i}")
            assert len(acknowledged) == 1 + len(others)
            # The isolated old leader cannot commit: its write fails (no quorum, no leader).
            assert not _write(cluster, old_leader, "minority", timeout=60)
            assert "minority" not in _labels(cluster, others[0])
        finally:
            cluster.heal()
        for a in cluster.agents:
            wait_for(
                f"n{a.index} to converge",
                lambda a=a: (
                    acknowledged <= _labels(cluster, a) and "minority" not in _labels(cluster, a)
                ),
                timeout=60,
            )
        views = [cluster.node_ls(a) for a in cluster.agents]
        labels = [sorted(v[0]["labels"]) for v in views]
        assert all(lab == labels[0] for lab in labels)


def test_state_survives_restarting_every_agent_at_once(tmp_path: Path) -> None:
    with local_cluster(tmp_path) as cluster:
        cluster.start(managers=3, workers=2)
        keys = [f"k{i}" for i in range(5)]
        for i, key in enumerate(keys):
            assert _write(cluster, cluster.agents[i % 3], key)  # the managers
        for a in cluster.agents:
            cluster.kill(a)
        for a in cluster.agents:
            cluster.restart(a)
        for a in cluster.agents:
            wait_for(
                f"n{a.index} to have every write", lambda a=a: set(keys) <= _labels(cluster, a)
            )
        wait_for("a leader after the restart", lambda: _leader_id(cluster, cluster.agents[0]))
        assert _write(cluster, cluster.agents[2], "after-restart")


def test_a_voter_down_past_the_grace_period_is_replaced_by_a_standby_manager(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SWARMLET_VOTER_GRACE_S", "3")  # inherited by the agents the CLI starts
    with local_cluster(tmp_path) as cluster:
        cluster.start(managers=4)  # 3 voters and a standby
        status = cluster.status(cluster.agents[0])
        voters = set(status["raft"]["voters"])
        (standby,) = set(status["raft"]["learners"])
        leader = status["raft"]["leader_id"]
        victim_id = sorted(voters - {leader})[0]
        victim = cluster.agent_by_node_id(victim_id)
        cluster.kill(victim)
        survivor = next(a for a in cluster.agents if a is not victim)

        def replaced() -> bool:
            raft = cluster.status(survivor)["raft"]
            return standby in raft["voters"] and victim_id not in raft["voters"]

        wait_for("the standby to take the dead voter's seat", replaced, timeout=60)
        assert len(cluster.status(survivor)["raft"]["voters"]) == 3
        assert _write(cluster, survivor, "after-replacement")
