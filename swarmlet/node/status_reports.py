"""Task statuses from every node to the leader, committed in batches (issue #16).

A node's executor observes its own tasks (state, container, health, endpoints). It used to spread
them in its gossip metadata, which grew with the tasks it ran and was resent whole to every member
on every change, until a node with ~140 tasks outgrew it and its agent died. Now, as Swarm's
dispatcher and Nomad's client do, a node reports to the leader, which commits the statuses through
Raft (`commands.ReportTasks`): every replica holds them, the leader and the proxies read them from
the replicated state, and the mesh keeps its routes while there is no leader.

- Level-triggered (Nomad's `allocSync`): `StatusReporter` sends the difference between what its
  executor sees and what its own replica of the state shows (`news`). Nothing is remembered but
  what is in flight: a report lost with a leader is sent again, to the next one, because the
  difference is still there. The cost of a change does not depend on how many tasks run.
- Batched: what changes within `BATCH_WINDOW_S`, or while a report is in flight, leaves together
  (one report in flight per node, at most `MAX_STATUSES_PER_REPORT` statuses each); the leader
  proposes each report as one entry, and concurrent entries from many nodes share one Raft append
  and fsync (group commit in `raft.driver`).
- In the sender's name only: `StatusIntake` on the leader commits a report's statuses in the name
  of the connection's certificate, and only about the tasks the state assigns to that node
  (`leader.observation.report_refusal`); what it refuses is counted (so are the load entries it
  drops, the reports whose port errors it cuts to their bounds and the statuses whose endpoints
  it cuts to what their task can publish), and a report that changes nothing commits nothing.
  The state machine checks ownership again when it applies.

Load figures (`NodeLoad`: per-task CPU and memory, proxy connection counts) change every few
seconds and only the leader's autoscaler reads them: they ride along at most every
`LOAD_INTERVAL_S`, when they changed, and stay in the leader's memory, one entry per member of
the state (a removed node's goes at the next report after its removal).

Must not know: what the executor or the proxy do (it reads their figures through callables).
"""

from __future__ import annotations

import contextlib
import dataclasses
import heapq
import itertools
import logging
import math
from collections.abc import Awaitable, Callable, Mapping

import trio

from swarmlet import timers
from swarmlet.certs import PeerIdentity
from swarmlet.errors import NotLeaderError, RemoteProtocolError, UsageError
from swarmlet.leader.observation import report_refusal
from swarmlet.node.replica_source import AppliedSource
from swarmlet.raft.driver import RaftDriver
from swarmlet.state.commands import Command, ReportTasks
from swarmlet.state.machine import ApplyResult, ClusterState
from swarmlet.state.model import Service, TaskState
from swarmlet.state.observed import (
    MAX_EXPOSED_PORTS,
    NodeLoad,
    StatusReport,
    StatusReportReply,
    TaskLoad,
    TaskObservation,
    endpoint_is_well_formed,
    status_bytes,
)
from swarmlet.wire.hosts import host_of
from swarmlet.wire.transport import LINK_ERRORS, Address, Counters, FramedStream, Transport

log = logging.getLogger(__name__)

