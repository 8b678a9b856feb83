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

Two keys, two circles. The cluster key (`ClusterKeys`) is held by every node, workers included: it
seals the gossip datagrams (the TCP channel is TLS with node certificates), and is replaced, in a
new epoch, when a node is removed (`wire.datagram_keys`, `security.keyring`). The managers'
key (`ManagerKeys`) is held by managers only: it seals what workers must not read although they
replicate it (Raft learners): secrets' values and both join tokens (a worker that could read the
manager token could make itself a manager).

Sealed to a node (`seal_to`): each node has an X25519 key pair; anything meant for one node alone
(the managers' key for a new manager, a task's secrets for its node, a join challenge) is sealed
to its public key with a fresh ephemeral X25519 key, HKDF-SHA256 and AES-256-GCM (the
construction of libsodium's sealed boxes and of HPKE's base mode), so no other member can open
it, even with the cluster key.

What managers vouch for. Anyone can seal to a node, so what must come from a manager is also
authenticated with keys derived from the managers' key: an Ed25519 signature (deliveries of
secrets; its public half, `ManagerKeys.public_key`, is in the replicated state and also names the
managers' key there, so a node refuses a key that is not the cluster's) and an HMAC-SHA256
(writes forwarded to the leader, `swarmlet.security.propose_auth`).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import os
import secrets
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
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
AAD_SECRET = b"swarmlet/secret/1/"  # + the secret's id: a value cannot be moved to another secret
AAD_TOKEN = b"swarmlet/token/1/"  # + the role: a worker token cannot pass for the manager token
AAD_MANAGER_KEY = b"swarmlet/manager-key/1/"  # + the node id the blob is recorded for
AAD_DELIVERY = b"swarmlet/secret-delivery/1/"  # + node, task and request nonce (`delivery_aad`)
AAD_JOIN_PROOF = b"swarmlet/join-proof/1/"  # + the joining node's id
AAD_CLUSTER_KEY = b"swarmlet/cluster-key/1/"  # + the node id and the epoch (`cluster_key_aad`)
AAD_WORKER_VIEW = b"swarmlet/worker-view/1/"  # + the node id: a view kept for that node alone

PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64
# `seal_to` uses each derived key exactly once, so a constant nonce is safe (as in HPKE's
# single-shot mode); the ephemeral public key travels in front of the ciphertext.
_SEALED_TO_NONCE = bytes(NONCE_BYTES)
SEALED_TO_OVERHEAD = PUBLIC_KEY_BYTES + TAG_BYTES


@functools.lru_cache(maxsize=32)
def _hkdf(material: bytes, info: bytes) -> bytes:
    # Cached: only long-lived keys are derived here (never ephemeral secrets), and a forwarded
    # write would otherwise derive the propose key twice (`ManagerKeys.mac`, `check_mac`).
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
    def fingerprint(self) -> str:
        return fingerprint(self.master)

    def seal_to_node(self, node_id: str, public_key: bytes, epoch: int) -> bytes:
        """This key, as epoch `epoch` of the cluster key, sealed to a member's public key for
        its Node record (`security.keyring`). RemoteProtocolError for an unusable key."""
        return seal_to(public_key, self.master, cluster_key_aad(node_id, epoch))

    @classmethod
    def open_from_node(
        cls, node_key: bytes, node_id: str, epoch: int, sealed: bytes
    ) -> ClusterKeys:
        """The inverse of `seal_to_node`, with the node's private key."""
        master = open_sealed(node_key, sealed, cluster_key_aad(node_id, epoch))
        if len(master) != KEY_BYTES:
            raise RemoteProtocolError(f"the cluster key must be {KEY_BYTES} bytes")
        return cls(master)


