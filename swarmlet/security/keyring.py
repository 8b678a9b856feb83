"""The keys this node holds: the cluster key following its epochs, and the managers' key
following its role.

Every node holds the cluster key (`crypto.ClusterKeys`: agent-to-agent traffic) and its own
X25519 key pair (`node.key`; the public half is in its Node record). Managers also hold the
managers' key (`managers.key`, `crypto.ManagerKeys`), which opens what the replicated state keeps
sealed from workers: secrets' values and the join tokens.

How a manager gets the managers' key. `init` generates it. Every manager's Node record carries it
sealed to that node's public key (`Node.sealed_manager_key`), written by the manager that admits
it (join with the manager token) or promotes it (`node promote`); the first node's record carries
it too, sealed to itself. Chosen over sending it in the join reply because one path then serves
joins and promotions alike, any manager can admit or promote (not only the leader), and demotion
is a single replicated change: `UpdateNode(role=worker)` empties the record's blob on every
replica. `sync` makes this node's data dir follow its own record: a blob appears, the key is
opened and written; the record says worker, or it is gone (`node rm --force`) after this node
has seen it, `managers.key` is deleted.

A forged key. Anyone can seal a key of their choice to a node's public key, and the state only
checks that a manager's record carries a blob. So a blob is taken only if the key it holds is
the cluster's: its public key (`ManagerKeys.public_key`) must equal the one `init` recorded in
the state (`ClusterState.managers_public_key`).

`sync` runs after every applied command and before every use of the key, but not while the
state is older than the one the node stopped with (`settled` false: a restart's replay of its
Raft log), which would drop the key of a node promoted later in that log, only for the replay to
bring it back (a crash in between left no key on disk); a newer cluster key epoch waits for the
end of the replay too. A state installed from a snapshot calls no apply hook, so a demotion
learnt that way takes effect at the next command applied or the next use, whichever comes
first. "Seen" is this process's memory: a node removed while it was down, which never hears of
it, keeps its key (which the removal rotated).

The managers' key is rotated when a manager leaves the managers (demotion, `node rm` of a
manager; Swarm does not): `security.managers_key_rotation` builds one `RotateManagersKey`,
committed in the same `Batch`, that records a new public key, seals the new key to each remaining
manager and every value sealed under the old key again under the new one. `sync` then finds the
state naming another key than the one held, opens its record's new blob and replaces
`managers.key` (an atomic write: a crash leaves the old key or the new one). A demoted node that
kept the old key opens nothing the state holds from then on, and nothing sealed later. It still
holds the CA key, which does not change (every certificate in use hangs on it): from the first
rotation on, the state keeps its seed sealed under the current managers' key (`ca_key`), so the
old copy yields the CA key only because it derives it, as before. With it the demoted node can
mint certificates, which count only for the identity key in the node's record
(`peer_policy.admit`): never in another member's name; in its own, or for ids no record lists,
judged by the state's role (a worker's, whatever the certificate says) and the revocation list:
no manager's rights and no task's data. That residual risk is documented (README); replacing the
CA would need every node's trust anchor replaced.

The cluster key's epochs. The cluster key seals gossip (`wire.datagram_keys`; the TCP channel is
TLS with node certificates, and what a datagram says is signed by its sender), and every member
holds it, so a removed node kept a copy. `node rm` therefore commits a new key with the removal,
in one `Batch` (`rotate_cluster_key`): a random key, the next epoch, sealed to each remaining
member's public key in its record (`Node.sealed_cluster_key`), as the managers' key travels.
`sync` opens this node's copy when its record brings a newer epoch, writes it to the data dir
(`cluster-epoch.key`, atomically: a restarted node sends under it at once) and hands it to the
transport, which sends under it from then on and still opens the previous epoch for a grace
period. The removed node gets no copy (its record is gone, and each copy opens only with its
member's private key): it reads nothing a member sends once that member has applied the change,
and what it sends opens nowhere once the grace period is over (its signature was refused from
the removal on: it is no member). Epoch 0 is the key `init` made: the join
reply carries it and the join tokens' fingerprint names it; a node admitted after a rotation gets
the current epoch in its record as well (`seal_cluster_key_to`), and the state refuses a record
that brings another epoch (the key was replaced while it joined: it joins again).

A demotion changes nothing for the cluster key (workers hold it too); the managers' key is
rotated then (see above). Not rotated: by `init --restore` (`node.bootstrap`), which removes
every old node but starts again at epoch 0, the key in the backup, which all of them held.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import msgpack
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from swarmlet import certs, crypto
from swarmlet.errors import RemoteProtocolError, StorageCorruptError, UsageError
from swarmlet.security import managers_key_rotation
from swarmlet.security.datadir import DataDir, write_atomic
from swarmlet.state.commands import RotateClusterKey
from swarmlet.state.machine import ClusterState, cluster_key_epoch
from swarmlet.state.model import Role
from swarmlet.wire.datagram_keys import GRACE_S, DatagramKeys
from swarmlet.wire.peer_rpc import SecretsReply

log = logging.getLogger(__name__)


class KeyRing:
    def __init__(
        self,
        datadir: DataDir,
        node_id: str,
        state: Callable[[], ClusterState],
        *,
        cluster_id: str,
        settled: Callable[[], bool] = lambda: True,
        cert_lifetime_s: float = certs.DEFAULT_LIFETIME_S,
        datagram_grace_s: float = GRACE_S,
    ) -> None:
        self._datadir = datadir
        self._cluster_id = cluster_id
        self.cert_lifetime_s = cert_lifetime_s
        self._node_id = node_id
        self._state = state
        self._settled = settled
        self._node_key = datadir.read_node_key()
        self.public_key = crypto.public_key_of(self._node_key)
        master = datadir.read_manager_key()
        self._managers = crypto.ManagerKeys(master) if master is not None else None
        # Its public key (computed once: `sync` compares it with the state's at every command).
        self._managers_public = self._managers.public_key if self._managers is not None else b""
        self._unopenable = b""  # a blob that failed to open: not retried (and logged) each time
        self._seen_own = False  # this node's record was in the applied state at some point
        # The cluster key: the newest epoch this node holds (the data dir's copy, else epoch 0,
        # the key `init` made), and the transport's epochs, which follow it.
        epoch, master = read_cluster_epoch_key(datadir)
        self.cluster_key_epoch = epoch
        self._cluster = crypto.ClusterKeys(master)
        self.datagram_keys = DatagramKeys(
            epoch, self._cluster.message_key, grace_s=datagram_grace_s
        )
        self._unopenable_cluster_key = b""

    # ------------------------------------------------------------------------ the managers' key

    def sync(self) -> None:
        """Take or drop the managers' key as this node's own record says (see the docstring)."""
        if not self._settled():
            return  # an older state than this node's own (a replay): it keeps what it holds
        state = self._state()
        own = state.nodes.get(self._node_id)
        if own is None:
            # Not yet in the state this node has applied (a restart, a join), or removed.
            if self._seen_own:
                self._drop("this node was removed from the cluster")
            return
        self._seen_own = True
        self._sync_cluster_key(own.cluster_key_epoch, own.sealed_cluster_key)
        if own.role is Role.WORKER:
            self._drop("this node is a worker")
            return
        blob = own.sealed_manager_key
        if self._managers_public == state.managers_public_key or not blob:
            return  # the key the state names is held already (or none is given to this node)
        if blob == self._unopenable:
            return
        try:
            keys = crypto.ManagerKeys.open_from_node(self._node_key, self._node_id, blob)
            if keys.public_key != state.managers_public_key:
                raise RemoteProtocolError("it is not the cluster's (another public key)")
        except RemoteProtocolError as exc:
            self._unopenable = blob
            log.error("the managers' key in this node's record was refused: %s", exc)
            return
        # Atomic: a crash leaves the old key or the new one, never a mix. The old key is
        # forgotten: what it sealed is sealed under the new one in the same command.
        self._datadir.write_manager_key(keys.master)
        replaced = self._managers is not None
        self._managers, self._managers_public = keys, keys.public_key
        if replaced:
            log.info("the managers' key was rotated: this node holds the new one")
        else:
            log.info("this node is a manager: it received the managers' key")

    def _drop(self, why: str) -> None:
        if self._managers is not None:
            self._managers, self._managers_public = None, b""
            self._datadir.remove_manager_key()
            log.info("%s: the managers' key was removed from its data dir", why)

    @property
    def managers(self) -> crypto.ManagerKeys | None:
        self.sync()
        return self._managers

    def require_managers(self) -> crypto.ManagerKeys:
        keys = self.managers
        if keys is None:
            raise UsageError(
                "this node is not a manager: run it on a manager (this node does not hold the "
                "managers' key; a manager that joined or was promoted a moment ago receives it "
                "once it has caught up)"
            )
        return keys

    def seal_manager_key_to(self, node_id: str, public_key: bytes) -> bytes:
        """For the record of a node becoming a manager (join with the manager token, promote)."""
        keys = self.require_managers()
        try:
            return keys.seal_to_node(node_id, public_key)
        except RemoteProtocolError as exc:
            raise UsageError(
                f"node {node_id} cannot receive the managers' key: its record has no usable "
                f"public key ({exc}); remove it (`swarmlet node rm`) and join it again from an "
                "empty data dir with the manager token"
            ) from None

    # ------------------------------------------------------------------------ the cluster key

    def _sync_cluster_key(self, epoch: int, blob: bytes) -> None:
        """Take the cluster key of a newer epoch from this node's record (see the docstring)."""
        if epoch <= self.cluster_key_epoch or not blob or blob == self._unopenable_cluster_key:
            return
        try:
            keys = crypto.ClusterKeys.open_from_node(self._node_key, self._node_id, epoch, blob)
        except RemoteProtocolError as exc:
            self._unopenable_cluster_key = blob
            log.error(
                "the cluster key of epoch %d in this node's record was refused: %s", epoch, exc
            )
            return
        write_cluster_epoch_key(self._datadir, epoch, keys.master)
        self.cluster_key_epoch, self._cluster = epoch, keys
        self.datagram_keys.install(epoch, keys.message_key, time.monotonic())
        log.info("the cluster key was replaced: gossip is sealed under epoch %d", epoch)

    def seal_cluster_key_to(self, node_id: str, public_key: bytes) -> tuple[int, bytes]:
        """(epoch, blob) for the record of a node being admitted: the cluster key this node
        holds, sealed to it; (0, b"") before any rotation (the join reply carries epoch 0)."""
        self.sync()
        if self.cluster_key_epoch == 0:
            return 0, b""
        epoch = self.cluster_key_epoch
        return epoch, self._cluster.seal_to_node(node_id, public_key, epoch)

    # ------------------------------------------------------------------------ certificates

    def issue_certificate(self, node_id: str, role: Role, generation: int, key: bytes) -> bytes:
        """A node certificate (`swarmlet.certs`) for Ed25519 public key `key`, signed with the
        CA key (managers only: UsageError elsewhere)."""
        return certs.issue(
            self.ca_key(),
            cluster_id=self._cluster_id,
            node_id=node_id,
            role=role.value,
            generation=generation,
            public_key=key,
            now=time.time(),
            lifetime_s=self.cert_lifetime_s,
        )

    def ca_certificate(self) -> bytes:
        return certs.ca_certificate(self.ca_key())

    def ca_key(self) -> Ed25519PrivateKey:
        """The CA's key, unchanged by rotations of the managers' key (`managers_key_rotation`).
        Managers only: UsageError elsewhere, or while this node still holds a replaced key."""
        keys = self.require_managers()
        try:
            return managers_key_rotation.ca_key(self._state(), keys)
        except RemoteProtocolError:
            raise UsageError(
                "the CA key in the state does not open with this node's managers' key (it was "
                "rotated a moment ago): retry once this node has caught up"
            ) from None

    # ------------------------------------------------------------------------ join tokens

    def join_tokens(self) -> dict[bytes, tuple[Role, crypto.JoinToken]]:
        """Key id -> (role, token) for the join handshake. Empty on a node that cannot open the
        tokens (a worker): only managers admit new nodes."""
        keys = self.managers
        if keys is None:
            return {}
        state = self._state()
        tokens: dict[bytes, tuple[Role, crypto.JoinToken]] = {}
        for role in (Role.WORKER, Role.MANAGER):
            sealed = state.sealed_token(role)
            if not sealed:
                continue
            try:
                token = crypto.JoinToken.parse(keys.open_token(role.value, sealed))
            except (RemoteProtocolError, UsageError) as exc:
                log.error("the %s join token in the state does not open: %s", role.value, exc)
                continue
            tokens[token.key_id] = (role, token)
        return tokens

    def join_token(self, role: Role) -> str:
        return self.require_managers().open_token(role.value, self._state().sealed_token(role))

    # ------------------------------------------------------------------------ sealed to us

    def open_delivery(self, reply: SecretsReply, task_id: str, nonce: bytes) -> bytes:
        """Open a delivery of a task's secrets sealed to this node (`secretdelivery`), once its
        signature shows that a manager made it. RemoteProtocolError if either check fails."""
        aad = crypto.delivery_aad(self._node_id, task_id, nonce)
        signed = aad + reply.sealed
        crypto.check_signature(self._state().managers_public_key, reply.signature, signed)
        return crypto.open_sealed(self._node_key, reply.sealed, aad)


