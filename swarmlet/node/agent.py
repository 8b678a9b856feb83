"""The composition root: one agent, every component started in one nursery.

    transport (UDP + TCP, sealed)  ->  gossip driver (membership, observed state)
                                   ->  raft driver (replicated desired state)
    control API (Unix socket)      ->  `swarmlet.api.nodes*` handlers
    leader duties (`leader`)       ->  voter policy, orchestration, autoscaling (pure cores)
    executor (`executor`)          ->  this node's containers, through `runtime` (Docker)
    keys (`keyring`)               ->  node key pair; the managers' key, following the role
    secrets (`secretdelivery`)     ->  a task's secrets: from this node's state or a manager
    proxy (`proxy`)                ->  the routing mesh, fed from the observed state

This module wires things together and carries the cross-cutting paths that need several
components at once: forwarding writes to the leader, the join handshake, liveness as seen by
gossip. Protocol rules live in the cores, not here.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import trio

from swarmlet import crypto
from swarmlet.errors import (
    NoLeaderError,
    NotLeaderError,
    RemoteProtocolError,
    RuntimeAdapterError,
    StorageCorruptError,
    SwarmletError,
    UsageError,
)
from swarmlet.executor.driver import Executor
from swarmlet.executor.hostinfo import HostInfo, host_info, read_host_info
from swarmlet.executor.networks import LocalNetworks
from swarmlet.executor.runtime import open_docker_runtime
from swarmlet.gossip.config import GossipConfig
from swarmlet.gossip.core import EventKind as MemberEventKind
from swarmlet.gossip.core import MemberEvent
from swarmlet.gossip.driver import GossipDriver
from swarmlet.gossip.messages import MemberState, PushPullState
from swarmlet.leader.duties import LeaderDuties, observe
from swarmlet.node.events import EventLog
from swarmlet.proxy.mesh import Proxy, Route, routes_from
from swarmlet.proxy.workers import default_worker_count
from swarmlet.raft.core import RaftConfig
from swarmlet.raft.driver import RaftDriver, RaftStreamHello
from swarmlet.raft.messages import Role as RaftRole
from swarmlet.raft.messages import SoftState
from swarmlet.raft.storage import RaftStorage
from swarmlet.raft.types import ConfState, HardState, Snapshot, SnapshotMeta
from swarmlet.security import propose_auth as proposeauth
from swarmlet.security.datadir import DataDir, Identity
from swarmlet.security.join import check_possession
from swarmlet.security.keyring import KeyRing
from swarmlet.security.secret_delivery import SecretDelivery
from swarmlet.state.machine import (
    COMMANDS,
    AddNode,
    ApplyResult,
    ClusterState,
    Command,
    InitCluster,
)
from swarmlet.state.model import Node, Resources, Role
from swarmlet.state.observed import NodeMeta, TaskObservation, decode_meta, encode_meta
from swarmlet.wire import codec as wire
from swarmlet.wire.peer_rpc import (
    JoinReply,
    JoinRequest,
    ProposeReply,
    ProposeRequest,
    SecretsRequest,
)
from swarmlet.wire.transport import (
    JOIN_ACCEPTED,
    JOIN_REFUSED,
    Address,
    FramedStream,
    Transport,
    join_stream,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AgentConfig:
    gossip: GossipConfig = field(default_factory=GossipConfig.lan)
    # Raft runs on ticks of `raft_tick_interval_s`. Election timeout: election_ticks..2x ticks,
    # i.e. 0.4-0.8 s: a dead leader is replaced in ~0.6 s + one election round trip, the 1 s
    # failover goal with margin for Python's scheduling jitter. Heartbeats every 2 ticks (100 ms,
    # etcd's default): 4-8 per election timeout, and half the idle traffic of one per tick.
    raft: RaftConfig = field(
        default_factory=lambda: RaftConfig(election_ticks=8, heartbeat_ticks=2)
    )
    raft_tick_interval_s: float = 0.05
    # A voter down this long is replaced by a healthy standby manager (beyond Swarm).
    voter_grace_s: float = 30.0
    # How long a write waits for a leader (an election, a partition healing) before failing.
    write_timeout_s: float = 10.0
    # How often the agent refreshes its load figures in its gossip metadata.
    meta_refresh_s: float = 2.0
    leave_timeout_s: float = 2.0
    # Extra processes serving the routing mesh's ports beside the agent (0: the agent alone).
    proxy_workers: int = field(default_factory=default_worker_count)


def parse_addr(text: str) -> Address:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise UsageError(f"invalid address {text!r}: expected HOST:PORT")
    return host, int(port)


def bootstrap_storage(
    storage: RaftStorage, identity: Identity, keys: crypto.ClusterKeys, datadir: DataDir
) -> None:
    """Seed a brand-new cluster: a snapshot at index 1 that already holds the cluster and its
    first node, with that node as the only voter. Atomic: either it is on disk or nothing is.
    The join tokens are sealed with the managers' key `init` wrote, and the first node's record
    carries that key sealed to itself, as every manager's does (`swarmlet.security.keyring`)."""
    master = datadir.read_manager_key()
    if master is None:
        raise StorageCorruptError(
            f"{datadir.manager_key_file} is missing: remove the data dir and run `swarmlet init`"
        )
    managers = crypto.ManagerKeys(master)
    public_key = crypto.public_key_of(datadir.read_node_key())
    state = ClusterState()
    now = time.time()
    for command in (
        InitCluster(
            cluster_id=identity.cluster_id,
            created_at=now,
            sealed_worker_token=managers.seal_token(
                Role.WORKER.value, str(crypto.JoinToken.new(keys))
            ),
            sealed_manager_token=managers.seal_token(
                Role.MANAGER.value, str(crypto.JoinToken.new(keys))
            ),
            managers_public_key=managers.public_key,
        ),
        AddNode(
            Node(
                id=identity.node_id,
                name=identity.name,
                addr=identity.addr,
                publish_addr=identity.publish_host,
                role=Role.MANAGER,
                resources=_resources(read_host_info()),
                joined_at=now,
                public_key=public_key,
                sealed_manager_key=managers.seal_to_node(identity.node_id, public_key),
            ),
            name_is_explicit=True,
        ),
    ):
        result = state.apply(command)
        assert result.ok, result.error
    snapshot = Snapshot(
        SnapshotMeta(index=1, term=1, conf=ConfState(voters=(identity.node_id,))), state.snapshot()
    )
    storage.save(HardState(term=1, vote=None, commit=1), [], snapshot)


