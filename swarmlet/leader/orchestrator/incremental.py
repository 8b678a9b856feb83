"""Scoped orchestration passes: the leader's work per change follows the change (issue #16).

A full pass (`core.plan` with no scope) looks at every task: at 1,000 nodes and 100,000 tasks it
costs about two seconds of CPU, for one failed task as for a deploy. `IncrementalPlanner` runs
`plan` scoped to what changed since its last pass, read from three sources:

* the state's change journal (`ClusterState.journal`): services written (a spec, an update
  status, a removal), tasks written or reaped (their service), node records written;
* the observed state: tasks whose observation changed (`ObservationCache.changed_tasks`, or a
  comparison with the previous pass's), nodes whose gossip verdict or capacity changed;
* time and the other services: a service whose timer (restart delay, update delay or monitor,
  rebalancing cool-down) is due; a service `Plan.watch` names (its last decision depended on
  room the other services' tasks hold); a service whose `depends_on` hold was lifted.

What a node change concerns: the services with tasks on the node (down, drained, constraints),
every global service and global job (eligibility), and, when the node may take more than before
(it came back, joined, or its record or capacity changed: not when it only went down), every
service that rebalances. Every task waiting for a node goes through the scheduler on every pass
(`plan` step 4), except those the last pass left pending when nothing the scheduler reads changed
since: no node record written or seen differently, no tally moved, no service written
(`pending.Unplaced`; what `depends_on` holds back does not matter there: a held service has no
task yet).

Invariant (a property test holds it on seeded random clusters and changes): a scoped pass returns
exactly the commands of a full pass on the same inputs, and the timers. A full pass still runs
now and then (`full_pass_every_s`), as a safety net against a change this module does not know
to follow, and whenever the journal cannot answer (another state object, or it forgot).

The node tallies (`scheduler.NodeTallies`) are kept here too, advanced from the same journal.

Pure: time is `now`, ids come from the caller.
"""

from __future__ import annotations

import copy
from collections.abc import Collection, Mapping
from dataclasses import dataclass

from swarmlet.leader.orchestrator.context import IdSource, Observed
from swarmlet.leader.orchestrator.core import Plan, plan
from swarmlet.leader.orchestrator.pending import Unplaced
from swarmlet.leader.scheduler import NodeTallies, ObservedNode
from swarmlet.state.indexes import ChangeJournal, Changes
from swarmlet.state.machine import ClusterState
from swarmlet.state.model import ServiceMode
from swarmlet.state.observed import TaskObservation

FULL_PASS_EVERY_S = 300.0  # the safety net: every 5 min, ~2 s of CPU at 100,000 tasks


@dataclass(frozen=True)
class Scope:
    """What a pass looked at: None for a full pass."""

    services: frozenset[str]
    nodes: frozenset[str]


