"""Properties of `decide` over random policies and sample sequences (hypothesis)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from swarmlet.leader.autoscaler import AutoscaleConfig, AutoscalerState, Sample, decide
from swarmlet.state.model import AutoscalePolicy

MiB = 2**20


@st.composite
def policies(draw: st.DrawFn) -> AutoscalePolicy:
    low = draw(st.integers(0, 6))
    high = draw(st.integers(max(low, 1), 25))
    cpu, memory, rps = draw(st.tuples(st.booleans(), st.booleans(), st.booleans()).filter(any))
    return AutoscalePolicy(
        low,
        high,
        cpu_percent=draw(st.floats(5.0, 200.0)) if cpu else 0.0,
        memory_bytes=draw(st.integers(1, 4096)) * MiB if memory else 0,
        requests_per_s=draw(st.floats(0.5, 500.0)) if rps else 0.0,
    )


configs = st.builds(
    AutoscaleConfig,
    scale_up_window_s=st.sampled_from([0.0, 5.0, 15.0, 30.0]),
    scale_down_window_s=st.sampled_from([0.0, 30.0, 90.0]),
    scale_up_cooldown_s=st.sampled_from([0.0, 15.0, 40.0]),
    scale_down_cooldown_s=st.sampled_from([0.0, 60.0]),
    tolerance=st.sampled_from([0.0, 0.1, 0.3]),
)

# A metric: missing, garbage, or anything from idle to far beyond any target.
metric = st.one_of(
    st.none(),
    st.sampled_from([float("nan"), -1.0, 0.0]),
    st.floats(0.0, 5000.0),
)

# One tick: seconds since the previous one, how many of the spec's replicas run (a fraction), and
# the metrics (memory in MiB).
ticks = st.lists(
    st.tuples(st.floats(0.5, 40.0), st.floats(0.0, 1.5), metric, metric, metric),
    min_size=1,
    max_size=120,
)


@settings(max_examples=200, deadline=None)
@given(policy=policies(), config=configs, start=st.integers(0, 30), sequence=ticks)
def test_replicas_stay_within_bounds_and_changes_respect_the_cool_downs(
    policy: AutoscalePolicy,
    config: AutoscaleConfig,
    start: int,
    sequence: list[tuple[float, float, float | None, float | None, float | None]],
) -> None:
    state = AutoscalerState("svc")
    spec = start
    now = 0.0
    last_change: float | None = None
    for gap_s, running_fraction, cpu, memory_mib, rps in sequence:
        now += gap_s
        running = int(spec * running_fraction)
        memory = None if memory_mib is None else memory_mib * MiB
        sample = Sample(now, running, cpu, memory, rps, spec_replicas=spec)
        decision, state = decide(policy, config, state, sample, now)
        if decision is None:
            continue
        assert decision.from_replicas == spec
        assert decision.to_replicas != spec
        assert decision.reason.startswith(f"scaled svc {spec} -> {decision.to_replicas}: ")
        assert policy.min_replicas <= decision.to_replicas <= policy.max_replicas
        outside = not policy.min_replicas <= spec <= policy.max_replicas
        if last_change is not None and not outside:
            up = decision.to_replicas > spec
            cool_down_s = config.scale_up_cooldown_s if up else config.scale_down_cooldown_s
            assert now - last_change >= cool_down_s
        spec = decision.to_replicas
        last_change = now
    # Once anything was decided, or the spec started inside the bounds, it is inside them.
    if last_change is not None or policy.min_replicas <= start <= policy.max_replicas:
        assert policy.min_replicas <= spec <= policy.max_replicas


@settings(max_examples=100, deadline=None)
@given(policy=policies(), start=st.integers(0, 30), sequence=ticks)
def test_a_spec_outside_the_bounds_is_fixed_on_the_first_sample(
    policy: AutoscalePolicy,
    start: int,
    sequence: list[tuple[float, float, float | None, float | None, float | None]],
) -> None:
    gap_s, fraction, cpu, memory, rps = sequence[0]
    sample = Sample(gap_s, int(start * fraction), cpu, memory, rps, spec_replicas=start)
    decision, _ = decide(policy, AutoscaleConfig(), AutoscalerState("svc"), sample, gap_s)
    inside = policy.min_replicas <= start <= policy.max_replicas
    # Inside the bounds, a first sample never moves anything: no window is covered yet.
    assert (decision is None) is inside
    if decision is not None:
        assert decision.to_replicas in (policy.min_replicas, policy.max_replicas)


@settings(max_examples=100, deadline=None)
@given(
    policy=policies(),
    start=st.integers(1, 25),
    gaps=st.lists(st.floats(0.5, 40.0), min_size=1, max_size=80),
)
def test_all_metrics_missing_never_changes_a_count_inside_the_bounds(
    policy: AutoscalePolicy, start: int, gaps: list[float]
) -> None:
    spec = min(max(start, policy.min_replicas), policy.max_replicas)
    state = AutoscalerState("svc")
    now = 0.0
    for gap_s in gaps:
        now += gap_s
        sample = Sample(now, spec, None, None, None, spec_replicas=spec)
        decision, state = decide(policy, AutoscaleConfig(), state, sample, now)
        assert decision is None
