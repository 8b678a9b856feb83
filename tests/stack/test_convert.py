"""Stack conversion: loaded documents -> ServiceSpecs and the stack's named objects.

The corpus tests convert every file docker accepts and compare each spec with what docker's
``stack config`` document says, read with the small independent readers below (not with the
converter). docker-cli's full example is not deployable by docker itself (undefined volume and
network, a constraint the daemon rejects); the test shows each of those errors with its key
path, then converts the example with them repaired and checks its values.
"""

from __future__ import annotations

import copy
import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from swarmlet.errors import StackError
from swarmlet.stack.convert import StackPlan, convert_stack
from swarmlet.stack.loader import LoadedStack, load_stack
from swarmlet.stack.objects import SecretDef, VolumeDef
from swarmlet.state.model import (
    AutoscalePolicy,
    FailureAction,
    FileRef,
    GenericResource,
    Healthcheck,
    Mount,
    NetworkAttachment,
    PortConfig,
    Resources,
    RestartCondition,
    RestartPolicy,
    ServiceMode,
    Ulimit,
    UpdateConfig,
    UpdateOrder,
)

from .corpus import RESULTS, expected_config, stage

FULL_EXAMPLE = "docker__cli__cli_compose_loader_full-example.yml"
ACCEPTED = sorted(n for n, r in RESULTS.items() if r["rc"] == 0 and n != FULL_EXAMPLE)

# --- independent readers of docker's normalised document ----------------------------------

_GO_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "µs": 1e-6, "ns": 1e-9}


def _seconds(text: str | None, default: float = 0.0) -> float:
    if text is None:
        return default
    parts = re.findall(r"([0-9.]+)(h|ms|m|µs|ns|s)", text)
    assert "".join(n + u for n, u in parts) == text, text
    return sum(float(n) * _GO_UNITS[u] for n, u in parts)


def _nano_cpus(text: str | None) -> int:
    return int(Decimal(text) * 10**9) if text else 0


def _resources(raw: dict[str, Any] | None) -> Resources:
    raw = raw or {}
    return Resources(_nano_cpus(raw.get("cpus")), int(raw.get("memory", 0)))


def _restart(service: dict[str, Any]) -> RestartPolicy:
    policy = service.get("deploy", {}).get("restart_policy")
    if policy is None:
        # legacy `restart: always` in the corpus -> condition any
        assert service.get("restart") in (None, "always")
        return RestartPolicy()
    return RestartPolicy(
        condition=RestartCondition(policy.get("condition", "any")),
        delay_s=_seconds(policy["delay"]) if "delay" in policy else None,
        max_attempts=policy.get("max_attempts", 0),
        window_s=_seconds(policy.get("window")),
    )


def _update(raw: dict[str, Any] | None) -> UpdateConfig:
    if raw is None:
        return UpdateConfig()
    return UpdateConfig(
        parallelism=raw.get("parallelism", 1),
        delay_s=_seconds(raw.get("delay")),
        order=UpdateOrder(raw.get("order", "stop-first")),
        failure_action=FailureAction(raw.get("failure_action", "pause")),
        monitor_s=_seconds(raw.get("monitor"), 5.0),
        max_failure_ratio=raw.get("max_failure_ratio", 0.0),
    )


def _healthcheck(raw: dict[str, Any] | None) -> Healthcheck | None:
    if raw is None:
        return None
    return Healthcheck(
        test=tuple(raw.get("test", ())),
        interval_s=_seconds(raw.get("interval")),
        timeout_s=_seconds(raw.get("timeout")),
        retries=raw.get("retries", 0),
        start_period_s=_seconds(raw.get("start_period")),
    )


def _ports(raw: list[dict[str, Any]]) -> tuple[PortConfig, ...]:
    return tuple(
        PortConfig(p["published"], p["target"], p.get("protocol", "tcp"), p.get("mode", "ingress"))
        for p in raw
        if p.get("published")
    )


def _plan(name: str, tmp_path: Path) -> tuple[StackPlan, dict[str, Any]]:
    files, environ = stage(name, tmp_path)
    plan = convert_stack("st", load_stack(files, environ), file=str(files[0]))
    return plan, expected_config(name, tmp_path)


# --- the corpus -----------------------------------------------------------------------------


def test_corpus_has_every_accepted_file() -> None:
    assert len(ACCEPTED) == 24


