"""Backup files: a consistent snapshot of the replicated state, sealed by a passphrase (issue #18).

`swarmlet backup FILE` on a manager takes the state as its Raft replica holds it after a read
barrier (a linearizable point, not a copy of files that may be mid-write) and writes it with the
two cluster keys that give it meaning: the managers' key, which opens the secrets and join tokens
sealed in the state (and the cluster CA's key: derived from it, or, once the managers' key has
been rotated, sealed with it in the state, `security.managers_key_rotation`), and the cluster
key, which verifies the join tokens. A manager replaces its copy of the managers' key when it
applies a rotation, so the key read from its data dir is the one the state names, unless a
rotation was committed between the two reads: take the backup again then. Whoever holds a
backup and its passphrase holds the cluster, so the whole payload is sealed with AES-256-GCM
under a key derived from the operator's passphrase by scrypt (RFC 7914; n=2^15, r=8, p=1, a
fresh 16-byte salt per file), and the header is authenticated as the AAD. `swarmlet init
--restore FILE` opens it (`node.bootstrap.restore_storage`).

File: MAGIC, then a msgpack map {version, salt, n, r, p, sealed}; the plaintext is a msgpack
map {cluster_id, created_at, raft_index, managers_key, cluster_key, state}. A wrong passphrase,
a damaged file and a file of a newer version are refused with a message that says which.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import msgpack
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from swarmlet.errors import UsageError

MAGIC = b"swarmlet backup\n"
VERSION = 1
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 1
_NONCE = 12
MIN_PASSPHRASE_CHARS = 12


@dataclass(frozen=True, slots=True)
class Backup:
    cluster_id: str
    created_at: float
    raft_index: int  # the applied index the state was taken at
    managers_key: bytes
    cluster_key: bytes
    state: bytes  # `ClusterState.snapshot()`


def scrypt_key(passphrase: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(passphrase.encode())


def seal_backup(backup: Backup, passphrase: str) -> bytes:
    if len(passphrase) < MIN_PASSPHRASE_CHARS:
        raise UsageError(f"the passphrase must have at least {MIN_PASSPHRASE_CHARS} characters")
    salt = os.urandom(16)
    plaintext = msgpack.packb(
        {
            "cluster_id": backup.cluster_id,
            "created_at": backup.created_at,
            "raft_index": backup.raft_index,
            "managers_key": backup.managers_key,
            "cluster_key": backup.cluster_key,
            "state": backup.state,
        }
    )
    nonce = os.urandom(_NONCE)
    head = {"version": VERSION, "salt": salt, "n": SCRYPT_N, "r": SCRYPT_R, "p": SCRYPT_P}
    aad = MAGIC + msgpack.packb(head)
    sealed = nonce + AESGCM(scrypt_key(passphrase, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)).encrypt(
        nonce, plaintext, aad
    )
    return MAGIC + msgpack.packb({**head, "sealed": sealed})


def open_backup(data: bytes, passphrase: str, *, source: str = "the backup") -> Backup:
    """The backup in `data`; UsageError naming `source` if it is not one, is damaged, is of a
    newer version, or the passphrase is not its."""
    if not data.startswith(MAGIC):
        raise UsageError(f"{source} is not a swarmlet backup")
    try:
        outer = msgpack.unpackb(data[len(MAGIC) :])
        version, salt, sealed = outer["version"], outer["salt"], outer["sealed"]
        n, r, p = outer["n"], outer["r"], outer["p"]
    except (ValueError, KeyError, TypeError, msgpack.UnpackException) as exc:
        raise UsageError(f"{source} is damaged: {exc}") from None
    if version != VERSION:
        raise UsageError(f"{source} is of backup format {version}; this swarmlet reads {VERSION}")
    if not (isinstance(n, int) and n <= 2**20 and isinstance(r, int) and r <= 32 and p == 1):
        raise UsageError(f"{source} is damaged: implausible key derivation parameters")
    head = {"version": version, "salt": salt, "n": n, "r": r, "p": p}
    try:
        plaintext = AESGCM(scrypt_key(passphrase, salt, n, r, p)).decrypt(
            sealed[:_NONCE], sealed[_NONCE:], MAGIC + msgpack.packb(head)
        )
    except (InvalidTag, ValueError, TypeError):
        raise UsageError(
            f"{source} does not open with this passphrase (or it was altered)"
        ) from None
    body = msgpack.unpackb(plaintext)
    return Backup(
        cluster_id=body["cluster_id"],
        created_at=body["created_at"],
        raft_index=body["raft_index"],
        managers_key=body["managers_key"],
        cluster_key=body["cluster_key"],
        state=body["state"],
    )
