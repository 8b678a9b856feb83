"""The cluster's replica limit (`state.replica_limit`): what a spec holds, and which writes the
limit refuses. On real agents: tests/integration/test_replica_limit.py."""

from __future__ import annotations

import pytest

from swarmlet.errors import UsageError
from swarmlet.state.model import AutoscalePolicy, Service, ServiceMode, ServiceSpec
from swarmlet.state.replica_limit import MAX_REPLICAS, check_replicas, replicas_held
from swarmlet.state.specparse import validate_spec


def spec(replicas: int = 1, **kw: object) -> ServiceSpec:
    return ServiceSpec("web", "nginx", replicas=replicas, **kw)  # type: ignore[arg-type]


def autoscaled(low: int, high: int, replicas: int = 0) -> ServiceSpec:
    return spec(replicas, autoscale=AutoscalePolicy(low, high, cpu_percent=70.0))


@pytest.mark.parametrize(
    ("held", "expected"),
    [
        (spec(5), 5),
        (spec(5, mode=ServiceMode.REPLICATED_JOB), 5),  # its completions stay as history
        (spec(1, mode=ServiceMode.GLOBAL), 0),  # one a node: the nodes bound it
        (spec(1, mode=ServiceMode.GLOBAL_JOB), 0),
        (autoscaled(0, 40), 40),  # the autoscaler may reach its maximum unchecked
        (autoscaled(0, 40, replicas=50), 50),
    ],
)
def test_what_a_spec_holds(held: ServiceSpec, expected: int) -> None:
    assert replicas_held(held) == expected


def _services(*replicas: int) -> list[Service]:
    return [Service(f"s{i}", spec(n)) for i, n in enumerate(replicas)]


def test_a_write_within_the_limit_passes() -> None:
    check_replicas(_services(MAX_REPLICAS - 10), {"new": spec(10)})
    check_replicas(_services(MAX_REPLICAS - 10, 5), {"s1": spec(10)})  # to the limit exactly


@pytest.mark.parametrize(
    "changes",
    [
        {"new": spec(11)},  # a service created
        {"s1": spec(16)},  # one scaled up
        {"s1": autoscaled(0, 16)},  # an autoscaling policy
        {"new": spec(MAX_REPLICAS + 1)},
    ],
)
def test_a_write_past_the_limit_is_refused_with_the_count(
    changes: dict[str, ServiceSpec | None],
) -> None:
    with pytest.raises(
        UsageError, match=r"would want [\d,]+ replicas in all \(now 99,995\).*at most 100,000"
    ):
        check_replicas(_services(MAX_REPLICAS - 10, 5), changes)


def test_a_cluster_over_the_limit_may_shrink_but_not_grow() -> None:
    # A state a release before the limit wrote.
    over = _services(MAX_REPLICAS, 50)
    check_replicas(over, {"s1": spec(20)})
    check_replicas(over, {"s1": None})  # removed
    check_replicas(over, {"s1": spec(20), "new": spec(30)})  # a stack: 20 + 30 = 50
    with pytest.raises(UsageError):
        check_replicas(over, {"new": spec(1)})


def test_one_spec_past_the_limit_is_refused_before_any_state_is_read() -> None:
    validate_spec(spec(MAX_REPLICAS))
    with pytest.raises(UsageError, match=r"--replicas: must be at most 100,000 .* got 100,001"):
        validate_spec(spec(MAX_REPLICAS + 1))
    with pytest.raises(UsageError, match="--autoscale: max must be at most 100,000"):
        validate_spec(autoscaled(1, MAX_REPLICAS + 1))
    with pytest.raises(UsageError, match="--replicas: must be at most"):  # not the policy's fault
        validate_spec(autoscaled(1, 10, replicas=MAX_REPLICAS + 1))
