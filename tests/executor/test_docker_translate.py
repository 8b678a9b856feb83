"""swarmlet.executor.docker_translate: the pure translations between the runtime values and
docker-py's arguments / the Engine API's JSON, tested with tables and without an engine."""

from __future__ import annotations

import math
from typing import Any

import docker.errors
import docker.types
import pytest

from swarmlet.executor.docker_translate import (
    container_create_args,
    container_event_from_docker,
    container_info_from_inspect,
    container_stats_from_docker,
    mount_args,
    network_info_from_inspect,
)
from swarmlet.executor.runtime_types import (
    ContainerEvent,
    ContainerSpec,
    HealthcheckSpec,
    MountSpec,
    PortBinding,
    UlimitSpec,
)


def test_create_args_pass_only_what_the_spec_sets() -> None:
    create, host = container_create_args(ContainerSpec(name="a", image="img:1"))
    assert create == {
        "image": "img:1",
        "name": "a",
        "labels": {},
        "environment": {},
        "detach": True,
        "use_config_proxy": False,
    }
    assert host == {}


def test_create_args_publish_each_port_on_the_host_ip_with_a_docker_chosen_port() -> None:
    spec = ContainerSpec(
        name="a",
        image="img:1",
        ports=(PortBinding(80), PortBinding(53, "udp")),
        host_ip="127.0.0.2",
    )
    create, host = container_create_args(spec)
    assert create["ports"] == [(80, "tcp"), (53, "udp")]
    assert host["port_bindings"] == {"80/tcp": [("127.0.0.2",)], "53/udp": [("127.0.0.2",)]}


def test_create_args_publish_a_host_mode_port_at_its_number_beside_the_meshs() -> None:
    spec = ContainerSpec(
        name="a",
        image="img:1",
        ports=(
            PortBinding(80, host_port=9090, host_ip="0.0.0.0"),
            PortBinding(80),  # the same port routed by the mesh too: its binding comes first
            PortBinding(53, "udp", host_port=5353),
        ),
        host_ip="127.0.0.2",
    )
    create, host = container_create_args(spec)
    assert create["ports"] == [(80, "tcp"), (53, "udp")]
    assert host["port_bindings"] == {
        "80/tcp": [("127.0.0.2",), ("0.0.0.0", 9090)],
        "53/udp": [("127.0.0.2", 5353)],
    }


def test_create_args_convert_durations_and_sizes_to_docker_units() -> None:
    spec = ContainerSpec(
        name="a",
        image="img:1",
        healthcheck=HealthcheckSpec(
            test=("CMD-SHELL", "true"),
            interval_s=0.5,
            timeout_s=2,
            retries=3,
            start_period_s=1.25,
        ),
        stop_grace_s=2.1,
        nano_cpus=500_000_000,
        memory_bytes=64 << 20,
    )
    create, host = container_create_args(spec)
    assert create["healthcheck"] == {
        "test": ["CMD-SHELL", "true"],
        "interval": 500_000_000,
        "timeout": 2_000_000_000,
        "retries": 3,
        "start_period": 1_250_000_000,
    }
    assert create["stop_timeout"] == 3  # Docker's StopTimeout is whole seconds: round up
    assert host["nano_cpus"] == 500_000_000
    assert host["mem_limit"] == 64 << 20


def test_create_args_bound_durations_an_older_release_took() -> None:
    # `inf` and `nan` were taken before durations were validated, and converting them crashed
    # every agent given the task, at each start: bounded here, whatever the state holds.
    spec = ContainerSpec(
        name="a",
        image="img:1",
        healthcheck=HealthcheckSpec(test=("CMD", "true"), interval_s=math.inf, timeout_s=math.nan),
        stop_grace_s=math.inf,
    )
    create, _ = container_create_args(spec)
    assert create["healthcheck"]["interval"] == 9_000_000_000 * 1_000_000_000
    assert create["healthcheck"]["timeout"] == 0  # Docker's default
    assert create["stop_timeout"] == 9_000_000_000


def test_create_args_disabled_healthcheck_sends_none_test() -> None:
    create, _ = container_create_args(
        ContainerSpec(name="a", image="img:1", healthcheck=HealthcheckSpec.disabled())
    )
    assert create["healthcheck"] == {"test": ["NONE"]}


