"""swarmlet.certs: node certificates issued by the cluster CA, what verifying one proves, and the
TLS 1.3 contexts built from them (a real handshake over a socket pair)."""

from __future__ import annotations

import datetime
import ssl
import time
from pathlib import Path

import pytest
import trio
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import NameOID

from swarmlet import certs, crypto
from swarmlet.errors import RemoteProtocolError

NOW = 1_700_000_000.0  # certificates carry whole seconds: a whole "now" compares exactly
LIFETIME_S = 3600.0
TIMEOUT_S = 10
MANAGERS = crypto.ManagerKeys(crypto.new_key())
CA_PEM = certs.ca_certificate(MANAGERS.ca_key)


def issue(
    node_id: str = "node-a",
    *,
    role: str = "worker",
    generation: int = 3,
    key: Ed25519PrivateKey | None = None,
    ca_key: Ed25519PrivateKey = MANAGERS.ca_key,
    now: float = NOW,
) -> bytes:
    key = key or Ed25519PrivateKey.generate()
    return certs.issue(
        ca_key,
        cluster_id="c1",
        node_id=node_id,
        role=role,
        generation=generation,
        public_key=certs.raw_public_key(key),
        now=now,
        lifetime_s=LIFETIME_S,
    )


def signed_with_subject(
    attributes: list[x509.NameAttribute[str]], public_key: CertificatePublicKeyTypes | None = None
) -> x509.Certificate:
    """A certificate the cluster CA signed, with any subject: what `issue` never makes."""
    subject_key = public_key or Ed25519PrivateKey.generate().public_key()
    start = datetime.datetime.fromtimestamp(NOW - 10, tz=datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name(attributes))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "swarmlet cluster CA")]))
        .public_key(subject_key)
        .serial_number(1)
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(hours=1))
        .sign(MANAGERS.ca_key, None)
    )


def subject(
    *, cn: str = "node-a", o: str = "c1", ou: str = "worker", serial: str = "3"
) -> list[x509.NameAttribute[str]]:
    return [
        x509.NameAttribute(NameOID.COMMON_NAME, cn),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, o),
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, ou),
        x509.NameAttribute(NameOID.SERIAL_NUMBER, serial),
    ]


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


# ------------------------------------------------------------------------------ issue, verify


def test_a_certificate_verifies_against_its_ca_and_says_what_was_issued() -> None:
    key = Ed25519PrivateKey.generate()
    cert = issue("node-a", role="manager", generation=7, key=key)
    identity = certs.verify(cert, CA_PEM, now=NOW)
    assert identity == certs.PeerIdentity(
        node_id="node-a",
        role="manager",
        generation=7,
        not_after=NOW + LIFETIME_S,
        cluster_id="c1",
        public_key=certs.raw_public_key(key),
    )
    assert identity.is_manager
    assert len(cert) < certs.MAX_CERT_BYTES


def test_the_ca_certificate_is_the_same_bytes_from_the_same_key_on_every_manager() -> None:
    again = crypto.ManagerKeys(MANAGERS.master)  # another manager holding the managers' key
    assert certs.ca_certificate(again.ca_key) == CA_PEM
    assert certs.ca_certificate(MANAGERS.ca_key) == CA_PEM
    other = crypto.ManagerKeys(crypto.new_key())
    assert certs.ca_certificate(other.ca_key) != CA_PEM


def test_a_certificate_of_another_clusters_ca_is_refused() -> None:
    other = crypto.ManagerKeys(crypto.new_key())
    cert = issue(ca_key=other.ca_key)
    with pytest.raises(RemoteProtocolError, match="signature is invalid"):
        certs.verify(cert, CA_PEM, now=NOW)


def test_a_certificate_is_valid_from_clock_skew_before_issue_until_its_end_only() -> None:
    cert = issue()
    certs.verify(cert, CA_PEM, now=NOW - certs.CLOCK_SKEW_S)
    certs.verify(cert, CA_PEM, now=NOW + LIFETIME_S)
    with pytest.raises(RemoteProtocolError, match="not valid now"):
        certs.verify(cert, CA_PEM, now=NOW + LIFETIME_S + 1)
    with pytest.raises(RemoteProtocolError, match="not valid now"):
        certs.verify(cert, CA_PEM, now=NOW - certs.CLOCK_SKEW_S - 1)


