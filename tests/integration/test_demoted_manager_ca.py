"""A demoted manager and the managers' key it kept (issue #15), on one real cluster: three
managers and a worker, a secret used by a service whose task runs on the worker; a follower is
demoted. The attacker is this test process with a copy of that manager's data dir taken before
its demotion (its identity key and `managers.key`), on its own loopback address.

The managers' key is rotated with the demotion (`security.managers_key_rotation`): the remaining
managers hold a new key (their `managers.key` changed); the kept key opens neither the secret's
value as the state now holds it nor a secret created afterwards nor the join tokens; the task's
secret is still delivered (a new replica reads it); the manager token (sealed again) still admits
a manager, which receives the new key; the leader is the one it was.

The CA stays the same across the rotation (every certificate in use is signed by it), so the
kept key still yields the CA key (the residual risk, documented in `managers_key_rotation`). It
mints, with the CA key:

- a manager's certificate in another manager's name, for its own key: every member refuses the
  connection (`peer_policy.admit`: the certificate is not for the key in that node's record) and
  counts it, whatever it asks;
- the control, a manager's certificate in its own name and key: the TLS handshake and the
  policy pass, so the other refusal is for the key, and what it gets is a worker's certificate
  (the state's role for its id, not what it minted);
- a manager's certificate in its own name, and one for an id no member lists, each carrying a
  Raft stream of what only a leader sends (a heartbeat and an append at the next term, a
  snapshot that makes the minter the only voter): the state does not list either as a manager,
  so each is taken for a worker's and every message is refused (`peer_policy.admit`; before,
  the certificate's role counted and the snapshot replaced every manager's state);
- a certificate for an id no member lists, asking for a worker's session: no view is served
  (before, it got every node's record and the routed services' tasks and endpoints).

The cluster's leader, terms and members are unchanged after it, and writes still commit.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio

from swarmlet import certs, crypto
from swarmlet.certs import PeerIdentity
from swarmlet.errors import RemoteProtocolError
from swarmlet.node.replicated import encode_command
from swarmlet.node.worker_sessions import VIEW_PROTOCOL
from swarmlet.raft.driver import RaftStreamHello
from swarmlet.raft.messages import AppendEntries, Heartbeat, InstallSnapshot
from swarmlet.raft.types import ConfState, Entry, Snapshot, SnapshotMeta
from swarmlet.security.backup import open_backup
from swarmlet.security.datadir import DataDir
from swarmlet.state.commands import UpdateNode
from swarmlet.state.machine import ClusterState
from swarmlet.state.model import Role
from swarmlet.state.worker_view import SessionHello, ViewUpdate
from swarmlet.wire.peer_rpc import CertReply, CertRequest
from swarmlet.wire.transport import FramedStream, TlsConfig, Transport
from tests.integration.cluster import AgentHandle, LocalCluster, local_cluster, run_cli, wait_for
from tests.integration.test_malicious_worker import (
    ATTACKER_HOST,
    TEST_TIMEOUT_S,
    Scene,
    ask_on,
    assert_unchanged,
    counters,
    off_loop,
    picture,
    settled,
    start_scene,
    wait_counted,
)

pytestmark = [pytest.mark.integration, pytest.mark.docker]

MINTED_GENERATION = 1000  # above any generation in use: not lowered as an old certificate


class Minter:
    """The demoted manager's leftovers: its identity key and the managers' key it kept."""

    def __init__(self, kept: Path, cluster_id: str, workdir: Path) -> None:
        self.datadir = DataDir(kept)
        master = self.datadir.read_manager_key()
        assert master is not None, "the copy was taken before the demotion"
        self.managers = crypto.ManagerKeys(master)
        self.signing_key = self.datadir.signing_key()
        self.cluster_id = cluster_id
        self.workdir = workdir
        workdir.mkdir()

    def transport(self, node_id: str) -> Transport:
        """A client presenting a manager's certificate for `node_id`, minted for our own key."""
        pem = certs.issue(
            self.managers.ca_key,
            cluster_id=self.cluster_id,
            node_id=node_id,
            role="manager",
            generation=MINTED_GENERATION,
            public_key=certs.raw_public_key(self.signing_key),
            now=time.time(),
        )
        cert_file, key_file = self.workdir / f"{node_id}.pem", self.workdir / "key.pem"
        cert_file.write_bytes(pem)
        key_file.write_bytes(certs.private_key_pem(self.signing_key))
        ca_pem = certs.ca_certificate(self.managers.ca_key)
        context = certs.tls_context(
            server=False, ca_pem=ca_pem, cert_file=cert_file, key_file=key_file
        )
        tls = TlsConfig(server=context, client=context, admit=lambda peer: peer)
        return Transport((ATTACKER_HOST, 0), crypto.new_key(), tls)

    async def cert_request(self, agent: AgentHandle, as_node: str) -> CertReply | None:
        """A CertRequest on a new connection under a certificate for `as_node`: the answer, or
        None if the agent cut the connection."""
        try:
            stream = await self.transport(as_node).connect((agent.host, agent.port))
        except (OSError, trio.BrokenResourceError, trio.TooSlowError):
            return None
        async with stream.stream:
            reply: CertReply | None = await ask_on(stream, CertRequest(), (CertReply,))
            return reply

    async def raft_stream(self, agent: AgentHandle, as_node: str) -> FramedStream:
        """A Raft stream from `as_node`, under a manager's certificate minted for that id."""
        stream = await self.transport(as_node).connect((agent.host, agent.port))
        await stream.send(RaftStreamHello(as_node))
        return stream