def _inspect_attrs(**state: Any) -> dict[str, Any]:
    return {
        "Id": "abc123",
        "Name": "/web.1",
        "Config": {"Labels": {"swarmlet.task": "t1"}, "Image": "swarmlet/web:1"},
        "State": {
            "Status": "running",
            "ExitCode": 0,
            "Error": "",
            "StartedAt": "2026-11-22T15:00:00.1Z",
            "FinishedAt": "0001-01-01T00:00:00Z",
            **state,
        },
        "NetworkSettings": {
            "Ports": {
                "80/tcp": [
                    {"HostIp": "0.0.0.0", "HostPort": "49153"},
                    {"HostIp": "::", "HostPort": "49153"},
                ],
                "443/tcp": None,
                "53/udp": [{"HostIp": "127.0.0.2", "HostPort": "40000"}],
            }
        },
    }


@pytest.mark.parametrize(
    ("state", "exit_code", "health"),
    [
        ({}, None, None),
        ({"Status": "exited", "ExitCode": 137}, 137, None),
        ({"Status": "dead", "ExitCode": 1}, 1, None),
        ({"Health": {"Status": "starting"}}, None, "starting"),
        ({"Health": {"Status": "unhealthy"}}, None, "unhealthy"),
    ],
)
def test_info_from_inspect_reports_exit_code_only_once_exited(
    state: dict[str, Any], exit_code: int | None, health: str | None
) -> None:
    info = container_info_from_inspect(_inspect_attrs(**state))
    assert info.exit_code == exit_code
    assert info.health == health


def test_info_from_inspect_reads_published_ports_and_hides_docker_zero_time() -> None:
    info = container_info_from_inspect(_inspect_attrs())
    assert info.id == "abc123"
    assert info.name == "web.1"
    assert info.labels == {"swarmlet.task": "t1"}
    assert info.image == "swarmlet/web:1"
    assert info.host_ports == {(80, "tcp"): 49153, (53, "udp"): 40000}
    assert info.started_at == "2026-11-22T15:00:00.1Z"
    assert info.finished_at == ""


def test_event_from_docker_splits_labels_from_docker_attributes() -> None:
    raw = {
        "status": "die",
        "id": "c1",
        "Type": "container",
        "Action": "die",
        "Actor": {
            "ID": "c1",
            "Attributes": {
                "exitCode": "137",
                "image": "swarmlet/busybox:1",
                "name": "x",
                "swarmlet.test": "u",
            },
        },
        "time": 1,
        "timeNano": 1_000_000_123,
    }
    assert container_event_from_docker(raw) == ContainerEvent(
        action="die",
        container_id="c1",
        labels={"swarmlet.test": "u"},
        exit_code=137,
        time_ns=1_000_000_123,
        name="x",
        image="swarmlet/busybox:1",
    )


def test_event_from_docker_reads_health_status_and_ignores_other_types() -> None:
    health = container_event_from_docker(
        {"Type": "container", "Action": "health_status: healthy", "Actor": {"ID": "c"}, "time": 2}
    )
    assert health is not None
    assert health.health_status == "healthy"
    assert health.exit_code is None
    assert health.time_ns == 2_000_000_000
    assert container_event_from_docker({"Type": "network", "Action": "connect"}) is None


@pytest.mark.parametrize(
    ("memory_detail", "memory_bytes"),
    [
        ({"total_inactive_file": 100, "cache": 300}, 900),  # cgroup v1
        ({"inactive_file": 200}, 800),  # cgroup v2
        ({}, 1000),
    ],
)
def test_stats_from_docker_use_the_docker_cli_formulas(
    memory_detail: dict[str, int], memory_bytes: int
) -> None:
    raw = {
        "cpu_stats": {
            "cpu_usage": {"total_usage": 300},
            "system_cpu_usage": 2000,
            "online_cpus": 2,
        },
        "precpu_stats": {"cpu_usage": {"total_usage": 100}, "system_cpu_usage": 1000},
        "memory_stats": {"usage": 1000, "limit": 4096, "stats": memory_detail},
    }
    stats = container_stats_from_docker(raw)
    assert stats.cpu_percent == pytest.approx(40.0)  # 200/1000 of the machine x 2 cores
    assert stats.memory_bytes == memory_bytes
    assert stats.memory_limit_bytes == 4096


def test_stats_from_docker_of_a_stopped_container_are_zero() -> None:
    stats = container_stats_from_docker({"cpu_stats": {}, "precpu_stats": {}, "memory_stats": {}})
    assert (stats.cpu_percent, stats.memory_bytes, stats.memory_limit_bytes) == (0.0, 0, 0)


