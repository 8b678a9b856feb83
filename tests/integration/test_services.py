"""Services on the real Docker Engine with several real agents on loopback addresses."""

from __future__ import annotations

import itertools
import json
import subprocess
import urllib.error
from collections import Counter
from pathlib import Path

import pytest

from tests.integration.cluster import (
    AgentHandle,
    LocalCluster,
    get,
    local_cluster,
    run_cli,
    services,
    tasks,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.docker, pytest.mark.usefixtures("docker_images")]


def running_per_node(cluster: LocalCluster, name: str) -> Counter[str]:
    """Running containers per node, as Docker sees them (the ground truth)."""
    return Counter(c["node"] for c in cluster.containers(service=name) if c["state"] == "running")


def spread(cluster: LocalCluster, name: str) -> list[int]:
    return sorted(running_per_node(cluster, name).values())


def create(cluster: LocalCluster, *args: str) -> None:
    run_cli("service", "create", *args, data_dir=cluster.agents[0].data_dir, timeout=120)


def test_six_replicas_spread_two_per_node_and_json_contract(cluster: LocalCluster) -> None:
    create(
        cluster,
        "--name",
        "web",
        "--replicas",
        "6",
        "-p",
        f"{cluster.port + 100}:80",
        "swarmlet/web:1",
    )
    assert spread(cluster, "web") == [2, 2, 2]
    s = services(cluster, via=2)["web"]
    assert (s["mode"], s["image"], s["replicas_desired"], s["replicas_running"]) == (
        "replicated",
        "swarmlet/web:1",
        6,
        6,
    )
    assert s["ports"][0]["published"] == cluster.port + 100
    for t in tasks(cluster, "web", via=1):
        for key in ("id", "slot", "node", "desired_state", "state", "error", "container_id"):
            assert key in t
        assert t["state"] == "running" and t["container_id"]


def test_a_killed_container_is_replaced(cluster: LocalCluster) -> None:
    create(cluster, "--name", "web", "--replicas", "3", "swarmlet/web:1")
    victim = next(c for c in cluster.containers(service="web") if c["state"] == "running")
    subprocess.run(["docker", "kill", victim["id"]], check=True, capture_output=True)
    wait_for(
        "a replacement",
        lambda: (
            services(cluster)["web"]["replicas_running"] == 3
            and victim["id"]
            not in {c["id"] for c in cluster.containers(service="web") if c["state"] == "running"}
        ),
    )
    failed = [t for t in tasks(cluster, "web") if t["state"] == "failed"]
    assert failed and "137" in failed[0]["error"]


def test_host_death_reschedules_and_return_rebalances_without_duplicates(
    cluster: LocalCluster,
) -> None:
    create(cluster, "--name", "web", "--replicas", "6", "swarmlet/web:1")
    victim = cluster.agents[2]
    victim_id = cluster.node_id(victim)
    cluster.kill(victim)
    for c in cluster.containers(node=victim_id):  # the host died with its containers
        subprocess.run(["docker", "rm", "-f", c["id"]], check=True, capture_output=True)
    wait_for("6 replicas on the 2 survivors", lambda: spread(cluster, "web") == [3, 3], timeout=30)
    cluster.restart(victim)
    wait_for("rebalanced to 2/2/2", lambda: spread(cluster, "web") == [2, 2, 2], timeout=90)
    assert sum(running_per_node(cluster, "web").values()) == 6


def test_returning_node_stops_its_stale_containers(cluster: LocalCluster) -> None:
    create(cluster, "--name", "web", "--replicas", "6", "--rebalance", "false", "swarmlet/web:1")
    victim = cluster.agents[2]
    victim_id = cluster.node_id(victim)
    stale = {c["id"] for c in cluster.containers(node=victim_id) if c["state"] == "running"}
    assert stale
    cluster.kill(victim)  # an agent crash: its containers keep running meanwhile
    wait_for(
        "6 running on the survivors",
        lambda: (
            sum(n for node, n in running_per_node(cluster, "web").items() if node != victim_id) == 6
        ),
    )
    cluster.restart(victim)
    wait_for(
        "the stale containers to stop",
        lambda: not stale & {c["id"] for c in cluster.containers() if c["state"] == "running"},
    )
    assert sum(running_per_node(cluster, "web").values()) == 6


