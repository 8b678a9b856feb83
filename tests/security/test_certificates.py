"""security.certificates: a node's certificate over its life, with real data dirs and a real CA
key. A manager issues its own; a worker asks a manager over real TLS transports on 127.0.0.1, and
the manager issues for the key the worker connected with and the role and generation of the
worker's record, never for what the worker's certificate said. Every I/O test runs under
`trio.fail_after`."""

from __future__ import annotations

import dataclasses
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trio
import trio.testing
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from swarmlet import certs, crypto
from swarmlet.errors import StorageCorruptError
from swarmlet.security import peer_policy
from swarmlet.security.certificates import Certificates
from swarmlet.security.datadir import DataDir, Identity
from swarmlet.security.keyring import KeyRing
from swarmlet.state.machine import ClusterState
from swarmlet.state.model import Node, Role
from swarmlet.wire.peer_rpc import CertReply, CertRequest
from swarmlet.wire.transport import (
    LINK_ERRORS,
    Address,
    Counters,
    FramedStream,
    TlsConfig,
    Transport,
)
from tests.task_wakeups import tasks_woken

HOST = "127.0.0.1"
TIMEOUT_S = 10
CLUSTER_ID = "c1"
CLUSTER_KEY = crypto.new_key()
MANAGERS = crypto.ManagerKeys(crypto.new_key())
CA_PEM = certs.ca_certificate(MANAGERS.ca_key)
LIFETIME_S = 3600.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def data_dir(root: Path, node_id: str, *, manager: bool) -> DataDir:
    d = DataDir(root / node_id)
    role = "manager" if manager else "worker"
    d.write_identity(
        Identity(node_id, CLUSTER_ID, node_id, HOST, 1, HOST, role),
        CLUSTER_KEY,
        crypto.new_node_key(),
    )
    if manager:
        d.write_manager_key(MANAGERS.master)
    return d


def signing_key_of(d: DataDir) -> bytes:
    return certs.raw_public_key(d.signing_key())


def record(d: DataDir, node_id: str, role: Role, generation: int = 0) -> Node:
    """`node_id`'s record as the join wrote it (its keys), then promoted or demoted to `role`
    `generation` times."""
    public = crypto.public_key_of(d.read_node_key())
    sealed = MANAGERS.seal_to_node(node_id, public) if role is Role.MANAGER else b""
    return Node(
        node_id,
        node_id,
        f"{HOST}:1",
        HOST,
        role,
        public_key=public,
        sealed_manager_key=sealed,
        signing_key=signing_key_of(d),
        cert_generation=generation,
    )


def install_certificate(d: DataDir, node_id: str, role: Role, generation: int) -> None:
    """A certificate in `d` as a join or an earlier renewal left it."""
    cert = certs.issue(
        MANAGERS.ca_key,
        cluster_id=CLUSTER_ID,
        node_id=node_id,
        role=role.value,
        generation=generation,
        public_key=signing_key_of(d),
        now=time.time(),
        lifetime_s=LIFETIME_S,
    )
    d.write_certificate(cert, CA_PEM)


def new_state(*nodes: Node) -> ClusterState:
    state = ClusterState()
    state.cluster_id = CLUSTER_ID
    state.managers_public_key = MANAGERS.public_key
    state.nodes = {n.id: n for n in nodes}
    return state


async def no_network(addr: Address, node_id: str) -> FramedStream:
    raise OSError(f"no network in this test ({node_id} at {addr})")


@dataclass
class Side:
    """One node's certificates, and what it installed into its transport."""

    certificates: Certificates
    installed: list[TlsConfig] = field(default_factory=list)


def side(
    d: DataDir,
    node_id: str,
    state: ClusterState,
    *,
    connect: Callable[[Address, str], Awaitable[FramedStream]] = no_network,
    managers: Callable[[], list[tuple[str, Address]]] = list,
    install: Callable[[TlsConfig], None] | None = None,
) -> Side:
    installed: list[TlsConfig] = []

    def on_install(tls: TlsConfig) -> None:
        installed.append(tls)
        if install is not None:
            install(tls)

    certificates = Certificates(
        datadir=d,
        node_id=node_id,
        cluster_id=CLUSTER_ID,
        keyring=KeyRing(
            d, node_id, lambda: state, cluster_id=CLUSTER_ID, cert_lifetime_s=LIFETIME_S
        ),
        state=lambda: state,
        admit=lambda peer: peer_policy.admit(peer, state, CLUSTER_ID, time.time()),
        connect=connect,
        managers=managers,
        install=on_install,
        counters=Counters(),
    )
    return Side(certificates, installed)


