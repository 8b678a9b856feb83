"""Autoscaling with real replicas: CPU load scales a service up, and its end scales it down."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest

from tests.integration.cluster import local_cluster, run_cli, services, wait_for
from tests.integration.opt_in import require_opt_in
from tests.integration.test_metrics import ENV, environment, metrics_addr

pytestmark = [pytest.mark.integration, pytest.mark.docker, pytest.mark.usefixtures("docker_images")]

# Each replica burns its CPU limit (0.2 of a core) for 90 s from its start, then idles. The
# target (20% of the limit) is far below what even a starved replica on a loaded machine uses, so
# one decision takes the service straight to its max.
BURN = "end=$(( $(date +%s) + 90 )); while [ $(date +%s) -lt $end ]; do :; done; exec sleep 86400"


AUTOSCALE_SWITCH = "SWARMLET_AUTOSCALE_TEST"


def test_cpu_load_scales_up_within_bounds_and_back_down_after_it_stops(tmp_path: Path) -> None:
    """Opt-in (`SWARMLET_AUTOSCALE_TEST=1`): a scale-down waits out the load and the
    autoscaler's stabilisation window, about 3.5 min of a CI run that has a 30-minute limit.
    The decision rules are pure and tested in tests/leader/autoscaler on every run."""
    require_opt_in(AUTOSCALE_SWITCH, "real CPU load scaled up and back down, about 3.5 min")
    with local_cluster(tmp_path) as cluster:
        leader = cluster.handle(1)
        with environment(ENV, metrics_addr(cluster, leader)):  # the leader's only
            cluster.init()
        cluster.join("worker")
        d = cluster.agents[0].data_dir
        run_cli(
            "service",
            "create",
            "--name",
            "burn",
            "--limit-cpu",
            "0.2",
            "--autoscale",
            "min=1,max=3,cpu=20",
            "swarmlet/busybox:1",
            "sh",
            "-c",
            BURN,
            data_dir=d,
            timeout=120,
        )
        refused = run_cli("service", "scale", "burn=2", data_dir=d, check=False)
        assert refused.returncode != 0 and "autoscaled" in refused.stderr
        wait_for(
            "a scale-up to the max",
            lambda: services(cluster)["burn"]["replicas_desired"] == 3,
            timeout=180,
        )
        wait_for(
            "3 running", lambda: services(cluster)["burn"]["replicas_running"] == 3, timeout=60
        )
        wait_for(
            "a scale-down once idle",
            lambda: services(cluster)["burn"]["replicas_desired"] < 3,
            timeout=400,
        )
        events = [
            json.loads(line)
            for line in run_cli(
                "events",
                "--no-follow",
                "--since",
                "1h",
                "--format",
                "json",
                "--filter",
                "type=autoscale",
                data_dir=d,
            ).stdout.splitlines()
        ]
        reasons = [e["message"] for e in events]
        assert any(r.startswith("scaled burn 1 -> ") and "cpu" in r for r in reasons), reasons
        assert all(1 <= int(r.split(" -> ")[1].split(":")[0]) <= 3 for r in reasons)
        # The same decisions, counted for Prometheus by direction.
        url = f"http://{metrics_addr(cluster, leader)}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            lines = response.read().decode().splitlines()
        counted = {
            line.split('"')[1]: float(line.rsplit(" ", 1)[1])
            for line in lines
            if line.startswith("swarmlet_leader_autoscale_decisions_total{")
        }
        assert counted.get("up", 0) >= 1 and counted.get("down", 0) >= 1, counted
        assert counted["up"] + counted["down"] == len(reasons), (counted, reasons)
