"""security.secret_delivery: a worker gets its task's secrets from a manager, sealed to it alone.

Real transports on 127.0.0.1, with TLS certificates of a test CA (`tests.conftest.TestCA`); the
Raft driver is replaced by a fake applied index. Every test runs under `trio.fail_after`.
"""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import trio

from swarmlet import crypto
from swarmlet.errors import SecretsUnavailableError
from swarmlet.security import secret_delivery as secretdelivery
from swarmlet.security.datadir import DataDir, Identity
from swarmlet.security.keyring import KeyRing
from swarmlet.security.secret_delivery import SecretDelivery
from swarmlet.state.commands import AddNode, CreateSecret, CreateService, InitCluster, PutTasks
from swarmlet.state.machine import ClusterState
from swarmlet.state.model import FileRef, Node, Role, Secret, Service, ServiceSpec, Task
from swarmlet.wire import codec as wire
from swarmlet.wire.peer_rpc import SecretsReply, SecretsRequest, SecretValues
from swarmlet.wire.transport import Address, FramedStream, TlsConfig, Transport

if TYPE_CHECKING:
    from tests.conftest import TestCA

HOST = "127.0.0.1"
TIMEOUT_S = 10
CLUSTER_KEY = crypto.new_key()
MANAGERS = crypto.ManagerKeys(crypto.new_key())


@dataclass
class FakeLog:
    """The part of the Raft driver delivery uses: how far this node has applied the log (and
    how far it knows it committed)."""

    applied: int = 10
    leader_id: str | None = "m1"
    commit_index: int = 10
    _changed: trio.Event = field(default_factory=trio.Event)

    def advance(self, index: int) -> None:
        self.applied = index
        self.commit_index = max(self.commit_index, index)
        self._changed.set()
        self._changed = trio.Event()

    async def wait_applied(self, index: int) -> None:
        while self.applied < index:
            await self._changed.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def data_dir(root: Path, node_id: str) -> DataDir:
    d = DataDir(root / node_id)
    identity = Identity(node_id, "c", node_id, HOST, 1, HOST, "worker")
    d.write_identity(identity, CLUSTER_KEY, crypto.new_node_key())
    return d


def task(task_id: str, node_id: str) -> Task:
    return Task(task_id, "s1", 1, 1, node_id=node_id)


def delivery(
    state: ClusterState,
    addrs: dict[str, Address],
    node_id: str,
    d: DataDir,
    log: FakeLog,
    tls: TlsConfig,
    *,
    ready: bool = True,
) -> SecretDelivery:
    """`addrs`: what node ids resolve to; `ready`: whether gossip sees the other nodes alive;
    `tls`: the certificate the node connects with."""
    return SecretDelivery(
        node_id=node_id,
        keyring=KeyRing(d, node_id, lambda: state, cluster_id="c"),
        state=lambda: state,
        raft=log,
        commit_index=lambda: log.commit_index,
        transport=Transport((HOST, 0), CLUSTER_KEY, tls),
        resolve=addrs.get,
        is_ready=lambda _node_id: ready,
    )


@dataclass
class World:
    state: ClusterState
    addrs: dict[str, Address]
    manager_log: FakeLog
    manager: SecretDelivery
    worker: SecretDelivery
    ca: TestCA

    def delivery(
        self, node_id: str, d: DataDir, *, ready: bool = True, certified_as: str = ""
    ) -> SecretDelivery:
        """Another node `node_id`, connecting with a worker certificate for `certified_as`
        (by default, for `node_id`)."""
        tls = self.ca.tls(certified_as or node_id, role="worker")
        return delivery(self.state, self.addrs, node_id, d, FakeLog(), tls, ready=ready)