def on_disk(d: DataDir) -> certs.PeerIdentity:
    cert, ca = d.read_certificate()
    assert ca == CA_PEM
    return certs.verify(cert, ca, now=time.time())


# ------------------------------------------------------------------------------ a manager's own


@pytest.mark.parametrize(
    ("records", "expected"),
    [
        ([("m1", Role.MANAGER, 2)], ("manager", 2)),  # as its record says
        ([], ("manager", 0)),  # `init`: before its record exists
    ],
)
def test_a_manager_without_a_certificate_issues_its_own_at_start(
    tmp_path: Path, records: list[tuple[str, Role, int]], expected: tuple[str, int]
) -> None:
    d = data_dir(tmp_path, "m1", manager=True)
    state = new_state(*(record(d, *r) for r in records))
    assert not d.has_certificate()
    m1 = side(d, "m1", state)
    own = on_disk(d)
    assert (own.node_id, own.cluster_id, (own.role, own.generation)) == ("m1", CLUSTER_ID, expected)
    assert own.public_key == signing_key_of(d)
    assert m1.certificates.current == own
    assert m1.installed == []  # the agent builds its transport from `tls()` at start


def test_a_worker_without_a_certificate_does_not_start(tmp_path: Path) -> None:
    d = data_dir(tmp_path, "w1", manager=False)
    with pytest.raises(StorageCorruptError, match="no certificate"):
        side(d, "w1", new_state(record(d, "w1", Role.WORKER)))


@pytest.mark.parametrize(("holder", "cluster"), [("w9", CLUSTER_ID), ("w1", "another")])
def test_a_worker_with_a_certificate_for_another_node_does_not_start(
    tmp_path: Path, holder: str, cluster: str
) -> None:
    d = data_dir(tmp_path, "w1", manager=False)
    cert = certs.issue(
        MANAGERS.ca_key,
        cluster_id=cluster,
        node_id=holder,
        role="worker",
        generation=0,
        public_key=signing_key_of(d),
        now=time.time(),
    )
    d.write_certificate(cert, CA_PEM)
    with pytest.raises(StorageCorruptError, match=f"it is for node {holder} of cluster"):
        side(d, "w1", new_state(record(d, "w1", Role.WORKER)))


def test_a_manager_replaces_a_certificate_that_is_not_its_own(tmp_path: Path) -> None:
    d = data_dir(tmp_path, "m1", manager=True)
    install_certificate(d, "m9", Role.MANAGER, 0)
    m1 = side(d, "m1", new_state(record(d, "m1", Role.MANAGER, 1)))
    assert (m1.certificates.current.node_id, m1.certificates.current.generation) == ("m1", 1)
    assert on_disk(d) == m1.certificates.current


# ------------------------------------------------------------------------------ due


@pytest.mark.parametrize(
    ("change", "due"),
    [
        (None, False),
        ({"cert_generation": 1}, True),  # a role change since (promoted and demoted again)
        ({"role": Role.MANAGER}, True),  # a promotion
        ("no record", False),  # not in this node's state yet: only the lifetime counts
    ],
)
def test_renewal_is_due_when_the_record_names_another_role_or_generation(
    tmp_path: Path, change: dict[str, object] | str | None, due: bool
) -> None:
    d = data_dir(tmp_path, "w1", manager=False)
    install_certificate(d, "w1", Role.WORKER, 0)
    state = new_state(record(d, "w1", Role.WORKER, 0))
    w1 = side(d, "w1", state).certificates
    if change == "no record":
        state.nodes.clear()
    elif isinstance(change, dict):
        state.nodes["w1"] = dataclasses.replace(state.nodes["w1"], **change)  # type: ignore[arg-type]
    fresh = w1.current.not_after - LIFETIME_S  # when it was issued
    why = w1.due(fresh)
    assert (why is not None) is due, why
    if due:
        assert "the node is now a" in str(why)


def test_renewal_is_due_once_half_of_the_lifetime_has_passed(tmp_path: Path) -> None:
    d = data_dir(tmp_path, "w1", manager=False)
    install_certificate(d, "w1", Role.WORKER, 0)
    w1 = side(d, "w1", new_state(record(d, "w1", Role.WORKER, 0))).certificates
    half_life = w1.current.not_after - LIFETIME_S / 2
    assert w1.due(half_life) is None
    assert w1.due(half_life + 1) == "half of its lifetime has passed"


# ------------------------------------------------------------------------------ renew


