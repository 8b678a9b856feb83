"""A malicious worker against a real cluster (issue #15): every attack is refused and counted, and
the cluster's leader, terms and nodes are what they were.

The attacker is this test process. It holds a copy of a real worker's data dir (its certificate,
its identity key, the cluster key: everything a compromised worker host gives away) and speaks
the cluster channel and gossip with the project's own transport, codec and datagram envelope,
from its own loopback address (`ATTACKER_HOST`), so nothing it sends is mistaken for the real
worker's traffic. The real worker keeps running: a compromised host does not stop its agent, and
the legitimate worker must stay ready and unaffected while someone else uses its credentials (in
the `node rm` test, the removed agent keeps running and trying, as the issue asks).

Where a refusal could be blamed on a malformed request rather than on the sender's identity, a
control sends the same request with a manager's credentials and is answered: the logs and the
secrets of the same task, a proposal with a valid managers' MAC (taken from a manager's data dir,
as a frame captured from a manager would carry it). For gossip, the control is the worker's own:
a ping it signs in its own name is answered, so a datagram refused is refused for its sender.

One cluster serves the attacks that leave it as it was; the removal test has its own. Every
check compares counters before and after, so the tests do not depend on each other's order.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import itertools
import json
import os
import random
import ssl
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import pytest
import trio

from swarmlet import certs, crypto
from swarmlet.errors import RemoteProtocolError
from swarmlet.gossip.driver import GossipDatagram
from swarmlet.gossip.messages import (
    Ack,
    Alive,
    Dead,
    MemberState,
    Nack,
    Ping,
    PingReq,
    PushNodeState,
    PushPullState,
    Suspect,
    alive_signed_bytes,
    leave_signed_bytes,
)
from swarmlet.node.agent import FIRST_FRAME_TIMEOUT_S
from swarmlet.node.replicated import encode_command
from swarmlet.node.status_reports import (
    MAX_PORT_ERRORS,
    MAX_STATUSES_PER_REPORT,
    STATUS_BURST_BYTES,
    STATUS_BYTES_PER_S,
)
from swarmlet.raft.driver import RaftStreamHello
from swarmlet.raft.messages import (
    AppendEntries,
    AppendResp,
    Heartbeat,
    HeartbeatResp,
    InstallSnapshot,
    ReadIndexResp,
    RequestVote,
    TimeoutNow,
    VoteResp,
)
from swarmlet.raft.types import ConfState, Entry, Snapshot, SnapshotMeta
from swarmlet.security import propose_auth
from swarmlet.security.certificates import tls_config
from swarmlet.security.datadir import DataDir
from swarmlet.state.commands import Command, RemoveNode, UpdateNode
from swarmlet.state.model import Role, TaskState
from swarmlet.state.observed import (
    Endpoint,
    NodeLoad,
    NodeMeta,
    StatusReport,
    StatusReportReply,
    TaskLoad,
    TaskObservation,
    decode_meta,
    encode_meta,
    status_bytes,
)
from swarmlet.state.worker_view import SessionHello, ViewUpdate
from swarmlet.wire import codec as wire
from swarmlet.wire.peer_rpc import (
    CertReply,
    CertRequest,
    EndOfStream,
    LogLine,
    LogsRequest,
    ProposeBatch,
    ProposeBatchReply,
    ProposeReply,
    ProposeRequest,
    SecretsReply,
    SecretsRequest,
)
from swarmlet.wire.transport import (
    CHANNEL_CLUSTER,
    MAX_DATAGRAM_BYTES,
    DatagramAuth,
    FramedStream,
    Transport,
)
from tests.integration.cluster import (
    AgentHandle,
    LocalCluster,
    get,
    local_cluster,
    run_cli,
    tasks,
    wait_for,
)

pytestmark = pytest.mark.integration

ATTACKER_HOST = "127.0.0.50"  # no agent listens there; connections come from it
HUGE_TERM = 2**64 - 1  # the largest integer msgpack encodes: issue #15's killer heartbeat
# Far above any incarnation in use, yet well formed (below MAX_INCARNATION): a receiver can refuse
# it only for who says it (issue #15, item 3).
HUGE_INCARNATION = 2**62
TEST_TIMEOUT_S = 240.0  # every test, cluster start included, under one absolute deadline
CUT_WAIT_S = 10.0  # how long a refused connection may take to be closed by its peer

# What a refused connection looks like from the attacker's side: closed, reset, or a frame that
# no longer decodes because the TLS session was torn down.
_CUT = (trio.BrokenResourceError, trio.ClosedResourceError, RemoteProtocolError, OSError)

T = TypeVar("T")


async def off_loop(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """A blocking helper of `tests.integration.cluster` (a CLI call, a bounded poll) in a
    thread, so that the attacker's open connections are still served meanwhile."""
    return await trio.to_thread.run_sync(functools.partial(fn, *args, **kwargs))


# ---------------------------------------------------------------------------- the attacker


class Impostor:
    """A client of the cluster channel holding the credentials in one node's data dir: a
    malicious worker with a worker's, the control of an experiment with a manager's. It admits
    whoever answers (an attacker checks nothing)."""

    def __init__(self, data_dir: Path) -> None:
        datadir = DataDir(data_dir)
        identity, key = datadir.read_identity()
        self.datadir = datadir
        self.node_id = identity.node_id
        self.signing_key = datadir.signing_key()  # signs its datagrams and its own Alive
        self.sealer = crypto.Sealer(crypto.ClusterKeys(key).message_key)
        self.ca_pem = datadir.read_certificate()[1]
        self.transport = Transport(
            (ATTACKER_HOST, 0),
            crypto.ClusterKeys(key).message_key,
            tls_config(datadir, admit=lambda peer: peer),
        )

    async def connect(self, agent: AgentHandle) -> FramedStream:
        return await self.transport.connect((agent.host, agent.port))

    async def ask(self, agent: AgentHandle, request: object, expect: tuple[type, ...]) -> Any:
        """`request` on a new connection to `agent`: its answer, or None if it gave none."""
        try:
            stream = await self.connect(agent)
        except _CUT:
            return None
        async with stream.stream:
            return await ask_on(stream, request, expect)

    async def raft_stream(self, agent: AgentHandle, from_id: str) -> FramedStream:
        """A connection that says it carries Raft messages from `from_id`."""
        stream = await self.connect(agent)
        await stream.send(RaftStreamHello(from_id))
        return stream

    async def raft_refused(self, agent: AgentHandle, from_id: str) -> bool:
        """Whether `agent` closes a Raft stream from `from_id` before it carries anything."""
        try:
            stream = await self.raft_stream(agent, from_id)
        except _CUT:
            return True  # already cut while the hello was written
        async with stream.stream:
            return await cut_by_peer(stream)

    # Gossip: UDP datagrams to an agent's port (the same number as its TCP port).

    def datagram(self, *msgs: object, signed_as: str | None) -> bytes:
        """One gossip datagram of `msgs` as a member's transport builds it: signed with this
        impostor's identity key in the name of `signed_as` (None: unsigned, the format before
        datagrams were signed), sealed with the cluster key."""
        body = wire.encode(GossipDatagram(tuple(msgs)))  # type: ignore[arg-type]
        if signed_as is not None:
            body = DatagramAuth(signed_as, self.signing_key, key_of=lambda n: None).envelope(body)
        return self.sealer.seal(body, crypto.AAD_GOSSIP)

    def own_alive(self, incarnation: int, host: str, port: int, meta: bytes) -> Alive:
        """An Alive about this impostor's node, signed as only that node can sign it."""
        data = alive_signed_bytes(self.node_id, incarnation, host, port, meta)
        return Alive(incarnation, self.node_id, host, port, meta, self.signing_key.sign(data))

    async def send_datagrams(self, agent: AgentHandle, datagrams: Sequence[bytes]) -> None:
        with trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM) as sock:
            await sock.bind((ATTACKER_HOST, 0))
            for data in datagrams:
                await sock.sendto(data, (agent.host, agent.port))

    async def acked(self, agent: AgentHandle, agent_id: str, *, signed_as: str) -> bool:
        """Whether `agent` answers a Ping signed as `signed_as` with its Ack (within CUT_WAIT_S):
        the control that a datagram refused for its sender is otherwise one that is answered."""
        return await self.ack_datagram(agent, agent_id, signed_as=signed_as) is not None

    async def ack_datagram(
        self, agent: AgentHandle, agent_id: str, *, signed_as: str
    ) -> bytes | None:
        """The datagram, as sent (signed by `agent`, sealed), that carries `agent`'s Ack of a Ping
        signed as `signed_as`; None if none came within CUT_WAIT_S."""
        seq_no = random.randrange(1 << 30)
        with trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM) as sock:
            await sock.bind((ATTACKER_HOST, 0))
            ping = self.datagram(Ping(seq_no, agent_id), signed_as=signed_as)
            await sock.sendto(ping, (agent.host, agent.port))
            with trio.move_on_after(CUT_WAIT_S):
                while True:
                    data = await sock.recv(MAX_DATAGRAM_BYTES + 1)
                    if Ack(seq_no) in self.opened(data):
                        return data
        return None

    def opened(self, data: bytes) -> tuple[object, ...]:
        """The messages of a datagram from a member; its signature is skipped, not checked."""
        try:
            body = self.sealer.open(data, crypto.AAD_GOSSIP)
            msg = wire.decode(body[1 + body[0] + crypto.SIGNATURE_BYTES :])
        except (RemoteProtocolError, IndexError):
            return ()
        return tuple(msg.msgs) if isinstance(msg, GossipDatagram) else ()

    async def members(self, agent: AgentHandle) -> dict[str, PushNodeState]:
        """`agent`'s gossip table, as it gives it to any member in a push-pull (ours is empty,
        so the exchange changes nothing there)."""
        stream = await self.connect(agent)
        async with stream.stream:
            reply = await ask_on(stream, PushPullState(self.node_id, False, ()), (PushPullState,))
        assert isinstance(reply, PushPullState), reply
        return {m.name: m for m in reply.members}


async def ask_on(stream: FramedStream, request: object, expect: tuple[type, ...]) -> Any:
    """Send `request` and read the answer; None if the peer cut the connection instead."""
    try:
        await stream.send(request)
        return await stream.receive(expect=expect)
    except _CUT:
        return None


async def send_or_cut(stream: FramedStream, msg: object) -> None:
    """Send `msg`, or nothing if the peer has already cut the connection."""
    with contextlib.suppress(*_CUT):
        await stream.send(msg)


async def cut_by_peer(stream: FramedStream) -> bool:
    """Whether the peer closes `stream` (within CUT_WAIT_S) rather than keep reading from it.
    A Raft stream is never answered on, so closing it is the only refusal there is to see."""
    with trio.move_on_after(CUT_WAIT_S):
        try:
            return await stream.receive() is None
        except _CUT:
            return True
    return False


async def tls_client_refused(agent: AgentHandle, context: ssl.SSLContext) -> bool:
    """Whether `agent` refuses a TLS client with `context` (its certificate, or none): the
    handshake fails, or the first read finds the connection torn down."""
    stream = await trio.open_tcp_stream(agent.host, agent.port, local_address=ATTACKER_HOST)
    async with stream:
        await stream.send_all(CHANNEL_CLUSTER)
        secure = trio.SSLStream(stream, context, server_hostname=None)
        try:
            with trio.fail_after(CUT_WAIT_S):
                await secure.do_handshake()
                # TLS 1.3: the client is done before the server has checked its certificate;
                # the server's verdict arrives as an alert (or a close) on the first read.
                data = await secure.receive_some(1)
        except trio.BrokenResourceError:
            return True
        return not data


