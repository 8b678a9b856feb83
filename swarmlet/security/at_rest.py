"""Encryption at rest of the Raft log and snapshots, and autolock (issue #18; Swarm's
`docker swarm init --autolock`, `docker swarm unlock`, `docker swarm unlock-key`).

What it owns: `raft.key` in the data dir, the node's data key (DEK, 256 random bits), and the
form that file takes: in clear, or sealed by the cluster's unlock key. The storage seals every
record body with the DEK (`raft.disk_format`, AES-256-GCM, the record's index and term as
associated data); this module only hands it a `crypto.Sealer`.

Decisions, and why:
- One DEK per node, made by the node the first time it opens its storage (a new node, or one of
  an older version: its old plaintext records stay readable and are not rewritten; they go as
  compaction deletes their segments). It never leaves the node and is never in the replicated
  state: a copy of one node's disk opens no other node's log.
- Every node encrypts, workers too: they are Raft learners and hold the same log (service specs,
  sealed secrets). Simplest and strictly safer; but a worker never locks (it cannot open the
  unlock key, which is sealed with the managers' key, as in Swarm where autolock is for
  managers), so on a worker the DEK lies in clear beside the log it opens.
- Autolock is cluster-wide and replicated: the state carries `autolock` and the unlock key
  sealed with the managers' key (`seal_unlock_key`), never the key in clear; workers replicate
  the blob and cannot open it. Each manager, after applying a change (`AtRest.run`), rewrites
  its `raft.key`: sealed by a key derived from the unlock key with scrypt (the backup file's
  parameters and primitive, `security.backup`), or in clear when autolock is turned off. A
  rotation is the same: each manager re-seals under the new key. A manager that was down during
  a rotation (or while autolock was turned off) is unlocked with the key it was locked with,
  then re-seals (or writes its key in clear) once it has caught up, as in Swarm.
- `init --autolock` writes the first node's data key sealed before the agent's first start,
  then unlocks it; the first snapshot already says autolock (`node.bootstrap`), so no data key
  of such a cluster is ever on disk in clear (a manager joining later makes its key in clear and
  seals it as soon as it has applied the state).
- A locked node (a sealed `raft.key` at start) opens nothing: it serves `unlock` and `status`
  on its control socket (`node.locked`) until the operator gives the key; a wrong key is
  refused (the seal's tag says so), and nothing else on disk changes.

What stays in clear under autolock (this change): `cluster.key`, `node.key` and its TLS form,
`managers.key` (and so the CA key derived from it), the certificates, `members.msgpack` and the
identity. A stolen disk of a locked manager thus does not reveal the log (service specs, the
sealed secrets, the unlock key), but the managers' key in it could impersonate a manager;
sealing it too needs `KeyRing` and `DataDir` to read it through this module.
"""

from __future__ import annotations

import base64
import logging
import os
import secrets
from collections.abc import Callable
from pathlib import Path

import msgpack
import trio
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from swarmlet import crypto
from swarmlet.errors import RemoteProtocolError, StorageCorruptError, UsageError
from swarmlet.security.backup import (
    SCRYPT_N,
    SCRYPT_P,
    SCRYPT_R,
    scrypt_key,  # one scrypt: the backup file's
)
from swarmlet.security.datadir import write_atomic
from swarmlet.state.machine import ClusterState

log = logging.getLogger(__name__)

DATA_KEY_NAME = "raft.key"
MAGIC = b"swarmlet data key\n"
UNLOCK_KEY_PREFIX = "SWLKEY-1-"
_UNLOCK_KEY_BYTES = 32
_NONCE = 12
AAD_UNLOCK_KEY = b"swarmlet/unlock-key/1"  # the unlock key sealed with the managers' key


def data_key_path(data_dir: Path) -> Path:
    return data_dir / DATA_KEY_NAME


# ------------------------------------------------------------------------------ the unlock key


def new_unlock_key() -> str:
    raw = secrets.token_bytes(_UNLOCK_KEY_BYTES)
    return UNLOCK_KEY_PREFIX + base64.b32encode(raw).decode().rstrip("=")


def check_unlock_key(text: str) -> str:
    """`text` (stripped) if it has the shape of an unlock key; UsageError otherwise."""
    text = text.strip()
    body = text[len(UNLOCK_KEY_PREFIX) :]
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
    if not text.startswith(UNLOCK_KEY_PREFIX) or len(body) != 52 or set(body) - set(alphabet):
        raise UsageError(
            f"invalid unlock key: expected {UNLOCK_KEY_PREFIX}<52 characters>, as printed by "
            "`swarmlet unlock-key`"
        )
    return text


