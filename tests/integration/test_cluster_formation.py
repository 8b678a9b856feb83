"""Cluster formation with real agent processes on loopback addresses, through the CLI."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import stat
import subprocess
import time
from pathlib import Path

import pytest

from tests.integration.cluster import (
    LocalCluster,
    local_cluster,
    run_cli,
    swarmlet_command,
    wait_for,
)

pytestmark = pytest.mark.integration


def _statuses(cluster: LocalCluster, observer_index: int) -> dict[str, str]:
    observer = cluster.agents[observer_index - 1]
    return {n["hostname"]: n["status"] for n in cluster.node_ls(observer)}


def test_five_agents_form_a_cluster_detect_a_kill_and_take_the_node_back(tmp_path: Path) -> None:
    with local_cluster(tmp_path) as cluster:
        cluster.start(managers=3, workers=2)
        for a in cluster.agents:
            nodes = cluster.node_ls(a)
            assert sorted(n["hostname"] for n in nodes) == ["n1", "n2", "n3", "n4", "n5"]
        victim = cluster.agents[3]
        victim_id = cluster.node_id(victim)
        cluster.kill(victim)
        for i in (1, 2, 3, 5):
            wait_for(f"n{i} to see n4 down", lambda i=i: _statuses(cluster, i)["n4"] == "down")
        cluster.restart(victim)
        for i in (1, 2, 3, 4, 5):
            wait_for(f"n{i} to see n4 ready", lambda i=i: _statuses(cluster, i)["n4"] == "ready")
        assert cluster.node_id(victim) == victim_id
        ids = {n["hostname"]: n["id"] for n in cluster.node_ls(cluster.agents[0])}
        assert ids["n4"] == victim_id


def test_node_ls_json_has_the_contract_fields(tmp_path: Path) -> None:
    with local_cluster(tmp_path) as cluster:
        cluster.start(managers=1, workers=1)
        nodes = cluster.node_ls(cluster.agents[1])
        by_name = {n["hostname"]: n for n in nodes}
        for n in nodes:
            for key in (
                "id",
                "hostname",
                "addr",
                "status",
                "availability",
                "role",
                "leader",
                "labels",
            ):
                assert key in n
            assert n["cpus"] > 0 and n["memory_bytes"] > 0
        assert by_name["n1"]["leader"] is True and by_name["n1"]["role"] == "manager"
        assert by_name["n2"]["leader"] is False and by_name["n2"]["role"] == "worker"


def _processes_of(data_dir: Path) -> list[int]:
    """Live processes whose command line names `data_dir` (zombies are not running)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rsplit(")", 1)[-1].split()[0]
        except OSError:
            continue
        if str(data_dir).encode() in cmdline and state != "Z":
            found.append(int(entry.name))
    return found


def test_join_in_the_foreground_makes_the_join_and_runs_the_agent_in_its_process(
    tmp_path: Path,
) -> None:
    """`join --foreground` makes the handshake and runs the agent in the command's own process
    (a background `join` hands both to the agent it starts): the node is seen ready, and a
    SIGTERM to that one process stops it."""
    with local_cluster(tmp_path) as cluster:
        cluster.start(managers=1)
        first = cluster.agents[0]
        a = cluster.handle(2)
        argv = [*swarmlet_command(a.data_dir), "join", "--foreground", "--name", "n2", "--token"]
        argv += [cluster.token("worker"), "--advertise-addr", a.host, "--port", str(a.port)]
        env = {**os.environ, "SWARMLET_DATA_DIR": str(a.data_dir)}
        with subprocess.Popen([*argv, first.addr], env=env) as proc:
            try:
                wait_for("n2 ready", lambda: _statuses(cluster, 1).get("n2") == "ready")
                assert (a.data_dir / "agent.pid").read_text().strip() == str(proc.pid)
            finally:
                proc.terminate()
            assert proc.wait(timeout=30) is not None
        wait_for("n2 down", lambda: _statuses(cluster, 1).get("n2") == "down")


def test_wrong_or_rotated_token_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    with local_cluster(tmp_path) as cluster:
        cluster.start(managers=1)
        first = cluster.agents[0]
        good = cluster.token("worker")
        forged = good[:-4] + ("aaaa" if not good.endswith("aaaa") else "bbbb")
        a = cluster.handle(2)
        proc = run_cli(
            "join",
            "--token",
            forged,
            "--advertise-addr",
            a.host,
            "--port",
            str(a.port),
            first.addr,
            data_dir=a.data_dir,
            check=False,
        )
        assert proc.returncode != 0
        assert "refused the join token" in proc.stderr
        assert not (a.data_dir / "identity.msgpack").exists()
        # `join` starts its agent before the handshake, held: a refused join must not leave it.
        assert _processes_of(a.data_dir) == []
        run_cli("join-token", "--rotate", "worker", data_dir=first.data_dir)
        proc = run_cli(
            "join",
            "--token",
            good,
            "--advertise-addr",
            a.host,
            "--port",
            str(a.port),
            first.addr,
            data_dir=a.data_dir,
            check=False,
        )
        assert proc.returncode != 0 and "refused the join token" in proc.stderr
        assert [n["hostname"] for n in cluster.node_ls(first)] == ["n1"]
        cluster.join("worker")  # the new token works
        assert len(cluster.node_ls(first)) == 2