def client_context(ca_pem: bytes, cert_file: Path | None, key_file: Path | None) -> ssl.SSLContext:
    """A TLS 1.3 client that trusts the cluster's CA, so that its own check of the server
    passes and the server's check of it is what is tested."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False
    ctx.load_verify_locations(cadata=ca_pem.decode("ascii"))
    if cert_file is not None and key_file is not None:
        ctx.load_cert_chain(str(cert_file), str(key_file))
    return ctx


# ---------------------------------------------------------------------------- the cluster


@dataclass(frozen=True)
class Scene:
    cluster: LocalCluster
    managers: list[AgentHandle]
    worker: AgentHandle
    worker_id: str
    manager_ids: dict[int, str]  # agent index -> node id

    def leader(self) -> AgentHandle:
        leader_id = self.cluster.leader_of(self.managers[0])
        return next(m for m in self.managers if self.manager_ids[m.index] == leader_id)

    def follower(self) -> AgentHandle:
        leader = self.leader()
        return next(m for m in self.managers if m is not leader)


def settled(cluster: LocalCluster, managers: list[AgentHandle]) -> bool:
    """Every manager a voter and agreeing on one leader, every node ready: the state a test's
    "before" picture must be taken in, or a voter promotion would pass for an attack's effect."""
    statuses = [cluster.status(m) for m in managers]
    leaders = {s["raft"]["leader_id"] for s in statuses}
    nodes = cluster.node_ls(managers[0])
    return (
        len(leaders) == 1
        and None not in leaders
        and all(len(s["raft"]["voters"]) == len(managers) for s in statuses)
        and all(n["status"] == "ready" for n in nodes)
    )


def start_scene(cluster: LocalCluster, managers: int = 3) -> Scene:
    cluster.start(managers=managers, workers=1)
    agents = cluster.agents
    wait_for("the cluster to settle", lambda: settled(cluster, agents[:managers]), timeout=60)
    return Scene(
        cluster,
        agents[:managers],
        agents[managers],
        cluster.node_id(agents[managers]),
        {m.index: cluster.node_id(m) for m in agents[:managers]},
    )


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scene]:
    with local_cluster(tmp_path_factory.mktemp("attacked")) as cluster:
        yield start_scene(cluster)


def picture(scene: Scene) -> dict[str, Any]:
    """What no attack may change: each manager's leader, term and role, and every node's record
    and liveness as n1 shows them (after a read barrier)."""
    raft = {}
    for m in scene.managers:
        r = scene.cluster.status(m)["raft"]
        raft[m.index] = (r["leader_id"], r["term"], r["role"])
    nodes = sorted(
        (n["id"], n["hostname"], n["role"], n["availability"], n["status"], n["raft"], labels)
        for n in scene.cluster.node_ls(scene.managers[0])
        for labels in (json.dumps(n["labels"], sort_keys=True),)
    )
    return {"raft": raft, "nodes": nodes}


def assert_unchanged(scene: Scene, before: dict[str, Any]) -> None:
    after = picture(scene)
    assert after["raft"] == before["raft"], "a leader, term or role changed"
    assert after["nodes"] == before["nodes"], "node ls changed"
    # ... and the cluster still commits: a write forwarded by a follower to the leader.
    label = f"after-attack-{crypto.new_id(4)}=1"
    run_cli("node", "update", "--label-add", label, "n1", data_dir=scene.follower().data_dir)


def counters(cluster: LocalCluster, agent: AgentHandle) -> Counter[str]:
    return Counter(cluster.status(agent)["counters"])


def wait_counted(
    cluster: LocalCluster, agent: AgentHandle, before: Counter[str], expected: Counter[str]
) -> None:
    """Wait until `agent` has counted at least `expected` more of each name than `before`,
    then check it counted exactly that: every refusal once, nothing else refused."""

    def grown() -> Counter[str] | None:
        now = counters(cluster, agent)
        delta = Counter({k: now[k] - before[k] for k in expected})
        return delta if all(delta[k] >= n for k, n in expected.items()) else None

    delta = wait_for(f"n{agent.index} to count {dict(expected)}", grown)
    assert delta == expected, f"n{agent.index} counted {dict(delta)}, expected {dict(expected)}"


# ---------------------------------------------------------------------------- Raft


async def test_a_raft_stream_in_another_nodes_name_is_refused(scene: Scene) -> None:
    with trio.fail_after(TEST_TIMEOUT_S):
        worker = Impostor(scene.worker.data_dir)
        before = await off_loop(picture, scene)
        leader_id = before["raft"][scene.managers[0].index][0]
        other_ids = [i for i in scene.manager_ids.values() if i != leader_id]
        for target in scene.managers:
            seen = await off_loop(counters, scene.cluster, target)
            # The hello names the leader (or, to the leader, another manager): whatever follows
            # would pass for that manager's. It is refused before any message is read.
            as_id = leader_id if scene.manager_ids[target.index] != leader_id else other_ids[0]
            stream = await worker.raft_stream(target, as_id)
            term = before["raft"][target.index][1]
            async with stream.stream:
                await send_or_cut(
                    stream, Heartbeat(as_id, scene.manager_ids[target.index], term + 1, 0)
                )
                assert await cut_by_peer(stream)
            await off_loop(
                wait_counted,
                scene.cluster,
                target,
                seen,
                # The heartbeat after the hello is never read, so never refused on its own.
                Counter(raft_refused_hello_not_peer=1, raft_refused_sender_not_peer=0),
            )
        await off_loop(assert_unchanged, scene, before)


def forged_raft_messages(
    scene: Scene, target_id: str, term: int, last_index: int
) -> list[tuple[object, str]]:
    """Every message a leader or a candidate sends, forged by the worker in its own name and in
    a manager's, with huge terms and with the next term; answers with a term no encoder can
    exceed. Each with the refusal its receiver must count."""
    w = scene.worker_id
    other = next(i for i in scene.manager_ids.values() if i != target_id)
    # The entry that would make the worker a manager: what a forged append is for.
    promote = encode_command(UpdateNode(w, role=Role.MANAGER))

    def append(from_id: str, t: int) -> AppendEntries:
        entry = Entry(term=t, index=last_index + 1, data=promote)
        return AppendEntries(from_id, target_id, t, last_index, term, (entry,), last_index + 1)

    snapshot = Snapshot(SnapshotMeta(last_index + 1, term + 1, ConfState(voters=(w,))), b"")
    return [
        (append(w, HUGE_TERM), "not_manager"),
        (append(w, term + 1), "not_manager"),
        (append(other, term + 1), "sender_not_peer"),
        (Heartbeat(w, target_id, HUGE_TERM, 0), "not_manager"),
        (Heartbeat(w, target_id, term + 1, last_index), "not_manager"),
        (Heartbeat(other, target_id, term + 1, last_index), "sender_not_peer"),
        (RequestVote(w, target_id, HUGE_TERM, HUGE_TERM, HUGE_TERM), "not_manager"),
        (RequestVote(w, target_id, term + 1, last_index + 9, term, transfer=True), "not_manager"),
        (RequestVote(other, target_id, term + 1, last_index + 9, term), "sender_not_peer"),
        (TimeoutNow(w, target_id, term), "not_manager"),
        (TimeoutNow(other, target_id, term), "sender_not_peer"),
        (InstallSnapshot(w, target_id, term + 1, snapshot), "not_manager"),
        (ReadIndexResp(w, target_id, term, b"ctx", last_index), "not_manager"),
        (AppendResp(w, target_id, HUGE_TERM, last_index), "not_in_group"),
        (HeartbeatResp(w, target_id, HUGE_TERM), "not_in_group"),
        (VoteResp(w, target_id, HUGE_TERM, True), "not_in_group"),
        (VoteResp(other, target_id, term + 1, True), "sender_not_peer"),
    ]


async def test_forged_appends_votes_and_heartbeats_from_a_worker_are_refused(
    scene: Scene,
) -> None:
    with trio.fail_after(TEST_TIMEOUT_S):
        worker = Impostor(scene.worker.data_dir)
        before = await off_loop(picture, scene)
        for target in scene.managers:
            target_id = scene.manager_ids[target.index]
            status = await off_loop(scene.cluster.status, target)
            messages = forged_raft_messages(
                scene, target_id, status["raft"]["term"], status["raft"]["commit_index"]
            )
            seen = await off_loop(counters, scene.cluster, target)
            stream = await worker.raft_stream(target, scene.worker_id)
            async with stream.stream:
                await stream.send_many([msg for msg, _ in messages])
                expected = Counter(f"raft_refused_{why}" for _, why in messages)
                await off_loop(wait_counted, scene.cluster, target, seen, expected)
        await off_loop(assert_unchanged, scene, before)


# ---------------------------------------------------------------------------- proposals


async def test_proposals_from_a_worker_are_refused_even_with_a_managers_mac(scene: Scene) -> None:
    """The requests carry a valid MAC of the managers' key (as a captured frame of a manager's
    write would), are addressed to the leader and fresh: only the connection's certificate says
    that a worker sent them. Each is refused, replayed or batched, in any proposer's name."""
    with trio.fail_after(TEST_TIMEOUT_S):
        worker = Impostor(scene.worker.data_dir)
        before = await off_loop(picture, scene)
        leader = await off_loop(scene.leader)
        leader_id = scene.manager_ids[leader.index]
        other_id = next(i for i in scene.manager_ids.values() if i != leader_id)
        managers_key = DataDir(leader.data_dir).read_manager_key()
        assert managers_key is not None
        keys = crypto.ManagerKeys(managers_key)

        def signed(command: Command, proposer: str) -> ProposeRequest:
            return propose_auth.sign(
                keys,
                encode_command(command),
                proposer=proposer,
                leader=leader_id,
                nonce=os.urandom(propose_auth.NONCE_BYTES),
                now=time.time(),
            )

        promote_self = signed(UpdateNode(scene.worker_id, role=Role.MANAGER), scene.worker_id)
        remove_leader = signed(RemoveNode(leader_id, removed_at=time.time()), other_id)
        demote_other = signed(UpdateNode(other_id, role=Role.WORKER), leader_id)
        seen = await off_loop(counters, scene.cluster, leader)
        replies: list[ProposeReply] = []
        for request in (promote_self, remove_leader, promote_self):  # the last one: a replay
            reply = await worker.ask(leader, request, (ProposeReply,))
            assert isinstance(reply, ProposeReply), reply
            replies.append(reply)
        batch = ProposeBatch(1, (promote_self, demote_other))
        batch_reply = await worker.ask(leader, batch, (ProposeBatchReply,))
        assert isinstance(batch_reply, ProposeBatchReply) and batch_reply.seq == 1, batch_reply
        replies += batch_reply.replies
        for reply in replies:
            assert not reply.ok and "the sender is not a manager" in reply.error, reply
        await off_loop(
            wait_counted, scene.cluster, leader, seen, Counter(propose_refused=len(replies))
        )
        await off_loop(assert_unchanged, scene, before)  # the worker is still a worker


# ---------------------------------------------------------------------------- per-task data


