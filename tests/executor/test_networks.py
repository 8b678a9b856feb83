"""The pure part of service networks: address plan, names, which VIPs a node carries."""

from __future__ import annotations

import ipaddress
import subprocess

import pytest

from swarmlet.executor.networks import (
    LocalNetwork,
    bridge_name,
    docker_network_name,
    free_subnet,
    host_subnets,
    hosts_for,
    ip_networks,
    networks_in_use,
    rewrite_hosts,
    split_subnet,
    vip_address,
    wanted_vips,
)
from swarmlet.state.commands import CreateService, RemoveService, UpdateService
from swarmlet.state.machine import ClusterState
from swarmlet.state.model import NetworkAttachment, Service, ServiceSpec


@pytest.mark.parametrize(
    ("subnet", "lower", "upper"),
    [
        ("172.20.0.0/16", "172.20.0.0/17", "172.20.128.0/17"),
        ("192.168.16.0/20", "192.168.16.0/21", "192.168.24.0/21"),
        ("10.0.0.0/24", "10.0.0.0/25", "10.0.0.128/25"),
    ],
)
def test_containers_get_the_lower_half_and_vips_the_upper(
    subnet: str, lower: str, upper: str
) -> None:
    assert split_subnet(subnet) == (lower, upper)


@pytest.mark.parametrize(
    ("subnet", "index", "vip"),
    [
        ("172.20.0.0/16", 1, "172.20.128.1"),
        ("172.20.0.0/16", 300, "172.20.129.44"),
        ("10.0.0.0/24", 126, "10.0.0.254"),
        ("10.0.0.0/24", 127, None),  # the broadcast address is never a VIP
        ("10.0.0.0/24", 0, None),  # 0: the service has no index
    ],
)
def test_vip_address(subnet: str, index: int, vip: str | None) -> None:
    assert vip_address(subnet, index) == vip


@pytest.mark.parametrize(
    ("taken", "subnet"),
    [
        ([], "10.0.0.0/20"),
        (["10.0.0.0/20", "10.0.16.0/24", "fd00::/64"], "10.0.32.0/20"),  # IPv6 never overlaps
        (["10.0.0.5/32", "10.0.40.0/21"], "10.0.16.0/20"),  # a host address in the first
        (
            ["10.0.16.0/20", "10.0.0.0/21", "10.0.8.0/21"],
            "10.0.32.0/20",
        ),  # adjacent spans, unsorted
        (["9.0.0.0/8", "10.0.0.0/9", "10.128.0.0/20"], "10.128.16.0/20"),
        (["10.0.0.0/12", "10.8.0.0/13"], "10.16.0.0/20"),  # a span inside another
        (["10.0.0.0/8"], None),
        (["0.0.0.0/1"], None),
        (["10.0.0.0/9", "10.128.0.0/10", "10.192.0.0/11", "10.224.0.0/12"], "10.240.0.0/20"),
        (["10.0.0.0/9", "10.128.0.0/9"], None),
    ],
)
def test_the_fallback_pool_gives_the_first_subnet_nothing_overlaps(
    taken: list[str], subnet: str | None
) -> None:
    assert free_subnet("10.0.0.0/8", 20, taken) == subnet


def test_members_addresses_are_kept_clear_of_as_single_addresses() -> None:
    """A member reached through the gateway (not on a host route) is kept clear of all the same:
    a bridge over it would take its traffic."""
    members = ip_networks(["10.0.0.7", "manager.example", "fd00::1", ""])
    assert members == ["10.0.0.7/32", "fd00::1/128"]
    assert free_subnet("10.0.0.0/8", 20, members) == "10.0.16.0/20"


def test_the_last_subnet_of_the_pool_is_found() -> None:
    everything_but_the_last = [
        str(n) for n in list(ipaddress.ip_network("10.0.0.0/8").subnets(new_prefix=20))[:-1]
    ]
    assert free_subnet("10.0.0.0/8", 20, everything_but_the_last) == "10.255.240.0/20"


def test_host_subnets_hold_this_hosts_addresses_and_routes_but_not_the_default() -> None:
    nets = {ipaddress.ip_network(n) for n in host_subnets()}
    assert ipaddress.ip_network("127.0.0.0/8") in nets
    assert ipaddress.ip_network("0.0.0.0/0") not in nets
    routes = subprocess.run(
        ["ip", "-4", "route", "show", "table", "main"], capture_output=True, text=True, check=True
    ).stdout
    for line in routes.splitlines():
        dest = line.split()[0]
        if dest != "default":
            assert ipaddress.ip_network(dest, strict=False) in nets, line


def test_names_are_per_node_and_fit_linux_interface_names() -> None:
    name = docker_network_name("web_default", "0123456789abcdef")
    assert name == "web_default.0123456789ab"
    assert name != docker_network_name("web_default", "fedcba9876543210")
    assert len(bridge_name(name)) <= 15
    assert bridge_name(name) == bridge_name(name)


def _service(state: ClusterState, sid: str, name: str, *networks: NetworkAttachment) -> Service:
    stack = name.split("_")[0] if "_" in name else ""
    spec = ServiceSpec(name=name, image="x", stack=stack, networks=networks)
    state.apply(CreateService(Service(id=sid, spec=spec)))
    return state.services[sid]


