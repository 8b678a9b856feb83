"""Service networks on one node: a bridge per network, a virtual address per service, names.

Swarm reaches across hosts with overlay networks (VXLAN) and a virtual IP per service balanced by
IPVS. swarmlet needs neither: every node makes its own Docker bridge for each network its tasks
join, and gives each service on that network a virtual address (VIP) on the bridge, where the
node's proxy listens on the service's ports and forwards, round-robin, to the service's healthy
replicas wherever they run (the same endpoints as the routing mesh). A container finds a service
by name through an ``/etc/hosts`` entry (``extra_hosts``) naming that VIP: ``api``, ``web_api``
and the service's aliases on the network.

Address plan of a node's bridge: Docker picks a free subnet from its address pools, and once
those are used up (Docker's defaults hold about 30 bridges: 15 /16s and 16 /20s) the node takes
the first /20 of 10.0.0.0/8 (where Swarm's overlay networks take theirs) that overlaps no Docker
network, no address or route of the host, and no cluster member's address (4,096 more). A host
that reaches other 10.x networks through its gateway should give Docker pools of its own
(daemon.json's ``default-address-pools``): a bridge's route would shadow the gateway's.
Containers get addresses from the subnet's lower half (``ip_range``), VIPs come from its upper
half, at ``upper half + index``, where the index is the service's on that network
(``Service.vip_indexes``). The state machine allocates indexes from a per-network counter and
never reuses one while the network has services, so the address a container was given at start
keeps meaning the same service. A service whose index
does not fit the upper half (more services over a network's life than half the bridge's
subnet: 32,766 on Docker's usual /16, 2,046 on a /20) has no VIP on that bridge: logged.

Names stay current: a container gets its entries at creation (``extra_hosts``), and when services
join or leave its networks later, the agent rewrites the service lines of the container's hosts
file (Docker's ``HostsPath``, bind-mounted as ``/etc/hosts``) in place: every line whose
address is in one of the container's VIP halves is ours, the rest is left as Docker wrote it.

A service's ports through its VIP are the ports its replicas publish: its image's EXPOSE ports
and its ``ports`` targets (the executor publishes them all on the node's advertise address).
Unlike Swarm's VIP, a port the image does not expose is not reachable by name.

Pure part: naming and address arithmetic (`vip_address`, `split_subnet`, `hosts_for`,
`wanted_vips`), tested with tables. `LocalNetworks` applies them through Docker and ``ip``.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import socket
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import psutil
import trio

from swarmlet.errors import RuntimeAdapterError
from swarmlet.executor.labels import LABEL_CLUSTER, LABEL_NETWORK, LABEL_NODE, LABEL_STACK
from swarmlet.executor.runtime_types import DockerError, NetworkInfo
from swarmlet.state.machine import ClusterState
from swarmlet.state.model import NetworkAttachment, Service, ServiceSpec
from swarmlet.wire.hosts import ip_of

if TYPE_CHECKING:
    from swarmlet.executor.docker_runtime import DockerRuntime

log = logging.getLogger(__name__)

LABEL_PROBE = "swarmlet.probe"  # a network made only to learn which subnet Docker would pick
CREATE_ATTEMPTS = 5  # another process may take the probed subnet before we do: try again
# Where bridges go once Docker's pools are used up: the default pool of Swarm's overlay networks
# (`docker swarm init --default-addr-pool`), in /20s: 2,046 container addresses and as many VIPs.
FALLBACK_POOL = "10.0.0.0/8"
FALLBACK_PREFIX = 20
# What Docker answers when its pools have no subnet left (libnetwork's ErrNoAvailablePool).
POOLS_USED_UP = "non-overlapping IPv4 address pool"


class NetworkError(RuntimeAdapterError):
    """A network a task needs cannot be made or found on this node."""


# ---------------------------------------------------------------------------- pure part


@dataclass(frozen=True, slots=True)
class LocalNetwork:
    """This node's bridge for one cluster network."""

    name: str  # the cluster-wide name, e.g. "web_default"
    docker_name: str
    subnet: str
    bridge: str  # the host interface; VIPs are added to it


def docker_network_name(network: str, node_id: str) -> str:
    """Several agents may share one Docker engine (tests, demos): the node id keeps their
    bridges apart."""
    return f"{network}.{node_id[:12]}"


def bridge_name(docker_name: str) -> str:
    """A stable interface name within Linux's 15 characters."""
    return "swl" + hashlib.sha256(docker_name.encode()).hexdigest()[:12]


def split_subnet(subnet: str) -> tuple[str, str]:
    """(the half containers get addresses from, the half VIPs come from)."""
    lower, upper = ipaddress.ip_network(subnet).subnets(prefixlen_diff=1)
    return str(lower), str(upper)


