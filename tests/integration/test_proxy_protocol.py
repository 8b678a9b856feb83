"""The mesh's PROXY protocol header with a real agent and a real replica (issue #17): a port
published with proxy-protocol=v1 reaches the replica with the test client's own address and port
and the address it connected to, ahead of anything else on the connection."""

from __future__ import annotations

import socket
import subprocess

import pytest

from tests.integration.cluster import LocalCluster, run_cli, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.docker, pytest.mark.usefixtures("docker_images")]

# Each connection: read the first line (the header), log it for `docker logs`, answer with it.
REPLICA = (
    'while true; do nc -l -p 80 -e sh -c "read -r line; echo \\"got \\$line\\" >&2; '
    'echo \\"\\$line\\""; done'
)


@pytest.fixture
def cluster_shape() -> tuple[int, int]:
    return (1, 0)


def _first_line_through_the_mesh(host: str, port: int) -> tuple[bytes, tuple[str, int]]:
    """What the replica answers (its first line; b"" while no replica serves the port, or the
    agent does not listen on it yet), and this client's own address."""
    with socket.socket() as client:
        client.settimeout(5)
        try:
            client.connect((host, port))
        except ConnectionRefusedError:
            return b"", ("", 0)
        address = client.getsockname()
        answer = b""
        while not answer.endswith(b"\n") and (chunk := client.recv(1000)):
            answer += chunk
        return answer, address


def _stderr_log(container_id: str) -> str:
    logs = subprocess.run(
        ["docker", "logs", container_id], capture_output=True, text=True, check=True
    )
    return logs.stderr


def test_the_replica_reads_the_clients_address_in_a_v1_header(cluster: LocalCluster) -> None:
    (agent,) = cluster.agents
    port = cluster.port + 300
    run_cli(
        "service",
        "create",
        "--name",
        "proxied",
        "--publish",
        f"published={port},target=80,proxy-protocol=v1",
        "swarmlet/busybox:1",
        "sh",
        "-c",
        REPLICA,
        data_dir=agent.data_dir,
        timeout=120,
    )
    answer, (client_host, client_port) = wait_for(
        "the replica to answer through the mesh",
        lambda: (reply := _first_line_through_the_mesh(agent.host, port))[0] and reply,
        timeout=60,
    )
    line = f"PROXY TCP4 {client_host} {agent.host} {client_port} {port}\r\n"
    assert answer == line.encode()
    (container,) = cluster.containers(service="proxied")
    wait_for(
        "the replica's log of the header",
        lambda: f"got {line.rstrip()}" in _stderr_log(container["id"]),
    )
