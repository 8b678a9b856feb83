"""`swarmlet service logs` across nodes, on the real Docker Engine with three real agents: lines of
replicas on several nodes merged in Docker's time order behind docker's prefixes, `--tail`,
`--since`, a task id as the operand, and `-f` picking up a replica started after it began.

One cluster serves the module (starting three agents is the slow part); each test reads its own
service, and the one that scales has a service of its own."""

from __future__ import annotations

import contextlib
import functools
import os
import queue
import re
import subprocess
import threading
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest

from tests.integration.cluster import (
    SWARMLET,
    LocalCluster,
    local_cluster,
    run_cli,
    tasks,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.docker, pytest.mark.usefixtures("docker_images")]

# A replica's line counter, twice a second: every replica has written lines by the time we read.
TALK = 'i=0; while true; do i=$((i+1)); echo "line $i"; sleep 0.5; done'
# `TIMESTAMP SERVICE.SLOT.TASKID@NODE    | LINE`, as docker prints `service logs -t`.
LINE = re.compile(
    r"(?P<ts>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z) "
    r"(?P<service>[a-z]+)\.(?P<slot>\d+)\.(?P<task>[0-9a-z]{12})@(?P<node>n\d) +\| (?P<line>.*)"
)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with local_cluster(tmp_path_factory.mktemp("logs")) as c:
        c.start(managers=3)
        for name, replicas in (("talker", 3), ("grower", 2)):
            run_cli(
                "service",
                "create",
                "--name",
                name,
                "--replicas",
                str(replicas),
                "swarmlet/busybox:1",
                "sh",
                "-c",
                TALK,
                data_dir=c.agents[0].data_dir,
                timeout=120,
            )
        yield c


def logs(cluster: LocalCluster, *args: str, via: int = 0) -> list[dict[str, Any]]:
    """`service logs -t ARGS` as seen by agent `via`, each line parsed (all must parse)."""
    out = run_cli("service", "logs", "-t", *args, data_dir=cluster.agents[via].data_dir).stdout
    parsed = []
    for text in out.splitlines():
        match = LINE.fullmatch(text)
        assert match, f"not docker's `service logs -t` line: {text!r}"
        parsed.append(match.groupdict())
    return parsed


def running(cluster: LocalCluster, name: str) -> dict[str, dict[str, Any]]:
    """The running tasks of `name` by their 12-character id."""
    return {t["id"][:12]: t for t in tasks(cluster, name) if t["state"] == "running"}


def nanoseconds(ts: str) -> int:
    seconds, fraction = ts.rstrip("Z").split(".")
    return int(datetime.fromisoformat(seconds + "+00:00").timestamp()) * 10**9 + int(fraction)


def talking(cluster: LocalCluster, via: int = 0) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The 3 running talkers and `service logs -t talker`, once each has written 2 lines."""
    wait_for("3 talkers running", lambda: len(running(cluster, "talker")) == 3, timeout=60)
    talkers = running(cluster, "talker")
    lines = wait_for(
        "two lines of every talker",
        lambda: (
            (got := logs(cluster, "talker", via=via))
            and all(sum(x["task"] == t for x in got) >= 2 for t in talkers)
            and got
        ),
    )
    return talkers, lines


def test_lines_from_several_nodes_merge_in_time_order_behind_their_prefixes(
    cluster: LocalCluster,
) -> None:
    talkers, lines = talking(cluster, via=1)
    stamps = [nanoseconds(x["ts"]) for x in lines]
    assert stamps == sorted(stamps)
    for x in lines:
        if x["task"] in talkers:  # an earlier talker (replaced) may still have its container
            task = talkers[x["task"]]
            assert (x["service"], int(x["slot"]), x["node"]) == (
                "talker",
                task["slot"],
                task["node_name"],
            )
    assert len({x["node"] for x in lines if x["task"] in talkers}) == 3
    assert all(x["line"].startswith("line ") for x in lines)


def test_tail_gives_the_last_line_of_each_task(cluster: LocalCluster) -> None:
    talkers, everything = talking(cluster)
    lines = [x for x in logs(cluster, "--tail", "1", "talker") if x["task"] in talkers]
    assert sorted(x["task"] for x in lines) == sorted(talkers)
    for x in lines:  # read later: at least as late as the task's last line read before
        before = [y for y in everything if y["task"] == x["task"]]
        assert nanoseconds(x["ts"]) >= nanoseconds(before[-1]["ts"]) > nanoseconds(before[0]["ts"])


def test_since_drops_the_lines_before_it(cluster: LocalCluster) -> None:
    _, everything = talking(cluster)
    cut = everything[len(everything) // 2]
    since = logs(cluster, "--since", cut["ts"], "talker")
    kept = {(x["ts"], x["line"]) for x in since}
    assert (cut["ts"], cut["line"]) in kept
    assert (everything[0]["ts"], everything[0]["line"]) not in kept
    floor = nanoseconds(cut["ts"]) // 1000 * 1000  # --since is read to the microsecond
    assert min(nanoseconds(x["ts"]) for x in since) >= floor


def test_a_task_id_or_a_slot_reads_only_that_task(cluster: LocalCluster) -> None:
    talkers, _ = talking(cluster)
    task_id, task = sorted(talkers.items())[0]
    lines = logs(cluster, task_id, via=2)
    assert lines
    assert {(x["task"], int(x["slot"]), x["node"]) for x in lines} == {
        (task_id, task["slot"], task["node_name"])
    }
    by_slot = logs(cluster, f"talker.{task['slot']}", via=2)
    assert by_slot
    assert {x["slot"] for x in by_slot} == {str(task["slot"])}


@contextlib.contextmanager
def following(cluster: LocalCluster, *args: str) -> Iterator[queue.Queue[str]]:
    """`service logs -f ARGS` running; its output lines (and errors) arrive in the queue."""
    env = dict(os.environ, SWARMLET_DATA_DIR=str(cluster.agents[0].data_dir))
    proc = subprocess.Popen(
        [*SWARMLET, "service", "logs", "-f", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    stdout = proc.stdout
    assert stdout is not None
    out: queue.Queue[str] = queue.Queue()

    def read() -> None:
        for line in stdout:
            out.put(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        yield out
    finally:
        proc.kill()
        proc.wait(timeout=30)
        reader.join(timeout=30)
        stdout.close()


def drain(lines: queue.Queue[str]) -> list[str]:
    got = []
    with contextlib.suppress(queue.Empty):
        while True:
            got.append(lines.get_nowait())
    return got


def test_follow_picks_up_a_replica_started_after_it_began(cluster: LocalCluster) -> None:
    wait_for("2 growers running", lambda: len(running(cluster, "grower")) == 2, timeout=60)
    seen: list[str] = []
    with following(cluster, "grower") as lines:

        def seen_from(prefix: str) -> bool:
            seen.extend(drain(lines))
            return any(line.startswith(prefix) and "| line " in line for line in seen)

        for task_id, task in running(cluster, "grower").items():
            prefix = f"grower.{task['slot']}.{task_id}@{task['node_name']}"
            wait_for(f"a followed line of {prefix}", functools.partial(seen_from, prefix))
        run_cli("service", "scale", "grower=3", data_dir=cluster.agents[0].data_dir, timeout=120)
        new = next(
            t for t in tasks(cluster, "grower") if t["slot"] == 3 and t["state"] == "running"
        )
        prefix = f"grower.3.{new['id'][:12]}@{new['node_name']}"
        wait_for(f"a line of the new replica {prefix}", lambda: seen_from(prefix))
