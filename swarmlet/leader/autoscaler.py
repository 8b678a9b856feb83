"""The autoscaler's decision logic: from load samples to a replica count (pure).

Owns: turning one service's observed load (`Sample`) into a recommended replica count per sample,
stabilising those recommendations over time windows, cool-downs, step limits and the policy's
bounds, and parsing the CLI's `--autoscale` flag. Must not know: the clock, Raft, gossip, the
network, Docker. The leader's driver builds a `Sample` per autoscaled service on its own tick
(every ~5 s is expected), calls `decide`, keeps the returned state and commits the `Decision` as a
replica change of the service. Time comes in as numbers (`at_s`, `now`).

The algorithm is Kubernetes' HorizontalPodAutoscaler's (kubernetes.io "Horizontal Pod Autoscaling",
"Algorithm details"; pkg/controller/podautoscaler/horizontal.go and replica_calculator.go):

Targets are per replica (HPA's `AverageValue`/`Utilization`): `cpu_percent` of one core,
`memory_bytes`, and `requests_per_s` (the service's rate through all proxies, shared by its running
replicas). The recommendation is:

1. Per target and sample: `ratio = metric / target` (per replica), and inside the tolerance band
   (`|ratio - 1| <= tolerance`, HPA's 0.1) the target recommends the current count. Otherwise
   `desired = ceil(running * ratio)` (for the request rate that is `ceil(rps / target)`). As in
   HPA's replica calculator, a ratio above 1 never recommends fewer replicas than the spec has
   (new replicas may still be starting: the direction must not flip) and a ratio below 1 never
   more.
2. Several targets: the largest desired count wins (HPA), and the reason names that metric.
3. Missing metrics (None, NaN, negative: garbage from a peer is not a number to act on): a target
   whose metric is missing is ignored for scaling up, and a sample with any target missing never
   recommends fewer replicas than the spec has, so missing data never scales down (HPA: "if a
   scale down is suggested by the metrics which can be fetched, scaling is skipped").
4. Stabilisation: every sample's recommendation is kept. Scaling up uses the *lowest*
   recommendation over the up-window, scaling down the *highest* over the down-window (HPA's
   behavior.scaleUp/scaleDown.stabilizationWindowSeconds). A window must be covered by evidence:
   it counts the recommendation in force at its start (the last one taken at or before
   `now - window`) and every later one; with no recommendation that old (the leader just started
   or took over), there is no move in that direction yet. So "scale up" means "every sample for
   the last `scale_up_window_s` asked for more": a spike shorter than the window does nothing.
5. Cool-downs after any change (including bringing the count inside the bounds): no scale-up
   before `scale_up_cooldown_s`, no scale-down before `scale_down_cooldown_s`.
6. Step limits (HPA's default policies, selectPolicy Max): up by at most
   `max(current * max_up_factor, current + max_up_min_step)`, down by at most
   `max(floor(current * max_down_fraction), max_down_min_step)` per decision.
7. Bounds: the result is always within [min_replicas, max_replicas]. A spec count outside them
   (the policy was just changed) is brought inside at once, ignoring windows and cool-downs.

Decisions, and why:
- `Sample.spec_replicas` (an addition): the count the service's spec asks for now, which is what a
  decision changes (`from_replicas`). `Sample.replicas` is the number of running replicas the
  per-replica means were taken over; the two differ while replicas start or stop (HPA too computes
  with the pods that have metrics and compares with the scale's spec count). None: the same.
- Zero running replicas: there is no per-replica CPU or memory (missing), so such a sample never
  scales down. A request-rate target then recommends `max(min_replicas, ceil(rps / target))`, and
  at least 1 when any request arrives, so a service scaled to zero (min 0) wakes up on traffic;
  it still needs the up-window of sustained traffic (a stray connection does not wake it).
- The state is per service and leader-local: a new leader starts empty, so it waits a full window
  before acting (conservative: it has no evidence yet). To carry the cool-down over, the driver
  may start with `AutoscalerState(name, last_change_at_s=service.updated_at)`, provided `now` is
  on the same (wall) clock.
- Reasons quote the recommendation that bound the move (the lowest over the up-window, the highest
  over the down-window), so the numbers shown are the weakest evidence that still justified it.
- Samples whose `at_s` is not after the last one kept (duplicates, reordering) are ignored and
  leave the state unchanged. The driver should pass None for a metric whose reports are stale,
  rather than skip the tick: a gap in samples extends the recommendation before it.
- A policy with `max_replicas < min_replicas` (rejected by `parse_autoscale` and the stack loader,
  so only from a bug elsewhere) is read as max = min rather than crashing the leader's loop.
- Memory targets behave as in HPA: memory per replica rarely falls when replicas are added, so a
  memory target tends to ratchet up; CPU or request rate are the better targets.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace

from swarmlet.errors import UsageError
from swarmlet.state.model import AutoscalePolicy
from swarmlet.state.specparse import parse_size

# Float slack: ceil() of a product that should be whole (3 * 70 / 70) must not round up, and a
# ratio on the tolerance's edge (77 / 70) is inside the band.
_CEIL_EPSILON = 1e-9


@dataclass(frozen=True)
class AutoscaleConfig:
    """Stabilisation windows, cool-downs, tolerance and step limits. Seconds are virtual or wall
    seconds alike: whatever `Sample.at_s` and `now` are in.

    Defaults answer a real step load in about 20-30 s and keep a noisy signal from flapping:

    - Step load: the first sample above target arrives within one tick (~5 s) plus the agents'
      measuring and gossip delay (a few s); the scale-up follows `scale_up_window_s` (15 s) later,
      so ~20-25 s after the load began. HPA defaults to 0 s for scale-up, but it reads metrics
      averaged over its 15 s sync period and metrics-server's window; our samples are rawer, so
      the window does that smoothing and a one-off spike (a GC pause, a cron burst) is ignored.
    - Scale-down: `scale_down_window_s` 90 s (HPA: 300 s). Under-provisioning hurts users,
      over-provisioning only costs resources, so down is slow; 90 s of every sample asking for
      fewer replicas (18 samples at 5 s) makes a scale-down by noise very unlikely, yet a load
      that ended frees its replicas within minutes rather than HPA's 5+.
    - Cool-downs: 15 s before the next scale-up (HPA's default policy period: new replicas need a
      moment to start and take load before the metric reflects them), 60 s before a scale-down
      after any change, so a scale-up is never undone by the first quiet minute.
    - Tolerance 0.1 (HPA's `--horizontal-pod-autoscaler-tolerance`): ±10% around the target is
      "on target", which with ceil() gives hysteresis: at n+1 replicas a load of just over n
      replicas' worth still recommends n+1, and going back to n needs ratio <= n/(n+1).
    - Steps: HPA's default scale-up policy is "100% or 4 pods per 15 s, whichever is more": a
      small service can reach 5 replicas in one step, a large one doubles. Down: HPA allows 100%
      per 15 s after its 5 minute window; our window is shorter, so each step is smaller (a
      quarter, at least one replica) and steps are a cool-down apart: 10 -> 3 takes ~5 minutes.
    """

    scale_up_window_s: float = 15.0  # min recommendation over this window scales up
    scale_down_window_s: float = 90.0  # max recommendation over this window scales down
    scale_up_cooldown_s: float = 15.0  # since the last change, before a scale-up
    scale_down_cooldown_s: float = 60.0  # since the last change, before a scale-down
    tolerance: float = 0.1  # |metric / target - 1| <= tolerance: on target
    max_up_factor: float = 2.0  # up to current * factor per decision ...
    max_up_min_step: int = 4  # ... or current + this, whichever is more
    max_down_fraction: float = 0.25  # down by floor(current * fraction) per decision ...
    max_down_min_step: int = 1  # ... or this, whichever is more

    def __post_init__(self) -> None:
        for name in (
            "scale_up_window_s",
            "scale_down_window_s",
            "scale_up_cooldown_s",
            "scale_down_cooldown_s",
            "tolerance",
            "max_down_fraction",
        ):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"AutoscaleConfig.{name} must be a finite number >= 0")
        if not self.max_up_factor >= 1.0 or self.max_up_min_step < 1 or self.max_down_min_step < 1:
            raise ValueError("AutoscaleConfig: steps must allow at least one replica per decision")


@dataclass(frozen=True)
class Sample:
    """One service's load at `at_s`, as the leader sees it in the nodes' load reports."""

    at_s: float
    replicas: int  # running replicas the means are taken over
    cpu_percent: float | None  # mean per running replica, percent of one core; None: missing
    memory_bytes: float | None  # mean per running replica; None: missing
    requests_per_s: float | None  # the whole service (all proxies); None: missing
    spec_replicas: int | None = None  # what the spec asks for now; None: `replicas`


@dataclass(frozen=True)
class Recommendation:
    """The replica count one sample asks for, and why (names the deciding metric)."""

    at_s: float
    replicas: int
    why: str


@dataclass(frozen=True)
class Decision:
    """Set the service's replicas from `from_replicas` to `to_replicas` (commit it through Raft)."""

    service_name: str
    from_replicas: int
    to_replicas: int
    reason: str  # e.g. "scaled web 3 -> 5: cpu 92% > 70% target"


@dataclass(frozen=True)
class AutoscalerState:
    """One service's recent recommendations (oldest first) and the time of its last change."""

    service_name: str
    recommendations: tuple[Recommendation, ...] = ()
    last_change_at_s: float | None = None


def decide(
    policy: AutoscalePolicy,
    config: AutoscaleConfig,
    state: AutoscalerState,
    sample: Sample,
    now: float,
) -> tuple[Decision | None, AutoscalerState]:
    """The change to make now, if any, and the state to pass to the next call."""
    latest = state.recommendations[-1].at_s if state.recommendations else -math.inf
    if not sample.at_s > latest:
        return None, state  # duplicate or out of order: illegal input leaves the state unchanged
    low = max(policy.min_replicas, 0)
    high = max(policy.max_replicas, low)
    current = sample.replicas if sample.spec_replicas is None else sample.spec_replicas
    rec = recommend(policy, config, sample, current)
    keep_s = max(config.scale_up_window_s, config.scale_down_window_s)
    state = replace(state, recommendations=_prune((*state.recommendations, rec), now - keep_s))
    name = state.service_name

    def change(to: int, why: str) -> tuple[Decision, AutoscalerState]:
        decision = Decision(name, current, to, f"scaled {name} {current} -> {to}: {why}")
        return decision, replace(state, last_change_at_s=now)

    # Bounds first, at once: a policy change must take effect without waiting for evidence.
    if current < low:
        return change(low, f"below min {low}")
    if current > high:
        return change(high, f"above max {high}")

    since_change_s = math.inf if state.last_change_at_s is None else now - state.last_change_at_s
    if since_change_s >= config.scale_up_cooldown_s:
        window = _window(state.recommendations, now, config.scale_up_window_s)
        if window is not None:
            binding = min(window, key=lambda r: r.replicas)  # HPA: min over the up-window
            if binding.replicas > current < high:
                step = max(
                    math.ceil(current * config.max_up_factor), current + config.max_up_min_step
                )
                to = min(binding.replicas, high, step)
                limit = f"max {high}" if to == high else f"at most +{to - current} per step"
                return change(to, binding.why + _capped(binding.replicas, to, limit))
    if since_change_s >= config.scale_down_cooldown_s:
        window = _window(state.recommendations, now, config.scale_down_window_s)
        if window is not None:
            binding = max(window, key=lambda r: r.replicas)  # HPA: max over the down-window
            if binding.replicas < current > low:
                step_down = max(
                    math.floor(current * config.max_down_fraction), config.max_down_min_step
                )
                floor_ = current - step_down
                to = max(binding.replicas, low, floor_)
                limit = f"min {low}" if to == low else f"at most -{step_down} per step"
                return change(to, binding.why + _capped(binding.replicas, to, limit))
    return None, state


def recommend(
    policy: AutoscalePolicy, config: AutoscaleConfig, sample: Sample, current: int
) -> Recommendation:
    """What one sample alone asks for (steps 1-3 of the module docstring); not yet bounded."""
    running = max(sample.replicas, 0)
    per_replica = running > 0  # zero running: no per-replica CPU or memory exists
    targets: list[tuple[str, float | None, float]] = []
    if policy.cpu_percent > 0:
        targets.append(
            ("cpu", _metric(sample.cpu_percent) if per_replica else None, policy.cpu_percent)
        )
    if policy.memory_bytes > 0:
        targets.append(
            ("memory", _metric(sample.memory_bytes) if per_replica else None, policy.memory_bytes)
        )
    if policy.requests_per_s > 0:
        targets.append(("rps", _metric(sample.requests_per_s), policy.requests_per_s))

    present: list[tuple[int, str]] = []
    holds: list[str] = []  # why this sample must not scale down
    for metric, value, target in targets:
        if value is None:
            holds.append(f"{metric} missing")
        elif running == 0:  # only rps gets here: see "Zero running replicas" above
            wanted = max(
                policy.min_replicas,
                math.ceil(value / target - _CEIL_EPSILON),
                1 if value > 0 else 0,
            )
            why = f"rps {_fmt(metric, value)} with no running replica"
            present.append((max(wanted, current), why))
            holds.append("no running replica")  # nothing measured per replica: never scale down
        else:
            per = value / running if metric == "rps" else value
            ratio = per / target
            shown = f"{metric} {_fmt(metric, per)}" + (" per replica" if metric == "rps" else "")
            if abs(ratio - 1.0) <= config.tolerance + _CEIL_EPSILON:  # 77 / 70 is 1.1000...01
                present.append((current, f"{shown} near {_fmt(metric, target)} target"))
            elif ratio > 1.0:
                wanted = math.ceil(running * ratio - _CEIL_EPSILON)
                present.append((max(wanted, current), f"{shown} > {_fmt(metric, target)} target"))
            else:
                wanted = math.ceil(running * ratio - _CEIL_EPSILON)
                present.append((min(wanted, current), f"{shown} < {_fmt(metric, target)} target"))

    if present:
        replicas, why = max(present, key=lambda p: p[0])  # the first of equals: cpu, memory, rps
    else:
        replicas, why = current, "no target"
    if holds and replicas <= current:
        replicas, why = current, ", ".join(holds)
    return Recommendation(sample.at_s, replicas, why)


def _metric(value: float | None) -> float | None:
    if value is None or not math.isfinite(value) or value < 0:
        return None
    return float(value)


def _window(
    recommendations: tuple[Recommendation, ...], now: float, window_s: float
) -> tuple[Recommendation, ...] | None:
    """The recommendation in force at `now - window_s` and all later ones; None if not covered."""
    start = now - window_s
    in_force = [i for i, r in enumerate(recommendations) if r.at_s <= start]
    if not in_force:
        return None
    return tuple(r for r in recommendations[in_force[-1] :] if r.at_s <= now)


def _prune(recommendations: tuple[Recommendation, ...], start: float) -> tuple[Recommendation, ...]:
    """Drop what no window will need: keep the one in force at `start` and all later ones."""
    first = 0
    for i, r in enumerate(recommendations):
        if r.at_s <= start:
            first = i
    return recommendations[first:]


def _capped(wanted: int, to: int, limit: str) -> str:
    return "" if to == wanted else f" (wants {wanted}; {limit})"


def _fmt(metric: str, value: float) -> str:
    if metric == "cpu":
        return f"{value:.0f}%"
    if metric == "rps":
        return f"{value:.3g}/s" if value < 10 else f"{value:.0f}/s"
    return _fmt_bytes(value)


def _fmt_bytes(value: float) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if value >= size:
            shown = value / size
            return f"{shown:.0f}{unit}" if shown >= 10 else f"{shown:.1f}{unit}"
    return f"{value:.0f}B"


# --- the `--autoscale` flag --------------------------------------------------------------------

FLAG = "--autoscale"
_KEYS = ("min", "max", "cpu", "memory", "rps")
_ITEM_RE = re.compile(r"^\s*([a-z]+)\s*=\s*(\S.*?)\s*$", re.IGNORECASE)


def parse_autoscale(text: str) -> AutoscalePolicy | None:
    """`min=2,max=10,cpu=70[,memory=512M][,rps=100]` -> a policy; "none" -> None.

    The same rules as the stack loader's `x-swarmlet-autoscale` (swarmlet.stack.extensions):
    min >= 0, max >= min and >= 1, at least one target, every target above 0. cpu is percent of
    one core per replica (a trailing % is accepted), memory bytes per replica with docker's units,
    rps requests per second per replica (the service's rate through all proxies over its running
    replicas).
    """
    text = str(text).strip()
    if text.lower() == "none":
        return None
    expected = "expected e.g. min=2,max=10,cpu=70[,memory=512M][,rps=100], or none"
    if not text:
        raise UsageError(f"{FLAG}: empty value: {expected}")
    values: dict[str, str] = {}
    for item in text.split(","):
        match = _ITEM_RE.match(item)
        if match is None:
            raise UsageError(f"{FLAG}: invalid item {item.strip()!r}: {expected}")
        key, value = match.group(1).lower(), match.group(2)
        if key not in _KEYS:
            raise UsageError(f"{FLAG}: unknown key {key!r}: expected {', '.join(_KEYS)}")
        if key in values:
            raise UsageError(f"{FLAG}: {key} is given twice")
        values[key] = value
    for key in ("min", "max"):
        if key not in values:
            raise UsageError(f"{FLAG}: {key} is required: {expected}")
    low = _whole(values["min"], "min")
    high = _whole(values["max"], "max")
    if low < 0:
        raise UsageError(f"{FLAG}: min must be 0 or more, got {low}")
    if high < low or high < 1:
        raise UsageError(f"{FLAG}: max must be at least min ({low}) and 1, got {high}")
    cpu = _positive(values["cpu"].removesuffix("%"), "cpu") if "cpu" in values else 0.0
    rps = _positive(values["rps"], "rps") if "rps" in values else 0.0
    memory = 0
    if "memory" in values:
        memory = parse_size(values["memory"], f"{FLAG} memory")
        if memory <= 0:
            raise UsageError(f"{FLAG}: memory must be more than 0, got {values['memory']!r}")
    if not (cpu or rps or memory):
        raise UsageError(f"{FLAG}: needs a target: cpu (percent of one core), memory or rps")
    return AutoscalePolicy(low, high, cpu, memory, rps)


def _whole(text: str, key: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise UsageError(f"{FLAG}: {key} must be a whole number, got {text!r}") from None


def _positive(text: str, key: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise UsageError(f"{FLAG}: {key} must be a number above 0, got {text!r}")
    return value