BATCH_WINDOW_S = 0.02  # how long a first change waits for the ones that come with it
LOAD_INTERVAL_S = 5.0  # load figures are sent at most this often (the executor measures at 5 s)
RETRY_S = 0.5  # after a failed report, wait this long (or for a new leader) before the next
REPLY_TIMEOUT_S = 10.0  # a leader that does not answer a report in this time is given up on
MAX_STATUSES_PER_REPORT = 512  # a larger difference leaves in several reports, one after another
MAX_PORT_ERRORS = 64  # per node; a proxy reports one per published port it cannot listen on
MAX_PORT_ERROR_CHARS = 300
_PORT_ERRORS_LOOKED_AT = 4096  # of a report's, by the intake (and the reporter, alike)
# What one task's status may hold: one endpoint per published port (a range of every port of
# one protocol at most), an error of a few KiB (Docker's are a few hundred bytes; a runtime's
# with long mount paths a few thousand). Past them the intake refuses (endpoints) or cuts (the
# rest), so that a status stays inside the frame a worker may send and a Raft entry.
MAX_ENDPOINTS = 65536
MAX_ERROR_CHARS = 4096
MAX_CONTAINER_ID_CHARS = 128
# A report holds statuses up to about this many bytes (and at least one), so that it stays well
# inside the largest frame a worker may send (`transport.MAX_NON_MANAGER_FRAME_BYTES`).
REPORT_BYTES = 1024 * 1024
# ... and up to this many endpoints between them (at least one status, whatever it holds): what
# one report commits is decoded on every manager's event loop as it applies the entry (2.7 us
# an endpoint here: 22 ms for these). 512 statuses of 340 ports of the worker's own task were
# a 4 MB entry, 0.3 s to encode and 0.8 s to apply, beyond the election timeout (review). An
# honest node reports a few per task: 150 tasks of three published ports are 450. The intake
# commits what fits of a larger report (`within_report`) and leaves the rest for the next.
REPORT_ENDPOINTS = 8192
# What the leader commits of one node's statuses (`_Budget`): a burst of two full reports, then
# STATUS_BYTES_PER_S. Each status it commits is a Raft write on every manager, and from the
# services with a published port or a network, a frame to every worker: a node that changed
# the error text of its 512 tasks in every report committed 2 MiB per report, as fast as it
# sent them. An honest node's statuses are a few hundred bytes each, on change: a node
# restarting 1,000 tasks at once is about 200 KiB. Beyond it a report is refused and the node
# sends it again after `RETRY_S`, with what is news by then.
STATUS_BURST_BYTES = 2 * REPORT_BYTES
STATUS_BYTES_PER_S = 256 * 1024
# The intake lets the loop run after vetting about this many endpoints: a worker's 4 MiB frame
# holds 174,080 of them, which took 0.05 s to vet here and three times as long on slower
# machines, beside the collections and the freeing the frame's objects cost, on a leader
# whose followers wait 0.4 s for its heartbeat.
_ENDPOINTS_PER_TURN = 8192


def is_news(obs: TaskObservation, recorded: TaskObservation | None) -> bool:
    """Whether `obs` says something the replicated state does not hold yet and would take (a
    status never moves a task's state back: the state machine skips such a one)."""
    return recorded is None or (obs != recorded and obs.state >= recorded.state)


def news(
    node_id: str, state: ClusterState, observed: Mapping[str, TaskObservation]
) -> list[TaskObservation]:
    """What this node observes of its own tasks that its replica of the state does not show."""
    node = state.nodes.get(node_id)
    if node is None:
        return []  # not a member by this replica: the leader would refuse the report
    host = own_host_spellings(node.addr)
    found = []
    for task_id, observation in observed.items():
        task = state.tasks.get(task_id)
        if task is None or task.node_id != node_id:
            continue
        obs = vetted_observation(observation)  # as the leader will take it, or not at all
        if obs is None or not endpoints_distinct(obs):
            continue
        obs = on_own_host(within_publishable(obs, state), host)
        if is_news(obs, state.task_status.get(task_id)):
            found.append(obs)
    return found


