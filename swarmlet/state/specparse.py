"""Parsing and validating what users write in service flags: sizes, durations, ports, mounts,
constraints. Pure; shared by the CLI (errors before anything is sent) and the agent (the API may
be called by other clients).

Each parser raises `UsageError` naming the flag, the bad value and what was expected.
"""

from __future__ import annotations

import re

from swarmlet.errors import UsageError
from swarmlet.state.constraints import parse_constraint, preference_label
from swarmlet.state.model import FileRef, Mount, PortConfig, ServiceMode, ServiceSpec

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(i?b?)\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4, "p": 1024**5}
_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
MAX_PORT = 65535


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


def parse_duration(text: str, flag: str) -> float:
    """Seconds from Go-style durations ("1m30s", "500ms", "10s") or a bare number of seconds."""
    text = str(text).strip()
    try:
        return float(text)
    except ValueError:
        pass
    pos = 0
    total = 0.0
    for match in _DURATION_RE.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        pos = match.end()
    if pos != len(text) or not text:
        raise UsageError(f"{flag}: invalid duration {text!r}: expected e.g. 10s, 1m30s or 500ms")
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
    """ "8080:80", "8080:80/udp", or "published=8080,target=80,protocol=tcp,mode=host"."""
    if "=" in text:
        fields = dict(parse_key_value(part, flag) for part in text.split(","))
        unknown = set(fields) - {"published", "target", "protocol", "mode"}
        if unknown:
            raise UsageError(f"{flag}: unknown field(s) {', '.join(sorted(unknown))} in {text!r}")
        if "target" not in fields or "published" not in fields:
            raise UsageError(f"{flag}: {text!r} needs both published= and target=")
        port = PortConfig(
            published=_port_number(fields["published"], flag, text),
            target=_port_number(fields["target"], flag, text),
            protocol=fields.get("protocol", "tcp"),
            mode=fields.get("mode", "ingress"),
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
    return port


def parse_mount(text: str, flag: str = "--mount") -> Mount:
    """ "type=volume,source=data,target=/data[,readonly]" (docker's --mount syntax)."""
    fields: dict[str, str] = {}
    read_only = False
    opts: dict[str, str] = {}
    for part in text.split(","):
        if part in ("readonly", "ro"):
            read_only = True
            continue
        key, value = parse_key_value(part, flag)
        if key in ("readonly", "ro"):
            read_only = value.lower() in ("1", "true", "")
        elif key == "volume-opt":
            opt_key, opt_value = parse_key_value(value, flag)
            opts[opt_key] = opt_value
        else:
            fields[{"src": "source", "dst": "target", "destination": "target"}.get(key, key)] = (
                value
            )
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


def validate_spec(spec: ServiceSpec) -> None:
    """Checks that do not depend on the cluster state (those are `ClusterState.apply`'s)."""
    if not spec.name or not re.fullmatch(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*", spec.name):
        raise UsageError(f"--name: invalid service name {spec.name!r}: use letters, digits, _ . -")
    if not spec.image:
        raise UsageError("an image is required")
    if spec.replicas < 0:
        raise UsageError(f"--replicas: must be 0 or more, got {spec.replicas}")
    if spec.mode is ServiceMode.GLOBAL and spec.replicas != 1:
        raise UsageError("--replicas cannot be used with --mode global")
    for text in spec.placement.constraints:
        parse_constraint(text)
    for pref in spec.placement.preferences:
        if preference_label(pref) is None:
            raise UsageError(f"--placement-pref: expected spread=node.labels.KEY, got {pref!r}")
    if spec.placement.max_replicas_per_node < 0:
        raise UsageError("--replicas-max-per-node: must be 0 or more")
    seen: set[tuple[int, str]] = set()
    for port in spec.ports:
        key = (port.published, port.protocol)
        if key in seen:
            raise UsageError(f"--publish: port {port.published}/{port.protocol} is given twice")
        seen.add(key)
    if spec.restart.max_attempts < 0:
        raise UsageError("--restart-max-attempts: must be 0 or more")
    if spec.update.parallelism < 0 or spec.rollback.parallelism < 0:
        raise UsageError("--update-parallelism: must be 0 or more")
    if not 0.0 <= spec.update.max_failure_ratio <= 1.0:
        raise UsageError("--update-max-failure-ratio: must be between 0 and 1")