class IncrementalPlanner:
    def __init__(self, *, full_pass_every_s: float = FULL_PASS_EVERY_S) -> None:
        self.full_pass_every_s = full_pass_every_s
        self.last_scope: Scope | None = None  # of the last pass (None: it was full)
        self._journal: ChangeJournal | None = None
        self._mark = 0
        self._last_full_at: float | None = None
        self._tallies: NodeTallies | None = None
        self._nodes: Mapping[str, ObservedNode] = {}
        self._tasks: Mapping[str, TaskObservation] | None = {}
        self._held: frozenset[str] = frozenset()
        self._timers: dict[str, float] = {}
        self._watch: set[str] = set()
        self._carried: Scope | None = None  # a deferred pass's scope, looked at again
        # What the last pass left waiting, and the tallies' version it saw (`pending`).
        self._unplaced: Unplaced | None = None
        self._tallies_version = -1

    def copy(self) -> IncrementalPlanner:
        """An independent copy (to measure a pass without disturbing this planner)."""
        other = copy.copy(self)
        other._timers, other._watch = dict(self._timers), set(self._watch)
        other._tallies = self._tallies.copy() if self._tallies is not None else None
        return other

    def plan(
        self,
        state: ClusterState,
        observed: Observed,
        now: float,
        ids: IdSource,
        *,
        held: Collection[str] = (),
        changed_tasks: Collection[str] | None = None,
    ) -> Plan:
        """The pass for now. `state`: the replicated state itself (its journal is read);
        `held`: the services `depends_on` holds back (`depends_on.held_back`), left out of the
        pass; `changed_tasks`: the tasks whose observation changed since the last call, if the
        caller knows (`ObservationCache`), else they are found by comparing `observed.tasks`
        with the last call's (O(tasks))."""
        changes = state.journal.since(self._mark) if state.journal is self._journal else None
        if changed_tasks is None and self._tasks is None:
            changes = None  # the last call's observations were not kept: nothing to compare
        self._journal, self._mark = state.journal, state.journal.mark()
        full = (
            changes is None
            or self._last_full_at is None
            or not self._last_full_at <= now < self._last_full_at + self.full_pass_every_s
        )
        if full or self._tallies is None or not self._tallies.advance(state):
            self._tallies = NodeTallies(state)
        held_now = frozenset(held)
        orchestrated = _without(state, held_now)

        scope: Scope | None = None
        unplaced: Unplaced | None = None
        touched: Collection[str] = ()
        if not full:
            assert changes is not None
            if changed_tasks is None:
                assert self._tasks is not None
                compared = _changed(self._tasks, observed.tasks)
            scope = self._scope(
                state,
                observed,
                now,
                changes,
                compared if changed_tasks is None else changed_tasks,
                held_now,
            )
            # The last pass's `Unplaced` holds while nothing the scheduler reads changed: a node
            # (its record or the gossip view: `scope.nodes`, which a deferred pass's nodes join
            # only when there is no `Unplaced`), the tallies, a service (its spec is what the
            # scheduler explains its tasks by: a rolling update rewrites one waiting task per
            # step, yet all are told why anew).
            if not (
                scope.nodes or changes.services or self._tallies.version != self._tallies_version
            ):
                unplaced, touched = self._unplaced, changes.tasks
        # The observed tasks are kept only to compare them with the next call's when the
        # caller does not say what changed (a caller that does may hand a live view).
        self._nodes, self._held = observed.nodes, held_now
        self._tasks = observed.tasks if changed_tasks is None else None

        if scope is None:
            self._last_full_at = now
            result = plan(orchestrated, observed, now, ids, tallies=self._tallies)
            self._timers = dict(result.timers)
            self._watch = set(result.watch)
        else:
            waiting = orchestrated.tasks.waiting()
            # Nothing written since a pass that vouched for every waiting task: nothing waits
            # for an answer either.
            settled = not waiting or (unplaced is not None and not touched)
            if scope.services or scope.nodes or not settled:
                result = plan(
                    orchestrated,
                    observed,
                    now,
                    ids,
                    scope.services,
                    nodes=scope.nodes,
                    tallies=self._tallies,
                    unplaced=unplaced,
                    touched=touched,
                )
            else:
                result = Plan((), None, unplaced=unplaced if waiting else Unplaced({}))
            for service_id in scope.services:
                self._timers.pop(service_id, None)
            self._timers.update(result.timers)
            self._watch.difference_update(scope.services)
            self._watch.update(result.watch)
        self.last_scope = scope
        self._carried = None
        self._unplaced, self._tallies_version = result.unplaced, self._tallies.version
        return Plan(
            result.commands,
            min(self._timers.values(), default=None),
            result.timers,
            result.watch,
            result.unplaced,
            result.scheduled,
        )

    def deferred(self) -> None:
        """The last pass's commands were not (all) committed: look at its scope again (a full
        pass: run the next one full)."""
        if self.last_scope is None:
            self._last_full_at = None
        else:
            self._carried = self.last_scope
        # Its `Unplaced` left out the waiting tasks its earlier steps retired or rewrote; the
        # next pass may decide otherwise about them, so it schedules every waiting task.
        self._unplaced = None

    def _scope(
        self,
        state: ClusterState,
        observed: Observed,
        now: float,
        changes: Changes,
        changed_tasks: Collection[str],
        held: frozenset[str],
    ) -> Scope:
        services: set[str] = set(changes.services)
        services.update(changes.tasks.values())
        for task_id in changed_tasks:
            task = state.tasks.get(task_id)
            if task is not None:
                services.add(task.service_id)
        services.update(s for s, at in self._timers.items() if at <= now)
        services.update(self._watch)
        services.update(held ^ self._held)

        nodes: set[str] = set(changes.nodes)
        gained = bool(changes.nodes)  # a record written: it may take more than before
        for node_id in observed.nodes.keys() | self._nodes.keys():
            was, is_ = self._nodes.get(node_id), observed.nodes.get(node_id)
            if was is is_ or was == is_:
                continue
            nodes.add(node_id)
            only_lost = was is not None and was.ready and (is_ is None or not is_.ready)
            gained = gained or not only_lost
        if nodes:
            for node_id in nodes:
                services.update(t.service_id for t in state.tasks.on_node(node_id).values())
            for service in state.services.values():
                spec = service.spec
                if spec.mode.is_global or (
                    gained and spec.rebalance and spec.mode is ServiceMode.REPLICATED
                ):
                    services.add(service.id)
        if self._carried is not None:
            services.update(self._carried.services)
            nodes.update(self._carried.nodes)
        return Scope(frozenset(services), frozenset(nodes))


def _changed(
    before: Mapping[str, TaskObservation], after: Mapping[str, TaskObservation]
) -> set[str]:
    return {
        t
        for t in before.keys() | after.keys()
        if (was := before.get(t)) is not (now := after.get(t)) and was != now
    }


def _without(state: ClusterState, held: frozenset[str]) -> ClusterState:
    """`state`, or a copy without the `held` services (`depends_on.without`, which this pure
    package cannot import)."""
    if not held:
        return state
    trimmed = state.copy()
    for service_id in held:
        trimmed.services.pop(service_id, None)
    return trimmed
