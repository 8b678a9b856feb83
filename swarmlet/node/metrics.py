"""Prometheus metrics of one agent, served on an opt-in address (`AgentConfig.metrics_addr`).

`AgentCollector` is a prometheus_client custom collector: it keeps no state of its own and reads
the agent only when Prometheus scrapes, from the figures the parts already keep (Raft's and
gossip's counters, the transport's, the mesh's per-port counters, the executor's observations,
the replicated state). What a hot path records for it is a plain int or a fixed-bucket
`wire.histogram.Histogram` (proposal latency, Docker calls), never a prometheus_client object:
this module is the only one that imports prometheus_client. A figure the agent does not keep is
not exported (issue #18 lists them).

Conventions (https://prometheus.io/docs/practices/naming/): every name starts with `swarmlet_`,
carries its unit (`_bytes`, `_seconds`) and counters end in `_total`. Label values are bounded:
a state or reason from a fixed set, a counter's name from the code, a service name, a port (both
bounded by the replicated state). Task ids, replica addresses and client addresses are never
labels: they grow without bound as tasks come and go.

The HTTP side serves one `GET /metrics` per connection on trio, in the agent's own event loop:
prometheus_client's bundled servers run in threads, which would read the agent's dicts while
the loop changes them. The exposition itself (text or OpenMetrics, as the scraper asks) is the
library's. A scraper gets a deadline, a bounded request head and a connection cap, as any peer.

Must not know: how the agent is put together (it reads only `MetricsSource`), and nothing in
the agent reads it.
"""

from __future__ import annotations

import functools
import logging
import math
import re
from collections import Counter
from collections.abc import Iterator, Mapping
from typing import Protocol