@pytest.mark.parametrize("name", ACCEPTED)
def test_corpus_file_converts_to_what_dockers_document_says(name: str, tmp_path: Path) -> None:
    plan, expected = _plan(name, tmp_path)
    services = expected["services"]
    specs = {spec.name.removeprefix("st_"): spec for spec in plan.services}
    assert sorted(specs) == sorted(services)
    for key, service in services.items():
        spec = specs[key]
        deploy = service.get("deploy", {})
        assert spec.stack == "st"
        assert spec.image == service["image"]
        assert spec.command == (tuple(service["command"]) if "command" in service else None)
        assert spec.entrypoint == (
            tuple(service["entrypoint"]) if "entrypoint" in service else None
        )
        assert spec.env == {k: v or "" for k, v in service.get("environment", {}).items()}
        assert spec.labels == deploy.get("labels", {})
        assert spec.container_labels == service.get("labels", {})
        assert spec.mode == ServiceMode(deploy.get("mode", "replicated"))
        assert spec.replicas == deploy.get("replicas", 1)
        assert spec.ports == _ports(service.get("ports", []))
        placement = deploy.get("placement", {})
        assert spec.placement.constraints == tuple(placement.get("constraints", ()))
        assert spec.placement.max_replicas_per_node == placement.get("max_replicas_per_node", 0)
        resources = deploy.get("resources", {})
        assert spec.limits == _resources(resources.get("limits"))
        assert spec.reservations == _resources(resources.get("reservations"))
        assert spec.restart == _restart(service)
        assert spec.update == _update(deploy.get("update_config"))
        assert spec.rollback == _update(deploy.get("rollback_config"))
        assert spec.healthcheck == _healthcheck(service.get("healthcheck"))
        assert spec.stop_grace_period_s == _seconds(service.get("stop_grace_period"), 10.0)
        assert spec.user == service.get("user", "")
        assert len(spec.mounts) == len(service.get("volumes", []))
        assert len(spec.secrets) == len(service.get("secrets", []))
        assert len(spec.configs) == len(service.get("configs", []))
        assert spec.depends_on == tuple(f"st_{d}" for d in service.get("depends_on", []))
        logging = service.get("logging", {})
        assert spec.log_driver == logging.get("driver", "")
        assert spec.log_options == logging.get("options", {})
        assert spec.dns_servers == tuple(service.get("dns", ()))
        assert (spec.read_only, spec.tty) == (
            service.get("read_only", False),
            service.get("tty", False),
        )
        assert spec.pids_limit == resources.get("limits", {}).get("pids", 0)


@pytest.mark.parametrize("name", ACCEPTED)
def test_corpus_file_orders_dependencies_first(name: str, tmp_path: Path) -> None:
    plan, _ = _plan(name, tmp_path)
    seen: set[str] = set()
    for spec in plan.services:
        assert set(spec.depends_on) <= seen
        seen.add(spec.name)


@pytest.mark.parametrize("name", ACCEPTED)
def test_corpus_named_volumes_and_secrets_resolve_to_stack_objects(
    name: str, tmp_path: Path
) -> None:
    plan, expected = _plan(name, tmp_path)
    volumes = {v.key: v.name for v in plan.volumes}
    for key, vol in expected.get("volumes", {}).items():
        assert volumes[key] == vol.get("name", f"st_{key}")
    secrets = {s.key: s for s in plan.secrets}
    for key, secret in expected.get("secrets", {}).items():
        assert secrets[key].external == secret.get("external", False)
        assert secrets[key].name == secret.get("name", f"st_{key}")
        assert secrets[key].file == secret.get("file", "")
    known = set(volumes.values())
    for spec in plan.services:
        for mount in spec.mounts:
            if mount.type == "volume" and mount.source:
                assert mount.source in known
        for ref in spec.secrets:
            assert ref.target.startswith("/run/secrets/")
            assert ref.name in {s.name for s in plan.secrets}


@pytest.mark.parametrize("name", ACCEPTED)
def test_corpus_warnings_start_with_the_loaders(name: str, tmp_path: Path) -> None:
    files, environ = stage(name, tmp_path)
    loaded = load_stack(files, environ)
    plan = convert_stack("st", loaded, file=str(files[0]))
    assert plan.warnings[: len(loaded.warnings)] == loaded.warnings


def test_corpus_spread_over_node_id_is_ignored_with_a_warning(tmp_path: Path) -> None:
    plan, _ = _plan("swarmlet__swarmlet__modules_core_router_docker-compose.yml", tmp_path)
    (traefik,) = (s for s in plan.services if s.name == "st_traefik")
    assert traefik.placement.preferences == ()
    assert any("spread over 'node.id' ignored" in w for w in plan.warnings)


# --- docker-cli's full example ------------------------------------------------------------


def _full_example(tmp_path: Path) -> LoadedStack:
    files, environ = stage(FULL_EXAMPLE, tmp_path)
    return load_stack(files, environ)


def test_full_example_fails_where_docker_fails_each_with_its_path(tmp_path: Path) -> None:
    loaded = _full_example(tmp_path)
    config = copy.deepcopy(loaded.config)
    foo = config["services"]["foo"]

    def error() -> StackError:
        with pytest.raises(StackError) as caught:
            convert_stack("st", LoadedStack(config, ()), file="full.yml")
        assert caught.value.file == "full.yml"
        return caught.value

    # swarmlet's own rule: depends_on names services of this stack
    assert error().path == "services.foo.depends_on[0]"
    del foo["depends_on"]
    # docker's daemon: "constraint expected one operator from ==, !="
    assert error().path == "services.foo.deploy.placement.constraints[0]"
    foo["deploy"]["placement"]["constraints"] = ["node.hostname==foo"]
    # docker's convert: undefined volume "datavolume"
    e = error()
    assert (e.path, e.message) == (
        "services.foo.volumes[5].source",
        'undefined volume "datavolume"',
    )
    config["volumes"]["datavolume"] = {}
    # swarmlet has no cluster (CSI) volumes
    assert error().path == "services.foo.volumes[8].type"
    foo["volumes"] = [v for v in foo["volumes"] if v["type"] != "cluster"]
    # docker's convert: undefined network
    assert error().path == "services.foo.networks.other-other-network"
    config["networks"]["other-other-network"] = {}
    # generic resources are reserved (nodes advertise them): the rest converts
    plan = convert_stack("st", LoadedStack(config, ()), file="full.yml")
    [spec] = [s for s in plan.services if s.name == "st_foo"]
    assert spec.generic_resources == (GenericResource("gpu", 2), GenericResource("ssd", 1))


