"""cli.service_flags: `service create` builds a spec from defaults; `service update` changes only
what its flags name."""

from __future__ import annotations

import dataclasses

import pytest

from swarmlet.cli.main import build_parser
from swarmlet.cli.service_flags import spec_from_args
from swarmlet.errors import UsageError
from swarmlet.state.model import (
    PortConfig,
    RestartCondition,
    ServiceMode,
    ServiceSpec,
    UpdateOrder,
)


def create(*flags: str) -> ServiceSpec:
    args = build_parser().parse_args(["service", "create", "--name", "web", *flags, "nginx:1"])
    return spec_from_args(args)


def update(base: ServiceSpec, *flags: str) -> ServiceSpec:
    args = build_parser().parse_args(["service", "update", *flags, base.name])
    return spec_from_args(args, base=base)


def test_create_starts_from_one_replica() -> None:
    spec = create()
    assert (spec.name, spec.image, spec.mode, spec.replicas) == (
        "web",
        "nginx:1",
        ServiceMode.REPLICATED,
        1,
    )
    assert spec.command is None


def test_create_reads_ports_env_and_the_command() -> None:
    args = build_parser().parse_args(
        ["service", "create", "--name", "web", "-p", "8080:80", "-e", "A=1", "nginx:1", "sh", "-c"]
    )
    spec = spec_from_args(args)
    assert spec.ports == (PortConfig(8080, 80),)
    assert dict(spec.env) == {"A": "1"}
    assert spec.command == ("sh", "-c")


def test_global_mode_takes_no_replica_count() -> None:
    with pytest.raises(UsageError, match="--replicas cannot be used with --mode global"):
        create("--mode", "global", "--replicas", "2")


def test_a_bad_port_names_its_flag() -> None:
    with pytest.raises(UsageError, match="--publish"):
        create("-p", "nope")


def test_update_keeps_what_its_flags_do_not_name() -> None:
    base = create(
        "--replicas",
        "3",
        "-e",
        "A=1",
        "--restart-condition",
        "on-failure",
        "--update-order",
        "start-first",
    )
    spec = update(base, "--image", "nginx:2")
    assert spec == dataclasses.replace(base, image="nginx:2")
    assert spec.restart.condition is RestartCondition.ON_FAILURE
    assert spec.update.order is UpdateOrder.START_FIRST


def test_update_adds_and_removes_env_and_ports() -> None:
    base = create("-e", "A=1", "-e", "B=2", "-p", "8080:80")
    spec = update(base, "--env-rm", "A", "--env-add", "C=3", "--publish-rm", "8080")
    assert dict(spec.env) == {"B": "2", "C": "3"}
    assert spec.ports == ()


def test_force_bumps_the_counter_and_nothing_else() -> None:
    base = create()
    assert update(base, "--force") == dataclasses.replace(base, force_update=1)


def test_autoscale_bounds_the_replica_count() -> None:
    spec = create("--replicas", "1", "--autoscale", "min=2,max=4,cpu=70")
    assert spec.autoscale is not None
    assert spec.replicas == 2