def seal_unlock_key(managers: crypto.ManagerKeys, key: str) -> bytes:
    """The unlock key as the replicated state carries it: sealed from workers."""
    return crypto.Sealer(managers.secret_key).seal(key.encode(), AAD_UNLOCK_KEY)


def open_unlock_key(managers: crypto.ManagerKeys, sealed: bytes) -> str:
    """RemoteProtocolError if `sealed` is not an unlock key sealed with `managers`."""
    return crypto.Sealer(managers.secret_key).open(sealed, AAD_UNLOCK_KEY).decode()


# ------------------------------------------------------------------------------ the key file


# The file records the Raft index of the state whose setting it follows ("index", absent from
# files of releases before it: 0), so that a restarted node, which replays its log from a
# commit index that may be older than what it had applied (the hard state is saved with term
# and vote only), does not take an older setting for a new one: a replayed rotation would have
# sealed the key again by the unlock key rotated away, a replayed "autolock on" by nothing.


def _head(salt: bytes, index: int) -> dict[str, object]:
    return {"salt": salt, "n": SCRYPT_N, "r": SCRYPT_R, "p": SCRYPT_P, "index": index}


def encode_clear(dek: bytes, index: int = 0) -> bytes:
    return MAGIC + msgpack.packb({"key": dek, "index": index}, use_bin_type=True)