def test_a_tampered_certificate_is_refused() -> None:
    cert = x509.load_pem_x509_certificate(issue("node-a"))
    der = cert.public_bytes(serialization.Encoding.DER)
    assert der.count(b"node-a") == 1
    renamed = der.replace(b"node-a", b"node-b")  # same length: still a well-formed certificate
    assert x509.load_der_x509_certificate(renamed).subject != cert.subject
    with pytest.raises(RemoteProtocolError, match="signature is invalid"):
        certs.verify(pem(x509.load_der_x509_certificate(renamed)), CA_PEM, now=NOW)


def test_an_oversized_blob_is_refused_before_it_is_parsed() -> None:
    blob = issue() + b"\n" * certs.MAX_CERT_BYTES
    with pytest.raises(RemoteProtocolError, match="is not a node's"):
        certs.verify(blob, CA_PEM, now=NOW)


@pytest.mark.parametrize("blob", [b"", b"not a certificate", b"-----BEGIN CERTIFICATE-----\n"])
def test_garbage_is_refused_as_not_the_cas(blob: bytes) -> None:
    with pytest.raises(RemoteProtocolError, match="not the cluster CA's"):
        certs.verify(blob, CA_PEM, now=NOW)


def test_issue_refuses_an_unknown_role_and_a_key_that_is_not_ed25519() -> None:
    with pytest.raises(ValueError, match="unknown role"):
        issue(role="admin")
    with pytest.raises(RemoteProtocolError, match="not an Ed25519 public key"):
        certs.issue(
            MANAGERS.ca_key,
            cluster_id="c1",
            node_id="n",
            role="worker",
            generation=0,
            public_key=b"short",
            now=NOW,
        )


# ------------------------------------------------------------------------------ identity_of


@pytest.mark.parametrize(
    ("attributes", "refusal"),
    [
        (subject(ou="admin"), "role 'admin'"),
        (subject(serial="x1"), "generation 'x1'"),
        (subject(serial="-1"), "generation '-1'"),
        (subject(serial="1" * 19), "generation"),  # beyond any count of role changes
        (subject()[1:], "exactly one commonName"),
        ([*subject(), x509.NameAttribute(NameOID.COMMON_NAME, "node-b")], "exactly one common"),
        ([a for a in subject() if a.oid != NameOID.ORGANIZATIONAL_UNIT_NAME], "exactly one"),
    ],
)
def test_identity_of_refuses_a_subject_issue_never_makes(
    attributes: list[x509.NameAttribute[str]], refusal: str
) -> None:
    cert = signed_with_subject(attributes)
    with pytest.raises(RemoteProtocolError, match=refusal):
        certs.identity_of(cert)
    with pytest.raises(RemoteProtocolError, match=refusal):  # verify says the same
        certs.verify(pem(cert), CA_PEM, now=NOW)


def test_identity_of_refuses_a_key_that_is_not_ed25519() -> None:
    cert = signed_with_subject(subject(), ec.generate_private_key(ec.SECP256R1()).public_key())
    with pytest.raises(RemoteProtocolError, match="not Ed25519"):
        certs.identity_of(cert)


def test_identity_of_der_reads_a_certificate_and_refuses_garbage() -> None:
    cert = x509.load_pem_x509_certificate(issue("node-a", generation=5))
    identity = certs.identity_of_der(cert.public_bytes(serialization.Encoding.DER))
    assert (identity.node_id, identity.generation) == ("node-a", 5)
    with pytest.raises(RemoteProtocolError, match="unreadable certificate"):
        certs.identity_of_der(b"\x30\x03garbage")


# ------------------------------------------------------------------------------ TLS