@dataclass(frozen=True)
class ManagerTask:
    task_id: str
    runs_on: AgentHandle  # the manager whose container it is
    line: str  # what its container printed


@pytest.fixture(scope="module")
def manager_task(
    scene: Scene, docker_images: None, tmp_path_factory: pytest.TempPathFactory
) -> ManagerTask:
    """A task on a manager that uses a secret and has printed a line: what a worker must not
    read. Created once; the attacks leave it running."""
    d = scene.managers[0].data_dir
    secret_file = tmp_path_factory.mktemp("secret") / "value"
    secret_file.write_text("attack-at-dawn")
    run_cli("secret", "create", "mw_secret", str(secret_file), data_dir=d)
    line = "a line only managers may read"
    run_cli(
        "service",
        "create",
        "--name",
        "mw_task",
        "--constraint",
        "node.role==manager",
        "--secret",
        "mw_secret",
        "swarmlet/busybox:1",
        "sh",
        "-c",
        f"echo '{line}'; exec sleep 3600",
        data_dir=d,
        timeout=120,
    )
    running = wait_for(
        "mw_task's container to run",
        lambda: [c for c in scene.cluster.containers(service="mw_task") if c["state"] == "running"],
    )
    container = running[0]

    def printed() -> bool:
        logs = ["docker", "logs", container["id"]]
        return line in subprocess.run(logs, capture_output=True, text=True, check=True).stdout

    wait_for("mw_task's line in its container's log", printed)
    owner = next(m for m in scene.managers if scene.manager_ids[m.index] == container["node"])
    return ManagerTask(container["task"], owner, line)


async def read_logs(impostor: Impostor, agent: AgentHandle, task_id: str) -> tuple[list[str], str]:
    """(the lines `agent` sends for `task_id`, its EndOfStream's error)."""
    lines: list[str] = []
    stream = await impostor.connect(agent)
    async with stream.stream:
        await stream.send(LogsRequest((task_id,), follow=False, tail=100))
        while True:
            msg = await stream.receive(expect=(LogLine, EndOfStream))
            if isinstance(msg, LogLine):
                lines.append(msg.line.decode())
            else:
                assert isinstance(msg, EndOfStream), msg
                return lines, msg.error


@pytest.mark.docker
async def test_a_worker_cannot_read_the_logs_of_a_managers_task(
    scene: Scene, manager_task: ManagerTask
) -> None:
    with trio.fail_after(TEST_TIMEOUT_S):
        before = await off_loop(picture, scene)
        target = manager_task.runs_on
        control = Impostor(next(m for m in scene.managers if m is not target).data_dir)
        # The same request from a manager is answered with the line.
        lines, error = await read_logs(control, target, manager_task.task_id)
        assert not error and any(manager_task.line in line for line in lines), (lines, error)
        seen = await off_loop(counters, scene.cluster, target)
        lines, error = await read_logs(
            Impostor(scene.worker.data_dir), target, manager_task.task_id
        )
        assert lines == [] and error == "logs are served to managers only"
        await off_loop(
            wait_counted, scene.cluster, target, seen, Counter(logs_refused_not_manager=1)
        )
        await off_loop(assert_unchanged, scene, before)


@pytest.mark.docker
async def test_a_worker_cannot_have_the_secrets_of_a_managers_task(
    scene: Scene, manager_task: ManagerTask
) -> None:
    with trio.fail_after(TEST_TIMEOUT_S):
        before = await off_loop(picture, scene)
        owner = manager_task.runs_on
        owner_id = scene.manager_ids[owner.index]
        asked = next(m for m in scene.managers if m is not owner)
        task_id = manager_task.task_id

        def request(node_id: str) -> SecretsRequest:
            return SecretsRequest(node_id, task_id, 0, os.urandom(16))

        # The node that runs the task has it delivered (sealed to it) when it asks another
        # manager: the request is well formed, the task exists and uses the secret.
        reply = await Impostor(owner.data_dir).ask(asked, request(owner_id), (SecretsReply,))
        assert isinstance(reply, SecretsReply) and reply.ok, reply
        seen = await off_loop(counters, scene.cluster, asked)
        worker = Impostor(scene.worker.data_dir)
        # In the owner's name (the values would be sealed to the owner, but even a refusal must
        # not depend on that), and in its own name for a task that is not its.
        for node_id, why in (
            (owner_id, f"asked by {scene.worker_id} for {owner_id}"),
            (scene.worker_id, f"is not assigned to node {scene.worker_id}"),
        ):
            reply = await worker.ask(asked, request(node_id), (SecretsReply,))
            assert isinstance(reply, SecretsReply), reply
            assert not reply.ok and not reply.sealed and why in reply.error, reply
        await off_loop(wait_counted, scene.cluster, asked, seen, Counter(secrets_refused=2))
        await off_loop(assert_unchanged, scene, before)


# ---------------------------------------------------------------------------- sessions (#16)


async def read_view(
    impostor: Impostor, agent: AgentHandle, hello: SessionHello
) -> list[ViewUpdate]:
    """The first complete run of updates `agent` serves `impostor` for `hello`; [] if it closes
    the stream instead."""
    run: list[ViewUpdate] = []
    stream = await impostor.connect(agent)
    async with stream.stream:
        await stream.send(hello)
        while not run or not run[-1].complete:
            update = await stream.receive(expect=(ViewUpdate,))
            if update is None:
                return []
            run.append(update)
    return run


@pytest.mark.docker
async def test_a_workers_session_serves_its_own_view_only(
    scene: Scene, manager_task: ManagerTask
) -> None:
    """The view a manager serves is the one of the node its peer's certificate names; nothing
    in it carries another service's spec (the manager's task, its command, its secret's name),
    and a session of an unknown view protocol is refused, counted."""
    with trio.fail_after(TEST_TIMEOUT_S):
        before = await off_loop(picture, scene)
        owner = manager_task.runs_on
        manager = next(m for m in scene.managers if m is not owner)
        # The same request in the name of the manager that runs the task: its view holds it.
        control = await read_view(Impostor(owner.data_dir), manager, SessionHello())
        assert any(s.spec.name == "mw_task" for u in control for s in u.services), control
        worker = Impostor(scene.worker.data_dir)
        run = await read_view(worker, manager, SessionHello())
        assert run and run[0].reset and run[-1].complete
        frames = b"".join(wire.encode(u) for u in run)
        for marker in (manager_task.line, "mw_task", "mw_secret"):
            assert marker.encode() not in frames, f"the worker's view carries {marker!r}"
        assert all(t.node_id == scene.worker_id for u in run for t in u.tasks)
        seen = await off_loop(counters, scene.cluster, manager)
        assert await read_view(worker, manager, SessionHello(protocol=99)) == []
        await off_loop(
            wait_counted, scene.cluster, manager, seen, Counter(worker_sessions_refused=1)
        )
        await off_loop(assert_unchanged, scene, before)


async def test_a_worker_holds_one_session_per_manager_however_many_it_opens(
    scene: Scene,
) -> None:
    """A worker that opens session after session to one manager (to make it hold one view per
    connection, or build one whole view after another) holds one: each new session ends the
    one before it on the manager's side, counted, waits until MIN_VIEW_INTERVAL_S has passed
    since the last whole view, counted, and the cluster is unchanged."""
    with trio.fail_after(TEST_TIMEOUT_S):
        before = await off_loop(picture, scene)
        # A manager other than the one serving the real worker's own session (which the first
        # of these would end, and whose reconnection would end the newest of these).
        session = (await off_loop(scene.cluster.status, scene.worker))["session"]
        serving = session["manager_id"] if session is not None else None
        manager = next(m for m in scene.managers if scene.manager_ids[m.index] != serving)
        worker = Impostor(scene.worker.data_dir)
        seen = await off_loop(counters, scene.cluster, manager)
        opened = 4  # each after the first waits MIN_VIEW_INTERVAL_S for its view
        streams = []
        for _ in range(opened):
            stream = await worker.connect(manager)
            await stream.send(SessionHello())
            first = await stream.receive(expect=(ViewUpdate,))
            assert isinstance(first, ViewUpdate) and first.reset, first
            streams.append(stream)
        # Every session but the newest is ended by the manager: its stream runs dry (a live one
        # would go on with a keepalive a second, and this would time out).
        for i, stream in enumerate(streams[:-1]):
            with trio.move_on_after(10) as waited, contextlib.suppress(*_CUT):
                while await stream.receive(expect=(ViewUpdate,)) is not None:
                    pass
            assert not waited.cancelled_caught, f"session {i} of {opened} is still served"
        newest = streams[-1]
        while not (update := await newest.receive(expect=(ViewUpdate,))).complete:
            assert update is not None
        for stream in streams:
            await stream.stream.aclose()

        def replaced() -> int | None:
            now = counters(scene.cluster, manager)
            delta = now["worker_sessions_replaced"] - seen["worker_sessions_replaced"]
            paced = now["worker_sessions_paced"] - seen["worker_sessions_paced"]
            return delta if delta >= opened - 1 and paced >= opened - 1 else None

        # At least one replacement per session after the first; the real worker's own session
        # may move to this manager meanwhile and add one (CI saw 12 once).
        await off_loop(wait_for, "the replaced sessions to be counted", replaced)
        await off_loop(assert_unchanged, scene, before)


# ---------------------------------------------------------------------------- certificates


async def test_a_worker_asking_for_a_certificate_gets_a_workers(scene: Scene) -> None:
    with trio.fail_after(TEST_TIMEOUT_S):
        worker = Impostor(scene.worker.data_dir)
        before = await off_loop(picture, scene)
        own_key = certs.raw_public_key(worker.datadir.signing_key())
        for target in scene.managers:
            reply = await worker.ask(target, CertRequest(), (CertReply,))
            assert isinstance(reply, CertReply) and reply.ok, reply
            got = certs.verify(bytes(reply.certificate), worker.ca_pem, now=time.time())
            assert (got.node_id, got.role, got.public_key) == (scene.worker_id, "worker", own_key)
        await off_loop(assert_unchanged, scene, before)


async def test_garbage_and_foreign_certificates_are_refused_and_the_agent_keeps_serving(
    scene: Scene, tmp_path: Path
) -> None:
    with trio.fail_after(TEST_TIMEOUT_S):
        worker = Impostor(scene.worker.data_dir)
        before = await off_loop(picture, scene)
        target = await off_loop(scene.leader)
        target_id = scene.manager_ids[target.index]
        # A manager's certificate for the leader's id in this cluster, from another CA.
        other_ca = crypto.ManagerKeys(crypto.new_key()).ca_key
        impostor_key = crypto.node_signing_key(crypto.new_key())
        cert_file, key_file = tmp_path / "node.crt", tmp_path / "node.key"
        cert_file.write_bytes(
            certs.issue(
                other_ca,
                cluster_id=scene.cluster.cluster_id,
                node_id=target_id,
                role="manager",
                generation=0,
                public_key=certs.raw_public_key(impostor_key),
                now=time.time(),
            )
        )
        key_file.write_bytes(certs.private_key_pem(impostor_key))
        seen = await off_loop(counters, scene.cluster, target)
        rng = random.Random(15)
        garbage = 5
        for _ in range(garbage):
            stream = await trio.open_tcp_stream(
                target.host, target.port, local_address=ATTACKER_HOST
            )
            async with stream:
                await stream.send_all(CHANNEL_CLUSTER + rng.randbytes(rng.randint(1, 4000)))
        assert await tls_client_refused(target, client_context(worker.ca_pem, None, None))
        assert await tls_client_refused(target, client_context(worker.ca_pem, cert_file, key_file))
        await off_loop(
            wait_counted,
            scene.cluster,
            target,
            seen,
            Counter(refused_tls_handshake=garbage + 2, refused_tls_handshake_timeout=0),
        )
        # Still serving the cluster channel: the worker's own certificate is answered.
        reply = await worker.ask(target, CertRequest(), (CertReply,))
        assert isinstance(reply, CertReply) and reply.ok, reply
        await off_loop(assert_unchanged, scene, before)


