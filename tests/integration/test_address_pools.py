"""A node runs more networks than its engine's address pools hold: Docker's default pools give
about 30 bridges (a stack's default network is one, on every node that runs its tasks), and the
next task failed with "could not find an available, non-overlapping IPv4 address pool". A node
then takes /20s of 10.0.0.0/8 (`executor.networks.FALLBACK_POOL`) that nothing on the host
overlaps. Here, an engine whose pools hold two bridges runs a service on six networks."""

from __future__ import annotations

import ipaddress
import json
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from swarmlet.executor.networks import POOLS_USED_UP
from swarmlet.testing.images import BUSYBOX_IMAGE
from tests.integration.cluster import wait_for
from tests.integration.hosts import Topology, host_cluster, host_topology

pytestmark = [pytest.mark.integration, pytest.mark.docker, pytest.mark.usefixtures("docker_images")]

NETWORKS = 6
SMALL_POOLS = {"default-address-pools": [{"base": "172.30.0.0/23", "size": 24}]}  # two /24s


@pytest.fixture(scope="module")
def topology(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Topology]:
    root = tmp_path_factory.mktemp("pools")
    with host_topology(root, count=1, images=[BUSYBOX_IMAGE], engine_config=SMALL_POOLS) as topo:
        yield topo


def test_a_service_on_more_networks_than_the_engines_pools_hold_runs(
    topology: Topology, tmp_path: Path
) -> None:
    (h1,) = topology.hosts
    # The engine's pools are what this test says they are: a third network is refused.
    h1.docker("network", "create", "probe-a")
    h1.docker("network", "create", "probe-b")
    refused = h1.run(["docker", "network", "create", "probe-c"], check=False)
    # ... with the words the agent takes for "the pools are used up".
    assert refused.returncode != 0 and POOLS_USED_UP in refused.stderr, refused.stderr
    h1.docker("network", "rm", "probe-a", "probe-b")

    names = [f"n{i}" for i in range(NETWORKS)]
    stack = tmp_path / "stack.yml"
    stack.write_text(
        textwrap.dedent(
            f"""\
            services:
              app:
                image: {BUSYBOX_IMAGE}
                command: ["sleep", "3600"]
                networks: [{", ".join(names)}]
            networks:
            """
        )
        + "".join(f"  {n}: {{}}\n" for n in names)
    )
    with host_cluster(topology, tmp_path / "agents") as cluster:
        cluster.start(managers=1)
        cluster.cli(h1, "stack", "deploy", "-c", str(stack), "st", timeout=120)
        wait_for("the task to run", lambda: h1.running("st_app") == 1, timeout=120)

        ours = [
            json.loads(h1.docker("network", "inspect", n))[0]
            for n in h1.docker("network", "ls", "-q", "--filter", "label=swarmlet.network").split()
        ]
        assert sorted(n["Labels"]["swarmlet.network"] for n in ours) == [f"st_{n}" for n in names]
        subnets = [ipaddress.ip_network(n["IPAM"]["Config"][0]["Subnet"]) for n in ours]
        from_engine = [s for s in subnets if s.subnet_of(ipaddress.ip_network("172.30.0.0/23"))]
        ours_taken = [s for s in subnets if s.subnet_of(ipaddress.ip_network("10.0.0.0/8"))]
        assert len(from_engine) == 2 and len(ours_taken) == NETWORKS - 2, subnets
        assert all(s.prefixlen == 20 for s in ours_taken), subnets
        # Disjoint, and clear of every address and route of the host (its engine's docker0,
        # its own address on the hosts' bridge, in 10.128.0.0/9).
        for i, a in enumerate(subnets):
            assert not any(a.overlaps(b) for b in subnets[i + 1 :]), subnets
        host_routes = h1.run(["ip", "-4", "route", "show", "table", "main"]).stdout
        for line in host_routes.splitlines():
            dest = line.split()[0]
            if dest == "default":
                continue
            route = ipaddress.ip_network(dest, strict=False)
            if route not in subnets:  # a bridge's own route
                assert not any(route.overlaps(s) for s in ours_taken), (line, subnets)