def leaders_messages(
    as_node: str, target_id: str, term: int, last_index: int
) -> list[Heartbeat | AppendEntries | InstallSnapshot]:
    """What a leader of the next term sends: a heartbeat, an append that makes `as_node` a
    manager, and a snapshot whose only voter is `as_node`."""
    promote = encode_command(UpdateNode(as_node, role=Role.MANAGER))
    entry = Entry(term=term + 1, index=last_index + 1, data=promote)
    snapshot = Snapshot(
        SnapshotMeta(last_index + 1000, term + 1, ConfState(voters=(as_node,))), b""
    )
    return [
        Heartbeat(as_node, target_id, term + 1, last_index),
        AppendEntries(as_node, target_id, term + 1, last_index, term, (entry,), last_index + 1),
        InstallSnapshot(as_node, target_id, term + 1, snapshot),
    ]


def demote(cluster: LocalCluster, scene: Scene, target: AgentHandle) -> None:
    run_cli("node", "demote", f"n{target.index}", data_dir=scene.leader().data_dir)
    wait_for(
        f"n{target.index} to drop the managers' key",
        lambda: not DataDir(target.data_dir).manager_key_file.exists(),
    )


@dataclass(frozen=True)
class Demotion:
    scene: Scene  # as it was before the demotion
    rest: Scene  # the remaining managers and the worker
    demoted: AgentHandle
    kept: Path  # the copy of the demoted manager's data dir, taken before
    leader_id: str
    keys_before: dict[int, bytes]  # agent index -> its managers.key before the demotion


SECRET_VALUE = "before-the-demotion\n"


def running_replicas(cluster: LocalCluster, n: int) -> list[str] | None:
    ids = [c["id"] for c in cluster.containers(service="kr") if c["state"] == "running"]
    return ids if len(ids) == n else None


