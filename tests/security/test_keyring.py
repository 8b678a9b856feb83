"""security.keyring: the managers' key follows the own record (only the cluster's key is taken;
it goes with a demotion or a removal); tokens open on managers only; deliveries open only if
the managers signed them."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from swarmlet import crypto
from swarmlet.errors import RemoteProtocolError, UsageError
from swarmlet.security.datadir import DataDir, Identity
from swarmlet.security.keyring import KeyRing
from swarmlet.state.commands import AddNode, InitCluster, RemoveNode, UpdateNode
from swarmlet.state.machine import ClusterState
from swarmlet.state.model import Node, Role
from swarmlet.wire.peer_rpc import SecretsReply

MANAGERS = crypto.ManagerKeys(crypto.new_key())
CLUSTER = crypto.ClusterKeys(crypto.new_key())
WORKER_TOKEN = crypto.JoinToken.new(CLUSTER)
MANAGER_TOKEN = crypto.JoinToken.new(CLUSTER)


def data_dir(path: Path, node_id: str, *, managers_key: bool = False) -> DataDir:
    d = DataDir(path / node_id)
    identity = Identity(node_id, "c", node_id, "127.0.0.1", 1, "127.0.0.1", "worker")
    d.write_identity(identity, CLUSTER.master, crypto.new_node_key())
    if managers_key:
        d.write_manager_key(MANAGERS.master)
    return d


def cluster(*nodes: Node, managers_public_key: bytes = MANAGERS.public_key) -> ClusterState:
    state = ClusterState()
    init = InitCluster(
        "c",
        0.0,
        MANAGERS.seal_token("worker", str(WORKER_TOKEN)),
        MANAGERS.seal_token("manager", str(MANAGER_TOKEN)),
        managers_public_key=managers_public_key,
    )
    assert state.apply(init).ok
    for node in nodes:
        assert state.apply(AddNode(node)).ok
    return state


def record(node_id: str, role: Role, public_key: bytes, sealed: bytes = b"") -> Node:
    return Node(
        node_id,
        node_id,
        f"{node_id}:1",
        node_id,
        role,
        public_key=public_key,
        sealed_manager_key=sealed,
    )


@pytest.fixture
def worker(tmp_path: Path) -> tuple[KeyRing, DataDir, ClusterState]:
    d = data_dir(tmp_path, "w1")
    public = crypto.public_key_of(d.read_node_key())
    state = cluster(record("w1", Role.WORKER, public))
    return KeyRing(d, "w1", lambda: state, cluster_id="c1"), d, state


def test_a_worker_holds_no_managers_key_and_opens_no_token(
    worker: tuple[KeyRing, DataDir, ClusterState],
) -> None:
    keyring, d, _ = worker
    assert keyring.managers is None
    assert keyring.join_tokens() == {}
    assert not d.manager_key_file.exists()
    with pytest.raises(UsageError, match="this node is not a manager: run it on a manager"):
        keyring.join_token(Role.MANAGER)
    with pytest.raises(UsageError, match="not a manager"):
        keyring.seal_manager_key_to("x", bytes(32))


def test_a_promotion_brings_the_key_and_a_demotion_deletes_it(
    worker: tuple[KeyRing, DataDir, ClusterState],
) -> None:
    keyring, d, state = worker
    blob = MANAGERS.seal_to_node("w1", keyring.public_key)
    assert state.apply(UpdateNode("w1", role=Role.MANAGER, sealed_manager_key=blob)).ok
    keyring.sync()
    assert keyring.managers == MANAGERS
    assert d.read_manager_key() == MANAGERS.master
    assert stat.S_IMODE(d.manager_key_file.stat().st_mode) == 0o600
    assert keyring.join_tokens() == {
        WORKER_TOKEN.key_id: (Role.WORKER, WORKER_TOKEN),
        MANAGER_TOKEN.key_id: (Role.MANAGER, MANAGER_TOKEN),
    }
    assert keyring.join_token(Role.MANAGER) == str(MANAGER_TOKEN)
    # A restart reads the key back from the data dir.
    assert KeyRing(d, "w1", lambda: state, cluster_id="c1").managers == MANAGERS

    assert state.apply(UpdateNode("w1", role=Role.WORKER)).ok
    keyring.sync()
    assert keyring.join_tokens() == {}
    assert not d.manager_key_file.exists()


def test_a_replay_of_older_states_keeps_the_key_a_later_promotion_gave(
    tmp_path: Path,
) -> None:
    """A restarted manager replays its log from states in which it was still a worker: the key
    stays on disk until the state is settled (found by review: the certificates loop's use of
    `managers` during the replay deleted it, and a crash before the replay brought it back
    left the node without it)."""
    d = data_dir(tmp_path, "m2", managers_key=True)
    public = crypto.public_key_of(d.read_node_key())
    state = cluster(record("m2", Role.WORKER, public))  # the replay's state before the promotion
    settled = False
    keyring = KeyRing(d, "m2", lambda: state, cluster_id="c1", settled=lambda: settled)
    keyring.sync()
    assert keyring.managers == MANAGERS
    assert d.read_manager_key() == MANAGERS.master
    settled = True  # the replay is through: the state is the node's own, and it says worker
    assert keyring.managers is None
    assert not d.manager_key_file.exists()


def test_a_key_sealed_to_another_node_is_not_taken(
    worker: tuple[KeyRing, DataDir, ClusterState],
) -> None:
    keyring, d, state = worker
    other = crypto.public_key_of(crypto.new_node_key())
    blob = MANAGERS.seal_to_node("w1", other)
    assert state.apply(UpdateNode("w1", role=Role.MANAGER, sealed_manager_key=blob)).ok
    assert keyring.managers is None
    assert not d.manager_key_file.exists()


def test_a_node_missing_from_its_own_state_keeps_its_key(tmp_path: Path) -> None:
    d = data_dir(tmp_path, "m2", managers_key=True)
    state = cluster()  # e.g. a restart: its record has not been replayed yet
    keyring = KeyRing(d, "m2", lambda: state, cluster_id="c1")
    assert keyring.managers == MANAGERS
    assert d.manager_key_file.exists()


def test_a_manager_seals_the_key_to_a_new_manager_it_can_open(tmp_path: Path) -> None:
    d = data_dir(tmp_path, "m1", managers_key=True)
    keyring = KeyRing(d, "m1", lambda: cluster(), cluster_id="c1")
    new_key = crypto.new_node_key()
    blob = keyring.seal_manager_key_to("m2", crypto.public_key_of(new_key))
    assert crypto.ManagerKeys.open_from_node(new_key, "m2", blob) == MANAGERS
    for unusable in (b"", bytes(31), bytes(32)):  # bytes(32): a low-order point
        with pytest.raises(UsageError, match="node m3 cannot receive the managers' key"):
            keyring.seal_manager_key_to("m3", unusable)


def delivered(
    keyring: KeyRing, task_id: str, nonce: bytes, signer: crypto.ManagerKeys = MANAGERS
) -> SecretsReply:
    aad = crypto.delivery_aad("w1", task_id, nonce)
    sealed = crypto.seal_to(keyring.public_key, b"v", aad)
    return SecretsReply(True, sealed=sealed, signature=signer.sign(aad + sealed))


def test_a_delivery_opens_only_for_this_node_task_and_request(
    worker: tuple[KeyRing, DataDir, ClusterState],
) -> None:
    keyring, _, _ = worker
    reply = delivered(keyring, "t1", b"n1")
    assert keyring.open_delivery(reply, "t1", b"n1") == b"v"
    with pytest.raises(RemoteProtocolError):
        keyring.open_delivery(reply, "t2", b"n1")
    with pytest.raises(RemoteProtocolError):
        keyring.open_delivery(reply, "t1", b"n2")  # a replayed answer to an earlier request


def test_a_delivery_not_signed_by_the_managers_is_refused(
    worker: tuple[KeyRing, DataDir, ClusterState],
) -> None:
    """Anyone can seal values to the worker's public key; only the managers can sign them."""
    keyring, _, _ = worker
    forged = delivered(keyring, "t1", b"n1", signer=crypto.ManagerKeys(crypto.new_key()))
    with pytest.raises(RemoteProtocolError, match="not signed"):
        keyring.open_delivery(forged, "t1", b"n1")
    unsigned = SecretsReply(True, sealed=forged.sealed)
    with pytest.raises(RemoteProtocolError, match="not signed"):
        keyring.open_delivery(unsigned, "t1", b"n1")


