"""The stack's named objects (secrets, configs, volumes, networks) and a service's references to
them (secret and config files, volume mounts, network attachments), as docker/cli's
``cli/compose/convert`` (``compose.go``, ``volume.go``, ``service.go``) converts them.

Owns: the cluster name of each object, and checking that every reference names an object the
stack defines. `StackObjects` reads the document's top-level ``secrets``, ``configs``, ``volumes``
and ``networks`` once, then converts each service's references against them, remembering which
networks some service joins.

Decisions where docker and swarmlet differ:
- Names: secrets, configs, volumes and networks are scoped ``STACK_KEY`` unless the document gives
  a ``name`` (or the object is external), as ``Namespace.Scope`` does.
- Secret and config drivers, and cluster/npipe mounts, are errors: they would change where data
  lives. ``template_driver``, ``x-cluster-spec``, mount options and ``consistency`` are ignored
  with a warning.
- Secret/config targets are made absolute: a relative secret target lives under
  ``/run/secrets/``, a relative config target under ``/`` (docker's defaults).
- Networks: as docker's ``convert.Networks``, only networks some service uses are listed, and a
  service without ``networks`` uses ``default`` (``STACK_default``). Each service carries its
  attachments (with aliases); every node makes its own bridge per network
  (``swarmlet.executor.networks``), whatever ``driver`` says, since overlay networks need Swarm
  mode. ``endpoint_mode: dnsrr`` is accepted with a warning: published ports always go through
  the routing mesh.

Knows nothing of the rest of a service (its image, deploy section or extensions).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from swarmlet.stack.convert_context import ConvertContext, Obj, string_map
from swarmlet.state.model import FileRef, Mount, NetworkAttachment

DEFAULT_NETWORK = "default"
SECRETS_DIR = "/run/secrets/"


@dataclass(frozen=True, slots=True)
class SecretDef:
    """A secret or config the stack defines or uses. `file`: absolute path of its data, read by
    the caller ("" when external: it must already exist under `name`)."""

    key: str  # the name in the stack file
    name: str  # the name in the cluster
    file: str = ""
    external: bool = False
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class VolumeDef:
    key: str
    name: str  # the Docker volume name mounts use
    external: bool = False
    driver: str = ""  # "" : Docker's default (local)
    driver_opts: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class NetworkDef:
    key: str
    name: str
    external: bool = False
    driver: str = ""  # "" : docker stack's default (overlay)
    driver_opts: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    internal: bool = False
    attachable: bool = False


class StackObjects:
    """The named objects of one stack document, and the conversion of references to them."""

    def __init__(self, ctx: ConvertContext, config: Obj) -> None:
        self.ctx = ctx
        self.secrets = self._file_objects(config, "secret")
        self.configs = self._file_objects(config, "config")
        self.volumes = self._volumes(config)
        self.network_cfgs: Obj = config.get("networks") or {}
        self.used_networks: set[str] = set()  # keys of the networks some service joins

    # --- top level ------------------------------------------------------------------------

    def _file_objects(self, config: Obj, kind: str) -> dict[str, SecretDef]:
        # compose.go Secrets/Configs + fileObjectConfig: name wins, else STACK_KEY.
        out: dict[str, SecretDef] = {}
        for key, cfg in (config.get(f"{kind}s") or {}).items():
            cfg = cfg or {}
            where = f"{kind}s.{key}"
            if cfg.get("driver"):
                raise self.ctx.error(
                    where + ".driver",
                    f"{kind} drivers are not supported by swarmlet; give the data with file",
                )
            if cfg.get("template_driver"):
                self.ctx.warn(f"{where}: swarmlet ignores template_driver")
            external = bool(cfg.get("external"))
            out[key] = SecretDef(
                key=key,
                name=cfg.get("name") or self.ctx.scope(key),
                file="" if external else str(cfg.get("file") or ""),
                external=external,
                labels=string_map(cfg.get("labels")),
            )
        return out

    def _volumes(self, config: Obj) -> dict[str, VolumeDef]:
        out: dict[str, VolumeDef] = {}
        for key, cfg in (config.get("volumes") or {}).items():
            cfg = cfg or {}
            if "x-cluster-spec" in cfg:
                self.ctx.warn(f"volumes.{key}: swarmlet ignores x-cluster-spec")
            out[key] = VolumeDef(
                key=key,
                name=cfg.get("name") or self.ctx.scope(key),
                external=bool(cfg.get("external")),
                driver=str(cfg.get("driver") or ""),
                driver_opts=string_map(cfg.get("driver_opts")),
                labels=string_map(cfg.get("labels")),
            )
        return out

    def network(self, key: str) -> NetworkDef:
        cfg = self.network_cfgs.get(key) or {}
        return NetworkDef(
            key=key,
            name=cfg.get("name") or self.ctx.scope(key),
            external=bool(cfg.get("external")),
            driver=str(cfg.get("driver") or ""),
            driver_opts=string_map(cfg.get("driver_opts")),
            labels=string_map(cfg.get("labels")),
            internal=bool(cfg.get("internal")),
            attachable=bool(cfg.get("attachable")),
        )

    def used_network_defs(self) -> tuple[NetworkDef, ...]:
        """The networks some service joins, sorted by key."""
        return tuple(self.network(n) for n in sorted(self.used_networks))

    # --- a service's references -----------------------------------------------------------

    def mounts(self, volumes: list[Obj], p: str) -> tuple[Mount, ...]:
        # volume.go convertVolumeToMount, with its messages.
        ctx = self.ctx
        out: list[Mount] = []
        for i, vol in enumerate(volumes):
            where = f"{p}[{i}]"
            kind = str(vol.get("type") or "volume")
            source = str(vol.get("source") or "")
            target = str(vol.get("target") or "")
            read_only = bool(vol.get("read_only"))
            options = [k for k in ("bind", "volume", "tmpfs", "cluster") if vol.get(k) is not None]
            for option in options:
                if option != kind:
                    raise ctx.error(where, f"{option} options are incompatible with type {kind}")
            if kind in ("cluster", "npipe"):
                raise ctx.error(where + ".type", f"{kind} mounts are not supported by swarmlet")
            if kind not in ("volume", "bind", "tmpfs"):
                raise ctx.error(
                    where + ".type", "volume type must be volume, bind, tmpfs, npipe, or cluster"
                )
            if not target.startswith("/"):
                raise ctx.error(where + ".target", f"target {target!r} must be an absolute path")
            if options:
                ctx.warn(f"{where}: swarmlet ignores the {kind} options")
            if vol.get("consistency"):
                ctx.warn(f"{where}: swarmlet ignores consistency")
            if kind == "bind":
                if not source:
                    raise ctx.error(where, "invalid bind source, source cannot be empty")
                out.append(Mount("bind", target, source, read_only))
            elif kind == "tmpfs":
                if source:
                    raise ctx.error(where, "invalid tmpfs source, source must be empty")
                out.append(Mount("tmpfs", target, read_only=read_only))
            elif not source:
                out.append(Mount("volume", target, read_only=read_only))  # anonymous
            else:
                vdef = self.volumes.get(source)
                if vdef is None:
                    raise ctx.error(where + ".source", f'undefined volume "{source}"')
                driver, opts = ("", {}) if vdef.external else (vdef.driver, vdef.driver_opts)
                out.append(Mount("volume", target, vdef.name, read_only, driver, dict(opts)))
        return tuple(out)

    def secret_refs(self, refs: list[Obj], p: str) -> tuple[FileRef, ...]:
        return self._refs(refs, p, self.secrets, "secret")

    def config_refs(self, refs: list[Obj], p: str) -> tuple[FileRef, ...]:
        return self._refs(refs, p, self.configs, "config")

    def _refs(
        self, refs: list[Obj], p: str, defs: Mapping[str, SecretDef], kind: str
    ) -> tuple[FileRef, ...]:
        # service.go convertFileObject
        out: list[FileRef] = []
        for i, ref in enumerate(refs):
            where = f"{p}[{i}]"
            source = str(ref.get("source") or "")
            sdef = defs.get(source)
            if sdef is None:
                raise self.ctx.error(where + ".source", f'undefined {kind} "{source}"')
            target = str(ref.get("target") or source)
            if not target.startswith("/"):
                target = (SECRETS_DIR if kind == "secret" else "/") + target
            mode = ref.get("mode")
            out.append(
                FileRef(
                    name=sdef.name,
                    target=target,
                    uid=str(ref.get("uid") or "0"),
                    gid=str(ref.get("gid") or "0"),
                    mode=0o444 if mode is None else self.ctx.whole_number(mode, where + ".mode"),
                )
            )
        return tuple(out)

    def attachments(self, key: str, svc: Obj) -> tuple[NetworkAttachment, ...]:
        """The service's networks, sorted by cluster name (as docker sorts them)."""
        given: Obj = svc.get("networks") or {}
        out = []
        for net in self._service_networks(key, svc):
            self.used_networks.add(net)
            network = self.network(net)
            aliases = (given.get(net) or {}).get("aliases") or ()
            out.append(
                NetworkAttachment(
                    name=network.name,
                    aliases=tuple(str(a) for a in aliases),
                    internal=network.internal,
                    external=network.external,
                )
            )
        return tuple(sorted(out, key=lambda a: a.name))

    def _service_networks(self, key: str, svc: Obj) -> list[str]:
        # service.go convertServiceNetworks: none given -> "default".
        nets = list(svc.get("networks") or {}) or [DEFAULT_NETWORK]
        for net in nets:
            if net not in self.network_cfgs and net != DEFAULT_NETWORK:
                raise self.ctx.error(f"services.{key}.networks.{net}", f'undefined network "{net}"')
        endpoint_mode = str((svc.get("deploy") or {}).get("endpoint_mode") or "vip").lower()
        if endpoint_mode == "dnsrr":
            self.ctx.warn(
                f"services.{key}.deploy.endpoint_mode: swarmlet has no dnsrr; published "
                "ports always go through the routing mesh (vip-like)"
            )
        elif endpoint_mode != "vip":
            raise self.ctx.error(
                f"services.{key}.deploy.endpoint_mode",
                f"invalid endpoint_mode {endpoint_mode!r}: expected vip or dnsrr",
            )
        return nets