def test_drain_moves_tasks_and_pause_stops_new_placements(cluster: LocalCluster) -> None:
    create(cluster, "--name", "web", "--replicas", "6", "swarmlet/web:1")
    n3 = cluster.node_id(cluster.agents[2])
    run_cli("node", "update", "--availability", "drain", "n3", data_dir=cluster.agents[0].data_dir)
    wait_for("n3 to be empty", lambda: running_per_node(cluster, "web").get(n3, 0) == 0)
    wait_for("6 running elsewhere", lambda: sum(running_per_node(cluster, "web").values()) == 6)
    run_cli("node", "update", "--availability", "pause", "n3", data_dir=cluster.agents[0].data_dir)
    run_cli("service", "scale", "web=8", data_dir=cluster.agents[0].data_dir, timeout=120)
    assert running_per_node(cluster, "web").get(n3, 0) == 0


def test_global_service_runs_on_every_node_including_new_ones(cluster: LocalCluster) -> None:
    create(cluster, "--name", "agent", "--mode", "global", "swarmlet/busybox:1", "sleep", "3600")
    assert spread(cluster, "agent") == [1, 1, 1]
    cluster.join("worker")
    wait_for("a task on the new node", lambda: spread(cluster, "agent") == [1, 1, 1, 1])


def test_restarted_agent_adopts_its_running_containers(tmp_path: Path) -> None:
    # One node: nobody declares it down while it restarts (with peers, a restart slower than
    # failure detection rightly gets its tasks rescheduled instead).
    with local_cluster(tmp_path) as cluster:
        a = cluster.init()
        create(cluster, "--name", "web", "--replicas", "3", "swarmlet/web:1")
        before = {c["id"] for c in cluster.containers() if c["state"] == "running"}
        assert len(before) == 3
        cluster.kill(a)
        cluster.restart(a)
        wait_for(
            "the service to be whole", lambda: services(cluster)["web"]["replicas_running"] == 3
        )
        after = {c["id"] for c in cluster.containers() if c["state"] == "running"}
        assert after == before
        assert len(cluster.containers()) == 3  # no copies were started


def test_bad_input_is_refused_and_changes_nothing(cluster: LocalCluster) -> None:
    d = cluster.agents[0].data_dir
    for args, expected in (
        (["--replicas", "-1"], "--replicas"),
        (["--constraint", "node.labels.zone=a"], "constraint"),
        (["--reserve-memory", "lots"], "--reserve-memory"),
        # Taken before, and every agent given the task crashed converting it, at each start.
        (["--stop-grace-period", "inf"], "--stop-grace-period: a duration must be"),
        # A thousand stopped every leader in turn (the scheduler's recursion).
        (
            [a for i in range(17) for a in ("--placement-pref", f"spread=node.labels.l{i}")],
            "--placement-pref: at most 16",
        ),
    ):
        proc = run_cli(
            "service", "create", "--name", "bad", *args, "swarmlet/web:1", data_dir=d, check=False
        )
        assert proc.returncode != 0 and expected in proc.stderr, proc.stderr
    create(cluster, "--name", "a", "-p", f"{cluster.port + 200}:80", "swarmlet/web:1")
    proc = run_cli(
        "service",
        "create",
        "--name",
        "b",
        "-p",
        f"{cluster.port + 200}:80",
        "swarmlet/web:1",
        data_dir=d,
        check=False,
    )
    assert proc.returncode != 0 and "already published" in proc.stderr
    assert set(services(cluster)) == {"a"}


def test_unplaceable_task_stays_pending_and_says_why(cluster: LocalCluster) -> None:
    run_cli(
        "service",
        "create",
        "--detach",
        "--name",
        "big",
        "--reserve-memory",
        "100000g",
        "swarmlet/web:1",
        data_dir=cluster.agents[0].data_dir,
    )
    t = wait_for(
        "a pending explanation", lambda: [t for t in tasks(cluster, "big") if t["message"]]
    )
    assert t[0]["state"] == "pending"
    assert "memory" in t[0]["message"]


