"""Prometheus metrics of a real cluster, read the way an operator reads them: Debian's Prometheus
server scrapes three real agents (each with SWARMLET_METRICS_ADDR on its own loopback address)
and is queried through its HTTP API.

The agents get their metrics address from the environment of the `swarmlet init`/`join` that
starts them (`cluster.run_cli` passes the test's environment on, and the detached agent inherits
it), so the test sets it before each start.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import signal
import socket
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families as parse_text

from tests.integration.cluster import (
    AgentHandle,
    LocalCluster,
    get,
    local_cluster,
    run_cli,
    wait_for,
)
from tests.node.test_grafana_dashboard import dashboard_queries

pytestmark = [pytest.mark.integration, pytest.mark.docker, pytest.mark.usefixtures("docker_images")]

ENV = "SWARMLET_METRICS_ADDR"
METRICS_PORT_OFFSET = 600  # the metrics port: the cluster's port + this, on each agent's address
WEB_PORT_OFFSET = 700


def metrics_addr(cluster: LocalCluster, a: AgentHandle) -> str:
    return f"{a.host}:{cluster.port + METRICS_PORT_OFFSET}"


def free_loopback_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.contextmanager
def environment(name: str, value: str) -> Iterator[None]:
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            del os.environ[name]
        else:
            os.environ[name] = old


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """Three managers, each serving metrics on its own address."""
    with local_cluster(tmp_path_factory.mktemp("cluster")) as c:
        for index in (1, 2, 3):
            with environment(ENV, metrics_addr(c, c.handle(index))):
                if index == 1:
                    c.init()
                else:
                    c.join("manager")
        yield c


class Prometheus:
    """Debian's Prometheus server with its own config and data dir on a free loopback port."""

    def __init__(self, root: Path, targets: list[str], scrape_interval_s: int = 1) -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            pytest.fail("prometheus is not installed (Debian package prometheus: .ci/setup.sh)")
        self.url = f"http://127.0.0.1:{free_loopback_port()}"
        config = root / "prometheus.yml"
        config.write_text(
            json.dumps(  # YAML is a superset of JSON
                {
                    "global": {
                        "scrape_interval": f"{scrape_interval_s}s",
                        "scrape_timeout": f"{min(scrape_interval_s, 10)}s",
                    },
                    "scrape_configs": [
                        {"job_name": "swarmlet", "static_configs": [{"targets": targets}]}
                    ],
                }
            )
        )
        self.log = root / "prometheus.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [
                    binary,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={root / 'data'}",
                    f"--web.listen-address={self.url.removeprefix('http://')}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"prometheus exited:\n{self.log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def api(self, path: str, **params: str) -> Any:
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=5) as response:
            body = json.load(response)
        assert body["status"] == "success", body
        return body["data"]

    def query(self, promql: str) -> list[tuple[dict[str, str], float]]:
        """An instant query's series, as (labels, value)."""
        return [
            (r["metric"], float(r["value"][1])) for r in self.api("query", query=promql)["result"]
        ]

    def scalar(self, promql: str) -> float | None:
        """The value of a query with one series (None if it has none yet)."""
        series = self.query(promql)
        assert len(series) <= 1, series
        return series[0][1] if series else None

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="module")
def prometheus(
    cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Prometheus]:
    server = Prometheus(
        tmp_path_factory.mktemp("prometheus"), [metrics_addr(cluster, a) for a in cluster.agents]
    )
    try:
        wait_for("prometheus to be ready", server.ready, timeout=60)
        yield server
    finally:
        server.stop()


def test_prometheus_scrapes_every_agent_and_sees_one_leader(prometheus: Prometheus) -> None:
    wait_for("3 targets up", lambda: prometheus.scalar('sum(up{job="swarmlet"})') == 3)
    wait_for("3 term series", lambda: len(prometheus.query("swarmlet_raft_term")) == 3)
    wait_for("one leader", lambda: prometheus.scalar("sum(swarmlet_raft_is_leader)") == 1)
    assert prometheus.scalar("max(swarmlet_raft_term) - min(swarmlet_raft_term)") == 0
    assert prometheus.scalar("min(swarmlet_raft_has_leader)") == 1
    assert prometheus.scalar("min(swarmlet_raft_voters)") == 3
    assert (prometheus.scalar("min(swarmlet_raft_commit_index)") or 0) > 0
    wait_for(
        "every agent to see 3 alive members",
        lambda: prometheus.scalar('min(swarmlet_gossip_members{state="alive"})') == 3,
    )
    assert (prometheus.scalar("min(swarmlet_gossip_probes_total)") or 0) > 0
    names = {labels["name"] for labels, _ in prometheus.query("swarmlet_node_info")}
    assert names == {"n1", "n2", "n3"}
    # Only the leader reports the cluster's tasks and services.
    assert len(prometheus.query("swarmlet_leader_services")) == 1


def test_every_metric_an_agent_serves_reaches_prometheus(
    cluster: LocalCluster, prometheus: Prometheus
) -> None:
    url = f"http://{metrics_addr(cluster, cluster.agents[1])}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        served = {s.name for f in parse_text(response.read().decode()) for s in f.samples}
    assert "swarmlet_raft_term" in served
    wait_for(
        "prometheus to hold every served name",
        lambda: served <= set(prometheus.api("label/__name__/values")),
    )


