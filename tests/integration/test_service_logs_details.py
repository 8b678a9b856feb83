"""`swarmlet service logs --details` on the real Docker Engine, with two real agents: each line
carries its logging driver's attributes as docker prints them (json-file with `--log-opt
labels=`/`env=` names container labels and env variables), from the node that asks and from
the other one (the attributes cross the cluster channel with the lines)."""

from __future__ import annotations

import json

import pytest

from tests.integration.cluster import LocalCluster, run_cli, tasks, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.docker, pytest.mark.usefixtures("docker_images")]

SAY = "echo 'hello there'; echo bye; sleep 300"


@pytest.fixture
def cluster_shape() -> tuple[int, int]:
    return (2, 0)


def _global(cluster: LocalCluster, name: str, *flags: str) -> None:
    """A global service (a task on each node) that says two lines, its tasks running."""
    d = cluster.agents[0].data_dir
    run_cli(
        "service",
        "create",
        "-d",
        "--mode",
        "global",
        "--name",
        name,
        *flags,
        "swarmlet/busybox:1",
        "sh",
        "-c",
        SAY,
        data_dir=d,
    )

    def both_said() -> bool:
        running = [t for t in tasks(cluster, name) if t["state"] == "running"]
        if len(running) != 2:
            return False
        out = run_cli("service", "logs", "--raw", name, data_dir=d).stdout
        return out.count("bye") == 2

    wait_for(f"both tasks of {name} to log", both_said, timeout=60)


def test_details_show_the_labels_and_env_the_log_options_name_on_every_node(
    cluster: LocalCluster,
) -> None:
    d = cluster.agents[0].data_dir
    _global(
        cluster,
        "tagged",
        "--container-label",
        "app.tier=web tier",
        "--env",
        "COLOR=blue",
        "--env",
        "SECRETISH=not-named",
        "--log-driver",
        "json-file",
        "--log-opt",
        "labels=app.tier",
        "--log-opt",
        "env=COLOR",
    )
    out = run_cli("service", "logs", "--details", "tagged", data_dir=d).stdout.splitlines()
    assert len(out) == 4
    nodes = set()
    for line in out:
        prefix, bar, rest = line.partition("    | ")
        assert bar, line
        nodes.add(prefix.rsplit("@", 1)[1])
        # docker's CLI: sorted k=v, unescaped, joined by commas, a space, the line
        assert rest in (
            "COLOR=blue,app.tier=web tier hello there",
            "COLOR=blue,app.tier=web tier bye",
        )
    assert nodes == {"n1", "n2"}  # the other node's attributes crossed the cluster channel

    # --raw: the daemon's form, swarm's context included, URL-escaped, sorted by key
    raw = run_cli("service", "logs", "--raw", "--details", "tagged", data_dir=d).stdout
    ids = {t["id"] for t in tasks(cluster, "tagged")}
    for line in raw.splitlines():
        details, _, text = line.partition(" ")
        pairs = dict(p.split("=", 1) for p in details.split(","))
        assert list(pairs) == sorted(pairs)
        assert pairs["app.tier"] == "web+tier" and pairs["COLOR"] == "blue"
        assert pairs["com.docker.swarm.task.id"] in ids
        assert text in ("hello there", "bye")

    # JSON items carry them too, and never an env variable the options do not name
    items = [
        json.loads(i)
        for i in run_cli(
            "service", "logs", "--details", "--format", "json", "tagged", data_dir=d
        ).stdout.splitlines()
    ]
    assert {json.dumps(i["details"], sort_keys=True) for i in items} == {
        json.dumps({"COLOR": "blue", "app.tier": "web tier"}, sort_keys=True)
    }


def test_without_attributes_docker_prints_an_empty_details_part(cluster: LocalCluster) -> None:
    d = cluster.agents[0].data_dir
    _global(cluster, "plain")
    out = run_cli("service", "logs", "--details", "plain", data_dir=d).stdout.splitlines()
    assert sorted(line.partition("    | ")[2] for line in out) == [
        " bye",
        " bye",
        " hello there",
        " hello there",
    ]
    # and without --details, nothing changes
    out = run_cli("service", "logs", "plain", data_dir=d).stdout.splitlines()
    assert sorted(line.partition("    | ")[2] for line in out) == [
        "bye",
        "bye",
        "hello there",
        "hello there",
    ]