async def test_a_manager_renews_by_issuing_locally_and_installs_the_new_certificate(
    tmp_path: Path,
) -> None:
    d = data_dir(tmp_path, "m1", manager=True)
    state = new_state(record(d, "m1", Role.MANAGER, 0))
    m1 = side(d, "m1", state)  # `connect` fails: a manager asks nobody
    assert m1.certificates.current.generation == 0
    state.nodes["m1"] = dataclasses.replace(state.nodes["m1"], cert_generation=2)
    why = m1.certificates.due(time.time())
    assert why is not None
    with trio.fail_after(TIMEOUT_S):
        assert await m1.certificates.renew(why)
    assert (m1.certificates.current.role, m1.certificates.current.generation) == ("manager", 2)
    assert on_disk(d) == m1.certificates.current
    assert len(m1.installed) == 1
    assert m1.certificates.counters["certificate_renewals"] == 1
    assert m1.certificates.due(time.time()) is None


async def test_the_renewal_loop_is_woken_only_by_a_change_that_makes_a_renewal_due(
    tmp_path: Path,
) -> None:
    d = data_dir(tmp_path, "m1", manager=True)
    state = new_state(record(d, "m1", Role.MANAGER, 0))
    renewed = trio.Event()
    m1 = side(d, "m1", state, install=lambda tls: renewed.set())
    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            await nursery.start(m1.certificates.run)
            await trio.testing.wait_all_tasks_blocked()
            # The agent notifies at every applied batch of writes: most change nothing here.
            with tasks_woken() as woken:
                for _ in range(3):
                    m1.certificates.notify()
                    await trio.testing.wait_all_tasks_blocked()
            assert woken == []
            assert m1.installed == []

            state.nodes["m1"] = dataclasses.replace(state.nodes["m1"], cert_generation=1)
            m1.certificates.notify()
            await renewed.wait()
            assert m1.certificates.current.generation == 1
            nursery.cancel_scope.cancel()


@dataclass
class ManagerSide:
    addr: Address
    side: Side
    transport: Transport
    peers: list[certs.PeerIdentity | None] = field(default_factory=list)


Serve = Callable[[FramedStream, object], Awaitable[None]]


@asynccontextmanager
async def serving_manager(
    root: Path, state: ClusterState, serve: Serve | None = None
) -> AsyncIterator[ManagerSide]:
    """m1, a manager with a certificate it issued itself, answering CertRequests on the cluster
    channel (as the agent's stream handler dispatches them) with `Certificates.serve`, or with
    `serve` in its place."""
    d = data_dir(root, "m1", manager=True)
    state.nodes["m1"] = record(d, "m1", Role.MANAGER)
    m1 = side(d, "m1", state)
    addr = (HOST, free_port())
    transport = Transport(addr, CLUSTER_KEY, m1.certificates.tls())
    manager = ManagerSide(addr, m1, transport)

    async def on_stream(stream: FramedStream, _addr: Address) -> None:
        manager.peers.append(stream.peer)
        request = await stream.receive(expect=(CertRequest,))
        if request is not None:
            await (serve or m1.certificates.serve)(stream, request)

    async def no_join(*_args: object) -> None:
        return

    async with trio.open_nursery() as nursery:
        await nursery.start(transport.serve_tcp, on_stream, no_join)
        yield manager
        nursery.cancel_scope.cancel()


@dataclass
class WorkerSide:
    side: Side
    transport: Transport
    d: DataDir

    @property
    def certificates(self) -> Certificates:
        return self.side.certificates


def worker(
    root: Path, node_id: str, state: ClusterState, manager: ManagerSide, *, cert: tuple[Role, int]
) -> WorkerSide:
    """`node_id` with a certificate of role and generation `cert`, asking m1 to renew it over
    its own transport, into which it installs what it receives."""
    d = data_dir(root, node_id, manager=False)
    install_certificate(d, node_id, *cert)
    transport: Transport | None = None

    async def connect(addr: Address, peer_id: str) -> FramedStream:
        assert transport is not None
        return await transport.connect(addr, peer_id)

    def install(tls: TlsConfig) -> None:
        assert transport is not None
        transport.set_tls(tls)

    s = side(
        d,
        node_id,
        state,
        connect=connect,
        managers=lambda: [("m1", manager.addr)],
        install=install,
    )
    transport = Transport((HOST, 0), CLUSTER_KEY, s.certificates.tls())
    return WorkerSide(s, transport, d)


