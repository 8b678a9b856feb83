"""`LocalNetworks` against the real engine: a node's bridge per network, a VIP per service on it,
and a container that reaches a service by name at that VIP. Fails (never skips) without Docker.
"""

from __future__ import annotations

import ipaddress
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from functools import partial

import psutil
import pytest
import trio

from swarmlet.executor.docker_runtime import DockerRuntime, open_docker_runtime
from swarmlet.executor.labels import LABEL_CLUSTER
from swarmlet.executor.networks import LocalNetworks, split_subnet
from swarmlet.executor.runtime_types import ContainerSpec
from swarmlet.state.commands import CreateService, RemoveService
from swarmlet.state.machine import ClusterState
from swarmlet.state.model import NetworkAttachment, Service, ServiceSpec
from swarmlet.testing.images import BUSYBOX_IMAGE, ensure_test_images

pytestmark = pytest.mark.docker


def _docker(*args: str) -> str:
    return subprocess.run(
        ["docker", *args], capture_output=True, text=True, check=True, timeout=60
    ).stdout


@pytest.fixture
def cluster_id() -> Iterator[str]:
    """Everything made under this id is removed afterwards, with the docker CLI."""
    value = "test" + uuid.uuid4().hex[:12]
    yield value
    selector = f"label={LABEL_CLUSTER}={value}"
    containers = _docker("ps", "-aq", "--filter", selector).split()
    if containers:
        _docker("rm", "-f", *containers)
    networks = _docker("network", "ls", "-q", "--filter", selector).split()
    if networks:
        _docker("network", "rm", *networks)


@pytest.fixture
async def runtime() -> AsyncIterator[DockerRuntime]:
    ensure_test_images()
    with trio.fail_after(30):
        async with open_docker_runtime() as rt:
            yield rt


async def test_a_container_reaches_a_service_by_name_at_its_vip_on_the_nodes_bridge(
    runtime: DockerRuntime, cluster_id: str
) -> None:
    front = NetworkAttachment("st_front")
    state = ClusterState()
    for sid, name in (("a", "st_api"), ("c", "st_client")):
        spec = ServiceSpec(name=name, image=BUSYBOX_IMAGE, stack="st", networks=(front,))
        state.apply(CreateService(Service(id=sid, spec=spec)))
    changes = []
    networks = LocalNetworks(
        runtime,
        cluster_id=cluster_id,
        node_id="n" + cluster_id,
        on_change=lambda: changes.append(1),
    )
    with trio.fail_after(60):
        (docker_name,) = await networks.ensure(state.services["c"].spec)
        net = networks.local["st_front"]
        assert net.docker_name == docker_name
        ip_range = _docker(
            "network", "inspect", "-f", "{{(index .IPAM.Config 0).IPRange}}", docker_name
        ).strip()
        assert ip_range == split_subnet(net.subnet)[0]  # containers stay out of the VIP half

        await networks.sync(state)
        api_vip = str(ipaddress.ip_network(split_subnet(net.subnet)[1]).network_address + 1)
        assert networks.ready == {
            "a": ((api_vip, net.subnet),),
            "c": ((api_vip[:-1] + "2", net.subnet),),
        }
        assert changes
        assert api_vip in {a.address for a in psutil.net_if_addrs()[net.bridge]}

        got: list[bytes] = []
        arrived = trio.Event()

        async def handle(stream: trio.SocketStream) -> None:
            async with stream:
                got.append(await stream.receive_some())
                arrived.set()

        async with trio.open_nursery() as nursery:
            await nursery.start(partial(trio.serve_tcp, handle, 8000, host=api_vip))
            hosts = networks.hosts_for(state, state.services["c"].spec)
            assert hosts["api"] == hosts["st_api"] == api_vip
            info = await runtime.run(
                ContainerSpec(
                    name=f"{cluster_id}-client",
                    image=BUSYBOX_IMAGE,
                    command=("sh", "-c", "echo hello-by-name | nc api 8000; sleep 60"),
                    labels={LABEL_CLUSTER: cluster_id},
                    networks=(docker_name,),
                    extra_hosts=hosts,
                )
            )
            await arrived.wait()
            nursery.cancel_scope.cancel()
        assert got == [b"hello-by-name\n"]

        # A service that joins the network later is named in the running container too.
        late = ServiceSpec(name="st_late", image=BUSYBOX_IMAGE, stack="st", networks=(front,))
        state.apply(CreateService(Service(id="l", spec=late)))
        await networks.sync(state)
        client_spec = state.services["c"].spec
        await networks.refresh_hosts(
            info.hosts_path, client_spec, networks.hosts_for(state, client_spec)
        )
        etc_hosts = _docker("exec", info.id, "cat", "/etc/hosts")
        late_vip = networks.ready["l"][0][0]
        assert f"{late_vip}\tlate\n" in etc_hosts and f"{api_vip}\tapi\n" in etc_hosts

        # The service goes: its VIP leaves the bridge; the bridge stays while a container is on
        # it, and goes once the container does.
        state.apply(RemoveService("a", 0.0))
        await networks.sync(state)
        assert api_vip not in {a.address for a in psutil.net_if_addrs()[net.bridge]}
        state.apply(RemoveService("c", 0.0))
        state.apply(RemoveService("l", 0.0))
        await networks.sync(state)
        assert "st_front" in networks.local
        await runtime.remove(info.id)
        await networks.sync(state)
        assert networks.local == {} and networks.ready == {}
        assert await runtime.inspect_network(docker_name) is None


async def test_a_restarted_agent_adopts_its_bridges(
    runtime: DockerRuntime, cluster_id: str
) -> None:
    spec = ServiceSpec(name="st_a", image="x", networks=(NetworkAttachment("st_back"),))
    first = LocalNetworks(runtime, cluster_id=cluster_id, node_id="n" + cluster_id)
    second = LocalNetworks(runtime, cluster_id=cluster_id, node_id="n" + cluster_id)
    other_node = LocalNetworks(runtime, cluster_id=cluster_id, node_id="m" + cluster_id)
    with trio.fail_after(60):
        names = await first.ensure(spec)
        await second.load()
        assert second.local == first.local
        assert await second.ensure(spec) == names  # not made twice
        # Another node on the same engine gets its own bridge and subnet.
        (theirs,) = await other_node.ensure(spec)
        assert theirs != names[0]
        assert other_node.local["st_back"].subnet != first.local["st_back"].subnet
