"""state.specparse: service flags' values as docker reads them (mounts, `--publish-rm`, extra
hosts, capabilities, networks), what swarmlet cannot hold refused by name, and the checks of a
whole spec."""

from __future__ import annotations

import dataclasses
import math

import pytest

from swarmlet.errors import UsageError
from swarmlet.state.model import (
    FileRef,
    GenericResource,
    Healthcheck,
    Mount,
    NetworkAttachment,
    Placement,
    PortConfig,
    RestartPolicy,
    ServiceSpec,
    Ulimit,
    UpdateConfig,
)
from swarmlet.state.specparse import (
    effective_capabilities,
    merge_ulimits,
    normalize_capabilities,
    parse_dns_option,
    parse_dns_search,
    parse_dns_server,
    parse_duration,
    parse_extra_host,
    parse_generic_resource,
    parse_mount,
    parse_network,
    parse_port,
    parse_port_selector,
    parse_ulimit,
    validate_spec,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("type=volume,source=data,target=/data", Mount("volume", "/data", "data")),
        ("src=data,dst=/data,ro", Mount("volume", "/data", "data", read_only=True)),
        ("type=bind,source=/x,target=/y,readonly=true", Mount("bind", "/y", "/x", True)),
        ("type=tmpfs,target=/scratch", Mount("tmpfs", "/scratch")),
        (
            "source=data,target=/data,volume-driver=local,volume-opt=type=nfs",
            Mount("volume", "/data", "data", driver="local", driver_opts={"type": "nfs"}),
        ),
    ],
)
def test_mount_is_read_as_docker_reads_it(text: str, expected: Mount) -> None:
    assert parse_mount(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("type=overlay,target=/y", "type must be volume, bind or tmpfs"),
        ("type=volume,source=data", "needs target=/absolute/path"),
        ("type=bind,source=x,target=/y", "needs source=/absolute/path"),
        ("type=bind,source=/x,target=/y,volume-opt=o=p", "apply only to type=volume"),
        ("type=tmpfs,target=/y,volume-driver=local", "apply only to type=volume"),
    ],
)
def test_mount_docker_would_refuse_is_a_usage_error_naming_the_flag(
    text: str, message: str
) -> None:
    with pytest.raises(UsageError, match=message) as caught:
        parse_mount(text)
    assert str(caught.value).startswith("--mount:")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "type=volume,source=data,target=/data,volume-nocopy=false",
            Mount("volume", "/data", "data"),
        ),
        ("type=bind,source=/x,target=/y,bind-propagation=rprivate", Mount("bind", "/y", "/x")),
        ("type=bind,source=/x,target=/y,bind-recursive=enabled", Mount("bind", "/y", "/x")),
        ("type=bind,source=/x,target=/y,consistency=default", Mount("bind", "/y", "/x")),
        ("TYPE=tmpfs,Target=/t,readonly=0", Mount("tmpfs", "/t")),
    ],
)
def test_mount_keys_asking_for_dockers_default_are_accepted(text: str, expected: Mount) -> None:
    assert parse_mount(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("type=tmpfs,target=/t,tmpfs-size=64m", "tmpfs-size is not supported yet"),
        ("type=bind,source=/x,target=/y,bind-propagation=rshared", "bind-propagation is not"),
        ("type=bind,source=/x,target=/y,bind-nonrecursive=true", "bind-nonrecursive is not"),
        ("source=v,target=/y,volume-nocopy=true", "volume-nocopy is not supported yet"),
        ("source=v,target=/y,volume-subpath=a", "volume-subpath is not supported yet"),
        ("type=bind,source=/x,target=/y,consistency=cached", "consistency is not supported yet"),
        ("source=v,target=/y,size=1", "unexpected key 'size'"),
        ("source=v,target=/y,readonly=yes", "invalid boolean 'yes'"),
        ("source=v,target", "invalid field 'target'"),
    ],
)
def test_mount_keys_a_mount_cannot_hold_are_refused_by_name(text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_mount(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("80", (80, "tcp", None)),
        ("80/tcp", (80, "tcp", None)),
        ("53/udp", (53, "udp", None)),
        ("8080:80", (80, "tcp", None)),
        ("8080:80/udp", (80, "udp", None)),
        ("published=8080,target=80", (80, "tcp", None)),
        ("target=80,protocol=udp,mode=host", (80, "udp", "host")),
    ],
)
def test_publish_rm_selects_by_target_port(text: str, expected: tuple[int, str, str]) -> None:
    assert parse_port_selector(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "invalid port ''"),
        ("80/sctp", "protocol must be tcp or udp"),
        ("x:80", "invalid port 'x'"),
        ("published=80", "needs target="),
        ("target=80,mode=vip", "mode must be ingress or host"),
        ("target=80,colour=red", "unknown field"),
        ("70000", "expected 1-65535"),
    ],
)
def test_publish_rm_refuses_what_names_no_port(text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_port_selector(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("published=8080,target=80,proxy-protocol=v2", PortConfig(8080, 80, proxy_protocol="v2")),
        (
            "published=8080,target=80,protocol=tcp,mode=ingress,proxy-protocol=v1",
            PortConfig(8080, 80, proxy_protocol="v1"),
        ),
        ("published=8080,target=80", PortConfig(8080, 80)),  # no header unless asked for
        ("8080:80", PortConfig(8080, 80)),
    ],
)
def test_publish_takes_a_proxy_protocol_version(text: str, expected: PortConfig) -> None:
    assert parse_port(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("published=8080,target=80,proxy-protocol=v3", "proxy-protocol must be v1 or v2"),
        ("published=8080,target=80,proxy-protocol=", "proxy-protocol must be v1 or v2"),
        ("published=53,target=53,protocol=udp,proxy-protocol=v2", "for tcp ports only"),
        ("published=8080,target=80,mode=host,proxy-protocol=v1", "needs mode=ingress"),
    ],
)
def test_publish_refuses_a_proxy_protocol_the_mesh_cannot_send(text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_port(text, "--publish-add")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("db:10.0.0.5", "db:10.0.0.5"),
        ("db=10.0.0.5", "db:10.0.0.5"),
        ("gw:host-gateway", "gw:host-gateway"),
        ("v6:::1", "v6:::1"),
        ("v6=[fe80::1]", "v6:fe80::1"),
    ],
)
def test_extra_hosts_are_kept_as_host_colon_address(text: str, expected: str) -> None:
    assert parse_extra_host(text) == expected


