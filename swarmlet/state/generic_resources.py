"""Generic resources, as Docker Swarm has them: what a node advertises, what fits, what a task gets.

Owns: parsing a node's advertisement (dockerd's `node-generic-resources`: `gpu=UUID1` names one
resource of a kind, `ssd=3` counts a discrete kind), the fit check against what the tasks on the
node already hold, the choice of named ids (swarmkit `genericresource.Claim`), and the container
environment (swarmkit `genericresource.EnvFormat`: `DOCKER_RESOURCE_<KIND>=` the ids given for a
named kind, the count reserved for a discrete kind).

Invariants: a kind is either named or discrete on one node; a named id is held by at most one
non-terminal task; a task reserving `kind=N` on a node that names that kind gets exactly N ids of
it, the lowest free ones (deterministic). Must not know: Raft, the scheduler's heaps, Docker.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

from swarmlet.errors import UsageError
from swarmlet.state.model import GenericResource, NamedResource, Resources

ENV_PREFIX = "DOCKER_RESOURCE"


# Bounds on what a node may advertise: it travels in the join request and in every copy of the
# node's record.
MAX_ADVERTISED = 256
MAX_TEXT = 128


def parse_advertised(texts: Iterable[str], flag: str = "--generic-resource") -> Resources:
    """A node's advertisement ("gpu=UUID1", "gpu=UUID2", "ssd=3"; also "gpu=UUID1,UUID2": an
    item without "=" names one more resource of the kind before it) -> `Resources(generic=...,
    named=...)`, sorted by kind. A value of digits counts a discrete kind; anything else names
    one resource."""
    discrete: dict[str, int] = {}
    named: dict[str, list[str]] = {}
    items = 0
    for item in texts:
        kind = ""
        for part in item.split(","):
            items += 1
            if items > MAX_ADVERTISED:
                raise UsageError(f"{flag}: more than {MAX_ADVERTISED} resources")
            key, sep, value = (s.strip() for s in part.partition("="))
            if sep:
                kind = key
            elif kind and key and not key.isdigit() and kind not in discrete:
                value = key  # "gpu=UUID1,UUID2"
            else:
                kind = value = ""
            if not kind or not value or max(len(kind), len(value)) > MAX_TEXT:
                raise UsageError(
                    f"{flag}: invalid {item!r}: expected KIND=COUNT (e.g. ssd=3) or KIND=ID "
                    f"(e.g. gpu=UUID1), each at most {MAX_TEXT} characters"
                )
            _add_advertised(discrete, named, kind, value, flag)
    return Resources(
        generic=tuple(GenericResource(k, n) for k, n in sorted(discrete.items())),
        named=tuple(NamedResource(k, v) for k in sorted(named) for v in named[k]),
    )


def _add_advertised(
    discrete: dict[str, int], named: dict[str, list[str]], kind: str, value: str, flag: str
) -> None:
    if value.isdigit():
        if kind in discrete:
            raise UsageError(f"{flag}: discrete resource {kind} is given twice")
        discrete[kind] = int(value)
    else:
        ids = named.setdefault(kind, [])
        if value in ids:
            raise UsageError(f"{flag}: {kind}={value} is given twice")
        ids.append(value)
    if kind in discrete and kind in named:
        raise UsageError(
            f"{flag}: {kind} is given both as a count and by name: a kind is one or the other"
        )


def advertised_text(resources: Resources) -> list[str]:
    """The advertisement as the user wrote it ("gpu=UUID1", "ssd=3"), for `node inspect`."""
    return [f"{r.kind}={r.value}" for r in resources.generic] + [
        f"{r.kind}={r.value}" for r in resources.named
    ]


def held_discrete(
    reserved: Sequence[GenericResource], assigned: Sequence[NamedResource]
) -> tuple[tuple[str, int], ...]:
    """The counts a task holds of discrete kinds: what it reserves of each kind it was given no
    ids of (on a node that names a kind, the ids are what it holds)."""
    named_kinds = {r.kind for r in assigned}
    return tuple((r.kind, r.value) for r in reserved if r.kind not in named_kinds)


def shortage(
    capacity: Resources,
    reserved: Sequence[GenericResource],
    used_discrete: Mapping[str, int],
    used_named: Counter[NamedResource],
) -> str | None:
    """The first kind of `reserved` the node has too little of, free, or None if all fit."""
    if not reserved:
        return None
    counts = {r.kind: r.value for r in capacity.generic}
    named_total = Counter(r.kind for r in capacity.named)
    held_named = Counter(r.kind for r, n in used_named.items() if n > 0)
    for want in reserved:
        if want.kind in named_total:
            free = named_total[want.kind] - held_named[want.kind]
            free -= used_discrete.get(want.kind, 0)  # holders recorded without ids
        else:
            free = counts.get(want.kind, 0) - used_discrete.get(want.kind, 0)
        if free < want.value:
            return want.kind
    return None


def claim(
    capacity: Resources, reserved: Sequence[GenericResource], used_named: Counter[NamedResource]
) -> tuple[NamedResource, ...]:
    """The ids a task reserving `reserved` gets on a node (which `shortage` found fit): for each
    named kind, the lowest free ids in the node's order."""
    out: list[NamedResource] = []
    for want in reserved:
        free = [r for r in capacity.named if r.kind == want.kind and used_named[r] <= 0]
        out.extend(free[: want.value])
    return tuple(out)


def environment(
    reserved: Sequence[GenericResource], assigned: Sequence[NamedResource]
) -> dict[str, str]:
    """swarmkit's EnvFormat: `DOCKER_RESOURCE_GPU=id1,id2` for the ids given of a named kind,
    `DOCKER_RESOURCE_SSD=2` (the count) for a discrete one."""
    env: dict[str, list[str]] = {}
    for r in assigned:
        env.setdefault(r.kind, []).append(r.value)
    for kind, count in held_discrete(reserved, assigned):
        env.setdefault(kind, []).append(str(count))
    return {f"{ENV_PREFIX}_{kind}".upper(): ",".join(values) for kind, values in env.items()}
