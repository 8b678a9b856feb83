"""The cluster key is replaced when a node is removed (`security.keyring`): the new key travels
sealed to each remaining member in its record, in the same command as the removal; each member's
key ring takes it, keeps it in its data dir and hands it to the transport; a member admitted
later brings the current one; the state refuses a rotation sealed for other members than it has,
and a join that brings another epoch."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from swarmlet import crypto
from swarmlet.errors import RemoteProtocolError, StorageCorruptError
from swarmlet.security.datadir import DataDir, Identity
from swarmlet.security.keyring import (
    KeyRing,
    cluster_epoch_key_file,
    read_cluster_epoch_key,
    rotate_cluster_key,
)
from swarmlet.state.commands import AddNode, Batch, InitCluster, RemoveNode, RotateClusterKey
from swarmlet.state.machine import ClusterState, cluster_key_epoch
from swarmlet.state.model import Node, Role

MANAGERS = crypto.ManagerKeys(crypto.new_key())
GENESIS = crypto.ClusterKeys(crypto.new_key())


class Member:
    """One node's data dir and key ring, over a shared replica of the state."""

    def __init__(self, tmp_path: Path, node_id: str, state: list[ClusterState]) -> None:
        self.id = node_id
        self.datadir = DataDir(tmp_path / node_id)
        identity = Identity(node_id, "c", node_id, "127.0.0.1", 1, "127.0.0.1", "worker")
        self.datadir.write_identity(identity, GENESIS.master, crypto.new_node_key())
        self.public_key = crypto.public_key_of(self.datadir.read_node_key())
        self._state = state
        self.keyring = self.restart()

    def restart(self) -> KeyRing:
        self.keyring = KeyRing(self.datadir, self.id, lambda: self._state[0], cluster_id="c")
        return self.keyring

    def record(self) -> Node:
        return Node(
            self.id, self.id, f"{self.id}:1", self.id, Role.WORKER, public_key=self.public_key
        )


@pytest.fixture
def cluster(tmp_path: Path) -> tuple[list[ClusterState], dict[str, Member]]:
    box = [ClusterState()]
    init = InitCluster(
        "c", 0.0, MANAGERS.seal_token("worker", "w"), MANAGERS.seal_token("manager", "m")
    )
    assert box[0].apply(init).ok
    members = {i: Member(tmp_path, i, box) for i in ("n1", "n2", "n3")}
    for m in members.values():
        assert box[0].apply(AddNode(m.record())).ok
    return box, members


def remove(state: ClusterState, node_id: str) -> RotateClusterKey:
    rotation = rotate_cluster_key(state, without=node_id)
    result = state.apply(Batch((RemoveNode(node_id, removed_at=1.0), rotation)))
    assert result.ok, result.error
    return rotation


def sync_all(members: dict[str, Member]) -> None:
    for m in members.values():
        m.keyring.sync()


def test_a_removal_gives_every_remaining_member_a_new_key_and_the_removed_none(
    cluster: tuple[list[ClusterState], dict[str, Member]],
) -> None:
    box, members = cluster
    sync_all(members)
    assert {m.keyring.datagram_keys.epoch for m in members.values()} == {0}
    rotation = remove(box[0], "n3")
    assert rotation.epoch == 1 and set(rotation.sealed) == {"n1", "n2"}
    assert cluster_key_epoch(box[0]) == 1
    sync_all(members)
    n1, n2, n3 = members["n1"].keyring, members["n2"].keyring, members["n3"].keyring
    assert (n1.cluster_key_epoch, n2.cluster_key_epoch, n3.cluster_key_epoch) == (1, 1, 0)
    # The remaining members read each other under the new key; the removed one reads nothing
    # of theirs, and they drop what it sends once the grace period is over.
    assert n2.datagram_keys.open(n1.datagram_keys.seal(b"hi"), 0.0) == b"hi"
    assert n3.datagram_keys.open(n1.datagram_keys.seal(b"hi"), 0.0) == "unknown_epoch"
    far = 1e12  # any monotonic reading past the grace period
    assert n1.datagram_keys.open(n3.datagram_keys.seal(b"me"), far) == "stale_epoch"


def test_a_member_copy_opens_with_its_own_key_only(
    cluster: tuple[list[ClusterState], dict[str, Member]],
) -> None:
    """Each copy is bound to its record's node id and epoch: another member's private key, or
    the same blob under another id or epoch, opens nothing."""
    box, members = cluster
    rotation = remove(box[0], "n3")
    n1, n2 = members["n1"], members["n2"]
    blob = rotation.sealed["n1"]
    crypto.ClusterKeys.open_from_node(n1.datadir.read_node_key(), "n1", 1, blob)
    for key, node_id, epoch in (
        (n2.datadir.read_node_key(), "n1", 1),
        (n1.datadir.read_node_key(), "n2", 1),
        (n1.datadir.read_node_key(), "n1", 2),
    ):
        with pytest.raises(RemoteProtocolError):
            crypto.ClusterKeys.open_from_node(key, node_id, epoch, blob)