def test_duplicate_default_names_get_distinct_names(tmp_path: Path) -> None:
    with local_cluster(tmp_path) as cluster:
        cluster.init()
        for index in (2, 3):
            a = cluster.handle(index)
            run_cli(
                "join",
                "--token",
                cluster.token("worker"),
                "--advertise-addr",
                a.host,
                "--port",
                str(a.port),
                cluster.agents[0].addr,
                data_dir=a.data_dir,
            )
            cluster.agents.append(a)
        names = sorted(n["hostname"] for n in cluster.node_ls(cluster.agents[0]))
        host = socket.gethostname()
        assert names == sorted(["n1", host, f"{host}-2"])


def test_leave_is_a_departure_not_a_failure(tmp_path: Path) -> None:
    with local_cluster(tmp_path) as cluster:
        cluster.start(managers=1, workers=1)
        run_cli("leave", data_dir=cluster.agents[1].data_dir)
        wait_for("n1 to see n2 down", lambda: _statuses(cluster, 1)["n2"] == "down")
        events = run_cli(
            "events",
            "--no-follow",
            "--since",
            "1h",
            "--format",
            "json",
            data_dir=cluster.agents[0].data_dir,
        ).stdout.splitlines()
        actions = [json.loads(line)["action"] for line in events if '"n2"' in line]
        assert "left" in actions and "down" not in actions


def test_garbage_at_the_ports_is_dropped_and_counted(tmp_path: Path) -> None:
    with local_cluster(tmp_path) as cluster:
        cluster.start(managers=1, workers=1)
        target = cluster.agents[0]
        rng = random.Random(7)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            for _ in range(300):
                udp.sendto(rng.randbytes(rng.randint(0, 1500)), (target.host, target.port))
                time.sleep(0.001)  # paced: this tests rejection, not the socket buffer
        for _ in range(30):
            with socket.create_connection((target.host, target.port), timeout=5) as tcp:
                tcp.sendall(rng.randbytes(rng.randint(1, 4000)))
        counters = wait_for(
            "garbage to be counted",
            lambda: (
                (c := cluster.status(target)["counters"]).get("dropped_datagram_invalid", 0) >= 250
                and c
            ),
        )
        assert counters["dropped_datagram_invalid"] >= 250
        # Still a healthy member: it answers, and its peer still sees it ready.
        assert _statuses(cluster, 2)["n1"] == "ready"
        assert len(cluster.node_ls(target)) == 2


def test_control_socket_is_owner_only(tmp_path: Path) -> None:
    with local_cluster(tmp_path) as cluster:
        a = cluster.init()
        mode = os.stat(a.data_dir / "control.sock").st_mode
        assert stat.S_ISSOCK(mode)
        assert stat.S_IMODE(mode) == 0o600
        assert stat.S_IMODE(os.stat(a.data_dir).st_mode) == 0o700


def _stop_cleanly(pid: int) -> None:
    """As `systemctl stop` does: SIGTERM (hand over, leave, exit)."""
    os.kill(pid, signal.SIGTERM)
    wait_for("the agent to exit", lambda: not Path(f"/proc/{pid}").exists(), timeout=30)


def test_the_first_node_restarted_after_a_clean_stop_is_seen_again_by_everyone(
    tmp_path: Path,
) -> None:
    """The first node has no join seeds and starts from a state not yet replayed, while the
    others hold it as gone (it left) and never probe it: gossip must reach the state's members
    again on its own (`node.reconnect`), or every node sees the rest down. Twice, since the
    race with the log's replay does not lose every time."""
    with local_cluster(tmp_path) as cluster:
        cluster.start(managers=3)
        first = cluster.agents[0]
        for _ in range(2):
            pid = first.pid()
            assert pid is not None
            _stop_cleanly(pid)
            wait_for("n2 to see n1 gone", lambda: _statuses(cluster, 2)["n1"] == "down")
            cluster.restart(first)
            for observer in (1, 2, 3):
                wait_for(
                    f"n{observer} to see every node ready",
                    lambda o=observer: set(_statuses(cluster, o).values()) == {"ready"},
                    timeout=25,
                )