class StatusReporter:
    """This node's side: sends its news to the leader until its replica shows them."""

    def __init__(
        self,
        *,
        node_id: str,
        raft: AppliedSource,
        state: Callable[[], ClusterState],
        observed: Callable[[], Mapping[str, TaskObservation]],
        port_errors: Callable[[], dict[str, str]],
        load: Callable[[], NodeLoad],
        propose: Callable[[Command], Awaitable[ApplyResult]],
        transport: Transport,
        resolve: Callable[[str], Address | None],
        load_interval_s: float = LOAD_INTERVAL_S,
    ) -> None:
        self.node_id = node_id
        self.load_interval_s = load_interval_s
        self._raft = raft
        self._state = state
        self._observed = observed
        self._port_errors = port_errors
        self._load = load
        self._propose = propose
        self._transport = transport
        self._resolve = resolve
        self.counters: Counters = transport.counters
        self._wake = trio.Event()
        self._seq = 0
        self._link: FramedStream | None = None
        self._link_leader = ""
        self._load_sent: tuple[str, NodeLoad] | None = None  # (to which leader, what)

    def notify(self) -> None:
        """The executor saw a change, or the replica applied one: look again."""
        self._wake.set()

    def pending(self, *, with_load: bool) -> StatusReport | None:
        """The next report to send, None if there is nothing to say."""
        state = self._state()
        statuses = within_report(news(self.node_id, state, self._observed()))
        # As the intake keeps them: compared whole, more than it keeps were never equal.
        port_errors: dict[str, str] | None = _vetted_port_errors(self._port_errors())
        if port_errors == state.port_errors.get(self.node_id, {}):
            port_errors = None
        load = None
        if with_load and not self._raft.is_leader:  # the leader reads its own directly
            leader = self._raft.leader_id or ""
            load = self._load()
            if self._load_sent == (leader, load):
                load = None
        if not statuses and port_errors is None and load is None:
            return None
        self._seq += 1
        return StatusReport(self._seq, tuple(statuses), port_errors, load)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        next_load = timers.next_beat(self.load_interval_s)
        try:
            while True:
                with trio.move_on_at(next_load) as load_due:
                    await self._wake.wait()
                self._wake = trio.Event()
                if not load_due.cancelled_caught:  # news: let what comes with it gather
                    await trio.sleep(BATCH_WINDOW_S)
                with_load = trio.current_time() >= next_load
                report = self.pending(with_load=with_load)
                if with_load:  # on the beat, with the agent's other periodic work
                    next_load = timers.next_beat(self.load_interval_s)
                if report is None:
                    continue
                try:
                    index = await self._send(report)
                except (NotLeaderError, *LINK_ERRORS) as exc:
                    self.counters["status_report_retries"] += 1
                    log.debug("a status report did not reach the leader: %s", exc)
                    with trio.move_on_after(RETRY_S):
                        await self._raft.leader_changed.wait()
                    self._wake.set()
                    continue
                self.counters["status_reports_sent"] += 1
                # Until the replica shows what was sent, the same news would be sent again.
                with trio.move_on_after(REPLY_TIMEOUT_S):
                    await self._raft.wait_applied(index)
                self._wake.set()  # anything that changed meanwhile (cheap if nothing did)
        finally:
            await self._close_link()

    async def _send(self, report: StatusReport) -> int:
        """Deliver `report` and return the log index that holds it (to wait for)."""
        if self._raft.is_leader:
            if report.statuses or report.port_errors is not None:
                await self._propose(ReportTasks(self.node_id, report.statuses, report.port_errors))
            return self._raft.applied
        leader = self._raft.leader_id
        addr = self._resolve(leader) if leader else None
        if leader is None or addr is None:
            raise NotLeaderError(None)
        if self._link is None or self._link_leader != leader:
            await self._close_link()
            self._link = await self._transport.connect(addr, node_id=leader)
            self._link_leader = leader
        try:
            with trio.fail_after(REPLY_TIMEOUT_S):
                await self._link.send(report)
                reply: StatusReportReply | None = await self._link.receive(
                    expect=(StatusReportReply,)
                )
        except BaseException:
            await self._close_link()
            raise
        if reply is None or reply.seq != report.seq:
            await self._close_link()
            raise trio.BrokenResourceError(f"{leader} closed the status link")
        if reply.not_leader:
            raise NotLeaderError(reply.leader_hint or None)
        if not reply.ok:
            raise RemoteProtocolError(f"the leader refused a status report: {reply.error}")
        if report.load is not None:
            self._load_sent = (leader, report.load)
        return reply.index

    async def _close_link(self) -> None:
        link, self._link = self._link, None
        if link is not None:
            with trio.CancelScope(shield=True), contextlib.suppress(*LINK_ERRORS):
                await link.aclose()


