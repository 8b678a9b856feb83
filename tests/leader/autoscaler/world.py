"""A tiny virtual world for the autoscaler's tests: a load, a service whose replicas follow the
decisions at once, and a leader that samples every `tick_s` virtual seconds."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from swarmlet.leader.autoscaler import AutoscaleConfig, AutoscalerState, Decision, Sample, decide
from swarmlet.state.model import AutoscalePolicy

TICK_S = 5.0

# (virtual time, replicas running) -> the sample the leader would build.
Sampler = Callable[[float, int], Sample]


def cpu_demand(demand: Callable[[float], float | None]) -> Sampler:
    """CPU demand in percent of one core for the whole service (140 = two replicas at 70%),
    shared evenly by the running replicas; None: the metric is missing."""

    def sample(t: float, replicas: int) -> Sample:
        total = demand(t)
        cpu = None if total is None or replicas == 0 else total / replicas
        return Sample(t, replicas, cpu, None, None)

    return sample


@dataclass
class Run:
    decisions: list[tuple[float, Decision]]
    replicas: int
    state: AutoscalerState

    @property
    def changes(self) -> list[tuple[float, int, int]]:
        return [(t, d.from_replicas, d.to_replicas) for t, d in self.decisions]


def simulate(
    policy: AutoscalePolicy,
    sampler: Sampler,
    *,
    replicas: int,
    until_s: float,
    config: AutoscaleConfig | None = None,
    start_s: float = 0.0,
    tick_s: float = TICK_S,
    state: AutoscalerState | None = None,
) -> Run:
    """Feed a sample every tick from `start_s` to `until_s` (inclusive); apply every decision."""
    config = config or AutoscaleConfig()
    state = state or AutoscalerState("web")
    decisions: list[tuple[float, Decision]] = []
    steps = round((until_s - start_s) / tick_s)
    for i in range(steps + 1):
        t = start_s + i * tick_s
        decision, state = decide(policy, config, state, sampler(t, replicas), t)
        if decision is not None:
            assert decision.from_replicas == replicas
            decisions.append((t, decision))
            replicas = decision.to_replicas
    return Run(decisions, replicas, state)