def test_missing_image_is_rejected_with_dockers_error(cluster: LocalCluster) -> None:
    run_cli(
        "service",
        "create",
        "--detach",
        "--name",
        "ghost",
        "swarmlet/does-not-exist:1",
        data_dir=cluster.agents[0].data_dir,
    )
    t = wait_for(
        "a rejected task", lambda: [t for t in tasks(cluster, "ghost") if t["state"] == "rejected"]
    )
    assert "does-not-exist" in t[0]["error"]


def test_host_mode_ports_are_published_on_each_tasks_own_node(cluster: LocalCluster) -> None:
    """`--publish mode=host,published=P,target=80`: each replica answers at P on its own node's
    publish address (the mesh does not route P), and no node takes two of them: with more
    replicas than nodes, the rest wait and say which port they need (issue #17)."""
    port = cluster.port + 400
    create(
        cluster,
        "--name",
        "hostweb",
        "--replicas",
        "2",
        "--publish",
        f"mode=host,published={port},target=80",
        "swarmlet/web:1",
    )
    wait_for("2 replicas on 2 nodes", lambda: spread(cluster, "hostweb") == [1, 1])

    def replica_on(a: AgentHandle) -> str | None:
        """The hostname (short container id) of the replica on `a`'s node, as it answers."""
        ids = [
            c["id"][:12]
            for c in cluster.containers(service="hostweb")
            if c["state"] == "running" and c["node"] == cluster.node_id(a)
        ]
        return ids[0] if ids else None

    for a in cluster.agents:
        if (replica := replica_on(a)) is not None:
            assert get(a.host, port).strip() == replica, a.index  # its own replica, not another
        else:
            with pytest.raises(urllib.error.URLError, match="refused"):  # not even the mesh
                get(a.host, port)
    run_cli("service", "scale", "--detach", "hostweb=4", data_dir=cluster.agents[0].data_dir)
    wait_for("one replica per node", lambda: spread(cluster, "hostweb") == [1, 1, 1])
    pending = wait_for(
        "the fourth to say why it waits",
        lambda: [t for t in tasks(cluster, "hostweb") if t["state"] == "pending" and t["message"]],
    )
    assert f"{port}/tcp" in pending[0]["message"]
    for a in cluster.agents:
        assert get(a.host, port).strip() == replica_on(a), a.index


def test_a_replicated_job_completes_max_concurrent_at_a_time_and_reruns_on_force(
    cluster: LocalCluster,
) -> None:
    """`--mode replicated-job --replicas 3 --max-concurrent 1`: three containers run one after
    another to exit 0 (Docker's record: never two at once), `service ls` shows docker's
    "(3/3 completed)", nothing restarts a completed task, and `update --force` runs it again."""
    create(
        cluster,
        "--name",
        "batch",
        "--mode",
        "replicated-job",
        "--replicas",
        "3",
        "--max-concurrent",
        "1",
        "swarmlet/busybox:1",
        "sh",
        "-c",
        "sleep 1",
    )  # returns once the job has its completions, as `docker service create` does
    ls = run_cli("service", "ls", data_dir=cluster.agents[0].data_dir).stdout
    assert "0/0 (3/3 completed)" in ls, ls
    containers = cluster.containers(service="batch")
    exited = [c for c in containers if c["state"] == "exited"]
    assert len(exited) == 3, containers
    spans = sorted(
        (info["State"]["StartedAt"], info["State"]["FinishedAt"])
        for info in json.loads(
            subprocess.run(
                ["docker", "inspect", *(c["id"] for c in exited)],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
        )
    )
    for (_, finished), (started, _) in itertools.pairwise(spans):
        assert started >= finished, spans  # one at a time (RFC 3339 UTC strings sort)
    assert {t["state"] for t in tasks(cluster, "batch")} == {"complete"}
    run_cli(
        "service", "update", "--force", "batch", data_dir=cluster.agents[0].data_dir, timeout=120
    )
    current = [t for t in tasks(cluster, "batch") if t["state"] == "complete"]
    assert len({t["spec_version"] for t in current}) == 2  # the first run and the second
    assert services(cluster)["batch"]["job"]["completed"] == 3