async def test_a_worker_renews_from_a_manager_as_its_record_says(tmp_path: Path) -> None:
    """w1 was a manager and is now demoted (generation 1): its certificate still says manager
    (generation 0); the manager takes it as a worker's and issues as the record says."""
    state = new_state()
    with trio.fail_after(TIMEOUT_S):
        async with serving_manager(tmp_path, state) as m1:
            w1 = worker(tmp_path, "w1", state, m1, cert=(Role.MANAGER, 0))
            state.nodes["w1"] = record(w1.d, "w1", Role.WORKER, 1)
            before = w1.certificates.current
            why = w1.certificates.due(time.time())
            assert why is not None
            assert await w1.certificates.renew(why)
            renewed = w1.certificates.current
            assert await w1.certificates.renew("again, with the new certificate")
    assert (before.role, before.generation) == ("manager", 0)
    assert (renewed.node_id, renewed.role, renewed.generation) == ("w1", "worker", 1)
    assert renewed.public_key == before.public_key  # for the key it connected with
    assert on_disk(w1.d) == w1.certificates.current
    assert len(w1.side.installed) == 2
    assert m1.side.certificates.counters["certificates_issued"] == 2
    # What m1 saw of w1: its old manager certificate taken as a worker's (an older generation),
    # then, once installed, the renewed one.
    seen = [(p.node_id, p.role, p.generation) for p in m1.peers if p is not None]
    assert seen == [("w1", "worker", 0), ("w1", "worker", 1)]
    assert w1.certificates.due(time.time()) is None


async def ask(w: WorkerSide, manager: ManagerSide) -> CertReply | None:
    """One CertRequest, as `Certificates` sends it, and the manager's reply."""
    stream = await w.transport.connect(manager.addr, "m1")
    async with stream.stream:
        await stream.send(CertRequest())
        reply: CertReply | None = await stream.receive(expect=(CertReply,))
        return reply


async def test_a_manager_refuses_a_node_that_is_not_in_its_state(tmp_path: Path) -> None:
    """A certificate of the cluster's CA for a node that has no record (e.g. one whose join was
    not committed): nothing to issue from."""
    state = new_state()
    with trio.fail_after(TIMEOUT_S):
        async with serving_manager(tmp_path, state) as m1:
            w9 = worker(tmp_path, "w9", state, m1, cert=(Role.WORKER, 0))
            reply = await ask(w9, m1)
            before = w9.certificates.current
            assert not await w9.certificates.renew("test")
    assert reply == CertReply(False, error="not a member of this cluster")
    assert w9.certificates.current == before
    assert w9.side.installed == []
    assert w9.certificates.counters["certificate_renewal_failures"] == 1
    assert m1.side.certificates.counters["certificates_issued"] == 0


async def test_a_manager_refuses_a_certificate_whose_key_is_not_the_records(
    tmp_path: Path,
) -> None:
    """The record's signing key is the one the node joined with: a certificate of the CA for the
    node's id with another key (one issued to someone else in its name) renews nothing. The peer
    policy refuses it at the door (`peer_policy.admit`: "other_key"), before the request."""
    state = new_state()
    with trio.fail_after(TIMEOUT_S):
        async with serving_manager(tmp_path, state) as m1:
            w1 = worker(tmp_path, "w1", state, m1, cert=(Role.WORKER, 0))
            other = certs.raw_public_key(crypto.node_signing_key(crypto.new_node_key()))
            state.nodes["w1"] = dataclasses.replace(
                record(w1.d, "w1", Role.WORKER, 1), signing_key=other
            )
            try:
                reply = await ask(w1, m1)
            except LINK_ERRORS:
                reply = None
            assert not await w1.certificates.renew("test")
    assert reply is None
    assert m1.transport.counters["refused_peer_other_key"] == 2
    assert m1.side.certificates.counters["certificates_issued"] == 0
    assert w1.certificates.current.generation == 0


async def test_a_removed_node_cannot_renew(tmp_path: Path) -> None:
    state = new_state()
    with trio.fail_after(TIMEOUT_S):
        async with serving_manager(tmp_path, state) as m1:
            w1 = worker(tmp_path, "w1", state, m1, cert=(Role.WORKER, 0))
            state.removed_nodes["w1"] = time.time()
            assert not await w1.certificates.renew("test")
    assert m1.transport.counters["refused_peer_removed"] == 1
    assert m1.side.certificates.counters["certificates_issued"] == 0
    assert w1.side.installed == []


