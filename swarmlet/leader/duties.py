"""The leader's duties: keep the Raft voter set right, orchestrate the services, autoscale them.

Only the leader runs them (it alone decides); on every other node the loops idle. Each compares
the desired state (Raft) with the observed state (`leader.observation`) and proposes the
difference as commands, computed by pure functions: `voters.next_conf_change`,
`orchestrator.core.plan` (scoped to what changed by `orchestrator.incremental`, after
`depends_on.held_back`) and `autoscaler.decide`.

The duties see the node they run on only through `DutiesHost`: what they read of the cluster and
of the nodes' load, how they propose, and where they record events. They must not know how the
node is put together; a proposal that fails (leadership lost, refused) is deferred, never fatal.

A duty waits for the fate of each of its writes, however long it takes, before it looks again:
Raft does not take back an entry whose proposer stopped waiting, and a plan re-made while the
previous one may still commit places its tasks twice (they were, after a 10 s timeout, when
a leader's followers were slow). The driver answers every proposal: applied, or lost with the
lead (which check-quorum gives up within an election timeout of losing its majority).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
import logging
import random
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Protocol

import trio

from swarmlet import timers
from swarmlet.errors import ProposalTooLargeError, SwarmletError
from swarmlet.leader.autoscaler import AutoscaleConfig, AutoscalerState, Sample, decide
from swarmlet.leader.depends_on import held_back
from swarmlet.leader.observation import (
    LiveInputs,
    ObservationCache,
    ObservationSource,
    live_inputs,
    observe,
    ready_node_ids,
)
from swarmlet.leader.orchestrator.context import Observed, seeded_ids
from swarmlet.leader.orchestrator.core import Plan
from swarmlet.leader.orchestrator.incremental import IncrementalPlanner
from swarmlet.leader.voters import next_conf_change
from swarmlet.raft.types import ConfChange, ConfState
from swarmlet.state.commands import (
    Batch,
    Command,
    PutTasks,
    RemoveTasks,
    UpdateService,
    records_in,
)
from swarmlet.state.machine import ApplyResult
from swarmlet.state.model import Service, TaskState
from swarmlet.state.observed import NodeLoad

log = logging.getLogger(__name__)

AUTOSCALE_INTERVAL_S = 5.0  # one load sample per autoscaled service per interval
# A plan goes to Raft in entries of at most this many tasks. As one entry, a plan over the
# driver's limit (16 MiB: a scale to ~300,000 replicas, a spec change that re-stamps as many
# tasks) was refused, deferred and planned again forever, and every other service waited with
# it. 2,000 tasks are about 115 kB as the orchestrator writes them, and 30-40 ms of every
# member's event loop to apply: entries of 10,000 took 130-250 ms each, back to back while a
# 100,000-task service was created, and the followers' loops fell behind the 0.4-0.8 s election
# timeout (`bench.big_service`: an election a run at 10,000, none in four at 2,000). swarmkit's
# store.Batch splits its transactions the same way. A plan in parts is not applied atomically:
# each part is a state the orchestrator plans on from (as after a leader's crash mid-plan).
TASKS_PER_ENTRY = 2_000
SLOW_WRITE_S = 10.0  # a duty's write that took longer is logged: what an operator looks for


def entry_tasks(commands: tuple[Command, ...]) -> int:
    """The size of an entry as `plan_entries` counts it: its tasks, 1 per other command (a plan
    holds no `Batch`, `Once` or `ReportTasks`, which `records_in` counts by what they hold)."""
    return sum(records_in(c) for c in commands)


def _pieces(command: Command, most: int) -> list[Command]:
    """`command`, a PutTasks or RemoveTasks of more than `most` tasks cut into parts."""
    if isinstance(command, PutTasks) and len(command.tasks) > most:
        tasks = command.tasks
        return [PutTasks(tasks[i : i + most]) for i in range(0, len(tasks), most)]
    if isinstance(command, RemoveTasks) and len(command.task_ids) > most:
        ids = command.task_ids
        return [RemoveTasks(ids[i : i + most]) for i in range(0, len(ids), most)]
    return [command]


def plan_entries(commands: tuple[Command, ...], tasks_per_entry: int) -> list[tuple[Command, ...]]:
    """`commands` in order, as entries of at most `tasks_per_entry` tasks each (pure)."""
    entries: list[tuple[Command, ...]] = []
    entry: list[Command] = []
    held = 0  # tasks in `entry`
    for piece in (p for c in commands for p in _pieces(c, tasks_per_entry)):
        size = records_in(piece)
        if entry and held + size > tasks_per_entry:
            entries.append(tuple(entry))
            entry, held = [], 0
        entry.append(piece)
        held += size
    if entry:
        entries.append(tuple(entry))
    return entries


class EventRecorder(Protocol):
    def record(self, type_: str, action: str, subject: str, message: str) -> object: ...


class DutiesHost(ObservationSource, Protocol):
    """What the leader's duties need of the node they run on."""

    @property
    def is_leader(self) -> bool:
        """Whether this node leads the Raft group now, with a state that holds everything
        committed before it was elected (`RaftDriver.leader_caught_up`)."""
        ...

    @property
    def lead_term(self) -> int:
        """The Raft term in which this node leads (`is_leader`); 0 while it does not."""
        ...

    @property
    def raft_conf(self) -> ConfState:
        """The Raft group's current voters and learners."""
        ...

    @property
    def events(self) -> EventRecorder: ...

    @property
    def peer_protocols(self) -> Mapping[str, int]:
        """Node id -> the protocol of the last stream with it (what the voter policy knows of
        each node's release)."""
        ...

    def node_load(self, node_id: str) -> NodeLoad | None:
        """What `node_id` last measured (`state.observed.NodeLoad`): this node's own now,
        another's as its last status report brought it to this leader; None if none did."""
        ...

    async def propose(self, command: Command) -> ApplyResult:
        """Commit `command` on this node, the leader; NotLeaderError if it is not (any more)."""
        ...

    async def run_with_state_still(self, plan_pass: Callable[[], Plan]) -> Plan:
        """`plan_pass()`, which reads `state` and nothing the event loop changes, with the state
        held still meanwhile. An agent runs it in a thread with its Raft applies held: a full
        pass at 100,000 tasks is about two seconds of CPU, and on the event loop it stopped the
        leader's heartbeats for that long (an election at a 0.4-0.8 s timeout, and another at
        the next leader's pass). A simulation calls it inline."""
        ...

    async def propose_conf_change(self, change: ConfChange) -> None: ...

    def node_name(self, node_id: str) -> str: ...


