"""This node's certificate over its life: loaded into the transport's TLS contexts, issued by the
node itself when it holds the CA key (a manager), renewed before it expires or when the node's
role changes, and the managers' side of renewal for the other nodes.

When a node renews (`due`):
- its record in the replicated state names another role or generation than its certificate
  (promoted, demoted: `state.machine._update_node` raises the generation);
- less than half of its certificate's lifetime is left (Swarm renews at a random point past
  half-life; one renewal per half-life is what matters here).

How. A node that holds the managers' key issues its own (no network); any other node asks a
manager over the cluster channel (`CertRequest`), authenticated by the certificate it still has.
The manager issues for the key of that certificate, with the role and generation of the node's
record: nothing the asker says is taken. A node whose certificate expired, or that was removed,
cannot renew (every manager refuses its connections): it must join again, as in Swarm.

The CA never changes (`security.managers_key_rotation` keeps its seed across rotations of the
managers' key), so a manager writes no CA certificate but the cluster's: one derived from a
replica that has not yet applied the CA's seed (a restart, before the log is replayed; the seed
is sealed in the state from the first rotation on) is not the cluster's, and written, it cut the
node off from every peer. Such a manager starts with the certificate it has, even an expired
one, and issues its own once its replica holds the seed (`_may_write_ca`).
"""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Awaitable, Callable

import trio

from swarmlet import certs, timers
from swarmlet.errors import RemoteProtocolError, StorageCorruptError, SwarmletError, UsageError
from swarmlet.security.datadir import DataDir
from swarmlet.security.keyring import KeyRing
from swarmlet.state.machine import ClusterState
from swarmlet.state.model import Role
from swarmlet.wire.peer_rpc import CertReply, CertRequest
from swarmlet.wire.transport import Address, Admit, Counters, FramedStream, TlsConfig

log = logging.getLogger(__name__)

CHECK_INTERVAL_S = 5.0
_ASK_TIMEOUT_S = 5.0


def tls_config(datadir: DataDir, admit: Admit) -> TlsConfig:
    """TLS contexts from the certificate in the data dir."""
    _, ca_pem = datadir.read_certificate()

    def context(server: bool) -> ssl.SSLContext:
        return certs.tls_context(
            server=server, ca_pem=ca_pem, cert_file=datadir.cert_file, key_file=datadir.tls_key_file
        )

    return TlsConfig(server=context(True), client=context(False), admit=admit)


def own_certificate(
    keyring: KeyRing, node_id: str, key: bytes, state: ClusterState
) -> tuple[bytes, bytes]:
    """On a node holding the CA key: (a certificate for itself, the CA's), as its record says (a
    manager of generation 0 before its record exists: `init`, a data dir from before
    certificates). `key`: its raw Ed25519 identity key."""
    own = state.nodes.get(node_id)
    role, generation = (own.role, own.cert_generation) if own else (Role.MANAGER, 0)
    return keyring.issue_certificate(node_id, role, generation, key), keyring.ca_certificate()


