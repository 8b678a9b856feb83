"""The Prometheus collector against a fake agent: what it reads, how it names it, and that the
library's own parsers read back what it exposes."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field

import pytest
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families as parse_text
from prometheus_client.registry import CollectorRegistry

from swarmlet.gossip.core import Member
from swarmlet.gossip.messages import MemberState
from swarmlet.leader.scheduler import explain, schedule
from swarmlet.node.metrics import (
    PENDING_REASONS,
    AgentCollector,
    metrics_registry,
    pending_reason,
)
from swarmlet.raft.driver import RaftStatus
from swarmlet.raft.storage import StorageStats
from swarmlet.raft.types import Snapshot, SnapshotMeta
from swarmlet.state.commands import PutTasks
from swarmlet.state.machine import ClusterState
from swarmlet.state.model import Task, TaskState
from swarmlet.state.observed import TaskObservation
from swarmlet.wire.histogram import DOCKER_CALL_BUCKETS_S, PROPOSAL_BUCKETS_S, Histogram
from tests.leader.orchestrator.cluster import add_service, all_ready, make_state

# https://prometheus.io/docs/concepts/data_model/#metric-names-and-labels
METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


# ---------------------------------------------------------------------------- a fake agent


@dataclass
class FakeRaftCore:
    counters: dict[str, int] = field(default_factory=dict)
    last_index: int = 0
    snapshot: Snapshot = field(default_factory=Snapshot)


@dataclass
class FakeRaft:
    raft_status: RaftStatus
    core: FakeRaftCore = field(default_factory=FakeRaftCore)
    proposal_outcomes: dict[str, int] = field(default_factory=dict)
    proposal_latency: Histogram = field(default_factory=lambda: Histogram(PROPOSAL_BUCKETS_S))
    leader_changes_seen: int = 0

    def status(self) -> RaftStatus:
        return self.raft_status


@dataclass
class FakeStorage:
    storage_stats: StorageStats

    def stats(self) -> StorageStats:
        return self.storage_stats


@dataclass
class FakeGossipCore:
    table: list[Member] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)
    incarnation: int = 1
    awareness: int = 0

    def members(self) -> list[Member]:
        return list(self.table)


@dataclass
class FakeGossip:
    core: FakeGossipCore = field(default_factory=FakeGossipCore)


@dataclass
class FakeProxy:
    listeners: dict[str, dict[str, object]] = field(default_factory=dict)
    port_errors: dict[tuple[int, str], str] = field(default_factory=dict)

    def stats(self) -> dict[str, dict[str, object]]:
        return self.listeners


@dataclass
class FakeDockerRuntime:
    call_latency: dict[str, Histogram] = field(default_factory=dict)
    call_failures: dict[str, int] = field(default_factory=dict)


@dataclass
class FakeExecutor:
    observations: dict[str, TaskObservation] = field(default_factory=dict)
    runtime: FakeDockerRuntime = field(default_factory=FakeDockerRuntime)
    task_starts: int = 0
    start_failures: dict[str, int] = field(default_factory=dict)
    task_failures: dict[str, int] = field(default_factory=dict)


class FakeLeaderDuties:
    """What `leader.duties.LeaderDuties` counts, as attributes: the collector reads them with
    getattr, so an instance without some of them stands for duties that do not keep them."""

    def __init__(self, **counters: object) -> None:
        self.__dict__.update(counters)


def histogram(bounds: tuple[float, ...], *values: float) -> Histogram:
    h = Histogram(bounds)
    for v in values:
        h.observe(v)
    return h


@dataclass
class FakeAgent:
    raft: FakeRaft
    storage: FakeStorage
    state: ClusterState
    node_id: str = "n01"
    gossip: FakeGossip = field(default_factory=FakeGossip)
    counters: dict[str, int] = field(default_factory=dict)
    proxy: FakeProxy = field(default_factory=FakeProxy)
    executor: FakeExecutor | None = None
    is_leader: bool = False
    leader: FakeLeaderDuties = field(default_factory=FakeLeaderDuties)

    def node_name(self, node_id: str) -> str:
        return f"host-{node_id}"


def member(name: str, state: MemberState) -> Member:
    return Member(name, ("10.0.0.1", 7946), b"", 1, state, 0.0)


def listener_stats(service: str, **figures: int) -> dict[str, object]:
    base: dict[str, object] = dict.fromkeys(
        ("connections", "active", "bytes_in", "bytes_out", "errors", "retries", "refused"), 0
    )
    return base | {"service": service, "idle_closed": 0, "endpoints": {}} | figures


def a_busy_agent(*, leader: bool = True) -> FakeAgent:
    """An agent with something in every part: counters of every kind, members in every state,
    a published port and a VIP, tasks on the node and pending ones in the state."""
    state = make_state(3)
    add_service(state, "web")
    waiting = [Task(id=f"task-w{i}", service_id="s-web", slot=i, spec_version=1) for i in (1, 2)]
    decisions = schedule(state, all_ready(state, "n01", "n02", "n03"), waiting)
    pending = [
        dataclasses.replace(t, state=TaskState.PENDING, message=d.message)
        for t, d in zip(waiting, decisions, strict=True)
    ]
    running = Task("task-r1", "s-web", 3, 1, state=TaskState.RUNNING, node_id="n01")
    assert state.apply(PutTasks((*pending, running))).ok
    return FakeAgent(
        raft=FakeRaft(
            RaftStatus("leader" if leader else "follower", 7, "n01", 41, 40, ("n01", "n02"), ()),
            FakeRaftCore(
                counters={"elections_started": 3, "became_leader": 2, "dropped_stale": 5},
                last_index=45,
                snapshot=Snapshot(SnapshotMeta(index=30, term=5), b"x" * 1234),
            ),
            {"committed": 4, "not_leader": 1, "lost": 0, "abandoned": 0},
            histogram(PROPOSAL_BUCKETS_S, 0.0004, 0.001, 0.003, 20.0),
            leader_changes_seen=2,
        ),
        storage=FakeStorage(StorageStats(2, 65536, 31, 45, 30)),
        state=state,
        gossip=FakeGossip(
            FakeGossipCore(
                [
                    member("n01", MemberState.ALIVE),
                    member("n02", MemberState.ALIVE),
                    member("n03", MemberState.SUSPECT),
                ],
                counters={"probes": 10, "suspects": 1, "refutes": 2, "dropped_malformed": 4},
                incarnation=3,
                awareness=1,
            )
        ),
        counters={
            "datagrams_in": 100,
            "datagrams_out": 90,
            "datagram_bytes_in": 12000,
            "datagram_bytes_out": 11000,
            "refused_peer_wrong_node": 1,
            "dropped_frame_invalid": 2,
            "status_reports_sent": 6,
        },
        proxy=FakeProxy(
            {
                "8080/tcp": listener_stats("web", connections=12, bytes_in=300, errors=1),
                "10.0.9.2:80/tcp": listener_stats("web", connections=3, active=1),
            },
            {(9000, "udp"): "address in use"},
        ),
        executor=FakeExecutor(
            {"task-r1": TaskObservation("task-r1", TaskState.RUNNING, container_id="c1")},
            FakeDockerRuntime(
                {
                    "run": histogram(DOCKER_CALL_BUCKETS_S, 0.2, 0.3),
                    "pull": histogram(DOCKER_CALL_BUCKETS_S, 100.0),
                },
                {"pull": 1},
            ),
            task_starts=3,
            start_failures={"pull": 1},
            task_failures={"exit_code": 1},
        ),
        is_leader=leader,
        leader=FakeLeaderDuties(passes=17, pass_cpu_s=0.25),
    )


def collect(agent: FakeAgent) -> list[Metric]:
    return list(AgentCollector(agent).collect())


def samples(agent: FakeAgent) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of the text exposition, as Prometheus' parser reads it back."""
    registry = CollectorRegistry()
    registry.register(AgentCollector(agent))
    out = {}
    for family in parse_text(generate_latest(registry).decode()):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(agent: FakeAgent, name: str, **labels: str) -> float:
    return samples(agent)[(name, frozenset(labels.items()))]


