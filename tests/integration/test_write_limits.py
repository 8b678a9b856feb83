"""Limits on what one may ask of a cluster, on a real agent, through the control socket as the
CLI sends it: each refusal gives the count and leaves the cluster as it was.

The replica limit (`state.replica_limit`): before, `service scale w=3000000` was taken, and the
leader created task records past 2 GB until it ran out of memory. No replica runs here
(autoscaled services at 0, a service at 0): only the counts are under test.

A node's labels (`api.nodes`): before, labels added 14 MB at a time made a node record that no
worker's session could carry, and every session broke."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.cluster import AgentHandle, local_cluster, run_cli, services

pytestmark = pytest.mark.integration

STACK = """\
services:
  a:
    image: busybox
    deploy:
      replicas: 60000
  b:
    image: busybox
    deploy:
      replicas: 60000
"""


def refused(via: AgentHandle, *args: str) -> str:
    proc = run_cli(*args, data_dir=via.data_dir, check=False, timeout=60)
    assert proc.returncode != 0, proc.stdout
    return proc.stderr


def task_count(via: AgentHandle) -> int:
    out = run_cli("service", "ps", "--format", "json", "auto", "w", data_dir=via.data_dir).stdout
    return len(json.loads(out))


def test_asking_for_more_replicas_than_the_limit_is_refused_and_changes_nothing(
    tmp_path: Path,
) -> None:
    with local_cluster(tmp_path) as cluster:
        node = cluster.init()
        d = node.data_dir
        create = ("service", "create", "--detach")
        auto = ("--autoscale", "min=0,max=60000,cpu=70", "--replicas", "0")
        run_cli(*create, "--name", "auto", *auto, "busybox", data_dir=d)
        run_cli(*create, "--name", "w", "--replicas", "0", "busybox", data_dir=d)
        before = services(cluster)

        # One count past the limit, asked of the API directly (`scale` sends no spec): refused
        # before any state is read.
        error = refused(node, "service", "scale", "--detach", "w=3000000")
        assert "w: replicas must be at most 100,000 (the cluster's limit), got 3,000,000" in error
        # Within the limit alone, past it with the autoscaled service's maximum (60,000).
        error = refused(node, "service", "scale", "--detach", "w=50000")
        assert "would want 110,000 replicas in all (now 60,000)" in error
        error = refused(node, "service", "update", "--detach", "--replicas", "50000", "w")
        assert "would want 110,000 replicas in all" in error
        error = refused(node, *create, "--name", "x", "--replicas", "40001", "busybox")
        assert "would want 100,001 replicas in all" in error
        error = refused(node, *create, "--name", "y", *auto, "busybox")
        assert "would want 120,000 replicas in all" in error
        stack = tmp_path / "stack.yml"
        stack.write_text(STACK)
        error = refused(node, "stack", "deploy", "-c", str(stack), "st")
        assert "would want 180,000 replicas in all" in error

        assert services(cluster) == before
        assert task_count(node) == 0
        # Up to the limit exactly is still taken (an autoscaled maximum: no task is created).
        run_cli(
            "service",
            "update",
            "--detach",
            "--autoscale",
            "min=0,max=100000,cpu=70",
            "auto",
            data_dir=d,
        )
        assert services(cluster)["auto"]["autoscale"]["max_replicas"] == 100_000


def test_labels_past_a_nodes_limit_are_refused_and_change_nothing(tmp_path: Path) -> None:
    with local_cluster(tmp_path) as cluster:
        node = cluster.init()
        # 120,000 characters an argument: within what one command-line argument may hold.
        big = [a for i in range(8) for a in ("--label-add", f"k{i}={'v' * 120_000}")]
        run_cli("node", "update", *big, "n1", data_dir=node.data_dir)
        error = refused(node, "node", "update", "--label-add", f"k9={'v' * 90_000}", "n1")
        assert "labels would hold 1,050,018 characters; the limit is 1,048,576" in error
        (n1,) = cluster.node_ls(node)
        assert sorted(n1["labels"]) == [f"k{i}" for i in range(8)]