import trio
from prometheus_client import (
    GCCollector,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import CollectorRegistry

import swarmlet
from swarmlet.errors import UsageError
from swarmlet.gossip.core import Member
from swarmlet.gossip.messages import MemberState
from swarmlet.raft.driver import RaftStatus
from swarmlet.raft.messages import Role as RaftRole
from swarmlet.raft.storage import StorageStats
from swarmlet.raft.types import Snapshot
from swarmlet.state.machine import ClusterState
from swarmlet.state.model import TaskState
from swarmlet.state.observed import TaskObservation
from swarmlet.wire.histogram import Histogram

log = logging.getLogger(__name__)

# A scraper's limits: Prometheus sends a request head of a few hundred bytes and scrapes each
# target once per interval, so these only stop a misbehaving client from holding resources.
MAX_REQUEST_HEAD_BYTES = 8192
REQUEST_DEADLINE_S = 10.0
MAX_CONNECTIONS = 4


# ------------------------------------------------------------------------------ what is read


class RaftCoreReadings(Protocol):
    @property
    def counters(self) -> Mapping[str, int]: ...

    @property
    def last_index(self) -> int: ...

    @property
    def snapshot(self) -> Snapshot: ...


class RaftReadings(Protocol):
    def status(self) -> RaftStatus: ...

    @property
    def core(self) -> RaftCoreReadings: ...

    @property
    def proposal_outcomes(self) -> Mapping[str, int]: ...

    @property
    def proposal_latency(self) -> Histogram: ...

    @property
    def leader_changes_seen(self) -> int: ...


class StorageReadings(Protocol):
    def stats(self) -> StorageStats: ...


class GossipCoreReadings(Protocol):
    @property
    def counters(self) -> Mapping[str, int]: ...

    @property
    def incarnation(self) -> int: ...

    @property
    def awareness(self) -> int: ...

    def members(self) -> list[Member]: ...


class GossipReadings(Protocol):
    @property
    def core(self) -> GossipCoreReadings: ...


class ProxyReadings(Protocol):
    @property
    def port_errors(self) -> Mapping[tuple[int, str], str]: ...

    def stats(self) -> dict[str, dict[str, object]]: ...


class DockerReadings(Protocol):
    @property
    def call_latency(self) -> Mapping[str, Histogram]: ...

    @property
    def call_failures(self) -> Mapping[str, int]: ...


class ExecutorReadings(Protocol):
    @property
    def observations(self) -> Mapping[str, TaskObservation]: ...

    @property
    def runtime(self) -> DockerReadings: ...

    @property
    def task_starts(self) -> int: ...

    @property
    def start_failures(self) -> Mapping[str, int]: ...

    @property
    def task_failures(self) -> Mapping[str, int]: ...


class MetricsSource(Protocol):
    """What the collector reads of the agent, all of it at scrape time."""

    @property
    def node_id(self) -> str: ...

    @property
    def raft(self) -> RaftReadings: ...

    @property
    def storage(self) -> StorageReadings: ...

    @property
    def gossip(self) -> GossipReadings: ...

    @property
    def counters(self) -> Mapping[str, int]:
        """The transport's and the other layers' named event counts (`wire.transport.Counters`)."""
        ...

    @property
    def proxy(self) -> ProxyReadings: ...

    @property
    def executor(self) -> ExecutorReadings | None:
        """None while the Docker engine does not answer."""
        ...

    @property
    def state(self) -> ClusterState: ...

    @property
    def is_leader(self) -> bool: ...

    @property
    def leader(self) -> object:
        """The leader's duties (`leader.duties.LeaderDuties`), read with defaults: see
        `_LEADER_COUNTERS`."""
        ...

    def node_name(self, node_id: str) -> str: ...


# ------------------------------------------------------------------------------ counter tables

# A layer's counters by key -> (metric name without `_total`, help). Keys not listed here are not
# lost: `dropped_*` and `refused_*` keys become a `reason` label of one family per layer, the
# rest an `event` label of a catch-all family (keys are literals in the code: bounded).
_RAFT_COUNTERS: dict[str, tuple[str, str]] = {
    "elections_started": ("swarmlet_raft_elections_started", "Elections this node started."),
    "pre_votes_started": (
        "swarmlet_raft_pre_votes_started",
        "Pre-vote rounds this node started (Raft thesis 9.6).",
    ),
    "became_leader": (
        "swarmlet_raft_leader_elections_won",
        "Times this node became leader; summed over the cluster: the leader changes.",
    ),
    "check_quorum_step_downs": (
        "swarmlet_raft_check_quorum_step_downs",
        "Times this leader stepped down after losing contact with a quorum.",
    ),
    "transfers_started": (
        "swarmlet_raft_leadership_transfers_started",
        "Leadership transfers this node started.",
    ),
    "appends_rejected": (
        "swarmlet_raft_appends_rejected",
        "AppendEntries this node rejected (log mismatch).",
    ),
    "snapshots_sent": ("swarmlet_raft_snapshots_sent", "Snapshots this leader sent."),
    "snapshots_installed": (
        "swarmlet_raft_snapshots_installed",
        "Snapshots this node installed from a leader.",
    ),
    "compactions": ("swarmlet_raft_log_compactions", "Times this node compacted its log."),
}
_GOSSIP_COUNTERS: dict[str, tuple[str, str]] = {
    "probes": ("swarmlet_gossip_probes", "Direct probes (SWIM ping) this node sent."),
    "indirect_probes": (
        "swarmlet_gossip_indirect_probes",
        "Probes that fell back to indirect pings through other members.",
    ),
    "acks": ("swarmlet_gossip_probe_acks", "Acknowledgements of this node's probes."),
    "suspects": ("swarmlet_gossip_suspicions", "Members this node started to suspect."),
    "refutes": (
        "swarmlet_gossip_refutations",
        "Suspicions of this node that it refuted with a higher incarnation.",
    ),
    "failed": ("swarmlet_gossip_members_failed", "Members this node declared failed (dead)."),
    "push_pulls": ("swarmlet_gossip_push_pulls", "Full state exchanges (push-pull) started."),
}
_NODE_COUNTERS: dict[str, tuple[str, str]] = {
    "datagrams_in": ("swarmlet_gossip_datagrams_received", "Gossip datagrams received."),
    "datagrams_out": ("swarmlet_gossip_datagrams_sent", "Gossip datagrams sent."),
    "datagram_bytes_in": (
        "swarmlet_gossip_received_bytes",
        "Bytes of gossip datagrams received (signed and sealed, dropped ones included).",
    ),
    "datagram_bytes_out": (
        "swarmlet_gossip_sent_bytes",
        "Bytes of gossip datagrams sent (signed and sealed).",
    ),
    "frames_in": ("swarmlet_transport_frames_received", "Frames received on TCP streams."),
    "frames_out": ("swarmlet_transport_frames_sent", "Frames sent on TCP streams."),
    "connections_broken": (
        "swarmlet_transport_connections_broken",
        "TCP streams between agents that broke.",
    ),
    "raft_connect_failures": (
        "swarmlet_raft_connect_failures",
        "Failed connections to a Raft peer.",
    ),
    "raft_send_errors": ("swarmlet_raft_send_errors", "Raft messages that could not be sent."),
}


def _counter_families(
    counts: Mapping[str, int], named: Mapping[str, tuple[str, str]], layer: str, what: str
) -> Iterator[Metric]:
    """One family per named key (0 until counted); the other keys by prefix: `dropped_*` as
    `swarmlet_{layer}_dropped_messages_total{reason}`, `refused_*` as
    `swarmlet_{layer}_refused_total{reason}`, the rest as `swarmlet_{layer}_events_total{event}`."""
    for key, (name, help_) in named.items():
        yield CounterMetricFamily(name, help_, value=counts.get(key, 0))
    dropped = CounterMetricFamily(
        f"swarmlet_{layer}_dropped_messages", f"{what} dropped, by reason.", labels=["reason"]
    )
    refused = CounterMetricFamily(
        f"swarmlet_{layer}_refused", f"{what} refused, by reason.", labels=["reason"]
    )
    events = CounterMetricFamily(
        f"swarmlet_{layer}_events", f"Other {layer} events, by counter name.", labels=["event"]
    )
    for key, value in sorted(counts.items()):
        if key in named:
            continue
        if key.startswith("dropped_"):
            dropped.add_metric([key.removeprefix("dropped_")], value)
        elif key.startswith("refused_"):
            refused.add_metric([key.removeprefix("refused_")], value)
        else:
            events.add_metric([key], value)
    yield from (dropped, refused, events)


# ------------------------------------------------------------------------------ pending reasons

# `leader.scheduler.explain` words a pending task's message, most frequent reason first: "no
# suitable node (2 nodes lack memory; 1 node is draining)". The first is the task's `reason`.
_PENDING_REASONS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (reason, re.compile(pattern))
    for reason, pattern in (
        ("down", r"\bnodes? (is|are) down$"),
        ("unknown", r"\bnodes? (has|have) not reported"),
        ("paused", r"\bnodes? (is|are) paused$"),
        ("draining", r"\bnodes? (is|are) draining$"),
        ("constraints", r"not satisfy the constraints$"),
        ("cpu", r"\blacks? CPU$"),
        ("memory", r"\blacks? memory$"),
        ("port", r"\bhost port \S+ in use$"),
        ("max_replicas", r"maximum replicas per node"),
    )
)
PENDING_REASONS = (
    *(reason for reason, _ in _PENDING_REASONS),
    "no_nodes",
    "no_service",
    "unscheduled",
    "other",
)


