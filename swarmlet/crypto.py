"""Cluster key material, join tokens, and authenticated encryption of every message between agents.

All cryptography is pyca/cryptography's: AES-256-GCM for sealing, HKDF-SHA256 for deriving keys,
SHA-256 for fingerprints. Nothing here is hand-rolled beyond framing the nonce.

Nonces. AES-GCM must never see the same (key, nonce) twice. Each `Sealer` draws a random 64-bit
session prefix and counts the remaining 32 bits, re-drawing the prefix before the counter wraps:
a nonce collision needs two sessions to draw the same 64-bit prefix (birthday bound ~2^32
sessions), unlike purely random 96-bit nonces, whose safe limit (2^32 messages per key) a busy
cluster's gossip would reach within weeks.

Replays are not filtered here: gossip and Raft tolerate duplicated messages by design (the
simulations duplicate messages on purpose); authenticity is what the seal guarantees.

Join tokens (`SWLT-1-<cluster fingerprint>-<secret>`): the secret never travels. A joining agent
derives a join key from it and seals its request with that key; only an agent that knows the token
can open it, and the reply (which carries the cluster key) is sealed with the same join key, so
only the joiner can read it. The joiner checks the key it receives against the token's fingerprint.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from swarmlet.errors import RemoteProtocolError, UsageError

KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
SEAL_OVERHEAD = NONCE_BYTES + TAG_BYTES
TOKEN_PREFIX = "SWLT-1-"
_FINGERPRINT_CHARS = 16
KEY_ID_BYTES = 8

# Purposes bound into every seal as associated data, so a message sealed for one channel cannot be
# replayed into another (a gossip datagram is not a valid TCP frame and vice versa).
AAD_GOSSIP = b"swarmlet/gossip/1"
AAD_TCP = b"swarmlet/tcp/1"
AAD_JOIN = b"swarmlet/join/1"
AAD_SECRET = b"swarmlet/secret/1"


def _hkdf(material: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=info).derive(material)


def new_key() -> bytes:
    return secrets.token_bytes(KEY_BYTES)


def new_id(nbytes: int = 12) -> str:
    """A random identifier in lowercase base32 (no padding): node, service, task and cluster ids."""
    return base64.b32encode(secrets.token_bytes(nbytes)).decode().rstrip("=").lower()


def fingerprint(key: bytes) -> str:
    return hashlib.sha256(b"swarmlet-fingerprint" + key).hexdigest()[:_FINGERPRINT_CHARS]


@dataclass(frozen=True, slots=True)
class ClusterKeys:
    """The cluster's master key and the keys derived from it for each use."""

    master: bytes

    @property
    def message_key(self) -> bytes:
        return _hkdf(self.master, b"swarmlet message key")

    @property
    def data_key(self) -> bytes:
        """Seals secrets at rest (in the Raft log, snapshots and the data dir)."""
        return _hkdf(self.master, b"swarmlet data key")

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.master)


class Sealer:
    """Seals messages with one key (see the module docstring for the nonce scheme)."""

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)
        self._prefix = os.urandom(8)
        self._counter = 0

    def _next_nonce(self) -> bytes:
        if self._counter >= 0xFFFFFFFF:
            self._prefix = os.urandom(8)
            self._counter = 0
        self._counter += 1
        return self._prefix + struct.pack(">I", self._counter)

    def seal(self, plaintext: bytes, aad: bytes) -> bytes:
        nonce = self._next_nonce()
        return nonce + self._aead.encrypt(nonce, plaintext, aad)

    def open(self, sealed: bytes, aad: bytes) -> bytes:
        """Return the plaintext, or raise RemoteProtocolError for anything forged or damaged."""
        if len(sealed) < SEAL_OVERHEAD:
            raise RemoteProtocolError(f"sealed message too short ({len(sealed)} bytes)")
        try:
            return self._aead.decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], aad)
        except InvalidTag:
            raise RemoteProtocolError("message failed authentication") from None


# ------------------------------------------------------------------------------------ join tokens


@dataclass(frozen=True, slots=True)
class JoinToken:
    cluster_fingerprint: str
    secret: str

    def __str__(self) -> str:
        return f"{TOKEN_PREFIX}{self.cluster_fingerprint}-{self.secret}"

    @property
    def join_key(self) -> bytes:
        return _hkdf(self.secret.encode(), b"swarmlet join key")

    @property
    def key_id(self) -> bytes:
        """Names the join key on the wire without revealing it."""
        return hashlib.sha256(b"swarmlet-join-key-id" + self.join_key).digest()[:KEY_ID_BYTES]

    @classmethod
    def new(cls, keys: ClusterKeys) -> JoinToken:
        secret = base64.b32encode(secrets.token_bytes(20)).decode().rstrip("=").lower()
        return cls(keys.fingerprint, secret)

    @classmethod
    def parse(cls, text: str) -> JoinToken:
        text = text.strip()
        if not text.startswith(TOKEN_PREFIX):
            raise UsageError(f"invalid join token: it must start with {TOKEN_PREFIX!r}")
        parts = text[len(TOKEN_PREFIX) :].split("-")
        if (
            len(parts) != 2
            or len(parts[0]) != _FINGERPRINT_CHARS
            or len(parts[1]) < 16
            or not all(c in "0123456789abcdef" for c in parts[0])
            or not all(c in "abcdefghijklmnopqrstuvwxyz234567" for c in parts[1])
        ):
            raise UsageError("invalid join token: expected SWLT-1-<fingerprint>-<secret>")
        return cls(parts[0], parts[1])
