"""cli.service_flags: every flag of `service create` and `service update`, the spec it produces
or the refusal it earns. `create` builds a spec from defaults; `update` changes only what its
flags name, with docker's --X-add/--X-rm semantics.

The tables below are checked for completeness: every option of both commands appears in a row
(`test_every_flag_has_a_row`), and every option's help shows an example."""

from __future__ import annotations

import argparse
import dataclasses
import functools
import io
import tempfile
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from swarmlet.cli.common import ExitStatus
from swarmlet.cli.main import build_parser, main
from swarmlet.cli.service import NOT_SUPPORTED
from swarmlet.cli.service_flags import rollback_conflicts, spec_from_args
from swarmlet.errors import UsageError
from swarmlet.state.model import (
    AutoscalePolicy,
    FailureAction,
    FileRef,
    GenericResource,
    Healthcheck,
    Mount,
    NetworkAttachment,
    Placement,
    PortConfig,
    Resources,
    RestartCondition,
    RestartPolicy,
    ServiceMode,
    ServiceSpec,
    Ulimit,
    UpdateConfig,
    UpdateOrder,
)
from tests.cli.fake_agent import SERVICE, TASK, fake_agent

DEFAULT = ServiceSpec(name="web", image="nginx:1")
ENVIRON = {"PASSED": "from-env"}  # the environment bare `-e NAME`s read


def create(
    *flags: str, environ: dict[str, str] | None = None, command: tuple[str, ...] = ()
) -> ServiceSpec:
    argv = ["service", "create", "--name", "web", *flags, "nginx:1", *command]
    args = build_parser().parse_args(argv)
    return spec_from_args(args, environ=ENVIRON if environ is None else environ)


def update(base: ServiceSpec, *flags: str) -> ServiceSpec:
    args = build_parser().parse_args(["service", "update", *flags, base.name])
    return spec_from_args(args, base=base, environ=ENVIRON)


def _command_parser(command: str) -> argparse.ArgumentParser:
    service = next(
        a for a in build_parser("service")._actions if isinstance(a, argparse._SubParsersAction)
    )
    group = service.choices["service"]
    sub = next(a for a in group._actions if isinstance(a, argparse._SubParsersAction))
    parser: argparse.ArgumentParser = sub.choices[command]
    return parser