def pending_reason(message: str) -> str:
    """The reason label (one of `PENDING_REASONS`) of a pending task with this message."""
    if not message:
        return "unscheduled"  # not yet looked at by the scheduler
    if message.startswith("no service "):
        return "no_service"
    prefix = "no suitable node ("
    if not message.startswith(prefix):
        return "other"
    first = message[len(prefix) :].removesuffix(")").split("; ", 1)[0]
    if first == "no nodes in the cluster":
        return "no_nodes"
    for reason, pattern in _PENDING_REASONS:
        if pattern.search(first):
            return reason
    return "other"


# ------------------------------------------------------------------------------ the collector


def _listener_labels(listener: str) -> tuple[str, str, str]:
    """`Proxy.stats` keys ("8080/tcp", or "VIP:80/tcp" for a service's virtual address) ->
    (address, port, protocol); the address is "" for a published port."""
    rest, _, protocol = listener.rpartition("/")
    address, _, port = rest.rpartition(":")
    return address, port, protocol


_MESH_COUNTERS = (
    ("connections", "swarmlet_mesh_connections", "Connections accepted (UDP: flows opened)."),
    ("bytes_in", "swarmlet_mesh_received_bytes", "Bytes from clients, relayed to replicas."),
    ("bytes_out", "swarmlet_mesh_sent_bytes", "Bytes from replicas, relayed to clients."),
    (
        "errors",
        "swarmlet_mesh_connect_failures",
        "Failed connections or sends to a replica (each benches the replica).",
    ),
    (
        "retries",
        "swarmlet_mesh_retries",
        "Connections replayed to another replica after an empty close.",
    ),
    (
        "refused",
        "swarmlet_mesh_refused_connections",
        "Clients turned away: connection limit reached or not admitted on a service network.",
    ),
    (
        "idle_closed",
        "swarmlet_mesh_idle_closed_connections",
        "Connections closed after the idle timeout.",
    ),
)
_MESH_LABELS = ["service", "address", "port", "protocol"]


