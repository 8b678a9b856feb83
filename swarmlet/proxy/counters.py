"""The routing mesh's counters: live per port in each process (`PortStats`), their snapshot on
the wire (`PortCounters`, what a worker process reports to the agent), and how the workers'
figures add up with the agent's own.

A worker reports its cumulative counters since it started. When a worker dies, its last report
is kept as `retired` (less `active`: its connections died with it), so the totals stay
monotonic while a replacement starts from zero. Pure: no I/O.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from swarmlet.state.observed import Endpoint

PortKey = tuple[str, int, str]  # Route.key: (virtual address or "", port, protocol)


@dataclass
class PortStats:
    connections: int = 0
    active: int = 0
    bytes_in: int = 0  # client -> replica
    bytes_out: int = 0  # replica -> client
    errors: int = 0
    retries: int = 0  # connections replayed to another replica after an empty close
    refused: int = 0  # clients turned away: the process's connection limit was reached
    idle_closed: int = 0  # connections closed after the idle timeout (`proxy.tcp`)
    per_endpoint: Counter[Endpoint] = field(default_factory=Counter)


@dataclass(frozen=True, slots=True)
class PortCounters:
    """One port's counters in one process (or summed over several), as they travel."""

    host: str
    published: int
    protocol: str
    connections: int = 0
    active: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    errors: int = 0
    retries: int = 0
    refused: int = 0
    endpoints: dict[str, int] = field(default_factory=dict)  # "HOST:PORT" -> connections
    idle_closed: int = 0

    @property
    def key(self) -> PortKey:
        return (self.host, self.published, self.protocol)


def snapshot(key: PortKey, stats: PortStats) -> PortCounters:
    host, published, protocol = key
    return PortCounters(
        host,
        published,
        protocol,
        connections=stats.connections,
        active=stats.active,
        bytes_in=stats.bytes_in,
        bytes_out=stats.bytes_out,
        errors=stats.errors,
        retries=stats.retries,
        refused=stats.refused,
        idle_closed=stats.idle_closed,
        endpoints={f"{e.host}:{e.port}": n for e, n in stats.per_endpoint.items()},
    )


def add(a: PortCounters, b: PortCounters) -> PortCounters:
    """The counters of one port summed over two processes."""
    if a.key != b.key:
        raise ValueError(f"cannot add the counters of {a.key} and {b.key}")
    endpoints = Counter(a.endpoints)
    endpoints.update(b.endpoints)
    return replace(
        a,
        connections=a.connections + b.connections,
        active=a.active + b.active,
        bytes_in=a.bytes_in + b.bytes_in,
        bytes_out=a.bytes_out + b.bytes_out,
        errors=a.errors + b.errors,
        retries=a.retries + b.retries,
        refused=a.refused + b.refused,
        idle_closed=a.idle_closed + b.idle_closed,
        endpoints=dict(endpoints),
    )


def total(
    own: Iterable[PortCounters], others: Iterable[Mapping[PortKey, PortCounters]]
) -> list[PortCounters]:
    """Each of `own` ports (the ones the agent holds) plus what `others` count for it; a port
    only others count is gone already and left out."""
    sums = {c.key: c for c in own}
    for counters in others:
        for key, c in counters.items():
            if key in sums:
                sums[key] = add(sums[key], c)
    return list(sums.values())


def retire(
    retired: Mapping[PortKey, PortCounters], last: Mapping[PortKey, PortCounters]
) -> dict[PortKey, PortCounters]:
    """`retired` plus the last report of a worker that died: all but its active connections."""
    out = dict(retired)
    for key, c in last.items():
        gone = replace(c, active=0)
        out[key] = add(out[key], gone) if key in out else gone
    return out