# Flags both commands take: each row runs through `create` and through `update` of DEFAULT, and
# gives the same spec both ways: (flags, the fields they change from DEFAULT).
SHARED: list[tuple[tuple[str, ...], dict[str, Any]]] = [
    ((), {}),
    (("--replicas", "3"), {"replicas": 3}),
    (("--entrypoint", "/bin/sh -c"), {"entrypoint": ("/bin/sh", "-c")}),
    (("--entrypoint", "'/opt/my app' --fast"), {"entrypoint": ("/opt/my app", "--fast")}),
    (("-u", "1000:1000"), {"user": "1000:1000"}),
    (("--user", "app"), {"user": "app"}),
    (("-w", "/srv"), {"working_dir": "/srv"}),
    (("--workdir", "/srv"), {"working_dir": "/srv"}),
    (("--hostname", "web"), {"hostname": "web"}),
    (("--stop-signal", "SIGQUIT"), {"stop_signal": "SIGQUIT"}),
    (("--init",), {"init": True}),
    (("--init=false",), {}),
    (
        ("--cap-add", "net_admin", "--cap-add", "CAP_SYS_TIME", "--cap-drop", "ALL"),
        {"cap_add": ("CAP_NET_ADMIN", "CAP_SYS_TIME"), "cap_drop": ("ALL",)},
    ),
    # adding wins over dropping the same capability (docker's EffectiveCapAddCapDrop)
    (("--cap-add", "NET_ADMIN", "--cap-drop", "net_admin"), {"cap_add": ("CAP_NET_ADMIN",)}),
    (("--cap-add", "all", "--cap-drop", "chown"), {"cap_add": ("ALL",)}),
    (
        ("--constraint", "node.labels.zone==a", "--constraint", "node.role!=manager"),
        {"placement": Placement(constraints=("node.labels.zone==a", "node.role!=manager"))},
    ),
    (
        ("--placement-pref", "spread=node.labels.zone"),
        {"placement": Placement(preferences=("spread=node.labels.zone",))},
    ),
    (("--replicas-max-per-node", "2"), {"placement": Placement(max_replicas_per_node=2)}),
    (
        ("--reserve-cpu", "0.5", "--reserve-memory", "256M"),
        {"reservations": Resources(500_000_000, 256 * 2**20)},
    ),
    (
        ("--limit-cpu", "1.5", "--limit-memory", "1g"),
        {"limits": Resources(1_500_000_000, 2**30)},
    ),
    (
        (
            "--restart-condition",
            "on-failure",
            "--restart-delay",
            "5s",
            "--restart-max-attempts",
            "3",
            "--restart-window",
            "2m",
        ),
        {"restart": RestartPolicy(RestartCondition.ON_FAILURE, 5.0, 3, 120.0)},
    ),
    (
        (
            "--health-cmd",
            "wget -qO- localhost",
            "--health-interval",
            "10s",
            "--health-timeout",
            "3s",
            "--health-retries",
            "2",
            "--health-start-period",
            "1m",
        ),
        {"healthcheck": Healthcheck(("CMD-SHELL", "wget -qO- localhost"), 10.0, 3.0, 2, 60.0)},
    ),
    (("--health-cmd", "true"), {"healthcheck": Healthcheck(("CMD-SHELL", "true"))}),
    (("--no-healthcheck",), {"healthcheck": Healthcheck(("NONE",))}),
    (("--stop-grace-period", "30s"), {"stop_grace_period_s": 30.0}),
    (("--rebalance", "false"), {"rebalance": False}),
    (
        (
            "--update-parallelism",
            "2",
            "--update-delay",
            "10s",
            "--update-order",
            "start-first",
            "--update-failure-action",
            "rollback",
            "--update-monitor",
            "1m",
            "--update-max-failure-ratio",
            "0.1",
        ),
        {
            "update": UpdateConfig(
                2, 10.0, UpdateOrder.START_FIRST, FailureAction.ROLLBACK, 60.0, 0.1
            )
        },
    ),
    (
        (
            "--rollback-parallelism",
            "0",
            "--rollback-delay",
            "1s",
            "--rollback-order",
            "start-first",
            "--rollback-failure-action",
            "continue",
            "--rollback-monitor",
            "2s",
            "--rollback-max-failure-ratio",
            "0.5",
        ),
        {
            "rollback": UpdateConfig(
                0, 1.0, UpdateOrder.START_FIRST, FailureAction.CONTINUE, 2.0, 0.5
            )
        },
    ),
    (
        ("--autoscale", "min=2,max=4,cpu=70"),
        {"replicas": 2, "autoscale": AutoscalePolicy(2, 4, cpu_percent=70.0)},
    ),
    # what changes how the command runs, not the spec
    (("-d",), {}),
    (("--detach=false",), {}),
    (("-q",), {}),
    (("--quiet",), {}),
    (("--no-resolve-image",), {}),
    # the container's own settings
    (
        ("--log-driver", "local", "--log-opt", "max-size=10m", "--log-opt", "max-file=3"),
        {"log_driver": "local", "log_options": {"max-size": "10m", "max-file": "3"}},
    ),
    # options without a driver are for the node's default driver (docker drops them)
    (("--log-opt", "max-size=10m"), {"log_options": {"max-size": "10m"}}),
    (("--read-only",), {"read_only": True}),
    (("-t",), {"tty": True}),
    (("--tty",), {"tty": True}),
    (("--read-only=false", "--tty=false"), {}),
    (("--limit-pids", "100"), {"pids_limit": 100}),
    (("--limit-pids", "0"), {}),  # unlimited, the default
    # docker's flags whose value asks for what swarmlet does anyway
    (("--endpoint-mode", "vip"), {}),
    (("--isolation", "default"), {}),
    (("--with-registry-auth=false",), {}),
]


@pytest.mark.parametrize(("flags", "changes"), SHARED)
def test_a_shared_flag_makes_the_same_spec_on_create_and_update(
    flags: tuple[str, ...], changes: dict[str, Any]
) -> None:
    expected = dataclasses.replace(DEFAULT, **changes)
    assert create(*flags) == expected
    assert update(DEFAULT, *flags) == expected