def test_indexes_are_per_network_and_not_reused_while_the_network_has_services() -> None:
    state = ClusterState()
    front, back = NetworkAttachment("st_front"), NetworkAttachment("st_back")
    assert _service(state, "a", "st_a", front).vip_indexes == {"st_front": 1}
    assert _service(state, "b", "st_b", front, back).vip_indexes == {"st_front": 2, "st_back": 1}
    assert _service(state, "plain", "plain").vip_indexes == {}  # no networks: no VIP
    ext = NetworkAttachment("shared", external=True)
    assert _service(state, "x", "st_x", ext).vip_indexes == {}  # external: joined as is
    state.apply(RemoveService("a", 0.0))
    # a's VIP may still be in other containers' /etc/hosts as "a": never handed out again.
    assert _service(state, "c", "st_c", front).vip_indexes == {"st_front": 3}
    b = state.services["b"]
    state.apply(UpdateService("b", ServiceSpec(name="st_b", image="y", networks=(back,)), 0.0))
    assert state.services["b"].vip_indexes == {"st_back": 1}  # kept on the network it stays on
    assert state.services["b"].version == b.version + 1
    state.apply(UpdateService("plain", ServiceSpec(name="plain", image="x", networks=(back,)), 0))
    assert state.services["plain"].vip_indexes == {"st_back": 2}  # joined a network: gets one
    # Once a network has no services, its counter goes: a stack removed and deployed again
    # starts from 1.
    for sid in ("b", "c", "plain"):
        state.apply(RemoveService(sid, 0.0))
    assert state.vip_counters == {}
    assert _service(state, "d", "st_d", front).vip_indexes == {"st_front": 1}
    restored = ClusterState.restore(state.snapshot())
    assert restored.vip_counters == {"st_front": 2}


def test_hosts_name_every_service_sharing_a_network_at_its_vip_on_this_node() -> None:
    state = ClusterState()
    front = NetworkAttachment("st_front")
    back = NetworkAttachment("st_back", aliases=("database",))
    web = _service(state, "w", "st_web", front)
    api = _service(state, "a", "st_api", front, NetworkAttachment("st_back"))
    _service(state, "d", "st_db", back)
    _service(state, "o", "other_db", NetworkAttachment("other_default"))
    local = {
        "st_front": LocalNetwork("st_front", "st_front.n1", "172.20.0.0/16", "swl1"),
        "st_back": LocalNetwork("st_back", "st_back.n1", "172.21.0.0/16", "swl2"),
    }
    assert hosts_for(state, web.spec, local) == {
        "api": "172.20.128.2",
        "st_api": "172.20.128.2",
        "web": "172.20.128.1",
        "st_web": "172.20.128.1",
    }
    # api is on both networks: it sees db (and db's alias) on the back network's bridge.
    assert hosts_for(state, api.spec, local) == {
        "api": "172.20.128.2",
        "st_api": "172.20.128.2",
        "web": "172.20.128.1",
        "st_web": "172.20.128.1",
        "db": "172.21.128.2",
        "st_db": "172.21.128.2",
        "database": "172.21.128.2",
    }
    # A network this node has no bridge for gives no names (yet).
    assert hosts_for(state, web.spec, {}) == {}


def test_wanted_vips_cover_every_service_of_every_local_network() -> None:
    state = ClusterState()
    _service(state, "w", "st_web", NetworkAttachment("st_front"))
    _service(state, "a", "st_api", NetworkAttachment("st_front"), NetworkAttachment("st_back"))
    _service(state, "x", "st_ext", NetworkAttachment("host_net", external=True))
    local = {"st_front": LocalNetwork("st_front", "st_front.n1", "172.20.0.0/16", "swl1")}
    assert wanted_vips(state, local) == {"swl1": {"172.20.128.1": "w", "172.20.128.2": "a"}}
    assert networks_in_use(state) == {"st_front", "st_back"}  # external ones are not ours


def test_rewriting_hosts_replaces_only_the_lines_in_the_vip_halves() -> None:
    docker_wrote = (
        "127.0.0.1\tlocalhost\n"
        "::1\tlocalhost ip6-localhost ip6-loopback\n"
        "10.0.0.9\tmy-own-entry\n"  # the user's extra_hosts
        "172.20.128.1\tapi\n"
        "172.20.128.1\tst_api\n"
        "172.20.128.2\told\n"  # a service that left
        "172.20.0.2\tabc123def456\n"  # the container itself, in the lower half
    )
    wanted = {"api": "172.20.128.1", "st_api": "172.20.128.1", "new": "172.20.128.3"}
    assert rewrite_hosts(docker_wrote, wanted, ["172.20.128.0/17"]) == (
        "127.0.0.1\tlocalhost\n"
        "::1\tlocalhost ip6-localhost ip6-loopback\n"
        "10.0.0.9\tmy-own-entry\n"
        "172.20.0.2\tabc123def456\n"
        "172.20.128.1\tapi\n"
        "172.20.128.1\tst_api\n"
        "172.20.128.3\tnew\n"
    )
    # Nothing of ours, nothing wanted: the file is unchanged.
    assert rewrite_hosts("127.0.0.1\tlocalhost\n", {}, ["172.20.128.0/17"]) == (
        "127.0.0.1\tlocalhost\n"
    )