def encode_sealed(dek: bytes, unlock_key: str, index: int = 0) -> bytes:
    """`dek` sealed (AES-256-GCM) by scrypt(`unlock_key`), the KDF parameters and the index
    authenticated."""
    salt = os.urandom(16)
    head = _head(salt, index)
    nonce = os.urandom(_NONCE)
    kek = scrypt_key(unlock_key, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    aad = MAGIC + msgpack.packb(head, use_bin_type=True)
    sealed = nonce + AESGCM(kek).encrypt(nonce, dek, aad)
    return MAGIC + msgpack.packb({**head, "sealed": sealed}, use_bin_type=True)


def _decode(path: Path, data: bytes) -> dict[str, object]:
    damaged = StorageCorruptError(
        f"{path} is damaged: it holds this node's data key, without which its Raft log cannot "
        "be read; restore the data dir from a backup, or remove it and join this node again"
    )
    if not data.startswith(MAGIC):
        raise damaged
    try:
        body = msgpack.unpackb(data[len(MAGIC) :], raw=False, strict_map_key=True)
    except (ValueError, msgpack.UnpackException):
        raise damaged from None
    if not isinstance(body, dict):
        raise damaged
    index = body.get("index", 0)
    if not isinstance(index, int) or isinstance(index, bool) or index < 0:
        raise damaged
    if "key" in body and isinstance(body["key"], bytes) and len(body["key"]) == crypto.KEY_BYTES:
        return body
    fields_ok = all(isinstance(body.get(k), int) for k in ("n", "r", "p"))
    if fields_ok and isinstance(body.get("salt"), bytes) and isinstance(body.get("sealed"), bytes):
        return body
    raise damaged


def _index_of(path: Path) -> int:
    """The Raft index of the setting the key file at `path` follows (0: none recorded)."""
    try:
        index = _decode(path, path.read_bytes()).get("index", 0)
    except FileNotFoundError:
        return 0
    assert isinstance(index, int)  # checked by _decode
    return index


def is_locked(data_dir: Path) -> bool:
    """Whether this node's data key is sealed (it starts locked)."""
    path = data_key_path(data_dir)
    try:
        return "sealed" in _decode(path, path.read_bytes())
    except FileNotFoundError:
        return False


def read_data_key(data_dir: Path) -> bytes | None:
    """The DEK in clear; None if it is sealed (the node is locked: `unlock`). A node without
    one gets a new one (0600, written as the data dir's keys are: `datadir.write_atomic`)."""
    path = data_key_path(data_dir)
    try:
        body = _decode(path, path.read_bytes())
    except FileNotFoundError:
        dek = crypto.new_key()
        write_atomic(path, encode_clear(dek))
        log.info("new data key for the Raft log in %s", path)
        return dek
    key = body.get("key")
    return key if isinstance(key, bytes) else None


def create_sealed_data_key(data_dir: Path, unlock_key: str) -> None:
    """A new node's data key, sealed by `unlock_key` from the start (`init --autolock`)."""
    write_atomic(data_key_path(data_dir), encode_sealed(crypto.new_key(), unlock_key))


def unlock(data_dir: Path, unlock_key: str) -> bytes:
    """The DEK opened with `unlock_key`; UsageError if it is not the key it is sealed by."""
    unlock_key = check_unlock_key(unlock_key)
    path = data_key_path(data_dir)
    body = _decode(path, path.read_bytes())
    if "key" in body:
        raise UsageError("this node is not locked")
    n, r, p = body["n"], body["r"], body["p"]
    if not (isinstance(n, int) and n <= 2**20 and isinstance(r, int) and r <= 32 and p == 1):
        raise StorageCorruptError(f"{path} is damaged: implausible key derivation parameters")
    salt, sealed = body["salt"], body["sealed"]
    assert isinstance(salt, bytes) and isinstance(sealed, bytes)  # checked by _decode
    head = {"salt": salt, "n": n, "r": r, "p": p}
    if "index" in body:  # an older release's file has none
        head["index"] = body["index"]
    aad = MAGIC + msgpack.packb(head, use_bin_type=True)
    try:
        return AESGCM(scrypt_key(unlock_key, salt, n, r, p)).decrypt(
            sealed[:_NONCE], sealed[_NONCE:], aad
        )
    except InvalidTag:
        raise UsageError(
            "invalid unlock key: it does not open this node's data key (a manager that was down "
            "during `swarmlet unlock-key --rotate` still takes the key it was locked with)"
        ) from None


# ------------------------------------------------------------------------------ a running node


class AtRest:
    """A running node's data key, and its file following the cluster's autolock setting."""

    def __init__(self, data_dir: Path, dek: bytes, *, unlocked_with: str | None) -> None:
        """`unlocked_with`: the unlock key the file is sealed by now (None: it is in clear)."""
        self._path = data_key_path(data_dir)
        self._dek = dek
        self.cipher = crypto.Sealer(dek)  # one per process: its nonces never repeat
        self._sealed_by = unlocked_with
        self._written_at = _index_of(self._path)  # the Raft index of the setting it follows
        self._opened: tuple[bytes, str] | None = None  # (blob, key) last opened
        self._changed = trio.Event()

    @staticmethod
    def cipher_of(dek: bytes) -> crypto.Sealer:
        """A cipher for the storage under `dek`, for a tool that opens it without an agent."""
        return crypto.Sealer(dek)

    def wanted_unlock_key(self, state: ClusterState, managers: crypto.ManagerKeys | None) -> str:
        """The unlock key this node's file must be sealed by ("" for in clear); managers only:
        a node that cannot open the key (a worker) keeps its file in clear."""
        if not state.autolock or managers is None or not state.sealed_unlock_key:
            return ""
        blob = state.sealed_unlock_key
        if self._opened is None or self._opened[0] != blob:
            self._opened = (blob, open_unlock_key(managers, blob))
        return self._opened[1]

    def notify(self) -> None:
        """The state changed (the agent calls this after the commands it applies): `run` looks
        again."""
        self._changed.set()

    async def run(
        self,
        state: Callable[[], ClusterState],
        managers: Callable[[], crypto.ManagerKeys | None],
        applied: Callable[[], int],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Keep the key file in the form the setting asks for; `applied`: the Raft index
        `state` reflects. The scrypt of a new seal (a few tenths of a second) runs in a thread:
        every manager applies the change at once, and a blocked event loop would cost them
        their Raft heartbeats."""
        task_status.started()
        while True:
            await self._changed.wait()
            self._changed = trio.Event()
            index = applied()
            wanted = self._wanted_or_none(state(), managers(), index)
            if wanted is not None:
                await trio.to_thread.run_sync(self._write, wanted, index)

    def sync(self, state: ClusterState, managers: crypto.ManagerKeys | None, index: int) -> None:
        """`run`'s step, blocking: rewrite the key file if the setting of `state` (at Raft
        index `index`) asks for another form."""
        wanted = self._wanted_or_none(state, managers, index)
        if wanted is not None:
            self._write(wanted, index)

    def _wanted_or_none(
        self, state: ClusterState, managers: crypto.ManagerKeys | None, index: int
    ) -> str | None:
        """The form to write now (as `wanted_unlock_key`), None to leave the file as it is: in
        that form already, or following a later state than `state` (one replayed at a start)."""
        if index < self._written_at:
            return None
        try:
            wanted = self.wanted_unlock_key(state, managers)
        except RemoteProtocolError as exc:
            log.error("the unlock key in the state does not open: %s; key file unchanged", exc)
            return None
        return None if wanted == (self._sealed_by or "") else wanted

    def _write(self, wanted: str, index: int) -> None:
        try:
            if wanted:
                write_atomic(self._path, encode_sealed(self._dek, wanted, index))
            else:
                write_atomic(self._path, encode_clear(self._dek, index))
        except OSError as exc:  # the file is as it was (an atomic write); the next change retries
            log.error("cannot rewrite %s: %s", self._path, exc)
            return
        self._sealed_by, self._written_at = wanted or None, index
        if wanted:
            log.info("autolock: this node's data key is sealed by the cluster's unlock key")
        else:
            log.info("autolock is off for this node: its data key is in clear")
