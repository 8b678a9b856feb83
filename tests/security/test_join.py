"""security.join: both sides of the join handshake over real loopback connections. The joining
side is `join_cluster`; the accepting side is the real `JoinAcceptor`, handed fakes for the key
ring (issuing real certificates with a real CA key), the write path and the replicated state.
Every test runs under `trio.fail_after`.
"""

from __future__ import annotations

import dataclasses
import socket
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import trio
import trio.testing

from swarmlet import certs, crypto
from swarmlet.errors import SwarmletError, UsageError
from swarmlet.security.datadir import DataDir
from swarmlet.security.join import REFUSAL_EVENT_EVERY_S, JoinAcceptor, join_cluster
from swarmlet.state.commands import AddNode, Command
from swarmlet.state.machine import ApplyResult, ClusterState
from swarmlet.state.model import Node, Role
from swarmlet.wire.peer_rpc import JoinChallenge, JoinProof, JoinReply, JoinRequest
from swarmlet.wire.transport import (
    Address,
    Counters,
    FramedStream,
    TlsConfig,
    Transport,
    open_join_stream,
)

if TYPE_CHECKING:
    from tests.conftest import TestCA

HOST = "127.0.0.1"
TIMEOUT_S = 10
CLUSTER = crypto.ClusterKeys(crypto.new_key())
TOKEN = crypto.JoinToken.new(CLUSTER)
MANAGERS = crypto.ManagerKeys(crypto.new_key())  # the CA key is the managers'


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class FakeKeys:
    """A key ring that opens one token for `role`, or none (a worker's), and issues
    certificates with MANAGERS' CA key. `issue_for` and `issue_to_key` make it issue for another
    node id or key than asked, `ca` makes it hand out another CA's certificate: what a faulty or
    hostile acceptor could send."""

    role: Role | None = Role.WORKER
    issue_for: str | None = None
    issue_to_key: bytes | None = None
    ca: crypto.ManagerKeys = MANAGERS

    def join_tokens(self) -> Mapping[bytes, tuple[Role, crypto.JoinToken]]:
        return {} if self.role is None else {TOKEN.key_id: (self.role, TOKEN)}

    def seal_manager_key_to(self, node_id: str, public_key: bytes) -> bytes:
        return b"sealed-for-" + node_id.encode()

    def seal_cluster_key_to(self, node_id: str, public_key: bytes) -> tuple[int, bytes]:
        return 0, b""  # never rotated: the reply's key is the current one

    def issue_certificate(self, node_id: str, role: Role, generation: int, key: bytes) -> bytes:
        return certs.issue(
            MANAGERS.ca_key,
            cluster_id="c",
            node_id=self.issue_for or node_id,
            role=role.value,
            generation=generation,
            public_key=self.issue_to_key or key,
            now=time.time(),
        )

    def ca_certificate(self) -> bytes:
        return certs.ca_certificate(self.ca.ca_key)


@dataclass
class Manager:
    """The accepting node's side: what the acceptor wrote, counted and recorded."""

    keys: FakeKeys = field(default_factory=FakeKeys)
    refuse_with: str = ""
    state: ClusterState = field(default_factory=ClusterState)
    written: list[Command] = field(default_factory=list)
    counters: Counters = field(default_factory=Counters)
    events: list[tuple[str, str, str, str]] = field(default_factory=list)

    async def write(self, command: Command) -> ApplyResult:
        self.written.append(command)
        if self.refuse_with:
            return ApplyResult(False, error=self.refuse_with)
        assert isinstance(command, AddNode)
        self.state.nodes[command.node.id] = command.node
        return ApplyResult(True, value=command.node.name)

    def record(self, type_: str, action: str, subject: str, message: str) -> None:
        self.events.append((type_, action, subject, message))


@pytest.fixture
def tls(test_ca: TestCA) -> TlsConfig:
    """The accepting node's cluster channel (the join channel does not use it)."""
    return test_ca.tls("m1")


@asynccontextmanager
async def serving(manager: Manager, tls: TlsConfig) -> AsyncIterator[Address]:
    addr = (HOST, free_port())
    server = Transport(addr, CLUSTER.message_key, tls)
    manager.state.cluster_id = "c"
    manager.state.nodes["m1"] = Node(
        id="m1", name="m1", addr="10.0.0.1:7946", publish_addr="10.0.0.1", role=Role.MANAGER
    )
    acceptor = JoinAcceptor(
        keyring=manager.keys,
        master_key=CLUSTER.master,
        state=lambda: manager.state,
        write=manager.write,
        is_ready=lambda node_id: True,
        counters=manager.counters,
        record_event=manager.record,
    )

    async def no_stream(_stream: FramedStream, _addr: Address) -> None:
        return

    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve_tcp, no_stream, acceptor.serve)
        yield addr
        nursery.cancel_scope.cancel()


