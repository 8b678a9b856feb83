"""Recovering from a lost majority (issue #18), as an operator would: three managers, two lost
for good (killed, their data dirs gone); `swarmlet init --force-new-cluster` on the survivor
keeps its state and makes it the only voter; the services keep running throughout (the
survivor's containers are the same ones before and after); the lost nodes are removed and their
replicas run again on the survivor; two fresh managers join, and the cluster tolerates the loss
of one of them again."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.integration.cluster import local_cluster, run_cli, services, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.docker, pytest.mark.usefixtures("docker_images")]


def test_force_new_cluster_on_the_survivor_of_a_lost_majority(tmp_path: Path) -> None:
    with local_cluster(tmp_path) as cluster:
        cluster.start(managers=3)
        n1, n2, n3 = cluster.agents
        run_cli(
            "service",
            "create",
            "--name",
            "web",
            "--replicas",
            "3",
            "swarmlet/web:1",
            data_dir=n1.data_dir,
            timeout=120,
        )
        n1_id = cluster.node_id(n1)

        def on_n1() -> set[str]:
            return {
                c["id"]
                for c in cluster.containers(service="web")
                if c["state"] == "running" and c["node"] == n1_id
            }

        before = on_n1()
        assert before
        for lost in (n2, n3):
            cluster.kill(lost)
            shutil.rmtree(lost.data_dir)
        wait_for("n1 to lose its leader", lambda: cluster.status(n1)["raft"]["leader_id"] is None)
        refused = run_cli("init", "--force-new-cluster", data_dir=n1.data_dir, check=False)
        assert refused.returncode == 2 and "stop it first" in refused.stderr
        cluster.kill(n1)
        out = run_cli("init", "--force-new-cluster", data_dir=n1.data_dir, timeout=120).stdout
        assert "only voter" in out, out
        status = cluster.status(n1)
        assert status["raft"]["voters"] == [n1_id]
        assert status["raft"]["leader_id"] == n1_id
        assert on_n1() >= before  # its containers were adopted, not restarted
        # The state is the old one: the service, and the lost nodes until they are removed.
        assert services(cluster)["web"]["replicas_desired"] == 3
        # What the command's output tells the operator to do next: remove the lost nodes. Their
        # tasks are replaced at once (waiting instead, they would count as down 30 s after the
        # start, `UNHEARD_DOWN_AFTER_S`, which tests/node/test_unheard_members.py covers).
        for lost in (n2, n3):
            run_cli("node", "rm", "--force", f"n{lost.index}", data_dir=n1.data_dir)
        assert len(cluster.node_ls(n1)) == 1
        wait_for(
            "web to run again, on n1",
            lambda: services(cluster)["web"]["replicas_running"] == 3,
            timeout=120,
        )

        # Two fresh managers: three voters again, and a loss is tolerated again.
        cluster.agents[:] = [n1]
        n4, n5 = cluster.join("manager"), cluster.join("manager")
        wait_for("three voters", lambda: len(cluster.status(n1)["raft"]["voters"]) == 3, timeout=60)
        cluster.kill(n4)
        run_cli(
            "node", "update", "--label-add", "after=loss", "n1", data_dir=n5.data_dir, timeout=60
        )
        labels = next(n["labels"] for n in cluster.node_ls(n1) if n["hostname"] == "n1")
        assert labels["after"] == "loss"