# ---------------------------------------------------------------------------- gossip


def all_ready_everywhere(scene: Scene) -> bool:
    return all(n["status"] == "ready" for m in scene.managers for n in scene.cluster.node_ls(m))


def grown(cluster: LocalCluster, agent: AgentHandle, name: str, before: int) -> bool:
    return counters(cluster, agent)[name] > before


def node_events(agent: AgentHandle, name: str, since: float) -> list[str]:
    """The actions of `agent`'s node events about `name` since `since` (`swarmlet events`)."""
    out = run_cli(
        "events",
        "--no-follow",
        "--since",
        f"{since:.3f}",
        "--format",
        "json",
        data_dir=agent.data_dir,
    ).stdout
    events = [json.loads(line) for line in out.splitlines() if line.strip()]
    return [e["action"] for e in events if e["type"] == "node" and e["subject"] == name]


def grows_within(
    cluster: LocalCluster, agent: AgentHandle, name: str, before: int, timeout_s: float
) -> bool:
    """Whether `agent`'s counter `name` grows past `before` within `timeout_s` (a bounded poll)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if grown(cluster, agent, name, before):
            return True
        time.sleep(0.2)
    return False


def someone_elses_meta(leader_id: str) -> bytes:
    """Metadata of the attacker's choosing for another node's Alive: another name, another
    address, the worker as the leader, a machine of a thousand cores."""
    return encode_meta(
        NodeMeta(
            name="impostor",
            role="manager",
            addr=f"{ATTACKER_HOST}:1",
            publish_host=ATTACKER_HOST,
            nano_cpus=1000 * 10**9,
            memory_bytes=2**50,
            leader_id=leader_id,
        )
    )


async def refutes_a_suspicion(impostor: Impostor, scene: Scene, victim: AgentHandle) -> bool:
    """Whether `victim` refutes a Suspect about it at its current incarnation: legal SWIM (any
    member may suspect any other, the accused outbids the accusation), which the rules against
    forged incarnations must leave open. The incarnation may move on (new metadata) between our
    reading it and the victim receiving the Suspect, which is then stale: so, a few tries."""
    victim_id = scene.manager_ids[victim.index]
    for _ in range(5):
        status = await off_loop(scene.cluster.status, victim)
        refutes = status["counters"].get("gossip_refutes", 0)
        suspect = Suspect(status["gossip"]["incarnation"], victim_id, impostor.node_id)
        await impostor.send_datagrams(
            victim, [impostor.datagram(suspect, signed_as=impostor.node_id)]
        )
        if await off_loop(grows_within, scene.cluster, victim, "gossip_refutes", refutes, 5.0):
            return True
    return False


async def test_forged_unsigned_and_garbage_gossip_is_dropped_and_counted(scene: Scene) -> None:
    """Every manager gets, in datagrams signed as the worker: Alives about another manager and
    about itself with the attacker's metadata, a garbage signature and an incarnation far above
    theirs; Suspects and Deads (failures and leaves) at that incarnation. Then a datagram in a
    manager's name signed with the worker's key, one in an unknown node's name, an unsigned one
    (the format before datagrams were signed) and random bytes. Each is dropped and counted, and
    no manager's incarnation or metadata is what the attacker said, anywhere."""
    with trio.fail_after(TEST_TIMEOUT_S):
        worker = Impostor(scene.worker.data_dir)
        w = scene.worker_id
        before = await off_loop(picture, scene)
        rng = random.Random(15)
        meta = someone_elses_meta(w)
        for i, target in enumerate(scene.managers):
            victim = scene.managers[(i + 1) % len(scene.managers)]
            target_id, victim_id = scene.manager_ids[target.index], scene.manager_ids[victim.index]
            # Signed as the worker, a ping is answered: what follows is refused for who signed
            # what, not for its form.
            assert await worker.acked(target, target_id, signed_as=w)
            garbage = rng.randbytes(crypto.SIGNATURE_BYTES)
            # One a datagram: each is refused for itself (together they are not of the shape
            # a member sends, and the first forgery would drop the rest).
            lies = [
                worker.datagram(lie, signed_as=w)
                for lie in (
                    # At the members' real addresses: another would be refused for that alone.
                    Alive(HUGE_INCARNATION, victim_id, victim.host, victim.port, meta, garbage),
                    Alive(HUGE_INCARNATION, target_id, target.host, target.port, meta, garbage),
                    Suspect(HUGE_INCARNATION, victim_id, w),
                    Dead(HUGE_INCARNATION, victim_id, w),
                    Dead(HUGE_INCARNATION, victim_id, victim_id),  # a leave, in the victim's name
                    Suspect(HUGE_INCARNATION, target_id, w),
                    Dead(HUGE_INCARNATION, target_id, target_id),
                )
            ]
            ping = Ping(rng.randrange(1 << 30), target_id)
            noise = [rng.randbytes(rng.randint(1, 2000)) for _ in range(5)]
            seen = await off_loop(counters, scene.cluster, target)
            await worker.send_datagrams(
                target,
                [
                    *lies,
                    worker.datagram(ping, signed_as=victim_id),  # a manager's name, our key
                    worker.datagram(ping, signed_as=f"impostor-{crypto.new_id(4)}"),
                    worker.datagram(ping, signed_as=None),
                    *noise,  # not even sealed with the cluster key
                ],
            )
            expected = Counter(
                # The Alive about another member: not signed by that member.
                gossip_dropped_unverified=1,
                # The rest of `lies`: above the incarnation the target knows, which only the
                # member itself raises (the Alive about the target: it did not sign it).
                gossip_dropped_above_known=6,
                dropped_datagram_bad_signature=1,
                dropped_datagram_unknown_sender=1,
                dropped_datagram_unsigned=1,
                dropped_datagram_invalid=len(noise),
            )
            await off_loop(wait_counted, scene.cluster, target, seen, expected)
        # No manager holds the attacker's numbers or metadata for any manager.
        for m in scene.managers:
            view = await worker.members(m)
            for agent in scene.managers:
                record = view[scene.manager_ids[agent.index]]
                said = decode_meta(record.meta)
                assert record.incarnation < HUGE_INCARNATION, (m.index, record)
                assert said is not None and said.name == f"n{agent.index}", (m.index, record)
        victim = await off_loop(scene.follower)
        assert await refutes_a_suspicion(worker, scene, victim)
        ready = functools.partial(all_ready_everywhere, scene)
        await off_loop(wait_for, "every node ready on every manager", ready)
        await off_loop(assert_unchanged, scene, before)


async def test_gossip_that_would_cost_a_manager_more_than_a_member_sends_is_dropped(
    scene: Scene,
) -> None:
    """Signed by the worker (its Ping alone is answered), to every manager: one datagram of
    1,000 Pings (each was answered: 1,001 datagrams out for one in); one of a forged Alive
    about another manager (a signature check) followed by 50 Suspects of it (each was checked
    on); and a push-pull naming one member 1,000 times (each entry a signature check: 40,000
    entries held a manager's event loop 2.4 s). Each is dropped and counted, nothing answers
    the Pings, and nothing changes."""
    with trio.fail_after(TEST_TIMEOUT_S):
        worker = Impostor(scene.worker.data_dir)
        w = scene.worker_id
        before = await off_loop(picture, scene)
        for i, target in enumerate(scene.managers):
            victim = scene.managers[(i + 1) % len(scene.managers)]
            target_id, victim_id = scene.manager_ids[target.index], scene.manager_ids[victim.index]
            assert await worker.acked(target, target_id, signed_as=w)
            said = (await worker.members(target))[victim_id]
            # Far above the victim's incarnation: it raises its own as its load changes.
            forged = Alive(
                HUGE_INCARNATION, victim_id, victim.host, victim.port, said.meta, bytes(64)
            )
            seen = await off_loop(counters, scene.cluster, target)
            pings = [Ping(n, target_id) for n in range(1000)]
            followers = [Suspect(said.incarnation, f"x{n}", w) for n in range(50)]
            await worker.send_datagrams(
                target,
                [
                    worker.datagram(*pings, signed_as=w),
                    worker.datagram(forged, *followers, signed_as=w),
                ],
            )
            entry = PushNodeState(
                victim_id,
                victim.host,
                victim.port,
                said.meta,
                HUGE_INCARNATION,
                MemberState.ALIVE,
                bytes(64),
            )
            stream = await worker.connect(target)
            async with stream.stream:
                await ask_on(stream, PushPullState(w, False, (entry,) * 1000), (PushPullState,))
            expected = Counter(
                gossip_dropped_datagram_shape=1,
                gossip_dropped_unverified=1,
                gossip_dropped_after_bad_signature=1,
                gossip_dropped_push_pull_duplicate=1,
            )
            await off_loop(wait_counted, scene.cluster, target, seen, expected)
            now = await off_loop(counters, scene.cluster, target)
            # Its own probes and gossip go on meanwhile; 1,000 Acks would not hide in them.
            assert now["datagrams_out"] - seen["datagrams_out"] < 200, target.index
        ready = functools.partial(all_ready_everywhere, scene)
        await off_loop(wait_for, "every node ready on every manager", ready)
        await off_loop(assert_unchanged, scene, before)


async def test_captured_datagrams_replayed_are_dropped_and_counted(scene: Scene) -> None:
    """Datagrams are signed but carry no freshness of their own: what makes a replay harmless is
    that gossip acts only on news. Captured here: a manager's real Ack (signed by it), and a
    follower's own signed Alive, relayed again after the follower has refuted a suspicion (so at
    an incarnation it has left behind). Both are sent again verbatim to every manager, the Ack's
    author included: each is an authentic datagram that is dropped and counted (an Ack of no probe
    in flight; an Alive older than the member's) and changes nothing."""
    with trio.fail_after(TEST_TIMEOUT_S):
        worker = Impostor(scene.worker.data_dir)
        w = scene.worker_id
        before = await off_loop(picture, scene)
        author = scene.managers[0]
        ack = await worker.ack_datagram(author, scene.manager_ids[author.index], signed_as=w)
        assert ack is not None
        victim = await off_loop(scene.follower)
        victim_id = scene.manager_ids[victim.index]
        said = (await worker.members(author))[victim_id]  # its own signature over these facts
        old_alive = Alive(
            said.incarnation, victim_id, said.host, said.port, said.meta, said.signature
        )
        assert await refutes_a_suspicion(worker, scene, victim)  # it moves past `said`
        for target in scene.managers:
            with trio.fail_after(10):  # the refutation spreads by gossip
                while True:
                    held = (await worker.members(target))[victim_id]
                    if held.incarnation > said.incarnation:
                        break
                    await trio.sleep(0.1)
            seen = await off_loop(counters, scene.cluster, target)
            stale = worker.datagram(old_alive, signed_as=w)  # a relay of the victim's words
            # In this order from one socket: once the Acks are counted, the Alive was handled.
            await worker.send_datagrams(target, [stale, ack, ack])
            expected = Counter(gossip_dropped_unknown_ack=2)
            await off_loop(wait_counted, scene.cluster, target, seen, expected)
            if target is not victim:  # the victim takes its own old news silently
                # At least: the suspicion's relays, late, are stale here too.
                grew = (await off_loop(counters, scene.cluster, target))["gossip_dropped_stale"]
                assert grew >= seen["gossip_dropped_stale"] + 1, target.index
            # Not put back to what was captured (the member may move on by itself meanwhile:
            # a new load figure is a new incarnation).
            now = (await worker.members(target))[victim_id]
            assert now.incarnation >= held.incarnation > said.incarnation, target.index
            assert now.state is MemberState.ALIVE, target.index
        ready = functools.partial(all_ready_everywhere, scene)
        await off_loop(wait_for, "every node ready on every manager", ready)
        await off_loop(assert_unchanged, scene, before)


