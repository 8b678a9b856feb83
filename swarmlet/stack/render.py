"""``docker stack config`` output: the normalised document as YAML or JSON.

YAML: the document as yaml.v3 with a 2-space indent writes it (key order as built by the
loader, sequences indented under their key). JSON: docker/cli's ``json.Marshal`` of
``types.Config`` (``full-example.json.golden``), which differs from the YAML form: top-level
keys sorted (``Config.MarshalJSON`` builds a map), ``x-*`` extras dropped below the top level
(``json:"-"``), ``external`` always present on networks/volumes/secrets/configs and ``ipam``
always present on networks (non-pointer structs are never omitted by encoding/json), and the
service's ``build``/``credential_spec``/``deploy`` (with ``resources`` and ``placement``)
likewise always written.
"""

from __future__ import annotations

import json
from typing import Any, Literal

import yaml

from swarmlet.stack.merge import SERVICE_KEY_ORDER

_OLD_BOOLS = frozenset(("y", "yes", "n", "no", "true", "false", "on", "off"))


class _IndentedDumper(yaml.SafeDumper):
    """Indent block sequences under their mapping key, as yaml.v3 does."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)

    def choose_scalar_style(self) -> str:
        # yaml.v3 (encode.go stringv): a string that would read back as another type (or as a
        # YAML 1.1 bool/base-60 float) is double-quoted; one that is merely not plain-safe is
        # single-quoted by the emitter, as PyYAML does.
        style: str = super().choose_scalar_style()
        event: Any = self.event
        is_str = isinstance(event, yaml.ScalarEvent) and event.tag == "tag:yaml.org,2002:str"
        if (
            is_str
            and style in ("", "'")
            and (not event.implicit[0] or event.value.lower() in _OLD_BOOLS)
        ):
            return '"'
        return style


def _str_presenter(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_IndentedDumper.add_representer(str, _str_presenter)


def _json_form(config: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in config.items():
        if key == "services":
            out[key] = {name: _json_service(svc) for name, svc in value.items()}
        elif key == "networks":
            out[key] = {name: _json_resource(net, with_ipam=True) for name, net in value.items()}
        elif key in ("volumes", "secrets", "configs"):
            out[key] = {name: _json_resource(obj, with_ipam=False) for name, obj in value.items()}
        else:
            out[key] = value
    return dict(sorted(out.items()))


def _json_resource(obj: dict[str, Any], *, with_ipam: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    order = ["name", "driver", "driver_opts"]
    order += ["ipam", "external", "internal", "attachable"] if with_ipam else ["file", "external"]
    for key in order:
        if key == "ipam":
            out["ipam"] = obj.get("ipam", {})
        elif key == "external":
            out["external"] = obj.get("external", False)
        elif key in obj:
            out[key] = obj[key]
    for key, value in obj.items():
        if (key not in out and not key.startswith("x-")) or key == "x-cluster-spec":
            out[key] = value
    return out


def _json_service(service: dict[str, Any]) -> dict[str, Any]:
    # Non-pointer structs (build, credential_spec, deploy and its resources/placement) are
    # written by encoding/json even when empty; extras are json:"-".
    defaults: dict[str, Any] = {"build": {}, "credential_spec": {}, "deploy": {}}
    out: dict[str, Any] = {}
    for key in SERVICE_KEY_ORDER:
        if key in service:
            out[key] = service[key]
        elif key in defaults:
            out[key] = defaults[key]
    deploy = dict(out["deploy"])
    deploy.setdefault("resources", {})
    deploy.setdefault("placement", {})
    order = (
        "mode",
        "replicas",
        "labels",
        "update_config",
        "rollback_config",
        "resources",
        "restart_policy",
        "placement",
        "endpoint_mode",
    )
    out["deploy"] = {k: deploy[k] for k in order if k in deploy}
    return out


def render_config(config: dict[str, Any], fmt: Literal["yaml", "json"]) -> str:
    """Render a loaded stack's `config` as ``docker stack config`` would."""
    if fmt == "yaml":
        return yaml.dump(
            config,
            Dumper=_IndentedDumper,
            sort_keys=False,
            default_flow_style=False,
            allow_unicode=True,
            indent=2,
            width=1 << 30,
        )
    if fmt == "json":
        return json.dumps(_json_form(config), indent=2, ensure_ascii=False)
    raise ValueError(f"unknown format {fmt!r}: expected 'yaml' or 'json'")
