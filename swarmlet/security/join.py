"""The join handshake, both of its sides: `join_cluster` on the node that joins, `JoinAcceptor`
on the manager that admits it (with `check_possession`, its proof that the joiner holds its key).

    joiner                                  manager
      JoinRequest (id, addresses, public key)  ->
                                            <-  JoinChallenge (a nonce sealed to that key)
      JoinProof (the nonce)                    ->
                                            <-  JoinReply (the cluster key, name, role, seeds,
                                                the node's certificate and the CA's)

The joiner proves it holds the token by sealing its request with a key derived from the token's
secret; the reply, sealed with the same key, carries the cluster key, which the joiner checks
against the token's fingerprint before trusting it, and the CA certificate, its trust anchor
from then on (`swarmlet.certs`), with the certificate issued for its identity key. Nothing is
written to the data dir unless
the cluster accepted the node.

The challenge proves that the joiner holds the private half of the public key it sends. Public
keys are no secret (every member replicates the Node records), so without it a member holding a
token could re-join under another node's id and key, take over its address, and receive the
Raft traffic and the secrets requests meant for that node (the state refuses a re-join under
another key, not one under a copied key).

The joiner makes its X25519 key pair here and sends the public half, which goes into its Node
record: secrets for its tasks are sealed to it, and, if it joins as a manager, the managers' key
too (`security.keyring`; the reply never carries that key). Only managers admit nodes: a worker
asked to admit one refuses the token, as a manager refuses an unknown one.

The accepting side admits a node by writing its `AddNode` through the leader, like any write:
the node is a member once that command is committed, and the reply carries the name the state
gave it. The acceptor is handed the few parts of the agent it uses (the key ring, the replicated
state, the write path, liveness, counters, the event log); it must not know the agent itself.
"""

from __future__ import annotations

import hmac
import math
import os
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Protocol

import trio

from swarmlet import certs, crypto
from swarmlet.errors import RemoteProtocolError, SwarmletError, UsageError
from swarmlet.executor.hostinfo import host_info
from swarmlet.security.datadir import DataDir, Identity
from swarmlet.state.commands import AddNode, Command
from swarmlet.state.generic_resources import parse_advertised
from swarmlet.state.machine import ApplyResult, ClusterState
from swarmlet.state.model import Node, Resources, Role
from swarmlet.wire.hosts import is_host
from swarmlet.wire.peer_rpc import JoinChallenge, JoinProof, JoinReply, JoinRequest
from swarmlet.wire.transport import (
    JOIN_ACCEPTED,
    JOIN_REFUSED,
    Address,
    Counters,
    FramedStream,
    join_stream,
    open_join_stream,
    parse_addr,
)

JOIN_TIMEOUT_S = 20.0
PROOF_TIMEOUT_S = 10.0  # how long the accepting side waits for the answer to its challenge
_CHALLENGE_BYTES = 16


