"""The leader's duties: keep the Raft voter set right, and orchestrate the services.

Only the leader runs them (it alone decides); every other agent's loops idle. Both compare the
desired state (Raft) with the observed state (gossip) and propose the difference as commands,
computed by pure functions: `membership.next_conf_change` and `orchestrator.reconcile`.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import time
from typing import TYPE_CHECKING

import trio

from swarmlet.errors import SwarmletError
from swarmlet.leader.autoscaler import AutoscaleConfig, AutoscalerState, Sample, decide
from swarmlet.leader.orchestrator.context import Observed, seeded_ids
from swarmlet.leader.orchestrator.core import plan
from swarmlet.leader.scheduler import ObservedNode
from swarmlet.leader.voters import next_conf_change
from swarmlet.state.machine import (
    Batch,
    ClusterState,
    Command,
    PutTasks,
    RemoveTasks,
    UpdateService,
)
from swarmlet.state.model import Resources, Service, TaskState
from swarmlet.state.observed import TaskObservation

if TYPE_CHECKING:
    from swarmlet.node.agent import Agent

log = logging.getLogger(__name__)

AUTOSCALE_INTERVAL_S = 5.0  # one load sample per autoscaled service per interval


def observe(agent: Agent) -> Observed:
    """The observed state as gossip (and, for this node, the executor) reports it now."""
    nodes: dict[str, ObservedNode] = {}
    tasks: dict[str, TaskObservation] = {}
    for node_id in agent.state.nodes:
        if node_id != agent.node_id and agent.gossip.core.member(node_id) is None:
            # Not heard of yet (e.g. just after a failover): no verdict, so the orchestrator
            # neither places new tasks there nor writes its tasks off.
            continue
        meta = agent.node_meta(node_id)
        ready = agent.is_ready(node_id)
        total = Resources(meta.nano_cpus, meta.memory_bytes) if meta is not None else None
        nodes[node_id] = ObservedNode(
            node_id=node_id,
            ready=ready,
            total=total,
            changed_at=agent.down_since.get(node_id, 0.0),
        )
        if meta is not None and node_id != agent.node_id:
            for obs in meta.tasks:
                tasks[obs.task_id] = obs
    for obs in agent.local_observations():
        tasks[obs.task_id] = obs
    return Observed(nodes=nodes, tasks=tasks)


def hold_back_dependents(state: ClusterState, observed: Observed) -> ClusterState:
    """The state to orchestrate, without the services whose first start must wait.

    Beyond Swarm (which ignores `depends_on` in stacks): a service that has never had a task is
    held back until every service it depends on has a replica running. Only the first start is
    ordered; afterwards each service lives on its own, as compose's `depends_on` does.
    """

    def up(service_name: str) -> bool:
        dep = state.service_by_name(service_name)
        if dep is None:
            return True  # removed meanwhile: nothing to wait for
        return any(
            (obs := observed.tasks.get(t.id)) is not None and obs.state is TaskState.RUNNING
            for t in state.tasks_of(dep.id)
        )

    held = [
        s.id
        for s in state.services.values()
        if s.spec.depends_on
        and not state.tasks_of(s.id)
        and not all(up(name) for name in s.spec.depends_on)
    ]
    if not held:
        return state
    trimmed = state.copy()
    for service_id in held:
        del trimmed.services[service_id]
    return trimmed


class LeaderDuties:
    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.wake = trio.Event()
        self._ids = seeded_ids(random.Random())
        self.autoscale_config = AutoscaleConfig()
        self._autoscalers: dict[str, AutoscalerState] = {}
        self._connections: dict[str, tuple[float, int]] = {}  # service -> (time, total count)

    def notify(self) -> None:
        self.wake.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._membership_loop)
            nursery.start_soon(self._orchestration_loop)
            nursery.start_soon(self._autoscale_loop)
            task_status.started()

    async def _wait(self, timeout_s: float) -> None:
        with trio.move_on_after(timeout_s):
            await self.wake.wait()
        self.wake = trio.Event()

    async def _membership_loop(self) -> None:
        agent = self.agent
        while True:
            await trio.sleep(0.1)
            if not agent.raft.is_leader:
                await trio.sleep(0.4)
                continue
            change = next_conf_change(
                agent.raft.core.conf,
                agent.state.nodes,
                agent.alive_ids(),
                agent.down_since,
                time.monotonic(),
                leader_id=agent.node_id,
                target_voters=agent.state.target_voters,
                grace_s=agent.config.voter_grace_s,
            )
            if change is None:
                await trio.sleep(0.4)
                continue
            try:
                with trio.fail_after(agent.config.write_timeout_s):
                    await agent.raft.propose_conf_change(change)
                name = agent.node_name(change.node_id)
                kind = change.kind.name.lower().replace("_", "-")
                agent.events.record("raft", kind, name, f"raft membership: {kind} {name}")
            except (SwarmletError, trio.TooSlowError) as exc:
                log.info("membership change %s deferred: %s", change, exc)
                await trio.sleep(0.5)

    async def _orchestration_loop(self) -> None:
        agent = self.agent
        while True:
            if not agent.raft.is_leader:
                await self._wait(1.0)
                continue
            now = time.time()
            observed = observe(agent)
            result = plan(hold_back_dependents(agent.state, observed), observed, now, self._ids)
            if result.commands:
                try:
                    with trio.fail_after(agent.config.write_timeout_s):
                        await self._propose(result.commands)
                except (SwarmletError, trio.TooSlowError) as exc:
                    log.info("orchestration deferred: %s", exc)
                    await self._wait(0.5)
                continue  # look again at once: the commands may enable more work
            delay = 5.0 if result.wakeup_at is None else max(0.0, result.wakeup_at - now)
            await self._wait(min(delay, 5.0))

    async def _propose(self, commands: tuple[Command, ...]) -> None:
        """All of a plan as one entry (one fsync); if the state refuses it, one by one, so that
        a refused command holds back only its own service."""
        batch = Batch(commands) if len(commands) > 1 else commands[0]
        applied = await self.agent.raft.propose(batch)
        if applied.ok:
            self._record(commands)
            return
        if len(commands) == 1:
            log.error("orchestrator command refused: %s", applied.error)
            await self._wait(1.0)
            return
        refused = 0
        for command in commands:
            one = await self.agent.raft.propose(command)
            if one.ok:
                self._record((command,))
            else:
                refused += 1
                log.error("orchestrator command refused: %s", one.error)
        if refused:
            await self._wait(1.0)

    # ------------------------------------------------------------------------ autoscaling

    def _sample(self, service: Service, observed: Observed, now: float) -> Sample:
        """One service's load now: per-replica CPU (of its limit if it has one, else of a core)
        and memory means over its running replicas, and its request rate through every proxy."""
        spec = service.spec
        up = [
            obs
            for task in self.agent.state.tasks_of(service.id)
            if task.desired_state is TaskState.RUNNING
            and (obs := observed.tasks.get(task.id)) is not None
            and obs.state is TaskState.RUNNING
        ]
        measured = [o for o in up if o.memory_bytes > 0]
        cpu = memory = None
        if measured:
            cores = spec.limits.nano_cpus / 1e9 if spec.limits.nano_cpus else 1.0
            cpu = sum(o.cpu_percent for o in measured) / len(measured) / cores
            memory = sum(o.memory_bytes for o in measured) / len(measured)
        rps = None
        if any(p.mode == "ingress" for p in spec.ports) or spec.networks:
            total = 0
            for node_id in self.agent.state.nodes:
                if node_id == self.agent.node_id:
                    counts = self.agent.proxy.connection_counts()
                else:
                    meta = self.agent.node_meta(node_id)
                    counts = dict(meta.proxy_connections) if meta is not None else {}
                total += counts.get(spec.name, 0)
            previous = self._connections.get(service.id)
            self._connections[service.id] = (now, total)
            if previous is not None and now > previous[0]:
                rps = max(0.0, (total - previous[1]) / (now - previous[0]))
        return Sample(
            at_s=now,
            replicas=len(up),
            cpu_percent=cpu,
            memory_bytes=memory,
            requests_per_s=rps,
            spec_replicas=spec.replicas,
        )

    async def _autoscale_loop(self) -> None:
        agent = self.agent
        while True:
            await trio.sleep(AUTOSCALE_INTERVAL_S)
            if not agent.raft.is_leader:
                self._autoscalers.clear()  # a new leader gathers its own evidence
                continue
            now = time.time()
            observed = observe(agent)
            for service in list(agent.state.services.values()):
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
                    with trio.fail_after(agent.config.write_timeout_s):
                        result = await agent.raft.propose(UpdateService(service.id, spec, now))
                except (SwarmletError, trio.TooSlowError) as exc:
                    log.info("autoscaling %s deferred: %s", service.spec.name, exc)
                    continue
                if result.ok:
                    agent.events.record("autoscale", "scaled", service.spec.name, decision.reason)

    def _record(self, commands: tuple[object, ...]) -> None:
        state = self.agent.state
        for command in commands:
            if isinstance(command, UpdateService):
                self.agent.events.record(
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
                    where = self.agent.node_name(task.node_id) if task.node_id else "-"
                    self.agent.events.record(
                        "task",
                        f"{task.desired_state}/{task.state}",
                        name,
                        f"task {task.id[:10]} on {where}: desired {task.desired_state}, "
                        f"state {task.state}{': ' + task.message if task.message else ''}",
                    )
            elif isinstance(command, RemoveTasks):
                continue