def _repaired_full_example(tmp_path: Path) -> StackPlan:
    loaded = _full_example(tmp_path)
    config = copy.deepcopy(loaded.config)
    foo = config["services"]["foo"]
    del foo["depends_on"]
    foo["deploy"]["placement"]["constraints"] = ["node.hostname==foo"]
    foo["volumes"] = [v for v in foo["volumes"] if v["type"] != "cluster"]
    config["volumes"]["datavolume"] = {}
    config["networks"]["other-other-network"] = {}
    del foo["deploy"]["resources"]["reservations"]["generic_resources"]
    return convert_stack("st", LoadedStack(config, loaded.warnings), file="full.yml")


def test_full_example_values_come_out_right(tmp_path: Path) -> None:
    plan = _repaired_full_example(tmp_path)
    (foo,) = plan.services
    assert foo.name == "st_foo"
    assert foo.image == "redis"
    assert foo.command == ("bundle", "exec", "thin", "-p", "3000")
    assert foo.entrypoint == ("/code/entrypoint.sh", "-p", "3000")
    assert foo.env == {
        "BAR": "bar_from_env_file_2",
        "BAZ": "baz_from_service_def",
        "FOO": "foo_from_env_file",
        "QUX": "",
    }
    assert foo.labels == {"FOO": "BAR"}
    assert foo.container_labels["com.example.number"] == "42"
    assert foo.container_labels["com.example.empty-label"] == ""
    assert (foo.mode, foo.replicas) == (ServiceMode.REPLICATED, 6)
    assert foo.ports[0] == PortConfig(8000, 8000)
    assert PortConfig(49100, 22) in foo.ports
    assert len(foo.ports) == 16  # the 6 target-only ports (3000-3005) are not published
    assert foo.placement.preferences == ("node.labels.az",)
    assert foo.placement.max_replicas_per_node == 5
    assert foo.limits == Resources(nano_cpus=1_000_000, memory_bytes=50 * 2**20)
    assert foo.reservations == Resources(nano_cpus=100_000, memory_bytes=20 * 2**20)
    assert foo.restart == RestartPolicy(RestartCondition.ON_FAILURE, 5.0, 3, 120.0)
    update = UpdateConfig(3, 10.0, UpdateOrder.START_FIRST, FailureAction.CONTINUE, 60.0, 0.3)
    assert foo.update == update
    assert foo.rollback == update
    assert foo.healthcheck == Healthcheck(("CMD-SHELL", 'echo "hello world"'), 10.0, 1.0, 5, 15.0)
    assert foo.mounts[0] == Mount("volume", "/var/lib/mysql")
    assert foo.mounts[1] == Mount("bind", "/var/lib/mysql", "/opt/data")
    assert foo.mounts[4] == Mount("bind", "/etc/configs/", f"{tmp_path}/home/configs", True)
    assert foo.mounts[5] == Mount("volume", "/var/lib/mysql", "st_datavolume")
    assert foo.mounts[7] == Mount("tmpfs", "/opt")
    assert foo.secrets == (
        FileRef("st_secret1", "/run/secrets/secret1"),
        FileRef("my_secret", "/run/secrets/my_secret", "103", "103", 0o440),
    )
    assert foo.configs == (
        FileRef("st_config1", "/config1"),
        FileRef("my_config", "/my_config", "103", "103", 0o440),
    )
    assert (foo.user, foo.working_dir, foo.hostname) == ("someone", "/code", "foo")
    assert (foo.stop_signal, foo.stop_grace_period_s) == ("SIGUSR1", 20.0)
    assert foo.extra_hosts == (
        "somehost:162.242.195.82",
        "otherhost:50.31.209.229",
        "host.docker.internal:host-gateway",
    )
    assert (foo.cap_add, foo.cap_drop) == (("ALL",), ("NET_ADMIN", "SYS_ADMIN"))
    assert foo.sysctls == {"net.core.somaxconn": "1024", "net.ipv4.tcp_syncookies": "0"}
    # the container settings service.go converts
    assert foo.ulimits == (Ulimit("nofile", 20000, 40000), Ulimit("nproc", 65535, 65535))
    assert (foo.log_driver, foo.log_options) == (
        "syslog",
        {"syslog-address": "tcp://192.168.0.42:123"},
    )
    assert foo.dns_servers == ("8.8.8.8", "9.9.9.9")
    assert foo.dns_search == ("dc1.example.com", "dc2.example.com")
    assert (foo.read_only, foo.tty, foo.pids_limit) == (True, True, 100)


