"""A service's registry credential sealed in the replicated state, as secrets' values are.

`--with-registry-auth` sends the client's credential for the image's registry with the spec
(`cli.registry_auth`). The manager that takes the request seals it with the managers' key
(`crypto.ManagerKeys.seal_secret`) under an id bound to the service (`sealed_id`), so the
Raft log, snapshots and data dirs hold only ciphertext that workers cannot open, and a blob
moved to another service does not open. A manager opens it to resolve the image's digest on
the registry (`api.registry`) and to deliver it, with the task's secrets, to the node that runs
a task of that service, and to no other (`secret_access.grant_secrets`).

Must not know: the network, the executor's use of it (`executor.registry_auth`).
"""

from __future__ import annotations

from swarmlet.crypto import ManagerKeys
from swarmlet.errors import RemoteProtocolError, SecretsUnavailableError
from swarmlet.executor.registry_auth import RegistryCredential

_SEAL_PREFIX = "registry-auth/"  # secret ids are crypto.new_id()'s hex: no collision


def sealed_id(service_id: str) -> str:
    """The id the credential of `service_id` is sealed under (its AEAD associated data)."""
    return _SEAL_PREFIX + service_id


def seal_credential(keys: ManagerKeys, service_id: str, credential: RegistryCredential) -> bytes:
    return keys.seal_secret(sealed_id(service_id), credential.to_bytes())


def open_sealed_credential(keys: ManagerKeys, service_id: str, sealed: bytes) -> bytes:
    """The plaintext credential of `service_id`; SecretsUnavailableError if it does not open."""
    try:
        return keys.open_secret(sealed_id(service_id), sealed)
    except RemoteProtocolError:
        raise SecretsUnavailableError(
            "the service's registry credential does not open: it is damaged; give it again "
            "with `swarmlet service update --with-registry-auth`"
        ) from None


def open_credential(keys: ManagerKeys, service_id: str, sealed: bytes) -> RegistryCredential | None:
    """The credential of `service_id` (None for b""); SecretsUnavailableError if damaged."""
    if not sealed:
        return None
    try:
        return RegistryCredential.from_bytes(open_sealed_credential(keys, service_id, sealed))
    except ValueError as exc:
        raise SecretsUnavailableError(f"the service's registry credential: {exc}") from None