@pytest.mark.parametrize("text", ["db", ":10.0.0.5", "db:", "db:10.0.0", "db:example.com"])
def test_extra_hosts_need_a_host_and_an_address(text: str) -> None:
    with pytest.raises(UsageError, match=r"^--host: "):
        parse_extra_host(text)


@pytest.mark.parametrize(
    ("add", "drop", "expected"),
    [
        (["net_admin", " sys_time", "CAP_NET_ADMIN"], [], (("CAP_NET_ADMIN", "CAP_SYS_TIME"), ())),
        ([], ["all", "chown"], ((), ("ALL",))),
        (["chown"], ["CAP_CHOWN", "kill"], (("CAP_CHOWN",), ("CAP_KILL",))),
        (["ALL"], ["chown"], (("ALL",), ())),
    ],
)
def test_capabilities_are_normalized_and_adding_wins(
    add: list[str], drop: list[str], expected: tuple[tuple[str, ...], tuple[str, ...]]
) -> None:
    assert effective_capabilities(add, drop) == expected


def test_normalized_capabilities_are_sorted_without_repeats() -> None:
    assert normalize_capabilities(["b", "A", "cap_b", ""]) == ("CAP_A", "CAP_B")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("back", NetworkAttachment("back")),
        ("name=back", NetworkAttachment("back")),
        ("name=back,alias=db,alias=pg", NetworkAttachment("back", ("db", "pg"))),
        ("target=back,alias=db", NetworkAttachment("back", ("db",))),
    ],
)
def test_networks_read_as_dockers_network_option(text: str, expected: NetworkAttachment) -> None:
    assert parse_network(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "invalid network name ''"),
        ("alias=db", "invalid network name ''"),
        ("back/1", "invalid network name"),
        ("name=back,alias=a b", "invalid alias"),
        ("name=back,ip=10.0.0.2", "ip is not supported yet"),
        ("name=back,driver-opt=a=b", "driver-opt is not supported yet"),
        ("name=back,colour=red", "invalid field key 'colour'"),
    ],
)
def test_networks_swarmlet_cannot_make_are_refused(text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_network(text)


def _spec(**changes: object) -> ServiceSpec:
    return dataclasses.replace(ServiceSpec(name="web", image="nginx:1"), **changes)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (_spec(secrets=(FileRef("a", "x"), FileRef("b", "x"))), "duplicate secret target x"),
        (_spec(configs=(FileRef("a", "/x"), FileRef("b", "/x"))), "duplicate config target /x"),
        (
            _spec(networks=(NetworkAttachment("n"), NetworkAttachment("n", ("a",)))),
            "network n is attached twice",
        ),
        (_spec(healthcheck=Healthcheck(("CMD", "true"), retries=-1)), "must not be negative"),
        (
            _spec(placement=Placement(constraints=("engine.labels.ssd==true",))),
            "engine.labels.ssd is not supported",
        ),
        # what the API is sent is checked as the flags are
        (_spec(ulimits=(Ulimit("nofiles", 1, 1),)), "invalid ulimit name 'nofiles'"),
        (_spec(ulimits=(Ulimit("nofile", 2, 1),)), "soft limit must be less than or equal"),
        (_spec(ulimits=(Ulimit("nofile", 1, 1),) * 2), "--ulimit: nofile is given twice"),
        (_spec(pids_limit=-1), r"--limit-pids: must be 0 \(unlimited\) or more, got -1"),
        (_spec(dns_servers=("dns.google",)), "--dns: invalid IP address 'dns.google'"),
        (_spec(dns_search=("a b",)), "--dns-search: invalid search domain 'a b'"),
        (_spec(dns_options=("",)), "--dns-option: invalid option ''"),
        (_spec(log_options={"": "x"}), "--log-opt: invalid option with no name"),
        (_spec(generic_resources=(GenericResource("gpu", 0),)), "a count of 1 or more"),
    ],
)
def test_validate_spec_refuses_what_docker_refuses(spec: ServiceSpec, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        validate_spec(spec)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("nofile=1024:2048", Ulimit("nofile", 1024, 2048)),
        ("nproc=64", Ulimit("nproc", 64, 64)),  # HARD defaults to SOFT
        ("core=-1", Ulimit("core", -1, -1)),  # unlimited
        ("memlock=1024:-1", Ulimit("memlock", 1024, -1)),
    ],
)
def test_ulimit_is_read_as_go_units_reads_it(text: str, expected: Ulimit) -> None:
    assert parse_ulimit(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("nofile", "--ulimit: invalid 'nofile': expected NAME=SOFT"),
        ("=1", "expected NAME=SOFT"),
        ("nofile=1:2:3", "at most two limits"),
        ("nofile=1k", "expected whole numbers"),
        ("open_files=1", "invalid ulimit name 'open_files': expected one of core, cpu"),
        ("nofile=10:5", "soft limit must be less than or equal to the hard limit: 10 > 5"),
        ("nofile=-1:5", "soft limit must be less than or equal to the hard limit: -1 > 5"),
        ("nofile=-2", "limits must be -1 \\(unlimited\\) or more"),
    ],
)
def test_ulimit_docker_would_refuse_is_a_usage_error(text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_ulimit(text)


def test_ulimits_merge_one_per_name_sorted_later_winning() -> None:
    kept = (Ulimit("nproc", 1, 1), Ulimit("core", 0, 0))
    added = (Ulimit("nproc", 2, 2), Ulimit("nofile", 3, 3))
    assert merge_ulimits(kept, added) == (
        Ulimit("core", 0, 0),
        Ulimit("nofile", 3, 3),
        Ulimit("nproc", 2, 2),
    )


def test_dns_values_are_checked_as_docker_checks_them() -> None:
    assert parse_dns_server(" 8.8.8.8") == "8.8.8.8"
    assert parse_dns_server("2001:4860:4860:0::8888") == "2001:4860:4860::8888"
    assert parse_dns_search("example.com.") == "example.com."
    assert parse_dns_search(".") == "."  # docker's "no search domain"
    assert parse_dns_option("ndots:2") == "ndots:2"
    for bad in ("-a.example", "a..example", "a_b.example", "x" * 256):
        with pytest.raises(UsageError, match="--dns-search: invalid search domain"):
            parse_dns_search(bad)
    with pytest.raises(UsageError, match=r"--dns: invalid IP address '8\.8\.8'"):
        parse_dns_server("8.8.8")


@pytest.mark.parametrize(
    ("text", "result"),
    [
        ("gpu=2", GenericResource("gpu", 2)),
        (" fpga = 1 ", GenericResource("fpga", 1)),
        ("gpu", "expected KIND=COUNT"),
        ("=2", "expected KIND=COUNT"),
        ("gpu=GPU-0a1b", "named resources, KIND=ID, are not supported"),
    ],
)
def test_generic_resource_is_kind_and_count(text: str, result: GenericResource | str) -> None:
    if isinstance(result, GenericResource):
        assert parse_generic_resource(text) == result
    else:
        with pytest.raises(UsageError, match=result):
            parse_generic_resource(text)


@pytest.mark.parametrize("text", ["inf", "nan", "-1", "-1s", "1e12", "300000000000s"])
def test_a_duration_outside_0_to_285_years_is_refused(text: str) -> None:
    # `inf` and `nan` were taken, and every agent given the task crashed converting them.
    with pytest.raises(UsageError, match=r"--stop-grace-period: (a duration must|invalid dur)"):
        parse_duration(text, "--stop-grace-period")


def test_the_durations_of_a_spec_from_the_api_are_checked_too() -> None:
    base = ServiceSpec("web", "nginx")
    for bad, flag in (
        (dataclasses.replace(base, stop_grace_period_s=math.inf), "--stop-grace-period"),
        (
            dataclasses.replace(base, healthcheck=Healthcheck(interval_s=math.nan)),
            "--health-interval",
        ),
        (
            dataclasses.replace(base, rollback=UpdateConfig(monitor_s=-1.0)),
            "--rollback-monitor",
        ),
        (dataclasses.replace(base, restart=RestartPolicy(delay_s=math.inf)), "--restart-delay"),
    ):
        with pytest.raises(UsageError, match=flag):
            validate_spec(bad)
    with pytest.raises(UsageError, match="--update-max-failure-ratio: must be between 0 and 1"):
        validate_spec(dataclasses.replace(base, update=UpdateConfig(max_failure_ratio=math.nan)))
    validate_spec(dataclasses.replace(base, stop_grace_period_s=9e9))


def test_more_placement_preferences_than_the_scheduler_takes_are_refused() -> None:
    # A thousand overflowed the scheduler's recursion and stopped every leader in turn.
    prefs = tuple(f"spread=node.labels.l{i}" for i in range(17))
    validate_spec(ServiceSpec("web", "nginx", placement=Placement(preferences=prefs[:16])))
    with pytest.raises(UsageError, match="--placement-pref: at most 16, got 17"):
        validate_spec(ServiceSpec("web", "nginx", placement=Placement(preferences=prefs)))
