"""The cluster state as Raft's state machine: how committed entries become `ClusterState`.

The Raft driver replicates bytes and knows nothing of commands (`raft.state_machine`); this
adapter gives them their meaning. An entry's data is one wire-encoded command
(`encode_command`); applying it runs `ClusterState.apply`, the only mutator of replicated
state, and the `ApplyResult` goes back to the proposer unchanged.

Invariants: a committed entry that does not decode is rejected the same way on every replica
(an error result, logged, the state untouched), so replicas never diverge and the driver never
sees an exception. The rest of the node learns that the state changed from the driver, once per
applied batch (`RaftDriver`'s `on_applied`), not from here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import cast

from swarmlet import off_loop
from swarmlet.errors import RemoteProtocolError
from swarmlet.state.commands import Command, records_in
from swarmlet.state.machine import ApplyResult, ClusterState
from swarmlet.wire import codec as wire

log = logging.getLogger(__name__)


def encode_command(command: Command) -> bytes:
    """The data of the Raft entry that carries `command`."""
    return wire.encode(command)


async def encode_command_aside(command: Command) -> bytes:
    """`encode_command`, in a thread for a command of many records: encoding a stack of 10,000
    services is 2 s of CPU, which on the event loop stopped Raft's heartbeats."""
    return await off_loop.run_if(
        records_in(command) >= off_loop.HEAVY_RECORDS, lambda: encode_command(command)
    )


class ReplicatedState:
    """`ClusterState` behind the `raft.state_machine.StateMachine[ApplyResult]` interface."""

    def __init__(self) -> None:
        self.state = ClusterState()

    def restore(self, data: bytes) -> None:
        self.state = ClusterState.restore(data)

    def decode(self, data: bytes) -> Command | RemoteProtocolError:
        try:
            return cast(Command, wire.decode(data))
        except RemoteProtocolError as exc:
            return exc

    def apply(self, index: int, data: bytes, decoded: object = None) -> ApplyResult:
        command = decoded if decoded is not None else self.decode(data)
        if isinstance(command, RemoteProtocolError):
            # A committed entry we cannot decode: every replica fails the same way, so the
            # state stays identical; the command is rejected, loudly.
            log.error("committed entry %d is not a valid command: %s", index, command)
            return ApplyResult(False, error=f"undecodable command: {command}")
        return self.state.apply(cast(Command, command))

    def snapshot_later(self) -> Callable[[], bytes]:
        record = self.state.snapshot_record()
        return lambda: off_loop.pack(wire.as_plain(record))  # in a thread: `wire.encode`'s bytes