CREATE_ONLY: list[tuple[tuple[str, ...], dict[str, Any]]] = [
    (("--mode", "global"), {"mode": ServiceMode.GLOBAL}),
    (("--mode", "replicated"), {}),
    (
        ("--mode", "replicated-job", "--replicas", "5", "--max-concurrent", "2"),
        {"mode": ServiceMode.REPLICATED_JOB, "replicas": 5, "max_concurrent": 2},
    ),
    (("--mode", "global-job"), {"mode": ServiceMode.GLOBAL_JOB}),
    (("-p", "8080:80"), {"ports": (PortConfig(8080, 80),)}),
    (
        ("--publish", "published=53,target=53,protocol=udp,mode=host"),
        {"ports": (PortConfig(53, 53, "udp", "host"),)},
    ),
    (
        ("--publish", "published=8080,target=80,proxy-protocol=v2"),
        {"ports": (PortConfig(8080, 80, proxy_protocol="v2"),)},
    ),
    (("-e", "A=1", "--env", "B="), {"env": {"A": "1", "B": ""}}),
    (("-e", "PASSED"), {"env": {"PASSED": "from-env"}}),  # docker's pass-through
    (("-l", "team=web", "--label", "tier"), {"labels": {"team": "web", "tier": ""}}),
    (("--container-label", "tier=front"), {"container_labels": {"tier": "front"}}),
    (("--mount", "type=tmpfs,target=/scratch"), {"mounts": (Mount("tmpfs", "/scratch"),)}),
    (
        ("--mount", "type=bind,src=/srv,dst=/data,ro=true,bind-propagation=rprivate"),
        {"mounts": (Mount("bind", "/data", "/srv", read_only=True),)},
    ),
    (("--secret", "db_pw"), {"secrets": (FileRef("db_pw", "db_pw"),)}),
    (
        ("--secret", "source=db_pw,target=password,uid=100,mode=0400"),
        {"secrets": (FileRef("db_pw", "password", uid="100", mode=0o400),)},
    ),
    (
        ("--config", "source=conf,target=/etc/app.conf"),
        {"configs": (FileRef("conf", "/etc/app.conf"),)},
    ),
    (
        ("--network", "back", "--network", "name=front,alias=www,alias=site"),
        {"networks": (NetworkAttachment("back"), NetworkAttachment("front", ("www", "site")))},
    ),
    (
        ("--host", "db:10.0.0.5", "--host", "gw=host-gateway", "--host", "v6:[::1]"),
        {"extra_hosts": ("db:10.0.0.5", "gw:host-gateway", "v6:::1")},
    ),
    (("--sysctl", "net.core.somaxconn=1024"), {"sysctls": {"net.core.somaxconn": "1024"}}),
    (("--entrypoint", ""), {}),  # the image's own ENTRYPOINT
    # one ulimit per name (the last wins), sorted by name; HARD defaults to SOFT
    (
        ("--ulimit", "nproc=64", "--ulimit", "nofile=1024:2048", "--ulimit", "nproc=-1:-1"),
        {"ulimits": (Ulimit("nofile", 1024, 2048), Ulimit("nproc", -1, -1))},
    ),
    (("--ulimit", "core=0"), {"ulimits": (Ulimit("core", 0, 0),)}),
    # a count per task of each kind; a kind given again replaces its count
    (
        (
            *("--generic-resource", "gpu=1", "--generic-resource", "ssd=2"),
            *("--generic-resource", "gpu=2"),
        ),
        {"generic_resources": (GenericResource("gpu", 2), GenericResource("ssd", 2))},
    ),
    (
        ("--dns", "8.8.8.8", "--dns", "2001:4860:4860::8888", "--dns", "8.8.8.8"),
        {"dns_servers": ("8.8.8.8", "2001:4860:4860::8888")},
    ),
    (
        ("--dns-search", "dc1.example.com", "--dns-search", "."),
        {"dns_search": ("dc1.example.com", ".")},
    ),
    (("--dns-option", "ndots:2", "--dns-option", "edns0"), {"dns_options": ("ndots:2", "edns0")}),
]


@pytest.mark.parametrize(("flags", "changes"), CREATE_ONLY)
def test_a_create_flag_sets_its_field(flags: tuple[str, ...], changes: dict[str, Any]) -> None:
    assert create(*flags) == dataclasses.replace(DEFAULT, **changes)