async def test_a_workers_word_that_a_live_node_died_is_a_suspicion_it_refutes(
    scene: Scene,
) -> None:
    """The worker tells every other manager that a live follower died: a Dead at the incarnation
    they know, in the worker's own name. memberlist takes such a word at once, and so did this
    cluster: the leader wrote the follower off (its voter seat, its tasks). Now it is a suspicion
    (counted) that the follower refutes; no member declares anyone failed, and the follower stays
    alive and ready in every table."""
    with trio.fail_after(TEST_TIMEOUT_S):
        worker = Impostor(scene.worker.data_dir)
        w = scene.worker_id
        before = await off_loop(picture, scene)
        victim = await off_loop(scene.follower)
        victim_id = scene.manager_ids[victim.index]
        targets = [m for m in scene.managers if m is not victim]
        failed = {
            m.index: (await off_loop(counters, scene.cluster, m))["gossip_failed"]
            for m in scene.managers
        }

        def reached(target: AgentHandle, seen: Counter[str]) -> bool:
            now = counters(scene.cluster, target)
            return any(now[k] > seen[k] for k in ("gossip_dead_taken_as_suspect", "gossip_failed"))

        async def accused_everywhere() -> bool:
            """One Dead to each target at the incarnation it holds for the victim (which moves
            with the victim's load figures: read just before, and tried again if it moved)."""
            seen = {m.index: await off_loop(counters, scene.cluster, m) for m in targets}
            for target in targets:
                held = (await worker.members(target))[victim_id]
                dead = Dead(held.incarnation, victim_id, w)
                await worker.send_datagrams(target, [worker.datagram(dead, signed_as=w)])
            with contextlib.suppress(AssertionError):  # wait_for's timeout: try again
                for target in targets:
                    check = functools.partial(reached, target, seen[target.index])
                    await off_loop(wait_for, f"n{target.index} to take the Dead", check, timeout=5)
                return True
            return False

        taken = {
            m.index: (await off_loop(counters, scene.cluster, m))["gossip_dead_taken_as_suspect"]
            for m in targets
        }
        refutes = (await off_loop(counters, scene.cluster, victim))["gossip_refutes"]
        for _ in range(5):
            if await accused_everywhere():
                break
        else:
            pytest.fail("no try reached every target at the victim's incarnation")
        # Past the longest a suspicion could run at 4 members (6 x 1.2 s): had anyone taken
        # the word as a death, it would show by now.
        await trio.sleep(10)
        for m in scene.managers:
            assert (await off_loop(counters, scene.cluster, m))["gossip_failed"] == failed[
                m.index
            ], f"n{m.index} declared a member failed"
            if m is not victim:
                now = (await off_loop(counters, scene.cluster, m))["gossip_dead_taken_as_suspect"]
                assert now > taken[m.index], m.index
            assert (await worker.members(m))[victim_id].state is MemberState.ALIVE, m.index
        assert (await off_loop(counters, scene.cluster, victim))["gossip_refutes"] > refutes
        await off_loop(assert_unchanged, scene, before)


async def refuted_and_no_one_failed(
    scene: Scene, worker: Impostor, victim: AgentHandle, seen: dict[int, Counter[str]]
) -> dict[int, Counter[str]]:
    """Once `victim` has refuted a suspicion the worker raised, and past the longest one runs at
    4 members (6 x 1.2 s): no manager declared anyone failed or counted a confirmation (the
    worker is one accuser, whatever names it signs or pushes), and each holds the victim alive.
    Each manager's counters then, by index."""
    victim_id = scene.manager_ids[victim.index]
    refutes = seen[victim.index]["gossip_refutes"]
    await off_loop(grows_within, scene.cluster, victim, "gossip_refutes", refutes, 10.0)
    await trio.sleep(10)
    now = {}
    for m in scene.managers:
        now[m.index] = after = await off_loop(counters, scene.cluster, m)
        assert after["gossip_failed"] == seen[m.index]["gossip_failed"], m.index
        confirmed = after["gossip_suspect_confirmations"]
        assert confirmed == seen[m.index]["gossip_suspect_confirmations"], m.index
        assert (await worker.members(m))[victim_id].state is MemberState.ALIVE, m.index
    return now


async def test_a_workers_suspects_in_other_members_names_confirm_no_suspicion(
    scene: Scene,
) -> None:
    """The worker suspects a live follower in the name of every other manager, the target's
    own name first (taken, the target gossiped it on under its own signature: every other
    member counted it as the target's word), then in its own (legal SWIM): Lifeguard's
    independent confirmations, which would cut the suspicion's timeout from its lone maximum
    (7.2 s here) to the minimum (1.2 s), less than a refutation may take on a busy machine.
    One datagram each, in a row (a datagram holds at most two updates about one member). A
    signature covers its signer's word only: the one in the target's name is dropped
    (counted), every target takes the suspicion (counted), none counts a confirmation, the
    follower refutes and no member declares anyone failed (found by review, twice)."""
    with trio.fail_after(TEST_TIMEOUT_S):
        worker = Impostor(scene.worker.data_dir)
        w = scene.worker_id
        before = await off_loop(picture, scene)
        victim = await off_loop(scene.follower)
        victim_id = scene.manager_ids[victim.index]
        targets = [m for m in scene.managers if m is not victim]
        accusers = [scene.manager_ids[m.index] for m in targets]
        seen = {m.index: await off_loop(counters, scene.cluster, m) for m in scene.managers}

        async def suspected_by(target: AgentHandle) -> bool:
            """The Suspects at the incarnation `target` holds for the victim (which moves with
            the victim's load figures: read just before, and tried again if it moved)."""
            held = (await worker.members(target))[victim_id].incarnation
            own = scene.manager_ids[target.index]
            names = (own, *(a for a in accusers if a != own), w)
            said = [Suspect(held, victim_id, accuser) for accuser in names]
            suspects = (await off_loop(counters, scene.cluster, target))["gossip_suspects"]
            await worker.send_datagrams(target, [worker.datagram(m, signed_as=w) for m in said])
            return await off_loop(
                grows_within, scene.cluster, target, "gossip_suspects", suspects, 5.0
            )

        for target in targets:
            for _ in range(5):
                if await suspected_by(target):
                    break
            else:
                pytest.fail(f"no try reached n{target.index} at the victim's incarnation")
        now = await refuted_and_no_one_failed(scene, worker, victim, seen)
        for m in targets:
            dropped = now[m.index]["gossip_dropped_in_our_name"]
            assert dropped > seen[m.index]["gossip_dropped_in_our_name"], m.index
        await off_loop(assert_unchanged, scene, before)


async def test_a_suspect_pushed_in_a_state_exchange_is_nobodys_accusation(scene: Scene) -> None:
    """The worker pushes, in a push-pull exchange to each other manager at once, its table with
    a live follower SUSPECT at the incarnation each holds (the follower's own signed Alive,
    state changed: push-pull states carry no accuser). memberlist takes it as the receiver's
    own accusation, which it gossips on under its own signature: k receivers, k accusers, the
    suspicion's timeout cut to its minimum. Here it starts a suspicion (counted) in the name of
    the member that pushed it, which no receiver gossips as anyone's word: no confirmation on
    any member, the follower refutes, no one is declared failed, the cluster is unchanged."""
    with trio.fail_after(TEST_TIMEOUT_S):
        worker = Impostor(scene.worker.data_dir)
        w = scene.worker_id
        before = await off_loop(picture, scene)
        victim = await off_loop(scene.follower)
        victim_id = scene.manager_ids[victim.index]
        targets = [m for m in scene.managers if m is not victim]
        seen = {m.index: await off_loop(counters, scene.cluster, m) for m in scene.managers}
        started = time.time()

        async def push_suspect(target: AgentHandle, entry: PushNodeState) -> None:
            stream = await worker.connect(target)
            async with stream.stream:
                pushed = dataclasses.replace(entry, state=MemberState.SUSPECT)
                await ask_on(stream, PushPullState(w, False, (pushed,)), (PushPullState,))

        async def suspected_by_all() -> bool:
            """Pushed to every target together (the victim refutes the first suspicion it
            hears of); the victim's incarnation, read just before, moves with its load
            figures: tried again if it moved."""
            held = {m.index: (await worker.members(m))[victim_id] for m in targets}
            suspects = {
                m.index: (await off_loop(counters, scene.cluster, m))["gossip_suspects"]
                for m in targets
            }
            async with trio.open_nursery() as nursery:
                for m in targets:
                    nursery.start_soon(push_suspect, m, held[m.index])
            for m in targets:
                if not await off_loop(
                    grows_within, scene.cluster, m, "gossip_suspects", suspects[m.index], 5.0
                ):
                    return False
            return True

        for _ in range(5):
            if await suspected_by_all():
                break
        else:
            pytest.fail("no try reached every target at the victim's incarnation")
        await refuted_and_no_one_failed(scene, worker, victim, seen)
        for m in targets:  # what an operator reads: suspected, then alive (not a new member)
            said = await off_loop(node_events, m, f"n{victim.index}", started)
            assert said[:2] == ["suspect", "alive"] and not {"join", "down"} & set(said), said
        await off_loop(assert_unchanged, scene, before)


async def test_a_ping_req_is_relayed_to_members_at_their_address_only(scene: Scene) -> None:
    """The worker asks every manager to ping, for it, a member at the attacker's address, and a
    node that is no member at all. Relayed to the host and port a PingReq names, any member could
    have the others send datagrams wherever it liked. Now the member is pinged where this manager
    knows it (its Ack relayed back, as SWIM wants) and the stranger not at all (a Nack, counted);
    the named address gets nothing, and the cluster is as it was."""
    with trio.fail_after(TEST_TIMEOUT_S):
        worker = Impostor(scene.worker.data_dir)
        w = scene.worker_id
        before = await off_loop(picture, scene)
        with (
            trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM) as decoy,
            trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM) as sock,
        ):
            await decoy.bind(("127.0.0.51", 0))
            decoy_host, decoy_port = decoy.getsockname()
            await sock.bind((ATTACKER_HOST, 0))
            for i, target in enumerate(scene.managers):
                member = scene.managers[(i + 1) % len(scene.managers)]
                member_id = scene.manager_ids[member.index]
                seen = await off_loop(counters, scene.cluster, target)
                reqs = (
                    PingReq(1000 + i, member_id, decoy_host, decoy_port, True),
                    PingReq(2000 + i, f"stranger-{i}", decoy_host, decoy_port, True),
                )
                for req in reqs:
                    await sock.sendto(worker.datagram(req, signed_as=w), (target.host, target.port))
                got: set[object] = set()
                with trio.move_on_after(CUT_WAIT_S):
                    while not {Ack(1000 + i), Nack(2000 + i)} <= got:
                        got.update(worker.opened(await sock.recv(MAX_DATAGRAM_BYTES + 1)))
                assert {Ack(1000 + i), Nack(2000 + i)} <= got, (target.index, got)
                expected = Counter(gossip_relays=1, gossip_dropped_relay_unknown_target=1)
                await off_loop(wait_counted, scene.cluster, target, seen, expected)
            with trio.move_on_after(2.0):  # a stray ping would be on its way by now
                data = await decoy.recv(MAX_DATAGRAM_BYTES + 1)
                pytest.fail(f"a manager sent {len(data)} bytes to the address a PingReq named")
        await off_loop(assert_unchanged, scene, before)