class AgentCollector:
    """Reads `agent` on every `collect` (prometheus_client calls it per scrape)."""

    def __init__(self, agent: MetricsSource) -> None:
        self.agent = agent

    def collect(self) -> Iterator[Metric]:
        yield from self._node()
        yield from self._raft()
        yield from self._gossip()
        yield from self._mesh()
        yield from self._executor()
        yield from self._leader()

    def _node(self) -> Iterator[Metric]:
        agent = self.agent
        info = InfoMetricFamily("swarmlet_node", "This agent's node and version.")
        info.add_metric(
            [],
            {
                "node_id": agent.node_id,
                "name": agent.node_name(agent.node_id),
                "version": swarmlet.__version__,
            },
        )
        yield info
        yield from _counter_families(
            agent.counters, _NODE_COUNTERS, "node", "Messages and connections"
        )

    def _raft(self) -> Iterator[Metric]:
        raft = self.agent.raft
        status = raft.status()
        core = raft.core
        snapshot = core.snapshot
        # The storage writes in a worker thread (`trio.to_thread`): a scrape during a write may
        # see the segment sizes just before it. Reading a list of ints needs no lock in CPython.
        stored = self.agent.storage.stats()
        last, snap = core.last_index, snapshot.meta.index
        yield _gauge("swarmlet_raft_term", "The current Raft term.", status.term)
        yield _gauge(
            "swarmlet_raft_commit_index", "Highest index known committed.", status.commit_index
        )
        yield _gauge("swarmlet_raft_applied_index", "Highest index applied.", status.applied_index)
        yield _gauge("swarmlet_raft_last_log_index", "Index of the log's last entry.", last)
        yield _gauge("swarmlet_raft_snapshot_index", "Last index the snapshot covers.", snap)
        yield _gauge("swarmlet_raft_log_entries", "Entries after the snapshot.", last - snap)
        yield _gauge(
            "swarmlet_raft_log_bytes", "Bytes of the log's segment files.", stored.log_bytes
        )
        yield _gauge("swarmlet_raft_log_segments", "Segment files of the log.", stored.segments)
        yield _gauge("swarmlet_raft_snapshot_bytes", "Bytes of the snapshot.", len(snapshot.data))
        yield _gauge("swarmlet_raft_voters", "Voters in the configuration.", len(status.voters))
        yield _gauge(
            "swarmlet_raft_learners", "Learners in the configuration.", len(status.learners)
        )
        yield _gauge("swarmlet_raft_is_leader", "1 if this node leads.", status.role == "leader")
        yield _gauge(
            "swarmlet_raft_has_leader", "1 if a leader is known.", status.leader_id is not None
        )
        role = GaugeMetricFamily(
            "swarmlet_raft_role", "1 for this node's Raft role.", labels=["role"]
        )
        for r in RaftRole:
            role.add_metric([r.name.lower()], float(r.name.lower() == status.role))
        yield role
        yield from _counter_families(core.counters, _RAFT_COUNTERS, "raft", "Raft messages")
        yield CounterMetricFamily(
            "swarmlet_raft_leader_changes_seen",
            "Times this node learnt of a new leader.",
            value=raft.leader_changes_seen,
        )
        proposals = CounterMetricFamily(
            "swarmlet_raft_proposals",
            "Proposals made on this node, by outcome: committed (applied here), not_leader "
            "(refused: this node did not lead), lost (with the leadership, before committing), "
            "abandoned (the caller stopped waiting).",
            labels=["outcome"],
        )
        for outcome, n in raft.proposal_outcomes.items():
            proposals.add_metric([outcome], n)
        yield proposals
        latency = HistogramMetricFamily(
            "swarmlet_raft_proposal_duration_seconds",
            "Seconds from a proposal on this node (the leader) to its entry applied here; "
            "committed proposals only.",
            labels=[],
        )
        _add_histogram(latency, [], raft.proposal_latency)
        yield latency

    def _gossip(self) -> Iterator[Metric]:
        core = self.agent.gossip.core
        by_state = Counter(m.state for m in core.members())
        members = GaugeMetricFamily(
            "swarmlet_gossip_members",
            "Members in this node's gossip table (itself included), by state.",
            labels=["state"],
        )
        for state in MemberState:
            members.add_metric([state.name.lower()], by_state[state])
        yield members
        yield GaugeMetricFamily(
            "swarmlet_gossip_incarnation", "This node's own incarnation.", value=core.incarnation
        )
        yield GaugeMetricFamily(
            "swarmlet_gossip_awareness",
            "Lifeguard's local health multiplier: 0 is healthy; higher slows probing.",
            value=core.awareness,
        )
        yield from _counter_families(core.counters, _GOSSIP_COUNTERS, "gossip", "Gossip messages")

    def _mesh(self) -> Iterator[Metric]:
        proxy = self.agent.proxy
        stats = proxy.stats()
        counters = {
            key: CounterMetricFamily(name, help_, labels=_MESH_LABELS)
            for key, name, help_ in _MESH_COUNTERS
        }
        active = GaugeMetricFamily(
            "swarmlet_mesh_active_connections",
            "Connections (UDP: flows) open now.",
            labels=_MESH_LABELS,
        )
        for listener, figures in sorted(stats.items()):
            labels = [str(figures["service"]), *_listener_labels(listener)]
            for key, family in counters.items():
                family.add_metric(labels, _number(figures[key]))
            active.add_metric(labels, _number(figures["active"]))
        yield from counters.values()
        yield active
        failures = GaugeMetricFamily(
            "swarmlet_mesh_listen_failures",
            "1 for each published port this node cannot listen on (`service ps` says why).",
            labels=["port", "protocol"],
        )
        for port, protocol in sorted(proxy.port_errors):
            failures.add_metric([str(port), protocol], 1)
        yield failures

    def _executor(self) -> Iterator[Metric]:
        executor = self.agent.executor
        yield GaugeMetricFamily(
            "swarmlet_executor_up",
            "1 while the Docker engine answers and this node runs its tasks.",
            value=float(executor is not None),
        )
        tasks = GaugeMetricFamily(
            "swarmlet_executor_tasks",
            "Tasks on this node by the state its executor observes.",
            labels=["state"],
        )
        observed = Counter(
            obs.state for obs in (executor.observations.values() if executor else ())
        )
        for state in TaskState:
            tasks.add_metric([str(state)], observed[state])
        yield tasks
        # Counted by the executor and its Docker runtime since the engine last answered (both are
        # made anew when it comes back: the counters restart, as after an agent restart).
        starts = CounterMetricFamily(
            "swarmlet_executor_task_starts",
            "Task starts this node attempted (secrets, image, networks, container).",
            labels=[],
        )
        start_failures = CounterMetricFamily(
            "swarmlet_executor_task_start_failures",
            "Task starts that failed (the task was rejected), by the step that failed: a Docker "
            "operation (pull, run, ...), secrets, files or runtime.",
            labels=["reason"],
        )
        task_failures = CounterMetricFamily(
            "swarmlet_executor_task_failures",
            "Started tasks that failed: exit_code (non-zero exit), unhealthy (health check).",
            labels=["reason"],
        )
        calls = HistogramMetricFamily(
            "swarmlet_executor_docker_call_duration_seconds",
            "Seconds the Docker engine took per call of the runtime adapter, by operation "
            "(run: create, connect, start and inspect of one container).",
            labels=["operation"],
        )
        call_failures = CounterMetricFamily(
            "swarmlet_executor_docker_call_failures",
            "Docker calls that failed (the engine refused or was not reached), by operation.",
            labels=["operation"],
        )
        if executor is not None:
            starts.add_metric([], executor.task_starts)
            for reason, n in sorted(executor.start_failures.items()):
                start_failures.add_metric([reason], n)
            for reason, n in sorted(executor.task_failures.items()):
                task_failures.add_metric([reason], n)
            runtime = executor.runtime
            for operation, histogram in sorted(runtime.call_latency.items()):
                _add_histogram(calls, [operation], histogram)
            for operation, n in sorted(runtime.call_failures.items()):
                call_failures.add_metric([operation], n)
        yield from (starts, start_failures, task_failures, calls, call_failures)

    def _leader(self) -> Iterator[Metric]:
        """The cluster as the leader sees it; empty on other nodes, so that a sum over the
        cluster counts each task once (and workers hold only their own part of the state). The
        duties' own counters (`_LEADER_COUNTERS`) are served on every node: a former leader
        keeps what it did."""
        agent = self.agent
        pending = GaugeMetricFamily(
            "swarmlet_leader_pending_tasks",
            "Tasks waiting for a node, by service and by the scheduler's main reason.",
            labels=["service", "reason"],
        )
        tasks = GaugeMetricFamily(
            "swarmlet_leader_tasks",
            "Tasks in the replicated state, by desired and observed state.",
            labels=["desired_state", "state"],
        )
        services = GaugeMetricFamily(
            "swarmlet_leader_services", "Services in the replicated state."
        )
        if agent.is_leader:
            state = agent.state
            names = {s.id: s.spec.name for s in state.services.values()}
            waiting: Counter[tuple[str, str]] = Counter()
            by_state: Counter[tuple[str, str]] = Counter()
            for task in state.tasks.values():
                by_state[(str(task.desired_state), str(task.state))] += 1
                # As the orchestrator defines pending (`orchestrator.core._schedule_pending`).
                if task.desired_state is TaskState.RUNNING and task.state <= TaskState.PENDING:
                    service = names.get(task.service_id, "")
                    waiting[(service, pending_reason(task.message))] += 1
            for labels, n in sorted(waiting.items()):
                pending.add_metric(list(labels), n)
            for labels, n in sorted(by_state.items()):
                tasks.add_metric(list(labels), n)
            services.add_metric([], len(state.services))
        yield from (pending, tasks, services)
        yield from _leader_counters(agent.leader)


