"""How many replicas the cluster may be asked to run, all services together.

Every task is a record in the replicated state, in every manager's memory and in every snapshot.
Nothing bounded the count: `service scale web=3000000` (a typo away from 300) had the leader
creating task records for minutes, past 2 GB and climbing, until it ran out of memory; the next
leader would then do the same. So a write that sets replicas is refused, with the count, once
the services would together want more than MAX_REPLICAS: the size the benchmarks run
(`bench.big_service`: one service of 100,000 replicas on three managers).

What a service holds: a replicated service or job, its `replicas` (a job's completions stay as
history); an autoscaled one, its policy's maximum, which the autoscaler may reach without
another check; a global service or job, nothing here (one task a node: the nodes bound it).

The check runs where the write is made (`api.services`, `api.stacks`), against the state that
manager holds; two writes at once on different managers may together pass it, by at most what
each one adds. The orchestrator also never plans more than MAX_REPLICAS slots for one service
(`leader.orchestrator`), whatever the state says (a release before this limit wrote it).

Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from swarmlet.errors import UsageError
from swarmlet.state.model import Service, ServiceSpec

MAX_REPLICAS = 100_000


def replicas_held(spec: ServiceSpec) -> int:
    """What `spec` counts towards MAX_REPLICAS (module docstring)."""
    if spec.mode.is_global:
        return 0
    if spec.autoscale is not None:
        return max(spec.replicas, spec.autoscale.max_replicas)
    return spec.replicas


def check_replicas(services: Iterable[Service], changes: Mapping[str, ServiceSpec | None]) -> None:
    """Refuse (UsageError) a write that makes `changes` (service id -> its new spec; None for
    a service it removes; an id not in `services` for one it creates) if the cluster would want
    more than MAX_REPLICAS replicas after it, and more than before it (a cluster over the limit
    may still shrink)."""
    before = {s.id: replicas_held(s.spec) for s in services}
    after = dict(before)
    for service_id, spec in changes.items():
        after[service_id] = replicas_held(spec) if spec is not None else 0
    total, previous = sum(after.values()), sum(before.values())
    if total > MAX_REPLICAS and total > previous:
        raise UsageError(
            f"the services would want {total:,} replicas in all (now {previous:,}); a cluster "
            f"runs at most {MAX_REPLICAS:,} (replicated services and jobs together, an "
            "autoscaled one at its maximum)"
        )