@pytest.fixture(scope="module")
def web_port(cluster: LocalCluster) -> int:
    """A service `web` of 3 replicas published on this port, answering on every node."""
    port = cluster.port + WEB_PORT_OFFSET
    run_cli(
        "service",
        "create",
        "--name",
        "web",
        "--replicas",
        "3",
        "-p",
        f"{port}:80",
        "swarmlet/web:1",
        data_dir=cluster.agents[0].data_dir,
        timeout=120,
    )
    for a in cluster.agents:
        wait_for(f"{a.host}:{port} to answer", functools.partial(get, a.host, port))
    return port


def test_mesh_and_executor_figures_follow_a_service(
    cluster: LocalCluster, prometheus: Prometheus, web_port: int
) -> None:
    port = web_port
    for a in cluster.agents:
        for _ in range(5):
            get(a.host, port)
    mesh = f'swarmlet_mesh_connections_total{{service="web",port="{port}",protocol="tcp"}}'
    wait_for("3 nodes counting web's connections", lambda: len(prometheus.query(mesh)) == 3)
    wait_for("every request counted", lambda: (prometheus.scalar(f"sum({mesh})") or 0) >= 15)
    received = f'sum(swarmlet_mesh_received_bytes_total{{service="web",port="{port}"}})'
    assert (prometheus.scalar(received) or 0) > 0
    wait_for(
        "3 running tasks on the executors",
        lambda: prometheus.scalar('sum(swarmlet_executor_tasks{state="running"})') == 3,
    )
    assert prometheus.scalar("sum(swarmlet_leader_services)") == 1
    assert prometheus.scalar("sum(swarmlet_executor_up)") == 3
    # The executors started the 3 replicas, timing the engine's calls for them.
    starts = "sum(swarmlet_executor_task_starts_total)"
    wait_for("3 task starts", lambda: (prometheus.scalar(starts) or 0) >= 3)
    runs = 'sum(swarmlet_executor_docker_call_duration_seconds_count{operation="run"})'
    wait_for("3 docker runs timed", lambda: (prometheus.scalar(runs) or 0) >= 3)


def test_proposal_latency_and_gossip_bytes(prometheus: Prometheus, web_port: int) -> None:
    """The leader timed the proposals that created `web` (a histogram Prometheus can take a
    quantile of); every node counts the gossip bytes it sends and receives."""
    count = "sum(swarmlet_raft_proposal_duration_seconds_count)"
    wait_for("committed proposals timed", lambda: (prometheus.scalar(count) or 0) > 0)
    committed = 'sum(swarmlet_raft_proposals_total{outcome="committed"})'
    assert prometheus.scalar(committed) == prometheus.scalar(count)
    p99 = "histogram_quantile(0.99, sum by (le) (swarmlet_raft_proposal_duration_seconds_bucket))"
    latency = prometheus.scalar(p99)
    assert latency is not None and latency > 0
    sent = "swarmlet_gossip_sent_bytes_total"
    wait_for("3 nodes sending gossip bytes", lambda: len(prometheus.query(f"{sent} > 0")) == 3)
    received = "min(swarmlet_gossip_received_bytes_total)"
    assert (prometheus.scalar(received) or 0) > 0


def test_the_grafana_dashboards_queries_return_data(prometheus: Prometheus, web_port: int) -> None:
    """Each panel's query, with Grafana's variables as "every node" and a 1-minute window, is
    valid PromQL; all but the panels that only fill on trouble or under load return series."""
    quiet: tuple[str, ...] = (
        "connect_failures",
        "retries",
        "refused_connections",
        "listen_failures",
    )
    quiet += ("pending_tasks", "suspicions", "refutations", "members_failed", "indirect_probes")
    quiet += ("start_failures", "task_failures", "docker_call_failures")
    # Served once the leader's duties count their passes (`node.metrics._LEADER_COUNTERS`).
    quiet += ("reconcile",)
    for expr in dashboard_queries():
        promql = expr.replace("$__rate_interval", "1m").replace("$instance", ".*")
        promql = promql.replace("$job", ".*")
        if any(word in expr for word in quiet):
            prometheus.query(promql)  # valid: the API answers "success"
        else:
            wait_for(f"data for {promql}", functools.partial(prometheus.query, promql))


def test_a_busy_or_malformed_metrics_address_stops_the_agent_saying_why(
    cluster: LocalCluster, prometheus: Prometheus
) -> None:
    a = cluster.agents[2]
    up = f'up{{instance="{metrics_addr(cluster, a)}"}}'
    cluster.kill(a)
    wait_for("prometheus to see the agent down", lambda: prometheus.scalar(up) == 0)
    host, port = metrics_addr(cluster, a).rsplit(":", 1)
    with socket.socket() as taken:
        # The scrapes of the killed agent leave connections in TIME_WAIT on that port.
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        taken.bind((host, int(port)))
        taken.listen()
        with environment(ENV, metrics_addr(cluster, a)):
            busy = run_cli("agent", "--detach", data_dir=a.data_dir, check=False)
    assert busy.returncode != 0
    assert f"cannot serve metrics on {host}:{port}" in busy.stdout + busy.stderr
    with environment(ENV, f"{host}:notaport"):
        malformed = run_cli("agent", "--detach", data_dir=a.data_dir, check=False)
    assert malformed.returncode != 0
    assert f"{ENV}: invalid metrics address" in malformed.stdout + malformed.stderr
    with environment(ENV, metrics_addr(cluster, a)):
        cluster.restart(a)
    wait_for("the restarted agent scraped again", lambda: prometheus.scalar(up) == 1)
