"""The whole control loop in one process on a virtual clock: 1,000 nodes, 100,000 tasks (#16).

.venv/bin/python -m bench.control_loop_sim [--nodes 1000] [--tasks 100000] [--services 100]
    [--seed 1] [--rebalance-max-s 300] [--no-charge-cpu]

Scenario: deploy every service; stay quiet for `idle_s`; fail one task (the pass that replaces it
is measured and profiled); kill 10% of the nodes (never the leader) and wait until their tasks
are replaced; bring them back and let the orchestrator rebalance (cut after `--rebalance-max-s`
of virtual time). Printed: virtual time to place and to run everything and to reschedule, the
leader's real CPU per virtual second and per pass, the CPU of one orchestration pass for a single
change (beside the issue's 50 ms goal, with its hot spots), Raft entries per second and bytes per
node per second, beside the issue's anchors.

What is real: the replicated state (`ClusterState.apply`, every command as the Raft log would
carry it), the leader's pass (`LeaderDuties.orchestration_pass`: the observation kept current,
`held_back`, `plan` scoped to what changed by `IncrementalPlanner`; and `LeaderDuties._propose`,
which batches a plan into one entry and records the events), the leader's status intake
(`StatusIntake.answer`: vetting and one `ReportTasks` per report), each node's reporter
(`StatusReporter.pending`: the difference between what its executor observes and what the state
shows, at most `MAX_STATUSES_PER_REPORT`, one report in flight, sent `BATCH_WINDOW_S` after the
first change), and the wire encoding of reports and entries.

What is simulated: Raft and the network are delays (`commit_s`, `net_s`), every node reads the
leader's replica; gossip is a verdict per node (ALIVE, or DEAD `detect_s` after a host dies, as
`ObservationSource.member_state` reports it); a node's executor is `SimNode`, which follows the
rule of `executor.driver.Executor._reconcile` (start what the state assigns and wants running,
stop what it no longer wants) with containers that start after a random delay; a host that dies
loses its containers.

Time: the leader is one sequential process. With `charge_cpu` (the default) each leader step
takes, in virtual time, the real CPU it used (`time.process_time`), so the figures show the leader
as the bottleneck it is; without it, the run is a pure function of the seed (the test uses that).
Entries: one per proposed command; an append is one leader step's entries (group commit).
Bytes: the wire size (`swarmlet.wire.codec`) of each report (node to leader), of each entry (what
a Raft learner receives: every worker did before #16's sessions), and of each session update to a
sample of workers (`state.worker_view`: the real view builder on the leader's replica, after
each commit).

Must not change what it measures: it only calls the cores, and reads their results.
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import gc
import heapq
import io
import itertools
import pstats
import random
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, cast

import swarmlet
from swarmlet.certs import PeerIdentity
from swarmlet.executor.task_container import exit_state
from swarmlet.gossip.messages import MemberState
from swarmlet.leader.depends_on import held_back, without
from swarmlet.leader.duties import LeaderDuties
from swarmlet.leader.observation import ObservationCache, observe
from swarmlet.leader.orchestrator.context import counter_ids, seeded_ids
from swarmlet.leader.orchestrator.core import Plan, plan
from swarmlet.leader.orchestrator.incremental import IncrementalPlanner
from swarmlet.leader.orchestrator.rebalance import MESSAGE as REBALANCE_MESSAGE
from swarmlet.node.events import EventLog
from swarmlet.node.status_reports import BATCH_WINDOW_S, StatusIntake, StatusReporter
from swarmlet.raft.types import ConfChange, ConfState
from swarmlet.state.commands import (
    AddNode,
    Batch,
    Command,
    CreateService,
    InitCluster,
    PutTasks,
    RemoveTasks,
    ReportTasks,
)
from swarmlet.state.machine import ApplyResult, ClusterState
from swarmlet.state.model import (
    Availability,
    Node,
    PortConfig,
    Resources,
    Role,
    Service,
    ServiceSpec,
    TaskState,
)
from swarmlet.state.observed import NodeLoad, NodeMeta, StatusReport, TaskObservation
from swarmlet.state.worker_view import ViewBuilder, updates
from swarmlet.wire import codec as wire
from swarmlet.wire.transport import Counters

T = TypeVar("T")

GIB = 1 << 30
MIB = 1 << 20
CPU = 1_000_000_000

# The goal and anchors, printed beside the figures.
GOAL_PASS_CPU_S = 0.050  # one orchestration pass, single change, 1,000 nodes, 100,000 tasks
SWARM2K = "Swarm2k: 2,384 nodes, 95,000 tasks, 3 managers"
NOMAD_C1M_PLACEMENTS_PER_S = 3_750.0
CLASSIC_SWARM_P99_S = 0.400  # scheduling, 1,000 nodes
NODE_RESOURCES = Resources(16 * CPU, 64 * GIB)
RESERVATIONS = Resources(CPU // 100, 16 * MIB)
IDLE_PASS_S = 5.0  # `LeaderDuties._orchestration_loop` looks again at least this often


@dataclass(frozen=True)
class SimConfig:
    nodes: int = 1_000
    tasks: int = 100_000
    services: int = 100
    seed: int = 1
    kill_fraction: float = 0.10
    charge_cpu: bool = True  # a leader step lasts the CPU it used (see the module docstring)
    detect_s: float = 2.0  # host death until gossip declares it DEAD (bench/README: ~1.8-2.1 s)
    rejoin_s: float = 1.0  # a returning host until gossip holds it ALIVE again
    commit_s: float = 0.005  # one group commit: replicate to a quorum and fsync
    net_s: float = 0.001  # one way, between a node and the leader
    accept_s: tuple[float, float] = (0.005, 0.05)  # an assignment applied until STARTING
    start_s: tuple[float, float] = (0.5, 2.0)  # STARTING until the container runs
    phase_max_s: float = 3_600.0  # virtual; a phase that has not converged by then gives up
    rebalance_max_s: float = 300.0  # virtual; rebalancing moves one replica per service at once
    idle_s: float = 20.0  # virtual; a quiet spell after the deploy
    node_resources: Resources = NODE_RESOURCES
    reservations: Resources = RESERVATIONS  # of every service's replicas
    profile_top: int = 15  # hot spots of the single-change pass printed (0: no profile)
    # The manager's node drained: every task runs on a worker, whose statuses go up as reports
    # (at nodes=2, one worker runs them all: issue #16's "1,000 tasks on one node").
    drain_manager: bool = False
    # Services with an ingress port: every worker's view holds their running tasks (the mesh
    # routes them), the others' only on the nodes that run them (`state.worker_view`).
    published_services: int = 10
    # Workers whose sessions are measured (`state.worker_view.ViewBuilder` on the leader's
    # replica, each update encoded): the bytes a worker receives, as the mean of this sample.
    session_sample: int = 10


# ------------------------------------------------------------------------------------ figures


@dataclass
class Phase:
    name: str
    started_at: float
    ended_at: float = 0.0
    converged: bool = False
    placed_at: float | None = None  # every wanted task assigned (committed)
    leader_cpu_s: float = 0.0
    pass_cpu_s: list[float] = field(default_factory=list)  # observe + plan, per pass
    entries: int = 0
    entry_bytes: int = 0
    appends: int = 0
    reports: int = 0
    report_bytes: int = 0
    statuses: int = 0
    view_bytes: int = 0  # to the sampled workers' sessions, in all

    @property
    def virtual_s(self) -> float:
        return self.ended_at - self.started_at


@dataclass
class SingleChange:
    """The pass that answers one task failure, at the size of the run."""

    pass_cpu_s: float  # `LeaderDuties.orchestration_pass`: scoped to what changed
    observe_cpu_s: float  # its share keeping the observation current
    full_pass_cpu_s: float  # a full pass on the same inputs: observe, held_back, plan
    full_plan_cpu_s: float  # its plan alone
    propose_cpu_s: float  # encode, apply and record the plan's one entry
    scope: str  # what the leader's pass looked at
    commands: int
    hot_spots: str  # of the leader's pass


@dataclass
class SimResult:
    config: SimConfig
    phases: dict[str, Phase]
    single_change: SingleChange | None
    killed: list[str]
    lost_tasks: list[str]  # on the killed nodes when they died
    moves: int  # rebalancing moves made after the return
    real_s: float
    sampled: tuple[str, ...] = ()  # the workers whose sessions were measured


# ------------------------------------------------------------------------------------ helpers


def node_id(i: int) -> str:
    return f"node{i:04d}"


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Drive a coroutine whose awaits all reach the simulation's synchronous `propose`, so it
    never suspends: the real async code (intake, duties) runs without an event loop."""
    try:
        coro.send(None)
    except StopIteration as done:
        return cast(T, done.value)
    coro.close()
    raise RuntimeError("the leader's code suspended: the simulation has no event loop")


