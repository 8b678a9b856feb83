"""One validated, interpolated service -> docker's typed and normalised form, plus the
helpers ``toplevel`` shares.

Owns: what docker/cli's ``loadSections`` (mapstructure decode with the transformers of
``cli/compose/loader/loader.go``) followed by ``yaml.Marshal`` of ``cli/compose/types`` yields:
keys in Go struct field order, ``omitempty`` applied (zero scalars, empty lists/maps and all-zero
non-pointer structs dropped; pointer fields kept once set), Go maps with yaml's key order,
durations as ``time.Duration.String``, sizes as byte strings, ports/volumes in long form,
env files merged into ``environment``, relative paths made absolute.

Invariant: the input passed the schema, so shapes are known; remaining checks (bad port spec,
bad duration, missing env file, conflicting ``external``) raise StackError with the key path.
Must not know: top-level resources (``toplevel``), multi-file merging (``merge``),
rendering (``render``).
"""

from __future__ import annotations

import os.path
import posixpath
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from swarmlet.errors import StackError
from swarmlet.stack.envfile import parse_env_text
from swarmlet.stack.goformat import (
    format_duration,
    go_sprint,
    parse_duration_ns,
    ram_in_bytes,
    shell_split,
    sorted_map,
)
from swarmlet.stack.ports import short_port_to_long
from swarmlet.stack.volumes import parse_volume


@dataclass
class Context:
    """Per-file inputs of the normalisation, and the warnings it collects."""

    file: str
    working_dir: str
    environ: Mapping[str, str]
    version: str
    warnings: list[str] = field(default_factory=list)
    # env_file entries resolve against the directory of the file naming them, so a file means
    # the same wherever it is merged from; docker uses the working dir, which is the same
    # directory unless `workdir` is given.
    file_dir: str = ""

    def error(self, path: str, message: str) -> StackError:
        return StackError(self.file, path, message)


Obj = dict[str, Any]


def put(out: Obj, key: str, value: Any) -> None:
    """omitempty: keep only non-zero values (None, "", 0, False, [], {} are zero)."""
    if value is None or value is False or value == "":
        return
    if isinstance(value, int | float) and not isinstance(value, bool) and value == 0:
        return
    if isinstance(value, list | dict) and not value:
        return
    out[key] = value


def str_field(value: Any, ctx: Context, path: str) -> str:
    # mapstructure without WeaklyTypedInput refuses to turn numbers into strings.
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ctx.error(
            path,
            f"expected type 'string', got unconvertible type '{type(value).__name__}', "
            f"value: '{go_sprint(value)}'",
        )
    return value


def _string_list(value: Any) -> list[str]:
    # transformStringList
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]


def _shell_command(value: Any, ctx: Context, path: str) -> list[str]:
    # transformShellCommand: google/shlex.Split for strings
    if value is None:
        return []
    if isinstance(value, str):
        try:
            return shell_split(value)
        except ValueError as exc:
            raise ctx.error(path, f"cannot split command: {exc}") from exc
    return [go_sprint(v) for v in value]


def mapping(value: Any, allow_nil: bool) -> dict[str, str | None]:
    # transformMappingOrList(sep "=") / toMapStringString
    out: dict[str, str | None] = {}
    if value is None:
        return out
    if isinstance(value, dict):
        for key, item in value.items():
            out[key] = go_sprint(item) if item is not None else (None if allow_nil else "")
        return out
    for item in value:
        key, sep, rest = str(item).partition("=")
        out[key] = rest if sep else (None if allow_nil else "")
    return out


def _hosts(value: Any) -> list[str]:
    # transformListOrMapping(":"): a mapping becomes sorted "host:ip" strings
    if value is None:
        return []
    if isinstance(value, dict):
        return sorted(f"{k}:{go_sprint(v)}" for k, v in value.items() if v is not None)
    return [str(v) for v in value]