def vip_address(subnet: str, index: int) -> str | None:
    """The VIP of the service with `index` on a bridge with `subnet`; None if the upper half
    has no room for it (the broadcast address is never used)."""
    upper = ipaddress.ip_network(split_subnet(subnet)[1])
    if index < 1 or index >= upper.num_addresses - 1:
        return None
    return str(upper.network_address + index)


def free_subnet(pool: str, prefix: int, taken: Iterable[str]) -> str | None:
    """The first /`prefix` of `pool` (IPv4) that overlaps none of `taken` (networks in CIDR
    form; IPv6 ones are ignored), or None."""
    spans: list[tuple[int, int]] = []  # merged, sorted [first, last] address ranges
    for net in sorted(
        (n for n in (ipaddress.ip_network(t, strict=False) for t in taken) if n.version == 4),
        key=lambda n: int(n.network_address),
    ):
        first, last = int(net.network_address), int(net.broadcast_address)
        if spans and first <= spans[-1][1] + 1:
            spans[-1] = (spans[-1][0], max(spans[-1][1], last))
        else:
            spans.append((first, last))
    whole = ipaddress.IPv4Network(pool)
    size = 1 << (32 - prefix)
    start, end = int(whole.network_address), int(whole.broadcast_address)
    for first, last in spans:  # walk the candidates past each taken span in turn
        if last < start:
            continue
        if first > start + size - 1:
            break
        start = (last // size + 1) * size  # the next aligned candidate after the span
    if start + size - 1 > end:
        return None
    return str(ipaddress.IPv4Network((start, prefix)))


def host_subnets() -> list[str]:
    """The IPv4 networks this host reaches already: its addresses' and its routes' (but the
    default route's), which a bridge of ours must not shadow."""
    nets = []
    for addrs in psutil.net_if_addrs().values():
        for a in addrs:
            if a.family == socket.AF_INET and a.netmask:
                nets.append(str(ipaddress.ip_interface(f"{a.address}/{a.netmask}").network))
    try:
        with open("/proc/net/route", encoding="ascii") as f:
            rows = f.read().splitlines()[1:]
    except OSError:
        rows = []
    for row in rows:
        fields = row.split()
        if len(fields) < 8:
            continue
        dest, mask = (
            socket.inet_ntoa(int(x, 16).to_bytes(4, sys.byteorder)) for x in fields[1:8:6]
        )
        if mask != "0.0.0.0":
            nets.append(str(ipaddress.ip_network(f"{dest}/{mask}", strict=False)))
    return nets


def short_name(spec: ServiceSpec) -> str:
    """The name in the stack file: "api" for "web_api"."""
    prefix = f"{spec.stack}_"
    return spec.name.removeprefix(prefix) if spec.stack else spec.name


def _names(service: Service, attachment: NetworkAttachment) -> list[str]:
    return [short_name(service.spec), service.spec.name, *attachment.aliases]


def _attachments_by_network(
    state: ClusterState,
) -> dict[str, list[tuple[Service, NetworkAttachment]]]:
    by_network: dict[str, list[tuple[Service, NetworkAttachment]]] = {}
    for service in sorted(state.services.values(), key=lambda s: s.spec.name):
        for attachment in service.spec.networks:
            if attachment.name in service.vip_indexes:
                by_network.setdefault(attachment.name, []).append((service, attachment))
    return by_network


def hosts_for(
    state: ClusterState, spec: ServiceSpec, local: Mapping[str, LocalNetwork]
) -> dict[str, str]:
    """The ``/etc/hosts`` entries of a container of `spec`: every service that shares one of
    its networks, by name, at its VIP on this node. On a name clash the first network in the
    spec's order wins, and within a network the first service by name."""
    by_network = _attachments_by_network(state)
    hosts: dict[str, str] = {}
    for attachment in spec.networks:
        net = local.get(attachment.name)
        if net is None or attachment.external:
            continue
        for service, theirs in by_network.get(attachment.name, []):
            vip = vip_address(net.subnet, service.vip_indexes[attachment.name])
            if vip is None:
                continue
            for name in _names(service, theirs):
                hosts.setdefault(name, vip)
    return hosts


def vip_halves(spec: ServiceSpec, local: Mapping[str, LocalNetwork]) -> tuple[str, ...]:
    """The VIP halves of the bridges a container of `spec` is on."""
    return tuple(
        split_subnet(local[a.name].subnet)[1]
        for a in spec.networks
        if not a.external and a.name in local
    )


def rewrite_hosts(text: str, wanted: Mapping[str, str], halves: Sequence[str]) -> str:
    """A hosts file with its service lines (addresses in `halves`) replaced by `wanted`
    (name -> VIP), one line per name as Docker writes ``extra_hosts``."""
    nets = [ipaddress.ip_network(h) for h in halves]

    def ours(line: str) -> bool:
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            return False
        try:
            address = ipaddress.ip_address(fields[0])
        except ValueError:
            return False
        return any(address in net for net in nets)

    kept = [line for line in text.splitlines() if not ours(line)]
    return "\n".join([*kept, *(f"{vip}\t{name}" for name, vip in wanted.items())]) + "\n"


def wanted_vips(
    state: ClusterState, local: Mapping[str, LocalNetwork]
) -> dict[str, dict[str, str]]:
    """bridge -> {VIP: service id}: the addresses this node's bridges should carry."""
    wanted: dict[str, dict[str, str]] = {net.bridge: {} for net in local.values()}
    for network, members in _attachments_by_network(state).items():
        net = local.get(network)
        if net is None:
            continue
        for service, _ in members:
            vip = vip_address(net.subnet, service.vip_indexes[network])
            if vip is not None:
                wanted[net.bridge][vip] = service.id
            else:
                log.error(
                    "service %s has no VIP on %s: index %d is past the upper half of %s",
                    service.spec.name,
                    net.docker_name,
                    service.vip_indexes[network],
                    net.subnet,
                )
    return wanted


def networks_in_use(state: ClusterState) -> set[str]:
    return {a.name for s in state.services.values() for a in s.spec.networks if not a.external}


# ---------------------------------------------------------------------------- effects


class LocalNetworks:
    """Makes and removes this node's bridges, and keeps their VIPs in step with the state.

    `ready` (service id -> (VIP, its bridge's subnet) for each VIP present on a bridge) is
    where the proxy may listen, and whom it may serve there; it changes only in `sync`, which
    then calls `on_change`.
    """

    def __init__(
        self,
        runtime: DockerRuntime,
        *,
        cluster_id: str,
        node_id: str,
        on_change: Callable[[], None] = lambda: None,
        members: Callable[[], Iterable[str]] = tuple,
    ) -> None:
        self.runtime = runtime
        self.node_id = node_id
        self._members = members  # the hosts of the cluster's members, which no bridge may shadow
        self._labels = {LABEL_CLUSTER: cluster_id, LABEL_NODE: node_id}
        self._on_change = on_change
        self.local: dict[str, LocalNetwork] = {}
        self.ready: dict[str, tuple[tuple[str, str], ...]] = {}
        self._lock = trio.Lock()  # one creation or removal of a network at a time

    async def load(self) -> None:
        """Adopt this node's bridges left by an earlier run; drop leftover probes."""
        for info in await self.runtime.networks(self._labels):
            if info.labels.get(LABEL_PROBE):
                await self.runtime.remove_network(info.name)
            elif network := info.labels.get(LABEL_NETWORK):
                self.local[network] = _local(network, info)

    async def ensure(self, spec: ServiceSpec) -> tuple[str, ...]:
        """The Docker networks a container of `spec` joins, made if missing."""
        names = []
        for attachment in spec.networks:
            if attachment.external:
                if await self.runtime.inspect_network(attachment.name) is None:
                    raise NetworkError(f"network {attachment.name} not found on this node")
                names.append(attachment.name)
                continue
            async with self._lock:
                net = self.local.get(attachment.name)
                if net is None:
                    net = await self._create(attachment, spec.stack)
                    self.local[attachment.name] = net
            names.append(net.docker_name)
        return tuple(names)

    async def _create(self, attachment: NetworkAttachment, stack: str) -> LocalNetwork:
        name = docker_network_name(attachment.name, self.node_id)
        labels = {**self._labels, LABEL_NETWORK: attachment.name}
        if stack:
            labels[LABEL_STACK] = stack
        existing = await self.runtime.inspect_network(name)
        if existing is not None and existing.labels.get(LABEL_NETWORK) == attachment.name:
            return _local(attachment.name, existing)  # made by an earlier run
        last: DockerError | None = None
        for _ in range(CREATE_ATTEMPTS):
            # A free subnet, then the real network on it with the upper half kept for VIPs.
            subnet, gateway = await self._free_subnet(name)
            try:
                info = await self.runtime.create_network(
                    name,
                    labels=labels,
                    subnet=subnet,
                    ip_range=split_subnet(subnet)[0],
                    gateway=gateway,
                    internal=attachment.internal,
                    bridge=bridge_name(name),
                )
            except DockerError as exc:
                if exc.status_code != 403:  # 403: "Pool overlaps": the subnet was taken
                    raise
                last = exc
                continue
            log.info("network %s: bridge %s on %s", name, info.bridge, info.subnet)
            return _local(attachment.name, info)
        raise NetworkError(f"cannot create network {name}: {last}")

    async def _free_subnet(self, name: str) -> tuple[str, str]:
        """(subnet, gateway) for a new bridge: Docker's choice (it knows its pools and the
        host's routes), or once its pools are used up, ours from FALLBACK_POOL."""
        try:
            probe = await self.runtime.create_network(
                f"{name}.probe", labels={**self._labels, LABEL_PROBE: "1"}
            )
        except DockerError as exc:
            if POOLS_USED_UP not in str(exc):
                raise
            taken = [
                *await self.runtime.subnets_in_use(),
                *await trio.to_thread.run_sync(host_subnets),
                *ip_networks(self._members()),
            ]
            subnet = free_subnet(FALLBACK_POOL, FALLBACK_PREFIX, taken)
            if subnet is None:
                raise NetworkError(
                    f"cannot create network {name}: Docker gave no subnet ({exc}), and every "
                    f"/{FALLBACK_PREFIX} of {FALLBACK_POOL} is in use"
                ) from exc
            log.info("network %s: Docker gave no subnet (%s); taking %s", name, exc, subnet)
            return subnet, str(ipaddress.ip_network(subnet).network_address + 1)
        await self.runtime.remove_network(probe.name)
        return probe.subnet, probe.gateway

    async def sync(self, state: ClusterState) -> None:
        """Add and remove VIPs as services come and go; remove bridges no service uses (Docker
        refuses while a container is still on one: the next sync tries again)."""
        async with self._lock:
            in_use = networks_in_use(state)
            for network, net in list(self.local.items()):
                if network not in in_use:
                    try:
                        await self.runtime.remove_network(net.docker_name)
                    except RuntimeAdapterError as exc:
                        log.debug("network %s not removed yet: %s", net.docker_name, exc)
                        continue
                    del self.local[network]
            ready: dict[str, list[tuple[str, str]]] = {}
            wanted = wanted_vips(state, self.local)  # one entry per bridge of this node
            # Asked only when this node has a bridge: a thread hop per applied write otherwise.
            present = await trio.to_thread.run_sync(psutil.net_if_addrs) if wanted else {}
            for bridge, vips in wanted.items():
                have = {a.address for a in present.get(bridge, ()) if a.family == socket.AF_INET}
                net = next(n for n in self.local.values() if n.bridge == bridge)
                upper = ipaddress.ip_network(split_subnet(net.subnet)[1])
                for vip in sorted(set(vips) - have):
                    if await _ip("add", vip, bridge):
                        have.add(vip)
                for stale in sorted(have - set(vips)):
                    if ipaddress.ip_address(stale) in upper:
                        await _ip("del", stale, bridge)
                for vip, service_id in vips.items():
                    if vip in have:
                        ready.setdefault(service_id, []).append((vip, net.subnet))
            new = {sid: tuple(sorted(v)) for sid, v in ready.items()}
            if new != self.ready:
                self.ready = new
                self._on_change()

    def hosts_for(self, state: ClusterState, spec: ServiceSpec) -> dict[str, str]:
        return hosts_for(state, spec, self.local)

    async def refresh_hosts(self, path: str, spec: ServiceSpec, wanted: Mapping[str, str]) -> None:
        """Rewrite the service lines of a running container's hosts file (see the module
        docstring). In place, not by rename: the container sees the file through a bind mount
        of this very inode."""
        halves = vip_halves(spec, self.local)

        def rewrite() -> None:
            with open(path, "r+", encoding="utf-8") as f:
                new = rewrite_hosts(f.read(), wanted, halves)
                f.seek(0)
                f.write(new)
                f.truncate()

        await trio.to_thread.run_sync(rewrite)


def ip_networks(hosts: Iterable[str]) -> list[str]:
    """Each host that is an IP address, as a network of one address (names are left out)."""
    return [str(ipaddress.ip_network(ip)) for host in hosts if (ip := ip_of(host)) is not None]


def _local(network: str, info: NetworkInfo) -> LocalNetwork:
    return LocalNetwork(network, info.name, info.subnet, info.bridge)


async def _ip(action: str, vip: str, bridge: str) -> bool:
    """`ip addr add|del VIP/32 dev BRIDGE`. A failure is logged, not raised: the service's
    VIP stays out of `ready` and the next sync tries again."""
    result = await trio.run_process(
        ["ip", "addr", action, f"{vip}/32", "dev", bridge], check=False, capture_stderr=True
    )
    if result.returncode != 0:
        log.warning("ip addr %s %s dev %s: %s", action, vip, bridge, result.stderr.decode().strip())
    return result.returncode == 0