def commands_in(command: Command) -> Iterable[Command]:
    if isinstance(command, Batch):
        for sub in command.commands:
            yield from commands_in(sub)
    else:
        yield command


class SimRaft:
    """What the intake and the reporters read of Raft: this process is the leader, always."""

    def __init__(self, leader_id: str) -> None:
        self.is_leader = True
        self.leader_id: str | None = leader_id
        self.applied = 0


class SimTransport:
    """The reporters only read the counters (the simulation carries their reports)."""

    def __init__(self) -> None:
        self.counters = Counters()


# ------------------------------------------------------------------------------------ nodes


class SimNode:
    """One host: its executor's view of its own tasks, and its `StatusReporter`."""

    def __init__(self, sim: Simulation, nid: str) -> None:
        self.sim = sim
        self.id = nid
        self.up = True
        self.generation = 0  # a host that died and came back is a new agent
        self.observations: dict[str, TaskObservation] = {}
        self.containers: set[str] = set()  # tasks whose container was started
        self.stopped: set[str] = set()
        self.busy: set[str] = set()  # a start in progress
        self.in_flight = False
        self.report_due = False
        self.reporter = self._new_reporter()

    def _new_reporter(self) -> StatusReporter:
        sim = self.sim
        return StatusReporter(
            node_id=self.id,
            raft=cast(Any, sim.raft),
            state=lambda: sim.state,
            observed=lambda: self.observations,
            port_errors=lambda: {},
            load=NodeLoad,
            propose=sim.propose,
            transport=cast(Any, SimTransport()),
            resolve=lambda _: None,
        )

    # ---------------------------------------------------------------------- the executor

    def look(self, task_ids: Iterable[str]) -> None:
        """`Executor._reconcile`'s rule, for the tasks an applied entry touched."""
        if not self.up:
            return
        state = self.sim.state
        for task_id in task_ids:
            task = state.tasks.get(task_id)
            if task is None or task.node_id != self.id:
                self.containers.discard(task_id)  # `Executor._forget`
                self.stopped.discard(task_id)
                self.observations.pop(task_id, None)
                continue
            if task_id in self.busy:
                continue
            obs = self.observations.get(task_id)
            observed = obs.state if obs is not None else TaskState.NEW
            wants_running = task.desired_state is TaskState.RUNNING and not task.state.terminal
            if wants_running and observed < TaskState.STARTING and task_id not in self.containers:
                self.busy.add(task_id)
                delay_s = self.sim.uniform(self.sim.config.accept_s)
                self.sim.after(delay_s, self._starting, self.generation, task_id)
            elif (
                (not wants_running or observed.terminal)
                and task_id in self.containers
                and task_id not in self.stopped
            ):
                # `Executor._stop`: leave the proxies first (SHUTDOWN), then stop the container.
                if observed <= TaskState.RUNNING:
                    self._observe(task_id, TaskState.SHUTDOWN, endpoints=())
                self.stopped.add(task_id)

    def _starting(self, generation: int, task_id: str) -> None:
        if generation != self.generation:
            return  # the host died meanwhile
        self._observe(task_id, TaskState.STARTING)
        delay_s = self.sim.uniform(self.sim.config.start_s)
        self.sim.after(delay_s, self._started, generation, task_id)

    def _started(self, generation: int, task_id: str) -> None:
        if generation != self.generation:
            return
        self.busy.discard(task_id)
        self.containers.add(task_id)
        container_id = f"{self.sim.rng.getrandbits(256):064x}"
        self._observe(task_id, TaskState.RUNNING, container_id=container_id)
        self.look((task_id,))  # the state may have changed its mind meanwhile

    def fail(self, task_id: str) -> None:
        """The container exits non-zero (what `Executor._on_event` records of a "die")."""
        state, error = exit_state(1)
        self._observe(task_id, state, error=error, exit_code=1)

    def _observe(self, task_id: str, state: TaskState, **changes: Any) -> None:
        """`Executor._observe` on the virtual clock: states only move forward; `since` is
        the time of the last state change."""
        old = self.observations.get(task_id)
        if old is not None and state < old.state:
            return
        base = old or TaskObservation(task_id=task_id, state=state)
        new = dataclasses.replace(base, state=state, **changes)
        if old is None or new.state != old.state:
            new = dataclasses.replace(new, since=self.sim.now)
        if new != old:
            self.observations[task_id] = new
            self.wake_reporter()

    # ---------------------------------------------------------------------- the reporter

    def wake_reporter(self) -> None:
        """`StatusReporter.run`: a change waits `BATCH_WINDOW_S` for those that come with it;
        one report in flight at a time."""
        if self.up and not self.in_flight and not self.report_due:
            self.report_due = True
            self.sim.after(BATCH_WINDOW_S, self._send, self.generation)

    def _send(self, generation: int) -> None:
        if generation != self.generation:
            return
        self.report_due = False
        report = self.reporter.pending(with_load=False)
        if report is None:
            return
        self.in_flight = True
        local = self.id == self.sim.leader_id
        data = wire.encode(report)
        if not local:  # the leader's own reporter proposes in its process
            self.sim.phase.reports += 1
            self.sim.phase.report_bytes += len(data)
        self.sim.after(0.0 if local else self.sim.config.net_s, self.sim.receive, self, data)

    def answered(self, generation: int) -> None:
        if generation == self.generation:
            self.in_flight = False
            self.wake_reporter()  # anything that changed meanwhile (cheap if nothing did)

    # ---------------------------------------------------------------------- the host

    def die(self) -> None:
        self.up = False
        self.generation += 1
        self.observations.clear()
        self.containers.clear()
        self.stopped.clear()
        self.busy.clear()
        self.in_flight = self.report_due = False

    def come_back(self, assigned: Iterable[str]) -> None:
        """A new agent on a host whose containers died with it: it starts what the state
        still assigns to it and wants running (`Executor.run`: adopt, then reconcile)."""
        self.up = True
        self.reporter = self._new_reporter()
        self.look(sorted(assigned))