@asynccontextmanager
async def world(root: Path, ca: TestCA) -> AsyncIterator[World]:
    """m1: a manager serving secrets; w1: a worker. api (s1) uses the secret api_key and the
    config settings; t1 runs on w1, t2 on m1."""
    m1, w1 = data_dir(root, "m1"), data_dir(root, "w1")
    m1.write_manager_key(MANAGERS.master)
    m1_public = crypto.public_key_of(m1.read_node_key())
    state = ClusterState()
    spec = ServiceSpec(
        "api",
        "img",
        secrets=(FileRef("api_key", "api_key"),),
        configs=(FileRef("settings", "/etc/settings"),),
    )
    for command in (
        InitCluster("c", 0.0, b"", b"", managers_public_key=MANAGERS.public_key),
        AddNode(
            Node(
                "m1",
                "m1",
                "m1:1",
                HOST,
                Role.MANAGER,
                public_key=m1_public,
                sealed_manager_key=MANAGERS.seal_to_node("m1", m1_public),
            )
        ),
        AddNode(
            Node(
                "w1",
                "w1",
                "w1:1",
                HOST,
                Role.WORKER,
                public_key=crypto.public_key_of(w1.read_node_key()),
            )
        ),
        CreateSecret(Secret("x1", "api_key", MANAGERS.seal_secret("x1", b"s3cret"))),
        CreateSecret(Secret("x2", "settings", b"debug=1", is_config=True)),
        CreateService(Service("s1", spec)),
        PutTasks((task("t1", "w1"), task("t2", "m1"))),
    ):
        assert state.apply(command).ok
    addrs: dict[str, Address] = {"m1": (HOST, free_port())}
    manager_log = FakeLog()
    m1_tls = ca.tls("m1")
    w = World(
        state,
        addrs,
        manager_log,
        delivery(state, addrs, "m1", m1, manager_log, m1_tls),
        delivery(state, addrs, "w1", w1, FakeLog(), ca.tls("w1", role="worker")),
        ca,
    )
    server = Transport(addrs["m1"], CLUSTER_KEY, m1_tls)

    async def on_stream(stream: FramedStream, _addr: Address) -> None:
        request = await stream.receive(expect=(SecretsRequest,))
        await w.manager.serve(stream, request)

    async def no_join(*_args: object) -> None:
        return

    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve_tcp, on_stream, no_join)
        yield w
        nursery.cancel_scope.cancel()


async def test_a_worker_receives_its_tasks_secrets_from_a_manager(
    tmp_path: Path, test_ca: TestCA
) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with world(tmp_path, test_ca) as w:
            files = await w.worker.task_files(task("t1", "w1"))
    assert files == {("api_key", False): b"s3cret", ("settings", True): b"debug=1"}
    assert w.worker.keyring.managers is None  # it never held the managers' key


async def test_a_manager_opens_its_own_tasks_secrets_without_asking(
    tmp_path: Path, test_ca: TestCA
) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with world(tmp_path, test_ca) as w:
            w.addrs.clear()  # nobody to ask: the values come from its own state
            files = await w.manager.task_files(task("t2", "m1"))
    assert files[("api_key", False)] == b"s3cret"


@pytest.mark.parametrize(
    ("task_id", "refusal"),
    [
        ("t2", "m1 refused: task t2 is not assigned to node w1"),
        ("t9", "m1 refused: no task t9"),
    ],
)
async def test_a_manager_refuses_a_task_that_is_not_the_nodes_own(
    tmp_path: Path, test_ca: TestCA, task_id: str, refusal: str
) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with world(tmp_path, test_ca) as w:
            with pytest.raises(SecretsUnavailableError, match=refusal):
                await w.worker.task_files(task(task_id, "w1"))
            assert w.manager.transport.counters["secrets_refused"] == 1


async def test_a_refusal_logs_one_short_line_whatever_the_asker_sends(
    tmp_path: Path, test_ca: TestCA, caplog: pytest.LogCaptureFixture
) -> None:
    """The task id is the asker's: one of 1 MiB made a log line of 2 MiB or more per request."""
    with trio.fail_after(TIMEOUT_S):
        async with world(tmp_path, test_ca) as w:
            with pytest.raises(SecretsUnavailableError, match="no task"):
                await w.worker.task_files(task("t" * (1 << 20), "w1"))
    [line] = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert line.startswith("secrets of task 'tttt") and len(line) < 600