def tls_context(
    root: Path,
    node_id: str,
    *,
    server: bool,
    ca_key: Ed25519PrivateKey = MANAGERS.ca_key,
) -> ssl.SSLContext:
    """A context for a new certificate of `node_id` issued by `ca_key`, trusting CA_PEM."""
    key = Ed25519PrivateKey.generate()
    cert = certs.issue(
        ca_key,
        cluster_id="c1",
        node_id=node_id,
        role="worker",
        generation=0,
        public_key=certs.raw_public_key(key),
        now=time.time(),  # OpenSSL checks validity against the real clock
        lifetime_s=LIFETIME_S,
    )
    cert_file, key_file = root / f"{node_id}.crt", root / f"{node_id}.key"
    cert_file.write_bytes(cert)
    key_file.write_bytes(certs.private_key_pem(key))
    return certs.tls_context(server=server, ca_pem=CA_PEM, cert_file=cert_file, key_file=key_file)


Outcome = certs.PeerIdentity | trio.BrokenResourceError


async def handshake(server: ssl.SSLContext, client: ssl.SSLContext) -> dict[str, Outcome]:
    """Both sides of a handshake over a connected socket pair: what each sees of the other
    (the identity in its peer's certificate), or how its handshake failed."""
    near, far = trio.socket.socketpair()
    sides = {
        "server": trio.SSLStream(trio.SocketStream(near), server, server_side=True),
        "client": trio.SSLStream(trio.SocketStream(far), client, server_hostname=None),
    }
    seen: dict[str, Outcome] = {}

    async def run(name: str) -> None:
        stream = sides[name]
        try:
            await stream.do_handshake()
            der = stream.getpeercert(binary_form=True)
            assert der is not None
            seen[name] = certs.identity_of_der(der)
        except trio.BrokenResourceError as exc:
            seen[name] = exc
            await trio.aclose_forcefully(stream)  # the other side sees the end, if it waits

    try:
        with trio.fail_after(TIMEOUT_S):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(run, "server")
                nursery.start_soon(run, "client")
    finally:
        for stream in sides.values():
            await trio.aclose_forcefully(stream)
    return seen


async def test_a_tls_handshake_authenticates_both_sides_to_their_node_ids(tmp_path: Path) -> None:
    seen = await handshake(
        tls_context(tmp_path, "node-s", server=True), tls_context(tmp_path, "node-c", server=False)
    )
    server_saw, client_saw = seen["server"], seen["client"]
    assert isinstance(server_saw, certs.PeerIdentity) and server_saw.node_id == "node-c"
    assert isinstance(client_saw, certs.PeerIdentity) and client_saw.node_id == "node-s"


async def test_a_server_refuses_a_client_certificate_of_another_ca(tmp_path: Path) -> None:
    other = crypto.ManagerKeys(crypto.new_key()).ca_key
    seen = await handshake(
        tls_context(tmp_path, "node-s", server=True),
        tls_context(tmp_path, "node-c", server=False, ca_key=other),
    )
    assert isinstance(seen["server"], trio.BrokenResourceError)


async def test_a_client_refuses_a_server_certificate_of_another_ca(tmp_path: Path) -> None:
    other = crypto.ManagerKeys(crypto.new_key()).ca_key
    seen = await handshake(
        tls_context(tmp_path, "node-s", server=True, ca_key=other),
        tls_context(tmp_path, "node-c", server=False),
    )
    assert isinstance(seen["client"], trio.BrokenResourceError)


async def test_a_server_refuses_a_client_without_a_certificate(tmp_path: Path) -> None:
    anonymous = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    anonymous.check_hostname = False
    anonymous.load_verify_locations(cadata=CA_PEM.decode("ascii"))
    seen = await handshake(tls_context(tmp_path, "node-s", server=True), anonymous)
    assert isinstance(seen["server"], trio.BrokenResourceError)


async def test_a_server_refuses_tls_1_2(tmp_path: Path) -> None:
    """Even from a client holding a certificate of the cluster's CA."""
    old = tls_context(tmp_path, "node-c", server=False)
    old.minimum_version = ssl.TLSVersion.TLSv1_2
    old.maximum_version = ssl.TLSVersion.TLSv1_2
    seen = await handshake(tls_context(tmp_path, "node-s", server=True), old)
    assert isinstance(seen["server"], trio.BrokenResourceError)
