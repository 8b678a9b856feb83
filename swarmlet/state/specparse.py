"""Parsing and validating what users write in service flags: sizes, durations, ports, mounts,
extra hosts, capabilities, networks, constraints, ulimits, DNS settings, generic resources.
Pure; shared by the CLI (errors before anything is sent) and the agent (the API may be called by
other clients).

Each parser raises `UsageError` naming the flag, the bad value and what was expected. Syntax is
docker CLI 28's (`opts/`: mount.go, port.go, hosts.go, network.go, capabilities.go); what the
syntax has and swarmlet's model cannot hold is refused by name, never dropped (go-units'
ulimit.go and opts.ValidateDNSSearch / ParseGenericResources for the container settings).
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Iterable

from swarmlet.errors import UsageError
from swarmlet.state.constraints import preference_label, validate_constraint
from swarmlet.state.model import (
    FileRef,
    GenericResource,
    Mount,
    NetworkAttachment,
    PortConfig,
    ServiceSpec,
    Ulimit,
)
from swarmlet.state.replica_limit import MAX_REPLICAS

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(i?b?)\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4, "p": 1024**5}
_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
MAX_PORT = 65535
# Go's strconv.ParseBool, which docker's option parsers use.
_GO_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_GO_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})
_NAME_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*")
# go-units' ulimitNameMapping: the rlimits Docker can set.
ULIMIT_NAMES = frozenset(
    {
        "core", "cpu", "data", "fsize", "locks", "memlock", "msgqueue", "nice", "nofile",
        "nproc", "rss", "rtprio", "rttime", "sigpending", "stack",
    }
)  # fmt: skip
# docker's opts.validateDomain: dot-separated labels of letters, digits and inner hyphens.
_DOMAIN_LABEL = r"[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?"
_DOMAIN_RE = re.compile(rf"{_DOMAIN_LABEL}(\.{_DOMAIN_LABEL})*")
_MAX_DOMAIN_LENGTH = 255


def parse_go_bool(text: str, flag: str, whole: str) -> bool:
    if text in _GO_TRUE:
        return True
    if text in _GO_FALSE:
        return False
    raise UsageError(f"{flag}: invalid boolean {text!r} in {whole!r}: expected true or false")


def parse_size(text: str, flag: str) -> int:
    """Bytes from "512m", "1g", "1.5GiB", "1024" (docker's RAMInBytes: binary units)."""
    match = _SIZE_RE.match(str(text))
    if match is None:
        raise UsageError(
            f"{flag}: invalid size {text!r}: expected a number with an optional unit (b, k, m, g)"
        )
    number, unit, _ = match.groups()
    return int(float(number) * _SIZE_UNITS[unit.lower()])


def parse_cpus(text: str, flag: str) -> int:
    """nano CPUs from "0.5", "2"."""
    try:
        value = float(text)
    except ValueError:
        raise UsageError(
            f"{flag}: invalid CPU count {text!r}: expected a number like 0.5"
        ) from None
    if value < 0:
        raise UsageError(f"{flag}: CPU count must not be negative, got {text!r}")
    return round(value * 1e9)


# The longest duration a spec may hold: within Go's time.Duration (int64 nanoseconds, 292 years),
# which Docker takes. `inf` and `nan` parsed as floats, and every agent given the task crashed
# converting them to nanoseconds, again at each restart (review).
MAX_DURATION_S = 9e9  # 285 years


def check_duration(value: float, flag: str) -> None:
    if not (math.isfinite(value) and 0 <= value <= MAX_DURATION_S):
        raise UsageError(f"{flag}: a duration must be from 0 to 285 years, got {value!r} s")


def parse_duration(text: str, flag: str) -> float:
    """Seconds from Go-style durations ("1m30s", "500ms", "10s") or a bare number of seconds,
    from 0 to MAX_DURATION_S."""
    text = str(text).strip()
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        check_duration(seconds, flag)
        return seconds
    pos = 0
    total = 0.0
    for match in _DURATION_RE.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        pos = match.end()
    if pos != len(text) or not text:
        raise UsageError(f"{flag}: invalid duration {text!r}: expected e.g. 10s, 1m30s or 500ms")
    check_duration(total, flag)
    return total


def parse_key_value(text: str, flag: str) -> tuple[str, str]:
    key, _, value = text.partition("=")
    if not key:
        raise UsageError(f"{flag}: invalid {text!r}: expected KEY=VALUE")
    return key, value


def _port_number(text: str, flag: str, whole: str) -> int:
    if not text.isdigit() or not 0 < int(text) <= MAX_PORT:
        raise UsageError(f"{flag}: invalid port {text!r} in {whole!r}: expected 1-{MAX_PORT}")
    return int(text)


def parse_port(text: str, flag: str = "--publish") -> PortConfig:
    """ "8080:80", "8080:80/udp", or "published=8080,target=80,protocol=tcp,mode=host"; the
    long form also takes swarmlet's "proxy-protocol=v1|v2" (ingress TCP ports only: the mesh
    sends the header, and only the mesh relays their connections)."""
    if "=" in text:
        fields = dict(parse_key_value(part, flag) for part in text.split(","))
        unknown = set(fields) - {"published", "target", "protocol", "mode", "proxy-protocol"}
        if unknown:
            raise UsageError(f"{flag}: unknown field(s) {', '.join(sorted(unknown))} in {text!r}")
        if "target" not in fields or "published" not in fields:
            raise UsageError(f"{flag}: {text!r} needs both published= and target=")
        if fields.get("proxy-protocol") == "":  # given empty: neither version, nor "none"
            raise UsageError(f"{flag}: proxy-protocol must be v1 or v2, got ''")
        port = PortConfig(
            published=_port_number(fields["published"], flag, text),
            target=_port_number(fields["target"], flag, text),
            protocol=fields.get("protocol", "tcp"),
            mode=fields.get("mode", "ingress"),
            proxy_protocol=fields.get("proxy-protocol", ""),
        )
    else:
        body, _, protocol = text.partition("/")
        published, sep, target = body.partition(":")
        if not sep:
            raise UsageError(f"{flag}: invalid {text!r}: expected PUBLISHED:TARGET[/tcp|udp]")
        port = PortConfig(
            published=_port_number(published, flag, text),
            target=_port_number(target, flag, text),
            protocol=protocol or "tcp",
        )
    if port.protocol not in ("tcp", "udp"):
        raise UsageError(f"{flag}: protocol must be tcp or udp, got {port.protocol!r}")
    if port.mode not in ("ingress", "host"):
        raise UsageError(f"{flag}: mode must be ingress or host, got {port.mode!r}")
    refusal = proxy_protocol_refusal(port)
    if refusal:
        raise UsageError(f"{flag}: {refusal}")
    return port


PROXY_PROTOCOL_VERSIONS = ("v1", "v2")


def proxy_protocol_refusal(port: PortConfig) -> str:
    """Why `port` cannot have its `proxy_protocol`, "" if it can (or has none): the mesh sends
    the header, so only the TCP connections it relays, those of ingress ports, can have one."""
    if not port.proxy_protocol:
        return ""
    if port.proxy_protocol not in PROXY_PROTOCOL_VERSIONS:
        return f"proxy-protocol must be v1 or v2, got {port.proxy_protocol!r}"
    if port.protocol != "tcp":
        return (
            f"proxy-protocol is for tcp ports only: port {port.published}/{port.protocol} has "
            "no connection to open with a header"
        )
    if port.mode != "ingress":
        return (
            f"proxy-protocol needs mode=ingress: port {port.published} is published mode=host, "
            "straight to the container, not through the mesh that sends the header"
        )
    return ""


def parse_port_selector(text: str, flag: str = "--publish-rm") -> tuple[int, str, str | None]:
    """Which published ports `--publish-rm` removes, as docker reads it: by TARGET port.

    "80", "80/udp", "8080:80" (target 80), or "published=8080,target=80[,protocol=udp]
    [,mode=host]"; (target, protocol, mode), the protocol "tcp" unless given, the mode None
    (any) unless given."""
    mode: str | None = None
    if "=" in text:
        fields = dict(parse_key_value(part, flag) for part in text.split(","))
        unknown = set(fields) - {"published", "target", "protocol", "mode", "proxy-protocol"}
        if unknown:
            raise UsageError(f"{flag}: unknown field(s) {', '.join(sorted(unknown))} in {text!r}")
        if "target" not in fields:
            raise UsageError(f"{flag}: {text!r} needs target= (ports are removed by target)")
        if "published" in fields:
            _port_number(fields["published"], flag, text)
        target = _port_number(fields["target"], flag, text)
        protocol = fields.get("protocol", "tcp")
        mode = fields.get("mode")
    else:
        body, _, protocol = text.partition("/")
        published, sep, target_text = body.rpartition(":")
        if sep:
            _port_number(published, flag, text)
        target = _port_number(target_text, flag, text)
        protocol = protocol or "tcp"
    if protocol not in ("tcp", "udp"):
        raise UsageError(f"{flag}: protocol must be tcp or udp, got {protocol!r}")
    if mode not in (None, "ingress", "host"):
        raise UsageError(f"{flag}: mode must be ingress or host, got {mode!r}")
    return target, protocol, mode


# docker's --mount keys (opts/mount.go) that swarmlet's Mount cannot hold, and why not.
_MOUNT_KEYS_NOT_SUPPORTED = {
    "tmpfs-size": "tmpfs mounts take Docker's default size",
    "tmpfs-mode": "tmpfs mounts take Docker's default mode (1777)",
    "bind-propagation": "bind mounts take Docker's default propagation (rprivate)",
    "bind-nonrecursive": "bind mounts are recursive",
    "bind-recursive": "bind mounts are recursive",
    "bind-create-host-path": "a bind mount's source must exist",
    "volume-nocopy": "a new volume is filled from the image, as Docker's default",
    "volume-label": "volumes carry no labels",
    "volume-subpath": "a volume is mounted whole",
    "image-subpath": "image mounts are not supported",
    "consistency": "it only means something on Docker Desktop for Mac",
}
# Values of those keys that ask for what swarmlet does anyway: accepted.
_MOUNT_DEFAULTS = {
    "bind-propagation": {"rprivate"},
    "bind-nonrecursive": _GO_FALSE,
    "bind-recursive": {"enabled"},
    "volume-nocopy": _GO_FALSE,
    "consistency": {"default", "consistent"},
}
_MOUNT_ALIASES = {"src": "source", "dst": "target", "destination": "target", "ro": "readonly"}
_MOUNT_KEYS = frozenset({"type", "source", "target", "readonly", "volume-driver", "volume-opt"})


def parse_mount(text: str, flag: str = "--mount") -> Mount:
    """ "type=volume,source=data,target=/data[,readonly]" (docker's --mount syntax).

    docker's keys that swarmlet's mounts cannot hold (`tmpfs-size`, `bind-propagation`,
    `volume-nocopy`, ...) are refused by name, and unknown keys as docker refuses them."""
    fields: dict[str, str] = {}
    read_only = False
    opts: dict[str, str] = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        key = _MOUNT_ALIASES.get(key.strip().lower(), key.strip().lower())
        if key in _MOUNT_DEFAULTS and sep and value in _MOUNT_DEFAULTS[key]:
            continue
        if key in _MOUNT_KEYS_NOT_SUPPORTED:
            raise UsageError(
                f"{flag}: {key} is not supported yet in {text!r}: {_MOUNT_KEYS_NOT_SUPPORTED[key]}"
            )
        if key not in _MOUNT_KEYS:
            raise UsageError(f"{flag}: unexpected key {key!r} in {text!r}")
        if key == "readonly":
            read_only = parse_go_bool(value, flag, text) if sep else True
        elif not sep:
            raise UsageError(f"{flag}: invalid field {part!r} in {text!r}: must be a key=value")
        elif key == "volume-opt":
            opt_key, opt_value = parse_key_value(value, flag)
            opts[opt_key] = opt_value
        else:
            fields[key] = value
    mount_type = fields.get("type", "volume")
    if mount_type not in ("volume", "bind", "tmpfs"):
        raise UsageError(f"{flag}: type must be volume, bind or tmpfs, got {mount_type!r}")
    if not fields.get("target", "").startswith("/"):
        raise UsageError(f"{flag}: {text!r} needs target=/absolute/path")
    if mount_type == "bind" and not fields.get("source", "").startswith("/"):
        raise UsageError(f"{flag}: a bind mount needs source=/absolute/path")
    if mount_type != "volume" and (opts or "volume-driver" in fields):
        # As docker refuses them: a volume's driver and options mean nothing to a bind or tmpfs.
        raise UsageError(f"{flag}: volume-opt and volume-driver apply only to type=volume")
    return Mount(
        type=mount_type,
        target=fields["target"],
        source=fields.get("source", ""),
        read_only=read_only,
        driver=fields.get("volume-driver", ""),
        driver_opts=opts,
    )


def parse_file_ref(text: str, flag: str) -> FileRef:
    """ "NAME" or "source=NAME,target=PATH,uid=0,gid=0,mode=0400" (--secret / --config)."""
    if "=" not in text:
        return FileRef(name=text, target=text)
    fields = dict(parse_key_value(part, flag) for part in text.split(","))
    unknown = set(fields) - {"source", "src", "target", "uid", "gid", "mode"}
    if unknown:
        raise UsageError(f"{flag}: unknown field(s) {', '.join(sorted(unknown))} in {text!r}")
    name = fields.get("source") or fields.get("src") or ""
    if not name:
        raise UsageError(f"{flag}: {text!r} needs source=NAME")
    try:
        mode = int(fields.get("mode", "0444"), 8)
    except ValueError:
        raise UsageError(f"{flag}: mode must be octal, e.g. 0400, got {fields['mode']!r}") from None
    return FileRef(
        name=name,
        target=fields.get("target", name),
        uid=fields.get("uid", "0"),
        gid=fields.get("gid", "0"),
        mode=mode,
    )


def parse_extra_host(text: str, flag: str = "--host") -> str:
    """ "HOST:IP" or "HOST=IP" (docker's ValidateExtraHost; IP may be IPv6, in brackets or not,
    or host-gateway) -> "HOST:IP", the form the spec keeps."""
    sep = "=" if "=" in text else ":"
    host, found, address = text.partition(sep)
    host, address = host.strip(), address.strip()
    if not found or not host:
        raise UsageError(f"{flag}: bad format {text!r}: expected HOST:IP, e.g. db:10.0.0.5")
    if address.startswith("[") and address.endswith("]"):
        address = address[1:-1]
    if address != "host-gateway":
        try:
            ipaddress.ip_address(address)
        except ValueError:
            raise UsageError(f"{flag}: invalid IP address {address!r} in {text!r}") from None
    return f"{host}:{address}"


def host_name_of(entry: str) -> str:
    """The host name of an extra-hosts entry "HOST:IP"."""
    return entry.partition(":")[0]


ALL_CAPABILITIES = "ALL"


def normalize_capabilities(names: Iterable[str]) -> tuple[str, ...]:
    """docker's normalizeCaps: upper case, "CAP_" prefixed, sorted, without repeats; "ALL"
    alone stands for every capability."""
    out: set[str] = set()
    for name in names:
        name = name.strip().upper()
        if not name:
            continue
        if name == ALL_CAPABILITIES:
            return (ALL_CAPABILITIES,)
        out.add(name if name.startswith("CAP_") else "CAP_" + name)
    return tuple(sorted(out))


def effective_capabilities(
    add: Iterable[str], drop: Iterable[str]
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """docker's EffectiveCapAddCapDrop: (cap_add, cap_drop) normalized; adding wins over
    dropping the same capability, and adding ALL drops nothing."""
    added = normalize_capabilities(add)
    dropped = normalize_capabilities(drop)
    if ALL_CAPABILITIES in added:
        return added, ()
    return added, tuple(c for c in dropped if c not in added)


def parse_network(text: str, flag: str = "--network") -> NetworkAttachment:
    """ "NAME" or "name=NAME,alias=A[,alias=B]" (docker's NetworkOpt). swarmlet makes the
    network on each node that runs the service's tasks (`executor.networks`); docker's other
    keys (driver-opt, ip, ...) are refused by name."""
    aliases: list[str] = []
    if "=" not in text:
        name = text.strip()
    else:
        name = ""
        for part in text.split(","):
            key, _, value = part.partition("=")
            key = key.strip().lower()
            if key in ("name", "target"):
                name = value.strip()
            elif key == "alias":
                aliases.append(value.strip())
            elif key in ("driver-opt", "ip", "ip6", "mac-address", "link-local-ip", "gw-priority"):
                raise UsageError(
                    f"{flag}: {key} is not supported yet in {text!r}: swarmlet makes each "
                    "network itself, as a bridge on every node"
                )
            else:
                raise UsageError(f"{flag}: invalid field key {key!r} in {text!r}")
    if not _NAME_RE.fullmatch(name):
        raise UsageError(
            f"{flag}: invalid network name {name!r} in {text!r}: use letters, digits, _ . -"
        )
    for alias in aliases:
        if not _NAME_RE.fullmatch(alias):
            raise UsageError(f"{flag}: invalid alias {alias!r} in {text!r}")
    return NetworkAttachment(name=name, aliases=tuple(aliases))


def parse_ulimit(text: str, flag: str = "--ulimit") -> Ulimit:
    """ "NAME=SOFT[:HARD]" (go-units' ParseUlimit): HARD defaults to SOFT; -1 is unlimited."""
    name, sep, limits = text.partition("=")
    if not sep or not name or not limits:
        raise UsageError(
            f"{flag}: invalid {text!r}: expected NAME=SOFT[:HARD], e.g. nofile=1024:2048"
        )
    parts = limits.split(":")
    if len(parts) > 2:
        raise UsageError(f"{flag}: invalid {text!r}: at most two limits, SOFT[:HARD]")
    try:
        values = [int(part) for part in parts]
    except ValueError:
        raise UsageError(
            f"{flag}: invalid limit in {text!r}: expected whole numbers, e.g. nofile=1024:2048"
        ) from None
    ulimit = Ulimit(name, values[0], values[-1])
    check_ulimit(ulimit, flag)
    return ulimit


def check_ulimit(ulimit: Ulimit, flag: str = "--ulimit") -> None:
    if ulimit.name not in ULIMIT_NAMES:
        raise UsageError(
            f"{flag}: invalid ulimit name {ulimit.name!r}: expected one of "
            f"{', '.join(sorted(ULIMIT_NAMES))}"
        )
    if min(ulimit.soft, ulimit.hard) < -1:
        raise UsageError(f"{flag} {ulimit.name}: limits must be -1 (unlimited) or more")
    # -1 (RLIM_INFINITY) is the largest limit.
    if ulimit.hard != -1 and (ulimit.soft == -1 or ulimit.soft > ulimit.hard):
        raise UsageError(
            f"{flag} {ulimit.name}: the soft limit must be less than or equal to the hard "
            f"limit: {ulimit.soft} > {ulimit.hard}"
        )


def merge_ulimits(kept: Iterable[Ulimit], added: Iterable[Ulimit]) -> tuple[Ulimit, ...]:
    """One ulimit per name, a later one winning, sorted by name (as docker's updateUlimits)."""
    by_name = {u.name: u for u in kept}
    by_name.update((u.name, u) for u in added)
    return tuple(by_name[name] for name in sorted(by_name))


def parse_dns_server(text: str, flag: str = "--dns") -> str:
    """An IPv4 or IPv6 address (docker's ValidateIPAddress)."""
    try:
        return str(ipaddress.ip_address(text.strip()))
    except ValueError:
        raise UsageError(
            f"{flag}: invalid IP address {text!r}: expected a name server's address, e.g. 8.8.8.8"
        ) from None


def parse_dns_search(text: str, flag: str = "--dns-search") -> str:
    """A search domain, or "." for none (docker's ValidateDNSSearch)."""
    domain = text.strip()
    if domain == ".":
        return domain
    if len(domain) > _MAX_DOMAIN_LENGTH or not _DOMAIN_RE.fullmatch(domain.removesuffix(".")):
        raise UsageError(
            f"{flag}: invalid search domain {text!r}: expected a domain name, e.g. example.com"
        )
    return domain


def parse_dns_option(text: str, flag: str = "--dns-option") -> str:
    """A resolv.conf option ("ndots:2", "edns0"): one word."""
    if not text or any(c.isspace() for c in text):
        raise UsageError(
            f"{flag}: invalid option {text!r}: expected one resolv.conf option, e.g. ndots:2"
        )
    return text


def parse_generic_resource(text: str, flag: str = "--generic-resource") -> GenericResource:
    """ "KIND=COUNT" per task (docker's ParseGenericResources): a service reserves a count of
    a kind; the ids of a named kind are the node's to give (`state.generic_resources`)."""
    kind, sep, value = text.partition("=")
    kind, value = kind.strip(), value.strip()
    if not sep or not kind or not value:
        raise UsageError(f"{flag}: invalid {text!r}: expected KIND=COUNT, e.g. gpu=2")
    if not value.isdigit():
        raise UsageError(
            f"{flag}: invalid count {value!r} in {text!r}: expected a whole number (named "
            "resources, KIND=ID, are not supported: a service reserves a count of a kind, and "
            "the node gives each task ids of it)"
        )
    return GenericResource(kind, int(value))


def _check_unique(values: Iterable[str], what: str) -> None:
    seen: set[str] = set()
    for value in values:
        if value in seen:
            raise UsageError(what.format(value))
        seen.add(value)


# Each preference splits the nodes once more, a level of the scheduler's tree: a thousand of them
# overflowed its recursion and stopped the leader, and every leader after it (review). Swarm's
# docs show one or two.
MAX_PLACEMENT_PREFERENCES = 16


def _durations(spec: ServiceSpec) -> list[tuple[float, str]]:
    """Every duration of `spec`, with the flag that sets it."""
    found = [
        (spec.stop_grace_period_s, "--stop-grace-period"),
        (spec.restart.window_s, "--restart-window"),
        (spec.update.delay_s, "--update-delay"),
        (spec.update.monitor_s, "--update-monitor"),
        (spec.rollback.delay_s, "--rollback-delay"),
        (spec.rollback.monitor_s, "--rollback-monitor"),
    ]
    if spec.restart.delay_s is not None:
        found.append((spec.restart.delay_s, "--restart-delay"))
    if spec.healthcheck is not None:
        check = spec.healthcheck
        found += [
            (check.interval_s, "--health-interval"),
            (check.timeout_s, "--health-timeout"),
            (check.start_period_s, "--health-start-period"),
        ]
    return found


def validate_spec(spec: ServiceSpec) -> None:
    """Checks that do not depend on the cluster state (those are `ClusterState.apply`'s)."""
    if not spec.name or not re.fullmatch(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*", spec.name):
        raise UsageError(f"--name: invalid service name {spec.name!r}: use letters, digits, _ . -")
    if not spec.image:
        raise UsageError("an image is required")
    if spec.replicas < 0:
        raise UsageError(f"--replicas: must be 0 or more, got {spec.replicas}")
    if spec.replicas > MAX_REPLICAS:
        raise UsageError(
            f"--replicas: must be at most {MAX_REPLICAS:,} (the cluster's limit), "
            f"got {spec.replicas:,}"
        )
    if spec.autoscale is not None and spec.autoscale.max_replicas > MAX_REPLICAS:
        raise UsageError(
            f"--autoscale: max must be at most {MAX_REPLICAS:,} (the cluster's limit), "
            f"got {spec.autoscale.max_replicas:,}"
        )
    if spec.mode.is_global and spec.replicas != 1:
        raise UsageError(f"--replicas cannot be used with --mode {spec.mode}")
    for seconds, flag in _durations(spec):
        check_duration(seconds, flag)
    for config, kind in ((spec.update, "update"), (spec.rollback, "rollback")):
        ratio = config.max_failure_ratio
        if not (math.isfinite(ratio) and 0 <= ratio <= 1):
            raise UsageError(f"--{kind}-max-failure-ratio: must be between 0 and 1, got {ratio!r}")
    if len(spec.placement.preferences) > MAX_PLACEMENT_PREFERENCES:
        raise UsageError(
            f"--placement-pref: at most {MAX_PLACEMENT_PREFERENCES}, "
            f"got {len(spec.placement.preferences)}"
        )
    if spec.max_concurrent < 0:
        raise UsageError(f"--max-concurrent: must be 0 or more, got {spec.max_concurrent}")
    if spec.max_concurrent and not spec.mode.is_job:
        raise UsageError(
            "--max-concurrent can only be used with a job (replicated-job, global-job)"
        )
    for text in spec.placement.constraints:
        validate_constraint(text)
    for pref in spec.placement.preferences:
        if preference_label(pref) is None:
            raise UsageError(f"--placement-pref: expected spread=node.labels.KEY, got {pref!r}")
    if spec.placement.max_replicas_per_node < 0:
        raise UsageError("--replicas-max-per-node: must be 0 or more")
    seen: set[tuple[int, str]] = set()
    for port in spec.ports:
        if refusal := proxy_protocol_refusal(port):  # the API's path does not go through parse_port
            raise UsageError(f"--publish: {refusal}")
        key = (port.published, port.protocol)
        if key in seen:
            raise UsageError(f"--publish: port {port.published}/{port.protocol} is given twice")
        seen.add(key)
    # docker refuses each of these (the CLI or the daemon): one file would hide the other.
    _check_unique(
        (r.target for r in spec.secrets), "--secret: duplicate secret target {} not allowed"
    )
    _check_unique(
        (r.target for r in spec.configs), "--config: duplicate config target {} not allowed"
    )
    _check_unique((n.name for n in spec.networks), "--network: network {} is attached twice")
    if spec.healthcheck is not None and spec.healthcheck.retries < 0:
        raise UsageError("--health-retries: must not be negative")
    if spec.restart.max_attempts < 0:
        raise UsageError("--restart-max-attempts: must be 0 or more")
    if spec.update.parallelism < 0 or spec.rollback.parallelism < 0:
        raise UsageError("--update-parallelism: must be 0 or more")
    _validate_container_settings(spec)


def _validate_container_settings(spec: ServiceSpec) -> None:
    """The settings only the container's engine reads: refused here rather than by Docker on
    every node, where each task would fail to start."""
    for ulimit in spec.ulimits:
        check_ulimit(ulimit)
    _check_unique((u.name for u in spec.ulimits), "--ulimit: {} is given twice")
    for key in spec.log_options:
        if not key:
            raise UsageError("--log-opt: invalid option with no name: expected KEY=VALUE")
    for server in spec.dns_servers:
        parse_dns_server(server)
    for domain in spec.dns_search:
        parse_dns_search(domain)
    for option in spec.dns_options:
        parse_dns_option(option)
    if spec.pids_limit < 0:
        raise UsageError(f"--limit-pids: must be 0 (unlimited) or more, got {spec.pids_limit}")
    for resource in spec.generic_resources:
        if not resource.kind or resource.value <= 0:
            raise UsageError(
                f"--generic-resource: invalid {resource.kind}={resource.value}: expected "
                "KIND=COUNT with a count of 1 or more"
            )
