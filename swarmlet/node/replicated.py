"""The cluster state as Raft's state machine: how committed entries become `ClusterState`.

The Raft driver replicates bytes and knows nothing of commands (`raft.state_machine`); this
adapter gives them their meaning. An entry's data is one wire-encoded command
(`encode_command`); applying it runs `ClusterState.apply`, the only mutator of replicated
state, and the `ApplyResult` goes back to the proposer unchanged.

Invariants: a committed entry that does not decode is rejected the same way on every replica
(an error result, logged, the state untouched), so replicas never diverge and the driver never
sees an exception. `on_apply` runs after each decoded command is applied, in log order, before
its proposer is answered; it is how the rest of the node learns that the state changed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from swarmlet.errors import RemoteProtocolError
from swarmlet.state.commands import Command
from swarmlet.state.machine import ApplyResult, ClusterState
from swarmlet.wire import codec as wire

log = logging.getLogger(__name__)


def encode_command(command: Command) -> bytes:
    """The data of the Raft entry that carries `command`."""
    return wire.encode(command)


class ReplicatedState:
    """`ClusterState` behind the `raft.state_machine.StateMachine[ApplyResult]` interface."""

    def __init__(self, on_apply: Callable[[Command, ApplyResult], None] | None = None) -> None:
        self.state = ClusterState()
        self._on_apply = on_apply

    def restore(self, data: bytes) -> None:
        self.state = ClusterState.restore(data)

    def apply(self, index: int, data: bytes) -> ApplyResult:
        try:
            command = wire.decode(data)
        except RemoteProtocolError as exc:
            # A committed entry we cannot decode: every replica fails the same way, so the
            # state stays identical; the command is rejected, loudly.
            log.error("committed entry %d is not a valid command: %s", index, exc)
            return ApplyResult(False, error=f"undecodable command: {exc}")
        result = self.state.apply(command)
        if self._on_apply is not None:
            self._on_apply(command, result)
        return result

    def snapshot(self) -> bytes:
        return self.state.snapshot()
