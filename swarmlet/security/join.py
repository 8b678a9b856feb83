"""The joining side of the join handshake (the accepting side is `Agent._on_join`), and the
accepting side's proof that the joiner holds its node key (`check_possession`).

    joiner                                  manager
      JoinRequest (id, addresses, public key)  ->
                                            <-  JoinChallenge (a nonce sealed to that key)
      JoinProof (the nonce)                    ->
                                            <-  JoinReply (the cluster key, name, role, seeds)

The joiner proves it holds the token by sealing its request with a key derived from the token's
secret; the reply, sealed with the same key, carries the cluster key, which the joiner checks
against the token's fingerprint before trusting it. Nothing is written to the data dir unless
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
"""

from __future__ import annotations

import hmac
import os

import trio

from swarmlet import crypto
from swarmlet.errors import RemoteProtocolError, SwarmletError, UsageError
from swarmlet.executor.hostinfo import host_info
from swarmlet.security.datadir import DataDir, Identity
from swarmlet.wire.peer_rpc import JoinChallenge, JoinProof, JoinReply, JoinRequest
from swarmlet.wire.transport import FramedStream, open_join_stream

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
) -> Identity:
    addr = _parse_remote(remote)
    node_id = crypto.new_id()
    node_key = crypto.new_node_key()
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
    datadir.write_identity(identity, reply.master_key, node_key)
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
