"""From `service create` and `service update` flags to a ServiceSpec.

A pure translation: the flags argparse parsed in, a validated spec out (`specparse.validate_spec`),
or a UsageError that names the flag at fault. `create` builds a spec from defaults; `update`
changes only what its flags name, starting from the service's current spec, so an update never
resets a setting the user did not mention. The flags themselves are declared with the commands
(`cli.service`); this module must not talk to the agent.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from swarmlet.errors import UsageError
from swarmlet.leader.autoscaler import parse_autoscale
from swarmlet.state.model import (
    FailureAction,
    Healthcheck,
    Resources,
    RestartCondition,
    ServiceMode,
    ServiceSpec,
    UpdateConfig,
    UpdateOrder,
)
from swarmlet.state.specparse import (
    parse_cpus,
    parse_duration,
    parse_file_ref,
    parse_key_value,
    parse_mount,
    parse_port,
    parse_size,
    validate_spec,
)


def _update_config(args: argparse.Namespace, prefix: str, base: UpdateConfig) -> UpdateConfig:
    def get(name: str) -> Any:
        return getattr(args, f"{prefix}_{name}", None)

    changes: dict[str, Any] = {}
    if get("parallelism") is not None:
        changes["parallelism"] = get("parallelism")
    if get("delay") is not None:
        changes["delay_s"] = parse_duration(get("delay"), f"--{prefix}-delay")
    if get("order") is not None:
        changes["order"] = UpdateOrder(get("order"))
    if get("failure_action") is not None:
        changes["failure_action"] = FailureAction(get("failure_action"))
    if get("monitor") is not None:
        changes["monitor_s"] = parse_duration(get("monitor"), f"--{prefix}-monitor")
    if get("max_failure_ratio") is not None:
        changes["max_failure_ratio"] = get("max_failure_ratio")
    return dataclasses.replace(base, **changes)


def spec_from_args(args: argparse.Namespace, base: ServiceSpec | None = None) -> ServiceSpec:
    """A new spec from `service create` flags, or `base` changed by `service update` flags."""
    if base is None:
        mode = ServiceMode(args.mode)
        if mode is ServiceMode.GLOBAL and args.replicas is not None:
            raise UsageError("--replicas cannot be used with --mode global")
        base = ServiceSpec(
            name=args.name,
            image=args.image,
            command=tuple(args.command) if args.command else None,
            mode=mode,
            replicas=1 if args.replicas is None else args.replicas,
        )
        env = dict(parse_key_value(e, "--env") for e in args.env or ())
        labels = dict(parse_key_value(e, "--label") for e in args.label or ())
        container_labels = dict(
            parse_key_value(e, "--container-label") for e in args.container_label or ()
        )
        ports = tuple(parse_port(p) for p in args.publish or ())
        mounts = tuple(parse_mount(m) for m in args.mount or ())
        base = dataclasses.replace(
            base,
            secrets=tuple(parse_file_ref(t, "--secret") for t in args.secret or ()),
            configs=tuple(parse_file_ref(t, "--config") for t in args.config or ()),
            env=env,
            labels=labels,
            container_labels=container_labels,
            ports=ports,
            mounts=mounts,
        )
    else:
        changes: dict[str, Any] = {}
        if args.image:
            changes["image"] = args.image
        if args.replicas is not None:
            changes["replicas"] = args.replicas
        if args.env_add or args.env_rm:
            env = {k: v for k, v in base.env.items() if k not in set(args.env_rm or ())}
            env.update(parse_key_value(e, "--env-add") for e in args.env_add or ())
            changes["env"] = env
        if args.publish_add or args.publish_rm:
            removed = {int(p.split(":")[0]) if ":" in p else int(p) for p in args.publish_rm or ()}
            kept = [p for p in base.ports if p.published not in removed]
            added = [parse_port(p, "--publish-add") for p in args.publish_add or ()]
            changes["ports"] = (*kept, *added)
        if args.force:
            changes["force_update"] = base.force_update + 1
        base = dataclasses.replace(base, **changes)

    placement = base.placement
    if args.constraint:
        placement = dataclasses.replace(placement, constraints=tuple(args.constraint))
    if args.placement_pref:
        placement = dataclasses.replace(placement, preferences=tuple(args.placement_pref))
    if args.replicas_max_per_node is not None:
        placement = dataclasses.replace(placement, max_replicas_per_node=args.replicas_max_per_node)
    reservations = Resources(
        parse_cpus(args.reserve_cpu, "--reserve-cpu")
        if args.reserve_cpu
        else base.reservations.nano_cpus,
        parse_size(args.reserve_memory, "--reserve-memory")
        if args.reserve_memory
        else base.reservations.memory_bytes,
    )
    limits = Resources(
        parse_cpus(args.limit_cpu, "--limit-cpu") if args.limit_cpu else base.limits.nano_cpus,
        parse_size(args.limit_memory, "--limit-memory")
        if args.limit_memory
        else base.limits.memory_bytes,
    )
    restart = base.restart
    if args.restart_condition:
        restart = dataclasses.replace(restart, condition=RestartCondition(args.restart_condition))
    if args.restart_delay is not None:
        restart = dataclasses.replace(
            restart, delay_s=parse_duration(args.restart_delay, "--restart-delay")
        )
    if args.restart_max_attempts is not None:
        restart = dataclasses.replace(restart, max_attempts=args.restart_max_attempts)
    if args.restart_window is not None:
        restart = dataclasses.replace(
            restart, window_s=parse_duration(args.restart_window, "--restart-window")
        )
    healthcheck = base.healthcheck
    if args.no_healthcheck:
        healthcheck = Healthcheck(test=("NONE",))
    elif args.health_cmd:
        healthcheck = Healthcheck(
            test=("CMD-SHELL", args.health_cmd),
            interval_s=parse_duration(args.health_interval, "--health-interval")
            if args.health_interval
            else 0.0,
            timeout_s=parse_duration(args.health_timeout, "--health-timeout")
            if args.health_timeout
            else 0.0,
            retries=args.health_retries or 0,
            start_period_s=parse_duration(args.health_start_period, "--health-start-period")
            if args.health_start_period
            else 0.0,
        )
    spec = dataclasses.replace(
        base,
        placement=placement,
        reservations=reservations,
        limits=limits,
        restart=restart,
        healthcheck=healthcheck,
        update=_update_config(args, "update", base.update),
        rollback=_update_config(args, "rollback", base.rollback),
        rebalance=base.rebalance if args.rebalance is None else args.rebalance == "true",
        stop_grace_period_s=parse_duration(args.stop_grace_period, "--stop-grace-period")
        if args.stop_grace_period
        else base.stop_grace_period_s,
    )
    if args.autoscale is not None:
        spec = dataclasses.replace(spec, autoscale=parse_autoscale(args.autoscale))
        if spec.autoscale is not None:
            bounded = min(
                max(spec.replicas, spec.autoscale.min_replicas), spec.autoscale.max_replicas
            )
            spec = dataclasses.replace(spec, replicas=bounded)
    validate_spec(spec)
    return spec