# ------------------------------------------------------------------------------------ leader


class Simulation:
    """The cluster: the state, the nodes, the leader's host, the virtual clock."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.rng = random.Random(config.seed)
        self.ids = seeded_ids(random.Random(config.seed + 1))
        self.now = 0.0
        self._queue: list[tuple[float, int, Callable[..., None], tuple[Any, ...]]] = []
        self._order = itertools.count()
        self.phase = Phase("setup", 0.0)
        self.passes = 0

        self.state = ClusterState()
        self._setup_apply(InitCluster("sim", 0.0, b"worker-token", b"manager-token"))
        self.leader_id = node_id(0)
        self.metas: dict[str, NodeMeta] = {}
        for i in range(config.nodes):
            self._add_node(i)

        # The leader's side: gossip's verdicts, its Raft view, its intake and its duties.
        self.dead: set[str] = set()
        self.down_since: dict[str, float] = {}
        self.events = EventLog()
        self.raft = SimRaft(self.leader_id)
        self.intake = StatusIntake(
            raft=cast(Any, self.raft),
            state=lambda: self.state,
            propose=self.propose,
            counters=Counters(),
            clock=lambda: self.now,
        )
        self.duties = LeaderDuties(self, voter_grace_s=60.0)
        self.duties._ids = self.ids  # the run's seeded ids, so that a seed replays the run
        self.inbox: list[tuple[SimNode, int, bytes]] = []
        self.leader_free_at = 0.0
        self._leader_next: float | None = None
        self._step_commands: list[Command] = []
        self.last_commit_at = 0.0
        self.check_due = False
        # Sessions of a sample of workers, served from the leader's replica (its own rng: the
        # sample does not change the run).
        workers = [n for n in sorted(self.state.nodes) if n != self.leader_id]
        sample = random.Random(config.seed + 2).sample(
            workers, min(config.session_sample, len(workers))
        )
        self.views = {nid: ViewBuilder(nid) for nid in sample}
        for builder in self.views.values():
            builder.full(self.state)
        self.trace_change: str | None = None  # a task whose failure's pass is measured
        self.single_change: SingleChange | None = None
        self._measure_cpu = 0.0

        self.nodes = {nid: SimNode(self, nid) for nid in self.state.nodes}
        self.assigned: dict[str, set[str]] = {nid: set() for nid in self.nodes}
        self.task_node: dict[str, str] = {}

    # ---------------------------------------------------------------------- set-up

    def _setup_apply(self, command: Command) -> None:
        result = self.state.apply(command)
        if not result.ok:
            raise RuntimeError(f"set-up command refused: {result.error}")

    def _add_node(self, i: int) -> None:
        nid = node_id(i)
        host = f"10.{i // 62500}.{i // 250 % 250}.{i % 250 + 1}"
        role = Role.MANAGER if i == 0 else Role.WORKER
        self._setup_apply(
            AddNode(
                Node(
                    id=nid,
                    name=f"host{i:04d}",
                    addr=f"{host}:7946",
                    publish_addr=host,
                    role=role,
                    availability=(
                        Availability.DRAIN
                        if role is Role.MANAGER and self.config.drain_manager
                        else Availability.ACTIVE
                    ),
                    resources=self.config.node_resources,
                    sealed_manager_key=b"sealed" if role is Role.MANAGER else b"",
                )
            )
        )
        resources = self.config.node_resources
        self.metas[nid] = NodeMeta(
            name=f"host{i:04d}",
            role=str(role),
            addr=f"{host}:7946",
            publish_host=host,
            nano_cpus=resources.nano_cpus,
            memory_bytes=resources.memory_bytes,
        )

    # ---------------------------------------------------------------------- the clock

    def after(self, delay_s: float, action: Callable[..., None], *args: Any) -> None:
        heapq.heappush(self._queue, (self.now + delay_s, next(self._order), action, args))

    def at(self, when: float, action: Callable[..., None], *args: Any) -> None:
        self.after(max(0.0, when - self.now), action, *args)

    def uniform(self, bounds: tuple[float, float]) -> float:
        return self.rng.uniform(*bounds)

    def run_until(self, done: Callable[[], bool], max_s: float) -> bool:
        """Advance the clock until `done()` holds after a leader step (it reads the committed
        state, which only a leader step changes), or `max_s` of virtual time has passed."""
        deadline = self.now + max_s
        while self._queue:
            if self._queue[0][0] > deadline:
                break
            when, _, action, args = heapq.heappop(self._queue)
            self.now = when
            action(*args)
            if self.check_due:
                self.check_due = False
                if done():
                    return True
        self.now = max(self.now, deadline) if self._queue else self.now
        return False

    # ---------------------------------------------------------------------- ObservationSource

    @property
    def node_id(self) -> str:
        return self.leader_id

    def member_state(self, nid: str) -> MemberState | None:
        return MemberState.DEAD if nid in self.dead else MemberState.ALIVE

    def node_meta(self, nid: str) -> NodeMeta | None:
        return self.metas.get(nid)

    def local_observations(self) -> tuple[TaskObservation, ...]:
        return tuple(self.nodes[self.leader_id].observations.values())

    # ---------------------------------------------------------------------- DutiesHost

    @property
    def is_leader(self) -> bool:
        return True

    @property
    def lead_term(self) -> int:
        return 1 if self.is_leader else 0  # one leader, one term

    @property
    def raft_conf(self) -> ConfState:
        return ConfState(voters=(self.leader_id,))

    @property
    def peer_protocols(self) -> dict[str, int]:
        return {}  # the simulation's one voter proposes no membership change

    def node_load(self, nid: str) -> NodeLoad | None:
        return None

    async def propose(self, command: Command) -> ApplyResult:
        """One Raft entry: encoded as the log would hold it, applied as it commits."""
        data = wire.encode(command)
        self.phase.entries += 1
        self.phase.entry_bytes += len(data)
        result = self.state.apply(command)
        self.raft.applied += 1
        self._step_commands.append(command)
        return result

    async def propose_conf_change(self, change: ConfChange) -> None:
        raise NotImplementedError("the simulation has one fixed voter")

    async def run_with_state_still(self, plan_pass: Callable[[], Plan]) -> Plan:
        return plan_pass()  # nothing applies meanwhile: the simulation's commits are its own steps

    def node_name(self, nid: str) -> str:
        node = self.state.nodes.get(nid)
        return node.name if node is not None else nid

    # ---------------------------------------------------------------------- the leader

    def receive(self, node: SimNode, data: bytes) -> None:
        self.inbox.append((node, node.generation, data))
        self.wake_leader()

    def wake_leader(self, when: float | None = None) -> None:
        when = max(self.now if when is None else when, self.leader_free_at)
        if self._leader_next is not None and self._leader_next <= when:
            return
        self._leader_next = when
        self.at(when, self._leader_step, when)

    def _leader_step(self, token: float) -> None:
        if token != self._leader_next:
            return  # superseded by an earlier wake
        self._leader_next = None
        cpu_started = time.process_time()
        replies: list[tuple[SimNode, int]] = []
        inbox, self.inbox = self.inbox, []
        for node, generation, data in inbox:
            report = wire.decode(data, expect=(StatusReport,))
            self.phase.statuses += len(report.statuses)
            if node.id == self.leader_id:  # `StatusReporter._send` on the leader
                run_sync(self.propose(ReportTasks(node.id, report.statuses, report.port_errors)))
            else:
                run_sync(self.intake.answer(self._peer(node.id), report))
            replies.append((node, generation))
        traced = self._traced_failure_committed()
        # The duties' planner and observation as they are before the pass (measurement only:
        # the hot spots of that pass are taken on these copies).
        snapshot_started = time.process_time()
        snapshot = None
        if traced is not None:
            snapshot = (self.duties._planner.copy(), self.duties._observations.copy())
            # The copies are large young containers: left young, the pass measured next would
            # pay the garbage collector for walking them.
            gc.collect(1)
        snapshot_cpu = time.process_time() - snapshot_started

        pass_started = time.process_time()
        result = self.duties.orchestration_pass(self.now)
        pass_cpu = time.process_time() - pass_started
        observe_cpu = self.duties.last_observe_cpu_s
        extra = self._remeasure(snapshot) if snapshot is not None else None
        propose_started = time.process_time()
        if result.commands:
            run_sync(self.duties._propose(result.commands))
        propose_cpu = time.process_time() - propose_started
        cpu = time.process_time() - cpu_started
        if extra is not None:
            full_pass_cpu, full_plan_cpu, hot_spots = extra
            scope = self.duties._planner.last_scope
            self.single_change = SingleChange(
                pass_cpu_s=pass_cpu,
                observe_cpu_s=observe_cpu,
                full_pass_cpu_s=full_pass_cpu,
                full_plan_cpu_s=full_plan_cpu,
                propose_cpu_s=propose_cpu,
                scope=(
                    "full"
                    if scope is None
                    else f"{len(scope.services)} service(s), {len(scope.nodes)} node(s)"
                ),
                commands=len(result.commands),
                hot_spots=hot_spots,
            )
            cpu -= self._measure_cpu + snapshot_cpu  # not the leader's work: measurement only
        self.passes += 1
        self.phase.pass_cpu_s.append(pass_cpu)
        self.phase.leader_cpu_s += cpu

        committed, self._step_commands = self._step_commands, []
        done_at = self.now + (cpu if self.config.charge_cpu else 0.0)
        if committed:
            self._serve_sessions()
            self.phase.appends += 1  # everything proposed in this step: one group commit
            done_at += self.config.commit_s
            self.at(done_at, self._deliver, committed)
        self.leader_free_at = done_at
        self.last_commit_at = done_at
        for node, generation in replies:
            self.at(done_at + self.config.net_s, node.answered, generation)
        self.check_due = True
        if result.commands:
            self.wake_leader(done_at)  # look again at once: the commands may enable more work
        else:  # `LeaderDuties._orchestration_loop`: wait for a change, a timer, or 5 s
            delay = IDLE_PASS_S if result.wakeup_at is None else result.wakeup_at - self.now
            self.wake_leader(done_at + min(max(0.0, delay), IDLE_PASS_S))

    def _serve_sessions(self) -> None:
        """What the sampled workers' sessions send for this step's entries (counted with the
        entries, in the phase that proposed them; the manager's CPU for it is not the leader's
        in the figures: it is outside the measured step)."""
        for builder in self.views.values():
            changes = builder.changes(self.state)
            assert changes is not None, "the journal forgot: raise its bound"
            if changes:
                for update in updates(
                    changes, index=0, leader_id=self.leader_id, in_raft=False, reset=False
                ):
                    self.phase.view_bytes += len(wire.encode(update))

    def _peer(self, nid: str) -> PeerIdentity:
        node = self.state.nodes[nid]
        return PeerIdentity(nid, str(node.role), node.cert_generation, float("inf"), "sim", b"")

    def _deliver(self, committed: list[Command]) -> None:
        """The entries reach every node's replica: each executor looks at its tasks."""
        touched: dict[str, set[str]] = {}
        for command in committed:
            for sub in commands_in(command):
                if isinstance(sub, PutTasks):
                    for task in sub.tasks:
                        if task.node_id:
                            self.task_node[task.id] = task.node_id
                            self.assigned[task.node_id].add(task.id)
                            touched.setdefault(task.node_id, set()).add(task.id)
                elif isinstance(sub, RemoveTasks):
                    for task_id in sub.task_ids:
                        nid = self.task_node.pop(task_id, "")
                        if nid:
                            self.assigned[nid].discard(task_id)
                            touched.setdefault(nid, set()).add(task_id)
        for nid, task_ids in sorted(touched.items()):
            self.nodes[nid].look(sorted(task_ids))

    # ---------------------------------------------------------------------- one change

    def _traced_failure_committed(self) -> str | None:
        if self.trace_change is None:
            return None
        status = self.state.task_status.get(self.trace_change)
        if status is None or status.state is not TaskState.FAILED:
            return None
        task_id, self.trace_change = self.trace_change, None
        return task_id

    def _remeasure(
        self, snapshot: tuple[IncrementalPlanner, ObservationCache]
    ) -> tuple[float, float, str]:
        """On the inputs of the pass that answered the traced failure: a full pass (`observe`,
        `held_back`, `plan` with no scope and no kept tallies, as every pass was before #16) and
        its `plan` alone; and the hot spots of the leader's scoped pass, profiled again on the
        `snapshot` of the duties' planner and observation taken before it. None of it is the
        leader's work (`_measure_cpu` says how much to take off), and its ids come from
        counters, so the run is not disturbed."""
        started = time.process_time()
        observed = observe(self)
        plan_started = time.process_time()
        plan(self.state, observed, self.now, counter_ids("p-"))
        full_plan_cpu = time.process_time() - plan_started
        full_started = time.process_time()
        observed = observe(self)
        plan(
            without(self.state, held_back(self.state, observed)),
            observed,
            self.now,
            counter_ids("f-"),
        )
        full_pass_cpu = time.process_time() - full_started
        hot_spots = ""
        if self.config.profile_top:
            duties = self.duties
            saved = duties._planner, duties._observations, duties._ids
            duties._planner, duties._observations = snapshot
            duties._ids = counter_ids("q-")
            profiler = cProfile.Profile()
            profiler.enable()
            duties.orchestration_pass(self.now)
            profiler.disable()
            duties._planner, duties._observations, duties._ids = saved
            duties.passes -= 1
            out = io.StringIO()
            stats = pstats.Stats(profiler, stream=out)
            stats.sort_stats("tottime").print_stats(self.config.profile_top)
            stats.sort_stats("cumulative").print_stats("swarmlet", self.config.profile_top)
            hot_spots = out.getvalue().replace(str(Path(swarmlet.__file__).parent.parent) + "/", "")
        self._measure_cpu = time.process_time() - started
        return full_pass_cpu, full_plan_cpu, hot_spots

    # ---------------------------------------------------------------------- checks

    def wanted(self) -> int:
        return sum(s.spec.replicas for s in self.state.services.values())

    def _live(self, nid: str) -> bool:
        return nid not in self.dead and self.nodes[nid].up

    def placed(self) -> bool:
        """Every wanted task is assigned to a live node (committed)."""
        count = sum(
            1
            for t in self.state.tasks.values()
            if t.desired_state is TaskState.RUNNING
            and TaskState.ASSIGNED <= t.state <= TaskState.RUNNING
            and self._live(t.node_id)
        )
        return count == self.wanted()

    def running(self) -> Counter[tuple[str, str]]:
        """(service, node) -> tasks desired running that their live node reported running."""
        counts: Counter[tuple[str, str]] = Counter()
        for task in self.state.tasks.values():
            if task.desired_state is not TaskState.RUNNING or not self._live(task.node_id):
                continue
            status = self.state.task_status.get(task.id)
            if status is not None and status.state is TaskState.RUNNING:
                counts[(task.service_id, task.node_id)] += 1
        return counts

    def all_running(self) -> bool:
        per_service: Counter[str] = Counter()
        for (service_id, _), n in self.running().items():
            per_service[service_id] += n
        return all(per_service[s.id] == s.spec.replicas for s in self.state.services.values())

    def balanced(self) -> bool:
        """Every task running, each service spread within 1 over the live nodes, and no
        replaced task still running (the last move's handover finished)."""
        if not self.all_running():
            return False
        for task in self.state.tasks.values():
            if task.desired_state > TaskState.RUNNING and not task.state.terminal:
                status = self.state.task_status.get(task.id)
                if status is not None and status.state is TaskState.RUNNING:
                    return False
        counts = self.running()
        live = [nid for nid in sorted(self.nodes) if self._live(nid)]
        for service_id in self.state.services:
            per_node = [counts[(service_id, nid)] for nid in live]
            if max(per_node) - min(per_node) > 1:
                return False
        return True

    # ---------------------------------------------------------------------- phases

    def begin(self, name: str) -> Phase:
        self.phase = Phase(name, self.now)
        return self.phase

    def end(self, converged: bool) -> Phase:
        """A converged phase ends with the commit that made it so; one that was cut, now."""
        phase = self.phase
        phase.converged = converged
        phase.ended_at = self.last_commit_at if converged else self.now
        self.now = max(self.now, phase.ended_at)
        return phase

    def deploy(self) -> Phase:
        phase = self.begin("deploy")
        config = self.config
        base, extra = divmod(config.tasks, config.services)
        for s in range(config.services):
            name = f"svc{s:03d}"
            ports = (PortConfig(30_000 + s, 80),) if s < config.published_services else ()
            spec = ServiceSpec(
                name=name,
                image="busybox:sim",
                replicas=base + (1 if s < extra else 0),
                reservations=config.reservations,
                ports=ports,
            )
            service = Service(id=name, spec=spec, created_at=self.now, updated_at=self.now)
            run_sync(self.propose(CreateService(service)))
        self._step_commands.clear()  # the user's `service create`s: no task assigned yet
        phase.appends += config.services
        self.wake_leader()
        return self._converge(phase, self.all_running, config.phase_max_s)

    def _converge(self, phase: Phase, done: Callable[[], bool], max_s: float) -> Phase:
        def check() -> bool:
            if phase.placed_at is None and self.placed():
                phase.placed_at = self.last_commit_at
            return done()

        return self.end(self.run_until(check, max_s))

    def single_failure(self) -> Phase:
        """One running task on a worker fails: its replacement's pass is measured."""
        phase = self.begin("single change")
        running = sorted(
            task_id
            for (task_id, nid) in self.task_node.items()
            if nid != self.leader_id
            and (obs := self.nodes[nid].observations.get(task_id)) is not None
            and obs.state is TaskState.RUNNING
        )
        task_id = self.rng.choice(running)
        self.trace_change = task_id
        self.nodes[self.task_node[task_id]].fail(task_id)

        def replaced() -> bool:
            return self.single_change is not None and self.all_running()

        return self._converge(phase, replaced, self.config.phase_max_s)

    def idle(self) -> Phase:
        """Nothing happens: what the leader's loop costs at rest."""
        phase = self.begin("idle")
        self.run_until(lambda: False, self.config.idle_s)
        self.end(False)
        phase.converged = True  # nothing to converge to: the phase is its length
        return phase

    def kill(self) -> tuple[Phase, list[str], list[str]]:
        phase = self.begin("kill")
        count = max(1, round(self.config.nodes * self.config.kill_fraction))
        workers = sorted(nid for nid in self.nodes if nid != self.leader_id)
        victims = sorted(self.rng.sample(workers, min(count, len(workers))))
        lost = sorted(t for nid in victims for t in self.assigned[nid])
        for nid in victims:
            self.nodes[nid].die()
        self.after(self.config.detect_s, self._declare_dead, victims)
        return self._converge(phase, self.all_running, self.config.phase_max_s), victims, lost

    def _declare_dead(self, victims: list[str]) -> None:
        self.dead.update(victims)
        for nid in victims:
            self.down_since[nid] = self.now
        self.wake_leader()

    def bring_back(self, victims: list[str]) -> Phase:
        phase = self.begin("return")
        for nid in victims:
            self.nodes[nid].come_back(self.assigned[nid])
        self.after(self.config.rejoin_s, self._declare_alive, victims)
        return self._converge(phase, self.balanced, self.config.rebalance_max_s)

    def _declare_alive(self, victims: list[str]) -> None:
        self.dead.difference_update(victims)
        for nid in victims:
            self.down_since.pop(nid, None)
        self.wake_leader()

    def moves(self, since: float) -> int:
        return sum(
            1
            for t in self.state.tasks.values()
            if t.message.startswith(REBALANCE_MESSAGE) and t.created_at >= since
        )


