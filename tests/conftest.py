"""Fixtures shared by more than one test package."""

from __future__ import annotations

import ssl
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from swarmlet import certs, crypto
from swarmlet.executor import secretfiles
from swarmlet.testing.images import ensure_test_images
from swarmlet.wire.transport import Admit, TlsConfig


@pytest.fixture
def secrets_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Secret files go under the test's tmp dir instead of the host's tmpfs."""
    root = tmp_path / "tmpfs" / "swarmlet"
    root.parent.mkdir()
    monkeypatch.setattr(secretfiles, "tmpfs_root", lambda: root)
    return root


@pytest.fixture(scope="session")
def docker_images() -> None:
    """The test images (`swarmlet/busybox`, `swarmlet/web` v1 and v2) exist in the local Docker
    Engine: built once per session if missing or stale."""
    ensure_test_images()


class TestCA:
    """A cluster CA for tests that open transports without agents: real certificates, real TLS.

    `tls(node_id)` issues a certificate (the CA key is a managers' key's, as in a cluster) into
    its own directory and returns the `TlsConfig` of that node; `admit` defaults to admitting
    every certificate of this CA's cluster as it is."""

    __test__ = False  # not a test class, whatever its name

    def __init__(self, root: Path, cluster_id: str = "testcluster") -> None:
        self.root = root
        self.cluster_id = cluster_id
        self.managers = crypto.ManagerKeys(crypto.new_key())
        self.ca_pem = certs.ca_certificate(self.managers.ca_key)

    def issue(
        self,
        node_id: str,
        *,
        role: str = "manager",
        generation: int = 0,
        lifetime_s: float = 3600.0,
        key: Ed25519PrivateKey | None = None,
        now: float | None = None,
    ) -> tuple[Path, Path]:
        """(certificate file, key file) for `node_id`."""
        key = key or Ed25519PrivateKey.generate()
        cert = certs.issue(
            self.managers.ca_key,
            cluster_id=self.cluster_id,
            node_id=node_id,
            role=role,
            generation=generation,
            public_key=certs.raw_public_key(key),
            now=time.time() if now is None else now,
            lifetime_s=lifetime_s,
        )
        where = self.root / f"{node_id}-{role}-{generation}-{crypto.new_id(4)}"
        where.mkdir(parents=True)
        (where / "node.crt").write_bytes(cert)
        (where / "node.key").write_bytes(certs.private_key_pem(key))
        return where / "node.crt", where / "node.key"

    def tls(self, node_id: str, *, admit: Admit | None = None, **issue: Any) -> TlsConfig:
        cert_file, key_file = self.issue(node_id, **issue)

        def context(server: bool) -> ssl.SSLContext:
            return certs.tls_context(
                server=server, ca_pem=self.ca_pem, cert_file=cert_file, key_file=key_file
            )

        return TlsConfig(context(True), context(False), admit or (lambda peer: peer))


@pytest.fixture(scope="session")
def test_ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    return TestCA(tmp_path_factory.mktemp("ca"))
