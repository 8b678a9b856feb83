"""swarmlet.keyring: the managers' key follows the own record; tokens open on managers only."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from swarmlet import crypto
from swarmlet.datadir import DataDir, Identity
from swarmlet.errors import RemoteProtocolError, UsageError
from swarmlet.keyring import KeyRing
from swarmlet.model import Node, Role
from swarmlet.state import AddNode, ClusterState, InitCluster, UpdateNode

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


def cluster(*nodes: Node) -> ClusterState:
    state = ClusterState()
    init = InitCluster(
        "c",
        0.0,
        MANAGERS.seal_token("worker", str(WORKER_TOKEN)),
        MANAGERS.seal_token("manager", str(MANAGER_TOKEN)),
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
    return KeyRing(d, "w1", lambda: state), d, state


def test_a_worker_holds_no_managers_key_and_opens_no_token(
    worker: tuple[KeyRing, DataDir, ClusterState],
) -> None:
    keyring, d, _ = worker
    assert keyring.managers is None
    assert keyring.join_tokens() == {}
    assert not d.manager_key_file.exists()
    with pytest.raises(UsageError, match="run this on a manager"):
        keyring.join_token(Role.MANAGER)
    with pytest.raises(UsageError, match="run this on a manager"):
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
    assert KeyRing(d, "w1", lambda: state).managers == MANAGERS

    assert state.apply(UpdateNode("w1", role=Role.WORKER)).ok
    keyring.sync()
    assert keyring.join_tokens() == {}
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
    keyring = KeyRing(d, "m2", lambda: state)
    assert keyring.managers == MANAGERS
    assert d.manager_key_file.exists()


def test_a_manager_seals_the_key_to_a_new_manager_it_can_open(tmp_path: Path) -> None:
    d = data_dir(tmp_path, "m1", managers_key=True)
    keyring = KeyRing(d, "m1", lambda: cluster())
    new_key = crypto.new_node_key()
    blob = keyring.seal_manager_key_to("m2", crypto.public_key_of(new_key))
    assert crypto.ManagerKeys.open_from_node(new_key, "m2", blob) == MANAGERS
    with pytest.raises(UsageError, match="no public key"):
        keyring.seal_manager_key_to("m3", b"")


def test_a_delivery_opens_only_for_this_node_and_task(
    worker: tuple[KeyRing, DataDir, ClusterState],
) -> None:
    keyring, _, _ = worker
    sealed = crypto.seal_to(keyring.public_key, b"v", crypto.delivery_aad("w1", "t1"))
    assert keyring.open_delivery(sealed, "t1") == b"v"
    with pytest.raises(RemoteProtocolError):
        keyring.open_delivery(sealed, "t2")
