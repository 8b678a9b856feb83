"""The stack loader: files -> the document ``docker stack config`` prints, plus the warnings
``docker stack deploy`` prints.

Pipeline per file, in docker/cli's order (``cli/compose/loader/loader.go`` ``Load``):
parse YAML -> version check -> forbidden keys -> interpolate -> schema -> normalise; then the
files are merged (``merge``). Any error raises StackError(file, key path, message); nothing is
returned half-loaded.

Environment: the caller's ``environ``, completed by a ``.env`` file next to the first stack
file for the names ``environ`` lacks, as ``docker compose`` reads one, so that a project keeps
its defaults beside its files (docker's own ``stack deploy`` reads no ``.env``; a corpus scratch
dir has none, so the goldens are unaffected).
Pure apart from reading the stack files, ``.env`` and ``env_file`` files; no clock, no network.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from swarmlet.errors import StackError
from swarmlet.stack import merge, normalize, schema, toplevel
from swarmlet.stack.envfile import parse_env_text
from swarmlet.stack.goformat import go_sprint, sorted_map
from swarmlet.stack.interpolate import interpolate_config
from swarmlet.stack.yamlsource import parse_yaml

DEFAULT_VERSION = "3.13"

# cli/compose/types/types.go
UNSUPPORTED_PROPERTIES = (
    "build", "cgroupns_mode", "cgroup_parent", "devices", "domainname", "external_links", "ipc",
    "links", "mac_address", "network_mode", "pid", "privileged", "restart", "security_opt",
    "shm_size", "userns_mode",
)  # fmt: skip
DEPRECATED_PROPERTIES = {
    "container_name": "Setting the container name is not supported.",
    "expose": "Exposing ports is unnecessary - services on the same network can access each "
    "other's containers on any port.",
}
FORBIDDEN_PROPERTIES = {
    "extends": "Support for `extends` is not implemented yet.",
    "volume_driver": "Instead of setting the volume driver on the service, define a volume "
    "using the top-level `volumes` option and specify the driver there.",
    "volumes_from": "To share a volume between services, define it using the top-level "
    "`volumes` option and reference it from each service that shares it using the "
    "service-level `volumes` option.",
    "cpu_quota": "Set resource limits using deploy.resources",
    "cpu_shares": "Set resource limits using deploy.resources",
    "cpuset": "Set resource limits using deploy.resources",
    "mem_limit": "Set resource limits using deploy.resources",
    "memswap_limit": "Set resource limits using deploy.resources",
}


@dataclass(frozen=True)
class LoadedStack:
    """`config`: the normalised document; `warnings`: lines ``docker stack deploy`` prints."""

    config: dict[str, Any]
    warnings: tuple[str, ...]


def _version(raw: dict[str, Any]) -> str:
    # Normalised as in the corpus: absent or "3" -> "3.13".
    if "version" not in raw or raw["version"] is None:
        return DEFAULT_VERSION
    version = go_sprint(raw["version"])
    return DEFAULT_VERSION if version == "3" else version


def _services(raw: dict[str, Any]) -> dict[str, Any]:
    services = raw.get("services")
    return services if isinstance(services, dict) else {}


def _check_forbidden(raw: dict[str, Any], file: str) -> None:
    # loader.validateForbidden; stack/loader: "Compose file contains unsupported options",
    # listing every forbidden key of every service; the path names the first one found.
    first_path = ""
    found: set[str] = set()
    for name, service in _services(raw).items():
        if not isinstance(service, dict):
            continue
        keys = sorted(key for key in service if key in FORBIDDEN_PROPERTIES)
        if keys and not first_path:
            first_path = f"services.{name}.{keys[0]}"
        found.update(keys)
    if found:
        lines = "\n".join(f"{key}: {FORBIDDEN_PROPERTIES[key]}" for key in sorted(found))
        raise StackError(
            file, first_path, f"Compose file contains unsupported options:\n\n{lines}\n"
        )


# cli/compose/schema: one schema per supported version; we ship only v3.13, the last 3.x schema,
# so there is one schema to keep in step with docker's, and validate every 3.x file against it,
# which accepts keys an older declared version lacks.
SUPPORTED_VERSIONS = frozenset(f"3.{minor}" for minor in range(14))


def _check_version(version: str, file: str) -> None:
    if version not in SUPPORTED_VERSIONS:
        raise StackError(file, "version", f"unsupported Compose file version: {version}")


def deploy_warnings(raws: Sequence[dict[str, Any]]) -> list[str]:
    """GetUnsupportedProperties / GetDeprecatedProperties, worded as stack deploy prints them."""
    unsupported: set[str] = set()
    deprecated: dict[str, str] = {}
    for raw in raws:
        for service in _services(raw).values():
            if not isinstance(service, dict):
                continue
            unsupported.update(p for p in UNSUPPORTED_PROPERTIES if p in service)
            deprecated.update(
                {p: text for p, text in DEPRECATED_PROPERTIES.items() if p in service}
            )
    out = []
    if unsupported:
        out.append("Ignoring unsupported options: " + ", ".join(sorted(unsupported)))
    if deprecated:
        lines = "\n".join(f"{key}: {deprecated[key]}" for key in sorted(deprecated))
        out.append("Ignoring deprecated options:\n\n" + lines)
    return out


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise StackError(str(path), "", f"cannot read stack file: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise StackError(str(path), "", f"stack file is not UTF-8: {exc}") from exc


def _environment(files: Sequence[Path], environ: Mapping[str, str]) -> dict[str, str]:
    env = dict(environ)
    dot_env = files[0].parent / ".env"
    if dot_env.is_file():
        try:
            pairs = parse_env_text(_read(dot_env), environ)
        except ValueError as exc:
            raise StackError(str(dot_env), "", str(exc)) from exc
        for key, value in pairs:
            if key not in env and value is not None:
                env[key] = value
    return env


def load_stack(
    files: Sequence[Path], environ: Mapping[str, str], *, workdir: Path | None = None
) -> LoadedStack:
    """Load, interpolate, validate, normalise and merge stack files as docker stack does.

    `workdir` defaults to the first file's directory; `~` expands with ``environ["HOME"]``.
    """
    if not files:
        raise StackError("", "", "No files specified")
    paths = [Path(f) for f in files]
    env = _environment(paths, environ)
    working_dir = str(workdir) if workdir is not None else normalize.working_dir_of(paths)
    raws: list[dict[str, Any]] = []
    configs: list[dict[str, Any]] = []
    warnings: list[str] = []
    stack_version = ""
    for path in paths:
        file = str(path)
        try:
            raw = parse_yaml(_read(path), file)
        except StackError as exc:
            raise StackError(file, exc.path, exc.message) from exc
        raws.append(raw)
        version = _version(raw)
        _check_version(version, file)
        if not stack_version:
            stack_version = version
        if version != stack_version:
            raise StackError(
                file,
                "version",
                f"version mismatched between two composefiles : {stack_version} and {version}",
            )
        _check_forbidden(raw, file)
        interpolated = interpolate_config(raw, env, file)
        schema.validate(interpolated, file)
        ctx = normalize.Context(
            file, working_dir, env, stack_version, warnings, str(path.absolute().parent)
        )
        configs.append(_normalize_file(interpolated, ctx))
    config = merge.merge_configs(configs) if len(configs) > 1 else configs[0]
    return LoadedStack(config, tuple(warnings + deploy_warnings(raws)))


def _normalize_file(raw: dict[str, Any], ctx: normalize.Context) -> dict[str, Any]:
    out: dict[str, Any] = {"version": ctx.version}
    out["services"] = sorted_map(
        {
            name: normalize.normalize_service(name, service or {}, ctx)
            for name, service in (raw.get("services") or {}).items()
        }
    )
    sections: tuple[tuple[str, Callable[[str, Any], dict[str, Any]]], ...] = (
        ("networks", lambda n, r: toplevel.normalize_network(n, r, ctx)),
        ("volumes", lambda n, r: toplevel.normalize_volume(n, r, ctx)),
        ("secrets", lambda n, r: toplevel.normalize_file_object("secret", n, r, ctx)),
        ("configs", lambda n, r: toplevel.normalize_file_object("config", n, r, ctx)),
    )
    for section, load_one in sections:
        entries = raw.get(section) or {}
        if entries:
            out[section] = sorted_map({name: load_one(name, e) for name, e in entries.items()})
    out.update(sorted_map({k: v for k, v in raw.items() if k.startswith("x-")}))
    return out