# ---------------------------------------------------------------------------- conventions


@pytest.mark.parametrize("leader", [True, False])
def test_every_family_follows_prometheus_naming(leader: bool) -> None:
    families = collect(a_busy_agent(leader=leader))
    names = [f.name for f in families]
    assert len(names) == len(set(names)), "a family is exposed twice"
    for family in families:
        assert METRIC_NAME.fullmatch(family.name), family.name
        assert family.name.startswith("swarmlet_"), family.name
        assert family.type in ("counter", "gauge", "info", "histogram"), family.name
        assert family.documentation, f"{family.name} has no help text"
        # Counters get `_total` in the exposition; nothing else may end with it.
        assert not family.name.endswith("_total"), family.name
        # A unit, when named, is the last word (before `_total`).
        for unit in ("bytes", "seconds"):
            assert unit not in family.name or family.name.endswith(f"_{unit}"), family.name
        for s in family.samples:
            for label in s.labels:
                assert LABEL_NAME.fullmatch(label) and not label.startswith("__"), label
            if family.type == "counter":
                assert s.name == f"{family.name}_total", s.name
            if family.type == "histogram":
                assert family.name.endswith("_seconds"), family.name
                suffix = s.name.removeprefix(family.name)
                assert suffix in ("_bucket", "_sum", "_count"), s.name
                assert ("le" in s.labels) == (suffix == "_bucket"), s


