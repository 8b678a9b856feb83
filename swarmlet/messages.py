"""Registers every wire type under its permanent id. Import this before encoding or decoding.

Each range's list is append-only (see `swarmlet.wire`): never reorder, never remove.
"""

from __future__ import annotations

from swarmlet import model, state, wire


def _register() -> None:
    wire.register_all(wire.STATE_RANGE.start, model.WIRE_TYPES)
    wire.register_all(wire.STATE_RANGE.start + 50, state.COMMANDS)
    wire.register_all(wire.STATE_RANGE.start + 100, state.SNAPSHOT_TYPES)


_register()