# What `leader.duties.LeaderDuties` counts, on any node (the work it did while it led), read
# with getattr: a family appears once the duties keep its attribute (`passes` and `pass_cpu_s`
# arrive with the orchestrator's pass counters; `autoscale_decisions` is a mapping direction ->
# count).
_LEADER_COUNTERS = (
    ("passes", "swarmlet_leader_reconcile_passes", "Orchestration passes this node ran as leader."),
    (
        "pass_cpu_s",
        "swarmlet_leader_reconcile_cpu_seconds",
        "CPU seconds of this node's orchestration passes.",
    ),
)


def _leader_counters(leader: object) -> Iterator[Metric]:
    for attribute, name, help_ in _LEADER_COUNTERS:
        reading = getattr(leader, attribute, None)
        if reading is not None:
            yield CounterMetricFamily(name, help_, value=_number(reading))
    decisions = getattr(leader, "autoscale_decisions", None)
    if isinstance(decisions, Mapping):
        family = CounterMetricFamily(
            "swarmlet_leader_autoscale_decisions",
            "Replica changes the autoscaler committed, by direction (up, down).",
            labels=["direction"],
        )
        for direction, n in sorted(decisions.items()):
            family.add_metric([str(direction)], _number(n))
        yield family


def _add_histogram(family: HistogramMetricFamily, labels: list[str], h: Histogram) -> None:
    buckets = [
        ("+Inf" if bound == math.inf else str(bound), float(n)) for bound, n in h.cumulative()
    ]
    family.add_metric(labels, buckets, h.sum)