def run_scenario(
    config: SimConfig, progress: Callable[[Phase, float], None] | None = None
) -> tuple[SimResult, Simulation]:
    """The scenario; `progress(phase, real seconds so far)` after each phase."""
    started = time.perf_counter()

    def done(phase: Phase) -> Phase:
        if progress is not None:
            progress(phase, time.perf_counter() - started)
        return phase

    sim = Simulation(config)
    phases = {"deploy": done(sim.deploy())}
    phases["idle"] = done(sim.idle())
    phases["single change"] = done(sim.single_failure())
    kill, killed, lost = sim.kill()
    phases["kill"] = done(kill)
    phases["return"] = done(sim.bring_back(killed))
    result = SimResult(
        config,
        phases,
        sim.single_change,
        killed,
        lost,
        sim.moves(phases["return"].started_at),
        time.perf_counter() - started,
        tuple(sim.views),
    )
    return result, sim


# ------------------------------------------------------------------------------------ output


def _rate(n: float, s: float) -> str:
    return f"{n / s:,.1f}" if s > 0 else "-"


def _phase_lines(phase: Phase, nodes: int, sampled: int) -> list[str]:
    passes = phase.pass_cpu_s
    cpu_per_s = phase.leader_cpu_s / phase.virtual_s if phase.virtual_s > 0 else 0.0
    mean_pass = statistics.fmean(passes) if passes else 0.0
    outcome = "converged" if phase.converged else "NOT converged (cap reached)"
    lines = [
        f"[{phase.name}] virtual {phase.virtual_s:.2f} s, "
        f"{'quiet' if phase.name == 'idle' else outcome}"
        + (
            f", everything placed after {phase.placed_at - phase.started_at:.2f} s"
            if phase.placed_at is not None and phase.name in ("deploy", "kill")
            else ""
        ),
        f"  leader CPU {phase.leader_cpu_s:.2f} s = {cpu_per_s:.3f} CPU-s per virtual s; "
        f"{len(passes)} passes, CPU per pass mean {mean_pass * 1e3:.1f} ms, "
        f"max {max(passes, default=0.0) * 1e3:.1f} ms",
        f"  Raft: {phase.entries} entries in {phase.appends} appends = "
        f"{_rate(phase.entries, phase.virtual_s)} entries/s, "
        f"{_rate(phase.appends, phase.virtual_s)} appends/s; "
        f"{phase.entry_bytes / 1e6:.2f} MB of entries",
        f"  reports: {phase.reports} ({phase.statuses} statuses), "
        f"{phase.report_bytes / 1e6:.2f} MB; bytes per node per s: up (reports) "
        f"{_rate(phase.report_bytes / nodes, phase.virtual_s)}, "
        f"down (a worker's session, mean of {sampled} sampled) "
        f"{_rate(phase.view_bytes / max(1, sampled), phase.virtual_s)}, "
        f"(the whole log, as a Raft learner got it) {_rate(phase.entry_bytes, phase.virtual_s)}",
    ]
    return lines


