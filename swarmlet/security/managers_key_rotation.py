"""A new managers' key when a manager leaves the managers, and the CA key that outlives it.

What the managers' key seals, all of it in the replicated state, which workers replicate too:
secrets' values (`ManagerKeys.seal_secret` under the secret's id), both join tokens
(`seal_token`), services' registry credentials (`security.registry_auth`), autolock's unlock key
(`security.at_rest`) and, once the key has been rotated, the CA's key (`sealed_ca_seed` here).
A manager that is demoted or removed may have kept `managers.key`; `rotation` therefore builds,
on the manager handling the demotion or removal, one `RotateManagersKey` that gives every
remaining manager a new random key (sealed to each one's public key, as a promotion does) and
carries each of those values opened with the old key and sealed with the new. It is committed in
the same `Batch` as the demotion or removal, so no state says "not a manager" while the old key
still opens what it holds; the state refuses it if the managers, the secrets or the credentials
changed since it was built, and the proposer builds it again (`api.nodes`).

The CA does not change. Every node trusts the CA certificate it got at join, and every
certificate in use is signed by it: a new CA key would cut every node off. Until the first
rotation the CA key derives from the managers' key (`ManagerKeys.ca_key`, as clusters made by
earlier versions have it); the first rotation stores that same key's 32-byte seed in the state,
sealed with the new managers' key (`RotateManagersKey.sealed_ca_seed`), and every later rotation
seals it again. `ca_key` uses the sealed seed when the state has one, else the derivation. A
backup holds the state and the managers' key of its time, which opens that state's seed: a
restore keeps the CA. Residual risk, accepted and documented (README, `security.keyring`): a
demoted manager that kept the old key also holds the CA key, now and later. What it can mint
is limited by `security.peer_policy.admit`: a certificate counts only for the identity key in its
node's record, so it mints nothing in another member's name, only for its own id and for ids
no record lists; a manager's certificate counts only where the receiver's state, Raft log or
known members back it, so either is a worker's: no manager's rights, no task's data (but for
the narrow windows `peer_policy` lists).

Who may rotate. Only managers propose (`security.propose_auth`: the sender's certificate and the
state must say manager, and the MAC must be under the current key), and `rotation` needs the
current key to open the values. The new key is made in memory and sealed to the remaining
managers only; the manager that builds it keeps no copy but its own record's (a manager that
demotes itself forgets it: its data dir never receives it).

Must not know: the network, Raft.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from swarmlet import crypto
from swarmlet.errors import RemoteProtocolError, UsageError
from swarmlet.security.at_rest import open_unlock_key, seal_unlock_key
from swarmlet.security.registry_auth import sealed_id
from swarmlet.state.commands import RotateManagersKey
from swarmlet.state.machine import ClusterState
from swarmlet.state.model import Role

log = logging.getLogger(__name__)

# The id the CA seed is sealed under (its AEAD associated data): secret ids are hex, registry
# credentials' ids start with "registry-auth/", so no value can pass for another.
_CA_SEED_ID = "ca-seed/1"


def ca_seed(state: ClusterState, keys: crypto.ManagerKeys) -> bytes:
    """The 32 bytes of the CA's Ed25519 key: the sealed seed of `state`, or (never rotated) the
    derivation from `keys`. RemoteProtocolError if the sealed seed does not open with `keys`."""
    if not state.sealed_ca_seed:
        return keys.ca_key.private_bytes_raw()
    seed = keys.open_secret(_CA_SEED_ID, state.sealed_ca_seed)
    if len(seed) != crypto.KEY_BYTES:
        raise RemoteProtocolError(f"the CA seed must be {crypto.KEY_BYTES} bytes")
    return seed


def ca_key(state: ClusterState, keys: crypto.ManagerKeys) -> Ed25519PrivateKey:
    """The cluster CA's key (`swarmlet.certs`), the same across rotations of the managers' key."""
    return Ed25519PrivateKey.from_private_bytes(ca_seed(state, keys))


def rotation(
    state: ClusterState,
    keys: crypto.ManagerKeys,
    *,
    managers: Iterable[str],
    new_master: bytes | None = None,
) -> RotateManagersKey:
    """The rotation to commit with the change that leaves `managers` (node ids) as the managers:
    a new key (`new_master`, random unless given) sealed to each of them, and every value `keys`
    opens in `state` sealed again under it. UsageError if `keys` is not the state's current key
    or a manager's record has no usable public key. A value that does not open (damaged) is
    carried over as it is: it opened under no key before either."""
    if keys.public_key != state.managers_public_key:
        raise UsageError(
            "this manager does not hold the current managers' key yet: retry in a moment"
        )
    new = crypto.ManagerKeys(new_master if new_master is not None else crypto.new_key())
    sealed = {}
    for node_id in managers:
        node = state.nodes.get(node_id)
        if node is None or node.role is not Role.MANAGER:
            raise UsageError(f"node {node_id} is not a manager")
        try:
            sealed[node_id] = new.seal_to_node(node_id, node.public_key)
        except RemoteProtocolError as exc:
            raise UsageError(
                f"manager {node.name} cannot receive a new managers' key: its record has no "
                f"usable public key ({exc}); remove it too, then join it again"
            ) from None
    secrets = {
        s.id: _reseal(s.data, s.name, keys.open_secret, new.seal_secret, s.id)
        for s in state.secrets.values()
        if not s.is_config
    }
    credentials = {
        s.id: _reseal(
            s.registry_auth, s.spec.name, keys.open_secret, new.seal_secret, sealed_id(s.id)
        )
        for s in state.services.values()
        if s.registry_auth
    }
    try:
        tokens = {
            role: new.seal_token(role.value, keys.open_token(role.value, state.sealed_token(role)))
            for role in (Role.WORKER, Role.MANAGER)
        }
        unlock_key = b""
        if state.autolock:
            unlock_key = seal_unlock_key(new, open_unlock_key(keys, state.sealed_unlock_key))
        seed = ca_seed(state, keys)
    except RemoteProtocolError as exc:
        raise UsageError(
            f"the state holds a join token, unlock key or CA seed that does not open ({exc}): "
            "the managers' key cannot be rotated"
        ) from None
    return RotateManagersKey(
        previous_public_key=keys.public_key,
        public_key=new.public_key,
        sealed=sealed,
        secrets=secrets,
        sealed_worker_token=tokens[Role.WORKER],
        sealed_manager_token=tokens[Role.MANAGER],
        registry_auth=credentials,
        sealed_ca_seed=new.seal_secret(_CA_SEED_ID, seed),
        sealed_unlock_key=unlock_key,
    )


def _reseal(
    sealed: bytes,
    name: str,
    open_: Callable[[str, bytes], bytes],
    seal: Callable[[str, bytes], bytes],
    value_id: str,
) -> bytes:
    try:
        return seal(value_id, open_(value_id, sealed))
    except RemoteProtocolError:
        log.warning("%s does not open with the managers' key: carried over as it is", name)
        return sealed
