"""Seeding a brand-new cluster's Raft storage, on the node that ran `swarmlet init` (or
`swarmlet init --restore`, from a backup's state).

The first node starts from a snapshot at index 1 that already holds the cluster and the node
itself, with that node as the only voter: no election, no log entry, nothing to replay. It is
written in one atomic save, so a crash leaves either a whole cluster or an empty storage that
the next start seeds again.

Invariants: the join tokens are sealed with the managers' key that `init` wrote to the data dir,
and the first node's record carries that key sealed to the node's own public key, as every
manager's does (`swarmlet.security.keyring`). This runs once, before the Raft driver opens the
storage; it knows nothing of the running agent.
"""

from __future__ import annotations

import time

from swarmlet import certs, crypto
from swarmlet.errors import StorageCorruptError
from swarmlet.executor.hostinfo import read_host_info
from swarmlet.raft.storage import RaftStorage
from swarmlet.raft.types import ConfState, HardState, Snapshot, SnapshotMeta
from swarmlet.security import at_rest
from swarmlet.security.datadir import DataDir, Identity
from swarmlet.state.commands import AddNode, Command, InitCluster, RemoveNode, SetAutolock
from swarmlet.state.machine import ClusterState
from swarmlet.state.model import Node, Resources, Role


def bootstrap_storage(
    storage: RaftStorage,
    identity: Identity,
    keys: crypto.ClusterKeys,
    datadir: DataDir,
    *,
    autolock_key: str | None = None,
) -> None:
    """Save the first snapshot of a new cluster whose first node is `identity`; autolocked from
    the start with `autolock_key` (`init --autolock`: `_autolock`).
    StorageCorruptError if `init` left no managers' key in the data dir."""
    managers = _managers(datadir)
    state = ClusterState()
    init = InitCluster(
        cluster_id=identity.cluster_id,
        created_at=time.time(),
        sealed_worker_token=managers.seal_token(Role.WORKER.value, str(crypto.JoinToken.new(keys))),
        sealed_manager_token=managers.seal_token(
            Role.MANAGER.value, str(crypto.JoinToken.new(keys))
        ),
        managers_public_key=managers.public_key,
    )
    first = _add_first_node(identity, datadir, managers)
    for command in (init, first, *_autolock(managers, autolock_key)):
        result = state.apply(command)
        assert result.ok, result.error
    _save_first_snapshot(storage, identity, state)


def restore_storage(
    storage: RaftStorage,
    identity: Identity,
    datadir: DataDir,
    state_data: bytes,
    *,
    autolock_key: str | None = None,
) -> int:
    """Seed a new data dir's storage from a backup's state (`init --restore`): every node of the
    old cluster is removed (their hosts join again as new nodes; their tasks are replaced, and
    their certificates are refused by the revocation list), and `identity` is the first node, as
    after `init`. Returns how many old nodes were removed."""
    managers = _managers(datadir)
    state = ClusterState.restore(state_data)
    if state.cluster_id != identity.cluster_id:
        raise StorageCorruptError(
            f"the backup is of cluster {state.cluster_id}, not {identity.cluster_id}"
        )
    now = time.time()
    old = sorted(state.nodes)
    commands: list[Command] = [RemoveNode(node_id, removed_at=now) for node_id in old]
    commands.append(_add_first_node(identity, datadir, managers))
    commands.extend(_autolock(managers, autolock_key))
    for command in commands:
        result = state.apply(command)
        assert result.ok, result.error
    _save_first_snapshot(storage, identity, state)
    return len(old)


def _autolock(managers: crypto.ManagerKeys, key: str | None) -> list[Command]:
    """`init --autolock` (issue #18): the first node's data key is sealed by `key` before its
    first start (`cli.cluster`), so the cluster's first state says autolock with that key, and
    no data key of this cluster is ever written in clear (`security.at_rest`)."""
    if key is None:
        return []
    return [SetAutolock(True, at_rest.seal_unlock_key(managers, key))]


def _managers(datadir: DataDir) -> crypto.ManagerKeys:
    master = datadir.read_manager_key()
    if master is None:
        raise StorageCorruptError(
            f"{datadir.manager_key_file} is missing: remove the data dir and run `swarmlet init`"
        )
    return crypto.ManagerKeys(master)


def _add_first_node(identity: Identity, datadir: DataDir, managers: crypto.ManagerKeys) -> AddNode:
    public_key = crypto.public_key_of(datadir.read_node_key())
    host = read_host_info()
    return AddNode(
        Node(
            id=identity.node_id,
            name=identity.name,
            addr=identity.addr,
            publish_addr=identity.publish_host,
            role=Role.MANAGER,
            resources=Resources(nano_cpus=host.nano_cpus, memory_bytes=host.memory_bytes),
            joined_at=time.time(),
            public_key=public_key,
            sealed_manager_key=managers.seal_to_node(identity.node_id, public_key),
            signing_key=certs.raw_public_key(datadir.signing_key()),
        ),
        name_is_explicit=True,
    )


def _save_first_snapshot(storage: RaftStorage, identity: Identity, state: ClusterState) -> None:
    """One atomic save: a crash leaves either a whole cluster or an empty storage."""
    snapshot = Snapshot(
        SnapshotMeta(index=1, term=1, conf=ConfState(voters=(identity.node_id,))), state.snapshot()
    )
    storage.save(HardState(term=1, vote=None, commit=1), [], snapshot)
