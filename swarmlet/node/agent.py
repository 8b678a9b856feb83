"""The agent: one node's components, built and wired together and started in one nursery.

    transport (UDP + TCP, sealed)  ->  gossip driver (membership, each node's capacity and load)
                                   ->  raft driver (replicated desired state, `node.replicated`)
    writes (`node.forwarding`)     ->  proposed here when leading, else forwarded to the leader
    joins (`security.join`)        ->  admitting new nodes, on managers
    leader duties (`leader`)       ->  voter policy, orchestration, autoscaling (pure cores)
    executor (`executor`)          ->  this node's containers, through the Docker runtime
    keys (`security.keyring`)      ->  node key pair; the managers' key, following the role
    data key (`security.at_rest`)  ->  the Raft log's encryption at rest; sealed under autolock
    secrets (`security.secret_delivery`) -> a task's secrets: from this node's state or a manager
    statuses (`node.status_reports`) -> this node's task statuses to the leader, committed
    sessions (`node.worker_sessions`) -> a worker's view of the state, served by a manager
    proxy (`proxy`)                ->  the routing mesh, fed from the observed state

The agent owns the wiring and what only the whole node can answer: its gossip metadata (capacity,
load, Raft position), liveness and names of the other nodes, the events that
gossip and Raft report, and the dispatch of incoming TCP streams by their first frame. It is
what the leader's duties (`leader.duties.DutiesHost`), the join acceptor and the control API
read, each through its own narrow interface. Protocol rules live in the cores, not here.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import logging
import os
import random
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import trio

from swarmlet import crypto, off_loop, timers
from swarmlet.certs import PeerIdentity
from swarmlet.errors import (
    LocalProtocolError,
    NoLeaderError,
    NotLeaderError,
    RemoteProtocolError,
    RuntimeAdapterError,
    SwarmletError,
    UsageError,
)
from swarmlet.executor.driver import Executor
from swarmlet.executor.hostinfo import host_info, read_host_info
from swarmlet.executor.networks import LocalNetworks
from swarmlet.gossip.core import EventKind as MemberEventKind
from swarmlet.gossip.core import MemberEvent
from swarmlet.gossip.driver import GossipDriver
from swarmlet.gossip.messages import MemberState, PushPullState
from swarmlet.leader.duties import LeaderDuties
from swarmlet.leader.observation import ObservationCache, ObservedView, is_ready
from swarmlet.node.advertised_resources import read_advertised
from swarmlet.node.bootstrap import bootstrap_storage, restore_storage
from swarmlet.node.config import AgentConfig
from swarmlet.node.events import EventLog
from swarmlet.node.forwarding import WriteForwarding
from swarmlet.node.reconnect import RECONNECT_INTERVAL_S, reconnect_targets
from swarmlet.node.replica_source import ReplicaSource
from swarmlet.node.replicated import ReplicatedState, encode_command_aside
from swarmlet.node.status_reports import StatusIntake, StatusReporter
from swarmlet.node.view_store import ViewStore
from swarmlet.node.worker_sessions import SessionServer, WorkerSession
from swarmlet.proxy.mesh import Proxy, Route, routes_from
from swarmlet.raft.driver import RaftDriver, RaftStreamHello
from swarmlet.raft.messages import Role as RaftRole
from swarmlet.raft.messages import SoftState
from swarmlet.raft.storage import RaftStorage
from swarmlet.raft.types import ConfChange, ConfState
from swarmlet.security import at_rest, peer_policy
from swarmlet.security.certificates import Certificates
from swarmlet.security.datadir import DataDir
from swarmlet.security.join import JoinAcceptor
from swarmlet.security.keyring import KeyRing
from swarmlet.security.secret_delivery import SecretDelivery
from swarmlet.state.commands import Command, UpdateNode
from swarmlet.state.generic_resources import advertised_text, parse_advertised
from swarmlet.state.machine import ApplyResult, ClusterState
from swarmlet.state.model import Resources, Role
from swarmlet.state.observed import (
    NodeLoad,
    NodeMeta,
    StatusReport,
    TaskObservation,
    decode_meta,
    encode_meta,
    meta_news,
)
from swarmlet.state.worker_view import SessionHello
from swarmlet.wire.hosts import host_of
from swarmlet.wire.peer_rpc import CertRequest, ProposeBatch, ProposeRequest, SecretsRequest
from swarmlet.wire.transport import (
    Address,
    Counters,
    DatagramAuth,
    FramedStream,
    TlsConfig,
    Transport,
    parse_addr,
)

log = logging.getLogger(__name__)

T = TypeVar("T")


def _lists(recorded: Resources, wanted: Resources) -> bool:
    """Whether a node's record lists the generic resources it advertises."""
    return (recorded.generic, recorded.named) == (wanted.generic, wanted.named)