BASE = (
    "-e",
    "A=1",
    "-l",
    "team=web",
    "--container-label",
    "tier=front",
    "--sysctl",
    "net.core.somaxconn=1024",
    "--secret",
    "old",
    "--config",
    "source=conf_v1,target=/etc/app.conf",
    "--mount",
    "type=volume,source=data,target=/data",
    "-p",
    "8080:80",
    "-p",
    "published=9090,target=90,mode=host",
    "-p",
    "5353:53/udp",
    "--network",
    "back",
    "--constraint",
    "node.role==worker",
    "--placement-pref",
    "spread=node.labels.zone",
    "--host",
    "db:10.0.0.5",
    "--host",
    "db:10.0.0.6",
    "--cap-add",
    "NET_ADMIN",
    "--cap-drop",
    "CHOWN",
    "--health-cmd",
    "true",
    "--health-interval",
    "10s",
    "--entrypoint",
    "/bin/app",
    "-u",
    "app",
    "--init",
    "--ulimit",
    "nofile=1024:2048",
    "--dns",
    "8.8.8.8",
    "--dns-search",
    "a.example",
    "--dns-option",
    "ndots:2",
    "--log-driver",
    "local",
    "--log-opt",
    "max-size=10m",
)
# (update flags, the fields they change in the spec `BASE` creates)
UPDATE_ONLY: list[tuple[tuple[str, ...], dict[str, Any]]] = [
    (("--image", "nginx:2"), {"image": "nginx:2"}),
    (("--args", "sleep 5"), {"command": ("sleep", "5")}),
    (("--args", ""), {"command": None}),  # the image's CMD
    (("--entrypoint", ""), {"entrypoint": None}),  # the image's ENTRYPOINT
    (("-u", ""), {"user": ""}),
    (("--init=false",), {"init": False}),
    (("--env-add", "B=2", "--env-add", "A=3"), {"env": {"A": "3", "B": "2"}}),
    (("--env-rm", "A"), {"env": {}}),
    (("--env-add", "PASSED"), {"env": {"A": "1", "PASSED": "from-env"}}),
    (("--env-rm", "A", "--env-add", "A=9"), {"env": {"A": "9"}}),  # removals first
    (("--label-add", "tier=back"), {"labels": {"team": "web", "tier": "back"}}),
    (("--label-rm", "team", "--label-rm", "absent"), {"labels": {}}),
    (("--container-label-add", "x=y"), {"container_labels": {"tier": "front", "x": "y"}}),
    (("--container-label-rm", "tier"), {"container_labels": {}}),
    (
        ("--sysctl-add", "net.ipv4.ip_forward=1"),
        {"sysctls": {"net.core.somaxconn": "1024", "net.ipv4.ip_forward": "1"}},
    ),
    (("--sysctl-rm", "net.core.somaxconn"), {"sysctls": {}}),
    # the secret rotation of issue #17: a new secret under the old one's file name
    (
        ("--secret-rm", "old", "--secret-add", "source=new,target=old"),
        {"secrets": (FileRef("new", "old"),)},
    ),
    (("--secret-add", "source=new,target=old"), {"secrets": (FileRef("new", "old"),)}),
    (("--secret-add", "other"), {"secrets": (FileRef("old", "old"), FileRef("other", "other"))}),
    (("--secret-rm", "old"), {"secrets": ()}),
    (
        ("--config-rm", "conf_v1", "--config-add", "source=conf_v2,target=/etc/app.conf"),
        {"configs": (FileRef("conf_v2", "/etc/app.conf"),)},
    ),
    (("--config-rm", "conf_v1"), {"configs": ()}),
    (
        ("--mount-add", "type=volume,source=data2,target=/data,readonly"),
        {"mounts": (Mount("volume", "/data", "data2", read_only=True),)},
    ),
    (
        ("--mount-add", "type=tmpfs,target=/tmp"),
        {"mounts": (Mount("volume", "/data", "data"), Mount("tmpfs", "/tmp"))},
    ),
    (("--mount-rm", "/data/"), {"mounts": ()}),
    # --publish-rm names the TARGET port, in every syntax docker takes
    *(
        (
            ("--publish-rm", text),
            {"ports": (PortConfig(9090, 90, mode="host"), PortConfig(5353, 53, "udp"))},
        )
        for text in (
            "80",
            "80/tcp",
            "8080:80",
            "published=8080,target=80",
            "mode=ingress,target=80",
        )
    ),
    (
        ("--publish-rm", "53/udp", "--publish-rm", "90"),
        {"ports": (PortConfig(8080, 80),)},
    ),
    (("--publish-rm", "53"), {}),  # 53/tcp is not published: nothing to remove
    (("--publish-rm", "target=90,mode=ingress"), {}),
    (
        ("--publish-add", "8080:81"),  # the same published port: replaced
        {
            "ports": (
                PortConfig(9090, 90, mode="host"),
                PortConfig(5353, 53, "udp"),
                PortConfig(8080, 81),
            )
        },
    ),
    (
        # the same port, now opened with a PROXY protocol header by the mesh
        ("--publish-add", "published=8080,target=80,proxy-protocol=v1"),
        {
            "ports": (
                PortConfig(9090, 90, mode="host"),
                PortConfig(5353, 53, "udp"),
                PortConfig(8080, 80, proxy_protocol="v1"),
            )
        },
    ),
    (
        ("--publish-rm", "80", "--publish-add", "7070:80"),
        {
            "ports": (
                PortConfig(9090, 90, mode="host"),
                PortConfig(5353, 53, "udp"),
                PortConfig(7070, 80),
            )
        },
    ),
    (
        ("--network-add", "name=front,alias=www"),
        {"networks": (NetworkAttachment("back"), NetworkAttachment("front", ("www",)))},
    ),
    (("--network-rm", "back"), {"networks": ()}),
    (
        ("--network-rm", "back", "--network-add", "name=back,alias=api"),
        {"networks": (NetworkAttachment("back", ("api",)),)},
    ),
    (
        ("--constraint-add", "node.labels.zone==a"),
        {
            "placement": Placement(
                constraints=("node.role==worker", "node.labels.zone==a"),
                preferences=("spread=node.labels.zone",),
            )
        },
    ),
    (
        ("--constraint-rm", "node.role==worker"),
        {"placement": Placement(preferences=("spread=node.labels.zone",))},
    ),
    (
        ("--placement-pref-rm", "node.labels.zone"),
        {"placement": Placement(constraints=("node.role==worker",))},
    ),
    (
        ("--placement-pref-add", "spread=node.labels.rack"),
        {
            "placement": Placement(
                constraints=("node.role==worker",),
                preferences=("spread=node.labels.zone", "spread=node.labels.rack"),
            )
        },
    ),
    (("--host-rm", "db"), {"extra_hosts": ()}),
    (("--host-rm", "db:10.0.0.5"), {"extra_hosts": ("db:10.0.0.6",)}),
    (
        ("--host-add", "cache:10.0.0.7", "--host-add", "db:10.0.0.5"),
        {"extra_hosts": ("db:10.0.0.5", "db:10.0.0.6", "cache:10.0.0.7")},
    ),
    # a capability added leaves the dropped list, and the reverse
    (("--cap-add", "chown"), {"cap_add": ("CAP_CHOWN", "CAP_NET_ADMIN"), "cap_drop": ()}),
    (("--cap-drop", "NET_ADMIN"), {"cap_add": (), "cap_drop": ("CAP_CHOWN", "CAP_NET_ADMIN")}),
    # health timings change the service's own check; a new command keeps its timings
    (
        ("--health-retries", "5", "--health-timeout", "2s"),
        {"healthcheck": Healthcheck(("CMD-SHELL", "true"), 10.0, 2.0, 5)},
    ),
    (("--health-cmd", "false"), {"healthcheck": Healthcheck(("CMD-SHELL", "false"), 10.0)}),
    (("--health-cmd", ""), {"healthcheck": None}),  # back to the image's HEALTHCHECK
    # ulimits by name: an added one replaces its namesake; kept sorted by name
    (
        ("--ulimit-add", "nproc=64", "--ulimit-add", "core=0"),
        {
            "ulimits": (
                Ulimit("core", 0, 0),
                Ulimit("nofile", 1024, 2048),
                Ulimit("nproc", 64, 64),
            )
        },
    ),
    (("--ulimit-add", "nofile=4096"), {"ulimits": (Ulimit("nofile", 4096, 4096),)}),
    (("--ulimit-rm", "nofile"), {"ulimits": ()}),
    (("--dns-add", "1.1.1.1"), {"dns_servers": ("8.8.8.8", "1.1.1.1")}),
    (("--dns-rm", "8.8.8.8", "--dns-add", "9.9.9.9"), {"dns_servers": ("9.9.9.9",)}),
    (("--dns-add", "8.8.8.8"), {}),  # already there: kept once
    (("--dns-search-add", "b.example"), {"dns_search": ("a.example", "b.example")}),
    (("--dns-search-rm", "a.example"), {"dns_search": ()}),
    (("--dns-option-add", "edns0"), {"dns_options": ("ndots:2", "edns0")}),
    (("--dns-option-rm", "ndots:2"), {"dns_options": ()}),
    (("--generic-resource-rm", "gpu"), {}),  # none reserved: nothing to remove
    (("--generic-resource-add", "gpu=1"), {"generic_resources": (GenericResource("gpu", 1),)}),
    # a driver replaces the options; options alone add to the current driver's
    (
        ("--log-driver", "json-file", "--log-opt", "max-file=3"),
        {"log_driver": "json-file", "log_options": {"max-file": "3"}},
    ),
    (("--log-opt", "max-file=3"), {"log_options": {"max-size": "10m", "max-file": "3"}}),
    (("--log-driver", ""), {"log_driver": "", "log_options": {}}),  # the node's default
    (("--force",), {"force_update": 1}),
    (("--force=false",), {}),
    (("--rollback=false",), {}),
]


