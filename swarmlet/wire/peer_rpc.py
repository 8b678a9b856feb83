"""Request/reply messages between agents over the cluster TCP channel (one request per connection,
but for `ProposeBatch`).

Writes reach the leader through `ProposeRequest`: a manager may accept a write from its user and
forward it, authenticated with the managers' key (`security.propose_auth`); the reply carries the
log index so the forwarder can wait until it has applied the write itself (read-your-writes).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from swarmlet.wire import catalog, codec


@dataclass(frozen=True, slots=True)
class ProposeRequest:
    command: bytes  # a wire-encoded `swarmlet.state.commands.Command`
    # Authentication (`security.propose_auth`): `mac` covers every other field.
    proposer: str = ""  # node ids
    leader: str = ""
    nonce: bytes = b""
    sent_at: float = 0.0  # the proposer's wall clock, seconds since the epoch
    mac: bytes = b""


@dataclass(frozen=True, slots=True)
class ProposeReply:
    ok: bool
    error: str = ""
    value: str = ""
    index: int = 0
    not_leader: bool = False
    leader_hint: str = ""


@dataclass(frozen=True, slots=True)
class JoinRequest:
    node_id: str
    name: str
    name_is_explicit: bool
    addr: str
    publish_addr: str
    nano_cpus: int
    memory_bytes: int
    public_key: bytes  # the joiner's X25519 public key, for its Node record
    signing_key: bytes = b""  # its Ed25519 identity key: the certificate it receives is for it
    # The generic resources it advertises ("gpu=UUID1", "ssd=3"), parsed by the manager
    # (`state.generic_resources.parse_advertised`), which refuses the join if they are malformed.
    generic_resources: tuple[str, ...] = codec.appended(since=2, default=())


@dataclass(frozen=True, slots=True)
class JoinReply:
    ok: bool
    error: str = ""
    cluster_id: str = ""
    master_key: bytes = b""
    name: str = ""
    role: str = ""
    seeds: tuple[str, ...] = ()
    certificate: bytes = b""  # the joiner's node certificate (PEM, `swarmlet.certs`)
    ca_certificate: bytes = b""  # the cluster CA's: the joiner's trust anchor from now on
    # Node id -> Ed25519 identity key of every member: the joiner checks their datagrams with
    # these until its replica of the state has caught up (`wire.transport.DatagramAuth`).
    member_keys: dict[str, bytes] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class LogsRequest:
    """Ask a node for the logs of the containers of some tasks it runs (for `service logs`)."""

    task_ids: tuple[str, ...]
    follow: bool
    tail: int  # lines per container from the end; -1 for all
    since: float = 0.0  # only lines Docker stamped at or after this (epoch seconds); 0: all
    # Each line with its logging driver's attributes (`--details`).
    details: bool = codec.appended(since=2, default=False)


@dataclass(frozen=True, slots=True)
class LogLine:
    task_id: str
    line: bytes  # without its newline, nor Docker's timestamp
    timestamp: str = ""  # Docker's own (RFC 3339, nanoseconds), so merged lines sort; "" if none
    # With `LogsRequest.details`: the logging driver's attributes of the line (docker's
    # `details`: the labels and env variables `--log-opt labels/env` name), unescaped.
    attrs: dict[str, str] = codec.appended(since=2, default_factory=dict)


@dataclass(frozen=True, slots=True)
class EndOfStream:
    error: str = ""


@dataclass(frozen=True, slots=True)
class SecretsRequest:
    """A node asks a manager for the secrets of one of its tasks (`security.secret_delivery`)."""

    node_id: str
    task_id: str
    min_index: int  # the asker's applied index: the manager decides on a state at least as new
    nonce: bytes = b""  # fresh per request, bound into the answer (`crypto.delivery_aad`)


@dataclass(frozen=True, slots=True)
class SecretsReply:
    ok: bool
    error: str = ""
    sealed: bytes = b""  # a wire-encoded `SecretValues`, sealed to the asking node (crypto.seal_to)
    signature: bytes = b""  # the managers' (`crypto.ManagerKeys.sign`) over the AAD and `sealed`


@dataclass(frozen=True, slots=True)
class SecretValues:
    """The plaintext inside `SecretsReply.sealed`: secret name -> value."""

    values: dict[str, bytes]


@dataclass(frozen=True, slots=True)
class JoinChallenge:
    """A random nonce sealed to the public key of a `JoinRequest` (`swarmlet.security.join`)."""

    sealed: bytes


@dataclass(frozen=True, slots=True)
class JoinProof:
    """The joiner's answer to a `JoinChallenge`: the nonce, which only the key's holder opens."""

    nonce: bytes


@dataclass(frozen=True, slots=True)
class ProposeBatch:
    """Forwarded writes sent together, each signed on its own. A connection that opens with a
    batch carries any number of them, several in flight: the leader answers each with the
    `ProposeBatchReply` of the same `seq` (`node.forwarding`)."""

    seq: int
    requests: tuple[ProposeRequest, ...]


@dataclass(frozen=True, slots=True)
class ProposeBatchReply:
    seq: int
    replies: tuple[ProposeReply, ...]  # one per request of the batch, in its order


@dataclass(frozen=True, slots=True)
class CertRequest:
    """A node asks a manager to renew its certificate (for the key of the certificate it
    connected with; role and generation are the state's, never the asker's say)."""


@dataclass(frozen=True, slots=True)
class CertReply:
    ok: bool
    error: str = ""
    certificate: bytes = b""  # PEM


# Only append: ids are permanent.
MESSAGES: tuple[type, ...] = (
    ProposeRequest,
    ProposeReply,
    JoinRequest,
    JoinReply,
    LogsRequest,
    LogLine,
    EndOfStream,
    SecretsRequest,
    SecretsReply,
    SecretValues,
    JoinChallenge,
    JoinProof,
    ProposeBatch,
    ProposeBatchReply,
    CertRequest,
    CertReply,
)
codec.register_all(catalog.PEER_RPC, MESSAGES)
