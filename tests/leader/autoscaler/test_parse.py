"""The `--autoscale` flag: the same rules as the stack loader's `x-swarmlet-autoscale`."""

from __future__ import annotations

import pytest

from swarmlet.errors import UsageError
from swarmlet.leader.autoscaler import parse_autoscale
from swarmlet.state.model import AutoscalePolicy

MiB = 2**20


@pytest.mark.parametrize(
    ("text", "policy"),
    [
        ("min=2,max=10,cpu=70", AutoscalePolicy(2, 10, 70.0)),
        ("min=2,max=10,cpu=70,memory=512M,rps=100", AutoscalePolicy(2, 10, 70.0, 512 * MiB, 100.0)),
        ("min=1,max=4,memory=1g", AutoscalePolicy(1, 4, memory_bytes=1024 * MiB)),
        ("min=0,max=3,rps=2.5", AutoscalePolicy(0, 3, requests_per_s=2.5)),
        (" max=5 , min=1 , cpu=80% ", AutoscalePolicy(1, 5, 80.0)),  # any order, spaces, a %
        ("MIN=1,MAX=1,CPU=150", AutoscalePolicy(1, 1, 150.0)),  # more than one core is fine
        ("none", None),
        (" None ", None),
    ],
)
def test_autoscale_flag_parses_to_a_policy(text: str, policy: AutoscalePolicy | None) -> None:
    assert parse_autoscale(text) == policy


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "--autoscale: empty value: expected e.g. min=2,max=10,cpu=70"),
        ("min=2,max=10", "--autoscale: needs a target: cpu (percent of one core), memory or rps"),
        ("max=10,cpu=70", "--autoscale: min is required"),
        ("min=1,cpu=70", "--autoscale: max is required"),
        ("min=5,max=2,cpu=70", "--autoscale: max must be at least min (5) and 1, got 2"),
        ("min=0,max=0,cpu=70", "--autoscale: max must be at least min (0) and 1, got 0"),
        ("min=-1,max=2,cpu=70", "--autoscale: min must be 0 or more, got -1"),
        ("min=1.5,max=2,cpu=70", "--autoscale: min must be a whole number, got '1.5'"),
        ("min=1,max=2,cpu=0", "--autoscale: cpu must be a number above 0, got '0'"),
        ("min=1,max=2,cpu=lots", "--autoscale: cpu must be a number above 0, got 'lots'"),
        ("min=1,max=2,rps=nan", "--autoscale: rps must be a number above 0, got 'nan'"),
        ("min=1,max=2,rps=-3", "--autoscale: rps must be a number above 0, got '-3'"),
        ("min=1,max=2,memory=lots", "--autoscale memory: invalid size 'lots'"),
        ("min=1,max=2,memory=0", "--autoscale: memory must be more than 0, got '0'"),
        (
            "min=1,max=2,gpu=1",
            "--autoscale: unknown key 'gpu': expected min, max, cpu, memory, rps",
        ),
        ("min=1,min=2,max=3,cpu=5", "--autoscale: min is given twice"),
        ("min=1,max=2,cpu", "--autoscale: invalid item 'cpu': expected e.g. min=2"),
        ("min=1,,max=2,cpu=5", "--autoscale: invalid item '': expected e.g. min=2"),
        ("min=1,max=2,cpu=", "--autoscale: invalid item 'cpu=': expected e.g. min=2"),
    ],
)
def test_bad_autoscale_flag_says_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(UsageError) as excinfo:
        parse_autoscale(text)
    assert str(excinfo.value).startswith(message)