def _duration(value: Any, ctx: Context, path: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ctx.error(path, f"invalid type {type(value).__name__} for duration")
    try:
        return format_duration(parse_duration_ns(value))
    except ValueError as exc:
        raise ctx.error(path, str(exc)) from exc


def size_field(value: Any, ctx: Context, path: str) -> str | None:
    # UnitBytes: MarshalYAML prints "%d"; omitempty drops 0.
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        size = value
    else:
        try:
            size = ram_in_bytes(str(value))
        except ValueError as exc:
            raise ctx.error(path, str(exc)) from exc
    return str(size) if size else None


def string_map(value: Any) -> dict[str, str]:
    return sorted_map({k: go_sprint(v) for k, v in (value or {}).items() if v is not None})


def abs_path(working_dir: str, file_path: str) -> str:
    # loader.absPath: filepath.IsAbs ? path : filepath.Join(workingDir, path)
    if posixpath.isabs(file_path):
        return file_path
    return (
        posixpath.normpath(posixpath.join(working_dir, file_path))
        if file_path
        else (posixpath.normpath(working_dir))
    )


def struct(fields: Obj) -> Obj:
    out: Obj = {}
    for key, value in fields.items():
        put(out, key, value)
    return out


def extras(raw: Obj) -> Obj:
    return sorted_map({k: v for k, v in raw.items() if k.startswith("x-")})


# --- services -----------------------------------------------------------------------------


def _build(value: Any, ctx: Context, path: str) -> Obj:
    if value is None:
        return {}
    if isinstance(value, str):
        value = {"context": value}
    return struct(
        {
            "context": str_field(value.get("context"), ctx, path + ".context"),
            "dockerfile": str_field(value.get("dockerfile"), ctx, path + ".dockerfile"),
            "args": sorted_map(mapping(value.get("args"), True)),
            "labels": sorted_map(mapping(value.get("labels"), False)),
            "cache_from": _string_list(value.get("cache_from")),
            "extra_hosts": _hosts(value.get("extra_hosts")),
            "network": str_field(value.get("network"), ctx, path + ".network"),
            "target": str_field(value.get("target"), ctx, path + ".target"),
        }
    )


def _file_refs(value: Any, ctx: Context, path: str) -> list[Obj]:
    # transformStringSourceMap + FileReferenceConfig
    out = []
    for i, item in enumerate(value or []):
        entry = {"source": item} if isinstance(item, str) else item
        ref = struct(
            {
                "source": str_field(entry.get("source"), ctx, f"{path}[{i}].source"),
                "target": str_field(entry.get("target"), ctx, f"{path}[{i}].target"),
                "uid": str_field(entry.get("uid"), ctx, f"{path}[{i}].uid"),
                "gid": str_field(entry.get("gid"), ctx, f"{path}[{i}].gid"),
            }
        )
        if entry.get("mode") is not None:
            ref["mode"] = entry["mode"]  # *uint32: kept once set
        out.append(ref)
    return out


def _update_config(value: Any, ctx: Context, path: str) -> Obj | None:
    if value is None:
        return None
    out: Obj = {}
    if value.get("parallelism") is not None:
        out["parallelism"] = value["parallelism"]
    put(out, "delay", _nonzero_duration(value.get("delay"), ctx, path + ".delay"))
    put(out, "failure_action", str_field(value.get("failure_action"), ctx, path))
    put(out, "monitor", _nonzero_duration(value.get("monitor"), ctx, path + ".monitor"))
    put(out, "max_failure_ratio", value.get("max_failure_ratio"))
    put(out, "order", str_field(value.get("order"), ctx, path + ".order"))
    return out


def _nonzero_duration(value: Any, ctx: Context, path: str) -> str | None:
    # a non-pointer Duration: omitempty drops 0
    text = _duration(value, ctx, path)
    return None if text == "0s" else text


def _resources(value: Any, ctx: Context, path: str) -> Obj:
    if not value:
        return {}
    out: Obj = {}
    limits = value.get("limits")
    if limits is not None:
        out["limits"] = struct(
            {
                "cpus": str_field(limits.get("cpus"), ctx, path + ".limits.cpus"),
                "memory": size_field(limits.get("memory"), ctx, path + ".limits.memory"),
                "pids": limits.get("pids"),
            }
        )
    reservations = value.get("reservations")
    if reservations is not None:
        generic = [
            {
                "discrete_resource_spec": {
                    "kind": item["discrete_resource_spec"].get("kind", ""),
                    "value": item["discrete_resource_spec"].get("value", 0),
                }
            }
            if item.get("discrete_resource_spec") is not None
            else {}
            for item in reservations.get("generic_resources") or []
        ]
        out["reservations"] = struct(
            {
                "cpus": str_field(reservations.get("cpus"), ctx, path + ".reservations.cpus"),
                "memory": size_field(
                    reservations.get("memory"), ctx, path + ".reservations.memory"
                ),
                "generic_resources": generic,
            }
        )
    return out


def _deploy(value: Any, ctx: Context, path: str) -> Obj:
    if not value:
        return {}
    out: Obj = {}
    put(out, "mode", str_field(value.get("mode"), ctx, path + ".mode"))
    if value.get("replicas") is not None:
        out["replicas"] = value["replicas"]
    put(out, "labels", sorted_map(mapping(value.get("labels"), False)))
    for key in ("update_config", "rollback_config"):
        cfg = _update_config(value.get(key), ctx, f"{path}.{key}")
        if cfg is not None:
            out[key] = cfg
    put(out, "resources", _resources(value.get("resources"), ctx, path + ".resources"))
    policy = value.get("restart_policy")
    if policy is not None:
        restart: Obj = {}
        put(restart, "condition", str_field(policy.get("condition"), ctx, path))
        for key in ("delay", "max_attempts", "window"):
            if policy.get(key) is None:
                continue
            if key == "max_attempts":
                restart[key] = policy[key]
            else:
                restart[key] = _duration(policy[key], ctx, f"{path}.restart_policy.{key}")
        out["restart_policy"] = restart
    placement = value.get("placement") or {}
    put(
        out,
        "placement",
        struct(
            {
                "constraints": [str(c) for c in placement.get("constraints") or []],
                "preferences": [
                    struct({"spread": p.get("spread")}) for p in placement.get("preferences") or []
                ],
                "max_replicas_per_node": placement.get("max_replicas_per_node"),
            }
        ),
    )
    put(out, "endpoint_mode", str_field(value.get("endpoint_mode"), ctx, path + ".endpoint_mode"))
    return out


def _healthcheck(value: Any, ctx: Context, path: str) -> Obj | None:
    if value is None:
        return None
    out: Obj = {}
    test = value.get("test")
    if isinstance(test, str):
        out["test"] = ["CMD-SHELL", test]  # transformHealthCheckTest
    elif test:
        out["test"] = [str(t) for t in test]
    for key in ("timeout", "interval"):
        if value.get(key) is not None:
            out[key] = _duration(value[key], ctx, f"{path}.{key}")
    if value.get("retries") is not None:
        out["retries"] = value["retries"]
    for key in ("start_period", "start_interval"):
        if value.get(key) is not None:
            out[key] = _duration(value[key], ctx, f"{path}.{key}")
    put(out, "disable", value.get("disable"))
    return out


def _ports(value: Any, ctx: Context, path: str) -> list[Obj]:
    out: list[Obj] = []
    for i, item in enumerate(value or []):
        if isinstance(item, dict):
            entry: Obj = {}
            put(entry, "mode", str_field(item.get("mode"), ctx, f"{path}[{i}].mode"))
            put(entry, "target", item.get("target"))
            put(entry, "published", item.get("published"))
            put(entry, "protocol", str_field(item.get("protocol"), ctx, f"{path}[{i}].protocol"))
            out.append(entry)
            continue
        try:
            out.extend(short_port_to_long(go_sprint(item), ctx.warnings))
        except ValueError as exc:
            raise ctx.error(f"{path}[{i}]", str(exc)) from exc
    return out


def _expand_user(source: str, environ: Mapping[str, str], ctx: Context) -> str:
    if not source.startswith("~"):
        return source
    home = environ.get("HOME")
    if home is None:
        ctx.warnings.append("cannot expand '~', because the environment lacks HOME")
        return source
    return source.replace("~", home, 1)


def _service_volumes(value: Any, ctx: Context, path: str) -> list[Obj]:
    out: list[Obj] = []
    for i, item in enumerate(value or []):
        where = f"{path}[{i}]"
        if isinstance(item, str):
            try:
                raw = parse_volume(item)
            except ValueError as exc:
                raise ctx.error(where, str(exc)) from exc
        else:
            raw = item
        entry: Obj = {}
        put(entry, "type", str_field(raw.get("type"), ctx, where + ".type"))
        put(entry, "source", str_field(raw.get("source"), ctx, where + ".source"))
        put(entry, "target", str_field(raw.get("target"), ctx, where + ".target"))
        put(entry, "read_only", raw.get("read_only"))
        put(entry, "consistency", str_field(raw.get("consistency"), ctx, where + ".consistency"))
        for key, sub in (("bind", "propagation"), ("volume", "nocopy"), ("tmpfs", "size")):
            if raw.get(key) is not None:
                entry[key] = struct({sub: raw[key].get(sub)})
        if raw.get("cluster") is not None:
            entry["cluster"] = {}
        if entry.get("type") == "bind":
            # loader.resolveVolumePaths
            source = entry.get("source", "")
            if not source:
                raise ctx.error(
                    where, 'invalid mount config for type "bind": field Source must not be empty'
                )
            source = _expand_user(source, ctx.environ, ctx)
            if not posixpath.isabs(source) and not _is_windows_abs(source):
                source = abs_path(ctx.working_dir, source)
            entry["source"] = source
        out.append(entry)
    return out


def _is_windows_abs(text: str) -> bool:
    return len(text) >= 3 and text[0].isalpha() and text[1] == ":" and text[2] in "\\/"


def _environment(raw: Obj, ctx: Context, path: str) -> dict[str, str | None]:
    # loader.resolveEnvironment + updateEnvironment: env files first, then `environment`;
    # an empty or valueless entry takes the value of the environment when it has one.
    result: dict[str, str | None] = {}

    def update(pairs: dict[str, str | None]) -> None:
        for key, value in pairs.items():
            if (value is None or value == "") and key in ctx.environ:
                result[key] = ctx.environ[key]
            else:
                result[key] = value

    env_files = _string_list(raw.get("env_file"))
    if env_files:
        collected: dict[str, str | None] = {}
        for i, name in enumerate(env_files):
            file_path = abs_path(ctx.file_dir or ctx.working_dir, name)
            try:
                text = Path(file_path).read_text(encoding="utf-8")
            except OSError as exc:
                raise ctx.error(
                    f"{path}.env_file[{i}]",
                    f"cannot read env file {file_path}: {exc.strerror or exc}",
                ) from exc
            except UnicodeDecodeError as exc:
                raise ctx.error(
                    f"{path}.env_file[{i}]", f"env file {file_path} is not UTF-8: {exc.reason}"
                ) from exc
            try:
                for key, value in parse_env_text(text, ctx.environ):
                    collected[key] = value
            except ValueError as exc:
                raise ctx.error(f"{path}.env_file[{i}]", f"{file_path}: {exc}") from exc
        update(collected)
    update(mapping(raw.get("environment"), True))
    return sorted_map(result)


def _service_networks(value: Any) -> Obj:
    if value is None:
        return {}
    if isinstance(value, list):
        return sorted_map({name: None for name in value})
    out: Obj = {}
    for name, cfg in value.items():
        if cfg is None:
            out[name] = None
            continue
        out[name] = struct(
            {
                "aliases": [str(a) for a in cfg.get("aliases") or []],
                "driver_opts": string_map(cfg.get("driver_opts")),
                "ipv4_address": cfg.get("ipv4_address"),
                "ipv6_address": cfg.get("ipv6_address"),
            }
        )
    return sorted_map(out)


def _ulimits(value: Any) -> Obj:
    out: Obj = {}
    for name, limit in (value or {}).items():
        if isinstance(limit, dict):
            out[name] = struct({"soft": limit.get("soft"), "hard": limit.get("hard")})
        else:
            out[name] = limit
    return sorted_map(out)


def normalize_service(name: str, raw: Obj, ctx: Context) -> Obj:
    """types.ServiceConfig as yaml.Marshal prints it."""
    p = f"services.{name}"
    s: Callable[[str], str] = lambda key: str_field(raw.get(key), ctx, f"{p}.{key}")  # noqa: E731
    out: Obj = {}
    put(out, "build", _build(raw.get("build"), ctx, p + ".build"))
    put(out, "cap_add", [str(v) for v in raw.get("cap_add") or []])
    put(out, "cap_drop", [str(v) for v in raw.get("cap_drop") or []])
    put(out, "cgroupns_mode", s("cgroupns_mode"))
    put(out, "cgroup_parent", s("cgroup_parent"))
    put(out, "command", _shell_command(raw.get("command"), ctx, p + ".command"))
    put(out, "configs", _file_refs(raw.get("configs"), ctx, p + ".configs"))
    put(out, "container_name", s("container_name"))
    cred = raw.get("credential_spec") or {}
    put(out, "credential_spec", struct({k: cred.get(k) for k in ("config", "file", "registry")}))
    depends_on = raw.get("depends_on") or []
    if isinstance(depends_on, dict):  # compose-spec's long syntax (`stack.schema`)
        put(out, "depends_on", {str(k): dict(v or {}) for k, v in depends_on.items()})
    else:
        put(out, "depends_on", [str(v) for v in depends_on])
    put(out, "deploy", _deploy(raw.get("deploy"), ctx, p + ".deploy"))
    put(out, "devices", [str(v) for v in raw.get("devices") or []])
    put(out, "dns", _string_list(raw.get("dns")))
    put(out, "dns_search", _string_list(raw.get("dns_search")))
    put(out, "domainname", s("domainname"))
    put(out, "entrypoint", _shell_command(raw.get("entrypoint"), ctx, p + ".entrypoint"))
    put(out, "environment", _environment(raw, ctx, p))
    put(out, "env_file", _string_list(raw.get("env_file")))
    put(out, "expose", [go_sprint(v) for v in raw.get("expose") or []])
    put(out, "external_links", [str(v) for v in raw.get("external_links") or []])
    put(out, "extra_hosts", _hosts(raw.get("extra_hosts")))
    put(out, "hostname", s("hostname"))
    health = _healthcheck(raw.get("healthcheck"), ctx, p + ".healthcheck")
    if health is not None:
        out["healthcheck"] = health
    put(out, "image", s("image"))
    if raw.get("init") is not None:
        out["init"] = raw["init"]
    put(out, "ipc", s("ipc"))
    put(out, "isolation", s("isolation"))
    put(out, "labels", sorted_map(mapping(raw.get("labels"), False)))
    put(out, "links", [str(v) for v in raw.get("links") or []])
    logging = raw.get("logging")
    if logging is not None:
        out["logging"] = struct(
            {
                "driver": str_field(logging.get("driver"), ctx, p + ".logging.driver"),
                "options": sorted_map(
                    {
                        k: go_sprint(v)
                        for k, v in (logging.get("options") or {}).items()
                        if v is not None
                    }
                ),
            }
        )
    put(out, "mac_address", s("mac_address"))
    put(out, "network_mode", s("network_mode"))
    put(out, "networks", _service_networks(raw.get("networks")))
    put(out, "pid", s("pid"))
    put(out, "ports", _ports(raw.get("ports"), ctx, p + ".ports"))
    put(out, "privileged", raw.get("privileged"))
    put(out, "read_only", raw.get("read_only"))
    put(out, "restart", s("restart"))
    put(out, "secrets", _file_refs(raw.get("secrets"), ctx, p + ".secrets"))
    put(out, "security_opt", [str(v) for v in raw.get("security_opt") or []])
    shm = raw.get("shm_size")
    put(out, "shm_size", go_sprint(shm) if shm is not None else "")
    put(out, "stdin_open", raw.get("stdin_open"))
    grace = _duration(raw.get("stop_grace_period"), ctx, p + ".stop_grace_period")
    if grace is not None:
        out["stop_grace_period"] = grace
    put(out, "stop_signal", s("stop_signal"))
    put(out, "sysctls", sorted_map(mapping(raw.get("sysctls"), False)))
    put(out, "tmpfs", _string_list(raw.get("tmpfs")))
    put(out, "tty", raw.get("tty"))
    put(out, "ulimits", _ulimits(raw.get("ulimits")))
    put(out, "user", s("user"))
    put(out, "userns_mode", s("userns_mode"))
    put(out, "volumes", _service_volumes(raw.get("volumes"), ctx, p + ".volumes"))
    put(out, "working_dir", s("working_dir"))
    out.update(extras(raw))
    return out


def working_dir_of(files: list[Path]) -> str:
    """docker stack: relative paths resolve against the first file's directory."""
    return os.path.dirname(os.path.abspath(files[0]))