def secret_file_in(container_id: str) -> str:
    return subprocess.run(
        ["docker", "exec", container_id, "cat", "/run/secrets/kr_before"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


@pytest.fixture(scope="module")
def demotion(tmp_path_factory: pytest.TempPathFactory, docker_images: None) -> Iterator[Demotion]:
    root = tmp_path_factory.mktemp("demotion")
    with local_cluster(root / "cluster") as cluster:
        scene = start_scene(cluster)
        leader = scene.leader()
        (root / "value").write_text(SECRET_VALUE)
        run_cli("secret", "create", "kr_before", str(root / "value"), data_dir=leader.data_dir)
        run_cli(
            "service",
            "create",
            "--name",
            "kr",
            "--constraint",
            f"node.id=={scene.worker_id}",  # its secret is delivered by a manager
            "--secret",
            "kr_before",
            "swarmlet/web:1",
            data_dir=leader.data_dir,
            timeout=120,
        )
        wait_for("the task to run", lambda: running_replicas(cluster, 1), timeout=60)
        # A follower is the one demoted; the cluster keeps a quorum of two.
        demoted = next(m for m in reversed(scene.managers) if m is not leader)
        kept = root / "kept"
        shutil.copytree(demoted.data_dir, kept, ignore=shutil.ignore_patterns("*.sock"))
        keys_before = {}
        for m in scene.managers:
            key = DataDir(m.data_dir).read_manager_key()
            assert key is not None
            keys_before[m.index] = key
        demote(cluster, scene, demoted)
        managers = [m for m in scene.managers if m is not demoted]
        rest = Scene(cluster, managers, scene.worker, scene.worker_id, scene.manager_ids)
        wait_for("the cluster to settle", lambda: settled(cluster, managers))
        leader_id = scene.manager_ids[leader.index]
        yield Demotion(scene, rest, demoted, kept, leader_id, keys_before)


async def test_a_certificate_minted_in_another_nodes_name_is_refused(
    tmp_path: Path, demotion: Demotion
) -> None:
    scene, rest, demoted, kept = demotion.scene, demotion.rest, demotion.demoted, demotion.kept
    cluster, managers = scene.cluster, rest.managers
    with trio.fail_after(TEST_TIMEOUT_S):
        minter = Minter(kept, cluster.cluster_id, tmp_path / "minted")
        demoted_id = scene.manager_ids[demoted.index]
        before = await off_loop(picture, rest)
        for m in managers:
            victim = next(v for v in managers if v is not m)
            victim_id = scene.manager_ids[victim.index]
            seen = await off_loop(counters, cluster, m)
            # In the victim's name: refused at the door, not answered.
            assert await minter.cert_request(m, victim_id) is None
            # The control, in its own name: admitted, and judged by the state's role.
            reply = await minter.cert_request(m, demoted_id)
            assert reply is not None and reply.ok, reply
            issued: PeerIdentity = certs.verify(
                reply.certificate, certs.ca_certificate(minter.managers.ca_key), now=time.time()
            )
            assert (issued.node_id, issued.role) == (demoted_id, "worker")
            now = await off_loop(counters, cluster, m)
            delta = Counter({k: now[k] - seen[k] for k in ("refused_peer_other_key",)})
            assert delta == Counter(refused_peer_other_key=1), delta
        await off_loop(assert_unchanged, rest, before)


async def test_a_minted_managers_certificate_cannot_lead_the_managers(
    tmp_path: Path, demotion: Demotion
) -> None:
    scene, rest, demoted, kept = demotion.scene, demotion.rest, demotion.demoted, demotion.kept
    cluster, managers = scene.cluster, rest.managers
    with trio.fail_after(TEST_TIMEOUT_S):
        minter = Minter(kept, cluster.cluster_id, tmp_path / "minted")
        before = await off_loop(picture, rest)
        for as_node in (scene.manager_ids[demoted.index], crypto.new_id()):
            for m in managers:
                target_id = scene.manager_ids[m.index]
                status = await off_loop(cluster.status, m)
                messages = leaders_messages(
                    as_node, target_id, status["raft"]["term"], status["raft"]["commit_index"]
                )
                seen = await off_loop(counters, cluster, m)
                stream = await minter.raft_stream(m, as_node)
                async with stream.stream:
                    await stream.send_many(messages)
                    expected = Counter(raft_refused_not_manager=len(messages))
                    await off_loop(wait_counted, cluster, m, seen, expected)
        await off_loop(assert_unchanged, rest, before)


async def test_a_minted_certificate_for_an_id_no_member_has_gets_no_view(
    tmp_path: Path, demotion: Demotion
) -> None:
    """Under an id no member has, a minted certificate passes as a worker's; a session under it
    got a whole view (every node, the routed services, their tasks and endpoints), one for each
    id minted (review). Each manager now waits for the id to appear in its replica, then closes
    the session without a frame, and counts it."""
    scene, rest, kept = demotion.scene, demotion.rest, demotion.kept
    cluster, managers = scene.cluster, rest.managers
    with trio.fail_after(TEST_TIMEOUT_S):
        minter = Minter(kept, cluster.cluster_id, tmp_path / "minted")
        before = await off_loop(picture, rest)
        for m in managers:
            seen = await off_loop(counters, cluster, m)
            stream = await minter.transport(crypto.new_id()).connect((m.host, m.port))
            async with stream.stream:
                await stream.send(SessionHello(VIEW_PROTOCOL))
                assert await stream.receive(expect=(ViewUpdate,)) is None
            expected = Counter(worker_sessions_refused_not_member=1, worker_sessions_served=0)
            await off_loop(wait_counted, cluster, m, seen, expected)
        await off_loop(assert_unchanged, rest, before)


def backed_up_state(agent: AgentHandle, where: Path) -> tuple[ClusterState, bytes]:
    """The replicated state as `swarmlet backup` on `agent` takes it, and the managers' key it
    seals with it."""
    passphrase = where / "passphrase"
    passphrase.write_text("a passphrase for the test")
    run_cli(
        "backup",
        "--passphrase-file",
        str(passphrase),
        str(where / "b.bak"),
        data_dir=agent.data_dir,
    )
    backup = open_backup((where / "b.bak").read_bytes(), passphrase.read_text())
    return ClusterState.restore(backup.state), backup.managers_key


def test_the_managers_key_is_rotated_with_the_demotion(tmp_path: Path, demotion: Demotion) -> None:
    rest, cluster = demotion.rest, demotion.scene.cluster
    old_master = DataDir(demotion.kept).read_manager_key()
    assert old_master is not None and set(demotion.keys_before.values()) == {old_master}

    # The remaining managers replaced their copy with one new key; the demoted one has none.
    def keys_now() -> dict[int, bytes | None] | None:
        now = {m.index: DataDir(m.data_dir).read_manager_key() for m in rest.managers}
        return now if old_master not in now.values() else None

    now = wait_for("the remaining managers to replace their key", keys_now)
    new_master = now[rest.managers[0].index]
    assert new_master is not None and new_master != old_master and set(now.values()) == {new_master}
    assert not DataDir(demotion.demoted.data_dir).manager_key_file.exists()
    assert cluster.leader_of(rest.managers[0]) == demotion.leader_id

    via = rest.leader().data_dir
    (tmp_path / "after").write_text("after-the-demotion\n")
    run_cli("secret", "create", "kr_after", str(tmp_path / "after"), data_dir=via)
    state, backed_up_key = backed_up_state(rest.follower(), tmp_path)
    assert backed_up_key == new_master
    old, new = crypto.ManagerKeys(old_master), crypto.ManagerKeys(new_master)
    assert state.managers_public_key == new.public_key and state.sealed_ca_seed
    for name, value in (("kr_before", SECRET_VALUE), ("kr_after", "after-the-demotion\n")):
        secret = state.secret_by_name(name)
        assert secret is not None
        assert new.open_secret(secret.id, secret.data) == value.encode()
        with pytest.raises(RemoteProtocolError):
            old.open_secret(secret.id, secret.data)
    for role in (Role.WORKER, Role.MANAGER):
        assert new.open_token(role.value, state.sealed_token(role))
        with pytest.raises(RemoteProtocolError):
            old.open_token(role.value, state.sealed_token(role))

    # The task's secret is still delivered: a new replica on the worker reads it.
    run_cli("service", "update", "--replicas", "2", "kr", data_dir=via, timeout=120)
    replicas = wait_for("two replicas", lambda: running_replicas(cluster, 2), timeout=60)
    assert [secret_file_in(c) for c in replicas] == [SECRET_VALUE] * 2

    # The manager token, sealed again, still admits a manager, which gets the new key.
    joined = cluster.join("manager", via=rest.managers[0])
    wait_for(
        "the new manager to hold the new key",
        lambda: DataDir(joined.data_dir).read_manager_key() == new_master,
    )
    assert cluster.leader_of(joined) == demotion.leader_id