@pytest.mark.parametrize(("flags", "changes"), UPDATE_ONLY)
def test_an_update_flag_changes_only_what_it_names(
    flags: tuple[str, ...], changes: dict[str, Any]
) -> None:
    base = create(*BASE, command=("sleep", "1000"))
    assert update(base, *flags) == dataclasses.replace(base, **changes)


def test_the_update_base_is_what_its_flags_say() -> None:
    base = create(*BASE, command=("sleep", "1000"))
    assert base.secrets == (FileRef("old", "old"),)
    assert base.healthcheck == Healthcheck(("CMD-SHELL", "true"), 10.0)
    assert (base.entrypoint, base.command, base.user, base.init) == (
        ("/bin/app",),
        ("sleep", "1000"),
        "app",
        True,
    )


def test_update_keeps_what_its_flags_do_not_name() -> None:
    base = create(*BASE, "--replicas", "3", "--restart-condition", "on-failure")
    spec = update(base, "--image", "nginx:2", "--reserve-memory", "1g")
    assert spec == dataclasses.replace(
        base, image="nginx:2", reservations=Resources(memory_bytes=2**30)
    )


# (command, flags, what the refusal says)
REFUSED: list[tuple[str, tuple[str, ...], str]] = [
    ("create", ("--mode", "global", "--replicas", "2"), "--replicas cannot be used with --mode"),
    ("create", ("--mode", "global-job", "--replicas", "2"), "--replicas cannot be used with"),
    ("create", ("--max-concurrent", "2"), "--max-concurrent can only be used with a job"),
    ("update", ("--max-concurrent", "2"), "--max-concurrent can only be used with a job"),
    (
        "create",
        ("--mode", "replicated-job", "--max-concurrent", "-1"),
        "--max-concurrent: must be 0 or more",
    ),
    ("create", ("-p", "nope"), "--publish: invalid 'nope'"),
    # health timings with no command to apply them to
    ("create", ("--health-interval", "5s"), "--health-interval needs --health-cmd"),
    (
        "create",
        ("--health-retries", "2", "--health-timeout", "1s"),
        "--health-timeout, --health-retries needs --health-cmd",
    ),
    ("create", ("--no-healthcheck", "--health-cmd", "true"), "--no-healthcheck conflicts"),
    ("create", ("--health-cmd", "", "--health-retries", "1"), "returns to the image's check"),
    ("create", ("--health-cmd", "true", "--health-retries", "-1"), "must not be negative"),
    # --mount keys swarmlet's mounts cannot hold, by name; unknown keys as docker says
    ("create", ("--mount", "type=tmpfs,target=/t,tmpfs-size=64m"), "tmpfs-size is not supported"),
    ("create", ("--mount", "type=tmpfs,target=/t,tmpfs-mode=1770"), "tmpfs-mode is not supported"),
    (
        "create",
        ("--mount", "type=bind,source=/a,target=/b,bind-propagation=shared"),
        "bind-propagation is not supported yet in .*: bind mounts take Docker's default",
    ),
    ("create", ("--mount", "source=v,target=/b,volume-nocopy"), "volume-nocopy is not supported"),
    ("create", ("--mount", "source=v,target=/b,volume-label=a=b"), "volume-label is not supported"),
    ("create", ("--mount", "source=v,target=/b,colour=red"), "unexpected key 'colour'"),
    ("create", ("--mount", "source=v,target=/b,readonly=maybe"), "invalid boolean 'maybe'"),
    # constraints no node could be checked against
    ("create", ("--constraint", "engine.labels.ssd==true"), "engine.labels.ssd is not supported"),
    (
        "create",
        ("--constraint", "node.platform.arch==x86_64"),
        "node.platform.arch is not supported: swarmlet does not record nodes' architectures",
    ),
    ("update", ("--constraint-add", "engine.labels.a!=b"), "engine.labels.a is not supported"),
    ("create", ("--host", "db"), "--host: bad format 'db'"),
    ("create", ("--host", "db:not-an-ip"), "invalid IP address 'not-an-ip'"),
    ("create", ("--network", "bad name"), "invalid network name 'bad name'"),
    ("create", ("--network", "name=n,driver-opt=a=b"), "driver-opt is not supported yet"),
    ("create", ("--network", "name=n,colour=red"), "invalid field key 'colour'"),
    ("create", ("--network", "n", "--network", "n"), "network n is attached twice"),
    ("create", ("--secret", "a", "--secret", "source=b,target=a"), "duplicate secret target a"),
    ("create", ("--entrypoint", "'unclosed"), "--entrypoint: cannot split"),
    ("create", ("-e", "UNSET"), "--env UNSET: UNSET is not set in this environment"),
    ("create", ("-e", "=1"), "--env: invalid '=1'"),
    ("update", ("--env-add", "UNSET"), "give UNSET= for an empty value"),
    ("create", ("--hostname", "{{.Node.Hostname}}"), "templates such as .* are not supported"),
    ("create", ("--env-file", "/nonexistent/web.env"), "--env-file: cannot read"),
    ("update", ("--args", '"unclosed'), "--args: cannot split"),
    ("update", ("--publish-rm", "80/sctp"), "protocol must be tcp or udp"),
    ("update", ("--publish-rm", "http"), "invalid port 'http'"),
    ("update", ("--publish-rm", "published=8080"), "needs target="),
    (
        "create",
        ("-p", "published=53,target=53,protocol=udp,proxy-protocol=v2"),
        "--publish: proxy-protocol is for tcp ports only",
    ),
    (
        "update",
        ("--publish-add", "published=9090,target=90,mode=host,proxy-protocol=v1"),
        "--publish-add: proxy-protocol needs mode=ingress",
    ),
    ("create", ("-p", "published=8080,target=80,proxy-protocol=v9"), "must be v1 or v2"),
    # docker matches the target port: a published port given instead is named, with the fix
    (
        "update",
        ("--publish-rm", "8080"),
        "no published port has target 8080/tcp; 8080 is the published port of target 80: "
        "use --publish-rm 80/tcp",
    ),
    ("update", ("--network-add", "back"), "already attached to network back"),
    ("update", ("--host-add", "db"), "--host-add: bad format"),
    # timings with no check of the service's own to change
    ("update", ("--health-interval", "5s"), "uses its image's HEALTHCHECK"),
    # the container's own settings, checked before any node's Docker would refuse them
    ("create", ("--ulimit", "nofiles=1024"), "--ulimit: invalid ulimit name 'nofiles'"),
    ("create", ("--ulimit", "nofile"), "--ulimit: invalid .nofile.: expected NAME=SOFT"),
    ("create", ("--ulimit", "nofile=1:2:3"), "at most two limits"),
    ("create", ("--ulimit", "nofile=many"), "expected whole numbers"),
    (
        "create",
        ("--ulimit", "nofile=2048:1024"),
        "--ulimit nofile: the soft limit must be less than or equal to the hard limit",
    ),
    ("update", ("--ulimit-add", "cpu=-2"), "limits must be -1 (unlimited) or more"),
    ("create", ("--dns", "dns.google"), "--dns: invalid IP address 'dns.google'"),
    ("update", ("--dns-add", "1.1.1"), "--dns-add: invalid IP address"),
    ("create", ("--dns-search", "under_score.example"), "--dns-search: invalid search domain"),
    ("update", ("--dns-search-add", "a..b"), "--dns-search-add: invalid search domain"),
    ("create", ("--dns-option", "ndots 2"), "--dns-option: invalid option 'ndots 2'"),
    ("update", ("--dns-option-add", ""), "--dns-option-add: invalid option"),
    ("create", ("--limit-pids", "-1"), "--limit-pids: must be 0 (unlimited) or more, got -1"),
    ("create", ("--log-opt", "=x"), "--log-opt: invalid '=x': expected KEY=VALUE"),
    ("create", ("--generic-resource", "gpu=GPU-1"), "named resources, KIND=ID, are not"),
    ("create", ("--generic-resource", "gpu"), "expected KIND=COUNT"),
]


