"""Node certificates: who is at the other end of a stream, as the cluster's managers vouch.

Every node has an Ed25519 identity key (derived from its node key, `crypto.node_signing_key`)
and a certificate for it, issued by the cluster's CA: the managers, who alone hold the CA key
(`crypto.ManagerKeys.ca_key`, derived from the managers' key). Every TCP stream between agents is
TLS 1.3 with both sides' certificates checked against the CA (`tls_context`), so a stream's peer
is known by what the CA signed, never by a field the peer fills in.

What a certificate binds (its subject): the node id (CN), the cluster id (O), the role (OU) and a
generation (serialNumber). The generation is the node's `cert_generation` in the replicated state
when the certificate was issued; a role change raises it, so a demoted manager's old certificate
(role "manager") is refused by every member that has applied the demotion, long before it
expires (`security.peer_policy`). A removed node is refused by its id.

The CA certificate is made deterministically from the CA key (fixed subject, validity and serial;
Ed25519 signatures are deterministic), so every manager produces the same bytes without storing
it anywhere; nodes receive it at join and keep it in their data dir as their trust anchor.

Why Ed25519: small keys and certificates (a certificate is ~400 bytes), fast signing, supported
by OpenSSL's TLS 1.3 (RFC 8446 signature scheme ed25519), and the same primitive the managers
already sign with. The TLS itself is OpenSSL's through the standard `ssl` module; nothing here
implements a handshake.
"""

from __future__ import annotations

import datetime
import hashlib
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from swarmlet.errors import RemoteProtocolError

ROLES = ("manager", "worker")
DEFAULT_LIFETIME_S = 7 * 24 * 3600.0  # Swarm's default is 90 days; renewal runs at half-life
CLOCK_SKEW_S = 300.0  # a certificate is valid from 5 minutes before it was issued
MAX_CERT_BYTES = 4096  # a node certificate is ~400 bytes; anything larger is not ours

_UTC = datetime.UTC
_CA_SUBJECT = "swarmlet cluster CA"


@dataclass(frozen=True, slots=True)
class PeerIdentity:
    """What a verified node certificate says about its holder."""

    node_id: str
    role: str  # "manager" | "worker"
    generation: int
    not_after: float  # seconds since the epoch
    cluster_id: str
    public_key: bytes  # raw Ed25519

    @property
    def is_manager(self) -> bool:
        return self.role == "manager"


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def ca_certificate(ca_key: Ed25519PrivateKey) -> bytes:
    """The cluster's CA certificate (PEM): the same bytes from the same key, on every manager."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, _CA_SUBJECT)])
    public = ca_key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    serial = int.from_bytes(hashlib.sha256(b"swarmlet-ca" + public).digest()[:8], "big") >> 1
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(ca_key.public_key())
        .serial_number(serial or 1)
        .not_valid_before(datetime.datetime(2000, 1, 1, tzinfo=_UTC))
        .not_valid_after(datetime.datetime(9999, 12, 31, tzinfo=_UTC))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, None)
    )
    return _pem(cert)


def issue(
    ca_key: Ed25519PrivateKey,
    *,
    cluster_id: str,
    node_id: str,
    role: str,
    generation: int,
    public_key: bytes,
    now: float,
    lifetime_s: float = DEFAULT_LIFETIME_S,
) -> bytes:
    """A node certificate (PEM) for `public_key` (raw Ed25519), signed by the CA key."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}")
    try:
        subject_key = Ed25519PublicKey.from_public_bytes(public_key)
    except ValueError as exc:
        raise RemoteProtocolError(f"not an Ed25519 public key: {exc}") from None
    start = datetime.datetime.fromtimestamp(now - CLOCK_SKEW_S, tz=_UTC)
    end = datetime.datetime.fromtimestamp(now + lifetime_s, tz=_UTC)
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, node_id),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, cluster_id),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role),
            x509.NameAttribute(NameOID.SERIAL_NUMBER, str(generation)),
        ]
    )
    issuer = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, _CA_SUBJECT)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(subject_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .sign(ca_key, None)
    )
    return _pem(cert)


def _one(name: x509.Name, oid: x509.ObjectIdentifier) -> str:
    values = name.get_attributes_for_oid(oid)
    if len(values) != 1 or not isinstance(values[0].value, str):
        raise RemoteProtocolError(f"the certificate's subject needs exactly one {oid._name}")
    return values[0].value


def identity_of(cert: x509.Certificate) -> PeerIdentity:
    """What a node certificate says. It must already be verified against the CA (`tls_context`
    does that in the handshake; `verify` does it for a certificate received otherwise)."""
    subject = cert.subject
    role = _one(subject, NameOID.ORGANIZATIONAL_UNIT_NAME)
    generation = _one(subject, NameOID.SERIAL_NUMBER)
    if role not in ROLES or not generation.isdigit() or len(generation) > 18:
        raise RemoteProtocolError(f"the certificate names role {role!r}, generation {generation!r}")
    public = cert.public_key()
    if not isinstance(public, Ed25519PublicKey):
        raise RemoteProtocolError("the certificate's key is not Ed25519")
    return PeerIdentity(
        node_id=_one(subject, NameOID.COMMON_NAME),
        role=role,
        generation=int(generation),
        not_after=cert.not_valid_after_utc.timestamp(),
        cluster_id=_one(subject, NameOID.ORGANIZATION_NAME),
        public_key=public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw),
    )


def identity_of_der(der: bytes) -> PeerIdentity:
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError as exc:
        raise RemoteProtocolError(f"unreadable certificate: {exc}") from None
    return identity_of(cert)


def identity_of_pem(cert_pem: bytes) -> PeerIdentity:
    """What this node's own certificate says, unverified (it may have expired while the node
    was down). RemoteProtocolError if it does not parse."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError as exc:
        raise RemoteProtocolError(f"unreadable certificate: {exc}") from None
    return identity_of(cert)


def verify(cert_pem: bytes, ca_pem: bytes, *, now: float) -> PeerIdentity:
    """Check that `cert_pem` is a node certificate the CA signed and valid at `now`.
    RemoteProtocolError if not."""
    if len(cert_pem) > MAX_CERT_BYTES:
        raise RemoteProtocolError(f"a certificate of {len(cert_pem)} bytes is not a node's")
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
        ca = x509.load_pem_x509_certificate(ca_pem)
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError) as exc:
        raise RemoteProtocolError(f"the certificate is not the cluster CA's: {exc}") from None
    except Exception as exc:  # InvalidSignature carries no message
        raise RemoteProtocolError(f"the certificate's signature is invalid ({exc!r})") from None
    if not cert.not_valid_before_utc.timestamp() <= now <= cert.not_valid_after_utc.timestamp():
        raise RemoteProtocolError("the certificate is not valid now")
    return identity_of(cert)


def private_key_pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def raw_public_key(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def tls_context(*, server: bool, ca_pem: bytes, cert_file: Path, key_file: Path) -> ssl.SSLContext:
    """TLS 1.3 only, both sides present a certificate, and only the cluster CA is trusted.

    No host name check: peers are named by node id, which the caller checks against the
    certificate (`identity_of_der`) once the handshake is done."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cadata=ca_pem.decode("ascii"))
    ctx.load_cert_chain(str(cert_file), str(key_file))
    return ctx