@dataclass(frozen=True)
class WebTask:
    task_id: str
    runs_on: AgentHandle
    port: int  # published through every node's proxy
    answer: str  # what its one replica answers


def answer(host: str, port: int) -> str | None:
    """`get`, or None while nothing answers there yet."""
    try:
        return get(host, port)
    except OSError:
        return None


def start_web(scene: Scene, role: str, port: int) -> WebTask:
    """One replica of the web image on a node of `role`, published on `port`, routed by every
    manager's proxy."""
    name = f"mw_web_{role}"
    run_cli(
        "service",
        "create",
        "--name",
        name,
        "--constraint",
        f"node.role=={role}",
        "-p",
        f"{port}:80",
        "swarmlet/web:1",
        data_dir=scene.managers[0].data_dir,
        timeout=120,
    )

    def running() -> list[dict[str, str]]:
        return [c for c in scene.cluster.containers(service=name) if c["state"] == "running"]

    container = wait_for(f"{name}'s container to run", running)[0]
    agent_of = {scene.manager_ids[m.index]: m for m in scene.managers}
    runs_on = agent_of.get(container["node"], scene.worker)
    reply: str = wait_for(f"{name} to answer", functools.partial(answer, runs_on.host, port))
    for m in scene.managers:
        wait_for(f"n{m.index} to route {name}", functools.partial(answers, m, port, reply))
    return WebTask(container["task"], runs_on, port, reply)


def answers(agent: AgentHandle, port: int, reply: str) -> bool:
    return answer(agent.host, port) == reply


@pytest.fixture(scope="module")
def web_tasks(scene: Scene, docker_images: None) -> tuple[WebTask, WebTask]:
    """A web replica on a manager and one on the worker, each published on a port of its own:
    traffic that the worker's reports must not divert. Created once; left running."""
    port = scene.cluster.port + 300
    return start_web(scene, "manager", port), start_web(scene, "worker", port + 1)


class Decoy:
    """The attacker's HTTP server, where a forged endpoint points: it answers "impostor" and
    counts the requests it gets (from a proxy that believed the endpoint)."""

    def __init__(self, host: str) -> None:
        decoy = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                decoy.requests += 1
                body = b"impostor\n"
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # not on the test's output

        self.host = host
        self.requests = 0
        self._server = ThreadingHTTPServer((host, 0), Handler)
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def endpoint(self, like: Endpoint) -> Endpoint:
        return dataclasses.replace(like, host=self.host, port=self.port)

    def __enter__(self) -> Decoy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


def refused(cluster: LocalCluster, agent: AgentHandle) -> dict[str, int]:
    """What `agent` does not believe of the reports gossip brings it now, by reason (a gauge)."""
    return {k: v for k, v in counters(cluster, agent).items() if k.startswith("observed_") and v}


def committed_status(scene: Scene, task: WebTask) -> TaskObservation:
    """`task`'s status as its node reported it and the leader shows it (`service ps`)."""
    name = "mw_web_worker" if task.runs_on is scene.worker else "mw_web_manager"
    row = next(t for t in tasks(scene.cluster, name) if t["id"] == task.task_id)
    return TaskObservation(
        task.task_id,
        TaskState.RUNNING,
        container_id=row["container_id"],
        healthy=row["healthy"],
        endpoints=tuple(Endpoint(**e) for e in row["endpoints"]),
    )


@pytest.mark.docker
async def test_a_workers_status_reports_cannot_claim_another_nodes_task_or_foreign_endpoints(
    scene: Scene, web_tasks: tuple[WebTask, WebTask]
) -> None:
    """A status report is committed in the name of the certificate it came with, and only about
    that node's own tasks (issue #15, item 4; issue #16 moved the reports from gossip to the
    leader). With the worker's credentials, the attacker reports the manager's replica running at
    the worker's address (where it listens) and at 127.0.0.1, and adds endpoints at 127.0.0.1 and
    at a manager's address (of other target ports) to the worker's own replica. The leader
    refuses the first and cuts the foreign endpoints of the second (both counted): what is
    left is what the state holds, so nothing is committed, and no observer has anything to
    drop (every observer would: `leader.observation`, for what a leader of an older release
    committed). Each manager's proxy still sends each port to its one real replica, and no
    decoy is ever asked. The attacker claims again and again while the checks run; the
    worker's own word stays the committed one throughout."""
    with trio.fail_after(TEST_TIMEOUT_S):
        worker = Impostor(scene.worker.data_dir)
        on_manager, on_worker = web_tasks
        leader = await off_loop(scene.leader)
        before = await off_loop(picture, scene)
        believed = functools.partial(refused, scene.cluster, leader)
        await off_loop(wait_for, "the leader to believe every report", lambda: not believed())
        real_report = await off_loop(committed_status, scene, on_worker)
        like = real_report.endpoints[0]
        refusals, cuts = "status_refused_report_other_nodes_task", "status_cut_foreign_endpoints"
        seen = await off_loop(counters, scene.cluster, leader)
        with (
            Decoy(scene.worker.host) as at_worker,
            Decoy("127.0.0.1") as at_loopback,
            Decoy(scene.managers[0].host) as at_manager,
        ):
            claims = (
                TaskObservation(
                    on_manager.task_id,
                    TaskState.RUNNING,
                    container_id="impostor",
                    endpoints=(at_worker.endpoint(like), at_loopback.endpoint(like)),
                ),
                dataclasses.replace(
                    real_report,
                    endpoints=(
                        *real_report.endpoints,
                        # Other target ports: a second endpoint of the same one is refused whole
                        # by the leader (`test_a_status_with_more_endpoints_than_...`).
                        at_loopback.endpoint(dataclasses.replace(like, target=like.target + 1)),
                        at_manager.endpoint(dataclasses.replace(like, target=like.target + 2)),
                    ),
                ),
            )

            async def claim_again_and_again() -> None:
                stream = await worker.connect(leader)
                async with stream.stream:
                    for seq in range(1, 1_000_000):
                        report = StatusReport(seq, claims)
                        reply = await ask_on(stream, report, (StatusReportReply,))
                        assert reply is not None and reply.ok, reply
                        await trio.sleep(0.05)

            def replies_through(m: AgentHandle, task: WebTask) -> Counter[str]:
                return Counter(get(m.host, task.port) for _ in range(20))

            def claim_refused_and_cut() -> bool:
                now = counters(scene.cluster, leader)
                return now[refusals] > seen[refusals] and now[cuts] > seen[cuts]

            async with trio.open_nursery() as nursery:
                nursery.start_soon(claim_again_and_again)
                await off_loop(wait_for, "the leader to refuse and cut", claim_refused_and_cut)
                assert not await off_loop(believed)  # nothing foreign was committed to drop
                assert await off_loop(committed_status, scene, on_worker) == real_report
                for m in scene.managers:
                    for task in web_tasks:
                        got = await off_loop(replies_through, m, task)
                        assert got == Counter({task.answer: 20}), (m.index, task.port, got)
                nursery.cancel_scope.cancel()
            assert (at_worker.requests, at_loopback.requests, at_manager.requests) == (0, 0, 0)
        for m in scene.managers:
            await off_loop(
                wait_for,
                f"n{m.index} to believe every report again",
                lambda m=m: not refused(scene.cluster, m),
            )
        assert await off_loop(committed_status, scene, on_worker) == real_report
        await off_loop(assert_unchanged, scene, before)


def replies(m: AgentHandle, task: WebTask) -> Counter[str]:
    return Counter(get(m.host, task.port) for _ in range(10))


@pytest.mark.docker
async def test_a_status_with_more_endpoints_than_its_task_publishes_is_refused_or_cut(
    scene: Scene, web_tasks: tuple[WebTask, WebTask]
) -> None:
    """The worker's own replica reported with 2,000 endpoints of its one target (every proxy
    would try each for every connection): refused; and with 2,000 targets (every node would
    listen on each at the service's addresses), each on the worker's own host: cut to the
    first 1,024 (an honest task's state must still commit); and with one more endpoint on a
    made-up host of 3.5 MB (it grew the state and every worker's view by as much): cut. All
    counted; the worker's own reporter then sends its real status again, and the routes and the
    cluster are as before (found by reviews)."""
    with trio.fail_after(TEST_TIMEOUT_S):
        worker = Impostor(scene.worker.data_dir)
        before = await off_loop(picture, scene)
        _, on_worker = web_tasks
        leader = await off_loop(scene.leader)
        real = await off_loop(committed_status, scene, on_worker)
        like = real.endpoints[0]
        wide = [
            dataclasses.replace(
                real,
                endpoints=tuple(dataclasses.replace(like, port=20000 + i) for i in range(2000)),
            ),
            dataclasses.replace(
                real,
                endpoints=tuple(
                    dataclasses.replace(like, target=20000 + i, port=20000 + i) for i in range(2000)
                ),
            ),
            dataclasses.replace(
                real,
                endpoints=(
                    *real.endpoints,
                    dataclasses.replace(like, target=like.target + 1, host="h" * 3_500_000),
                ),
            ),
        ]
        seen = await off_loop(counters, scene.cluster, leader)
        stream = await worker.connect(leader)
        async with stream.stream:
            for seq, claim in enumerate(wide, 1):
                reply = await ask_on(stream, StatusReport(seq, (claim,)), (StatusReportReply,))
                assert reply is not None and reply.ok, reply
        await off_loop(
            wait_counted,
            scene.cluster,
            leader,
            seen,
            Counter(
                status_refused_endpoints=1, status_cut_endpoints=1, status_cut_foreign_endpoints=1
            ),
        )
        await off_loop(
            wait_for,
            "the worker's own status again",
            lambda: committed_status(scene, on_worker) == real,
        )
        for m in scene.managers:
            for task in web_tasks:
                got = await off_loop(replies, m, task)
                assert got == Counter({task.answer: 10}), (m.index, task.port, got)
        await off_loop(assert_unchanged, scene, before)