def test_full_example_named_objects(tmp_path: Path) -> None:
    plan = _repaired_full_example(tmp_path)
    secrets = {s.key: s for s in plan.secrets}
    assert secrets["secret1"] == SecretDef(
        "secret1", "st_secret1", f"{tmp_path}/secret_data", False, {"foo": "bar"}
    )
    assert secrets["secret2"] == SecretDef("secret2", "my_secret", external=True)
    assert secrets["secret4"].name == "bar"  # a given name is not scoped
    assert {c.key: c.name for c in plan.configs}["config2"] == "my_config"
    volumes = {v.key: v for v in plan.volumes}
    assert volumes["another-volume"] == VolumeDef(
        "another-volume", "user_specified_name", False, "vsphere", {"baz": "1", "foo": "bar"}
    )
    assert volumes["external-volume3"].name == "this-is-volume3"
    assert volumes["external-volume3"].external
    assert [n.name for n in plan.networks] == [
        "st_other-network",
        "st_other-other-network",
        "st_some-network",
    ]
    assert plan.networks[0].driver == "overlay"
    assert [a.name for a in plan.services[0].networks] == [n.name for n in plan.networks]


def test_full_example_warns_about_what_swarmlet_ignores(tmp_path: Path) -> None:
    warnings = _repaired_full_example(tmp_path).warnings
    assert ("services.foo: swarmlet ignores stdin_open, tmpfs") in warnings
    assert not any("ulimits" in w or "pids" in w or "logging" in w for w in warnings)
    assert any(w.startswith("services.foo.environment.QUX:") for w in warnings)
    assert any(w.startswith("services.foo.ports[0]: target port 3000") for w in warnings)
    assert any(
        w.startswith("services.foo.deploy.endpoint_mode: swarmlet has no dnsrr") for w in warnings
    )
    assert "services.foo.healthcheck: swarmlet ignores start_interval" in warnings


# --- small stacks ---------------------------------------------------------------------------