@pytest.mark.parametrize(
    "recorded",
    [crypto.ManagerKeys(crypto.new_key()).public_key, b""],
    ids=["another-public-key", "none-recorded"],
)
def test_a_managers_key_that_is_not_the_clusters_is_refused(
    tmp_path: Path, recorded: bytes
) -> None:
    """A forged key: anyone can seal a key of their choice to a node's public key; the state
    only sees that a blob is there. The key must match the public key recorded at init."""
    d = data_dir(tmp_path, "w1")
    public = crypto.public_key_of(d.read_node_key())
    forged = crypto.ManagerKeys(crypto.new_key())
    state = cluster(record("w1", Role.WORKER, public), managers_public_key=recorded)
    blob = forged.seal_to_node("w1", public)
    assert state.apply(UpdateNode("w1", role=Role.MANAGER, sealed_manager_key=blob)).ok
    keyring = KeyRing(d, "w1", lambda: state, cluster_id="c1")
    assert keyring.managers is None
    assert not d.manager_key_file.exists()


def test_a_manager_removed_from_the_state_drops_its_key(tmp_path: Path) -> None:
    d = data_dir(tmp_path, "m2", managers_key=True)
    public = crypto.public_key_of(d.read_node_key())
    state = cluster(record("m2", Role.MANAGER, public, MANAGERS.seal_to_node("m2", public)))
    keyring = KeyRing(d, "m2", lambda: state, cluster_id="c1")
    assert keyring.managers == MANAGERS  # its record is seen
    assert state.apply(RemoveNode("m2")).ok  # `node rm --force` on another manager
    keyring.sync()
    assert keyring.managers is None
    assert keyring.join_tokens() == {}  # it admits nobody any more
    assert not d.manager_key_file.exists()