async def join(addr: Address, datadir: DataDir) -> object:
    return await join_cluster(
        f"{addr[0]}:{addr[1]}",
        TOKEN,
        name="n2",
        name_is_explicit=False,
        advertise_host=HOST,
        port=1,
        publish_host=HOST,
        datadir=datadir,
    )


async def test_a_joiner_proves_it_holds_its_node_key_and_is_admitted(
    tmp_path: Path, tls: TlsConfig
) -> None:
    manager = Manager()
    d = DataDir(tmp_path / "n2")
    with trio.fail_after(TIMEOUT_S):
        async with serving(manager, tls) as addr:
            await join(addr, d)
    identity, master = d.read_identity()
    assert identity.name == "n2" and identity.role == "worker"
    assert master == CLUSTER.master
    assert identity.seeds == ("10.0.0.1:7946", f"{addr[0]}:{addr[1]}")
    [command] = manager.written
    assert isinstance(command, AddNode)
    assert command.node.id == identity.node_id and command.node.role is Role.WORKER
    assert command.node.public_key == crypto.public_key_of(d.read_node_key())
    assert command.node.sealed_manager_key == b""  # a worker gets no managers' key
    assert manager.events[-1][:3] == ("node", "joined", "n2")


async def test_a_manager_joiner_gets_the_managers_key_sealed_in_its_record(
    tmp_path: Path, tls: TlsConfig
) -> None:
    manager = Manager(keys=FakeKeys(Role.MANAGER))
    with trio.fail_after(TIMEOUT_S):
        async with serving(manager, tls) as addr:
            await join(addr, DataDir(tmp_path / "n2"))
    [command] = manager.written
    assert isinstance(command, AddNode)
    assert command.node.role is Role.MANAGER
    assert command.node.sealed_manager_key == b"sealed-for-" + command.node.id.encode()


async def test_a_node_that_cannot_open_the_tokens_refuses_every_join(
    tmp_path: Path, tls: TlsConfig
) -> None:
    manager = Manager(keys=FakeKeys(role=None))
    with trio.fail_after(TIMEOUT_S):
        async with serving(manager, tls) as addr:
            with pytest.raises(UsageError, match="refused the join token"):
                await join(addr, DataDir(tmp_path / "n2"))
    assert manager.written == []
    assert manager.counters["join_refused_bad_token"] == 1
    assert manager.events[-1][:2] == ("node", "join-refused")


async def test_a_flood_of_refused_joins_records_one_event_in_a_while_and_counts_each(
    tmp_path: Path, tls: TlsConfig, autojump_clock: trio.testing.MockClock
) -> None:
    """Anyone who can connect may try a join: one event each would push every other event out
    of the agent's ring."""
    manager = Manager(keys=FakeKeys(role=None))
    async with serving(manager, tls) as addr:
        for i in range(5):
            with pytest.raises(UsageError, match="refused the join token"):
                await join(addr, DataDir(tmp_path / f"n{i}"))
        await trio.sleep(REFUSAL_EVENT_EVERY_S)
        with pytest.raises(UsageError, match="refused the join token"):
            await join(addr, DataDir(tmp_path / "late"))
    assert manager.counters["join_refused_bad_token"] == 6
    refused = [e for e in manager.events if e[1] == "join-refused"]
    assert len(refused) == 2
    assert refused[1][3].endswith("(4 more refused since the last such event)")


async def test_a_join_the_state_refuses_is_refused_with_its_reason(
    tmp_path: Path, tls: TlsConfig
) -> None:
    manager = Manager(refuse_with="name n2 is taken")
    d = DataDir(tmp_path / "n2")
    with trio.fail_after(TIMEOUT_S):
        async with serving(manager, tls) as addr:
            with pytest.raises(UsageError, match="name n2 is taken"):
                await join(addr, d)
    assert not d.identity_file.exists()


@pytest.mark.parametrize("answer", [b"a guess", b""])
async def test_a_joiner_with_a_copied_public_key_is_refused(answer: bytes, tls: TlsConfig) -> None:
    """Public keys are in every replica of the state: a member that copies a node's id and
    key into a join request cannot open the challenge sealed to that key."""
    manager = Manager()
    victim_key = crypto.new_node_key()
    victim_public = crypto.public_key_of(victim_key)
    victim_signing = certs.raw_public_key(crypto.node_signing_key(victim_key))
    request = JoinRequest(
        "victim", "victim", False, "6.6.6.6:1", "6.6.6.6", 1, 1, victim_public, victim_signing
    )
    with trio.fail_after(TIMEOUT_S):
        async with serving(manager, tls) as addr:
            stream = await open_join_stream(addr, TOKEN.join_key, TOKEN.key_id)
            assert stream is not None
            async with stream.stream:
                await stream.send(request)
                challenge = await stream.receive(expect=(JoinChallenge,))
                assert challenge is not None
                await stream.send(JoinProof(answer))
                reply = await stream.receive(expect=(JoinReply,))
    assert reply is not None and not reply.ok and reply.error == "no proof of the node key"
    assert manager.written == []
    assert manager.counters["join_refused_no_proof"] == 1