def test_a_rotation_sealed_for_other_members_is_refused_with_its_removal(
    cluster: tuple[list[ClusterState], dict[str, Member]], tmp_path: Path
) -> None:
    """Sealed, then a member joined before it committed: the newcomer would get no key. All or
    nothing: the node is not removed either (`node rm` seals again)."""
    box, _ = cluster
    stale = rotate_cluster_key(box[0], without="n3")
    late = Member(tmp_path, "n4", box)
    assert box[0].apply(AddNode(late.record())).ok
    result = box[0].apply(Batch((RemoveNode("n3"), stale)))
    assert not result.ok and "seal it again" in result.error
    assert "n3" in box[0].nodes and cluster_key_epoch(box[0]) == 0
    # An epoch that is not the next one, or an empty copy, is refused too.
    fresh = rotate_cluster_key(box[0], without="")
    skipped = RotateClusterKey(fresh.epoch + 1, fresh.sealed)
    assert "not next" in box[0].apply(skipped).error
    emptied = RotateClusterKey(fresh.epoch, dict(fresh.sealed, n1=b""))
    assert not box[0].apply(emptied).ok
    assert box[0].apply(fresh).ok


def test_a_node_admitted_after_a_rotation_brings_the_current_key(
    cluster: tuple[list[ClusterState], dict[str, Member]], tmp_path: Path
) -> None:
    box, members = cluster
    remove(box[0], "n3")
    sync_all(members)
    joiner = Member(tmp_path, "n4", box)
    # Without it (an acceptor from before epochs), or with an older epoch: refused.
    assert "join again" in box[0].apply(AddNode(joiner.record())).error
    epoch, blob = members["n1"].keyring.seal_cluster_key_to("n4", joiner.public_key)
    assert epoch == 1 and blob
    record = joiner.record()
    wrong_epoch = AddNode(dataclasses.replace(record, sealed_cluster_key=blob))
    assert not box[0].apply(wrong_epoch).ok
    admitted = dataclasses.replace(record, sealed_cluster_key=blob, cluster_key_epoch=1)
    assert box[0].apply(AddNode(admitted)).ok
    joiner.keyring.sync()
    assert joiner.keyring.cluster_key_epoch == 1
    n1 = members["n1"].keyring.datagram_keys
    assert n1.open(joiner.keyring.datagram_keys.seal(b"new"), 0.0) == b"new"


def test_before_any_rotation_a_join_brings_no_key(
    cluster: tuple[list[ClusterState], dict[str, Member]],
) -> None:
    _, members = cluster
    assert members["n1"].keyring.seal_cluster_key_to("n4", members["n2"].public_key) == (0, b"")


def test_the_new_key_is_kept_in_the_data_dir_and_used_at_once_after_a_restart(
    cluster: tuple[list[ClusterState], dict[str, Member]],
) -> None:
    """Before the restarted node has applied anything, it already sends under the new epoch."""
    box, members = cluster
    remove(box[0], "n3")
    sync_all(members)
    n1 = members["n1"]
    path = cluster_epoch_key_file(n1.datadir)
    assert path.stat().st_mode & 0o777 == 0o600
    epoch, key = read_cluster_epoch_key(n1.datadir)
    assert epoch == 1 and len(key) == crypto.KEY_BYTES
    box[0] = ClusterState()  # nothing applied yet after the restart
    restarted = n1.restart()
    assert restarted.datagram_keys.epoch == 1
    assert members["n2"].keyring.datagram_keys.open(restarted.datagram_keys.seal(b"x"), 0.0) == b"x"
    # The key ring of a node that never saw a rotation starts at epoch 0, with the key of init.
    assert read_cluster_epoch_key(members["n3"].datadir) == (0, GENESIS.master)
    path.write_bytes(b"\x93garbage")
    with pytest.raises(StorageCorruptError, match="remove it and restart"):
        n1.restart()


def test_a_copy_that_does_not_open_is_refused_and_the_key_kept(
    cluster: tuple[list[ClusterState], dict[str, Member]],
) -> None:
    """A record whose copy is not sealed to this node (anyone can seal to a public key, but the
    proposer sealed this one to another node): the node keeps the key it holds."""
    box, members = cluster
    rotation = remove(box[0], "n3")
    n2 = box[0].nodes["n2"]
    box[0].nodes["n2"] = dataclasses.replace(n2, sealed_cluster_key=rotation.sealed["n1"])
    members["n2"].keyring.sync()
    assert members["n2"].keyring.cluster_key_epoch == 0