def test_exposition_parses_as_text_and_as_openmetrics() -> None:
    registry = metrics_registry(a_busy_agent())
    text = {f.name for f in parse_text(generate_latest(registry).decode())}
    exposition = generate_openmetrics(registry).decode()  # type: ignore[no-untyped-call]
    openmetrics = {f.name for f in parse_openmetrics(exposition)}  # type: ignore[no-untyped-call]
    assert "swarmlet_raft_term" in text
    assert "swarmlet_raft_term" in openmetrics
    assert "process_resident_memory_bytes" in text  # the process collector rides along
    assert "swarmlet_gossip_probes" in text  # a counter family; its sample has `_total`
    assert "swarmlet_gossip_probes" in openmetrics
    assert "swarmlet_gossip_members" in openmetrics


def test_no_task_id_is_ever_a_label_value() -> None:
    agent = a_busy_agent()
    task_ids = set(agent.state.tasks)
    assert task_ids  # the agent does hold tasks
    for _, labels in samples(agent):
        assert not task_ids & {v for _, v in labels}


def test_collector_reads_the_agent_at_scrape_time() -> None:
    agent = a_busy_agent()
    registry = metrics_registry(agent)  # registering reads nothing
    agent.raft.raft_status = dataclasses.replace(agent.raft.raft_status, term=99)
    families = {f.name: f for f in parse_text(generate_latest(registry).decode())}
    assert families["swarmlet_raft_term"].samples[0].value == 99


# ---------------------------------------------------------------------------- what is read


def test_raft_figures() -> None:
    agent = a_busy_agent()
    assert value(agent, "swarmlet_raft_term") == 7
    assert value(agent, "swarmlet_raft_commit_index") == 41
    assert value(agent, "swarmlet_raft_applied_index") == 40
    assert value(agent, "swarmlet_raft_last_log_index") == 45
    assert value(agent, "swarmlet_raft_snapshot_index") == 30
    assert value(agent, "swarmlet_raft_log_entries") == 15
    assert value(agent, "swarmlet_raft_log_bytes") == 65536
    assert value(agent, "swarmlet_raft_log_segments") == 2
    assert value(agent, "swarmlet_raft_snapshot_bytes") == 1234
    assert value(agent, "swarmlet_raft_voters") == 2
    assert value(agent, "swarmlet_raft_is_leader") == 1
    assert value(agent, "swarmlet_raft_has_leader") == 1
    assert value(agent, "swarmlet_raft_role", role="leader") == 1
    assert value(agent, "swarmlet_raft_role", role="follower") == 0
    assert value(agent, "swarmlet_raft_elections_started_total") == 3
    assert value(agent, "swarmlet_raft_leader_elections_won_total") == 2
    assert value(agent, "swarmlet_raft_snapshots_sent_total") == 0  # named: 0 until counted
    assert value(agent, "swarmlet_raft_dropped_messages_total", reason="stale") == 5


def test_a_follower_without_leader_says_so() -> None:
    agent = a_busy_agent(leader=False)
    agent.raft.raft_status = dataclasses.replace(agent.raft.raft_status, leader_id=None)
    assert value(agent, "swarmlet_raft_is_leader") == 0
    assert value(agent, "swarmlet_raft_has_leader") == 0
    assert value(agent, "swarmlet_raft_role", role="follower") == 1


def test_gossip_members_by_state_include_the_empty_states() -> None:
    agent = a_busy_agent()
    assert value(agent, "swarmlet_gossip_members", state="alive") == 2
    assert value(agent, "swarmlet_gossip_members", state="suspect") == 1
    assert value(agent, "swarmlet_gossip_members", state="dead") == 0
    assert value(agent, "swarmlet_gossip_members", state="left") == 0
    assert value(agent, "swarmlet_gossip_incarnation") == 3
    assert value(agent, "swarmlet_gossip_awareness") == 1
    assert value(agent, "swarmlet_gossip_probes_total") == 10
    assert value(agent, "swarmlet_gossip_suspicions_total") == 1
    assert value(agent, "swarmlet_gossip_refutations_total") == 2
    assert value(agent, "swarmlet_gossip_dropped_messages_total", reason="malformed") == 4
    assert value(agent, "swarmlet_gossip_datagrams_received_total") == 100
    assert value(agent, "swarmlet_gossip_datagrams_sent_total") == 90