# After a start, how long a member of the state may go unheard of by gossip before it counts as
# down (`Agent.member_state`): a live node is heard of within a second or two (push-pull with
# the seeds at join); this leaves room for a whole cluster restarting on a loaded machine.
UNHEARD_DOWN_AFTER_S = 30.0
# A peer sends its first frame as soon as it is connected (every client here does): one that
# does not is closed, or a member could hold every connection the transport allows, silent.
FIRST_FRAME_TIMEOUT_S = 10.0


class Agent:
    def __init__(
        self,
        datadir: DataDir,
        config: AgentConfig | None = None,
        *,
        data_key: bytes | None = None,
        unlocked_with: str | None = None,
    ) -> None:
        """`data_key`, `unlocked_with`: from a locked start (`node.locked`); None otherwise."""
        self.datadir = datadir
        self.config = config or AgentConfig()
        self.identity, key = datadir.read_identity()
        self.node_id = self.identity.node_id
        self.keys = crypto.ClusterKeys(key)
        self.keyring = KeyRing(
            datadir,
            self.node_id,
            lambda: self.state,
            cluster_id=self.identity.cluster_id,
            cert_lifetime_s=self.config.cert_lifetime_s,
            settled=self._state_settled,
        )
        self.events = EventLog()
        self.down_since: dict[str, float] = {}
        self._started = time.monotonic()
        self._observations = ObservationCache()  # `observed`: the API's and the mesh's
        self.leader = LeaderDuties(self, voter_grace_s=self.config.voter_grace_s)
        self.executor: Executor | None = None
        self.proxy = Proxy(
            self.identity.publish_host,
            self._routes,
            self._port_errors_changed,
            workers=self.config.proxy_workers,
        )
        # Encryption at rest (`security.at_rest`): every record under this node's data key.
        if data_key is None:
            data_key = at_rest.read_data_key(datadir.path)
        if data_key is None:
            raise UsageError(f"{datadir.path} is locked (autolock): run `swarmlet unlock`")
        self.at_rest = at_rest.AtRest(datadir.path, data_key, unlocked_with=unlocked_with)
        if datadir.drop_superseded_raft_log():
            log.info("removed the Raft log this worker kept from before its sessions")
        self.storage = RaftStorage.open(datadir.raft_dir, cipher=self.at_rest.cipher)
        if self.identity.bootstrap and self.storage.last_index == 0:
            restored = datadir.read_restore_state()
            if restored is not None:  # `init --restore`: the backup's state, this node first
                removed = restore_storage(
                    self.storage, self.identity, datadir, restored, autolock_key=unlocked_with
                )
                log.info("restored the cluster from a backup (%d old nodes removed)", removed)
            else:
                bootstrap_storage(
                    self.storage, self.identity, self.keys, datadir, autolock_key=unlocked_with
                )
        datadir.remove_restore_state()  # consumed (the storage holds it), or a leftover
        self.replicated = ReplicatedState()
        self._raft_superseded = False  # whether the data dir says so (`_on_view_update`)
        self._signing_key = datadir.signing_key()  # signs datagrams and this node's Alive
        self.counters = Counters()  # the transport's and every other layer's events, by name
        # A worker's state: its view, served by a manager (`node.worker_sessions`), and kept
        # on its disk (`node.view_store`). Its own cipher: the storage seals in a thread, and
        # a nonce is a counter.
        view_store = ViewStore(
            datadir.worker_view_file,
            at_rest.AtRest.cipher_of(data_key),
            self.node_id,
            self.counters,
        )
        if datadir.manager_key_file.exists():
            view_store.remove()  # a manager reads its Raft replica, never a worker's old view
        self.worker_session = WorkerSession(
            node_id=self.node_id,
            connect=self._connect_manager,
            managers=self._managers_to_ask,
            wanted=self._wants_session,
            on_update=self._on_view_update,
            counters=self.counters,
            store=view_store,
        )
        # Before Raft has loaded the state: a certificate this node issues itself at start
        # says manager of generation 0, and is renewed as soon as the state says otherwise.
        self.certificates = Certificates(
            datadir=datadir,
            node_id=self.node_id,
            cluster_id=self.identity.cluster_id,
            keyring=self.keyring,
            state=lambda: self.state,
            admit=self._admit,
            connect=self._connect_manager,
            managers=self._managers_to_ask,
            install=self._install_tls,
            counters=self.counters,
        )
        self.transport = Transport(
            (self.identity.advertise_host, self.identity.port),
            self.keys.message_key,
            self.certificates.tls(),
            counters=self.counters,
            datagram_auth=DatagramAuth(self.node_id, self._signing_key, self.member_key),
            datagram_keys=self.keyring.datagram_keys,  # the cluster key's epochs
        )
        # Members' identity keys as last seen, for datagrams that arrive before the state that
        # lists their senders is applied (a start, the whole cluster restarting at once).
        self._known_keys = datadir.read_member_keys()
        self._known_keys_seen = (-1, -1)  # (nodes, removed nodes) when last brought up to date
        self.raft = RaftDriver(
            self.node_id,
            self.storage,
            self.replicated,
            self.transport,
            self._resolve,
            config=self.config.raft,
            tick_interval_s=self.config.raft_tick_interval_s,
            snapshot_every=self.config.raft_snapshot_every,
            on_soft_state=self._on_soft_state,
            on_applied=self._on_applied,
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
            sign=self._signing_key.sign,
            verify=self._verify_member,
            recorded_addr=self._recorded_addr,
        )

        # What reads the state and waits on it asks `replica`, which answers for the source in
        # use: Raft's replica, or a worker session's view.
        self.replica = ReplicaSource(self.raft, self.worker_session, self.reads_view)
        self.sessions = SessionServer(
            node_id=self.node_id,
            state=lambda: self.replicated.state,
            applied=lambda: self.raft.applied,
            leader_id=lambda: self.raft.leader_id,
            conf=lambda: self.raft.core.conf,
            catch_up=self.sync_state,
            counters=self.counters,
        )

        self.stopping = trio.Event()
        self.forwarding = WriteForwarding(
            node_id=self.node_id,
            raft=self.raft,
            propose=self.propose,
            keyring=self.keyring,
            transport=self.transport,
            resolve=self._resolve,
            state=lambda: self.state,
            write_timeout_s=self.config.write_timeout_s,
        )
        self.joins = JoinAcceptor(
            keyring=self.keyring,
            master_key=self.keys.master,
            state=lambda: self.state,
            write=self.write,
            is_ready=self.is_ready,
            counters=self.transport.counters,
            record_event=self.events.record,
        )
        # TCP request types served by other layers (e.g. `service logs` across nodes).
        self.stream_handlers: dict[type, Callable[[FramedStream, object], Awaitable[None]]] = {}
        self.secrets = SecretDelivery(
            node_id=self.node_id,
            keyring=self.keyring,
            state=lambda: self.state,
            raft=self.replica,
            commit_index=lambda: self.raft.core.commit_index,
            transport=self.transport,
            resolve=self._resolve,
            is_ready=self.is_ready,
        )
        self.stream_handlers[SecretsRequest] = self.secrets.serve
        self.stream_handlers[CertRequest] = self.certificates.serve
        self.stream_handlers[ProposeBatch] = self.forwarding.serve_batches
        self.stream_handlers[SessionHello] = self.sessions.serve
        self.status_reporter = StatusReporter(
            node_id=self.node_id,
            raft=self.replica,
            state=lambda: self.state,
            observed=lambda: self.executor.observations if self.executor is not None else {},
            port_errors=self._port_errors,
            load=lambda: self.node_load(self.node_id) or NodeLoad(),
            propose=self.propose,
            transport=self.transport,
            resolve=self._resolve,
        )
        self.status_intake = StatusIntake(
            raft=self.raft,
            state=lambda: self.state,
            propose=self.propose,
            counters=self.counters,
        )
        self.stream_handlers[StatusReport] = self.status_intake.serve

    @property
    def state(self) -> ClusterState:
        """This node's replica of the desired state (behind the leader until a read barrier);
        on a worker served by a session, its view (`state.worker_view`)."""
        view = self.worker_session.view
        return view if view is not None else self.replicated.state

    def reads_view(self) -> bool:
        """Whether `state` is this worker's view rather than a Raft replica."""
        return self.worker_session.view is not None

    def _state_settled(self) -> bool:
        """Whether `state` is as recent as what this node held when it stopped: a worker's view,
        or the replica once the start's replay is through (not before the driver restored it)."""
        if self.reads_view():
            return True
        raft = getattr(self, "raft", None)
        return raft is not None and not raft.replaying

    def _wants_session(self) -> bool:
        """Whether this node should take its state from a manager's session: it is a worker
        (by its record, or by its identity until it has one)."""
        own = self.state.nodes.get(self.node_id)
        return (own.role.value if own else self.identity.role) == Role.WORKER.value

    def _leave_view_once_replicated(self) -> None:
        """A worker promoted to manager reads its view until Raft has brought its replica as
        far, then Raft's state (the leader adds every manager to the Raft group)."""
        session = self.worker_session
        if session.view is None or self._wants_session():
            return
        if self._raft_superseded:  # promoted: the log is this node's replica again
            self._raft_superseded = False
            self.datadir.mark_raft_superseded(False)
        if self.raft.applied >= session.applied and self.raft.applied > 0:
            session.drop_view()
            self.events.record("node", "replica", self.identity.name, "reading the Raft replica")
            self._state_changed()

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
            version=self._meta_version,
        )

    def _publish_meta(self, meta: NodeMeta) -> None:
        """Spread `meta` by gossip. It is of a bounded size whatever the node runs; should it
        outgrow gossip's limit anyway, the node keeps its last metadata and says so, and goes
        on running (issue #16: it once crash-looped here)."""
        try:
            self.gossip.set_meta(encode_meta(meta))
        except LocalProtocolError as exc:
            self.counters["gossip_meta_too_large"] += 1
            self.events.record("node", "meta-too-large", meta.name, str(exc))
            log.error("gossip metadata not updated: %s", exc)

    def local_observations(self) -> tuple[TaskObservation, ...]:
        return tuple(self.executor.observations.values()) if self.executor is not None else ()

    def node_load(self, node_id: str) -> NodeLoad | None:
        """This node's load now; another's as its last status report brought it here."""
        if node_id != self.node_id:
            return self.status_intake.loads.get(node_id)
        loads = tuple(self.executor.loads.values()) if self.executor is not None else ()
        return NodeLoad(loads, self.proxy.connection_counts())

    def _port_errors(self) -> dict[str, str]:
        return {f"{port}/{proto}": e for (port, proto), e in self.proxy.port_errors.items()}

    def _port_errors_changed(self) -> None:
        self.status_reporter.notify()

    def publish_tasks(self) -> None:
        """The executor saw a task change: report it, and let the leader and the proxy look."""
        self.status_reporter.notify()
        self.leader.notify()
        self.proxy.notify()

    def _routes(self) -> list[Route]:
        vips = self.executor.networks.ready if self.executor is not None else {}
        return routes_from(self.state, self.observed().tasks, vips)

    def member_state(self, node_id: str) -> MemberState | None:
        """`node_id`'s state in gossip. A member of the state that gossip has not heard of
        `UNHEARD_DOWN_AFTER_S` after this agent started is down since then: after a restart,
        a node that never comes back (lost with its host, or left behind by
        `init --force-new-cluster`) would otherwise keep its tasks and its voter seat for ever,
        since no verdict is ever reached about a node never heard of. A pure read: since when
        such a node is down, `_record_unheard_down` writes once, when the time comes."""
        member = self.gossip.core.member(node_id)
        if member is not None:
            return member.state
        if node_id in self.state.nodes and self._unheard_count_as_down():
            return MemberState.DEAD
        return None

    def _unheard_count_as_down(self) -> bool:
        return time.monotonic() >= self._started + UNHEARD_DOWN_AFTER_S

    async def _record_unheard_down(self) -> None:
        """A start-up timer: `UNHEARD_DOWN_AFTER_S` after the start, every member of the state
        gossip has not heard of is recorded as down since the start, for the voter policy and
        the orchestrator (`down_since`); gossip's JOIN/ALIVE removes the record. A node added to
        the state later and never heard of is not recorded: it counts as down all the same
        (`member_state`), and it holds no voter seat, which is given only to a live node."""
        await trio.sleep(max(0.0, self._started + UNHEARD_DOWN_AFTER_S - time.monotonic()))
        unheard = [n for n in self.state.nodes if self.gossip.core.member(n) is None]
        for node_id in unheard:
            self.down_since.setdefault(node_id, self._started)
        if unheard:
            self.leader.notify()

    async def _advertise_generic_resources(self) -> None:
        """Make this node's record list the generic resources kept in its data dir
        (`node.advertised_resources`), at every start. A manager writes its record itself;
        a worker's is written when it joins (only managers propose): a worker whose list has
        changed since says so, and joins again to advertise the new one."""
        try:
            wanted = parse_advertised(read_advertised(self.datadir.path))
        except UsageError as exc:  # a hand-edited file: the CLI checks what it writes
            log.error("no generic resources advertised: %s", exc)
            self.events.record("node", "generic-resources-invalid", self.identity.name, str(exc))
            return
        own = self.state.nodes.get(self.node_id)
        if (own.role.value if own else self.identity.role) != Role.MANAGER.value:
            if own is not None and not _lists(own.resources, wanted):
                log.warning(
                    "this worker advertises generic resources %s, its record %s: a worker's "
                    "are recorded when it joins (leave, then join again)",
                    advertised_text(wanted),
                    advertised_text(own.resources),
                )
            return
        while not await self.sync_state():
            pass  # no leader yet: wait for one (the barrier waits up to 5 s a time)
        while (own := self.state.nodes.get(self.node_id)) is not None:
            if _lists(own.resources, wanted) or own.role is not Role.MANAGER:
                return  # (demoted while it was down: the check above saw a stale record)
            resources = dataclasses.replace(
                own.resources, generic=wanted.generic, named=wanted.named
            )
            try:
                result = await self.write(UpdateNode(self.node_id, resources=resources))
            except SwarmletError as exc:  # no leader for now, a lost forward: again
                log.info("generic resources not recorded yet: %s", exc)
                await trio.sleep(1.0)
                continue
            if not result.ok:
                log.error("generic resources not recorded: %s", result.error)
            return

    def node_meta(self, node_id: str) -> NodeMeta | None:
        member = self.gossip.core.member(node_id)
        return decode_meta(member.meta) if member is not None else None

    def is_ready(self, node_id: str) -> bool:
        """Liveness as gossip sees it; a suspected node still counts as ready
        (`leader.observation.counts_as_ready` holds the rule and its source)."""
        return is_ready(self, node_id)

    def _recorded_addr(self, node_id: str) -> Address | None:
        """Where the state says `node_id` is (None: it does not say): gossip takes a member at
        no other address (`gossip.core`)."""
        node = self.state.nodes.get(node_id)
        return _address(node.addr) if node is not None else None

    def _resolve(self, node_id: str) -> Address | None:
        node = self.state.nodes.get(node_id)
        if node is not None:
            return _address(node.addr)
        member = self.gossip.core.member(node_id)
        return member.addr if member is not None else None

    # ------------------------------------------------------------------------ peers

    def _admit(self, peer: PeerIdentity) -> PeerIdentity | str:
        """Whether an authenticated peer is still a member in good standing (the transport asks
        on every connection and frame; `security.peer_policy` holds the rules)."""
        return peer_policy.admit(
            peer,
            self.state,
            self.identity.cluster_id,
            time.time(),
            voters=self.raft.core.conf.voters,
            known_keys=self._known_keys,
        )

    def member_key(self, node_id: str) -> bytes | None:
        """A member's Ed25519 identity key, which signs its datagrams and its gossip Alive: from
        its record in the state, or, until this node's replica lists it, from the data dir's
        copy (the join reply's, then the state's as applied). None for a removed node and for
        one this node does not know."""
        state = self.state
        if node_id in state.removed_nodes:
            return None
        node = state.nodes.get(node_id)
        if node is not None:
            return node.signing_key or None
        return self._known_keys.get(node_id)

    def _remember_member_keys(self) -> None:
        """Keep the data dir's copy of the members' keys up to date with the state (checked
        when the number of members or of removed nodes changed: keys never change)."""
        state = self.state
        seen = (len(state.nodes), len(state.removed_nodes))
        if seen == self._known_keys_seen:
            return
        self._known_keys_seen = seen
        keys = {k: v for k, v in self._known_keys.items() if k not in state.removed_nodes}
        keys.update((n.id, n.signing_key) for n in state.nodes.values() if n.signing_key)
        if keys != self._known_keys:
            self._known_keys = keys
            self.datadir.write_member_keys(keys)

    def _verify_member(self, node_id: str, data: bytes, signature: bytes) -> bool | None:
        """Whether `node_id`'s identity key signed `data` (what it says of itself in gossip);
        None if this node does not know that key (yet)."""
        key = self.member_key(node_id)
        if key is None:
            return None
        try:
            crypto.check_signature(key, signature, data)
        except RemoteProtocolError:
            return False
        return True

    async def _connect_manager(self, addr: Address, node_id: str) -> FramedStream:
        """What a worker takes its view and its certificate from: a manager by the cluster
        CA's word (`Transport.connect(manager=True)`), not by what it gossips of itself."""
        return await self.transport.connect(addr, node_id=node_id, manager=True)

    def _install_tls(self, tls: TlsConfig) -> None:
        self.transport.set_tls(tls)

    def _managers_to_ask(self) -> list[tuple[str, Address]]:
        """Managers to ask for a certificate or a session: the leader first, then the other
        ready ones. Before this node holds any state (a worker that just joined), the managers
        gossip knows of, by what each says of itself."""
        leader = self.replica.leader_id
        ids = [n.id for n in self.state.nodes.values() if n.role is Role.MANAGER]
        if not ids:
            ids = [
                m.name
                for m in self.gossip.core.members()
                if (meta := self.node_meta(m.name)) is not None and meta.role == Role.MANAGER.value
            ]
        ids.sort(key=lambda i: (i != leader, i))
        found = []
        for node_id in ids:
            addr = self._resolve(node_id)
            if node_id != self.node_id and addr is not None and self.is_ready(node_id):
                found.append((node_id, addr))
        return found

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
            elif event.kind is MemberEventKind.ALIVE:  # it answered a suspicion: never gone
                self.events.record("node", "alive", name, f"node {name} refuted the suspicion")
            else:
                self.events.record("node", "join", name, f"node {name} joined gossip")
            self.raft.peer_reachable(member.name)  # its snapshot or catch-up starts now
            self.worker_session.poke()  # perhaps the first manager this worker hears of
        # Every kind, UPDATE too: a node's meta carries its capacity.
        self.leader.notify()
        self.proxy.notify()

    def _on_soft_state(self, soft: SoftState) -> None:
        if soft.role is RaftRole.LEADER:
            self.events.record("raft", "elected", self.identity.name, f"leader in term {soft.term}")
        elif soft.leader_id:
            leader = self.node_name(soft.leader_id)
            self.events.record("raft", "leader", leader, f"{leader} leads term {soft.term}")
        self.leader.notify()
        self.sessions.notify()  # workers learn the leader from their sessions

    def _on_applied(self) -> None:
        """Raft applied a batch of committed entries, or a snapshot."""
        # Autolock on, off, rotated: its file follows. A replayed older setting does not (the
        # file records the index it follows); the guard is for a file of an older release,
        # which records none.
        if self.raft.applied >= self.raft.startup_commit:
            self.at_rest.notify()
        self.sessions.notify()
        if self.worker_session.view is not None:
            self._leave_view_once_replicated()
            return  # the view is what this node reads: Raft's state moving changes nothing
        self._state_changed()

    def _on_view_update(self) -> None:
        self._leave_view_once_replicated()
        session = self.worker_session
        superseded = not session.in_raft and self.raft.applied > 0 and self._wants_session()
        if superseded != self._raft_superseded:
            # A Raft log from before this node's sessions: it goes at the next start.
            self._raft_superseded = superseded
            self.datadir.mark_raft_superseded(superseded)
        self._state_changed()

    def _state_changed(self) -> None:
        """The state this node reads moved: everything that follows it looks again."""
        self.keyring.sync()  # promoted or demoted: take or drop the managers' key
        self.certificates.notify()  # ... and renew the certificate
        self.worker_session.state_moved()  # ... and hold a session, or not
        self._remember_member_keys()
        if self.executor is not None:
            self.executor.notify()
        self.status_reporter.notify()
        self.leader.notify()
        self.proxy.notify()

    # ------------------------------------------------------------------------ Raft

    @property
    def is_leader(self) -> bool:
        return self.raft.leader_caught_up  # (DutiesHost: not before its state is current)

    @property
    def lead_term(self) -> int:
        return self.raft.core.term if self.is_leader else 0

    @property
    def raft_conf(self) -> ConfState:
        return self.raft.core.conf

    @property
    def peer_protocols(self) -> dict[str, int]:
        return self.transport.peer_protocols

    async def propose(self, command: Command) -> ApplyResult:
        """Commit `command` on this node, which must lead (NotLeaderError if not)."""
        return await self.raft.propose(await encode_command_aside(command))

    async def propose_conf_change(self, change: ConfChange) -> None:
        await self.raft.propose_conf_change(change)

    async def run_with_state_still(self, read: Callable[[], T]) -> T:
        """`read()`, which reads `state` and nothing else the event loop changes, off the event
        loop: in a thread, with Raft's applies held until it returns (what keeps the state
        still for it). The loop meanwhile keeps Raft's heartbeats, gossip and the mesh going
        (the GIL changes hands every 1 ms meanwhile): a leader's full pass at 100,000 tasks,
        or a listing of them, is a second or two of CPU, and on the loop it stopped the
        heartbeats for that long (an election at a 0.4-0.8 s timeout). A worker's view moves
        with its session, not Raft: there, on the loop; and again there if a view came while
        the thread read (this manager was demoted meanwhile: what it read was half of each).
        Nearly read-only: `ClusterState.copy` in the pass gives up the live task table's
        ownership of its index buckets, which only makes the next apply copy one first."""
        if not self.reads_view():
            async with self.raft.applies_held():
                try:
                    result = await off_loop.run(read)
                except Exception:
                    if not self.reads_view():
                        raise
                else:
                    if not self.reads_view():
                        return result
        return read()

    def observed(self) -> ObservedView:
        """`leader.observation.observe` now, kept current at the cost of what changed since
        the last call (`ObservationCache`): a whole `observe` is 0.3 s of the event loop at
        100,000 tasks, which every `status`, `service ls/ps` and route recomputation paid.
        Its tasks are a live view, valid until the next call: copy what outlives an await."""
        return self._observations.refresh(self)

    async def write(self, command: Command) -> ApplyResult:
        """Commit `command` through the leader, wherever it is (`node.forwarding`)."""
        return await self.forwarding.write(command)

    async def sync_state(self) -> bool:
        """Bring the local state up to date before acting on it after a start: first everything
        this node knew was committed, then a ReadIndex barrier; on a worker without a Raft
        replica, a whole view from a manager (not the one kept on disk). False if neither came
        within 5 s."""
        if self._wants_session() and (
            self.worker_session.view is not None or not self.raft.applied
        ):
            with trio.move_on_after(5.0):
                await self.worker_session.wait_live()
            return self.worker_session.live
        await self.raft.wait_applied(self.raft.startup_commit)
        return await self.read_barrier(timeout_s=5.0)

    async def read_barrier(self, timeout_s: float = 2.0) -> bool:
        """Make the local state linearizable (ReadIndex). False if no leader answered in time:
        the caller then serves the local, possibly stale, state and says so. On a worker reading
        its view: whether a manager serves it now (the view follows that manager's state); on a
        node promoted while it read one, first its Raft replica catching up."""
        with trio.move_on_after(timeout_s):
            while self.reads_view():
                if self._wants_session():
                    return self.worker_session.manager_id is not None
                await self.raft.wait_applied(self.raft.applied + 1)  # leaves the view, in time
            while True:
                try:
                    await self.raft.read_barrier()
                    return True
                except (NoLeaderError, NotLeaderError):
                    await self.raft.leader_changed.wait()  # an election is under way
        return False

    # ------------------------------------------------------------------------ incoming TCP

    async def _on_stream(self, stream: FramedStream, addr: Address) -> None:
        first = None
        with trio.move_on_after(FIRST_FRAME_TIMEOUT_S) as waited:
            first = await stream.receive()
        if waited.cancelled_caught:  # holding one of the connections the transport allows
            self.transport.counters["dropped_stream_silent"] += 1
            return
        if isinstance(first, RaftStreamHello):
            await self.raft.serve_stream(stream, first)
        elif isinstance(first, PushPullState):
            await self.gossip.answer_push_pull(stream, first)
        elif isinstance(first, ProposeRequest):
            await self.forwarding.serve_propose(stream, first, addr)
        elif first is not None:
            handler = self.stream_handlers.get(type(first))
            if handler is None:
                self.transport.counters["dropped_stream_unexpected"] += 1
                return
            await handler(stream, first)

    async def _refresh_meta(self) -> None:
        published: NodeMeta | None = None
        while True:
            self.host = await host_info()
            meta = self._meta()
            if meta_news(published, meta):
                published = meta
                self._publish_meta(meta)
            with trio.move_on_at(timers.next_beat(self.config.meta_refresh_s)):
                await self.raft.leader_changed.wait()

    # ------------------------------------------------------------------------ run

    async def _run_executor(self) -> None:
        """Run this node's tasks; without a Docker engine, say so and keep trying."""
        # Docker's SDK (requests, urllib3: a tenth of a second) is loaded here, in a thread,
        # rather than with the agent, and once there is a state to run (a joining node's first
        # snapshot): off the path of a join or a restart, whose handshakes it would slow.
        await self.replica.wait_applied(1)
        await trio.to_thread.run_sync(importlib.import_module, "swarmlet.executor.docker_runtime")
        from swarmlet.executor.docker_runtime import open_docker_runtime  # loaded: no wait

        while True:
            try:
                async with open_docker_runtime() as runtime:
                    cluster_id = self.state.cluster_id or self.identity.cluster_id
                    self.executor = Executor(
                        runtime,
                        cluster_id=cluster_id,
                        node_id=self.node_id,
                        host_ip=self.identity.advertise_host,
                        publish_ip=self.identity.publish_host,
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
                            members=lambda: (host_of(n.addr) for n in self.state.nodes.values()),
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
        return [addr for a in sorted(addrs) if (addr := _address(a)) is not None]

    async def _reconnect_members(self) -> None:
        """Join again, every few seconds, members of the state that gossip does not see alive
        (`node.reconnect`): the start-up seeds come from a state that may not be replayed yet,
        and SWIM never probes a member it holds as dead or gone."""
        rng = random.Random()
        while True:
            await trio.sleep_until(timers.next_beat(RECONNECT_INTERVAL_S))
            members = ((n.id, n.addr) for n in self.state.nodes.values())
            targets = reconnect_targets(members, self.node_id, self.member_gossip_state, rng)
            if targets:
                self.gossip.join([addr for a in targets if (addr := _address(a)) is not None])

    def member_gossip_state(self, node_id: str) -> MemberState | None:
        """What gossip itself holds of `node_id` (None: never heard of), without the
        unheard-counts-as-down rule of `member_state`."""
        member = self.gossip.core.member(node_id)
        return member.state if member is not None else None

    async def run(
        self,
        serve_control: Callable[..., Awaitable[None]] | None = None,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        async with trio.open_nursery() as nursery:
            await self.transport.open_udp()
            await nursery.start(self.transport.serve_tcp, self._on_stream, self.joins.serve)
            await nursery.start(self.certificates.run)
            await nursery.start(self.raft.run)
            await nursery.start(
                self.at_rest.run,
                lambda: self.state,
                lambda: self.keyring.managers,
                lambda: self.raft.applied,
            )
            await nursery.start(self.forwarding.run)
            await nursery.start(self.status_reporter.run)
            await nursery.start(self.worker_session.run)
            await nursery.start(self.gossip.run)
            self.gossip.join(self.seeds())
            nursery.start_soon(self._reconnect_members)
            nursery.start_soon(self._record_unheard_down)
            nursery.start_soon(self._advertise_generic_resources)
            await nursery.start(self.leader.run)
            nursery.start_soon(self._run_executor)
            await nursery.start(self.proxy.run)
            nursery.start_soon(self._refresh_meta)
            if self.config.metrics_addr is not None:  # opt-in; prometheus_client only then
                from swarmlet.node.metrics import serve_metrics

                await nursery.start(serve_metrics, self, self.config.metrics_addr)
            if serve_control is not None:
                await nursery.start(serve_control)
            self.datadir.write_pid(os.getpid())
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


@functools.lru_cache(maxsize=1024)  # pure; and logged once per address, not at every use
def _address(text: str) -> Address | None:
    """A member's address as the state records it; None (logged) if it is not one. Joins check
    it (`security.join`), but a record written before they did must not stop the agent."""
    try:
        return parse_addr(text)
    except UsageError:
        log.warning("ignoring a node address that is not HOST:PORT: %r", text[:80])
        return None