def test_mount_args_make_the_engine_api_mount_of_each_type() -> None:
    volume = MountSpec(
        target="/data",
        source="data",
        volume_nocopy=True,
        volume_labels={"a": "b"},
        volume_driver_opts={"type": "tmpfs"},
    )
    assert docker.types.Mount(**mount_args(volume)) == {
        "Target": "/data",
        "Source": "data",
        "Type": "volume",
        "ReadOnly": False,
        "VolumeOptions": {
            "NoCopy": True,
            "Labels": {"a": "b"},
            "DriverConfig": {"Name": "local", "Options": {"type": "tmpfs"}},
        },
    }
    bind = MountSpec(
        target="/etc/x", source="/x", type="bind", read_only=True, bind_propagation="rslave"
    )
    assert docker.types.Mount(**mount_args(bind)) == {
        "Target": "/etc/x",
        "Source": "/x",
        "Type": "bind",
        "ReadOnly": True,
        "BindOptions": {"Propagation": "rslave"},
    }
    tmpfs = MountSpec(target="/scratch", type="tmpfs", tmpfs_size_bytes=1 << 20, tmpfs_mode=0o700)
    assert docker.types.Mount(**mount_args(tmpfs)) == {
        "Target": "/scratch",
        "Source": None,
        "Type": "tmpfs",
        "ReadOnly": False,
        "TmpfsOptions": {"Mode": 0o700, "SizeBytes": 1 << 20},
    }


def test_mount_args_leave_docker_py_to_refuse_options_that_do_not_fit_the_type() -> None:
    bind = MountSpec(target="/y", source="/x", type="bind", volume_driver_opts={"o": "p"})
    with pytest.raises(docker.errors.InvalidArgument):
        docker.types.Mount(**mount_args(bind))


def test_create_args_ulimits_and_log_config_become_docker_py_host_config() -> None:
    spec = ContainerSpec(
        name="a",
        image="img:1",
        ulimits=(UlimitSpec("nofile", 1024, 2048),),
        log_driver="local",
        log_options={"max-size": "1m"},
    )
    _, host = container_create_args(spec)
    config = docker.types.HostConfig(version="1.41", **host)
    assert config["Ulimits"] == [{"Name": "nofile", "Soft": 1024, "Hard": 2048}]
    assert config["LogConfig"] == {"Type": "local", "Config": {"max-size": "1m"}}


def test_create_args_dns_read_only_tty_and_pids_limit_reach_the_engine_api() -> None:
    spec = ContainerSpec(
        name="a",
        image="img:1",
        dns=("10.0.0.53",),
        dns_search=("example.com",),
        dns_options=("ndots:2",),
        read_only=True,
        tty=True,
        pids_limit=100,
    )
    create, host = container_create_args(spec)
    assert create["tty"] is True
    config = docker.types.HostConfig(version="1.41", **host)
    assert (config["Dns"], config["DnsSearch"], config["DnsOptions"]) == (
        ["10.0.0.53"],
        ["example.com"],
        ["ndots:2"],
    )
    assert (config["ReadonlyRootfs"], config["PidsLimit"]) == (True, 100)


def test_create_args_log_options_without_a_driver_are_for_the_daemons_default() -> None:
    spec = ContainerSpec(name="a", image="img:1", log_options={"max-size": "1m"})
    _, host = container_create_args(spec)
    config = docker.types.HostConfig(version="1.41", **host)
    # An empty type: the daemon's default driver (Docker fills it in), given the options.
    assert config["LogConfig"] == {"Type": "", "Config": {"max-size": "1m"}}


@pytest.mark.parametrize(
    ("attrs", "subnet", "bridge"),
    [
        (
            {
                "Driver": "bridge",
                "IPAM": {
                    "Config": [
                        {"Subnet": "fd00::/64"},
                        {"Subnet": "10.1.0.0/24", "Gateway": "10.1.0.1"},
                    ]
                },
            },
            "10.1.0.0/24",
            "br-0123456789ab",
        ),
        (
            {"Driver": "bridge", "Options": {"com.docker.network.bridge.name": "sw-x"}},
            "",
            "sw-x",
        ),
        ({"Driver": "macvlan"}, "", ""),
    ],
)
def test_network_info_reads_the_first_ipv4_subnet_and_the_bridge_interface(
    attrs: dict[str, Any], subnet: str, bridge: str
) -> None:
    info = network_info_from_inspect({"Id": "0123456789abcdef", "Name": "n", **attrs})
    assert (info.subnet, info.bridge) == (subnet, bridge)