class LeaderDuties:
    def __init__(self, host: DutiesHost, *, voter_grace_s: float) -> None:
        """`voter_grace_s`: how long a voter may be down before a standby replaces it."""
        self.host = host
        self.voter_grace_s = voter_grace_s
        self._changes = timers.StateFollower()  # the orchestration loop's: what it reads moved
        # What a node that does not lead waits on in each loop, rather than a timer (issue #20:
        # their polling was a third of an idle follower's or worker's timer wake-ups): `notify`
        # sets and replaces it once the node leads, and the node notifies at every change of
        # its Raft role. Not before: a follower is notified of every applied batch of writes,
        # and waking its three loops at each cost writes through it a tenth of their CPU.
        self._nudged = trio.Event()
        self._ids = seeded_ids(random.Random())
        self.autoscale_config = AutoscaleConfig()
        self._autoscalers: dict[str, AutoscalerState] = {}
        # service -> (time, each node's count of its proxy's connections to it)
        self._connections: dict[str, tuple[float, dict[str, int]]] = {}
        # Orchestration passes scoped to what changed (`orchestrator.incremental`), from an
        # observation kept current (`observation.ObservationCache`).
        self._planner = IncrementalPlanner()
        self._observations = ObservationCache()
        # Plain counters for the metrics module: passes run, and the CPU (this thread's) they
        # took in total; `last_observe_cpu_s` is the observation's share of the last one.
        self.passes = 0
        # Replica changes the autoscaler committed, by direction.
        self.autoscale_decisions: collections.Counter[str] = collections.Counter()
        self.pass_cpu_s = 0.0
        self.last_observe_cpu_s = 0.0

    def notify(self) -> None:
        self._changes.notify()
        if self.host.is_leader:
            self._nudged.set()
            self._nudged = trio.Event()

    async def _until_leading(self) -> None:
        while not self.host.is_leader:
            await self._nudged.wait()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._membership_loop)
            nursery.start_soon(self._orchestration_loop)
            nursery.start_soon(self._autoscale_loop)
            task_status.started()

    async def _wait(self, timeout_s: float) -> None:
        await self._changes.wait(trio.current_time() + timeout_s)

    async def _membership_loop(self) -> None:
        host = self.host
        while True:
            await self._until_leading()
            change = next_conf_change(
                host.raft_conf,
                host.state.nodes,
                ready_node_ids(host),
                host.down_since,
                time.monotonic(),
                leader_id=host.node_id,
                target_voters=host.state.target_voters,
                grace_s=self.voter_grace_s,
                protocols=host.peer_protocols,
                once_applied=host.state.once_applied,
            )
            if change is None:
                # Polled, not woken: a voter's grace period runs out without any event.
                await trio.sleep(0.5)
                continue
            pause = 0.1  # before the next change, if there is one
            try:
                with _logged_if_slow("a membership change"):
                    await host.propose_conf_change(change)
                name = host.node_name(change.node_id)
                kind = change.kind.name.lower().replace("_", "-")
                host.events.record("raft", kind, name, f"raft membership: {kind} {name}")
            except SwarmletError as exc:
                log.info("membership change %s deferred: %s", change, exc)
                pause = 0.6
            await trio.sleep(pause)

    async def _orchestration_loop(self) -> None:
        while True:
            await self._until_leading()
            now = time.time()
            live = live_inputs(self.host)  # on the event loop, which changes them
            term = self.host.lead_term
            result = await self.host.run_with_state_still(functools.partial(self._pass, live, now))
            if self.host.lead_term != term:
                # The lead was lost during the pass (and maybe won again): the plan was made
                # from a state that another leader's writes may have moved on from (placing
                # again what it placed). Planned anew from the state as it is now.
                self._planner.deferred()
                continue
            if result.commands:
                try:
                    with _logged_if_slow("an orchestration plan"):
                        await self._propose(result.commands)
                except SwarmletError as exc:
                    self._planner.deferred()
                    log.info("orchestration deferred: %s", exc)
                    await self._wait(0.5)
                continue  # look again at once: the commands may enable more work
            delay = 5.0 if result.wakeup_at is None else max(0.0, result.wakeup_at - now)
            await self._wait(min(delay, 5.0))

    def orchestration_pass(self, now: float) -> Plan:
        """Observe, hold back what `depends_on` holds, and plan what changed since the last
        pass (`IncrementalPlanner`; a full pass now and then), all on the caller's thread (the
        simulations'; the loop runs `_pass` through `DutiesHost.run_with_state_still`). Propose
        the commands, and call `_planner.deferred()` if they are not committed."""
        return self._pass(live_inputs(self.host), now)

    def _pass(self, live: LiveInputs, now: float) -> Plan:
        """Reads the state, and of the rest only `live`: it may run off the event loop. After
        a mass change (100,000 tasks created), refreshing the observation alone is 0.2-0.3 s."""
        started = time.thread_time()
        host = self.host
        observed = self._observations.refresh(host, live)
        self.last_observe_cpu_s = time.thread_time() - started
        result = self._planner.plan(
            host.state,
            observed,
            now,
            self._ids,
            held=held_back(host.state, observed),
            changed_tasks=self._observations.changed_tasks,
        )
        self.passes += 1
        self.pass_cpu_s += time.thread_time() - started
        return result

    async def _propose(self, commands: tuple[Command, ...]) -> None:
        """A plan in entries of at most TASKS_PER_ENTRY tasks, in order (`plan_entries`); an
        entry the state refuses goes again one command at a time, so that a refused command
        holds back only its own service. Deferred if anything was refused."""
        refused = 0
        for entry in plan_entries(commands, TASKS_PER_ENTRY):
            refused += await self._propose_entry(entry, TASKS_PER_ENTRY)
        if refused:
            self._planner.deferred()  # what was refused is looked at again
            await self._wait(1.0)

    async def _propose_entry(self, commands: tuple[Command, ...], tasks_per_entry: int) -> int:
        """Commit `commands` as one entry (one fsync); how many of them the state refused. Over
        the entry limit (tasks that carry long messages), in halves."""
        batch = Batch(commands) if len(commands) > 1 else commands[0]
        try:
            applied = await self.host.propose(batch)
        except ProposalTooLargeError as exc:
            tasks = entry_tasks(commands)
            if tasks <= 1:
                log.error("orchestrator command refused: %s", exc)
                return 1
            half = min(tasks_per_entry, tasks) // 2
            refused = 0
            for part in plan_entries(commands, half):
                refused += await self._propose_entry(part, half)
            return refused
        if applied.ok:
            self._record(commands)
            return 0
        if len(commands) == 1:
            log.error("orchestrator command refused: %s", applied.error)
            return 1
        refused = 0
        for command in commands:
            one = await self.host.propose(command)
            if one.ok:
                self._record((command,))
            else:
                refused += 1
                log.error("orchestrator command refused: %s", one.error)
        return refused

    # ------------------------------------------------------------------------ autoscaling

    def _sample(self, service: Service, observed: Observed, now: float) -> Sample:
        """One service's load now: per-replica CPU (of its limit if it has one, else of a core)
        and memory means over its running replicas, and its request rate through every proxy."""
        spec = service.spec
        up = [
            obs
            for task in self.host.state.tasks_of(service.id)
            if task.desired_state is TaskState.RUNNING
            and (obs := observed.tasks.get(task.id)) is not None
            and obs.state is TaskState.RUNNING
        ]
        loads = {n: self.host.node_load(n) for n in self.host.state.nodes}
        running = {obs.task_id for obs in up}
        measured = [
            t
            for load in loads.values()
            if load is not None
            for t in load.tasks
            if t.task_id in running and t.memory_bytes > 0
        ]
        cpu = memory = None
        if measured:
            cores = spec.limits.nano_cpus / 1e9 if spec.limits.nano_cpus else 1.0
            cpu = sum(t.cpu_percent for t in measured) / len(measured) / cores
            memory = sum(t.memory_bytes for t in measured) / len(measured)
        rps = None
        if any(p.mode == "ingress" for p in spec.ports) or spec.networks:
            counts = {
                node_id: load.proxy_connections.get(spec.name, 0)
                for node_id, load in loads.items()
                if load is not None
            }
            previous = self._connections.get(service.id)
            self._connections[service.id] = (now, counts)
            if previous is not None:
                rps = request_rate(previous, (now, counts))
        return Sample(
            at_s=now,
            replicas=len(up),
            cpu_percent=cpu,
            memory_bytes=memory,
            requests_per_s=rps,
            spec_replicas=spec.replicas,
        )

    async def _autoscale_loop(self) -> None:
        host = self.host
        while True:
            if not host.is_leader:
                self._autoscalers.clear()  # a new leader gathers its own evidence
                await self._until_leading()
            await trio.sleep(AUTOSCALE_INTERVAL_S)
            if not host.is_leader:
                continue
            now = time.time()
            services = list(host.state.services.values())
            if not any(s.spec.autoscale is not None for s in services):
                self._autoscalers.clear()
                continue  # no need to observe every task (0.3 s at 100,000 tasks, #16)
            observed = observe(host)
            for service in services:
                policy = service.spec.autoscale
                if policy is None:
                    self._autoscalers.pop(service.id, None)
                    continue
                state = self._autoscalers.get(service.id) or AutoscalerState(
                    service.spec.name, last_change_at_s=service.updated_at
                )
                decision, self._autoscalers[service.id] = decide(
                    policy, self.autoscale_config, state, self._sample(service, observed, now), now
                )
                if decision is None:
                    continue
                spec = dataclasses.replace(service.spec, replicas=decision.to_replicas)
                try:
                    with _logged_if_slow("an autoscaling decision"):
                        result = await host.propose(UpdateService(service.id, spec, now))
                except SwarmletError as exc:
                    log.info("autoscaling %s deferred: %s", service.spec.name, exc)
                    continue
                if result.ok:
                    host.events.record("autoscale", "scaled", service.spec.name, decision.reason)
                    up = decision.to_replicas > service.spec.replicas
                    self.autoscale_decisions["up" if up else "down"] += 1

    def _record(self, commands: tuple[object, ...]) -> None:
        state = self.host.state
        for command in commands:
            if isinstance(command, UpdateService):
                self.host.events.record(
                    "service", "rollback", command.spec.name, f"rolled back {command.spec.name}"
                )
            elif isinstance(command, PutTasks):
                for task in command.tasks:
                    service = state.services.get(task.service_id)
                    name = (
                        f"{service.spec.name}.{task.slot or task.node_id[:8]}"
                        if service
                        else task.id
                    )
                    where = self.host.node_name(task.node_id) if task.node_id else "-"
                    self.host.events.record(
                        "task",
                        f"{task.desired_state}/{task.state}",
                        name,
                        f"task {task.id[:10]} on {where}: desired {task.desired_state}, "
                        f"state {task.state}{': ' + task.message if task.message else ''}",
                    )
            elif isinstance(command, RemoveTasks):
                continue


@contextlib.contextmanager
def _logged_if_slow(what: str) -> Iterator[None]:
    started = trio.current_time()
    yield
    took = trio.current_time() - started
    if took > SLOW_WRITE_S:
        log.warning("%s took %.1f s to commit", what, took)


def request_rate(
    previous: tuple[float, Mapping[str, int]], now: tuple[float, Mapping[str, int]]
) -> float | None:
    """Connections a second through every proxy between two samples of each node's count: each
    node's own increase, none below zero. A node's count restarts at zero with its agent, and a
    node may lie: as a difference of totals, one node's count going down (restarted, or told
    so) took away what the others had counted, and a worker could hold any service at its
    minimum under real load. (A node can still claim traffic its proxy did not carry.)"""
    (then, before), (at, counts) = previous, now
    if at <= then:
        return None
    grown = sum(max(0, n - before.get(node_id, n)) for node_id, n in counts.items())
    return grown / (at - then)