async def test_a_member_posing_as_the_node_cannot_open_the_answer(
    tmp_path: Path, test_ca: TestCA
) -> None:
    """Even with a certificate that names the node: the values are sealed to the node key in
    its record, which the impostor does not hold."""
    with trio.fail_after(TIMEOUT_S):
        async with world(tmp_path, test_ca) as w:
            impostor = w.delivery("w1", data_dir(tmp_path / "elsewhere", "w1"))
            with pytest.raises(SecretsUnavailableError, match="m1 sent an invalid answer"):
                await impostor.task_files(task("t1", "w1"))


async def test_a_member_asking_in_another_nodes_name_is_refused(
    tmp_path: Path, test_ca: TestCA
) -> None:
    """The request's node id must be the connection's certificate's."""
    with trio.fail_after(TIMEOUT_S):
        async with world(tmp_path, test_ca) as w:
            w2 = w.delivery("w1", data_dir(tmp_path / "elsewhere", "w1"), certified_as="w2")
            with pytest.raises(SecretsUnavailableError, match="m1 refused: asked by w2 for w1"):
                await w2.task_files(task("t1", "w1"))
            assert w.manager.transport.counters["secrets_refused"] == 1


async def test_a_manager_behind_the_worker_waits_for_its_log_before_deciding(
    tmp_path: Path,
    test_ca: TestCA,
) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with world(tmp_path, test_ca) as w:
            w.manager_log.applied = 5  # the worker has applied up to 10

            async def catch_up() -> None:
                await trio.sleep(0.2)
                w.manager_log.advance(10)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(catch_up)
                files = await w.worker.task_files(task("t1", "w1"))
    assert files[("api_key", False)] == b"s3cret"


async def test_without_a_reachable_manager_the_task_cannot_start_and_says_why(
    tmp_path: Path,
    test_ca: TestCA,
) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with world(tmp_path, test_ca) as w:
            w.addrs["m1"] = (HOST, free_port())  # nothing listens there
            with pytest.raises(SecretsUnavailableError, match="m1 unreachable"):
                await w.worker.task_files(task("t1", "w1"))
            down = w.delivery("w1", data_dir(tmp_path / "down", "w1"), ready=False)
            with pytest.raises(SecretsUnavailableError, match="no manager is reachable"):
                await down.task_files(task("t1", "w1"))


async def test_an_index_beyond_the_managers_commit_index_is_refused_at_once(
    tmp_path: Path,
    test_ca: TestCA,
) -> None:
    """The asker chooses `min_index`: a manager that does not know that index committed refuses
    without waiting for it (the leader, asked first, never lags a worker)."""
    with trio.fail_after(TIMEOUT_S):
        async with world(tmp_path, test_ca) as w:
            w.manager_log.applied = w.manager_log.commit_index = 5  # the worker has applied 10
            with pytest.raises(SecretsUnavailableError, match="beyond its commit index 5"):
                await w.worker.task_files(task("t1", "w1"))


Answer = Callable[[SecretsRequest], Awaitable[SecretsReply]]


@asynccontextmanager
async def impostor_at(addr: Address, answer: Answer, tls: TlsConfig) -> AsyncIterator[None]:
    """A member answering SecretsRequests at `addr` in a manager's place, e.g. at an address
    it took over, with the certificate of `tls`."""
    server = Transport(addr, CLUSTER_KEY, tls)

    async def on_stream(stream: FramedStream, _addr: Address) -> None:
        request = await stream.receive(expect=(SecretsRequest,))
        assert request is not None
        await stream.send(await answer(request))

    async def no_join(*_args: object) -> None:
        return

    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve_tcp, on_stream, no_join)
        yield
        nursery.cancel_scope.cancel()


def values_for(
    w: World, request: SecretsRequest, nonce: bytes, signer: crypto.ManagerKeys
) -> SecretsReply:
    """What an impostor can make: any values, sealed to the worker's public key."""
    aad = crypto.delivery_aad(request.node_id, request.task_id, nonce)
    plain = wire.encode(SecretValues({"api_key": b"chosen by the impostor"}))
    sealed = crypto.seal_to(w.state.nodes["w1"].public_key, plain, aad)
    return SecretsReply(True, sealed=sealed, signature=signer.sign(aad + sealed))