@dataclass(frozen=True, slots=True)
class ManagerKeys:
    """The managers' key (managers only) and the keys derived from it.

    A secret's id is bound into its seal, and a token's role into the token's, so neither can be
    swapped for another. Opening raises RemoteProtocolError for a wrong key or damaged data, as
    `Sealer.open` does; so do the checks of a signature or a MAC.
    """

    master: bytes

    @property
    def secret_key(self) -> bytes:
        """Seals secrets' values at rest (in the Raft log, snapshots and the data dir)."""
        return _hkdf(self.master, b"swarmlet secret key")

    @property
    def token_key(self) -> bytes:
        return _hkdf(self.master, b"swarmlet token key")

    @property
    def propose_key(self) -> bytes:
        """Authenticates writes forwarded to the leader (`swarmlet.security.propose_auth`)."""
        return _hkdf(self.master, b"swarmlet propose key")

    def _signing_key(self) -> Ed25519PrivateKey:
        return Ed25519PrivateKey.from_private_bytes(_hkdf(self.master, b"swarmlet signing key"))

    @property
    def public_key(self) -> bytes:
        """The Ed25519 public key of the managers' signatures. Recorded in the replicated state
        at init, it also names this key: a node takes no other (`swarmlet.security.keyring`)."""
        return self._signing_key().public_key().public_bytes_raw()

    def sign(self, data: bytes) -> bytes:
        return self._signing_key().sign(data)

    @property
    def ca_key(self) -> Ed25519PrivateKey:
        """The cluster CA's key (`swarmlet.certs`): node certificates are signed with it. Its own
        derivation, so nothing signed as a certificate can pass for a delivery, or the reverse."""
        return Ed25519PrivateKey.from_private_bytes(_hkdf(self.master, b"swarmlet CA key"))

    def seal_secret(self, secret_id: str, data: bytes) -> bytes:
        return Sealer(self.secret_key).seal(data, AAD_SECRET + secret_id.encode())

    def open_secret(self, secret_id: str, sealed: bytes) -> bytes:
        return Sealer(self.secret_key).open(sealed, AAD_SECRET + secret_id.encode())

    def seal_token(self, role: str, token: str) -> bytes:
        return Sealer(self.token_key).seal(token.encode(), AAD_TOKEN + role.encode())

    def open_token(self, role: str, sealed: bytes) -> str:
        return Sealer(self.token_key).open(sealed, AAD_TOKEN + role.encode()).decode()

    def mac(self, data: bytes) -> bytes:
        """HMAC-SHA256 of `data` under `propose_key`."""
        h = hmac.HMAC(self.propose_key, hashes.SHA256())
        h.update(data)
        return h.finalize()

    def check_mac(self, data: bytes, mac: bytes) -> None:
        """RemoteProtocolError unless `mac` is `data`'s (compared in constant time)."""
        h = hmac.HMAC(self.propose_key, hashes.SHA256())
        h.update(data)
        try:
            h.verify(mac)
        except InvalidSignature:
            raise RemoteProtocolError("not authenticated with the managers' key") from None

    def seal_to_node(self, node_id: str, public_key: bytes) -> bytes:
        """This key sealed to a manager's public key, for its Node record."""
        return seal_to(public_key, self.master, AAD_MANAGER_KEY + node_id.encode())

    @classmethod
    def open_from_node(cls, node_key: bytes, node_id: str, sealed: bytes) -> ManagerKeys:
        """The inverse of `seal_to_node`, with the node's private key."""
        master = open_sealed(node_key, sealed, AAD_MANAGER_KEY + node_id.encode())
        if len(master) != KEY_BYTES:
            raise RemoteProtocolError(f"the managers' key must be {KEY_BYTES} bytes")
        return cls(master)


@functools.lru_cache(maxsize=4096)
def _ed25519_public(raw: bytes) -> Ed25519PublicKey:
    # Cached: the same few members' keys check every datagram and every Alive.
    return Ed25519PublicKey.from_public_bytes(raw)


def check_signature(public_key: bytes, signature: bytes, data: bytes) -> None:
    """RemoteProtocolError unless `signature` is `public_key`'s over `data` (the managers'
    signatures, `ManagerKeys.sign`; a node's, with its identity key)."""
    try:
        _ed25519_public(public_key).verify(signature, data)
    except (ValueError, InvalidSignature):
        raise RemoteProtocolError("not signed with that key") from None


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


# ------------------------------------------------------------------------------ sealed to a node


