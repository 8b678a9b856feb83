"""Registers every wire type under its permanent id.

Each core lists its classes in a tuple that is only ever appended to; the ranges and offsets below
are permanent too (see `swarmlet.wire`). `ensure_registered()` is idempotent; every entry point
(the agent, the CLI, the tests that encode messages) calls it before touching the wire.
"""

from __future__ import annotations

from swarmlet import model, observed, proxy_workers, rpc, state, wire
from swarmlet.gossip import driver as gossip_driver
from swarmlet.gossip import messages as gossip_messages
from swarmlet.raft import driver as raft_driver
from swarmlet.raft import messages as raft_messages
from swarmlet.raft import types as raft_types

_done = False


def ensure_registered() -> None:
    global _done
    if _done:
        return
    _done = True
    wire.register_all(wire.GOSSIP_RANGE.start, gossip_messages.MESSAGES)
    wire.register_all(wire.GOSSIP_RANGE.start + 50, gossip_driver.WIRE_TYPES)
    wire.register_all(
        wire.RAFT_RANGE.start,
        (
            raft_types.Entry,
            raft_types.HardState,
            raft_types.ConfChange,
            raft_types.ConfState,
            raft_types.SnapshotMeta,
            raft_types.Snapshot,
        ),
    )
    wire.register_all(wire.RAFT_RANGE.start + 20, raft_messages.MESSAGES)
    wire.register_all(wire.RAFT_RANGE.start + 80, raft_driver.WIRE_TYPES)
    wire.register_all(wire.STATE_RANGE.start, model.WIRE_TYPES)
    wire.register_all(wire.STATE_RANGE.start + 50, state.COMMANDS)
    wire.register_all(wire.STATE_RANGE.start + 100, state.SNAPSHOT_TYPES)
    wire.register_all(wire.STATE_RANGE.start + 120, observed.WIRE_TYPES)
    wire.register_all(wire.CONTROL_RANGE.start, rpc.MESSAGES)
    # Between an agent and its own proxy worker processes (same version on both ends).
    wire.register_all(wire.CONTROL_RANGE.start + 100, proxy_workers.WIRE_TYPES)
