"""Merging the normalised configs of several ``-c`` files (docker/cli
``cli/compose/loader/merge.go``: mergo with WithOverride + WithAppendSlice and special cases).

Reference: docker CLI 28.2 (the corpus version). Its merge.go keys ports by ``published``
alone (docker/cli#6223, fixed after 28.2 by keying on the whole port): a tcp and a udp port on
the same published port, or several ports without a published port, collapse to the last one.
We reproduce that, since ``config`` must be what ``docker stack config`` prints.

Rules, per service (services are matched by name; new services are added):
- ports, secrets, configs, volumes: when the first file sets them, merged as maps keyed by
  ``published`` / ``source`` / ``target`` (the override winning) and sorted by that key,
  even if the override does not set them (mergo calls the transformer whenever the base slice
  is non-nil); when only the override sets them, they are taken as they are;
- command, entrypoint: replaced when the override sets them;
- logging: options merged when the drivers agree (or one is unset), else replaced;
- ulimits: each limit replaced whole; networks: aliases replaced, addresses overridden when set;
- other lists (dns, cap_add, depends_on, ...) are appended, as mergo's WithAppendSlice does;
- maps and structs merge key by key; scalars are overridden when set in the override.
Top level: volumes, networks, secrets and configs are replaced per name; ``x-*`` extras and
the version come from the first file (merge() touches nothing else).
Decision: docker sorts merged ports with an unstable sort on ``published``; we sort stably.
"""

from __future__ import annotations

import copy
from typing import Any

from swarmlet.stack.goformat import sorted_map

Obj = dict[str, Any]

SERVICE_KEY_ORDER = [
    "build",
    "cap_add",
    "cap_drop",
    "cgroupns_mode",
    "cgroup_parent",
    "command",
    "configs",
    "container_name",
    "credential_spec",
    "depends_on",
    "deploy",
    "devices",
    "dns",
    "dns_search",
    "domainname",
    "entrypoint",
    "environment",
    "env_file",
    "expose",
    "external_links",
    "extra_hosts",
    "hostname",
    "healthcheck",
    "image",
    "init",
    "ipc",
    "isolation",
    "labels",
    "links",
    "logging",
    "mac_address",
    "network_mode",
    "networks",
    "pid",
    "ports",
    "privileged",
    "read_only",
    "restart",
    "secrets",
    "security_opt",
    "shm_size",
    "stdin_open",
    "stop_grace_period",
    "stop_signal",
    "sysctls",
    "tmpfs",
    "tty",
    "ulimits",
    "user",
    "userns_mode",
    "volumes",
    "working_dir",
]
_DEPLOY_KEY_ORDER = [
    "mode",
    "replicas",
    "labels",
    "update_config",
    "rollback_config",
    "resources",
    "restart_policy",
    "placement",
    "endpoint_mode",
]
_GO_MAPS = {
    "environment",
    "labels",
    "sysctls",
    "ulimits",
    "networks",
    "args",
    "options",
    "driver_opts",
}


_KEYED_LISTS = {"ports": "published", "secrets": "source", "configs": "source", "volumes": "target"}


def _keyed_union(dst: list[Obj], src: list[Obj], key: str) -> list[Obj]:
    # mergeSlice(toXMap, toXSlice): map by key, override wins, sort by key.
    merged: dict[Any, Obj] = {}
    for item in [*dst, *src]:
        merged[item.get(key, 0 if key == "published" else "")] = item
    return [merged[k] for k in sorted(merged)]


def _merge_value(key: str, dst: Any, src: Any) -> Any:
    if key in _KEYED_LISTS:
        return _keyed_union(dst, src, _KEYED_LISTS[key])
    if key in ("command", "entrypoint"):
        return src if src else dst
    if key == "logging":
        d_driver, s_driver = dst.get("driver", ""), src.get("driver", "")
        if d_driver == s_driver or not d_driver or not s_driver:
            out = {"driver": d_driver or s_driver} if (d_driver or s_driver) else {}
            options = sorted_map({**dst.get("options", {}), **src.get("options", {})})
            if options:
                out["options"] = options
            return out
        return src
    if key == "ulimits":
        return sorted_map({**dst, **src})
    if key == "networks":
        out = dict(dst)
        for name, cfg in src.items():
            if cfg is None:
                out.setdefault(name, None)
                continue
            base = dict(out.get(name) or {})
            base.pop("aliases", None)
            if cfg.get("aliases"):
                base["aliases"] = cfg["aliases"]
            for addr in ("ipv4_address", "ipv6_address"):
                if cfg.get(addr):
                    base[addr] = cfg[addr]
            if cfg.get("driver_opts"):
                base["driver_opts"] = sorted_map(
                    {**base.get("driver_opts", {}), **cfg["driver_opts"]}
                )
            keys = ("aliases", "driver_opts", "ipv4_address", "ipv6_address")
            out[name] = {k: base[k] for k in keys if k in base}
        return sorted_map(out)
    if isinstance(dst, dict) and isinstance(src, dict):
        out = dict(dst)
        for sub_key, sub_value in src.items():
            if sub_key in out and sub_value is None:
                continue  # mergo skips empty source values
            out[sub_key] = (
                _merge_value(sub_key, out[sub_key], sub_value) if sub_key in out else sub_value
            )
        if key in _GO_MAPS:
            return sorted_map(out)
        if key == "deploy":
            return _ordered(out, _DEPLOY_KEY_ORDER)
        return out
    if isinstance(dst, list) and isinstance(src, list):
        return [*dst, *src]
    return src


def _ordered(obj: Obj, order: list[str] | tuple[str, ...]) -> Obj:
    known = {k: obj[k] for k in order if k in obj}
    extras = sorted_map({k: v for k, v in obj.items() if k not in known})
    return {**known, **extras}


def merge_service(base: Obj, override: Obj) -> Obj:
    out = copy.deepcopy(base)
    for key, value in override.items():
        out[key] = _merge_value(key, out[key], copy.deepcopy(value)) if key in out else value
    for key, sort_key in _KEYED_LISTS.items():
        if key in base and key not in override:
            out[key] = _keyed_union(out[key], [], sort_key)
    return _ordered(out, SERVICE_KEY_ORDER)


def merge_configs(configs: list[Obj]) -> Obj:
    """merge(): fold every later config into the first."""
    base = copy.deepcopy(configs[0])
    for override in configs[1:]:
        services = dict(base.get("services", {}))
        for name, service in override.get("services", {}).items():
            services[name] = merge_service(services[name], service) if name in services else service
        base["services"] = sorted_map(services)
        for section in ("networks", "volumes", "secrets", "configs"):
            merged = {**base.get(section, {}), **override.get(section, {})}
            if merged:
                base[section] = sorted_map(merged)
    return _ordered_top(base)


def _ordered_top(config: Obj) -> Obj:
    order = ("version", "services", "networks", "volumes", "secrets", "configs")
    known = {k: config[k] for k in order if k in config}
    return {**known, **sorted_map({k: v for k, v in config.items() if k not in known})}
