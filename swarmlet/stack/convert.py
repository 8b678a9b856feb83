"""A loaded stack document -> swarmlet service specs and the stack's named objects.

Owns: what docker/cli's ``cli/compose/convert`` (``service.go``, ``volume.go``, ``compose.go``)
does with ``docker stack config``'s normalised document, mapped onto `swarmlet.state.model`, plus
two things docker does not do: ``depends_on`` ordering and the ``x-swarmlet-*`` extensions. This
module assembles the plan and converts the service-level keys; the parts live in
``convert_context`` (the stack name, the file, warnings, scalar readers), ``objects`` (secrets,
configs, volumes, networks and references to them), ``deploy_section`` (the deploy section) and
``extensions`` (``x-swarmlet-*``).

Input invariant: ``loaded.config`` is the loader's output (schema-valid, normalised: durations as
Go strings, sizes as byte strings, ports and volumes in long form, env files merged). Nothing
here reads files, the clock or the network; every error is a StackError(file, key path, what).

Decisions where docker and swarmlet differ (each also noted at its code):
- Names: services are scoped ``STACK_KEY``, as ``Namespace.Scope`` does (for the named objects,
  see ``objects``). Docker's ``com.docker.stack.*`` labels are not added: ``ServiceSpec.stack``
  carries the stack and the executor labels containers with ``swarmlet.stack``.
- Order: specs come in ``depends_on`` order (a stable topological sort over the services sorted
  by name); ``depends_on`` naming an unknown service, or a cycle, is an error.
- What swarmlet cannot honour and that would change where data lives or where tasks run is an
  error (cluster/npipe mounts, secret drivers, unknown protocols, constraints the scheduler
  cannot parse: the docker daemon rejects those constraints too). The container settings
  service.go converts (ulimits, logging, dns, dns_search, read_only, tty, limits.pids, and
  reservations' generic_resources, which nodes advertise: `state.generic_resources`) are
  honoured; other keys are ignored with one warning per service. docker's schema has no
  ``dns_opt``: the loader refuses it, as docker does.
- A port without ``published`` gets a random port from docker's ingress; swarmlet allocates
  none, so the port is dropped with a warning.
- ``environment: {FOO: null}`` (no value, none in the environment) is docker's bare ``FOO``;
  swarmlet's env is a str map, so it becomes ``FOO=""`` with a warning.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from swarmlet.errors import UsageError
from swarmlet.stack import deploy_section
from swarmlet.stack.convert_context import ConvertContext, Obj, string_map
from swarmlet.stack.extensions import EXTENSION_KEYS, autoscale, proxy_protocol, rebalance
from swarmlet.stack.loader import DEPRECATED_PROPERTIES, UNSUPPORTED_PROPERTIES, LoadedStack
from swarmlet.stack.objects import NetworkDef, SecretDef, StackObjects, VolumeDef
from swarmlet.state.model import Healthcheck, PortConfig, ServiceSpec, Ulimit
from swarmlet.state.specparse import (
    check_ulimit,
    merge_ulimits,
    parse_dns_search,
    parse_dns_server,
    validate_spec,
)

_NAME_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*")

# Service keys mapped onto ServiceSpec (or StackPlan) below.
_HANDLED_KEYS = frozenset(
    {
        "cap_add", "cap_drop", "command", "configs", "depends_on", "deploy", "dns", "dns_search",
        "entrypoint", "env_file", "environment", "extra_hosts", "healthcheck", "hostname",
        "image", "init", "labels", "logging", "networks", "ports", "read_only", "secrets",
        "stop_grace_period", "stop_signal", "sysctls", "tty", "ulimits", "user", "volumes",
        "working_dir",
    }
)  # fmt: skip
# Keys the loader already warns about (``docker stack deploy``'s own lists); not repeated.
# ``restart`` is among them, yet docker's convertRestartPolicy uses it: so do we.
_LOADER_WARNED = frozenset(UNSUPPORTED_PROPERTIES) | frozenset(DEPRECATED_PROPERTIES)


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


class _Converter:
    def __init__(self, stack: str, loaded: LoadedStack, file: str) -> None:
        self.ctx = ConvertContext(stack, file, list(loaded.warnings))
        if not _NAME_RE.fullmatch(stack):
            raise self.ctx.error("", f"invalid stack name {stack!r}: use letters, digits, _ . -")
        self.services: Obj = loaded.config.get("services") or {}
        self.objects = StackObjects(self.ctx, loaded.config)

    # --- the plan -------------------------------------------------------------------------

    def plan(self) -> StackPlan:
        order = self._dependency_order()
        specs = [self._service(key, self.services[key] or {}) for key in order]
        self._check_published_ports(order, specs)
        return StackPlan(
            name=self.ctx.stack,
            services=tuple(specs),
            secrets=tuple(self.objects.secrets.values()),
            configs=tuple(self.objects.configs.values()),
            volumes=tuple(self.objects.volumes.values()),
            networks=self.objects.used_network_defs(),
            warnings=tuple(self.ctx.warnings),
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
                    at = f".{dep}" if isinstance(wanted, dict) else f"[{i}]"  # long syntax: a map
                    raise self.ctx.error(
                        f"services.{key}.depends_on{at}",
                        f'service "{key}" depends on undefined service "{dep}"',
                    )
            deps[key] = list(dict.fromkeys(wanted))
        done: set[str] = set()
        order: list[str] = []
        while len(order) < len(names):
            ready = next((n for n in names if n not in done and set(deps[n]) <= done), None)
            if ready is None:
                cycle = _find_cycle([n for n in names if n not in done], deps)
                raise self.ctx.error(
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
                    raise self.ctx.error(
                        f"services.{key}.ports",
                        f"port {port.published}/{port.protocol} is published by both "
                        f"services {other} and {key}",
                    )

    # --- one service ----------------------------------------------------------------------

    def _service(self, key: str, svc: Obj) -> ServiceSpec:
        ctx, objects = self.ctx, self.objects
        p = f"services.{key}"
        deploy: Obj = svc.get("deploy") or {}
        if not svc.get("image"):
            raise ctx.error(
                p + ".image", f"invalid image reference for service {key}: no image specified"
            )
        self._warn_ignored(key, svc, deploy)
        mode, replicas = deploy_section.service_mode(ctx, deploy, p + ".deploy")
        resources: Obj = deploy.get("resources") or {}
        logging: Obj = svc.get("logging") or {}
        spec = ServiceSpec(
            name=ctx.scope(key),
            image=str(svc["image"]),
            # service.go: Command <- entrypoint, Args <- command; the loader already shell-split
            # string forms (transformShellCommand).
            command=_opt_tuple(svc.get("command")),
            entrypoint=_opt_tuple(svc.get("entrypoint")),
            env=self._environment(key, svc.get("environment") or {}),
            labels=string_map(deploy.get("labels")),
            container_labels=string_map(svc.get("labels")),
            mode=mode,
            replicas=replicas,
            ports=proxy_protocol(
                ctx, svc, deploy, p, self._ports(svc.get("ports") or [], p + ".ports")
            ),
            placement=deploy_section.placement(
                ctx, deploy.get("placement") or {}, p + ".deploy.placement"
            ),
            reservations=deploy_section.resources(
                ctx, resources.get("reservations"), p + ".deploy.resources.reservations"
            ),
            limits=deploy_section.resources(
                ctx, resources.get("limits"), p + ".deploy.resources.limits"
            ),
            restart=deploy_section.restart_policy(
                ctx, svc.get("restart"), deploy.get("restart_policy"), p
            ),
            update=deploy_section.update_config(
                ctx, deploy.get("update_config"), p + ".deploy.update_config"
            ),
            rollback=deploy_section.update_config(
                ctx, deploy.get("rollback_config"), p + ".deploy.rollback_config", rollback=True
            ),
            healthcheck=self._healthcheck(svc.get("healthcheck"), p + ".healthcheck"),
            mounts=objects.mounts(svc.get("volumes") or [], p + ".volumes"),
            secrets=objects.secret_refs(svc.get("secrets") or [], p + ".secrets"),
            configs=objects.config_refs(svc.get("configs") or [], p + ".configs"),
            user=str(svc.get("user") or ""),
            working_dir=str(svc.get("working_dir") or ""),
            hostname=str(svc.get("hostname") or ""),
            stop_signal=str(svc.get("stop_signal") or ""),
            stop_grace_period_s=ctx.duration_s(
                svc.get("stop_grace_period"), p + ".stop_grace_period", default=10.0
            ),
            init=bool(svc.get("init")),
            extra_hosts=tuple(str(h) for h in svc.get("extra_hosts") or ()),
            cap_add=tuple(str(c) for c in svc.get("cap_add") or ()),
            cap_drop=tuple(str(c) for c in svc.get("cap_drop") or ()),
            sysctls=string_map(svc.get("sysctls")),
            networks=objects.attachments(key, svc),
            stack=ctx.stack,
            depends_on=tuple(ctx.scope(d) for d in dict.fromkeys(svc.get("depends_on") or [])),
            depends_on_condition=self._conditions(svc.get("depends_on"), p + ".depends_on"),
            rebalance=rebalance(ctx, svc, deploy, p),
            autoscale=autoscale(ctx, svc, deploy, p, mode, replicas),
            ulimits=self._ulimits(svc.get("ulimits") or {}, p + ".ulimits"),
            log_driver=str(logging.get("driver") or ""),
            log_options=string_map(logging.get("options")),
            dns_servers=self._each(svc.get("dns"), p + ".dns", parse_dns_server),
            dns_search=self._each(svc.get("dns_search"), p + ".dns_search", parse_dns_search),
            read_only=bool(svc.get("read_only")),
            tty=bool(svc.get("tty")),
            pids_limit=deploy_section.pids_limit(
                ctx, resources.get("limits"), p + ".deploy.resources.limits"
            ),
            generic_resources=deploy_section.generic_resources(
                ctx, resources.get("reservations"), p + ".deploy.resources.reservations"
            ),
        )
        try:
            validate_spec(spec)
        except UsageError as exc:
            raise ctx.error(p, str(exc)) from exc
        return spec

    def _warn_ignored(self, key: str, svc: Obj, deploy: Obj) -> None:
        p = f"services.{key}"
        ignored = sorted(
            k
            for k in svc
            if k not in _HANDLED_KEYS and k not in _LOADER_WARNED and not k.startswith("x-")
        )
        if ignored:
            self.ctx.warn(f"{p}: swarmlet ignores {', '.join(ignored)}")
        for k in svc:
            if k.startswith("x-swarmlet-") and k not in EXTENSION_KEYS:
                self.ctx.warn(f"{p}.{k}: unknown swarmlet extension, ignored")

    def _conditions(self, raw: object, p: str) -> dict[str, str]:
        """compose-spec's long `depends_on`: each dependency's condition, when it is not the
        default `service_started` (`leader.depends_on` honours them). `restart: true` (restart
        this service when the dependency is updated) and `required: false` (start without the
        dependency) are refused: swarmlet does neither."""
        if not isinstance(raw, dict):
            return {}
        conditions = {}
        for name, options in raw.items():
            if options.get("restart"):
                raise self.ctx.error(
                    f"{p}.{name}.restart", "restart: true is not supported by swarmlet"
                )
            if options.get("required") is False:
                raise self.ctx.error(
                    f"{p}.{name}.required",
                    "required: false is not supported by swarmlet (the dependency must exist)",
                )
            condition = str(options.get("condition") or "service_started")
            if condition != "service_started":
                conditions[self.ctx.scope(str(name))] = condition
        return conditions

    def _ulimits(self, raw: Obj, p: str) -> tuple[Ulimit, ...]:
        # service.go convertUlimits: a single number is both limits; sorted by name.
        out = []
        for name, value in raw.items():
            where = f"{p}.{name}"
            if isinstance(value, dict):
                soft, hard = value.get("soft"), value.get("hard")
            else:
                soft = hard = value
            ulimit = Ulimit(
                str(name),
                _limit(ctx=self.ctx, value=soft, where=where + ".soft"),
                _limit(ctx=self.ctx, value=hard, where=where + ".hard"),
            )
            try:
                check_ulimit(ulimit, "ulimit")
            except UsageError as exc:
                raise self.ctx.error(where, str(exc)) from exc
            out.append(ulimit)
        return merge_ulimits(out, ())

    def _each(self, raw: Any, p: str, parse: Callable[[str, str], str]) -> tuple[str, ...]:
        """A string-or-list key (normalised to a list), each item checked by `parse`."""
        items = [raw] if isinstance(raw, str) else list(raw or ())
        out = []
        for i, item in enumerate(items):
            try:
                out.append(parse(str(item), p.rpartition(".")[2]))
            except UsageError as exc:
                raise self.ctx.error(f"{p}[{i}]", str(exc)) from exc
        return tuple(out)

    def _environment(self, key: str, env: Mapping[str, str | None]) -> dict[str, str]:
        out: dict[str, str] = {}
        for name, value in env.items():
            if value is None:
                # convertEnvironment passes a bare "NAME"; swarmlet's env maps names to strings.
                self.ctx.warn(
                    f"services.{key}.environment.{name}: no value and not set in the "
                    'environment; set to ""'
                )
                value = ""
            out[name] = value
        return out

    def _ports(self, ports: list[Obj], p: str) -> tuple[PortConfig, ...]:
        ctx = self.ctx
        out: list[PortConfig] = []
        for i, port in enumerate(ports):
            where = f"{p}[{i}]"
            target = ctx.whole_number(port.get("target"), where + ".target")
            published = ctx.whole_number(port.get("published") or 0, where + ".published")
            protocol = str(port.get("protocol") or "tcp").lower()
            mode = str(port.get("mode") or "ingress")
            if protocol not in ("tcp", "udp"):
                raise ctx.error(
                    where + ".protocol", f"protocol {protocol} is not supported; use tcp or udp"
                )
            if mode not in ("ingress", "host"):
                raise ctx.error(where + ".mode", f"invalid publish mode {mode!r}: ingress or host")
            if not published:
                ctx.warn(
                    f"{where}: target port {target} has no published port; swarmlet does not "
                    "pick one, so it is not published"
                )
                continue
            if any((o.published, o.protocol) == (published, protocol) for o in out):
                raise ctx.error(where, f"port {published}/{protocol} is published twice")
            out.append(PortConfig(published, target, protocol, mode))
        return tuple(out)

    def _healthcheck(self, raw: Obj | None, p: str) -> Healthcheck | None:
        # service.go convertHealthcheck
        ctx = self.ctx
        if raw is None:
            return None
        test = tuple(str(t) for t in raw.get("test") or ())
        if raw.get("disable"):
            if test:
                raise ctx.error(p, "test and disable can't be set at the same time")
            return Healthcheck(test=("NONE",))
        if raw.get("start_interval") is not None:
            ctx.warn(f"{p}: swarmlet ignores start_interval")
        return Healthcheck(
            test=test,
            interval_s=ctx.duration_s(raw.get("interval"), p + ".interval"),
            timeout_s=ctx.duration_s(raw.get("timeout"), p + ".timeout"),
            retries=ctx.whole_number(raw.get("retries") or 0, p + ".retries"),
            start_period_s=ctx.duration_s(raw.get("start_period"), p + ".start_period"),
        )


def _limit(*, ctx: ConvertContext, value: Any, where: str) -> int:
    """A ulimit value: a whole number, -1 for unlimited."""
    if value == -1:
        return -1
    return ctx.whole_number(value, where)


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