@pytest.mark.docker
async def test_addresses_no_socket_takes_stop_no_agent(
    scene: Scene, web_tasks: tuple[WebTask, WebTask]
) -> None:
    """Each of these stopped agents before: a gossip PingReq whose target host has a 70-byte
    label (the relaying member's `sendto` raised UnicodeError), a NUL (ValueError) or is "."; an
    Alive of the worker's own with such a host; a status report of the worker's own replica with
    an endpoint on port 70000, committed and then tried by every proxy (OverflowError in
    `connect`). Now each datagram is dropped as malformed and the status refused, counted; every
    agent stays up and every proxy still reaches every replica."""
    with trio.fail_after(TEST_TIMEOUT_S):
        worker = Impostor(scene.worker.data_dir)
        w = scene.worker_id
        before = await off_loop(picture, scene)
        own_meta = (await worker.members(scene.managers[0]))[w].meta
        bad_hosts = ("a" * 70, "a\x00b", ".")
        for target in scene.managers:
            target_id = scene.manager_ids[target.index]
            seen = await off_loop(counters, scene.cluster, target)
            await worker.send_datagrams(
                target,
                [
                    *(
                        worker.datagram(PingReq(7, target_id, host, 7946, False), signed_as=w)
                        for host in bad_hosts
                    ),
                    worker.datagram(
                        worker.own_alive(HUGE_INCARNATION, "a" * 70, 7946, own_meta),
                        signed_as=w,
                    ),
                ],
            )
            expected = Counter(gossip_dropped_malformed=len(bad_hosts) + 1)
            await off_loop(wait_counted, scene.cluster, target, seen, expected)

        _, on_worker = web_tasks
        leader = await off_loop(scene.leader)
        real = await off_loop(committed_status, scene, on_worker)
        like = real.endpoints[0]
        claim = dataclasses.replace(
            real, endpoints=(*real.endpoints, dataclasses.replace(like, port=70000))
        )
        seen = await off_loop(counters, scene.cluster, leader)
        stream = await worker.connect(leader)
        async with stream.stream:
            reply = await ask_on(stream, StatusReport(1, (claim,)), (StatusReportReply,))
        assert reply is not None and reply.ok, reply
        await off_loop(
            wait_counted, scene.cluster, leader, seen, Counter(status_refused_malformed=1)
        )
        for m in scene.managers:
            for task in web_tasks:
                got = await off_loop(replies, m, task)
                assert got == Counter({task.answer: 10}), (m.index, task.port, got)
        assert await off_loop(committed_status, scene, on_worker) == real
        for agent in scene.cluster.agents:
            assert agent.running(), f"n{agent.index} stopped"
        await off_loop(assert_unchanged, scene, before)


async def test_a_silent_connection_is_closed_and_counted(scene: Scene) -> None:
    """A member that connects (its certificate is valid) and sends nothing held one of the
    connections the transport allows for as long as it liked: 1,024 such, and no Raft stream,
    session or report could connect any more. It is closed after FIRST_FRAME_TIMEOUT_S."""
    with trio.fail_after(TEST_TIMEOUT_S):
        worker = Impostor(scene.worker.data_dir)
        target = scene.managers[0]
        seen = await off_loop(counters, scene.cluster, target)
        stream = await worker.connect(target)
        async with stream.stream:
            with trio.move_on_after(FIRST_FRAME_TIMEOUT_S + CUT_WAIT_S) as waited:
                with contextlib.suppress(*_CUT):
                    assert await stream.receive() is None
        assert not waited.cancelled_caught, "the silent connection was kept open"
        await off_loop(wait_counted, scene.cluster, target, seen, Counter(dropped_stream_silent=1))


def routes(scene: Scene) -> dict[int, dict[str, tuple[str, str]]]:
    """Each manager's proxy routes: per listener, its service and its endpoints."""
    found = {}
    for m in scene.managers:
        proxy = scene.cluster.status(m)["proxy"]
        found[m.index] = {
            k: (v["service"], json.dumps(v["endpoints"], sort_keys=True)) for k, v in proxy.items()
        }
    return found


def web_state(scene: Scene) -> list[tuple[Any, ...]]:
    """The committed tasks of the two web services, as `service ps` shows them."""
    return sorted(
        (t["id"], t["state"], t["node_name"], t["container_id"], json.dumps(t["endpoints"]))
        for name in ("mw_web_manager", "mw_web_worker")
        for t in tasks(scene.cluster, name)
    )


@dataclass(frozen=True)
class WebBaseline:
    """What an attack on status reports may not change: the cluster (`picture`), the web
    services' committed tasks and every manager's routes."""

    picture: dict[str, Any]
    web_state: list[tuple[Any, ...]]
    routes: dict[int, dict[str, tuple[str, str]]]

    @classmethod
    def now(cls, scene: Scene) -> WebBaseline:
        return cls(picture(scene), web_state(scene), routes(scene))

    def assert_unchanged(self, scene: Scene) -> None:
        assert web_state(scene) == self.web_state
        assert routes(scene) == self.routes
        assert_unchanged(scene, self.picture)


def stranger_data_dir(scene: Scene, where: Path) -> Path:
    """The worker's data dir with a certificate the cluster CA signed (with the managers' key
    from a manager's data dir) for a node id the state does not hold: what a node whose join
    never completed, or anyone with that key, would present. The transport admits it (not
    removed, not expired, this cluster); only the intake can tell it is no member."""
    worker = DataDir(scene.worker.data_dir)
    where.mkdir()
    for name in ("identity.msgpack", "cluster.key", "node.key", "ca.crt"):
        (where / name).write_bytes((worker.path / name).read_bytes())
    managers_key = DataDir(scene.managers[0].data_dir).read_manager_key()
    assert managers_key is not None
    key = crypto.node_signing_key(crypto.new_key())
    stranger = DataDir(where)
    stranger.cert_file.write_bytes(
        certs.issue(
            crypto.ManagerKeys(managers_key).ca_key,
            cluster_id=scene.cluster.cluster_id,
            node_id=crypto.new_id(),
            role="worker",
            generation=0,
            public_key=certs.raw_public_key(key),
            now=time.time(),
        )
    )
    stranger.tls_key_file.write_bytes(certs.private_key_pem(key))
    return where


@pytest.mark.docker
async def test_status_reports_from_a_non_member_or_of_too_many_statuses_are_refused(
    scene: Scene, web_tasks: tuple[WebTask, WebTask], tmp_path: Path
) -> None:
    """The intake's first checks, over real TLS to the leader: a report from a certificate of
    the cluster for a node the state does not hold, and one from the worker with more than
    `MAX_STATUSES_PER_REPORT` statuses, are each refused with their reason and counted once;
    the control, the same worker sending its own committed status, is answered. The state, the
    routes and the leader are what they were."""
    with trio.fail_after(TEST_TIMEOUT_S):
        worker = Impostor(scene.worker.data_dir)
        stranger = Impostor(stranger_data_dir(scene, tmp_path / "stranger"))
        _, on_worker = web_tasks
        leader = await off_loop(scene.leader)
        before = await off_loop(WebBaseline.now, scene)
        own = await off_loop(committed_status, scene, on_worker)
        seen = await off_loop(counters, scene.cluster, leader)

        reply = await stranger.ask(leader, StatusReport(1, (own,)), (StatusReportReply,))
        assert isinstance(reply, StatusReportReply) and not reply.ok, reply
        assert "the sender is not a member" in reply.error
        too_many = StatusReport(1, (own,) * (MAX_STATUSES_PER_REPORT + 1))
        reply = await worker.ask(leader, too_many, (StatusReportReply,))
        assert isinstance(reply, StatusReportReply) and not reply.ok, reply
        assert f"more than {MAX_STATUSES_PER_REPORT} statuses" in reply.error
        reply = await worker.ask(leader, StatusReport(2, (own,)), (StatusReportReply,))
        assert isinstance(reply, StatusReportReply) and reply.ok, reply  # the control

        # (Statuses the real nodes report meanwhile may be committed: not counted here.)
        expected = Counter(status_report_refused=2)
        await off_loop(wait_counted, scene.cluster, leader, seen, expected)
        await off_loop(before.assert_unchanged, scene)


@pytest.mark.docker
async def test_a_workers_load_and_port_errors_are_cut_to_its_own_and_counted(
    scene: Scene, web_tasks: tuple[WebTask, WebTask]
) -> None:
    """Load figures for the manager's task and a made-up one, connection counts for a hundred
    services that do not exist, and three times `MAX_PORT_ERRORS` oversized port errors, in
    the worker's name over real TLS: the leader keeps only what the worker may speak for (its
    own running task, the services that exist) and counts every entry it drops, and the report
    whose port errors it cuts. The worker's own reporter then says its truth again; the state,
    the routes and the leader are what they were."""
    with trio.fail_after(TEST_TIMEOUT_S):
        worker = Impostor(scene.worker.data_dir)
        on_manager, on_worker = web_tasks
        leader = await off_loop(scene.leader)
        before = await off_loop(WebBaseline.now, scene)
        seen = await off_loop(counters, scene.cluster, leader)

        made_up = {f"made-up-{i}": 1 for i in range(100)}
        load = NodeLoad(
            (
                TaskLoad(on_manager.task_id, 99.0, 1 << 40),
                TaskLoad("no-such-task", 99.0, 1 << 40),
                TaskLoad(on_worker.task_id, 1.0, 1 << 20),  # its own: kept, once
                *[TaskLoad(on_worker.task_id, 99.0, 1 << 40)] * 1000,
            ),
            {"mw_web_worker": 1, **made_up},
        )
        errors = {f"{40000 + i}/tcp": "x" * 1000 for i in range(3 * MAX_PORT_ERRORS)}
        reply = await worker.ask(leader, StatusReport(1, (), errors, load), (StatusReportReply,))
        assert isinstance(reply, StatusReportReply) and reply.ok, reply

        dropped = 2 + 1000 + len(made_up)
        expected = Counter(
            status_refused_load_entries=dropped,
            status_refused_port_errors=1,
            status_report_refused=0,
        )
        await off_loop(wait_counted, scene.cluster, leader, seen, expected)
        await off_loop(before.assert_unchanged, scene)


async def test_frames_a_worker_makes_dense_to_decode_leave_the_leader_its_lead(
    scene: Scene, web_tasks: tuple[WebTask, WebTask]
) -> None:
    """Status reports of 512 statuses of 300 endpoints each, about 3.8 MiB (under a worker's 4
    MiB frame; 340 at another host when the intake took those), back to back on one TLS link
    to the leader: each was 0.74 s of decoding, on the event loop, past the election timeout
    (0.4-0.8 s), so the followers stopped hearing from it. Decoded in a thread now, and the
    statuses vetted a share at a time: about tasks the worker does not run (refused before a
    single endpoint is looked at), then about its own task, 512 times over, one target 300
    times (every endpoint vetted, each status refused), then 300 targets (each status news:
    one 4 MB Raft entry, 0.3 s to encode and 0.8 s to apply on every manager's loop; the
    reporter sends at most REPORT_ENDPOINTS, and the intake commits that much of it: 27
    statuses). Once the worker's own reporter has said its truth again, the leader, the term
    and everything else are what they were."""
    _, on_worker = web_tasks
    running = TaskState.RUNNING
    host = scene.worker.host  # its own: endpoints elsewhere are cut before anything else
    one_target = tuple(Endpoint(80, "tcp", host, 30000 + i) for i in range(300))
    targets = tuple(Endpoint(81 + i, "tcp", host, 30000 + i) for i in range(300))
    unknown = tuple(TaskObservation(f"t{i}", running, endpoints=one_target) for i in range(512))
    own = (TaskObservation(on_worker.task_id, running, endpoints=one_target),) * 512
    news = (TaskObservation(on_worker.task_id, running, endpoints=targets),) * 512
    reports = 2
    with trio.fail_after(TEST_TIMEOUT_S):
        worker = Impostor(scene.worker.data_dir)
        leader = await off_loop(scene.leader)
        before = await off_loop(WebBaseline.now, scene)
        seen = await off_loop(counters, scene.cluster, leader)
        stream = await worker.connect(leader)
        async with stream.stream:
            sent = (unknown,) * reports + (own,) * reports + (news,) * reports
            for seq, statuses in enumerate(sent, start=1):
                reply = await ask_on(stream, StatusReport(seq, statuses), (StatusReportReply,))
                assert isinstance(reply, StatusReportReply) and reply.ok, reply
        expected = Counter(
            status_refused_report_unknown_task=reports * len(unknown),
            status_refused_endpoints=reports * len(own),
            status_cut_report_size=reports,
        )
        await off_loop(wait_counted, scene.cluster, leader, seen, expected)

        def truth_again() -> bool:
            return web_state(scene) == before.web_state

        await off_loop(wait_for, "the worker's status as it is, again", truth_again)
        await off_loop(before.assert_unchanged, scene)


