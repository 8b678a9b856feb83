"""The orchestrator: pure `reconcile(state, observed, now, ids) -> commands` for the leader.

Modules: `core` (the order of the steps and the output), `context` (inputs, scratch state,
changes), `slots` (restart, node down/drain, handovers), `restart` (policy maths), `replicated`,
`global_`, `update` (rolling update state machine), `rebalance`, `reaper` (task history).
"""

from __future__ import annotations

from swarmlet.orchestrator.context import (
    IdSource,
    Observed,
    counter_ids,
    seeded_ids,
)
from swarmlet.orchestrator.core import Plan, next_wakeup, plan, reconcile

MESSAGES: tuple[type, ...] = ()  # nothing here crosses the wire

__all__ = [
    "MESSAGES",
    "IdSource",
    "Observed",
    "Plan",
    "counter_ids",
    "next_wakeup",
    "plan",
    "reconcile",
    "seeded_ids",
]