def test_counters_without_a_name_of_their_own_keep_their_key_as_a_label() -> None:
    agent = a_busy_agent()
    assert value(agent, "swarmlet_node_refused_total", reason="peer_wrong_node") == 1
    assert value(agent, "swarmlet_node_dropped_messages_total", reason="frame_invalid") == 2
    assert value(agent, "swarmlet_node_events_total", event="status_reports_sent") == 6


def test_mesh_counters_per_service_address_port_and_protocol() -> None:
    agent = a_busy_agent()
    published = {"service": "web", "address": "", "port": "8080", "protocol": "tcp"}
    vip = {"service": "web", "address": "10.0.9.2", "port": "80", "protocol": "tcp"}
    assert value(agent, "swarmlet_mesh_connections_total", **published) == 12
    assert value(agent, "swarmlet_mesh_received_bytes_total", **published) == 300
    assert value(agent, "swarmlet_mesh_connect_failures_total", **published) == 1
    assert value(agent, "swarmlet_mesh_connections_total", **vip) == 3
    assert value(agent, "swarmlet_mesh_active_connections", **vip) == 1
    assert value(agent, "swarmlet_mesh_listen_failures", port="9000", protocol="udp") == 1


def test_executor_tasks_by_state_and_whether_docker_answers() -> None:
    agent = a_busy_agent()
    assert value(agent, "swarmlet_executor_up") == 1
    assert value(agent, "swarmlet_executor_tasks", state="running") == 1
    assert value(agent, "swarmlet_executor_tasks", state="failed") == 0
    agent.executor = None
    assert value(agent, "swarmlet_executor_up") == 0
    assert value(agent, "swarmlet_executor_tasks", state="running") == 0


def test_leader_reports_pending_tasks_by_service_and_reason() -> None:
    agent = a_busy_agent()
    assert value(agent, "swarmlet_leader_pending_tasks", service="web", reason="down") == 2
    assert value(agent, "swarmlet_leader_services") == 1
    assert value(agent, "swarmlet_leader_tasks", desired_state="running", state="pending") == 2
    assert value(agent, "swarmlet_leader_tasks", desired_state="running", state="running") == 1


def test_only_the_leader_reports_the_cluster() -> None:
    names = {name for name, _ in samples(a_busy_agent(leader=False))}
    # What the duties did while this node led stays (counters); the cluster's state does not.
    work = {"swarmlet_leader_reconcile_passes_total", "swarmlet_leader_reconcile_cpu_seconds_total"}
    assert {n for n in names if n.startswith("swarmlet_leader_")} == work
    assert "swarmlet_raft_term" in names


# ---------------------------------------------------------------------------- pending reasons


@pytest.mark.parametrize(
    ("failures", "reason"),
    [
        ({"down": 1}, "down"),
        ({"down": 3}, "down"),
        ({"unknown": 2}, "unknown"),
        ({"paused": 1}, "paused"),
        ({"draining": 2}, "draining"),
        ({"constraints": 1}, "constraints"),
        ({"cpu": 1}, "cpu"),
        ({"memory": 2}, "memory"),
        ({"port:8080/tcp": 1}, "port"),
        ({"max_replicas:2": 2}, "max_replicas"),
        ({}, "no_nodes"),
        # Several reasons: the most frequent, as the scheduler lists it first.
        ({"down": 1, "memory": 2, "draining": 1}, "memory"),
    ],
)
def test_pending_reason_of_the_schedulers_explanations(
    failures: dict[str, int], reason: str
) -> None:
    assert pending_reason(explain(failures)) == reason


@pytest.mark.parametrize(
    ("message", "reason"),
    [("", "unscheduled"), ("no service s-gone", "no_service"), ("something new", "other")],
)
def test_pending_reason_of_other_messages(message: str, reason: str) -> None:
    assert pending_reason(message) == reason


def test_pending_reasons_are_a_closed_set() -> None:
    messages = [explain({k: 1}) for k in ("down", "cpu", "port:1/udp")] + ["", "x", "no service"]
    assert {pending_reason(m) for m in messages} <= set(PENDING_REASONS)
