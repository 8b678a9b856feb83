"""A service's ``deploy`` section -> the spec's mode, placement, resources, restart policy and
update/rollback configs, as docker/cli's ``cli/compose/convert/service.go`` converts them.

Owns: ``convertDeployMode``, ``convertResources`` (with ``limits.pids`` and the generic
resources of ``reservations``), ``convertRestartPolicy`` (including the legacy
service-level ``restart``), ``convertUpdateConfig`` and the placement checks. Each function takes
the already-normalised value and the key path it sits at, and reports errors at that path.

Decisions where docker and swarmlet differ:
- A constraint the scheduler cannot parse is an error (the docker daemon rejects it too), and
  so is one it cannot check (``engine.labels.*``, ``node.platform.arch``: swarmlet records
  neither, so it would never match; docker's daemon would match it).
- A placement preference over anything but ``node.labels.*`` is ignored with a warning: swarmkit
  puts all nodes in one group for a descriptor it cannot read, so it changes nothing there either.

Knows nothing of the service's other keys, the stack's named objects or the ``x-swarmlet-*``
extensions.
"""

from __future__ import annotations

from typing import Any

from swarmlet.errors import UsageError
from swarmlet.stack.convert_context import ConvertContext, Obj
from swarmlet.state.constraints import preference_label, validate_constraint
from swarmlet.state.model import (
    FailureAction,
    GenericResource,
    Placement,
    Resources,
    RestartCondition,
    RestartPolicy,
    ServiceMode,
    UpdateConfig,
    UpdateOrder,
)
from swarmlet.state.specparse import parse_cpus


def service_mode(ctx: ConvertContext, deploy: Obj, p: str) -> tuple[ServiceMode, int]:
    """The mode and replica count of `deploy` (at key path `p`). A job's `replicas` is its
    completions; compose has no key for how many run at once, and docker sets MaxConcurrent to
    the replicas, so a stack's job runs every task at once (max_concurrent 0), as docker's."""
    # service.go convertDeployMode
    mode = str(deploy.get("mode") or "replicated")
    replicas = deploy.get("replicas")
    if mode in ("global", "global-job"):
        if replicas is not None:
            raise ctx.error(
                p + ".replicas",
                "replicas can only be used with replicated or replicated-job mode",
            )
        return ServiceMode(mode), 1
    if mode not in ("replicated", "replicated-job"):
        raise ctx.error(p + ".mode", f"unknown mode: {mode}")
    return ServiceMode(mode), 1 if replicas is None else ctx.whole_number(replicas, p + ".replicas")


def placement(ctx: ConvertContext, raw: Obj, p: str) -> Placement:
    constraints = tuple(str(c) for c in raw.get("constraints") or ())
    for i, text in enumerate(constraints):
        try:
            validate_constraint(text)
        except UsageError as exc:
            raise ctx.error(f"{p}.constraints[{i}]", str(exc)) from exc
    preferences = []
    for i, pref in enumerate(raw.get("preferences") or ()):
        spread = str((pref or {}).get("spread") or "")
        if preference_label(spread) is None:
            # swarmkit puts every node in one group for a descriptor it cannot read, so
            # such a preference changes nothing there either; the scheduler spreads over
            # nodes anyway.
            ctx.warn(
                f"{p}.preferences[{i}]: swarmlet spreads over node.labels.<label> only; "
                f"spread over {spread!r} ignored"
            )
            continue
        preferences.append(spread)
    max_per_node = ctx.whole_number(
        raw.get("max_replicas_per_node") or 0, p + ".max_replicas_per_node"
    )
    return Placement(constraints, tuple(preferences), max_per_node)


def resources(ctx: ConvertContext, raw: Obj | None, p: str) -> Resources:
    # service.go convertResources: cpus with opts.ParseCPUs, memory already in bytes.
    if not raw:
        return Resources()
    try:
        nano_cpus = parse_cpus(raw["cpus"], p + ".cpus") if raw.get("cpus") else 0
    except UsageError as exc:
        raise ctx.error(p + ".cpus", str(exc)) from exc
    return Resources(nano_cpus, ctx.whole_number(raw.get("memory") or 0, p + ".memory"))


def pids_limit(ctx: ConvertContext, limits: Obj | None, p: str) -> int:
    """``limits.pids`` (`p` is the limits' path): the task's process limit, 0 for none."""
    return ctx.whole_number((limits or {}).get("pids") or 0, p + ".pids")


