"""Top-level ``networks``, ``volumes``, ``secrets`` and ``configs`` in docker's typed form
(docker/cli ``LoadNetworks``, ``LoadVolumes``, ``LoadSecrets``, ``LoadConfigObjs``).

Owns: ``external`` (bool or the deprecated ``external.name``, with docker's warning from
version 3.4/3.5 on), the name an external resource takes, the conflicts docker refuses, file
paths made absolute, and which ``x-*`` extras survive (external networks/volumes, all secrets
and configs). Key order and omitempty as in ``normalize``.
"""

from __future__ import annotations

from typing import Any

from swarmlet.stack.goformat import sorted_map
from swarmlet.stack.normalize import (
    Context,
    Obj,
    abs_path,
    extras,
    mapping,
    put,
    size_field,
    str_field,
    string_map,
    struct,
)


def _version_at_least(version: str, minimum: str) -> bool:
    def parts(v: str) -> list[int]:
        return [int(x) if x.isdigit() else 0 for x in v.split(".")]

    a, b = parts(version), parts(minimum)
    width = max(len(a), len(b))
    return a + [0] * (width - len(a)) >= b + [0] * (width - len(b))


def _external(raw: Obj) -> tuple[bool, str]:
    # transformExternal: bool, or {name: ...} meaning external with a name
    ext = raw.get("external")
    if isinstance(ext, dict):
        name = ext.get("name")
        return True, "" if name is None else str(name)
    return bool(ext), ""


def normalize_network(name: str, raw: Obj | None, ctx: Context) -> Obj:
    raw = raw or {}
    external, ext_name = _external(raw)
    net_name = str_field(raw.get("name"), ctx, f"networks.{name}.name")
    if external:
        if ext_name:
            if net_name:
                raise ctx.error(
                    f"networks.{name}",
                    f"network {name}: network.external.name and network.name conflict; "
                    "only use network.name",
                )
            if _version_at_least(ctx.version, "3.5"):
                ctx.warnings.append(
                    f"network {name}: network.external.name is deprecated in favor of network.name"
                )
            net_name = ext_name
        elif not net_name:
            net_name = name
    ipam_raw = raw.get("ipam") or {}
    ipam = struct(
        {
            "driver": ipam_raw.get("driver"),
            "config": [struct({"subnet": c.get("subnet")}) for c in ipam_raw.get("config") or []],
        }
    )
    out = struct(
        {
            "name": net_name,
            "driver": raw.get("driver"),
            "driver_opts": string_map(raw.get("driver_opts")),
            "ipam": ipam,
            "external": external,
            "internal": raw.get("internal"),
            "attachable": raw.get("attachable"),
            "labels": sorted_map(mapping(raw.get("labels"), False)),
        }
    )
    if external:
        out.update(extras(raw))  # LoadNetworks: extras only for external networks
    return out


def normalize_volume(name: str, raw: Obj | None, ctx: Context) -> Obj:
    raw = raw or {}
    external, ext_name = _external(raw)
    vol_name = str_field(raw.get("name"), ctx, f"volumes.{name}.name")
    where = f"volumes.{name}"
    if external:
        for key in ("driver", "driver_opts", "labels"):
            if raw.get(key):
                raise ctx.error(
                    where,
                    f'conflicting parameters "external" and "{key}" specified for volume "{name}"',
                )
        if ext_name:
            if vol_name:
                raise ctx.error(
                    where,
                    f"volume {name}: volume.external.name and volume.name conflict; "
                    "only use volume.name",
                )
            if _version_at_least(ctx.version, "3.4"):
                ctx.warnings.append(
                    f"volume {name}: volume.external.name is deprecated in favor of volume.name"
                )
            vol_name = ext_name
        elif not vol_name:
            vol_name = name
    out = struct(
        {
            "name": vol_name,
            "driver": raw.get("driver"),
            "driver_opts": string_map(raw.get("driver_opts")),
            "external": external,
            "labels": sorted_map(mapping(raw.get("labels"), False)),
        }
    )
    spec = raw.get("x-cluster-spec")
    if spec is not None:
        out["x-cluster-spec"] = _cluster_spec(spec, ctx, where + ".x-cluster-spec")
    if external:
        out.update(extras(raw))  # LoadVolumes: extras only for external volumes
    return out


def _cluster_spec(spec: Obj, ctx: Context, path: str) -> Obj:
    def topology(items: Any) -> list[Obj]:
        return [
            struct({"segments": sorted_map(mapping(t.get("segments"), False))}) for t in items or []
        ]

    access = spec.get("access_mode")
    access_out = None
    if access is not None:
        access_out = struct({"scope": access.get("scope"), "sharing": access.get("sharing")})
        mount = access.get("mount_volume")
        if mount is not None:
            access_out["mount_volume"] = struct(
                {"fs_type": mount.get("fs_type"), "mount_flags": mount.get("mount_flags") or []}
            )
        if access.get("block_volume") is not None:
            access_out["block_volume"] = {}
    reqs = spec.get("accessibility_requirements")
    reqs_out = None
    if reqs is not None:
        reqs_out = struct(
            {
                "requisite": topology(reqs.get("requisite")),
                "preferred": topology(reqs.get("preferred")),
            }
        )
    cap = spec.get("capacity_range")
    cap_out = None
    if cap is not None:
        cap_out = struct(
            {
                "required_bytes": size_field(
                    cap.get("required_bytes"), ctx, path + ".capacity_range"
                ),
                "limit_bytes": size_field(cap.get("limit_bytes"), ctx, path + ".capacity_range"),
            }
        )
    out: Obj = {}
    put(out, "group", spec.get("group"))
    for key, value in (
        ("access_mode", access_out),
        ("accessibility_requirements", reqs_out),
        ("capacity_range", cap_out),
    ):
        if value is not None:
            out[key] = value
    put(
        out,
        "secrets",
        [
            struct({"key": s.get("key"), "secret": s.get("secret")})
            for s in spec.get("secrets") or []
        ],
    )
    put(out, "availability", spec.get("availability"))
    return out


def normalize_file_object(kind: str, name: str, raw: Obj | None, ctx: Context) -> Obj:
    """Secrets and configs (loader.loadFileObjectConfig)."""
    raw = raw or {}
    where = f"{kind}s.{name}"
    external, ext_name = _external(raw)
    obj_name = str_field(raw.get("name"), ctx, where + ".name")
    file = str_field(raw.get("file"), ctx, where + ".file")
    driver = str_field(raw.get("driver"), ctx, where + ".driver")
    if external:
        if ext_name:
            if obj_name:
                raise ctx.error(
                    where,
                    f"{kind} {name}: {kind}.external.name and {kind}.name conflict; "
                    f"only use {kind}.name",
                )
            if _version_at_least(ctx.version, "3.5"):
                ctx.warnings.append(
                    f"{kind} {name}: {kind}.external.name is deprecated in favor of {kind}.name"
                )
            obj_name = ext_name
        elif not obj_name:
            obj_name = name
    elif driver:
        if file:
            raise ctx.error(
                where,
                f"{kind} {name}: {kind}.driver and {kind}.file conflict; only use {kind}.driver",
            )
    else:
        file = abs_path(ctx.working_dir, file)
    out = struct(
        {
            "name": obj_name,
            "file": file,
            "external": external,
            "labels": sorted_map(mapping(raw.get("labels"), False)),
        }
    )
    put(out, "driver", driver)
    put(out, "driver_opts", string_map(raw.get("driver_opts")))
    put(out, "template_driver", raw.get("template_driver"))
    out.update(extras(raw))  # yaml writes an inline map after the struct fields
    return out