@pytest.mark.parametrize(("command", "flags", "message"), REFUSED)
def test_what_cannot_be_honoured_is_refused_saying_why(
    command: str, flags: tuple[str, ...], message: str
) -> None:
    base = create("--secret", "old", "-p", "8080:80", "--network", "back")
    run = create if command == "create" else functools.partial(update, base)
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        run(*flags)


def test_a_generic_resource_is_removed_by_its_kind() -> None:
    base = dataclasses.replace(DEFAULT, generic_resources=(GenericResource("gpu", 2),))
    assert update(base, "--generic-resource-rm", "gpu") == DEFAULT
    assert update(base, "--generic-resource-rm", "gpu=2") == DEFAULT


def test_timings_on_a_disabled_check_are_refused() -> None:
    with pytest.raises(UsageError, match="has it disabled"):
        update(create("--no-healthcheck"), "--health-retries", "3")


def _not_supported_options(command: str) -> list[str]:
    parser = _command_parser(command)
    return [
        a.option_strings[-1]
        for a in parser._actions
        if a.help and a.help.startswith("not supported yet")
    ]


@pytest.mark.parametrize(
    ("command", "flag"),
    [(c, f) for c in ("create", "update") for f in _not_supported_options(c)],
)
def test_a_flag_the_model_cannot_hold_is_refused_with_its_reason(command: str, flag: str) -> None:
    family = max((f for f in NOT_SUPPORTED if flag in (f, f + "-add", f + "-rm")), key=len)
    reason, _ = NOT_SUPPORTED[family]
    action = next(a for a in _command_parser(command)._actions if flag in a.option_strings)
    argv = [flag] if action.nargs == "?" else [flag, "x"]
    run = create if command == "create" else functools.partial(update, DEFAULT)
    with pytest.raises(UsageError) as caught:
        run(*argv)
    assert str(caught.value) == f"{' '.join(argv)}: not supported yet: {reason}"