class StatusIntake:
    """The leader's side: commits reports in their senders' names; keeps their load figures."""

    def __init__(
        self,
        *,
        raft: RaftDriver[ApplyResult],
        state: Callable[[], ClusterState],
        propose: Callable[[Command], Awaitable[ApplyResult]],
        counters: Counters,
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        """`clock`: what the node's rate of statuses counts in (a simulation's own time)."""
        self._raft = raft
        self._state = state
        self._propose = propose
        self.counters = counters
        self._clock = clock
        self.loads: dict[str, NodeLoad] = {}  # node id -> as its last report brought it
        self._budgets: dict[str, _Budget] = {}  # node id -> what it may commit now
        self._members_seen = (0, 0)  # (nodes, removed nodes) of the state `loads` was pruned for

    async def serve(self, stream: FramedStream, first: object) -> None:
        """Answer a connection's reports, one after another, until it closes."""
        report = first
        while isinstance(report, StatusReport):
            await stream.send(await self.answer(stream.peer, report))
            report = await stream.receive(expect=(StatusReport,))

    async def answer(self, peer: PeerIdentity | None, report: StatusReport) -> StatusReportReply:
        state = self._state()
        if peer is None or peer.node_id not in state.nodes:
            return self._refuse(report, "the sender is not a member")
        if len(report.statuses) > MAX_STATUSES_PER_REPORT:
            return self._refuse(report, f"more than {MAX_STATUSES_PER_REPORT} statuses")
        if not self._raft.is_leader:
            hint = self._raft.leader_id or ""
            return StatusReportReply(report.seq, False, not_leader=True, leader_hint=hint)
        node_id = peer.node_id
        self._forget_departed(state)
        # Taken before the first await: one taken after could re-add a node removed meanwhile.
        budget = self._budgets.setdefault(node_id, _Budget(self._clock()))
        if report.load is not None:
            load = self.loads[node_id] = _vetted_load(node_id, report.load, state)
            dropped = _entries(report.load) - _entries(load)
            if dropped:
                self.counters["status_refused_load_entries"] += dropped
        host = own_host_spellings(state.nodes[node_id].addr)
        statuses: list[TaskObservation] = []
        examined = 0  # endpoints since the loop last ran
        for reported in report.statuses:
            # Whose task first: it costs one lookup, where vetting walks every endpoint.
            reason = report_refusal(state, node_id, reported.task_id)
            if reason is not None:
                self.counters[f"status_refused_{reason}"] += 1
                continue
            examined += len(reported.endpoints)
            if examined > _ENDPOINTS_PER_TURN:
                examined = 0
                await trio.lowlevel.checkpoint()
            obs = vetted_observation(reported)
            if obs is None or not endpoints_distinct(obs):
                reason = "malformed" if obs is None else "endpoints"
                self.counters[f"status_refused_{reason}"] += 1
                continue
            if obs != reported:
                self.counters["status_cut_to_size"] += 1
            publishable = within_publishable(obs, state)
            if publishable is not obs:
                self.counters["status_cut_endpoints"] += 1
                obs = publishable
            on_host = on_own_host(obs, host)
            if on_host is not obs:
                self.counters["status_cut_foreign_endpoints"] += 1
                obs = on_host
            if is_news(obs, state.task_status.get(obs.task_id)):
                statuses.append(obs)
        port_errors = report.port_errors
        if port_errors is not None:
            vetted = _vetted_port_errors(port_errors)
            if vetted != port_errors:  # some dropped, or cut to size
                self.counters["status_refused_port_errors"] += 1
            port_errors = vetted
            if port_errors == state.port_errors.get(node_id, {}):
                port_errors = None
        if not statuses and port_errors is None:
            return StatusReportReply(report.seq, True, index=self._raft.applied)
        fitting = within_report(statuses)
        if len(fitting) < len(statuses):
            # The reporter sends no more, but one of an older release may: the rest are still
            # news to it once it applies these, and come in its next report (refused whole, it
            # sent the same report for ever; review).
            self.counters["status_cut_report_size"] += 1
            statuses = fitting
        size = sum(map(status_bytes, statuses)) + sum(map(len, (port_errors or {}).values()))
        if not budget.take(size, self._clock()):
            self.counters["status_refused_rate"] += 1
            return self._refuse(report, "over the node's rate of statuses (sent again soon)")
        try:
            result = await self._propose(ReportTasks(node_id, tuple(statuses), port_errors))
        except NotLeaderError as exc:
            hint = exc.leader_hint or ""
            return StatusReportReply(report.seq, False, not_leader=True, leader_hint=hint)
        except UsageError as exc:  # over the size of one write: send fewer at a time
            return self._refuse(report, str(exc))
        self.counters["status_statuses_committed"] += len(statuses)
        return StatusReportReply(report.seq, result.ok, result.error, index=self._raft.applied)

    def _forget_departed(self, state: ClusterState) -> None:
        """Drop the loads of nodes no longer in the state. A node leaves it only by removal,
        which grows the revocation list (`removed_nodes`, never shrunk), so the sizes tell
        whether anything can have left: the scan runs once per membership change, not per
        report."""
        seen = (len(state.nodes), len(state.removed_nodes))
        if seen == self._members_seen:
            return
        self._members_seen = seen
        for node_id in [n for n in self.loads if n not in state.nodes]:
            del self.loads[node_id]
        for node_id in [n for n in self._budgets if n not in state.nodes]:
            del self._budgets[node_id]

    def _refuse(self, report: StatusReport, why: str) -> StatusReportReply:
        self.counters["status_report_refused"] += 1
        return StatusReportReply(report.seq, False, error=f"status report refused: {why}")


def _vetted_load(node_id: str, load: NodeLoad, state: ClusterState) -> NodeLoad:
    """`load` with only what the node may speak for: its own running tasks, each once (the
    first figure), and the services that exist (so what a node sends cannot grow the leader's
    memory beyond the state's size, nor weigh one task as many). Only about as many figures
    are looked at as the node has tasks, and services there are (twice, and a few: an honest
    node's executor or proxy may still hold what the state no longer gives it): a frame of
    226,000 figures held the leader's loop for 71 ms (review)."""
    tasks: dict[str, TaskLoad] = {}
    for t in itertools.islice(load.tasks, _looked_at(len(state.tasks.on_node(node_id)))):
        task = state.tasks.get(t.task_id)
        if (
            task is not None
            and task.node_id == node_id
            and task.state <= TaskState.RUNNING
            and _measured(t)
        ):
            tasks.setdefault(t.task_id, t)
    names = {s.spec.name for s in state.services.values()}
    connections = {
        k: v
        for k, v in itertools.islice(load.proxy_connections.items(), _looked_at(len(names)))
        if k in names and v >= 0
    }
    return NodeLoad(tuple(tasks.values()), connections)


def _looked_at(honest: int) -> int:
    return 2 * honest + 64


def _measured(t: TaskLoad) -> bool:
    """A figure a measurement gives: a NaN made the service's mean "missing", which holds off
    every scale-down, and a negative one pulls the mean of the others down."""
    return math.isfinite(t.cpu_percent) and t.cpu_percent >= 0 and t.memory_bytes >= 0


def _entries(load: NodeLoad) -> int:
    return len(load.tasks) + len(load.proxy_connections)


def vetted_observation(obs: TaskObservation) -> TaskObservation | None:
    """`obs` with its error and container id cut to size; None if an endpoint is malformed or
    there are too many (a worker does not send these, so the whole status is refused). Cut
    before `is_news` compares it with the recorded one, so a long error is committed once."""
    if len(obs.endpoints) > MAX_ENDPOINTS or not all(
        endpoint_is_well_formed(e) for e in obs.endpoints
    ):
        return None
    if len(obs.error) <= MAX_ERROR_CHARS and len(obs.container_id) <= MAX_CONTAINER_ID_CHARS:
        return obs
    return dataclasses.replace(
        obs,
        error=obs.error[:MAX_ERROR_CHARS],
        container_id=obs.container_id[:MAX_CONTAINER_ID_CHARS],
    )


def endpoints_distinct(obs: TaskObservation) -> bool:
    """Whether a status holds one endpoint per (target, protocol), as Docker maps each container
    port once: more of one target is no executor's (the whole status is refused), and every
    proxy would try each of them for every connection (a worker reported 65,536: review)."""
    return len({(e.target, e.protocol) for e in obs.endpoints}) == len(obs.endpoints)


def within_publishable(obs: TaskObservation, state: ClusterState) -> TaskObservation:
    """`obs` with the endpoints its task can publish: its service's ports (this version's and
    the one before: tasks of both run during an update), and of the others (the image's EXPOSE
    ports, or a version older than the one before) the first `MAX_EXPOSED_PORTS`; `obs` itself
    if it holds no more. Cut, not refused: the task's state still reaches the leader (an old
    version's task with a 2,001-port range, two updates on, was refused whole and sent again
    at every turn of its node's reporter). Each node would listen at the service's virtual
    addresses on every target, so a worker with 65,536 of them made every node open as many
    listeners. The reporter cuts the same way, so it does not resend what the leader cut."""
    task = state.tasks.get(obs.task_id)
    service = state.services.get(task.service_id) if task is not None else None
    ports = _ports_of(service) if service is not None else set()
    others = sum((e.target, e.protocol) not in ports for e in obs.endpoints)
    if others <= MAX_EXPOSED_PORTS:
        return obs
    kept, budget = [], MAX_EXPOSED_PORTS
    for e in obs.endpoints:
        if (e.target, e.protocol) in ports:
            kept.append(e)
        elif budget:
            kept.append(e)
            budget -= 1
    return dataclasses.replace(obs, endpoints=tuple(kept))


def own_host_spellings(addr: str) -> frozenset[str]:
    """How an endpoint on the node whose `Node.addr` is `addr` names its host: the executor
    writes the node's advertise host as it is in `addr` (IPv6 bare or in brackets; a name in
    any case)."""
    host = host_of(addr)
    return frozenset((host, f"[{host}]", host.lower()))


def on_own_host(obs: TaskObservation, spellings: frozenset[str]) -> TaskObservation:
    """`obs` with the endpoints on its node's own host only (`own_host_spellings`): the
    executor publishes every container port there, and every observer drops any other
    (`leader.observation.endpoint_refusal`). Cut here, a host a worker makes up (one of 3.5 MB
    grew the state and every worker's view by as much: review) never reaches the state. Cut,
    not refused, and the reporter cuts the same way (`news`): a node whose address changed
    under running tasks still reports their states, and sends nothing twice. A lookup per
    endpoint, no parsing: a worker's 4 MiB frame holds 174,080 of them (parsed, 0.7 s: review)."""
    if all(e.host in spellings for e in obs.endpoints):
        return obs
    kept = tuple(e for e in obs.endpoints if e.host in spellings)
    return dataclasses.replace(obs, endpoints=kept)


def _ports_of(service: Service) -> set[tuple[int, str]]:
    specs = [service.spec] + ([service.previous_spec] if service.previous_spec else [])
    return {(p.target, p.protocol) for spec in specs for p in spec.ports}


def within_report(statuses: list[TaskObservation]) -> list[TaskObservation]:
    """The first statuses that fit one report: MAX_STATUSES_PER_REPORT of them, of at most
    REPORT_BYTES and REPORT_ENDPOINTS between them (the first always goes); the rest go in the
    next reports."""
    size = endpoints = 0
    for i, obs in enumerate(statuses[:MAX_STATUSES_PER_REPORT]):
        size += status_bytes(obs)
        endpoints += len(obs.endpoints)
        if i > 0 and (size > REPORT_BYTES or endpoints > REPORT_ENDPOINTS):
            return statuses[:i]
    return statuses[:MAX_STATUSES_PER_REPORT]


class _Budget:
    """A token bucket of status bytes: STATUS_BURST_BYTES at most, refilled at
    STATUS_BYTES_PER_S. A full bucket takes any size, and owes what it lacked: a report larger
    than the burst (a status may hold 65,536 endpoints) goes, and waits out its size after."""

    def __init__(self, now: float) -> None:
        self._bytes = float(STATUS_BURST_BYTES)
        self._at = now

    def take(self, size: int, now: float) -> bool:
        """Whether `size` bytes may be committed now (they are then taken)."""
        elapsed = max(0.0, now - self._at)
        self._bytes = min(STATUS_BURST_BYTES, self._bytes + elapsed * STATUS_BYTES_PER_S)
        self._at = now
        if size > self._bytes and self._bytes < STATUS_BURST_BYTES:
            return False
        self._bytes -= size
        return True


def _vetted_port_errors(errors: dict[str, str]) -> dict[str, str]:
    """At most `MAX_PORT_ERRORS` errors of at most `MAX_PORT_ERROR_CHARS` each: a node's own
    account of its proxy, kept in the replicated state, must not be able to bloat it."""
    # sorted()'s first, without the sort, of the first few: an honest proxy has one error per
    # published port, and a frame of 600,000 held the leader's loop for 31 ms (review)
    kept = heapq.nsmallest(
        MAX_PORT_ERRORS, itertools.islice(errors.items(), _PORT_ERRORS_LOOKED_AT)
    )
    return {k[:16]: v[:MAX_PORT_ERROR_CHARS] for k, v in kept}