@pytest.mark.parametrize("wrong", ["another-key", "another-node"])
async def test_a_worker_installs_no_certificate_that_is_not_for_itself(
    tmp_path: Path, wrong: str
) -> None:
    """What a manager answers is checked like the join reply: for this node and its key."""

    async def serve(stream: FramedStream, _request: object) -> None:
        other_key = certs.raw_public_key(crypto.node_signing_key(crypto.new_node_key()))
        cert = certs.issue(
            MANAGERS.ca_key,
            cluster_id=CLUSTER_ID,
            node_id="w1" if wrong == "another-key" else "w2",
            role="worker",
            generation=1,
            public_key=other_key if wrong == "another-key" else signing_key_of(w1.d),
            now=time.time(),
        )
        await stream.send(CertReply(True, certificate=cert))

    state = new_state()
    with trio.fail_after(TIMEOUT_S):
        async with serving_manager(tmp_path, state, serve) as m1:
            w1 = worker(tmp_path, "w1", state, m1, cert=(Role.WORKER, 0))
            state.nodes["w1"] = record(w1.d, "w1", Role.WORKER, 1)
            before = w1.d.read_certificate()
            assert not await w1.certificates.renew("test")
    assert w1.d.read_certificate() == before
    assert w1.side.installed == []
    assert w1.certificates.counters["certificate_renewal_failures"] == 1


@pytest.mark.parametrize("certificate", ["expired", "missing"])
async def test_a_manager_behind_the_cas_seed_at_start_keeps_the_cluster_ca(
    tmp_path: Path, certificate: str
) -> None:
    """After a rotation of the managers' key, the CA's seed is in the state, sealed; a manager
    that starts with an unusable certificate has not replayed its log yet, and the CA it would
    derive from its (new) managers' key is not the cluster's. It used to write that CA over
    `ca.crt` (7 days down are enough for an expired certificate): every peer, and the node
    itself, then refused the other. It keeps the cluster's CA, starts, and issues its own once
    its replica holds the seed."""
    seed = crypto.new_key()
    cluster_ca = certs.ca_certificate(Ed25519PrivateKey.from_private_bytes(seed))
    d = data_dir(tmp_path, "m1", manager=True)
    issued_at = time.time() - (2 * LIFETIME_S if certificate == "expired" else 0)
    cert = certs.issue(
        Ed25519PrivateKey.from_private_bytes(seed),
        cluster_id=CLUSTER_ID,
        node_id="m1",
        role="manager",
        generation=0,
        public_key=signing_key_of(d),
        now=issued_at,
        lifetime_s=LIFETIME_S,
    )
    d.write_certificate(cert, cluster_ca)
    if certificate == "missing":
        d.cert_file.unlink()
    replayed = new_state(record(d, "m1", Role.MANAGER))
    state = new_state()  # what the agent holds before Raft replays its log
    m1 = side(d, "m1", state)
    assert d.read_certificate()[1] == cluster_ca
    assert m1.certificates.due(time.time()) == "it was unusable at start"
    with trio.fail_after(TIMEOUT_S):
        assert not await m1.certificates.renew("at start")  # still behind
        assert d.read_certificate()[1] == cluster_ca
        state.nodes = dict(replayed.nodes)
        state.sealed_ca_seed = MANAGERS.seal_secret("ca-seed/1", seed)
        assert await m1.certificates.renew("caught up")
    cert_now, ca_now = d.read_certificate()
    assert ca_now == cluster_ca
    assert certs.verify(cert_now, cluster_ca, now=time.time()) == m1.certificates.current
    assert m1.certificates.due(time.time()) is None


async def test_a_ca_an_older_release_wrote_wrongly_is_replaced_once_the_state_holds_the_seed(
    tmp_path: Path,
) -> None:
    """An older release wrote a CA derived from the managers' key over the cluster's (its
    replica had not applied the CA's seed yet), with a certificate under it: a consistent
    pair, but not the cluster's. Once the state holds the seed, renewal writes the cluster's."""
    seed = crypto.new_key()
    cluster_ca = certs.ca_certificate(Ed25519PrivateKey.from_private_bytes(seed))
    d = data_dir(tmp_path, "m1", manager=True)
    install_certificate(d, "m1", Role.MANAGER, 0)  # under CA_PEM, derived from MANAGERS
    state = new_state(record(d, "m1", Role.MANAGER))
    state.sealed_ca_seed = MANAGERS.seal_secret("ca-seed/1", seed)
    m1 = side(d, "m1", state)
    with trio.fail_after(TIMEOUT_S):
        assert await m1.certificates.renew("half of its lifetime has passed")
    cert, ca = d.read_certificate()
    assert ca == cluster_ca
    assert certs.verify(cert, ca, now=time.time()) == m1.certificates.current