@pytest.mark.parametrize("role", [Role.WORKER, Role.MANAGER])
async def test_a_joined_node_receives_a_certificate_for_its_id_key_and_the_tokens_role(
    tmp_path: Path, tls: TlsConfig, role: Role
) -> None:
    manager = Manager(keys=FakeKeys(role))
    d = DataDir(tmp_path / "n2")
    with trio.fail_after(TIMEOUT_S):
        async with serving(manager, tls) as addr:
            await join(addr, d)
    identity, _ = d.read_identity()
    cert, ca = d.read_certificate()
    assert ca == certs.ca_certificate(MANAGERS.ca_key)  # the cluster's CA, its trust anchor
    issued = certs.verify(cert, ca, now=time.time())
    assert (issued.node_id, issued.role, issued.generation) == (identity.node_id, role.value, 0)
    assert issued.public_key == certs.raw_public_key(d.signing_key())
    [command] = manager.written
    assert isinstance(command, AddNode)
    assert command.node.signing_key == issued.public_key  # its record names the same key
    # The key file in the data dir is the certificate's: OpenSSL refuses a pair that is not.
    certs.tls_context(server=True, ca_pem=ca, cert_file=d.cert_file, key_file=d.tls_key_file)


@pytest.mark.parametrize(
    ("keys", "refusal"),
    [
        (FakeKeys(issue_for="someone-else"), "certificate is for another node"),
        (
            FakeKeys(issue_to_key=certs.raw_public_key(crypto.node_signing_key(crypto.new_key()))),
            "certificate is for another node",
        ),
        (FakeKeys(ca=crypto.ManagerKeys(crypto.new_key())), "certificate in the join reply is"),
    ],
    ids=["another-node-id", "another-key", "another-ca"],
)
async def test_a_joiner_refuses_a_certificate_that_is_not_for_it(
    tmp_path: Path, tls: TlsConfig, keys: FakeKeys, refusal: str
) -> None:
    d = DataDir(tmp_path / "n2")
    with trio.fail_after(TIMEOUT_S):
        async with serving(Manager(keys=keys), tls) as addr:
            with pytest.raises(SwarmletError, match=refusal):
                await join(addr, d)
    assert not d.identity_file.exists()
    assert not d.has_certificate()


async def first_answer(addr: Address, request: JoinRequest) -> object:
    """What a manager answers first to `request` (a challenge, or a refusal)."""
    stream = await open_join_stream(addr, TOKEN.join_key, TOKEN.key_id)
    assert stream is not None
    async with stream.stream:
        await stream.send(request)
        return await stream.receive(expect=(JoinChallenge, JoinReply))


async def test_a_join_request_whose_signing_key_is_not_ed25519_is_refused(tls: TlsConfig) -> None:
    manager = Manager()
    node_key = crypto.new_node_key()
    request = JoinRequest(
        "n2", "n2", False, "6.6.6.6:1", "6.6.6.6", 1, 1, crypto.public_key_of(node_key), b"short"
    )
    with trio.fail_after(TIMEOUT_S):
        async with serving(manager, tls) as addr:
            reply = await first_answer(addr, request)
    assert isinstance(reply, JoinReply) and not reply.ok
    assert "not an Ed25519 public key" in reply.error
    assert manager.written == []


@pytest.mark.parametrize(
    ("field", "value", "refusal"),
    [
        ("node_id", "x" * 65, "invalid node id"),  # x509 raised ValueError: the manager stopped
        ("node_id", "", "invalid node id"),
        ("node_id", "N2/../x", "invalid node id"),
        ("addr", "a" * 70 + ":7946", "invalid address"),  # every member's seeds, then connect
        ("addr", "6.6.6.6:99999", "invalid address"),
        ("publish_addr", "a\x00b", "invalid publish address"),
        ("name", "\x1b[2Jn2", "invalid node name"),  # a terminal escape in `node ls`
        ("name", "n" * 254, "invalid node name"),
    ],
)
async def test_a_join_request_with_a_field_that_does_not_fit_is_refused_and_the_manager_serves_on(
    tmp_path: Path, tls: TlsConfig, field: str, value: str, refusal: str
) -> None:
    manager = Manager()
    node_key = crypto.new_node_key()
    signing = certs.raw_public_key(crypto.node_signing_key(node_key))
    good = JoinRequest(
        "n2", "n2", False, "6.6.6.6:1", "6.6.6.6", 1, 1, crypto.public_key_of(node_key), signing
    )
    request = dataclasses.replace(good, **{field: value})
    with trio.fail_after(TIMEOUT_S):
        async with serving(manager, tls) as addr:
            reply = await first_answer(addr, request)
            await join(addr, DataDir(tmp_path / "n3"))  # the next join is served
    assert isinstance(reply, JoinReply) and not reply.ok
    assert refusal in reply.error
    [command] = manager.written
    assert isinstance(command, AddNode) and command.node.name != value