def _resources(info: HostInfo) -> Resources:
    return Resources(nano_cpus=info.nano_cpus, memory_bytes=info.memory_bytes)


class Agent:
    def __init__(self, datadir: DataDir, config: AgentConfig | None = None) -> None:
        self.datadir = datadir
        self.config = config or AgentConfig()
        self.identity, key = datadir.read_identity()
        self.node_id = self.identity.node_id
        self.keys = crypto.ClusterKeys(key)
        self.keyring = KeyRing(datadir, self.node_id, lambda: self.state)
        self.events = EventLog()
        self.down_since: dict[str, float] = {}
        self.leader = LeaderDuties(self)
        self.executor: Executor | None = None
        self.proxy = Proxy(
            self.identity.publish_host,
            self._routes,
            self._republish,
            workers=self.config.proxy_workers,
        )
        self.transport = Transport(
            (self.identity.advertise_host, self.identity.port), self.keys.message_key
        )
        self.storage = RaftStorage.open(datadir.raft_dir)
        if self.identity.bootstrap and self.storage.last_index == 0:
            bootstrap_storage(self.storage, self.identity, self.keys, datadir)
        self.raft = RaftDriver(
            self.node_id,
            self.storage,
            self.transport,
            self._resolve,
            config=self.config.raft,
            tick_interval_s=self.config.raft_tick_interval_s,
            on_soft_state=self._on_soft_state,
            on_apply=self._on_apply,
        )
        self.host = read_host_info()
        self._meta_version = 0
        self.gossip = GossipDriver(
            self.transport,
            self.config.gossip,
            self.node_id,
            (self.identity.advertise_host, self.identity.port),
            encode_meta(self._meta()),
            datadir.next_incarnation(time.time()),
            self._on_member_event,
        )

        self.stopping = trio.Event()
        self.propose_guard = proposeauth.ProposeGuard()
        # TCP request types served by other layers (e.g. `service logs` across nodes).
        self.stream_handlers: dict[type, Callable[[FramedStream, object], Awaitable[None]]] = {}
        self.secrets = SecretDelivery(
            node_id=self.node_id,
            keyring=self.keyring,
            state=lambda: self.state,
            raft=self.raft,
            commit_index=lambda: self.raft.core.commit_index,
            transport=self.transport,
            resolve=self._resolve,
            is_ready=self.is_ready,
        )
        self.stream_handlers[SecretsRequest] = self.secrets.serve

    @property
    def state(self) -> ClusterState:
        return self.raft.state

    # ------------------------------------------------------------------------ observed state

    def _meta(self) -> NodeMeta:
        self._meta_version += 1
        own = self.state.nodes.get(self.node_id)
        return NodeMeta(
            name=own.name if own else self.identity.name,
            role=own.role.value if own else self.identity.role,
            addr=self.identity.addr,
            publish_host=self.identity.publish_host,
            nano_cpus=self.host.nano_cpus,
            memory_bytes=self.host.memory_bytes,
            cpu_percent=round(self.host.cpu_percent),
            memory_used_bytes=self.host.memory_used_bytes,
            raft_term=self.raft.core.term,
            raft_commit=self.raft.core.commit_index,
            leader_id=self.raft.leader_id or "",
            tasks=self.local_observations(),
            version=self._meta_version,
            port_errors={
                f"{port}/{proto}": e for (port, proto), e in self.proxy.port_errors.items()
            },
            proxy_connections=self.proxy.connection_counts(),
        )

    def local_observations(self) -> tuple[TaskObservation, ...]:
        return tuple(self.executor.observations.values()) if self.executor is not None else ()

    def _republish(self) -> None:
        self.gossip.set_meta(encode_meta(self._meta()))

    def publish_tasks(self, observations: tuple[TaskObservation, ...]) -> None:
        """The executor saw a task change: spread it (gossip) and let the leader look at once."""
        self._republish()
        self.leader.notify()
        self.proxy.notify()

    def _routes(self) -> list[Route]:
        vips = self.executor.networks.ready if self.executor is not None else {}
        return routes_from(self.state, observe(self).tasks, vips)

    def node_meta(self, node_id: str) -> NodeMeta | None:
        member = self.gossip.core.member(node_id)
        return decode_meta(member.meta) if member is not None else None

    def is_ready(self, node_id: str) -> bool:
        """Liveness as gossip sees it: alive or merely suspected counts as ready."""
        if node_id == self.node_id:
            return True
        member = self.gossip.core.member(node_id)
        return member is not None and member.state in (MemberState.ALIVE, MemberState.SUSPECT)

    def alive_ids(self) -> set[str]:
        return {nid for nid in self.state.nodes if self.is_ready(nid)}

    def _resolve(self, node_id: str) -> Address | None:
        node = self.state.nodes.get(node_id)
        if node is not None:
            return parse_addr(node.addr)
        member = self.gossip.core.member(node_id)
        return member.addr if member is not None else None

    def node_name(self, node_id: str) -> str:
        node = self.state.nodes.get(node_id)
        return node.name if node is not None else node_id[:12]

    def _on_member_event(self, event: MemberEvent) -> None:
        member = event.member
        name = self.node_name(member.name)
        if event.kind is MemberEventKind.FAILED:
            self.down_since.setdefault(member.name, time.monotonic())
            self.events.record("node", "down", name, f"node {name} is down (failed probes)")
        elif event.kind is MemberEventKind.LEFT:
            # A clean departure needs no grace period: its voter seat is handed on at once.
            self.down_since[member.name] = time.monotonic() - self.config.voter_grace_s
            self.events.record("node", "left", name, f"node {name} left the cluster")
        elif event.kind is MemberEventKind.SUSPECT:
            self.events.record("node", "suspect", name, f"node {name} is suspected")
        elif event.kind in (MemberEventKind.JOIN, MemberEventKind.ALIVE):
            returned = self.down_since.pop(member.name, None) is not None
            if returned:
                self.events.record("node", "ready", name, f"node {name} is back")
            else:
                self.events.record("node", "join", name, f"node {name} joined gossip")
        # Every kind, UPDATE too: a node's meta carries its task states and endpoints.
        self.leader.notify()
        self.proxy.notify()

    def _on_soft_state(self, soft: SoftState) -> None:
        if soft.role is RaftRole.LEADER:
            self.events.record("raft", "elected", self.identity.name, f"leader in term {soft.term}")
        elif soft.leader_id:
            leader = self.node_name(soft.leader_id)
            self.events.record("raft", "leader", leader, f"{leader} leads term {soft.term}")
        self.leader.notify()

    def _on_apply(self, command: Command, result: ApplyResult) -> None:
        self.keyring.sync()  # promoted or demoted: take or drop the managers' key
        if self.executor is not None:
            self.executor.notify()
        self.leader.notify()
        self.proxy.notify()

    # ------------------------------------------------------------------------ writes

    async def write(self, command: Command) -> ApplyResult:
        """Commit `command` through the leader, wherever it is, and wait until it is applied
        here too. Retries across elections until `write_timeout_s`; raises NoLeaderError then."""
        deadline = trio.current_time() + self.config.write_timeout_s
        while True:
            try:
                if self.raft.is_leader:
                    return await self.raft.propose(command)
                leader = self.raft.leader_id
                if leader is not None:
                    return await self._forward(leader, command)
            except NotLeaderError:
                pass
            except (OSError, trio.BrokenResourceError, RemoteProtocolError) as exc:
                log.debug("forwarding a write failed: %s", exc)
            if trio.current_time() >= deadline:
                raise NoLeaderError(
                    "no leader could take the write: the managers may have lost their quorum "
                    "(check `swarmlet node ls`)"
                )
            with trio.move_on_at(min(deadline, trio.current_time() + 0.1)):
                await self.raft.leader_changed.wait()

    async def _forward(self, leader: str, command: Command) -> ApplyResult:
        addr = self._resolve(leader)
        if addr is None:
            raise NotLeaderError(leader)
        request = proposeauth.sign(
            self.keyring.require_managers(),  # only managers write (`proposeauth`)
            wire.encode(command),
            proposer=self.node_id,
            leader=leader,
            nonce=os.urandom(proposeauth.NONCE_BYTES),
            now=time.time(),
        )
        with trio.fail_after(self.config.write_timeout_s):
            stream = await self.transport.connect(addr)
            async with stream.stream:
                await stream.send(request)
                reply = await stream.receive(expect=(ProposeReply,))
        if reply is None or reply.not_leader:
            raise NotLeaderError(reply.leader_hint if reply else None)
        with trio.fail_after(self.config.write_timeout_s):
            await self.raft.wait_applied(reply.index)
        return ApplyResult(reply.ok, reply.error, reply.value)

    async def _serve_propose(
        self, stream: FramedStream, request: ProposeRequest, addr: Address
    ) -> None:
        refusal = self.propose_guard.check(
            self.keyring.managers, request, leader=self.node_id, now=time.time()
        )
        if refusal:
            self.transport.counters["propose_refused"] += 1
            log.warning("refused a write from %r (%s): %s", request.proposer, addr[0], refusal)
            await stream.send(ProposeReply(False, error=f"write refused: {refusal}"))
            return
        try:
            command = wire.decode(request.command, expect=COMMANDS)
            result = await self.raft.propose(command)
            reply = ProposeReply(result.ok, result.error, result.value, index=self.raft.applied)
        except NotLeaderError as exc:
            reply = ProposeReply(False, not_leader=True, leader_hint=exc.leader_hint or "")
        except RemoteProtocolError as exc:
            reply = ProposeReply(False, error=f"invalid command: {exc}")
        await stream.send(reply)

    async def sync_state(self) -> bool:
        """Bring the local state up to date before acting on it after a start: first everything
        this node knew was committed, then a ReadIndex barrier. False if no leader answered."""
        await self.raft.wait_applied(self.raft.startup_commit)
        return await self.read_barrier(timeout_s=5.0)

    async def read_barrier(self, timeout_s: float = 2.0) -> bool:
        """Make the local state linearizable (ReadIndex). False if no leader answered in time:
        the caller then serves the local, possibly stale, state and says so."""
        with trio.move_on_after(timeout_s):
            while True:
                try:
                    await self.raft.read_barrier()
                    return True
                except (NoLeaderError, NotLeaderError):
                    await self.raft.leader_changed.wait()  # an election is under way
        return False

    # ------------------------------------------------------------------------ incoming TCP

    async def _on_stream(self, stream: FramedStream, addr: Address) -> None:
        first = await stream.receive()
        if isinstance(first, RaftStreamHello):
            await self.raft.serve_stream(stream, first)
        elif isinstance(first, PushPullState):
            await self.gossip.answer_push_pull(stream, first)
        elif isinstance(first, ProposeRequest):
            await self._serve_propose(stream, first, addr)
        elif first is not None:
            handler = self.stream_handlers.get(type(first))
            if handler is None:
                self.transport.counters["dropped_stream_unexpected"] += 1
                return
            await handler(stream, first)

    async def _on_join(self, raw: trio.SocketStream, key_id: bytes, addr: Address) -> None:
        # Only a manager can open the tokens (`keyring`): a worker refuses every join.
        match = self.keyring.join_tokens().get(key_id)
        if match is None:
            self.transport.counters["join_refused_bad_token"] += 1
            self.events.record("node", "join-refused", f"{addr[0]}", "join refused: invalid token")
            await raw.send_all(JOIN_REFUSED)
            return
        await raw.send_all(JOIN_ACCEPTED)
        role, token = match
        stream = join_stream(raw, token.join_key, self.transport.counters)
        request = await stream.receive(expect=(JoinRequest,))
        if request is None:
            return
        try:
            parse_addr(request.addr)
            public_key = crypto.check_public_key(request.public_key)
            if not await check_possession(stream, request.node_id, public_key):
                self.transport.counters["join_refused_no_proof"] += 1
                await stream.send(JoinReply(False, error="no proof of the node key"))
                return
            sealed_key = (
                self.keyring.seal_manager_key_to(request.node_id, public_key)
                if role is Role.MANAGER
                else b""
            )
            result = await self.write(
                AddNode(
                    Node(
                        id=request.node_id,
                        name=request.name,
                        addr=request.addr,
                        publish_addr=request.publish_addr,
                        role=role,
                        resources=Resources(request.nano_cpus, request.memory_bytes),
                        joined_at=time.time(),
                        public_key=public_key,
                        sealed_manager_key=sealed_key,
                    ),
                    name_is_explicit=request.name_is_explicit,
                )
            )
        except SwarmletError as exc:
            await stream.send(JoinReply(False, error=str(exc)))
            return
        if not result.ok:
            await stream.send(JoinReply(False, error=result.error))
            return
        seeds = tuple(
            n.addr
            for n in self.state.nodes.values()
            if n.id != request.node_id and self.is_ready(n.id)
        )
        await stream.send(
            JoinReply(
                True,
                cluster_id=self.state.cluster_id,
                master_key=self.keys.master,
                name=result.value,
                role=role.value,
                seeds=seeds,
            )
        )
        self.events.record("node", "joined", result.value, f"{result.value} joined as {role.value}")

    async def _refresh_meta(self) -> None:
        last: tuple[object, ...] = ()
        while True:
            self.host = await host_info()
            meta = self._meta()
            # Republish on what others act on or show: roles, leadership, load in 10% steps,
            # proxy traffic (request rates for the autoscaler and the dashboard).
            key = (
                meta.name,
                meta.role,
                meta.raft_term,
                meta.leader_id,
                meta.cpu_percent // 10,
                sum(meta.proxy_connections.values()),
            )
            if key != last:
                last = key
                self.gossip.set_meta(encode_meta(meta))
            with trio.move_on_after(self.config.meta_refresh_s):
                await self.raft.leader_changed.wait()

    # ------------------------------------------------------------------------ run

    async def _run_executor(self) -> None:
        """Run this node's tasks; without a Docker engine, say so and keep trying."""
        while True:
            try:
                async with open_docker_runtime() as runtime:
                    cluster_id = self.state.cluster_id or self.identity.cluster_id
                    self.executor = Executor(
                        runtime,
                        cluster_id=cluster_id,
                        node_id=self.node_id,
                        host_ip=self.identity.advertise_host,
                        state=lambda: self.state,
                        sync=self.sync_state,
                        publish=self.publish_tasks,
                        record_event=self.events.record,
                        task_files=self.secrets.task_files,
                        networks=LocalNetworks(
                            runtime,
                            cluster_id=cluster_id,
                            node_id=self.node_id,
                            on_change=self.proxy.notify,
                        ),
                    )
                    await self.executor.run()
            except RuntimeAdapterError as exc:
                log.error("cannot run tasks: the Docker engine does not answer (%s)", exc)
            self.executor = None
            await trio.sleep(5.0)

    def seeds(self) -> list[Address]:
        addrs = {n.addr for n in self.state.nodes.values() if n.id != self.node_id}
        addrs.update(s for s in self.identity.seeds)
        addrs.discard(self.identity.addr)
        return [parse_addr(a) for a in sorted(addrs)]

    async def run(
        self,
        serve_control: Callable[..., Awaitable[None]] | None = None,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        async with trio.open_nursery() as nursery:
            await self.transport.open_udp()
            await nursery.start(self.transport.serve_tcp, self._on_stream, self._on_join)
            await nursery.start(self.raft.run)
            await nursery.start(self.gossip.run)
            self.gossip.join(self.seeds())
            await nursery.start(self.leader.run)
            nursery.start_soon(self._run_executor)
            await nursery.start(self.proxy.run)
            nursery.start_soon(self._refresh_meta)
            if serve_control is not None:
                await nursery.start(serve_control)
            self.datadir.pid_file.write_text(str(os.getpid()))
            log.info(
                "agent %s (%s) running on %s", self.identity.name, self.node_id, self.identity.addr
            )
            task_status.started()
            await self.stopping.wait()
            await self._shutdown()
            nursery.cancel_scope.cancel()

    async def leave(self) -> None:
        """A clean departure: hand over leadership, tell gossip we left, stop."""
        self.stopping.set()

    async def _shutdown(self) -> None:
        with trio.move_on_after(self.config.leave_timeout_s * 2):
            if self.raft.is_leader:
                others = [
                    v for v in self.raft.core.conf.voters if v != self.node_id and self.is_ready(v)
                ]
                if others:
                    await self.raft.transfer_leadership(others[0])
                    with trio.move_on_after(self.config.leave_timeout_s):
                        while self.raft.is_leader:
                            await self.raft.leader_changed.wait()
            await self.gossip.leave(self.config.leave_timeout_s)
        self.datadir.remove_pid()