def _convert(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> StackPlan:
    stack = tmp_path / "stack.yml"
    stack.write_text(text)
    return convert_stack("st", load_stack([stack], environ or {}), file=str(stack))


def _error(tmp_path: Path, text: str) -> StackError:
    with pytest.raises(StackError) as caught:
        _convert(tmp_path, text)
    assert caught.value.file == str(tmp_path / "stack.yml")
    return caught.value


def _services(deps: dict[str, list[str]]) -> str:
    lines = ['version: "3.8"', "services:"]
    for name, wanted in deps.items():
        lines += [f"  {name}:", "    image: busybox"]
        if wanted:
            lines.append(f"    depends_on: [{', '.join(wanted)}]")
    return "\n".join(lines) + "\n"


def test_services_follow_their_dependencies_stably(tmp_path: Path) -> None:
    plan = _convert(
        tmp_path, _services({"web": ["db", "cache"], "db": [], "cache": ["db"], "a": []})
    )
    assert [s.name for s in plan.services] == ["st_a", "st_db", "st_cache", "st_web"]
    web = plan.services[-1]
    assert web.depends_on == ("st_db", "st_cache")


def test_services_without_dependencies_keep_name_order(tmp_path: Path) -> None:
    plan = _convert(tmp_path, _services({"c": [], "a": [], "b": []}))
    assert [s.name for s in plan.services] == ["st_a", "st_b", "st_c"]


def test_dependency_cycle_is_an_error_naming_its_services(tmp_path: Path) -> None:
    error = _error(tmp_path, _services({"a": ["b"], "b": ["c"], "c": ["a"], "d": []}))
    assert error.message == "dependency cycle between services: a -> b -> c -> a"
    assert error.path == "services.a.depends_on"


def test_self_dependency_is_a_cycle(tmp_path: Path) -> None:
    error = _error(tmp_path, _services({"a": ["a"]}))
    assert error.message == "dependency cycle between services: a -> a"


def test_dependency_on_unknown_service_is_an_error(tmp_path: Path) -> None:
    error = _error(tmp_path, _services({"a": ["b", "zz"], "b": []}))
    assert error.path == "services.a.depends_on[1]"
    assert error.message == 'service "a" depends on undefined service "zz"'


def test_service_without_image_is_dockers_error(tmp_path: Path) -> None:
    error = _error(tmp_path, 'version: "3.8"\nservices:\n  api:\n    command: ["x"]\n')
    assert error.path == "services.api.image"
    assert error.message == "invalid image reference for service api: no image specified"


AUTOSCALE = """\
version: "3.8"
services:
  api:
    image: busybox
    x-swarmlet-autoscale: {autoscale}
    deploy:
      replicas: 3
"""


def test_autoscale_extension_becomes_a_policy(tmp_path: Path) -> None:
    text = AUTOSCALE.format(autoscale="{min: 2, max: 10, cpu: 70, memory: 512M, rps: 100}")
    (api,) = _convert(tmp_path, text).services
    assert api.autoscale == AutoscalePolicy(2, 10, 70.0, 512 * 2**20, 100.0)
    assert api.replicas == 3


def test_autoscale_inside_deploy_is_read_when_the_document_has_it() -> None:
    # docker's schema (and so the loader) rejects x-* keys under deploy; a document that
    # has one anyway (e.g. built by hand) is still understood.
    config = {
        "services": {
            "api": {
                "image": "busybox",
                "deploy": {"x-swarmlet-autoscale": {"min": 1, "max": 4, "cpu": 50}},
            }
        }
    }
    (api,) = convert_stack("st", LoadedStack(config, ()), file="f").services
    assert api.autoscale == AutoscalePolicy(1, 4, 50.0)


@pytest.mark.parametrize(
    ("autoscale", "path", "fragment"),
    [
        ("{min: 5, max: 2, cpu: 70}", ".max", "must be at least min (5)"),
        ("{min: -1, max: 2, cpu: 70}", ".min", "must be 0 or more"),
        ("{min: 1.5, max: 2, cpu: 70}", ".min", "whole number"),
        ("{max: 2, cpu: 70}", ".min", "whole number"),
        ("{min: 1, max: 2}", "", "needs a target"),
        ("{min: 1, max: 2, cpu: 0}", ".cpu", "above 0"),
        ("{min: 1, max: 2, memory: lots}", ".memory", "invalid size"),
        ("{min: 1, max: 2, cpu: 50, gpu: 1}", ".gpu", "unknown key 'gpu'"),
        ("[1, 2]", "", "expected a mapping"),
    ],
)
def test_bad_autoscale_is_an_error_with_its_path(
    tmp_path: Path, autoscale: str, path: str, fragment: str
) -> None:
    error = _error(tmp_path, AUTOSCALE.format(autoscale=autoscale))
    assert error.path == "services.api.x-swarmlet-autoscale" + path
    assert fragment in error.message


def test_autoscale_on_a_global_service_is_an_error(tmp_path: Path) -> None:
    text = AUTOSCALE.format(autoscale="{min: 1, max: 2, cpu: 50}").replace(
        "replicas: 3", "mode: global"
    )
    assert "cannot scale" in _error(tmp_path, text).message


def test_replicas_outside_autoscale_range_warns(tmp_path: Path) -> None:
    plan = _convert(tmp_path, AUTOSCALE.format(autoscale="{min: 5, max: 8, cpu: 50}"))
    assert any("replicas (3) is outside min..max (5..8)" in w for w in plan.warnings)


def test_rebalance_extension_turns_rebalancing_off(tmp_path: Path) -> None:
    text = 'version: "3.8"\nservices:\n  api:\n    image: x\n    x-swarmlet-rebalance: false\n'
    (api,) = _convert(tmp_path, text).services
    assert api.rebalance is False
    bad = text.replace("false", "nope")
    assert _error(tmp_path, bad).path == "services.api.x-swarmlet-rebalance"


PROXY_PROTOCOL = """\
version: "3.8"
services:
  api:
    image: busybox
    ports:
      - "8080:80"
      - "8443:443"
      - "8443:443/udp"
      - "5353:53/udp"
      - target: 9000
        published: 9000
        mode: host
    x-swarmlet-proxy-protocol: {proxy_protocol}
"""


def test_proxy_protocol_extension_sets_the_version_of_the_ports_it_names(tmp_path: Path) -> None:
    text = PROXY_PROTOCOL.format(proxy_protocol='{"8080": v2, "8443": v1}')
    (api,) = _convert(tmp_path, text).services
    assert api.ports == (
        PortConfig(8080, 80, proxy_protocol="v2"),
        PortConfig(8443, 443, proxy_protocol="v1"),
        PortConfig(8443, 443, "udp"),  # the same number over UDP: no connection, no header
        PortConfig(5353, 53, "udp"),
        PortConfig(9000, 9000, mode="host"),
    )


def test_ports_have_no_proxy_protocol_without_the_extension(tmp_path: Path) -> None:
    text = PROXY_PROTOCOL.replace("    x-swarmlet-proxy-protocol: {proxy_protocol}\n", "")
    (api,) = _convert(tmp_path, text).services
    assert all(port.proxy_protocol == "" for port in api.ports)


@pytest.mark.parametrize(
    ("proxy_protocol", "path", "fragment"),
    [
        ('{"8081": v2}', ".8081", "port 8081 is not published by this service"),
        ('{"8080": v3}', ".8080", "must be v1 or v2, got 'v3'"),
        ('{"5353": v2}', ".5353", "for tcp ports only"),
        ('{"9000": v1}', ".9000", "needs mode=ingress"),
        ('{"http": v1}', ".http", "expected a published port number"),
        ('{"8080": v1, "08080": v2}', ".08080", "port 8080 is given twice"),
        ("[8080]", "", "expected a mapping"),
    ],
)
def test_bad_proxy_protocol_is_an_error_with_its_path(
    tmp_path: Path, proxy_protocol: str, path: str, fragment: str
) -> None:
    error = _error(tmp_path, PROXY_PROTOCOL.format(proxy_protocol=proxy_protocol))
    assert error.path == "services.api.x-swarmlet-proxy-protocol" + path
    assert fragment in error.message


def test_defaults_for_a_minimal_service(tmp_path: Path) -> None:
    plan = _convert(tmp_path, 'version: "3.8"\nservices:\n  api:\n    image: x\n')
    (api,) = plan.services
    assert (api.replicas, api.mode, api.command, api.healthcheck) == (
        1,
        ServiceMode.REPLICATED,
        None,
        None,
    )
    assert api.restart == RestartPolicy()
    assert api.update == UpdateConfig()
    assert api.stop_grace_period_s == 10.0
    assert [n.name for n in plan.networks] == ["st_default"]
    assert api.networks == (NetworkAttachment("st_default"),)


def test_string_command_is_shell_split(tmp_path: Path) -> None:
    text = (
        'version: "3.8"\nservices:\n  api:\n    image: x\n'
        "    command: sh -c 'echo \"a b\"'\n    entrypoint: /init --verbose\n"
    )
    (api,) = _convert(tmp_path, text).services
    assert api.command == ("sh", "-c", 'echo "a b"')
    assert api.entrypoint == ("/init", "--verbose")


def test_legacy_restart_is_used_without_restart_policy(tmp_path: Path) -> None:
    text = 'version: "3.8"\nservices:\n  api:\n    image: x\n    restart: on-failure:4\n'
    (api,) = _convert(tmp_path, text).services
    assert api.restart == RestartPolicy(RestartCondition.ON_FAILURE, max_attempts=4)


LONG_DEPENDS_ON = (
    'version: "3.8"\nservices:\n  app:\n    image: x\n    depends_on:\n'
    "      migrate: {condition: service_completed_successfully}\n"
    "      db: {condition: service_healthy}\n"
    "      cache: {condition: service_started}\n"
    "  migrate: {image: x, deploy: {mode: replicated-job}}\n"
    "  db: {image: x}\n  cache: {image: x}\n"
)


def test_the_long_depends_on_takes_compose_specs_conditions(tmp_path: Path) -> None:
    """Beyond docker, whose schema refuses the long syntax (moby/moby#46827)."""
    plan = _convert(tmp_path, LONG_DEPENDS_ON)
    assert [s.name for s in plan.services][-1] == "st_app"  # after its dependencies
    app = next(s for s in plan.services if s.name == "st_app")
    assert set(app.depends_on) == {"st_migrate", "st_db", "st_cache"}
    assert app.depends_on_condition == {
        "st_migrate": "service_completed_successfully",
        "st_db": "service_healthy",
    }


@pytest.mark.parametrize(
    ("change", "path", "message"),
    [
        ("{condition: service_healthy, restart: true}", "depends_on.db.restart", "restart: true"),
        ("{condition: service_healthy, required: false}", "depends_on.db.required", "required"),
        ("{condition: service_ready}", "depends_on.db.condition", "must be one of"),
        ("{restart: false}", "depends_on.db", "condition is required"),
    ],
)
def test_what_the_long_depends_on_cannot_honour_is_refused(
    tmp_path: Path, change: str, path: str, message: str
) -> None:
    text = LONG_DEPENDS_ON.replace("{condition: service_healthy}", change)
    error = _error(tmp_path, text)
    assert error.path == f"services.app.{path}", error
    assert message in error.message


@pytest.mark.parametrize(
    ("deploy", "mode", "replicas"),
    [
        ("{mode: replicated-job, replicas: 5}", ServiceMode.REPLICATED_JOB, 5),
        ("{mode: replicated-job}", ServiceMode.REPLICATED_JOB, 1),
        ("{mode: global-job}", ServiceMode.GLOBAL_JOB, 1),
    ],
)
def test_jobs_in_a_stack_run_every_task_at_once_as_dockers(
    tmp_path: Path, deploy: str, mode: ServiceMode, replicas: int
) -> None:
    text = f'version: "3.8"\nservices:\n  migrate:\n    image: x\n    deploy: {deploy}\n'
    (migrate,) = _convert(tmp_path, text).services
    assert (migrate.mode, migrate.replicas, migrate.max_concurrent) == (mode, replicas, 0)


def test_healthcheck_disable_and_test_together_is_dockers_error(tmp_path: Path) -> None:
    text = (
        'version: "3.8"\nservices:\n  api:\n    image: x\n    healthcheck:\n'
        '      disable: true\n      test: [CMD, "true"]\n'
    )
    error = _error(tmp_path, text)
    assert (error.path, error.message) == (
        "services.api.healthcheck",
        "test and disable can't be set at the same time",
    )
    (api,) = _convert(tmp_path, text.replace('      test: [CMD, "true"]\n', "")).services
    assert api.healthcheck == Healthcheck(test=("NONE",))


@pytest.mark.parametrize(
    ("snippet", "path", "message"),
    [
        ("    secrets: [nope]\n", "services.api.secrets[0].source", 'undefined secret "nope"'),
        ("    configs: [nope]\n", "services.api.configs[0].source", 'undefined config "nope"'),
        (
            "    volumes: ['nope:/data']\n",
            "services.api.volumes[0].source",
            'undefined volume "nope"',
        ),
        ("    networks: [nope]\n", "services.api.networks.nope", 'undefined network "nope"'),
        (
            "    deploy: {mode: global, replicas: 2}\n",
            "services.api.deploy.replicas",
            "replicas can only be used with replicated or replicated-job mode",
        ),
        ("    deploy: {mode: weird}\n", "services.api.deploy.mode", "unknown mode: weird"),
        ("    ports: ['80:80/sctp']\n", "services.api.ports[0].protocol", "protocol sctp"),
        (
            "    ports: ['80:80', '80:81']\n",
            "services.api.ports[1]",
            "port 80/tcp is published twice",
        ),
        (
            "    deploy: {placement: {constraints: [node=foo]}}\n",
            "services.api.deploy.placement.constraints[0]",
            "expected one operator",
        ),
        (
            "    deploy: {placement: {constraints: [engine.labels.ssd==true]}}\n",
            "services.api.deploy.placement.constraints[0]",
            "engine.labels.ssd is not supported: swarmlet does not record Docker engine labels",
        ),
        (
            "    deploy: {placement: {constraints: ['node.platform.os==linux', "
            "'node.platform.arch==x86_64']}}\n",
            "services.api.deploy.placement.constraints[1]",
            "node.platform.arch is not supported",
        ),
        (
            "    deploy: {rollback_config: {failure_action: rollback}}\n",
            "services.api.deploy.rollback_config.failure_action",
            "expected pause, continue",
        ),
        (
            "    deploy: {restart_policy: {condition: sometimes}}\n",
            "services.api.deploy.restart_policy.condition",
            "invalid condition",
        ),
        (
            "    volumes: [{type: tmpfs, source: x, target: /t}]\n",
            "services.api.volumes[0]",
            "invalid tmpfs source, source must be empty",
        ),
        (
            "    deploy: {endpoint_mode: magic}\n",
            "services.api.deploy.endpoint_mode",
            "invalid endpoint_mode",
        ),
    ],
)
def test_bad_service_is_an_error_with_its_path(
    tmp_path: Path, snippet: str, path: str, message: str
) -> None:
    error = _error(tmp_path, 'version: "3.8"\nservices:\n  api:\n    image: x\n' + snippet)
    assert error.path == path
    assert message in error.message


def test_port_published_by_two_services_is_an_error(tmp_path: Path) -> None:
    text = (
        'version: "3.8"\nservices:\n  a:\n    image: x\n    ports: ["80:80"]\n'
        '  b:\n    image: x\n    ports: ["80:8080"]\n'
    )
    error = _error(tmp_path, text)
    assert error.path == "services.b.ports"
    assert error.message == "port 80/tcp is published by both services a and b"


def test_named_volume_mount_carries_the_stack_volume_and_driver(tmp_path: Path) -> None:
    text = (
        'version: "3.8"\nservices:\n  db:\n    image: x\n'
        "    volumes: ['data:/var/lib/db:ro', 'old:/old', '/srv:/srv', {type: tmpfs, target: /t}]\n"
        "volumes:\n  data:\n    driver: local\n    driver_opts: {type: none}\n"
        "  old:\n    external: true\n"
    )
    plan = _convert(tmp_path, text)
    (db,) = plan.services
    assert db.mounts == (
        Mount("volume", "/var/lib/db", "st_data", True, "local", {"type": "none"}),
        Mount("volume", "/old", "old"),
        Mount("bind", "/srv", "/srv"),
        Mount("tmpfs", "/t"),
    )
    assert [v.name for v in plan.volumes] == ["st_data", "old"]


def test_secret_targets_and_external_secret(tmp_path: Path) -> None:
    (tmp_path / "pw.txt").write_text("x")
    text = (
        'version: "3.8"\nservices:\n  db:\n    image: x\n'
        "    secrets: [pw, {source: ext, target: /etc/ext, mode: 0400}]\n"
        "    configs: [{source: conf, target: app.conf}]\n"
        "secrets:\n  pw:\n    file: ./pw.txt\n  ext:\n    external: true\n"
        "configs:\n  conf:\n    file: ./pw.txt\n"
    )
    plan = _convert(tmp_path, text)
    (db,) = plan.services
    assert db.secrets == (
        FileRef("st_pw", "/run/secrets/pw"),
        FileRef("ext", "/etc/ext", mode=0o400),
    )
    assert db.configs == (FileRef("st_conf", "/app.conf"),)
    assert plan.secrets == (
        SecretDef("ext", "ext", external=True),
        SecretDef("pw", "st_pw", str(tmp_path / "pw.txt")),
    )


def test_environment_without_value_becomes_empty_with_a_warning(tmp_path: Path) -> None:
    text = 'version: "3.8"\nservices:\n  api:\n    image: x\n    environment: [A=1, B, C]\n'
    plan = _convert(tmp_path, text, environ={"C": "from-env"})
    assert plan.services[0].env == {"A": "1", "B": "", "C": "from-env"}
    assert [w for w in plan.warnings if "environment" in w] == [
        'services.api.environment.B: no value and not set in the environment; set to ""'
    ]


def test_only_used_networks_are_planned(tmp_path: Path) -> None:
    text = (
        'version: "3.8"\nservices:\n  a:\n    image: x\n    networks: [front, back]\n'
        "  b:\n    image: x\n"
        "networks:\n  front: {}\n  back:\n    name: shared\n    external: true\n  unused: {}\n"
    )
    plan = _convert(tmp_path, text)
    assert [(n.key, n.name, n.external) for n in plan.networks] == [
        ("back", "shared", True),
        ("default", "st_default", False),
        ("front", "st_front", False),
    ]
    a, b = plan.services
    assert a.networks == (
        NetworkAttachment("shared", external=True),
        NetworkAttachment("st_front"),
    )
    assert b.networks == (NetworkAttachment("st_default"),)


def test_network_aliases_and_internal_reach_the_spec(tmp_path: Path) -> None:
    text = (
        'version: "3.8"\nservices:\n  a:\n    image: x\n'
        "    networks:\n      back:\n        aliases: [db, primary]\n"
        "networks:\n  back:\n    internal: true\n"
    )
    plan = _convert(tmp_path, text)
    assert plan.services[0].networks == (
        NetworkAttachment("st_back", aliases=("db", "primary"), internal=True),
    )


def test_invalid_stack_name_is_an_error(tmp_path: Path) -> None:
    stack = tmp_path / "s.yml"
    stack.write_text('version: "3.8"\nservices:\n  a:\n    image: x\n')
    with pytest.raises(StackError, match="invalid stack name"):
        convert_stack("-bad name", load_stack([stack], {}), file=str(stack))


def test_validate_spec_errors_carry_the_service_path() -> None:
    # The loader's schema refuses such a name; validate_spec is the converter's safety net.
    config = {"services": {"bad name": {"image": "x"}}}
    with pytest.raises(StackError) as caught:
        convert_stack("st", LoadedStack(config, ()), file="f")
    assert caught.value.path == "services.bad name"
    assert "invalid service name" in caught.value.message


def test_negative_replicas_is_an_error(tmp_path: Path) -> None:
    text = 'version: "3.8"\nservices:\n  api:\n    image: x\n    deploy: {replicas: -1}\n'
    assert _error(tmp_path, text).path == "services.api.deploy.replicas"


def test_unknown_swarmlet_extension_warns(tmp_path: Path) -> None:
    text = 'version: "3.8"\nservices:\n  api:\n    image: x\n    x-swarmlet-autoscal: {}\n'
    plan = _convert(tmp_path, text)
    assert "services.api.x-swarmlet-autoscal: unknown swarmlet extension, ignored" in plan.warnings


def test_extension_given_both_in_deploy_and_service_is_an_error() -> None:
    config = {
        "services": {
            "api": {
                "image": "x",
                "x-swarmlet-rebalance": False,
                "deploy": {"x-swarmlet-rebalance": True},
            }
        }
    }
    with pytest.raises(StackError) as caught:
        convert_stack("st", LoadedStack(config, ()), file="f")
    assert caught.value.path == "services.api.deploy.x-swarmlet-rebalance"


def test_udp_ports_convert_without_a_warning_the_mesh_routes_them(tmp_path: Path) -> None:
    plan = _convert(
        tmp_path,
        'version: "3.8"\nservices:\n  dns:\n    image: x\n'
        "    ports: ['53:53/udp', {target: 54, published: 54, protocol: udp, mode: host}]\n",
    )
    (spec,) = plan.services
    assert spec.ports == (PortConfig(53, 53, "udp"), PortConfig(54, 54, "udp", "host"))
    assert plan.warnings == ()


# --- container settings (service.go: convertUlimits, convertLogging, convertDNSConfig) ------

CONTAINER_SETTINGS = """\
version: "3.8"
services:
  web:
    image: busybox
    ulimits:
      nproc: 64
      nofile: {soft: 1024, hard: 2048}
      core: {soft: -1, hard: -1}
    logging:
      options: {max-size: 1m}
    dns: 10.0.0.53
    dns_search: [a.example, b.example]
    read_only: true
    tty: true
    deploy:
      resources:
        limits: {pids: 50}
"""


def test_container_settings_are_converted_as_service_go_does(tmp_path: Path) -> None:
    plan = _convert(tmp_path, CONTAINER_SETTINGS)
    (web,) = plan.services
    # sorted by name; a single number is both limits
    assert web.ulimits == (
        Ulimit("core", -1, -1),
        Ulimit("nofile", 1024, 2048),
        Ulimit("nproc", 64, 64),
    )
    # options without a driver are for the node's default driver, as Swarm passes them
    assert (web.log_driver, web.log_options) == ("", {"max-size": "1m"})
    assert web.dns_servers == ("10.0.0.53",)
    assert web.dns_search == ("a.example", "b.example")
    assert (web.read_only, web.tty, web.pids_limit) == (True, True, 50)
    assert not any("ignores" in w for w in plan.warnings)


@pytest.mark.parametrize(
    ("old", "new", "path", "message"),
    [
        ("nproc: 64", "nprocs: 64", "services.web.ulimits.nprocs", "invalid ulimit name 'nprocs'"),
        (
            "{soft: 1024, hard: 2048}",
            "{soft: 4096, hard: 2048}",
            "services.web.ulimits.nofile",
            "the soft limit must be less than or equal to the hard limit: 4096 > 2048",
        ),
        ("nproc: 64", "nproc: -5", "services.web.ulimits.nproc.soft", "must be 0 or more"),
        ("dns: 10.0.0.53", "dns: [dns.example]", "services.web.dns[0]", "invalid IP address"),
        (
            "dns_search: [a.example, b.example]",
            "dns_search: [a.example, bad_domain]",
            "services.web.dns_search[1]",
            "invalid search domain 'bad_domain'",
        ),
        (
            "limits: {pids: 50}",
            "limits: {pids: -1}",
            "services.web.deploy.resources.limits.pids",
            "must be 0 or more, got -1",
        ),
        (
            "limits: {pids: 50}",
            "reservations: {generic_resources: [{discrete_resource_spec: {kind: gpu, "
            "value: 1.5}}]}",
            "services.web.deploy.resources.reservations.generic_resources[0]"
            ".discrete_resource_spec.value",
            "expected a whole number",
        ),
    ],
)
def test_container_settings_docker_would_refuse_are_errors_at_their_path(
    tmp_path: Path, old: str, new: str, path: str, message: str
) -> None:
    assert old in CONTAINER_SETTINGS
    error = _error(tmp_path, CONTAINER_SETTINGS.replace(old, new))
    assert error.path == path
    assert message in error.message
