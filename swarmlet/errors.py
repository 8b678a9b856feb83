"""The error tree. A user-facing error says what was wrong, where, and what to do.

SwarmletError
├── UsageError            bad command-line or API input; nothing was changed
│   └── ProposalTooLargeError  one write over the Raft entry limit
├── StackError            a stack file failed to load (file, key path, what was expected)
├── NotLeaderError        a write reached a node that is not the leader (carries the leader hint)
├── NoLeaderError         no leader is known right now; retry later
├── RuntimeAdapterError   the Docker engine refused or failed an operation
├── SecretsUnavailableError  a task's secrets could not be obtained (refused, no manager)
├── StorageCorruptError   committed durable state is damaged; the agent must stop
├── AgentUnavailableError the local agent does not answer on its control socket
└── ProtocolError         a message could not be decoded or authenticated
    ├── LocalProtocolError   we tried to send something invalid (a bug of ours)
    └── RemoteProtocolError  a peer sent garbage (dropped and counted, never fatal)
"""

from __future__ import annotations


class SwarmletError(Exception):
    """Base of every error swarmlet raises on purpose."""


class UsageError(SwarmletError):
    """Invalid input from the user or an API caller; nothing was changed."""


class ProposalTooLargeError(UsageError):
    """A write over the limit of one Raft entry (`raft.driver.MAX_PROPOSAL_BYTES`), refused
    before it was queued: what can be split (the leader's plans) is proposed in parts."""


class StackError(SwarmletError):
    """A stack file is invalid. `path` is the key path, e.g. ``services.api.deploy.replicas``."""

    def __init__(self, file: str, path: str, message: str) -> None:
        self.file = file
        self.path = path
        self.message = message
        where = f"{file}: {path}: " if path else f"{file}: "
        super().__init__(where + message)


class NotLeaderError(SwarmletError):
    """This node is not the leader; `leader_hint` is the node id of the leader, if known."""

    def __init__(self, leader_hint: str | None) -> None:
        self.leader_hint = leader_hint
        super().__init__(
            f"not the leader (leader is {leader_hint})" if leader_hint else "not the leader"
        )


class NoLeaderError(SwarmletError):
    """No leader is known: an election is in progress or the managers lost their quorum."""


class RuntimeAdapterError(SwarmletError):
    """The container runtime (Docker) refused or failed an operation."""


class SecretsUnavailableError(SwarmletError):
    """A task's secrets or configs could not be obtained: refused, missing, or no manager
    answered. The task cannot start; the message says why."""


class StorageCorruptError(SwarmletError):
    """Durable state is damaged in a way that cannot be repaired without losing committed data."""


class AgentUnavailableError(SwarmletError):
    """The local agent is not running or does not answer on its control socket."""


class ProtocolError(SwarmletError):
    """A message could not be encoded, decoded or authenticated."""


class LocalProtocolError(ProtocolError):
    """We tried to send something that is not a valid message: a bug of ours."""


class RemoteProtocolError(ProtocolError):
    """A peer sent bytes that are not a valid, authentic message: drop, count, carry on."""