def _parse_remote(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep:
        return text, 7946
    if not port.isdigit():
        raise UsageError(f"invalid address {text!r}: expected HOST:PORT")
    return host, int(port)


async def join_cluster(
    remote: str,
    token: crypto.JoinToken,
    *,
    name: str,
    name_is_explicit: bool,
    advertise_host: str,
    port: int,
    publish_host: str,
    datadir: DataDir,
    generic_resources: Sequence[str] = (),
) -> Identity:
    """`generic_resources`: what the node advertises ("gpu=UUID1", "ssd=3"), for its record."""
    addr = _parse_remote(remote)
    node_id = crypto.new_id()
    node_key = crypto.new_node_key()
    signing_key = certs.raw_public_key(crypto.node_signing_key(node_key))
    info = await host_info()
    request = JoinRequest(
        node_id=node_id,
        name=name,
        name_is_explicit=name_is_explicit,
        addr=f"{advertise_host}:{port}",
        publish_addr=publish_host,
        nano_cpus=info.nano_cpus,
        memory_bytes=info.memory_bytes,
        public_key=crypto.public_key_of(node_key),
        signing_key=signing_key,
        generic_resources=tuple(generic_resources),
    )
    try:
        with trio.fail_after(JOIN_TIMEOUT_S):
            stream = await open_join_stream(addr, token.join_key, token.key_id)
            if stream is None:
                raise UsageError(
                    f"{remote} refused the join token: it is invalid or was rotated, or {remote} "
                    "is not a manager (`swarmlet join-token worker` on a manager prints the "
                    "current token)"
                )
            async with stream.stream:
                await stream.send(request)
                reply = await stream.receive(expect=(JoinChallenge, JoinReply))
                if isinstance(reply, JoinChallenge):
                    aad = crypto.join_proof_aad(node_id)
                    await stream.send(JoinProof(crypto.open_sealed(node_key, reply.sealed, aad)))
                    reply = await stream.receive(expect=(JoinReply,))
    except (OSError, trio.BrokenResourceError) as exc:
        raise SwarmletError(f"cannot reach {remote}: {exc}") from None
    except trio.TooSlowError:
        raise SwarmletError(
            f"{remote} did not answer the join request within {JOIN_TIMEOUT_S:.0f} s"
        ) from None
    except RemoteProtocolError as exc:
        raise SwarmletError(f"the join reply from {remote} was invalid: {exc}") from None
    if reply is None:
        raise SwarmletError(f"{remote} closed the connection without answering")
    if not reply.ok:
        raise UsageError(f"the cluster refused to add this node: {reply.error}")
    if crypto.fingerprint(reply.master_key) != token.cluster_fingerprint:
        raise SwarmletError("the cluster's key does not match the token's fingerprint; not joining")
    try:
        # The CA certificate comes sealed with the token's key, which vouches for it.
        issued = certs.verify(reply.certificate, reply.ca_certificate, now=time.time())
    except RemoteProtocolError as exc:
        raise SwarmletError(f"the certificate in the join reply is unusable: {exc}") from None
    if issued.node_id != node_id or issued.public_key != signing_key:
        raise SwarmletError("the join reply's certificate is for another node; not joining")
    identity = Identity(
        node_id=node_id,
        cluster_id=reply.cluster_id,
        name=reply.name,
        advertise_host=advertise_host,
        port=port,
        publish_host=publish_host,
        role=reply.role,
        seeds=(*tuple(reply.seeds), f"{addr[0]}:{addr[1]}"),
    )
    datadir.write_member_keys(dict(reply.member_keys))
    datadir.write_identity(
        identity, reply.master_key, node_key, (reply.certificate, reply.ca_certificate)
    )
    return identity


async def check_possession(stream: FramedStream, node_id: str, public_key: bytes) -> bool:
    """Challenge the joiner to open a nonce sealed to `public_key` (the accepting side).
    False if it answers wrongly or not within `PROOF_TIMEOUT_S`."""
    nonce = os.urandom(_CHALLENGE_BYTES)
    sealed = crypto.seal_to(public_key, nonce, crypto.join_proof_aad(node_id))
    await stream.send(JoinChallenge(sealed))
    with trio.move_on_after(PROOF_TIMEOUT_S):
        proof = await stream.receive(expect=(JoinProof,))
        return proof is not None and hmac.compare_digest(proof.nonce, nonce)
    return False


class JoinKeys(Protocol):
    """The part of the key ring (`security.keyring.KeyRing`) that admitting a node uses."""

    def join_tokens(self) -> Mapping[bytes, tuple[Role, crypto.JoinToken]]:
        """Key id -> (role, token); empty on a node that cannot open the tokens (a worker)."""
        ...

    def seal_manager_key_to(self, node_id: str, public_key: bytes) -> bytes: ...

    def seal_cluster_key_to(self, node_id: str, public_key: bytes) -> tuple[int, bytes]: ...

    def issue_certificate(self, node_id: str, role: Role, generation: int, key: bytes) -> bytes: ...

    def ca_certificate(self) -> bytes: ...


NODE_ID = re.compile(r"[a-z0-9]{1,64}")  # `crypto.new_id()`'s (certificates allow 64 characters)
REFUSAL_EVENT_EVERY_S = 10.0  # join-refused events, at most one in this time (all counted)
MAX_NODE_NAME = 253  # a host name's length (`--name` defaults to the host's name)


def check_join_request(request: JoinRequest) -> None:
    """Refuse, with a UsageError saying which, a request whose fields would not fit where they
    go: the node id in a certificate's subject (x509 raised ValueError on 65 characters, which
    stopped the manager), the address in every member's seeds and `connect` (a host the
    resolver raises on stopped every agent that tried it), the name in terminal tables."""
    if not NODE_ID.fullmatch(request.node_id):
        raise UsageError(f"invalid node id {request.node_id[:80]!r}")
    parse_addr(request.addr)
    if request.publish_addr and not is_host(request.publish_addr):
        raise UsageError(f"invalid publish address {request.publish_addr[:80]!r}")
    name = request.name
    if not name or len(name) > MAX_NODE_NAME or not name.isprintable():
        raise UsageError(f"invalid node name {name[:80]!r}: 1-{MAX_NODE_NAME} printable characters")


class JoinAcceptor:
    """The accepting side: admits a node that holds a valid join token and its node key."""

    def __init__(
        self,
        *,
        keyring: JoinKeys,
        master_key: bytes,
        state: Callable[[], ClusterState],
        write: Callable[[Command], Awaitable[ApplyResult]],
        is_ready: Callable[[str], bool],
        counters: Counters,
        record_event: Callable[[str, str, str, str], object],
    ) -> None:
        self.keyring = keyring
        self._master_key = master_key
        self._state = state
        self._write = write
        self._is_ready = is_ready
        self.counters = counters
        self._record_event = record_event
        self._next_refusal_event = -math.inf
        self._unrecorded_refusals = 0

    def _record_refusal(self, addr: Address) -> None:
        """An event for a join with no valid token, at most one per REFUSAL_EVENT_EVERY_S
        (they are counted all the same): anyone who can connect may try, and the events of a
        flood of them would push every other out of the agent's ring."""
        now = trio.current_time()
        if now < self._next_refusal_event:
            self._unrecorded_refusals += 1
            return
        more = self._unrecorded_refusals
        message = "join refused: invalid token"
        if more:
            message += f" ({more} more refused since the last such event)"
        self._record_event("node", "join-refused", addr[0], message)
        self._next_refusal_event = now + REFUSAL_EVENT_EVERY_S
        self._unrecorded_refusals = 0

    async def serve(self, raw: trio.SocketStream, key_id: bytes, addr: Address) -> None:
        """One join connection, from the token's key id on (the transport's join handler)."""
        # Only a manager can open the tokens (`keyring`): a worker refuses every join.
        match = self.keyring.join_tokens().get(key_id)
        if match is None:
            self.counters["join_refused_bad_token"] += 1
            self._record_refusal(addr)
            await raw.send_all(JOIN_REFUSED)
            return
        await raw.send_all(JOIN_ACCEPTED)
        role, token = match
        stream = join_stream(raw, token.join_key, self.counters)
        request = None
        with trio.move_on_after(PROOF_TIMEOUT_S):  # a token's holder, but not yet a member
            request = await stream.receive(expect=(JoinRequest,))
        if request is None:
            self.counters["join_refused_no_request"] += 1
            return
        try:
            check_join_request(request)
            public_key = crypto.check_public_key(request.public_key)
            advertised = parse_advertised(request.generic_resources)
            # Issued before the node is added (a key that is no Ed25519 key refuses the join
            # here), for generation 0: the record the AddNode below creates.
            certificate = self.keyring.issue_certificate(
                request.node_id, role, 0, request.signing_key
            )
            if not await check_possession(stream, request.node_id, public_key):
                self.counters["join_refused_no_proof"] += 1
                await stream.send(JoinReply(False, error="no proof of the node key"))
                return
            sealed_key = (
                self.keyring.seal_manager_key_to(request.node_id, public_key)
                if role is Role.MANAGER
                else b""
            )
            # The reply carries epoch 0 of the cluster key; a newer one comes in the record.
            epoch, sealed_cluster_key = self.keyring.seal_cluster_key_to(
                request.node_id, public_key
            )
            result = await self._write(
                AddNode(
                    Node(
                        id=request.node_id,
                        name=request.name,
                        addr=request.addr,
                        publish_addr=request.publish_addr,
                        role=role,
                        resources=Resources(
                            request.nano_cpus,
                            request.memory_bytes,
                            advertised.generic,
                            advertised.named,
                        ),
                        joined_at=time.time(),
                        public_key=public_key,
                        sealed_manager_key=sealed_key,
                        signing_key=request.signing_key,
                        sealed_cluster_key=sealed_cluster_key,
                        cluster_key_epoch=epoch,
                    ),
                    name_is_explicit=request.name_is_explicit,
                )
            )
        except SwarmletError as exc:
            await stream.send(JoinReply(False, error=str(exc)))
            return
        if not result.ok:
            await stream.send(JoinReply(False, error=result.error))
            return
        state = self._state()
        seeds = tuple(
            n.addr for n in state.nodes.values() if n.id != request.node_id and self._is_ready(n.id)
        )
        await stream.send(
            JoinReply(
                True,
                cluster_id=state.cluster_id,
                master_key=self._master_key,
                name=result.value,
                role=role.value,
                seeds=seeds,
                certificate=certificate,
                ca_certificate=self.keyring.ca_certificate(),
                member_keys={n.id: n.signing_key for n in state.nodes.values() if n.signing_key},
            )
        )
        self._record_event("node", "joined", result.value, f"{result.value} joined as {role.value}")