def generic_resources(
    ctx: ConvertContext, reservations: Obj | None, p: str
) -> tuple[GenericResource, ...]:
    """``reservations.generic_resources`` (`p` is the reservations' path). service.go
    convertResources: each ``discrete_resource_spec`` is a kind and a count; the schema allows
    no other form."""
    out = []
    where = p + ".generic_resources"
    for i, item in enumerate((reservations or {}).get("generic_resources") or ()):
        spec = (item or {}).get("discrete_resource_spec") or {}
        kind = str(spec.get("kind") or "")
        if not kind:
            raise ctx.error(f"{where}[{i}].discrete_resource_spec.kind", "a kind is required")
        value = spec.get("value")
        at = f"{where}[{i}].discrete_resource_spec.value"
        if isinstance(value, float):  # the schema's "number": 2.0 is 2, 1.5 is no count
            if not value.is_integer():
                raise ctx.error(at, f"expected a whole number, got {value!r}")
            value = int(value)
        count = ctx.whole_number(value, at)
        out.append(GenericResource(kind, count))
    return tuple(out)


def restart_policy(ctx: ConvertContext, restart: Any, policy: Obj | None, p: str) -> RestartPolicy:
    """The policy from ``deploy.restart_policy``, else from the service's legacy ``restart``;
    `p` is the service's key path."""
    # service.go convertRestartPolicy: deploy.restart_policy, else the legacy `restart`.
    if policy is not None:
        where = p + ".deploy.restart_policy"
        condition = str(policy.get("condition") or "any")
        try:
            parsed = RestartCondition(condition)
        except ValueError:
            raise ctx.error(
                where + ".condition",
                f"invalid condition {condition!r}: expected none, on-failure or any",
            ) from None
        delay = policy.get("delay")
        return RestartPolicy(
            condition=parsed,
            delay_s=None if delay is None else ctx.duration_s(delay, where + ".delay"),
            max_attempts=ctx.whole_number(policy.get("max_attempts") or 0, where + ".max_attempts"),
            window_s=ctx.duration_s(policy.get("window"), where + ".window"),
        )
    if not restart:
        return RestartPolicy()
    # opts.ParseRestartPolicy; "no" means swarm's default policy (docker returns nil).
    name, _, count_text = str(restart).partition(":")
    try:
        count = int(count_text) if count_text else 0
    except ValueError:
        count = -1
    if count < 0:
        raise ctx.error(
            p + ".restart", f"invalid restart policy {restart!r}: bad maximum retry count"
        )
    if name == "no":
        return RestartPolicy()
    if name in ("always", "unless-stopped"):
        return RestartPolicy(RestartCondition.ANY, max_attempts=count)
    if name == "on-failure":
        return RestartPolicy(RestartCondition.ON_FAILURE, max_attempts=count)
    raise ctx.error(
        p + ".restart",
        f"invalid restart policy: unknown policy '{name}' (must be one of 'no', 'always', "
        "'on-failure', or 'unless-stopped')",
    )


def update_config(
    ctx: ConvertContext, raw: Obj | None, p: str, *, rollback: bool = False
) -> UpdateConfig:
    """``update_config``, or ``rollback_config`` when `rollback` (which cannot roll back)."""
    # service.go convertUpdateConfig: parallelism defaults to 1; a zero monitor means
    # swarm's default (5 s), which is UpdateConfig's default.
    if raw is None:
        return UpdateConfig()
    action_text = str(raw.get("failure_action") or "pause")
    allowed = ("pause", "continue") if rollback else ("pause", "continue", "rollback")
    if action_text not in allowed:
        raise ctx.error(
            p + ".failure_action",
            f"invalid failure_action {action_text!r}: expected {', '.join(allowed)}",
        )
    ratio = raw.get("max_failure_ratio") or 0.0
    if not isinstance(ratio, int | float) or not 0.0 <= ratio <= 1.0:
        raise ctx.error(p + ".max_failure_ratio", f"must be between 0 and 1, got {ratio}")
    monitor_s = ctx.duration_s(raw.get("monitor"), p + ".monitor")
    parallelism = raw.get("parallelism")
    return UpdateConfig(
        parallelism=1 if parallelism is None else ctx.whole_number(parallelism, p + ".parallelism"),
        delay_s=ctx.duration_s(raw.get("delay"), p + ".delay"),
        order=UpdateOrder(str(raw.get("order") or "stop-first")),  # schema: an enum
        failure_action=FailureAction(action_text),
        monitor_s=monitor_s or UpdateConfig().monitor_s,
        max_failure_ratio=float(ratio),
    )
