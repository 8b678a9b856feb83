"""The ``x-swarmlet-*`` service extensions: ``x-swarmlet-autoscale`` (an `AutoscalePolicy`) and
``x-swarmlet-rebalance`` (whether the leader may move this service's tasks to even out nodes).

Where they are read: docker's v3 schema forbids ``x-*`` keys inside ``deploy`` (the loader rejects
``deploy.x-swarmlet-autoscale``), so the extensions are read at the service level
(``services.S.x-swarmlet-autoscale``, which docker accepts and ignores) and also inside ``deploy``
should a loader ever pass them through; given in both places is an error.

The autoscale rules are those of `swarmlet.leader.autoscaler.parse_autoscale` (the text form of a
policy): min >= 0, max >= min and >= 1, at least one target, every target above 0; and a global
service cannot scale. Knows nothing of the service's other keys.
"""

from __future__ import annotations

from typing import Any

from swarmlet.errors import UsageError
from swarmlet.stack.convert_context import ConvertContext, Obj
from swarmlet.state.model import AutoscalePolicy, ServiceMode
from swarmlet.state.specparse import parse_size

AUTOSCALE_KEY = "x-swarmlet-autoscale"
REBALANCE_KEY = "x-swarmlet-rebalance"
EXTENSION_KEYS = (AUTOSCALE_KEY, REBALANCE_KEY)
_AUTOSCALE_FIELDS = ("min", "max", "cpu", "memory", "rps")


def _extension(ctx: ConvertContext, svc: Obj, deploy: Obj, key: str, p: str) -> tuple[Any, str]:
    """The extension's value (None if not given) and the key path it was given at."""
    if key in svc and key in deploy:
        raise ctx.error(f"{p}.deploy.{key}", f"{key} is given twice (also at {p}.{key})")
    if key in deploy:
        return deploy[key], f"{p}.deploy.{key}"
    return svc.get(key), f"{p}.{key}"


def rebalance(ctx: ConvertContext, svc: Obj, deploy: Obj, p: str) -> bool:
    value, where = _extension(ctx, svc, deploy, REBALANCE_KEY, p)
    if value is None:
        return True
    if not isinstance(value, bool):
        raise ctx.error(where, f"expected true or false, got {value!r}")
    return value


def autoscale(
    ctx: ConvertContext, svc: Obj, deploy: Obj, p: str, mode: ServiceMode, replicas: int
) -> AutoscalePolicy | None:
    raw, where = _extension(ctx, svc, deploy, AUTOSCALE_KEY, p)
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ctx.error(where, "expected a mapping with min, max and cpu, memory or rps")
    unknown = sorted(set(raw) - set(_AUTOSCALE_FIELDS))
    if unknown:
        raise ctx.error(
            f"{where}.{unknown[0]}",
            f"unknown key {unknown[0]!r}: expected {', '.join(_AUTOSCALE_FIELDS)}",
        )
    if mode is ServiceMode.GLOBAL:
        raise ctx.error(where, "a global service runs one task per node: it cannot scale")
    for key in ("min", "max"):
        value = raw.get(key)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ctx.error(f"{where}.{key}", f"expected a whole number, got {value!r}")
    low, high = int(raw["min"]), int(raw["max"])
    if low < 0:
        raise ctx.error(f"{where}.min", f"must be 0 or more, got {low}")
    if high < low or high < 1:
        raise ctx.error(f"{where}.max", f"must be at least min ({low}) and 1, got {high}")
    cpu = ctx.positive(raw.get("cpu"), f"{where}.cpu")
    rps = ctx.positive(raw.get("rps"), f"{where}.rps")
    memory = 0
    if raw.get("memory") is not None:
        try:
            memory = parse_size(str(raw["memory"]), f"{where}.memory")
        except UsageError as exc:
            raise ctx.error(f"{where}.memory", str(exc)) from exc
        if memory <= 0:
            raise ctx.error(f"{where}.memory", "must be more than 0")
    if not (cpu or rps or memory):
        raise ctx.error(where, "needs a target: cpu (percent), memory or rps")
    if not low <= replicas <= high:
        ctx.warn(
            f"{where}: replicas ({replicas}) is outside min..max ({low}..{high}); "
            "the autoscaler will bring it within"
        )
    return AutoscalePolicy(low, high, cpu, memory, rps)