@pytest.mark.parametrize("forgery", ["unsigned", "another-key", "replayed"])
async def test_values_sealed_to_the_worker_by_a_non_manager_are_refused(
    tmp_path: Path, test_ca: TestCA, forgery: str
) -> None:
    """Even from a server whose certificate names the manager: the delivery's signature is
    checked whatever the connection proves."""

    async def answer(request: SecretsRequest) -> SecretsReply:
        if forgery == "replayed":  # a genuine delivery, captured from an earlier request
            return values_for(w, request, b"an earlier nonce", MANAGERS)
        reply = values_for(w, request, request.nonce, crypto.ManagerKeys(crypto.new_key()))
        return SecretsReply(True, sealed=reply.sealed) if forgery == "unsigned" else reply

    with trio.fail_after(TIMEOUT_S):
        async with world(tmp_path, test_ca) as w:
            w.addrs["m1"] = (HOST, free_port())
            async with impostor_at(w.addrs["m1"], answer, test_ca.tls("m1")):
                with pytest.raises(SecretsUnavailableError, match="m1 sent an invalid answer"):
                    await w.worker.task_files(task("t1", "w1"))


async def test_a_server_whose_certificate_names_another_node_is_not_asked(
    tmp_path: Path, test_ca: TestCA
) -> None:
    """Whoever answers at a manager's address is that manager only if its certificate says so,
    even a manager's certificate of the same CA."""

    async def answer(request: SecretsRequest) -> SecretsReply:
        return values_for(w, request, request.nonce, MANAGERS)  # as m1 would answer

    with trio.fail_after(TIMEOUT_S):
        async with world(tmp_path, test_ca) as w:
            w.addrs["m1"] = (HOST, free_port())
            async with impostor_at(w.addrs["m1"], answer, test_ca.tls("m9")):
                with pytest.raises(SecretsUnavailableError, match=r"is m9, not m1"):
                    await w.worker.task_files(task("t1", "w1"))
            assert w.worker.transport.counters["refused_peer_wrong_node"] == 1


async def test_managers_are_asked_leader_first_each_briefly_and_all_within_a_bound(
    tmp_path: Path, test_ca: TestCA, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Asking holds an executor start slot: managers that accept and never answer cost at most
    ASK_TIMEOUT_S each and ASK_TOTAL_S in all."""
    monkeypatch.setattr(secretdelivery, "ASK_TIMEOUT_S", 0.3)
    monkeypatch.setattr(secretdelivery, "ASK_TOTAL_S", 0.8)

    async def never(_request: SecretsRequest) -> SecretsReply:
        await trio.sleep_forever()
        raise AssertionError

    with trio.fail_after(TIMEOUT_S):
        async with world(tmp_path, test_ca) as w:
            for name in ("m2", "m3", "m4"):
                public = crypto.public_key_of(crypto.new_node_key())
                blob = MANAGERS.seal_to_node(name, public)
                record = Node(name, name, f"{name}:1", HOST, Role.MANAGER, public_key=public)
                assert w.state.apply(
                    AddNode(dataclasses.replace(record, sealed_manager_key=blob))
                ).ok
            w.worker.raft.leader_id = "m3"  # type: ignore[misc]
            async with AsyncExitStack() as stack:
                for name in ("m1", "m2", "m3", "m4"):
                    w.addrs[name] = (HOST, free_port())
                    impostor = impostor_at(w.addrs[name], never, test_ca.tls(name))
                    await stack.enter_async_context(impostor)
                with pytest.raises(SecretsUnavailableError) as caught:
                    await w.worker.task_files(task("t1", "w1"))
    answers = str(caught.value).split(": ", 1)[1].split("; ")
    assert answers == [
        "m3 did not answer within 0.3 s",  # the leader first
        "m1 did not answer within 0.3 s",  # then the others by name
        "m2 was still being asked after 0.8 s in all",  # m4 was never asked
    ]