class Certificates:
    def __init__(
        self,
        *,
        datadir: DataDir,
        node_id: str,
        cluster_id: str,
        keyring: KeyRing,
        state: Callable[[], ClusterState],
        admit: Admit,
        connect: Callable[[Address, str], Awaitable[FramedStream]],
        managers: Callable[[], list[tuple[str, Address]]],
        install: Callable[[TlsConfig], None],
        counters: Counters,
    ) -> None:
        self._datadir = datadir
        self._node_id = node_id
        self._cluster_id = cluster_id
        self._keyring = keyring
        self._state = state
        self._admit = admit
        self._connect = connect
        self._managers = managers
        self._install = install
        self.counters = counters
        self._wake = trio.Event()
        self._key = certs.raw_public_key(datadir.signing_key())  # what every cert is for
        self._unusable_at_start = False  # and not issued again yet: the replica was behind
        if not datadir.has_certificate():
            if keyring.managers is None:
                datadir.read_certificate()  # raises StorageCorruptError: what to do about it
            self._issue_own()
        self.current = self._load()

    def _issue_own(self) -> bool:
        """Write a certificate this manager issues itself, as the state says; False if the CA
        it would issue under is not the one in the data dir (the replica is behind): the
        certificate is then written only where there is none, as something to start with."""
        state = self._state()
        cert, ca = own_certificate(self._keyring, self._node_id, self._key, state)
        datadir = self._datadir
        if not self._may_write_ca(ca, state):
            if not datadir.cert_file.exists():
                datadir.write_certificate(cert)
            return False
        datadir.write_certificate(cert, ca)
        return True

    def _may_write_ca(self, ca: bytes, state: ClusterState) -> bool:
        """Whether `ca`, derived from `state`, is the cluster's: the one in the data dir (or
        none is there yet), or one derived from the CA's seed itself (which heals a data dir
        that an older release wrote a wrong one into, from a replica behind the seed)."""
        path = self._datadir.ca_file
        return bool(state.sealed_ca_seed) or not path.exists() or path.read_bytes() == ca

    def _load(self) -> certs.PeerIdentity:
        cert, ca = self._datadir.read_certificate()
        try:
            current = certs.verify(cert, ca, now=time.time())
            if (current.node_id, current.cluster_id) != (self._node_id, self._cluster_id):
                raise RemoteProtocolError(
                    f"it is for node {current.node_id} of cluster {current.cluster_id!r}"
                )
            return current
        except RemoteProtocolError as exc:
            if self._keyring.managers is not None and self._issue_own():
                log.warning("this node's certificate was unusable (%s): issued a new one", exc)
                cert, ca = self._datadir.read_certificate()
                return certs.verify(cert, ca, now=time.time())
            if self._keyring.managers is not None:
                log.warning(
                    "this node's certificate is unusable (%s): a new one is issued once its "
                    "replica has applied the cluster's CA",
                    exc,
                )
                self._unusable_at_start = True
                return certs.identity_of_pem(cert)
            raise StorageCorruptError(
                f"{self._datadir.cert_file}: {exc}; remove this node (`swarmlet node rm` on a "
                "manager) and join it again"
            ) from None

    def tls(self) -> TlsConfig:
        return tls_config(self._datadir, self._admit)

    def notify(self) -> None:
        """The state changed: this node's role may have. The loop is woken only if a renewal
        is due: the agent notifies at every applied batch of writes."""
        if self.due(time.time()) is not None:
            self._wake.set()

    def due(self, now: float) -> str | None:
        """Why this node's certificate should be renewed now, or None."""
        if self._unusable_at_start:
            return "it was unusable at start"
        own = self._state().nodes.get(self._node_id)
        cert = self.current
        if own is not None and (
            cert.role != own.role.value or cert.generation != own.cert_generation
        ):
            return f"the node is now a {own.role.value} (generation {own.cert_generation})"
        if cert.not_after - now < self._keyring.cert_lifetime_s / 2:
            return "half of its lifetime has passed"
        return None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            why = self.due(time.time())
            if why is not None:
                await self.renew(why)
            with trio.move_on_at(timers.next_beat(CHECK_INTERVAL_S)):
                await self._wake.wait()
            self._wake = trio.Event()

    async def renew(self, why: str) -> bool:
        try:
            if self._keyring.managers is not None:
                state = self._state()
                cert, new_ca = own_certificate(self._keyring, self._node_id, self._key, state)
                if not self._may_write_ca(new_ca, state):
                    # Its replica has not applied the CA's seed yet (a start, replaying its
                    # log): tried again at the next applied batch, without a warning each time.
                    self.counters["certificate_renewals_behind_ca"] += 1
                    return False
            else:
                cert, new_ca = await self._ask(), None
                _, ca = self._datadir.read_certificate()
                got = certs.verify(cert, ca, now=time.time())
                if got.node_id != self._node_id or got.public_key != self._key:
                    raise RemoteProtocolError("the certificate is for another node or key")
            # Files written with fsync: off the event loop.
            await trio.to_thread.run_sync(self._datadir.write_certificate, cert, new_ca)
            self.current = self._load()
            self._unusable_at_start = False
        except (SwarmletError, OSError, trio.TooSlowError, trio.BrokenResourceError) as exc:
            self.counters["certificate_renewal_failures"] += 1
            log.warning("could not renew this node's certificate (%s): %s", why, exc)
            return False
        self._install(self.tls())
        self.counters["certificate_renewals"] += 1
        log.info("renewed this node's certificate (%s)", why)
        return True

    async def _ask(self) -> bytes:
        errors = []
        for node_id, addr in self._managers():
            try:
                with trio.fail_after(_ASK_TIMEOUT_S):
                    stream = await self._connect(addr, node_id)
                    async with stream.stream:
                        await stream.send(CertRequest())
                        reply = await stream.receive(expect=(CertReply,))
            except (
                OSError,
                trio.TooSlowError,
                trio.BrokenResourceError,
                RemoteProtocolError,
            ) as exc:
                errors.append(f"{node_id}: {exc!r}")
                continue
            if reply is None or not reply.ok:
                errors.append(f"{node_id}: {reply.error if reply else 'no answer'}")
                continue
            return bytes(reply.certificate)
        raise SwarmletError("no manager renewed it: " + ("; ".join(errors) or "none known"))

    async def serve(self, stream: FramedStream, request: object) -> None:
        """A manager's side: a certificate for the asking node, as its record says."""
        peer = stream.peer
        own = self._state().nodes.get(peer.node_id) if peer is not None else None
        if peer is None or own is None:
            await stream.send(CertReply(False, error="not a member of this cluster"))
            return
        if own.signing_key and own.signing_key != peer.public_key:
            self.counters["refused_certificate_other_key"] += 1
            await stream.send(CertReply(False, error="the certificate's key is not the node's"))
            return
        try:
            cert = self._keyring.issue_certificate(
                peer.node_id, own.role, own.cert_generation, peer.public_key
            )
        except UsageError as exc:
            await stream.send(CertReply(False, error=str(exc)))
            return
        self.counters["certificates_issued"] += 1
        await stream.send(CertReply(True, certificate=cert))
