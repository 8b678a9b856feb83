"""A loaded stack document -> swarmlet service specs and the stack's named objects.

Owns: what docker/cli's ``cli/compose/convert`` (``service.go``, ``volume.go``, ``compose.go``)
does with ``docker stack config``'s normalised document, mapped onto `swarmlet.state.model`, plus
two things docker does not do: ``depends_on`` ordering and the ``x-swarmlet-*`` extensions.

Input invariant: ``loaded.config`` is the loader's output (schema-valid, normalised: durations as
Go strings, sizes as byte strings, ports and volumes in long form, env files merged). Nothing
here reads files, the clock or the network; every error is a StackError(file, key path, what).

Decisions where docker and swarmlet differ (each also noted at its code):
- Names: services, secrets, configs, volumes and networks are scoped ``STACK_KEY`` unless the
  document gives a ``name`` (or the object is external), as ``Namespace.Scope`` does. Docker's
  ``com.docker.stack.*`` labels are not added: ``ServiceSpec.stack`` carries the stack and the
  executor labels containers with ``swarmlet.stack``.
- Order: specs come in ``depends_on`` order (a stable topological sort over the services sorted
  by name); ``depends_on`` naming an unknown service, or a cycle, is an error.
- What swarmlet cannot honour and that would change where data lives or where tasks run is an
  error (cluster/npipe mounts, job modes, secret drivers, unknown protocols, constraints the
  scheduler cannot parse: the docker daemon rejects those constraints too). What only tunes the
  container (logging, ulimits, dns, tty, ...) is ignored with one warning per service, and so is
  a placement preference over anything but ``node.labels.*`` (swarmkit puts all nodes in one
  group for a descriptor it cannot read, so it changes nothing there either).
- A port without ``published`` gets a random port from docker's ingress; swarmlet allocates
  none, so the port is dropped with a warning.
- ``environment: {FOO: null}`` (no value, none in the environment) is docker's bare ``FOO``;
  swarmlet's env is a str map, so it becomes ``FOO=""`` with a warning.
- Secret/config targets are made absolute: a relative secret target lives under
  ``/run/secrets/``, a relative config target under ``/`` (docker's defaults).
- Networks: as docker's ``convert.Networks``, only networks some service uses are listed
  (``StackPlan.networks``), and a service without ``networks`` uses ``default``
  (``STACK_default``). Each service carries its attachments (``ServiceSpec.networks``, with
  aliases); every node makes its own bridge per network (``swarmlet.executor.networks``), whatever
  ``driver`` says, since overlay networks need Swarm mode.
- Extensions: docker's v3 schema forbids ``x-*`` keys inside ``deploy`` (the loader rejects
  ``deploy.x-swarmlet-autoscale``), so the extensions are read at the service level
  (``services.S.x-swarmlet-autoscale``, ``services.S.x-swarmlet-rebalance``, which docker
  accepts and ignores) and also inside ``deploy`` should a loader ever pass them through.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from swarmlet.errors import StackError, UsageError
from swarmlet.leader.scheduler import parse_constraint, preference_label
from swarmlet.stack.goformat import parse_duration_ns
from swarmlet.stack.loader import DEPRECATED_PROPERTIES, UNSUPPORTED_PROPERTIES, LoadedStack
from swarmlet.state.model import (
    AutoscalePolicy,
    FailureAction,
    FileRef,
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
    UpdateConfig,
    UpdateOrder,
)
from swarmlet.state.specparse import parse_cpus, parse_size, validate_spec

Obj = dict[str, Any]

DEFAULT_NETWORK = "default"
SECRETS_DIR = "/run/secrets/"
AUTOSCALE_KEY = "x-swarmlet-autoscale"
REBALANCE_KEY = "x-swarmlet-rebalance"
_AUTOSCALE_FIELDS = ("min", "max", "cpu", "memory", "rps")
_NAME_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*")

# Service keys mapped onto ServiceSpec (or StackPlan) below.
_HANDLED_KEYS = frozenset(
    {
        "cap_add", "cap_drop", "command", "configs", "depends_on", "deploy", "entrypoint",
        "env_file", "environment", "extra_hosts", "healthcheck", "hostname", "image", "init",
        "labels", "networks", "ports", "secrets", "stop_grace_period", "stop_signal", "sysctls",
        "user", "volumes", "working_dir",
    }
)  # fmt: skip
# Keys the loader already warns about (``docker stack deploy``'s own lists); not repeated.
# ``restart`` is among them, yet docker's convertRestartPolicy uses it: so do we.
_LOADER_WARNED = frozenset(UNSUPPORTED_PROPERTIES) | frozenset(DEPRECATED_PROPERTIES)


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


@dataclass(frozen=True, slots=True)
class StackPlan:
    """What deploying the stack means. Create `secrets` and `configs` (those not external)
    before `services`, and create services in the order given (dependencies first)."""

    name: str
    services: tuple[ServiceSpec, ...]
    secrets: tuple[SecretDef, ...]
    configs: tuple[SecretDef, ...]
    volumes: tuple[VolumeDef, ...]
    networks: tuple[NetworkDef, ...]
    warnings: tuple[str, ...]


def convert_stack(name: str, loaded: LoadedStack, *, file: str) -> StackPlan:
    """Convert `loaded` (from `load_stack`) into the plan for stack `name`.

    Raises StackError(file, key path, message) for anything swarmlet cannot deploy.
    """
    return _Converter(name, loaded, file).plan()


def _string_map(value: Any) -> dict[str, str]:
    return {str(k): "" if v is None else str(v) for k, v in (value or {}).items()}


class _Converter:
    def __init__(self, stack: str, loaded: LoadedStack, file: str) -> None:
        self.stack = stack
        self.config = loaded.config
        self.file = file
        self.warnings: list[str] = list(loaded.warnings)
        if not _NAME_RE.fullmatch(stack):
            raise self.error("", f"invalid stack name {stack!r}: use letters, digits, _ . -")
        self.services: Obj = self.config.get("services") or {}
        self.secrets = self._file_objects("secret")
        self.configs = self._file_objects("config")
        self.volumes = self._volumes()
        self.network_cfgs: Obj = self.config.get("networks") or {}
        self.used_networks: set[str] = set()  # keys of the networks some service joins

    def error(self, path: str, message: str) -> StackError:
        return StackError(self.file, path, message)

    def scope(self, key: str) -> str:
        return f"{self.stack}_{key}"  # convert.Namespace.Scope

    # --- top level ------------------------------------------------------------------------

    def _file_objects(self, kind: str) -> dict[str, SecretDef]:
        # compose.go Secrets/Configs + fileObjectConfig: name wins, else STACK_KEY.
        out: dict[str, SecretDef] = {}
        for key, cfg in (self.config.get(f"{kind}s") or {}).items():
            cfg = cfg or {}
            where = f"{kind}s.{key}"
            if cfg.get("driver"):
                raise self.error(
                    where + ".driver",
                    f"{kind} drivers are not supported by swarmlet; give the data with file",
                )
            if cfg.get("template_driver"):
                self.warnings.append(f"{where}: swarmlet ignores template_driver")
            external = bool(cfg.get("external"))
            out[key] = SecretDef(
                key=key,
                name=cfg.get("name") or self.scope(key),
                file="" if external else str(cfg.get("file") or ""),
                external=external,
                labels=_string_map(cfg.get("labels")),
            )
        return out

    def _volumes(self) -> dict[str, VolumeDef]:
        out: dict[str, VolumeDef] = {}
        for key, cfg in (self.config.get("volumes") or {}).items():
            cfg = cfg or {}
            if "x-cluster-spec" in cfg:
                self.warnings.append(f"volumes.{key}: swarmlet ignores x-cluster-spec")
            out[key] = VolumeDef(
                key=key,
                name=cfg.get("name") or self.scope(key),
                external=bool(cfg.get("external")),
                driver=str(cfg.get("driver") or ""),
                driver_opts=_string_map(cfg.get("driver_opts")),
                labels=_string_map(cfg.get("labels")),
            )
        return out

    def _network(self, key: str) -> NetworkDef:
        cfg = self.network_cfgs.get(key) or {}
        return NetworkDef(
            key=key,
            name=cfg.get("name") or self.scope(key),
            external=bool(cfg.get("external")),
            driver=str(cfg.get("driver") or ""),
            driver_opts=_string_map(cfg.get("driver_opts")),
            labels=_string_map(cfg.get("labels")),
            internal=bool(cfg.get("internal")),
            attachable=bool(cfg.get("attachable")),
        )

    # --- the plan -------------------------------------------------------------------------

    def plan(self) -> StackPlan:
        order = self._dependency_order()
        specs = [self._service(key, self.services[key] or {}) for key in order]
        self._check_published_ports(order, specs)
        return StackPlan(
            name=self.stack,
            services=tuple(specs),
            secrets=tuple(self.secrets.values()),
            configs=tuple(self.configs.values()),
            volumes=tuple(self.volumes.values()),
            networks=tuple(self._network(n) for n in sorted(self.used_networks)),
            warnings=tuple(self.warnings),
        )

    def _dependency_order(self) -> list[str]:
        """Services sorted by name, then stably reordered so each follows its dependencies
        (Kahn's algorithm, always taking the first ready service in name order)."""
        names = sorted(self.services)
        deps: dict[str, list[str]] = {}
        for key in names:
            wanted = (self.services[key] or {}).get("depends_on") or []
            for i, dep in enumerate(wanted):
                if dep not in self.services:
                    raise self.error(
                        f"services.{key}.depends_on[{i}]",
                        f'service "{key}" depends on undefined service "{dep}"',
                    )
            deps[key] = list(dict.fromkeys(wanted))
        done: set[str] = set()
        order: list[str] = []
        while len(order) < len(names):
            ready = next((n for n in names if n not in done and set(deps[n]) <= done), None)
            if ready is None:
                cycle = _find_cycle([n for n in names if n not in done], deps)
                raise self.error(
                    f"services.{cycle[0]}.depends_on",
                    "dependency cycle between services: " + " -> ".join(cycle),
                )
            done.add(ready)
            order.append(ready)
        return order

    def _check_published_ports(self, order: list[str], specs: list[ServiceSpec]) -> None:
        # The cluster state rejects a port published twice; say which services clash here.
        owner: dict[tuple[int, str], str] = {}
        for key, spec in zip(order, specs, strict=True):
            for port in spec.ports:
                other = owner.setdefault((port.published, port.protocol), key)
                if other != key:
                    raise self.error(
                        f"services.{key}.ports",
                        f"port {port.published}/{port.protocol} is published by both "
                        f"services {other} and {key}",
                    )

    # --- one service ----------------------------------------------------------------------

    def _service(self, key: str, svc: Obj) -> ServiceSpec:
        p = f"services.{key}"
        deploy: Obj = svc.get("deploy") or {}
        if not svc.get("image"):
            raise self.error(
                p + ".image", f"invalid image reference for service {key}: no image specified"
            )
        self._warn_ignored(key, svc, deploy)
        mode, replicas = self._mode(deploy, p + ".deploy")
        spec = ServiceSpec(
            name=self.scope(key),
            image=str(svc["image"]),
            # service.go: Command <- entrypoint, Args <- command; the loader already shell-split
            # string forms (transformShellCommand).
            command=_opt_tuple(svc.get("command")),
            entrypoint=_opt_tuple(svc.get("entrypoint")),
            env=self._environment(key, svc.get("environment") or {}),
            labels=_string_map(deploy.get("labels")),
            container_labels=_string_map(svc.get("labels")),
            mode=mode,
            replicas=replicas,
            ports=self._ports(svc.get("ports") or [], p + ".ports"),
            placement=self._placement(deploy.get("placement") or {}, p + ".deploy.placement"),
            reservations=self._resources(
                (deploy.get("resources") or {}).get("reservations"),
                p + ".deploy.resources.reservations",
            ),
            limits=self._resources(
                (deploy.get("resources") or {}).get("limits"), p + ".deploy.resources.limits"
            ),
            restart=self._restart(svc.get("restart"), deploy.get("restart_policy"), p),
            update=self._update(deploy.get("update_config"), p + ".deploy.update_config"),
            rollback=self._update(
                deploy.get("rollback_config"), p + ".deploy.rollback_config", rollback=True
            ),
            healthcheck=self._healthcheck(svc.get("healthcheck"), p + ".healthcheck"),
            mounts=self._mounts(svc.get("volumes") or [], p + ".volumes"),
            secrets=self._refs(svc.get("secrets") or [], p + ".secrets", self.secrets, "secret"),
            configs=self._refs(svc.get("configs") or [], p + ".configs", self.configs, "config"),
            user=str(svc.get("user") or ""),
            working_dir=str(svc.get("working_dir") or ""),
            hostname=str(svc.get("hostname") or ""),
            stop_signal=str(svc.get("stop_signal") or ""),
            stop_grace_period_s=self._duration_s(
                svc.get("stop_grace_period"), p + ".stop_grace_period", default=10.0
            ),
            init=bool(svc.get("init")),
            extra_hosts=tuple(str(h) for h in svc.get("extra_hosts") or ()),
            cap_add=tuple(str(c) for c in svc.get("cap_add") or ()),
            cap_drop=tuple(str(c) for c in svc.get("cap_drop") or ()),
            sysctls=_string_map(svc.get("sysctls")),
            networks=self._attachments(key, svc),
            stack=self.stack,
            depends_on=tuple(self.scope(d) for d in dict.fromkeys(svc.get("depends_on") or [])),
            rebalance=self._rebalance(svc, deploy, p),
            autoscale=self._autoscale(svc, deploy, p, mode, replicas),
        )
        try:
            validate_spec(spec)
        except UsageError as exc:
            raise self.error(p, str(exc)) from exc
        return spec

    def _warn_ignored(self, key: str, svc: Obj, deploy: Obj) -> None:
        p = f"services.{key}"
        ignored = sorted(
            k
            for k in svc
            if k not in _HANDLED_KEYS and k not in _LOADER_WARNED and not k.startswith("x-")
        )
        if ignored:
            self.warnings.append(f"{p}: swarmlet ignores {', '.join(ignored)}")
        for k in svc:
            if k.startswith("x-swarmlet-") and k not in (AUTOSCALE_KEY, REBALANCE_KEY):
                self.warnings.append(f"{p}.{k}: unknown swarmlet extension, ignored")
        resources = deploy.get("resources") or {}
        if (resources.get("limits") or {}).get("pids"):
            self.warnings.append(f"{p}.deploy.resources.limits: swarmlet ignores pids")
        if (resources.get("reservations") or {}).get("generic_resources"):
            self.warnings.append(
                f"{p}.deploy.resources.reservations: swarmlet ignores generic_resources"
            )

    def _mode(self, deploy: Obj, p: str) -> tuple[ServiceMode, int]:
        # service.go convertDeployMode
        mode = str(deploy.get("mode") or "replicated")
        replicas = deploy.get("replicas")
        if mode in ("replicated-job", "global-job"):
            raise self.error(p + ".mode", f"mode {mode} is not supported by swarmlet (no jobs)")
        if mode == "global":
            if replicas is not None:
                raise self.error(
                    p + ".replicas",
                    "replicas can only be used with replicated or replicated-job mode",
                )
            return ServiceMode.GLOBAL, 1
        if mode != "replicated":
            raise self.error(p + ".mode", f"unknown mode: {mode}")
        return ServiceMode.REPLICATED, 1 if replicas is None else self._int(
            replicas, p + ".replicas"
        )

    def _environment(self, key: str, env: Mapping[str, str | None]) -> dict[str, str]:
        out: dict[str, str] = {}
        for name, value in env.items():
            if value is None:
                # convertEnvironment passes a bare "NAME"; swarmlet's env maps names to strings.
                self.warnings.append(
                    f"services.{key}.environment.{name}: no value and not set in the "
                    'environment; set to ""'
                )
                value = ""
            out[name] = value
        return out

    def _ports(self, ports: list[Obj], p: str) -> tuple[PortConfig, ...]:
        out: list[PortConfig] = []
        for i, port in enumerate(ports):
            where = f"{p}[{i}]"
            target = self._int(port.get("target"), where + ".target")
            published = self._int(port.get("published") or 0, where + ".published")
            protocol = str(port.get("protocol") or "tcp").lower()
            mode = str(port.get("mode") or "ingress")
            if protocol not in ("tcp", "udp"):
                raise self.error(
                    where + ".protocol", f"protocol {protocol} is not supported; use tcp or udp"
                )
            if mode not in ("ingress", "host"):
                raise self.error(where + ".mode", f"invalid publish mode {mode!r}: ingress or host")
            if not published:
                self.warnings.append(
                    f"{where}: target port {target} has no published port; swarmlet does not "
                    "pick one, so it is not published"
                )
                continue
            if protocol == "udp" and mode == "ingress":
                self.warnings.append(
                    f"{where}: the routing mesh carries TCP only; UDP port {published} is not "
                    "routed (use mode: host)"
                )
            if any((o.published, o.protocol) == (published, protocol) for o in out):
                raise self.error(where, f"port {published}/{protocol} is published twice")
            out.append(PortConfig(published, target, protocol, mode))
        return tuple(out)

    def _placement(self, placement: Obj, p: str) -> Placement:
        constraints = tuple(str(c) for c in placement.get("constraints") or ())
        for i, text in enumerate(constraints):
            try:
                parse_constraint(text)
            except UsageError as exc:
                raise self.error(f"{p}.constraints[{i}]", str(exc)) from exc
        preferences = []
        for i, pref in enumerate(placement.get("preferences") or ()):
            spread = str((pref or {}).get("spread") or "")
            if preference_label(spread) is None:
                # swarmkit puts every node in one group for a descriptor it cannot read, so
                # such a preference changes nothing there either; the scheduler spreads over
                # nodes anyway.
                self.warnings.append(
                    f"{p}.preferences[{i}]: swarmlet spreads over node.labels.<label> only; "
                    f"spread over {spread!r} ignored"
                )
                continue
            preferences.append(spread)
        max_per_node = self._int(
            placement.get("max_replicas_per_node") or 0, p + ".max_replicas_per_node"
        )
        return Placement(constraints, tuple(preferences), max_per_node)

    def _resources(self, raw: Obj | None, p: str) -> Resources:
        # service.go convertResources: cpus with opts.ParseCPUs, memory already in bytes.
        if not raw:
            return Resources()
        try:
            nano_cpus = parse_cpus(raw["cpus"], p + ".cpus") if raw.get("cpus") else 0
        except UsageError as exc:
            raise self.error(p + ".cpus", str(exc)) from exc
        return Resources(nano_cpus, self._int(raw.get("memory") or 0, p + ".memory"))

    def _restart(self, restart: Any, policy: Obj | None, p: str) -> RestartPolicy:
        # service.go convertRestartPolicy: deploy.restart_policy, else the legacy `restart`.
        if policy is not None:
            where = p + ".deploy.restart_policy"
            condition = str(policy.get("condition") or "any")
            try:
                parsed = RestartCondition(condition)
            except ValueError:
                raise self.error(
                    where + ".condition",
                    f"invalid condition {condition!r}: expected none, on-failure or any",
                ) from None
            delay = policy.get("delay")
            return RestartPolicy(
                condition=parsed,
                delay_s=None if delay is None else self._duration_s(delay, where + ".delay"),
                max_attempts=self._int(policy.get("max_attempts") or 0, where + ".max_attempts"),
                window_s=self._duration_s(policy.get("window"), where + ".window"),
            )
        if not restart:
            return RestartPolicy()
        # opts.ParseRestartPolicy; "no" means swarm's default policy (docker returns nil).
        name, _, count_text = str(restart).partition(":")
        try:
            count = int(count_text) if count_text else 0
        except ValueError:
            count = -1
        if count < 0:
            raise self.error(
                p + ".restart", f"invalid restart policy {restart!r}: bad maximum retry count"
            )
        if name == "no":
            return RestartPolicy()
        if name in ("always", "unless-stopped"):
            return RestartPolicy(RestartCondition.ANY, max_attempts=count)
        if name == "on-failure":
            return RestartPolicy(RestartCondition.ON_FAILURE, max_attempts=count)
        raise self.error(
            p + ".restart",
            f"invalid restart policy: unknown policy '{name}' (must be one of 'no', 'always', "
            "'on-failure', or 'unless-stopped')",
        )

    def _update(self, raw: Obj | None, p: str, *, rollback: bool = False) -> UpdateConfig:
        # service.go convertUpdateConfig: parallelism defaults to 1; a zero monitor means
        # swarm's default (5 s), which is UpdateConfig's default.
        if raw is None:
            return UpdateConfig()
        action_text = str(raw.get("failure_action") or "pause")
        allowed = ("pause", "continue") if rollback else ("pause", "continue", "rollback")
        if action_text not in allowed:
            raise self.error(
                p + ".failure_action",
                f"invalid failure_action {action_text!r}: expected {', '.join(allowed)}",
            )
        ratio = raw.get("max_failure_ratio") or 0.0
        if not isinstance(ratio, int | float) or not 0.0 <= ratio <= 1.0:
            raise self.error(p + ".max_failure_ratio", f"must be between 0 and 1, got {ratio}")
        monitor_s = self._duration_s(raw.get("monitor"), p + ".monitor")
        parallelism = raw.get("parallelism")
        return UpdateConfig(
            parallelism=1 if parallelism is None else self._int(parallelism, p + ".parallelism"),
            delay_s=self._duration_s(raw.get("delay"), p + ".delay"),
            order=UpdateOrder(str(raw.get("order") or "stop-first")),  # schema: an enum
            failure_action=FailureAction(action_text),
            monitor_s=monitor_s or UpdateConfig().monitor_s,
            max_failure_ratio=float(ratio),
        )

    def _healthcheck(self, raw: Obj | None, p: str) -> Healthcheck | None:
        # service.go convertHealthcheck
        if raw is None:
            return None
        test = tuple(str(t) for t in raw.get("test") or ())
        if raw.get("disable"):
            if test:
                raise self.error(p, "test and disable can't be set at the same time")
            return Healthcheck(test=("NONE",))
        if raw.get("start_interval") is not None:
            self.warnings.append(f"{p}: swarmlet ignores start_interval")
        return Healthcheck(
            test=test,
            interval_s=self._duration_s(raw.get("interval"), p + ".interval"),
            timeout_s=self._duration_s(raw.get("timeout"), p + ".timeout"),
            retries=self._int(raw.get("retries") or 0, p + ".retries"),
            start_period_s=self._duration_s(raw.get("start_period"), p + ".start_period"),
        )

    def _mounts(self, volumes: list[Obj], p: str) -> tuple[Mount, ...]:
        # volume.go convertVolumeToMount, with its messages.
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
                    raise self.error(where, f"{option} options are incompatible with type {kind}")
            if kind in ("cluster", "npipe"):
                raise self.error(where + ".type", f"{kind} mounts are not supported by swarmlet")
            if kind not in ("volume", "bind", "tmpfs"):
                raise self.error(
                    where + ".type", "volume type must be volume, bind, tmpfs, npipe, or cluster"
                )
            if not target.startswith("/"):
                raise self.error(where + ".target", f"target {target!r} must be an absolute path")
            if options:
                self.warnings.append(f"{where}: swarmlet ignores the {kind} options")
            if vol.get("consistency"):
                self.warnings.append(f"{where}: swarmlet ignores consistency")
            if kind == "bind":
                if not source:
                    raise self.error(where, "invalid bind source, source cannot be empty")
                out.append(Mount("bind", target, source, read_only))
            elif kind == "tmpfs":
                if source:
                    raise self.error(where, "invalid tmpfs source, source must be empty")
                out.append(Mount("tmpfs", target, read_only=read_only))
            elif not source:
                out.append(Mount("volume", target, read_only=read_only))  # anonymous
            else:
                vdef = self.volumes.get(source)
                if vdef is None:
                    raise self.error(where + ".source", f'undefined volume "{source}"')
                driver, opts = ("", {}) if vdef.external else (vdef.driver, vdef.driver_opts)
                out.append(Mount("volume", target, vdef.name, read_only, driver, dict(opts)))
        return tuple(out)

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
                raise self.error(where + ".source", f'undefined {kind} "{source}"')
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
                    mode=0o444 if mode is None else self._int(mode, where + ".mode"),
                )
            )
        return tuple(out)

    def _attachments(self, key: str, svc: Obj) -> tuple[NetworkAttachment, ...]:
        """The service's networks, sorted by cluster name (as docker sorts them)."""
        given: Obj = svc.get("networks") or {}
        out = []
        for net in self._service_networks(key, svc):
            self.used_networks.add(net)
            network = self._network(net)
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
                raise self.error(f"services.{key}.networks.{net}", f'undefined network "{net}"')
        endpoint_mode = str((svc.get("deploy") or {}).get("endpoint_mode") or "vip").lower()
        if endpoint_mode == "dnsrr":
            self.warnings.append(
                f"services.{key}.deploy.endpoint_mode: swarmlet has no dnsrr; published "
                "ports always go through the routing mesh (vip-like)"
            )
        elif endpoint_mode != "vip":
            raise self.error(
                f"services.{key}.deploy.endpoint_mode",
                f"invalid endpoint_mode {endpoint_mode!r}: expected vip or dnsrr",
            )
        return nets

    # --- extensions -----------------------------------------------------------------------

    def _extension(self, svc: Obj, deploy: Obj, key: str, p: str) -> tuple[Any, str]:
        if key in svc and key in deploy:
            raise self.error(f"{p}.deploy.{key}", f"{key} is given twice (also at {p}.{key})")
        if key in deploy:
            return deploy[key], f"{p}.deploy.{key}"
        return svc.get(key), f"{p}.{key}"

    def _rebalance(self, svc: Obj, deploy: Obj, p: str) -> bool:
        value, where = self._extension(svc, deploy, REBALANCE_KEY, p)
        if value is None:
            return True
        if not isinstance(value, bool):
            raise self.error(where, f"expected true or false, got {value!r}")
        return value

    def _autoscale(
        self, svc: Obj, deploy: Obj, p: str, mode: ServiceMode, replicas: int
    ) -> AutoscalePolicy | None:
        raw, where = self._extension(svc, deploy, AUTOSCALE_KEY, p)
        if raw is None:
            return None
        if not isinstance(raw, dict):
            raise self.error(where, "expected a mapping with min, max and cpu, memory or rps")
        unknown = sorted(set(raw) - set(_AUTOSCALE_FIELDS))
        if unknown:
            raise self.error(
                f"{where}.{unknown[0]}",
                f"unknown key {unknown[0]!r}: expected {', '.join(_AUTOSCALE_FIELDS)}",
            )
        if mode is ServiceMode.GLOBAL:
            raise self.error(where, "a global service runs one task per node: it cannot scale")
        for key in ("min", "max"):
            value = raw.get(key)
            if isinstance(value, bool) or not isinstance(value, int):
                raise self.error(f"{where}.{key}", f"expected a whole number, got {value!r}")
        low, high = int(raw["min"]), int(raw["max"])
        if low < 0:
            raise self.error(f"{where}.min", f"must be 0 or more, got {low}")
        if high < low or high < 1:
            raise self.error(f"{where}.max", f"must be at least min ({low}) and 1, got {high}")
        cpu = self._positive(raw.get("cpu"), f"{where}.cpu")
        rps = self._positive(raw.get("rps"), f"{where}.rps")
        memory = 0
        if raw.get("memory") is not None:
            try:
                memory = parse_size(str(raw["memory"]), f"{where}.memory")
            except UsageError as exc:
                raise self.error(f"{where}.memory", str(exc)) from exc
            if memory <= 0:
                raise self.error(f"{where}.memory", "must be more than 0")
        if not (cpu or rps or memory):
            raise self.error(where, "needs a target: cpu (percent), memory or rps")
        if not low <= replicas <= high:
            self.warnings.append(
                f"{where}: replicas ({replicas}) is outside min..max ({low}..{high}); "
                "the autoscaler will bring it within"
            )
        return AutoscalePolicy(low, high, cpu, memory, rps)

    # --- scalars --------------------------------------------------------------------------

    def _positive(self, value: Any, where: str) -> float:
        if value is None:
            return 0.0
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise self.error(where, f"expected a number above 0, got {value!r}")
        return float(value)

    def _int(self, value: Any, where: str) -> int:
        if isinstance(value, bool):
            raise self.error(where, f"expected a whole number, got {value!r}")
        try:
            number = int(value)
        except (TypeError, ValueError):
            raise self.error(where, f"expected a whole number, got {value!r}") from None
        if number < 0:
            raise self.error(where, f"must be 0 or more, got {number}")
        return number

    def _duration_s(self, value: Any, where: str, default: float = 0.0) -> float:
        # Normalised durations are Go strings ("1m0s"); parse them as Go does.
        if value is None:
            return default
        try:
            ns = parse_duration_ns(str(value))
        except ValueError as exc:
            raise self.error(where, str(exc)) from exc
        if ns < 0:
            raise self.error(where, f"must not be negative, got {value}")
        return ns / 1e9


def _opt_tuple(value: Any) -> tuple[str, ...] | None:
    return None if value is None else tuple(str(v) for v in value)


def _find_cycle(remaining: list[str], deps: Mapping[str, list[str]]) -> list[str]:
    """A dependency cycle among `remaining` (each has an unmet dependency within it), as
    ``[a, b, ..., a]``: walk unmet dependencies until a service repeats."""
    pending = set(remaining)
    path = [remaining[0]]
    while True:
        step = next(d for d in deps[path[-1]] if d in pending)
        if step in path:
            return [*path[path.index(step) :], step]
        path.append(step)