def _gauge(name: str, help_: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, help_, value=float(value))


def _number(value: object) -> float:
    if not isinstance(value, int | float):
        raise TypeError(f"expected a number, got {value!r}")
    return float(value)


def metrics_registry(agent: MetricsSource) -> CollectorRegistry:
    """The agent's collector, and the process's CPU, memory, file descriptors and GC."""
    registry = CollectorRegistry(auto_describe=False)  # nothing is read before a scrape
    registry.register(AgentCollector(agent))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


# ------------------------------------------------------------------------------ HTTP


def format_addr(addr: tuple[str, int]) -> str:
    host, port = addr
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def serve_metrics(
    agent: MetricsSource,
    addr: tuple[str, int] | None,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve `GET /metrics` on `addr` until cancelled; with no address, return at once (metrics
    are opt-in). Started once listening; UsageError if `addr` cannot be listened on."""
    if addr is None:
        task_status.started()
        return
    registry = metrics_registry(agent)
    host, port = addr
    try:
        listeners = await trio.open_tcp_listeners(port, host=host or None)
    except OSError as exc:
        raise UsageError(
            f"cannot serve metrics on {format_addr(addr)}: {exc.strerror or exc}; "
            "choose another address (SWARMLET_METRICS_ADDR)"
        ) from exc
    slots = trio.Semaphore(MAX_CONNECTIONS)
    log.info("serving Prometheus metrics on http://%s/metrics", format_addr(addr))
    task_status.started()
    await trio.serve_listeners(functools.partial(_serve_scrape, registry, slots), listeners)


async def _serve_scrape(
    registry: CollectorRegistry, slots: trio.Semaphore, stream: trio.SocketStream
) -> None:
    """One request, one response, then close (Prometheus opens a connection per scrape)."""
    async with stream:
        try:
            slots.acquire_nowait()
        except trio.WouldBlock:
            return  # over the cap: closed at once, holding nothing
        try:
            with trio.move_on_after(REQUEST_DEADLINE_S):
                head = await _read_head(stream)
                if head is not None:
                    await stream.send_all(_respond(registry, head))
        except (trio.BrokenResourceError, OSError):
            pass  # the scraper went away; it will scrape again
        finally:
            slots.release()


async def _read_head(stream: trio.abc.ReceiveStream) -> bytes | None:
    """The request line and headers; None if the client closed first or sent too much."""
    buffer = bytearray()
    while b"\r\n\r\n" not in buffer:
        if len(buffer) > MAX_REQUEST_HEAD_BYTES:
            return None
        chunk = await stream.receive_some(4096)
        if not chunk:
            return None
        buffer += chunk
    return bytes(buffer.partition(b"\r\n\r\n")[0])


def _respond(registry: CollectorRegistry, head: bytes) -> bytes:
    request_line, *header_lines = head.decode("latin-1").split("\r\n")
    parts = request_line.split()
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        return _response(400, "text/plain", b"bad request\n")
    method, target, _ = parts
    if method not in ("GET", "HEAD"):
        return _response(405, "text/plain", b"only GET\n", extra="Allow: GET, HEAD\r\n")
    if target.partition("?")[0] != "/metrics":
        return _response(404, "text/plain", b"not found: metrics are at /metrics\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    encoder, content_type = choose_encoder(headers.get("accept", ""))
    try:
        body = encoder(registry)
    except Exception:
        # A bug in the collector: say so to the scraper and the log, never stop the agent.
        log.exception("collecting metrics failed")
        return _response(500, "text/plain", b"collecting metrics failed; see the agent log\n")
    return _response(200, content_type, b"" if method == "HEAD" else body, length=len(body))


def _response(
    status: int, content_type: str, body: bytes, *, extra: str = "", length: int | None = None
) -> bytes:
    reasons = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}
    head = (
        f"HTTP/1.1 {status} {reasons.get(status, 'Internal Server Error')}\r\n"
        f"Content-Type: {content_type}\r\n"
        f"Content-Length: {len(body) if length is None else length}\r\n"
        f"Connection: close\r\n{extra}\r\n"
    )
    return head.encode("latin-1") + body