def new_node_key() -> bytes:
    """A new X25519 private key (32 raw bytes)."""
    return X25519PrivateKey.generate().private_bytes_raw()


def public_key_of(private_key: bytes) -> bytes:
    return X25519PrivateKey.from_private_bytes(private_key).public_key().public_bytes_raw()


def node_signing_key(node_key: bytes) -> Ed25519PrivateKey:
    """The node's Ed25519 identity key, derived from its X25519 node key (one secret in the data
    dir, two uses kept apart by the derivation): its TLS certificate is for this key, and it signs
    what the node says about itself in gossip (`gossip.messages.alive_signed_bytes`)."""
    return Ed25519PrivateKey.from_private_bytes(_hkdf(node_key, b"swarmlet node signing key"))


def check_public_key(public_key: bytes) -> bytes:
    """`public_key` if it has the shape of an X25519 public key; RemoteProtocolError if not
    (public keys come from other nodes, in join requests and through the replicated state)."""
    if len(public_key) != PUBLIC_KEY_BYTES:
        raise RemoteProtocolError(f"a public key must be {PUBLIC_KEY_BYTES} bytes")
    return public_key


def _sealed_to_key(shared: bytes, ephemeral_public: bytes, recipient_public: bytes) -> AESGCM:
    # Both public keys salt the derivation, binding the key to this sender and recipient.
    salt = ephemeral_public + recipient_public
    key = HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=salt, info=b"swarmlet sealed to")
    return AESGCM(key.derive(shared))


def seal_to(public_key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """Seal `plaintext` so that only the holder of `public_key`'s private key can open it.
    RemoteProtocolError if `public_key` is not usable (`check_public_key`)."""
    ephemeral = X25519PrivateKey.generate()
    ephemeral_public = ephemeral.public_key().public_bytes_raw()
    try:
        shared = ephemeral.exchange(X25519PublicKey.from_public_bytes(check_public_key(public_key)))
    except ValueError:  # a low-order point: the shared secret would be all zeros
        raise RemoteProtocolError("unusable public key (a low-order point)") from None
    aead = _sealed_to_key(shared, ephemeral_public, public_key)
    return ephemeral_public + aead.encrypt(_SEALED_TO_NONCE, plaintext, aad)


def open_sealed(private_key: bytes, sealed: bytes, aad: bytes) -> bytes:
    """Open what `seal_to` sealed to our public key; RemoteProtocolError if that fails."""
    if len(sealed) < SEALED_TO_OVERHEAD:
        raise RemoteProtocolError(f"sealed data too short ({len(sealed)} bytes)")
    me = X25519PrivateKey.from_private_bytes(private_key)
    ephemeral_public = sealed[:PUBLIC_KEY_BYTES]
    try:
        shared = me.exchange(X25519PublicKey.from_public_bytes(ephemeral_public))
        aead = _sealed_to_key(shared, ephemeral_public, me.public_key().public_bytes_raw())
        return aead.decrypt(_SEALED_TO_NONCE, sealed[PUBLIC_KEY_BYTES:], aad)
    except (ValueError, InvalidTag):
        raise RemoteProtocolError("sealed data failed authentication") from None


def delivery_aad(node_id: str, task_id: str, nonce: bytes) -> bytes:
    """Binds a delivery of secrets to the node and the task it was granted for, and to the
    request it answers (`nonce`, the asker's): an old delivery cannot be replayed."""
    return AAD_DELIVERY + node_id.encode() + b"/" + task_id.encode() + b"/" + nonce


def cluster_key_aad(node_id: str, epoch: int) -> bytes:
    """Binds a cluster key sealed to a node to that node and to its epoch: a blob cannot be
    copied to another record, nor an old key passed off as a newer epoch's."""
    return AAD_CLUSTER_KEY + node_id.encode() + b"/" + str(epoch).encode()


def join_proof_aad(node_id: str) -> bytes:
    """Binds a join challenge (`swarmlet.security.join`) to the node id it is issued for."""
    return AAD_JOIN_PROOF + node_id.encode()


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