# ---------------------------------------------------------------------------- rotation


def rotate_cluster_key(state: ClusterState, *, without: str) -> RotateClusterKey:
    """A new cluster key, of the next epoch, sealed to every member of `state` but `without`
    (the node removed in the same `Batch`). Any member can make it: the key is new, and sealing
    to a public key needs no secret. UsageError if a member's record has no usable public key."""
    keys = crypto.ClusterKeys(crypto.new_key())
    epoch = cluster_key_epoch(state) + 1
    sealed = {}
    for node in state.nodes.values():
        if node.id == without:
            continue
        try:
            sealed[node.id] = keys.seal_to_node(node.id, node.public_key, epoch)
        except RemoteProtocolError as exc:
            raise UsageError(
                f"node {node.name} cannot receive a new cluster key: its record has no usable "
                f"public key ({exc}); remove it too, then join it again from an empty data dir"
            ) from None
    return RotateClusterKey(epoch, sealed)


# ---------------------------------------------------------------------------- the data dir


def cluster_epoch_key_file(datadir: DataDir) -> Path:
    return datadir.path / "cluster-epoch.key"


def read_cluster_epoch_key(datadir: DataDir) -> tuple[int, bytes]:
    """(epoch, key): the newest cluster key this node received, else (0, the key of `init`)."""
    path = cluster_epoch_key_file(datadir)
    try:
        body = msgpack.unpackb(path.read_bytes(), raw=False)
    except FileNotFoundError:
        return 0, datadir.read_identity()[1]
    except (OSError, ValueError, msgpack.UnpackException) as exc:
        raise StorageCorruptError(f"{path} is unreadable ({exc}): remove it and restart") from None
    epoch, key = (body.get("epoch"), body.get("key")) if isinstance(body, dict) else (None, None)
    if (
        not isinstance(epoch, int)
        or epoch < 1
        or not isinstance(key, bytes)
        or len(key) != crypto.KEY_BYTES
    ):
        raise StorageCorruptError(f"{path} is damaged: remove it and restart")
    return epoch, key


def write_cluster_epoch_key(datadir: DataDir, epoch: int, key: bytes) -> None:
    write_atomic(
        cluster_epoch_key_file(datadir), msgpack.packb({"epoch": epoch, "key": key}), 0o600
    )
