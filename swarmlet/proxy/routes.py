"""The routing mesh's pure part: which published ports exist (`Route`, from the replicated and
the observed state) and in which order to try a port's endpoints (`EndpointSelector`).

A replica is an endpoint while its task is desired RUNNING, observed RUNNING and not reported
unhealthy. The selector goes round-robin and benches an endpoint whose connect failed for a
back-off that doubles up to BENCH_MAX_S (passive health). No I/O, no clock: `now` is passed in.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from swarmlet.state.machine import ClusterState
from swarmlet.state.model import TaskState
from swarmlet.state.observed import MAX_EXPOSED_PORTS, Endpoint, TaskObservation

BENCH_BASE_S = 1.0  # first back-off after a failed connect; doubles up to BENCH_MAX_S
BENCH_MAX_S = 30.0


@dataclass(frozen=True, slots=True)
class Route:
    """One published port: where clients connect, and who serves it. Also sent as is to the
    proxy's worker processes (in `swarmlet.proxy.worker_protocol.RouteTable`)."""

    service: str
    published: int
    protocol: str
    endpoints: tuple[Endpoint, ...]
    host: str = ""  # a service's virtual address; "" for the node's publish address
    # For a virtual address: the bridge subnet whose peers may connect (the containers on that
    # network; a container of another network reaches the address through the host, and is
    # refused). "": anyone.
    clients: str = ""
    # "" | "v1" | "v2": each connection to a replica opens with a PROXY protocol header of this
    # version (`swarmlet.proxy.proxy_header`). Published TCP ports only, never a virtual address.
    proxy_protocol: str = ""

    @property
    def key(self) -> tuple[str, int, str]:
        return (self.host, self.published, self.protocol)


def admits(route: Route, peer: str) -> bool:
    """Whether a client at address `peer` may use `route` (see `Route.clients`)."""
    if not route.clients:
        return True
    try:
        return ipaddress.ip_address(peer) in _network(route.clients)
    except ValueError:
        return False


@functools.lru_cache(maxsize=1024)
def _network(cidr: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_network(cidr)


@dataclass
class _Bench:
    until: float
    failures: int


@dataclass
class EndpointSelector:
    """Round-robin over a changing list of endpoints, skipping benched ones."""

    _cursor: int = 0
    _bench: dict[Endpoint, _Bench] = field(default_factory=dict)

    def order(self, endpoints: Sequence[Endpoint], now: float) -> list[Endpoint]:
        """Every endpoint once, in the order to try them: round-robin from the cursor, healthy
        first, benched ones last (when all are benched, trying one beats refusing the client)."""
        if not endpoints:
            return []
        start = self._cursor % len(endpoints)
        self._cursor = start + 1
        rotated = [*endpoints[start:], *endpoints[:start]]
        if not self._bench:  # the usual case: once per connection, so worth the shortcut
            return rotated
        healthy = [e for e in rotated if not self._benched(e, now)]
        benched = [e for e in rotated if self._benched(e, now)]
        return healthy + benched

    def _benched(self, endpoint: Endpoint, now: float) -> bool:
        bench = self._bench.get(endpoint)
        return bench is not None and now < bench.until

    def failed(self, endpoint: Endpoint, now: float) -> None:
        bench = self._bench.get(endpoint)
        failures = bench.failures + 1 if bench is not None else 1
        delay = min(BENCH_MAX_S, BENCH_BASE_S * 2 ** (failures - 1))
        self._bench[endpoint] = _Bench(until=now + delay, failures=failures)

    def succeeded(self, endpoint: Endpoint) -> None:
        if self._bench:
            self._bench.pop(endpoint, None)

    def forget_except(self, endpoints: Sequence[Endpoint]) -> None:
        keep = set(endpoints)
        for endpoint in list(self._bench):
            if endpoint not in keep:
                del self._bench[endpoint]


def routes_from(
    state: ClusterState,
    tasks: Mapping[str, TaskObservation],
    vips: Mapping[str, Sequence[tuple[str, str]]] = {},  # read only
) -> list[Route]:
    """Every ingress-published port of every service, and every port its replicas publish at
    each of its virtual addresses on this node (`vips`: service id -> (address, the subnet of
    its bridge), from `swarmlet.executor.networks`), with the endpoints that may serve it.

    `tasks` must be `leader.observation.observe(...).tasks`: that is where a node's reports are
    vetted (only its own tasks, endpoints only on its own address), so that no node can point
    the mesh at another node's replica, a loopback or a host of its choosing."""
    routes = []
    for service in state.services.values():
        ingress = [p for p in service.spec.ports if p.mode == "ingress"]
        service_vips = vips.get(service.id, ())
        if not ingress and not service_vips:
            continue
        serving: dict[tuple[int, str], list[Endpoint]] = {}  # (target, protocol) -> endpoints
        for task in state.tasks_of(service.id):
            obs = tasks.get(task.id)
            if (
                task.desired_state is TaskState.RUNNING
                and obs is not None
                and obs.state is TaskState.RUNNING
                and obs.healthy is not False
            ):
                for e in obs.endpoints:
                    serving.setdefault((e.target, e.protocol), []).append(e)
        name = service.spec.name
        for port in ingress:
            endpoints = tuple(serving.get((port.target, port.protocol), ()))
            header = port.proxy_protocol if port.protocol == "tcp" else ""
            routes.append(
                Route(name, port.published, port.protocol, endpoints, proxy_protocol=header)
            )
        spec_targets = {(p.target, p.protocol) for p in service.spec.ports}
        for (target, protocol), found in _vip_ports(serving, spec_targets):
            for vip, subnet in service_vips:
                routes.append(Route(name, target, protocol, tuple(found), vip, subnet))
    return routes


def _vip_ports(
    serving: Mapping[tuple[int, str], list[Endpoint]],
    spec_targets: set[tuple[int, str]],
) -> list[tuple[tuple[int, str], list[Endpoint]]]:
    """The ports a service's virtual addresses listen on, in order: at most MAX_EXPOSED_PORTS.
    Every node listens on each, a descriptor apiece; a status holds at most MAX_EXPOSED_PORTS,
    but a worker's 40 replicas of a service reported 40 sets of different ports, and every node
    ran out of descriptors (review). So, when there are more: first the targets of the service's
    own published ports, then those served on the most nodes (the replicas of a service run one
    image, so its ports are served wherever a replica runs, and a worker's inventions on that
    worker alone), then each node's lowest ports in turn (a node's thousand inventions do not
    push out the one port another node serves)."""
    if len(serving) <= MAX_EXPOSED_PORTS:
        return sorted(serving.items())
    hosts = {key: {e.host for e in found} for key, found in serving.items()}
    by_host: dict[str, list[tuple[int, str]]] = {}
    for key, found_on in hosts.items():
        for host in found_on:
            by_host.setdefault(host, []).append(key)
    turn: dict[tuple[int, str], int] = {}
    for keys in by_host.values():
        for i, key in enumerate(sorted(keys)):
            turn[key] = min(turn.get(key, i), i)

    def rank(key: tuple[int, str]) -> tuple[bool, int, int, tuple[int, str]]:
        return (key not in spec_targets, -len(hosts[key]), turn[key], key)

    kept = sorted(sorted(serving, key=rank)[:MAX_EXPOSED_PORTS])
    return [(key, serving[key]) for key in kept]