def test_env_files_are_read_as_docker_reads_them(tmp_path: Path) -> None:
    first = tmp_path / "a.env"
    first.write_text(
        '\ufeff# comment\n\nA=1\n  B= spaced \nPASSED\nUNSET\nC=x=y\nQ="quoted"\n',
        encoding="utf-8",
    )
    second = tmp_path / "b.env"
    second.write_text("A=2\nD=4\n", encoding="utf-8")
    spec = create(
        "--env-file",
        str(first),
        "--env-file",
        str(second),
        "-e",
        "D=5",
        environ={"PASSED": "from-env"},
    )
    assert spec.env == {
        "A": "2",  # a later file wins
        "B": " spaced ",  # docker trims the front of a line, never a value
        "PASSED": "from-env",
        "C": "x=y",
        "Q": '"quoted"',  # no quote removal in docker's env files
        "D": "5",  # -e wins over the files
    }


def test_an_env_file_name_with_whitespace_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.env"
    bad.write_text("MY VAR=1\n", encoding="utf-8")
    with pytest.raises(UsageError, match="contains whitespaces"):
        create("--env-file", str(bad))


def test_create_reads_the_command_after_the_image() -> None:
    args = build_parser().parse_args(
        ["service", "create", "--name", "web", "-p", "8080:80", "nginx:1", "sh", "-c", "--init"]
    )
    spec = spec_from_args(args)
    assert spec.command == ("sh", "-c", "--init")
    assert spec.init is False