def report(result: SimResult) -> str:
    config = result.config
    deploy = result.phases["deploy"]
    kill = result.phases["kill"]
    lines = [
        f"control loop simulation: {config.nodes} nodes, {config.tasks} tasks over "
        f"{config.services} services, seed {config.seed}, "
        f"leader CPU {'charged to' if config.charge_cpu else 'not charged to'} virtual time",
        f"anchors: {SWARM2K}; Nomad C1M {NOMAD_C1M_PLACEMENTS_PER_S:,.0f} placements/s; "
        f"classic Swarm p99 scheduling {CLASSIC_SWARM_P99_S * 1e3:.0f} ms at 1,000 nodes",
    ]
    for phase in result.phases.values():
        lines += _phase_lines(phase, config.nodes, len(result.sampled))
    if deploy.placed_at is not None:
        placed_s = deploy.placed_at - deploy.started_at
        lines.append(
            f"deploy: {config.tasks} tasks placed in {placed_s:.2f} virtual s = "
            f"{_rate(config.tasks, placed_s)} placements/s "
            f"(Nomad C1M: {NOMAD_C1M_PLACEMENTS_PER_S:,.0f}/s); all running after "
            f"{deploy.virtual_s:.2f} s"
        )
    lines.append(
        f"kill: {len(result.killed)} nodes ({len(result.lost_tasks)} tasks) died; "
        + (
            f"replacements placed {kill.placed_at - kill.started_at:.2f} s after the kill "
            f"({kill.placed_at - kill.started_at - config.detect_s:.2f} s after gossip's "
            f"verdict at {config.detect_s:.1f} s; classic Swarm p99 scheduling "
            f"{CLASSIC_SWARM_P99_S * 1e3:.0f} ms), "
            if kill.placed_at is not None
            else ""
        )
        + f"all running again after {kill.virtual_s:.2f} s"
    )
    back = result.phases["return"]
    lines.append(
        f"return: {result.moves} rebalancing moves in {back.virtual_s:.2f} virtual s "
        f"({'balanced' if back.converged else 'not balanced yet: capped'})"
    )
    change = result.single_change
    if change is not None:
        verdict = "meets" if change.pass_cpu_s <= GOAL_PASS_CPU_S else "misses"
        lines += [
            f"single change (one task fails): orchestration pass {change.pass_cpu_s * 1e3:.1f} "
            f"ms CPU (scope: {change.scope}; observe {change.observe_cpu_s * 1e3:.1f} + plan "
            f"etc.), goal {GOAL_PASS_CPU_S * 1e3:.0f} ms at 1,000 nodes / 100,000 tasks: "
            f"{verdict} it",
            f"  same inputs, full pass: {change.full_pass_cpu_s * 1e3:.1f} ms (its plan alone "
            f"{change.full_plan_cpu_s * 1e3:.1f} ms); proposing the "
            f"{change.commands} command(s) {change.propose_cpu_s * 1e3:.1f} ms",
        ]
        if change.hot_spots:
            lines += ["  hot spots of the scoped pass (cProfile, by own time):", change.hot_spots]
    total_cpu = sum(p.leader_cpu_s for p in result.phases.values())
    total_s = sum(p.virtual_s for p in result.phases.values())
    lines.append(
        f"whole run: {total_s:.1f} virtual s, leader CPU {total_cpu:.1f} s "
        f"({total_cpu / total_s if total_s else 0.0:.3f} per virtual s), "
        f"real {result.real_s:.1f} s"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=SimConfig.nodes)
    parser.add_argument("--tasks", type=int, default=SimConfig.tasks)
    parser.add_argument("--services", type=int, default=SimConfig.services)
    parser.add_argument("--seed", type=int, default=SimConfig.seed)
    parser.add_argument(
        "--rebalance-max-s",
        type=float,
        default=SimConfig.rebalance_max_s,
        help="virtual seconds the return phase may take before it is cut",
    )
    parser.add_argument(
        "--no-charge-cpu",
        action="store_true",
        help="leader steps take no virtual time (a pure function of the seed)",
    )
    args = parser.parse_args(argv)
    config = SimConfig(
        nodes=args.nodes,
        tasks=args.tasks,
        services=args.services,
        seed=args.seed,
        rebalance_max_s=args.rebalance_max_s,
        charge_cpu=not args.no_charge_cpu,
    )

    def progress(phase: Phase, real_s: float) -> None:
        print(f"({phase.name} done after {real_s:.0f} s of real time)", file=sys.stderr, flush=True)

    result, _ = run_scenario(config, progress)
    print(report(result))


if __name__ == "__main__":
    main()