@pytest.mark.docker
async def test_a_worker_reporting_news_faster_than_its_rate_is_refused_and_counted(
    scene: Scene, web_tasks: tuple[WebTask, WebTask]
) -> None:
    """Its own task's status with a new 4 KiB error text in every report, one after another on
    each of a few TLS links to the leader: each was news, and a Raft write on every manager, as
    fast as the worker sent them. Past a burst of two full reports' worth, and what the rate
    refilled meanwhile, refused and counted; once the rate allows, the worker's own reporter
    says its truth again, and the state, the routes and the leader are what they were. (Four
    links: one report at a time on one link, each waiting for its commit, went slower than the
    rate on a busy machine, and was never refused.)"""
    links = 4
    with trio.fail_after(TEST_TIMEOUT_S):
        worker = Impostor(scene.worker.data_dir)
        _, on_worker = web_tasks
        leader = await off_loop(scene.leader)
        before = await off_loop(WebBaseline.now, scene)
        own = await off_loop(committed_status, scene, on_worker)
        seen = await off_loop(counters, scene.cluster, leader)
        numbers = itertools.count(1)
        taken: list[int] = []  # the size of each report taken
        refusals = 0
        refused = trio.Event()

        async def report_until_refused() -> None:
            nonlocal refusals
            stream = await worker.connect(leader)
            async with stream.stream:
                for seq in itertools.count(1):
                    if refused.is_set():
                        return
                    lie = dataclasses.replace(own, error=f"{next(numbers):06d}" + "x" * 4000)
                    reply = await ask_on(stream, StatusReport(seq, (lie,)), (StatusReportReply,))
                    assert isinstance(reply, StatusReportReply), reply
                    if not reply.ok:
                        assert "over the node's rate of statuses" in reply.error, reply
                        refusals += 1
                        refused.set()
                        return
                    taken.append(status_bytes(lie))

        started = time.monotonic()
        async with trio.open_nursery() as nursery:
            for _ in range(links):
                nursery.start_soon(report_until_refused)
        elapsed = time.monotonic() - started
        # The burst, what refilled while the test ran, and one report a link in flight.
        allowed = STATUS_BURST_BYTES + elapsed * STATUS_BYTES_PER_S + links * max(taken, default=0)
        assert sum(taken) <= allowed, (len(taken), elapsed)

        # Each refusal counted; the worker's own reporter, which finds the lies committed and
        # reports its truth, may be refused once meanwhile too.
        def counted() -> int | None:
            now = counters(scene.cluster, leader)["status_refused_rate"]
            grown = now - seen["status_refused_rate"]
            return grown if grown >= refusals else None

        grown = await off_loop(wait_for, "the refusals counted", counted)
        assert grown in (refusals, refusals + 1), (grown, refusals)

        def truth_again() -> bool:
            return web_state(scene) == before.web_state and not any(
                t["error"] for t in tasks(scene.cluster, "mw_web_worker")
            )

        await off_loop(wait_for, "the worker's status as it is, again", truth_again)
        await off_loop(before.assert_unchanged, scene)


# ---------------------------------------------------------------------------- answers


async def test_raft_answers_from_a_worker_cannot_raise_a_managers_term(scene: Scene) -> None:
    """A learner only answers, and an answer cannot make a voter adopt a term: otherwise any
    worker deposes the leader at will, every time it likes. (Last of the shared cluster's
    tests: should it fail, the cluster holds a new term.)"""
    with trio.fail_after(TEST_TIMEOUT_S):
        worker = Impostor(scene.worker.data_dir)
        before = await off_loop(picture, scene)
        for target in scene.managers:
            target_id = scene.manager_ids[target.index]
            term = before["raft"][target.index][1]
            stream = await worker.raft_stream(target, scene.worker_id)
            async with stream.stream:
                # Before the answers: the agent judges each as it arrives, long before a
                # status call made after them returns.
                seen = await off_loop(counters, scene.cluster, target)
                await stream.send(HeartbeatResp(scene.worker_id, target_id, term + 1))
                await stream.send(AppendResp(scene.worker_id, target_id, term + 1, 0))
                await stream.send(VoteResp(scene.worker_id, target_id, term + 1, False))
                # A refused frame after them: once it is counted, the three before it have been
                # judged too (in order, on one stream).
                await stream.send(TimeoutNow(scene.worker_id, target_id, term))
                await off_loop(
                    wait_counted,
                    scene.cluster,
                    target,
                    seen,
                    # A worker is in no Raft group: its answers are refused before their
                    # terms are looked at (tests/raft/test_authorization.py: a learner's).
                    Counter(raft_refused_not_manager=1, raft_refused_not_in_group=3),
                )
        await off_loop(assert_unchanged, scene, before)


# ---------------------------------------------------------------------------- node rm


async def test_a_worker_that_left_cannot_come_back_at_another_address(tmp_path: Path) -> None:
    """A member signs its own Alive, address included, and memberlist takes a dead or departed
    member back at whatever new address it names. So the worker leaves in its own signed word and,
    in the same datagram, comes back far above its incarnation at the attacker's address: had the
    manager taken it, it would probe, ping and push-pull there (any host the attacker chose to
    aim it at). The manager takes the leave (the worker's to give), refuses the address (counted,
    not the one the state records) and sends nothing there; the real worker refutes its leave and
    is back, at its own address."""
    with trio.fail_after(TEST_TIMEOUT_S):
        with local_cluster(tmp_path) as cluster:
            scene = await off_loop(start_scene, cluster, 1)
            before = await off_loop(picture, scene)
            worker = Impostor(scene.worker.data_dir)
            w = scene.worker_id
            manager = scene.managers[0]
            with trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM) as decoy:
                await decoy.bind(("127.0.0.51", 0))
                decoy_host, decoy_port = decoy.getsockname()
                held = (await worker.members(manager))[w]
                leave = Dead(
                    held.incarnation,
                    w,
                    w,
                    worker.signing_key.sign(leave_signed_bytes(w, held.incarnation)),
                )
                back = worker.own_alive(held.incarnation + 1000, decoy_host, decoy_port, held.meta)
                seen = await off_loop(counters, cluster, manager)
                await worker.send_datagrams(manager, [worker.datagram(leave, back, signed_as=w)])
                with trio.move_on_after(5.0):  # probes come every 0.3 s
                    data = await decoy.recv(MAX_DATAGRAM_BYTES + 1)
                    pytest.fail(f"the manager sent {len(data)} bytes to the worker's new address")
                expected = Counter(gossip_dropped_addr_not_recorded=1)
                await off_loop(wait_counted, cluster, manager, seen, expected)
            ready = functools.partial(all_ready_everywhere, scene)
            await off_loop(wait_for, "the worker to be back and ready", ready)
            now = (await worker.members(manager))[w]
            assert (now.host, now.port) == (held.host, held.port), now
            assert now.state is MemberState.ALIVE, now
            # Leader, term and every node's record as before (one manager: no follower to
            # write through, as `assert_unchanged` does).
            assert await off_loop(picture, scene) == before


async def test_a_removed_worker_is_refused_on_new_and_open_connections(tmp_path: Path) -> None:
    """The real worker keeps running and trying (as a removed agent does), so the managers'
    counters of refused removed peers grow by at least the attacker's refusals. The attacker's
    links opened before the removal are served until it is applied and cut at their next frame
    after it; new connections are refused whatever they ask. Its gossip datagrams, answered
    before, are dropped at the door after: the removed node's key no longer signs for a member."""
    with trio.fail_after(TEST_TIMEOUT_S):
        with local_cluster(tmp_path) as cluster:
            scene = await off_loop(start_scene, cluster)
            worker = Impostor(scene.worker.data_dir)
            w = scene.worker_id

            def proposal(seq: int) -> ProposeBatch:
                return ProposeBatch(seq, (ProposeRequest(b"", proposer=w),))

            # Open links, one to each manager, answered before the removal.
            links = {}
            for m in scene.managers:
                links[m.index] = stream = await worker.connect(m)
                reply = await ask_on(stream, proposal(1), (ProposeBatchReply,))
                assert isinstance(reply, ProposeBatchReply) and not reply.replies[0].ok, reply
                assert await worker.acked(m, scene.manager_ids[m.index], signed_as=w)
            before = {m.index: await off_loop(counters, cluster, m) for m in scene.managers}
            leader = await off_loop(scene.leader)
            await off_loop(
                run_cli, "node", "rm", "--force", f"n{scene.worker.index}", data_dir=leader.data_dir
            )
            for m in scene.managers:
                await off_loop(
                    wait_for,
                    f"n{m.index} to apply the removal",
                    lambda m=m: w not in {n["id"] for n in cluster.node_ls(m)},
                )
            for m in scene.managers:
                # Ours, and the real agent's: it keeps probing the managers and refuting them.
                ping = worker.datagram(Ping(1, scene.manager_ids[m.index]), signed_as=w)
                await worker.send_datagrams(m, [ping])
                name = "dropped_datagram_unknown_sender"
                dropped = functools.partial(grown, cluster, m, name, before[m.index][name])
                await off_loop(
                    wait_for, f"n{m.index} to drop the removed worker's datagrams", dropped
                )
            for m in scene.managers:
                # Opened before, kept open: cut at its next frame.
                async with links[m.index].stream:
                    assert await ask_on(links[m.index], proposal(2), (ProposeBatchReply,)) is None
                # New connections: nothing is answered, a Raft stream is closed.
                for request, expect in (
                    (CertRequest(), (CertReply,)),
                    (SecretsRequest(w, "any", 0, os.urandom(16)), (SecretsReply,)),
                    (proposal(1), (ProposeBatchReply,)),
                ):
                    assert await worker.ask(m, request, expect) is None, request
                assert await worker.raft_refused(m, w)
                # Five refusals of ours (the real worker's attempts may add to them).
                refused = (await off_loop(counters, cluster, m))["refused_peer_removed"]
                assert refused - before[m.index]["refused_peer_removed"] >= 5
            leaders = {await off_loop(cluster.leader_of, m) for m in scene.managers}
            assert leaders == {scene.manager_ids[leader.index]}
            run = functools.partial(run_cli, "node", "update", "--label-add", "after-rm=1", "n1")
            await off_loop(run, data_dir=scene.follower().data_dir)