@pytest.mark.parametrize(
    ("flags", "conflicts"),
    [
        (("--rollback",), []),
        (("--rollback", "-d", "-q"), []),
        (("--rollback", "--image", "x", "--env-add", "A=1"), ["--env-add", "--image"]),
        (("--rollback", "--force"), ["--force"]),
    ],
)
def test_rollback_combines_with_no_spec_flag(flags: tuple[str, ...], conflicts: list[str]) -> None:
    args = build_parser().parse_args(["service", "update", *flags, "web"])
    assert rollback_conflicts(args) == conflicts


def _run(tmp_path: Path, argv: list[str]) -> tuple[ExitStatus, list[dict[str, Any]]]:
    data_dir = Path(tempfile.mkdtemp(dir=tmp_path))
    with fake_agent(data_dir, {"service.rollback": None}) as requests:
        status = main([*argv, "--data-dir", str(data_dir)], Console(file=io.StringIO()))
    return status, requests


def test_update_rollback_rolls_back_and_refuses_other_flags(tmp_path: Path) -> None:
    status, requests = _run(tmp_path, ["service", "update", "--rollback", "-d", "web"])
    assert status is ExitStatus.OK
    assert [(r["op"], r["args"]) for r in requests] == [("service.rollback", {"service": "web"})]
    status, requests = _run(tmp_path, ["service", "update", "--rollback", "--force", "web"])
    assert (status, requests) == (ExitStatus.USAGE, [])


# ---------------------------------------------------------------------------- completeness


def _options(command: str) -> set[str]:
    return {
        option
        for action in _command_parser(command)._actions
        for option in action.option_strings
        if option not in ("-h", "--help", "--data-dir")
    }


def _used(rows: list[tuple[str, ...]]) -> set[str]:
    return {flag.partition("=")[0] for flags in rows for flag in flags if flag.startswith("-")}


def test_every_flag_has_a_row() -> None:
    shared = [flags for flags, _ in SHARED]
    not_supported = {c: set(_not_supported_options(c)) for c in ("create", "update")}
    create_rows = _used([*shared, *(f for f, _ in CREATE_ONLY), *(f for c, f, _ in REFUSED)])
    create_rows.add("--name")  # every row's (`create`)
    update_rows = _used(
        [*shared, *(f for f, _ in UPDATE_ONLY), *(f for c, f, _ in REFUSED if c == "update")]
    )
    aliases = {"-t": "--tty"}  # one action: its long name has the row
    for command, used in (("create", create_rows), ("update", update_rows)):
        missing = {
            o for o in _options(command) - used - not_supported[command] if aliases.get(o) is None
        }
        assert missing == set(), f"{command}: flags without a row"


@pytest.mark.parametrize("command", ["create", "update"])
def test_every_flag_shows_an_example_or_why_it_is_refused(command: str) -> None:
    for action in _command_parser(command)._actions:
        if not action.option_strings or action.dest in ("help", "data_dir"):
            continue
        assert action.help is not None, action.option_strings
        assert "e.g." in action.help or action.help.startswith("not supported yet"), (
            action.option_strings
        )


def test_quiet_create_prints_the_id_and_no_progress(tmp_path: Path) -> None:
    results = {
        "service.create": {"id": "svc1"},
        "service.ls": {"services": [SERVICE]},
        "service.ps": {"tasks": [TASK]},
    }
    for flags, expected in (
        (["-q"], "svc1\n"),
        ([], "svc1\nweb: 2/2 running\n"),
    ):
        out = io.StringIO()
        data_dir = Path(tempfile.mkdtemp(dir=tmp_path))  # a socket of its own for each command
        with fake_agent(data_dir, results) as requests:
            argv = ["service", "create", *flags, "--name", "web", "--data-dir", str(data_dir)]
            status = main([*argv, "swarmlet/web:1"], Console(file=out, width=200))
        assert (status, out.getvalue()) == (ExitStatus.OK, expected)
        assert [r["op"] for r in requests][:2] == ["service.create", "service.ls"]
