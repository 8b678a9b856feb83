"""The keys this node holds beyond the cluster key, and the managers' key following its role.

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

`sync` runs after every applied command and before every use of the key. A state installed from
a snapshot calls no apply hook, so a demotion learnt that way takes effect at the next command
applied or the next use, whichever comes first. A demoted node did know the key: nothing re-keys
the cluster on demotion (neither does Swarm); rotate the join tokens if that matters. "Seen" is
this process's memory: a node removed while it was down, which never hears of it, keeps its key.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from swarmlet import certs, crypto
from swarmlet.errors import RemoteProtocolError, UsageError
from swarmlet.security.datadir import DataDir
from swarmlet.state.machine import ClusterState
from swarmlet.state.model import Role
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
        cert_lifetime_s: float = certs.DEFAULT_LIFETIME_S,
    ) -> None:
        self._datadir = datadir
        self._cluster_id = cluster_id
        self.cert_lifetime_s = cert_lifetime_s
        self._node_id = node_id
        self._state = state
        self._node_key = datadir.read_node_key()
        self.public_key = crypto.public_key_of(self._node_key)
        master = datadir.read_manager_key()
        self._managers = crypto.ManagerKeys(master) if master is not None else None
        self._unopenable = b""  # a blob that failed to open: not retried (and logged) each time
        self._seen_own = False  # this node's record was in the applied state at some point

    # ------------------------------------------------------------------------ the managers' key

    def sync(self) -> None:
        """Take or drop the managers' key as this node's own record says (see the docstring)."""
        state = self._state()
        own = state.nodes.get(self._node_id)
        if own is None:
            # Not yet in the state this node has applied (a restart, a join), or removed.
            if self._seen_own:
                self._drop("this node was removed from the cluster")
            return
        self._seen_own = True
        if own.role is Role.WORKER:
            self._drop("this node is a worker")
            return
        blob = own.sealed_manager_key
        if self._managers is not None or not blob or blob == self._unopenable:
            return
        try:
            keys = crypto.ManagerKeys.open_from_node(self._node_key, self._node_id, blob)
            if keys.public_key != state.managers_public_key:
                raise RemoteProtocolError("it is not the cluster's (another public key)")
        except RemoteProtocolError as exc:
            self._unopenable = blob
            log.error("the managers' key in this node's record was refused: %s", exc)
            return
        self._datadir.write_manager_key(keys.master)
        self._managers = keys
        log.info("this node is a manager: it received the managers' key")

    def _drop(self, why: str) -> None:
        if self._managers is not None:
            self._managers = None
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

    # ------------------------------------------------------------------------ certificates

    def issue_certificate(self, node_id: str, role: Role, generation: int, key: bytes) -> bytes:
        """A node certificate (`swarmlet.certs`) for Ed25519 public key `key`, signed with the
        CA key (managers only: UsageError elsewhere)."""
        return certs.issue(
            self.require_managers().ca_key,
            cluster_id=self._cluster_id,
            node_id=node_id,
            role=role.value,
            generation=generation,
            public_key=key,
            now=time.time(),
            lifetime_s=self.cert_lifetime_s,
        )

    def ca_certificate(self) -> bytes:
        return certs.ca_certificate(self.require_managers().ca_key)

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
