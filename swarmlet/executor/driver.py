"""The task executor: drives this node's containers towards the tasks the replicated state
assigns to it, and reports what it observes.

Inputs: the replicated state (which tasks are ours, and their desired state) and the Docker
events stream (a container died, became healthy or unhealthy). Output: one `TaskObservation` per
task, reported to the leader and committed (`node.status_reports`), from which the leader
decides (restart, replace) and every node's proxy learns the endpoints.

Invariants:
  * we only ever touch containers labelled with our cluster id AND our node id;
  * a task's observed state only moves forward;
  * at most one container per task: on restart, running containers of tasks still assigned to
    us are adopted, not started again, and every other container of ours is removed;
  * a stopping task leaves the proxies (its observation turns SHUTDOWN) before its container
    gets the stop signal, and the container then has `stop_grace_period_s` to finish.

What a task's container looks like, and what its exit means for the task, is decided by the pure
functions of `executor.task_container`; this module does the I/O and keeps the bookkeeping.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING

import trio

from swarmlet import timers
from swarmlet.errors import RuntimeAdapterError, SecretsUnavailableError
from swarmlet.executor import secretfiles
from swarmlet.executor.labels import LABEL_CLUSTER, LABEL_NODE, LABEL_TASK
from swarmlet.executor.networks import LocalNetworks
from swarmlet.executor.registry_auth import credential_for
from swarmlet.executor.runtime_types import (
    DOCKER_OPERATIONS,
    ContainerEvent,
    DockerError,
    operation_kind,
)
from swarmlet.executor.task_container import (
    container_spec,
    exit_state,
    start_error,
    task_endpoints,
)
from swarmlet.state.model import Service, ServiceSpec, Task, TaskState
from swarmlet.state.observed import MAX_EXPOSED_PORTS, TaskLoad, TaskObservation

if TYPE_CHECKING:
    from swarmlet.executor.docker_runtime import DockerRuntime
    from swarmlet.state.machine import ClusterState

log = logging.getLogger(__name__)


# How often running replicas of autoscaled services are measured (each stats sample waits for the
# engine to measure a CPU delta; they run in parallel); the figures go to the leader with the
# node's status reports (`loads`), not in the observations, which are committed.
STATS_INTERVAL_S = 5.0

# Between two attempts to make the state current while none succeeds (each waits seconds for a
# manager or a leader; the pause only keeps one that fails at once from spinning).
SYNC_RETRY_S = 1.0

# How long a stopped task's endpoint stays out of the proxies before its container is signalled,
# so that every proxy has dropped it: the status report's batch window, its commit, and the
# append that brings the commit to every replica.
ENDPOINT_DRAIN_S = 0.3

# Why a start failed (`Executor.start_failures`), a closed set: the Docker operation that failed,
# or the task's secrets and configs (not delivered, or missing), or writing their files.
START_FAILURE_REASONS = (*DOCKER_OPERATIONS, "other", "secrets", "files", "runtime")
# Why a started task failed (`Executor.task_failures`).
TASK_FAILURE_REASONS = ("exit_code", "unhealthy")


def start_failure_reason(exc: Exception) -> str:
    """The member of `START_FAILURE_REASONS` for a start that raised `exc`."""
    if isinstance(exc, DockerError):
        return operation_kind(exc.operation)
    if isinstance(exc, SecretsUnavailableError | KeyError):
        return "secrets"
    if isinstance(exc, OSError):
        return "files"
    return "runtime"


class Executor:
    def __init__(
        self,
        runtime: DockerRuntime,
        *,
        cluster_id: str,
        node_id: str,
        host_ip: str,
        state: Callable[[], ClusterState],
        publish_ip: str = "",  # where `mode=host` ports are published ("": `host_ip`)
        sync: Callable[[], Awaitable[bool]],
        publish: Callable[[], None],  # `observations` changed
        record_event: Callable[[str, str, str, str], object],
        networks: LocalNetworks,
        # The content of a task's secrets and configs, (name, is_config) -> bytes (see
        # `secretdelivery`); raises SecretsUnavailableError, which rejects the task.
        task_files: Callable[[Task], Awaitable[Mapping[tuple[str, bool], bytes]]],
        max_parallel_starts: int = 8,
    ) -> None:
        self.runtime = runtime
        self.cluster_id = cluster_id
        self.node_id = node_id
        self.host_ip = host_ip
        self.publish_ip = publish_ip
        self._state = state
        self._sync = sync
        # Until the local state is known to be current (a ReadIndex barrier succeeded), a
        # container whose task we do not know may belong to a task we have not heard of yet: it
        # is kept, never removed.
        self.synced = False
        self._publish = publish
        self._record = record_event
        self._task_files = task_files
        self.networks = networks
        # Running containers on service networks: task id -> (hosts file, the service lines
        # last written to it; None: unknown, e.g. adopted after a restart).
        self._hosts: dict[str, tuple[str, dict[str, str] | None]] = {}
        self.observations: dict[str, TaskObservation] = {}
        self.loads: dict[str, TaskLoad] = {}  # task id -> its last measured use
        self._containers: dict[str, str] = {}  # task id -> container id
        self._busy: set[str] = set()  # task ids with a start or stop in progress
        self._stopping: set[str] = set()
        self._stopped: set[str] = set()  # tasks whose container was stopped on purpose
        self._changes = timers.StateFollower()  # the state, or what this node runs, moved
        self._start_limiter = trio.CapacityLimiter(max_parallel_starts)
        self._nursery: trio.Nursery | None = None
        # Read by `node.metrics` at scrape time: starts attempted, those that failed by
        # `start_failure_reason`, and started tasks that failed, by `TASK_FAILURE_REASONS`.
        self.task_starts = 0
        self.start_failures: collections.Counter[str] = collections.Counter()
        self.task_failures: collections.Counter[str] = collections.Counter()

    @property
    def labels(self) -> dict[str, str]:
        return {LABEL_CLUSTER: self.cluster_id, LABEL_NODE: self.node_id}

    def container_of(self, task_id: str) -> str | None:
        return self._containers.get(task_id)

    def notify(self) -> None:
        """The replicated state changed: look again."""
        self._changes.notify()

    # ------------------------------------------------------------------------ observations

    def _observe(self, task_id: str, state: TaskState, **changes: object) -> None:
        old = self.observations.get(task_id)
        if old is not None and state < old.state:
            return  # states only move forward; a late event about an older state is moot
        base = old or TaskObservation(task_id=task_id, state=state)
        new = dataclasses.replace(base, state=state, **changes)  # type: ignore[arg-type]
        if old is None or new.state != old.state:
            new = dataclasses.replace(new, since=time.time())
        if new.state is not TaskState.RUNNING:
            self.loads.pop(task_id, None)
        if new != old:
            self.observations[task_id] = new
            self._publish()

    def _count_failure(self, task_id: str, reason: str) -> None:
        """Once per task: a later event about a task that has already ended is not news."""
        old = self.observations.get(task_id)
        if old is None or not old.state.terminal:
            self.task_failures[reason] += 1

    # ------------------------------------------------------------------------ run

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            # Subscribe before listing, so nothing that happens in between is missed.
            async with self.runtime.events(self.labels) as events:
                self.synced = await self._sync()
                await self.networks.load()
                await self._adopt()
                nursery.start_soon(self._watch, events)
                nursery.start_soon(self._measure)
                if not self.synced:
                    nursery.start_soon(self._until_synced)
                task_status.started()
                while True:
                    await self._reconcile()
                    # A periodic look repairs anything missed (on the beat: `swarmlet.timers`).
                    await self._changes.wait(timers.next_beat(5.0))

    async def _until_synced(self) -> None:
        """Try again to make the state current until it is, beside the reconcile loop: each
        attempt waits seconds for a manager or a leader, and meanwhile the tasks the state
        assigns here start and stop as it says; only removing a container whose task this node
        has not heard of waits (`_reconcile`)."""
        while not self.synced:
            await trio.sleep(SYNC_RETRY_S)  # an attempt that fails at once does not spin
            self.synced = await self._sync()
        self._changes.notify()  # now it may remove what it cannot place

    async def _adopt(self) -> None:
        state = self._state()
        for info in await self.runtime.list(self.labels):
            task_id = info.labels.get(LABEL_TASK, "")
            task = state.tasks.get(task_id)
            mine = task is not None and task.node_id == self.node_id
            if task is None and not self.synced:
                self._containers[task_id] = info.id  # decided once the state is current
                continue
            if mine and task is not None and info.state == "running" and not task.state.terminal:
                self._containers[task_id] = info.id
                service = state.services.get(task.service_id)
                if service is not None and service.spec.networks and info.hosts_path:
                    self._hosts[task_id] = (info.hosts_path, None)
                healthy = None if info.health is None else info.health == "healthy"
                running = info.health in (None, "healthy")
                self._observe(
                    task_id,
                    TaskState.RUNNING if running else TaskState.STARTING,
                    container_id=info.id,
                    endpoints=task_endpoints(info, self.host_ip),
                    healthy=healthy,
                )
                log.info("adopted container %s of task %s", info.id[:12], task_id)
            elif mine and task is not None and info.state != "running":
                self._containers[task_id] = info.id  # kept for logs until the task is reaped
                self._stopped.add(task_id)
                state_, error = exit_state(info.exit_code)
                self._observe(task_id, state_, container_id=info.id, error=error)
            else:
                log.info("removing container %s: its task is not ours any more", info.id[:12])
                with contextlib.suppress(RuntimeAdapterError):
                    await self.runtime.remove(info.id, force=True)
        # Secret files of tasks that ended while the agent was away, or mid-start, go.
        live = self._containers.keys() - self._stopped
        for task_id in secretfiles.task_ids(self.node_id) - live:
            secretfiles.remove(self.node_id, task_id)

    async def _measure(self) -> None:
        """CPU and memory of the running replicas of autoscaled services, for the leader."""
        while True:
            await trio.sleep_until(timers.next_beat(STATS_INTERVAL_S))
            state = self._state()
            wanted = [
                (task_id, container_id)
                for task_id, container_id in self._containers.items()
                if (task := state.tasks.get(task_id)) is not None
                and (service := state.services.get(task.service_id)) is not None
                and service.spec.autoscale is not None
                and (obs := self.observations.get(task_id)) is not None
                and obs.state is TaskState.RUNNING
            ]

            async def one(task_id: str, container_id: str) -> None:
                with contextlib.suppress(RuntimeAdapterError):
                    stats = await self.runtime.stats(container_id)
                    obs = self.observations.get(task_id)
                    if obs is not None and obs.state is TaskState.RUNNING:
                        self.loads[task_id] = TaskLoad(
                            task_id, round(stats.cpu_percent, 1), stats.memory_bytes
                        )

            async with trio.open_nursery() as nursery:
                for task_id, container_id in wanted:
                    nursery.start_soon(one, task_id, container_id)

    async def _watch(self, events: object) -> None:
        async for event in events:  # type: ignore[attr-defined]
            self._on_event(event)

    def _on_event(self, event: ContainerEvent) -> None:
        task_id = event.labels.get(LABEL_TASK, "")
        if not task_id or self._containers.get(task_id) not in (None, event.container_id):
            return
        health = event.health_status
        if event.action == "die":
            if task_id in self._stopping:
                self._observe(task_id, TaskState.SHUTDOWN, exit_code=event.exit_code)
            else:
                state, error = exit_state(event.exit_code)
                if state is TaskState.FAILED:
                    self._count_failure(task_id, "exit_code")
                self._observe(task_id, state, error=error, exit_code=event.exit_code)
                self._record("task", str(state), task_id, error or "task completed")
        elif health == "healthy":
            self._observe(task_id, TaskState.RUNNING, healthy=True)
        elif health == "unhealthy":
            self._count_failure(task_id, "unhealthy")
            self._observe(
                task_id, TaskState.FAILED, healthy=False, error="task: unhealthy container"
            )
            self._record("task", "unhealthy", task_id, "health check failed: replacing the task")
            self._changes.notify()  # stop it
        self._changes.notify()

    # ------------------------------------------------------------------------ reconcile

    async def _reconcile(self) -> None:
        assert self._nursery is not None
        state = self._state()
        for task in state.tasks.on_node(self.node_id).values():  # no await in this loop
            if task.id in self._busy:
                continue
            obs = self.observations.get(task.id)
            observed = obs.state if obs is not None else TaskState.NEW
            wants_running = task.desired_state is TaskState.RUNNING and not task.state.terminal
            if wants_running and observed < TaskState.STARTING and task.id not in self._containers:
                service = state.services.get(task.service_id)
                if service is not None:
                    self._busy.add(task.id)
                    self._nursery.start_soon(self._start, service, task)
            elif (
                (not wants_running or observed.terminal)
                and task.id in self._containers
                and task.id not in self._stopped
            ):
                # Also for a container that already died: stopping it is then a no-op.
                self._busy.add(task.id)
                self._nursery.start_soon(self._stop, task, observed)
        # Containers of tasks that left the state (reaped, or reassigned) go away.
        for task_id in list(self._containers):
            current = state.tasks.get(task_id)
            gone = current is None and self.synced
            reassigned = current is not None and current.node_id != self.node_id
            if (gone or reassigned) and task_id not in self._busy:
                self._busy.add(task_id)
                self._nursery.start_soon(self._forget, task_id)
        try:
            await self.networks.sync(state)
        except RuntimeAdapterError as exc:  # Docker hiccup: the next pass tries again
            log.warning("networks: %s", exc)
        await self._refresh_hosts(state)

    def _service_hosts(self, state: ClusterState, spec: ServiceSpec) -> dict[str, str]:
        """The service names a container of `spec` resolves (name -> VIP); the user's own
        extra_hosts win and are left to Docker."""
        own = {h.split(":", 1)[0] for h in spec.extra_hosts}
        hosts = self.networks.hosts_for(state, spec)
        return {name: vip for name, vip in hosts.items() if name not in own}

    async def _refresh_hosts(self, state: ClusterState) -> None:
        """Services that joined or left a container's networks since it started: rewrite its
        service names (`LocalNetworks.refresh_hosts`)."""
        for task_id, (path, written) in list(self._hosts.items()):
            task = state.tasks.get(task_id)
            service = state.services.get(task.service_id) if task is not None else None
            if service is None:
                continue
            wanted = self._service_hosts(state, service.spec)
            if wanted == written:
                continue
            try:
                await self.networks.refresh_hosts(path, service.spec, wanted)
            except OSError as exc:  # the container went meanwhile, or a remote engine
                log.debug("hosts of task %s not rewritten: %s", task_id, exc)
                continue
            self._hosts[task_id] = (path, wanted)

    async def _start(self, service: Service, task: Task) -> None:
        try:
            async with self._start_limiter:
                self.task_starts += 1
                self._observe(task.id, TaskState.STARTING)
                try:
                    refs = [(r, False) for r in service.spec.secrets]
                    refs += [(r, True) for r in service.spec.configs]
                    # The registry credential (`--with-registry-auth`) comes with the secrets.
                    delivered = (
                        await self._task_files(task) if refs or service.registry_auth else {}
                    )
                    files = (
                        secretfiles.materialize(self.node_id, task.id, refs, delivered)
                        if refs
                        else []
                    )
                    credential = credential_for(delivered, service.spec.image)
                    if credential is None:  # (the tests' fake runtimes take no credential)
                        await self.runtime.ensure_image(service.spec.image)
                    else:
                        await self.runtime.ensure_image(service.spec.image, credential)
                    networks: tuple[str, ...] = ()
                    exposed: tuple[tuple[int, str], ...] = ()
                    if service.spec.networks:
                        networks = await self.networks.ensure(service.spec)
                        exposed = await self.runtime.exposed_ports(service.spec.image)
                        if len(exposed) > MAX_EXPOSED_PORTS:  # `container_spec` cuts them
                            log.warning(
                                "image %s exposes %d ports: the first %d are published",
                                service.spec.image[:200],
                                len(exposed),
                                MAX_EXPOSED_PORTS,
                            )
                    service_hosts = self._service_hosts(self._state(), service.spec)
                    spec = container_spec(
                        service,
                        task,
                        cluster_id=self.cluster_id,
                        node_id=self.node_id,
                        host_ip=self.host_ip,
                        files=files,
                        networks=networks,
                        service_hosts=service_hosts,
                        exposed=exposed,
                        publish_ip=self.publish_ip,
                    )
                    info = await self.runtime.run(spec)
                except (RuntimeAdapterError, SecretsUnavailableError, KeyError, OSError) as exc:
                    error = start_error(exc)
                    self.start_failures[start_failure_reason(exc)] += 1
                    self._observe(task.id, TaskState.REJECTED, error=error)
                    self._record("task", "rejected", task.id, error)
                    return
                self._containers[task.id] = info.id
                if networks and info.hosts_path:
                    self._hosts[task.id] = (info.hosts_path, service_hosts)
                has_health = spec.healthcheck is not None and not spec.healthcheck.is_disabled
                if info.state != "running":
                    state, error = exit_state(info.exit_code)
                    if state is TaskState.FAILED:
                        self._count_failure(task.id, "exit_code")
                    self._observe(task.id, state, container_id=info.id, error=error)
                    return
                self._observe(
                    task.id,
                    TaskState.STARTING if has_health else TaskState.RUNNING,
                    container_id=info.id,
                    endpoints=task_endpoints(info, self.host_ip),
                    healthy=False if has_health else None,
                )
        finally:
            if task.id not in self._containers:  # failed or cancelled: no secret stays behind
                secretfiles.remove(self.node_id, task.id)
            self._busy.discard(task.id)
            self._changes.notify()

    async def _stop(self, task: Task, observed: TaskState) -> None:
        container_id = self._containers[task.id]
        # The grace period as the decision to stop found it: by the time the stop runs (after
        # the drain, behind other stops) the service may have left this node's state (a worker's
        # view drops a service once none of its tasks here is left in the state).
        service = self._state().services.get(task.service_id)
        grace = service.spec.stop_grace_period_s if service is not None else 10.0
        try:
            self._stopping.add(task.id)
            if observed <= TaskState.RUNNING:
                # Leave the proxies first (SHUTDOWN carries no endpoints), then stop.
                self._observe(task.id, TaskState.SHUTDOWN, endpoints=())
                await trio.sleep(ENDPOINT_DRAIN_S)
            with contextlib.suppress(RuntimeAdapterError):
                await self.runtime.stop(container_id, grace)
        finally:
            secretfiles.remove(self.node_id, task.id)  # the task has ended: its secrets go
            self._stopped.add(task.id)
            self._stopping.discard(task.id)
            self._busy.discard(task.id)
            self._changes.notify()

    async def _forget(self, task_id: str) -> None:
        try:
            container_id = self._containers.pop(task_id, None)
            self._hosts.pop(task_id, None)
            self._stopped.discard(task_id)
            if container_id is not None:
                with contextlib.suppress(RuntimeAdapterError):
                    await self.runtime.remove(container_id, force=True)
            secretfiles.remove(self.node_id, task_id)
            self.loads.pop(task_id, None)
            if self.observations.pop(task_id, None) is not None:
                self._publish()
        finally:
            self._busy.discard(task_id)
