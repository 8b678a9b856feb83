"""The ``x-swarmlet-*`` service extensions: ``x-swarmlet-autoscale`` (an `AutoscalePolicy`),
``x-swarmlet-rebalance`` (whether the leader may move this service's tasks to even out nodes)
and ``x-swarmlet-proxy-protocol`` (which published ports the mesh opens with a PROXY protocol
header, and its version: ``{"8080": v2}``; compose's ports have no key for it).

Where they are read: docker's v3 schema forbids ``x-*`` keys inside ``deploy`` (the loader rejects
``deploy.x-swarmlet-autoscale``), so the extensions are read at the service level
(``services.S.x-swarmlet-autoscale``, which docker accepts and ignores) and also inside ``deploy``
should a loader ever pass them through; given in both places is an error.

The autoscale rules are those of `swarmlet.leader.autoscaler.parse_autoscale` (the text form of a
policy): min >= 0, max >= min and >= 1, at least one target, every target above 0; and a global
service cannot scale. The proxy-protocol rules are `swarmlet.state.specparse`'s, as for
``--publish ...,proxy-protocol=v2``: v1 or v2, on a published TCP port of mode ingress. Knows
nothing of the service's other keys but its converted ports.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from swarmlet.errors import UsageError
from swarmlet.stack.convert_context import ConvertContext, Obj
from swarmlet.state.model import AutoscalePolicy, PortConfig, ServiceMode
from swarmlet.state.specparse import parse_size, proxy_protocol_refusal

AUTOSCALE_KEY = "x-swarmlet-autoscale"
REBALANCE_KEY = "x-swarmlet-rebalance"
PROXY_PROTOCOL_KEY = "x-swarmlet-proxy-protocol"
EXTENSION_KEYS = (AUTOSCALE_KEY, REBALANCE_KEY, PROXY_PROTOCOL_KEY)
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


def proxy_protocol(
    ctx: ConvertContext, svc: Obj, deploy: Obj, p: str, ports: tuple[PortConfig, ...]
) -> tuple[PortConfig, ...]:
    """`ports` (the service's, converted), with the PROXY protocol version the extension gives
    each published TCP port it names (by its number as text: the loader, as docker's, takes
    only text keys)."""
    raw, where = _extension(ctx, svc, deploy, PROXY_PROTOCOL_KEY, p)
    if raw is None:
        return ports
    if not isinstance(raw, dict):
        raise ctx.error(where, 'expected a mapping of published port to v1 or v2, e.g. {"80": v2}')
    versions: dict[int, str] = {}
    for key, version in raw.items():
        at = f"{where}.{key}"
        text = str(key)
        if isinstance(key, bool) or not text.isdigit():
            raise ctx.error(at, f"expected a published port number, got {key!r}")
        published = int(text)
        if published in versions:
            raise ctx.error(at, f"port {published} is given twice")
        matching = [q for q in ports if q.published == published]
        if not matching:
            given = ", ".join(str(q.published) for q in ports) or "none"
            raise ctx.error(at, f"port {published} is not published by this service ({given})")
        # The TCP port if the number is published for both protocols: the one a header fits.
        port = next((q for q in matching if q.protocol == "tcp"), matching[0])
        refusal = proxy_protocol_refusal(dataclasses.replace(port, proxy_protocol=str(version)))
        if refusal:
            raise ctx.error(at, refusal)
        versions[published] = str(version)
    return tuple(
        dataclasses.replace(q, proxy_protocol=versions[q.published])
        if q.published in versions and q.protocol == "tcp"
        else q
        for q in ports
    )
