"""The orchestrator: pure `reconcile(state, observed, now, ids) -> commands` for the leader.

Modules: `core` (the order of the steps and the output), `context` (inputs, scratch state,
changes), `slots` (restart, node down/drain, handovers), `restart` (policy maths), `replicated`,
`global_`, `jobs` (replicated and global jobs), `update` (rolling update state machine),
`rebalance`, `reaper` (task history), `incremental` (passes scoped to what changed: the
leader's work per change follows the change, issue #16).

Contract with the agents (what the observations must mean):
* an agent starts only tasks assigned to its node whose recorded state is ASSIGNED or later
  (a global task carries its node id from creation, while it still waits for the scheduler);
* `TaskObservation.since` is when the reported state was entered (a RUNNING task's start, a
  terminal task's end: restart back-off and update delays count from it);
* `healthy` is None without a health check, False while starting or unhealthy, True when
  healthy: a task counts as up (handovers, rolling updates) when RUNNING and not False.
"""

from __future__ import annotations

from swarmlet.leader.orchestrator.context import (
    IdSource,
    Observed,
    counter_ids,
    seeded_ids,
)
from swarmlet.leader.orchestrator.core import Plan, next_wakeup, plan, reconcile
from swarmlet.leader.scheduler import ObservedNode
from swarmlet.state.observed import TaskObservation

__all__ = [
    "MESSAGES",
    "IdSource",
    "Observed",
    "ObservedNode",
    "Plan",
    "TaskObservation",
    "counter_ids",
    "next_wakeup",
    "plan",
    "reconcile",
    "seeded_ids",
]
