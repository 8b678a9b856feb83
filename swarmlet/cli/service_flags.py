"""From `service create` and `service update` flags to a ServiceSpec.

A translation: the flags argparse parsed in, a validated spec out (`specparse.validate_spec`),
or a UsageError that names the flag at fault. `create` builds a spec from defaults; `update`
changes only what its flags name, starting from the service's current spec, so an update never
resets a setting the user did not mention. The only input besides the flags is what
`--env-file` names (read here, as docker's client reads it) and the environment that bare
variable names pass through. The flags themselves are declared with the commands
(`cli.service`); this module must not talk to the agent.

docker's semantics (docker CLI 28, `cli/command/service/update.go`), with swarmlet's choices:
- An --X-rm/--X-add pair applies its removals first, then its additions, so `--secret-rm old
  --secret-add source=new,target=old` swaps a secret's value under the same file name.
- Removals by key: env, labels, sysctls by name; secrets and configs by their name; mounts by
  target; networks by name; hosts by host name (or the exact HOST:IP); constraints and
  placement preferences by their text; published ports by TARGET port (`--publish-rm 80`,
  `80/tcp`, `8080:80` or `published=8080,target=80`); ulimits by name, generic resources by
  kind; DNS servers, search domains and options by their text.
- Additions "add or update": a secret, config or mount replaces the one at the same target, a
  port the one at the same published port and protocol, a ulimit the one of its name (ulimits
  are kept sorted by name); a network already attached is an error.
- `--log-driver` replaces the driver and its options with the `--log-opt`s given beside it (as
  docker's updateLogDriver); `--log-driver ""` returns to the node's default driver.
- Nothing is dropped silently: a flag whose setting the model cannot hold is refused with the
  reason (`cli.service.NOT_SUPPORTED`), and so are health-check timings with no check to apply
  them to (see `_healthcheck`), `-e NAME` with NAME unset, and `--hostname` templates.
- Differences from docker: `--publish-rm 80` removes a host-mode port with target 80 too
  (docker's matches ingress only, unless mode= is given), and one that names a published port
  instead of a target is refused with the right spelling. `--log-opt` without `--log-driver`,
  which docker drops, sets options of the current (or the node's default) driver.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from swarmlet.errors import UsageError
from swarmlet.leader.autoscaler import parse_autoscale
from swarmlet.stack.envfile import parse_env_text
from swarmlet.state.constraints import preference_label
from swarmlet.state.model import (
    FailureAction,
    FileRef,
    GenericResource,
    Healthcheck,
    NetworkAttachment,
    PortConfig,
    Resources,
    RestartCondition,
    ServiceMode,
    ServiceSpec,
    UpdateConfig,
    UpdateOrder,
)
from swarmlet.state.specparse import (
    effective_capabilities,
    host_name_of,
    merge_ulimits,
    normalize_capabilities,
    parse_cpus,
    parse_dns_option,
    parse_dns_search,
    parse_dns_server,
    parse_duration,
    parse_extra_host,
    parse_file_ref,
    parse_generic_resource,
    parse_key_value,
    parse_mount,
    parse_network,
    parse_port,
    parse_port_selector,
    parse_size,
    parse_ulimit,
    validate_spec,
)

Item = TypeVar("Item")
_HEALTH_TIMINGS = (
    "health_interval",
    "health_timeout",
    "health_retries",
    "health_start_period",
)


def spec_from_args(
    args: argparse.Namespace,
    base: ServiceSpec | None = None,
    *,
    environ: Mapping[str, str] = os.environ,
) -> ServiceSpec:
    """A new spec from `service create` flags, or `base` changed by `service update` flags.
    `environ` is where bare names (`-e NAME`, `--env-add NAME`, in env files) are looked up."""
    refuse_unsupported(args)
    spec = _created(args, environ) if base is None else _updated(args, base, environ)
    spec = _container_settings(args, spec)
    spec = _scheduling(args, spec)
    spec = dataclasses.replace(spec, healthcheck=_healthcheck(args, spec.healthcheck, base))
    if args.autoscale is not None:
        spec = dataclasses.replace(spec, autoscale=parse_autoscale(args.autoscale))
        if spec.autoscale is not None:
            bounded = min(
                max(spec.replicas, spec.autoscale.min_replicas), spec.autoscale.max_replicas
            )
            spec = dataclasses.replace(spec, replicas=bounded)
    validate_spec(spec)
    return spec


def refuse_unsupported(args: argparse.Namespace) -> None:
    """A UsageError for the first flag given whose setting swarmlet cannot hold, saying why
    (the parser's table of them, `cli.service.NOT_SUPPORTED`, comes with the arguments)."""
    table: Mapping[str, tuple[str, str | None]] = getattr(args, "not_supported", {})
    for flag, (reason, harmless) in table.items():
        for name in (flag, f"{flag}-add", f"{flag}-rm"):
            value = getattr(args, name.lstrip("-").replace("-", "_"), None)
            if value is None or value is False or value == []:
                continue  # not given, or `--read-only=false`: what swarmlet does
            if isinstance(value, list) and all(v == harmless for v in value):
                continue
            shown = f"{name} {value[0]}" if isinstance(value, list) else name
            raise UsageError(f"{shown}: not supported yet: {reason}")


def rollback_conflicts(args: argparse.Namespace) -> list[str]:
    """The flags given beside `update --rollback`, which docker refuses to combine with it."""
    # not flags (the parser's own entries), or flags docker allows beside --rollback
    quiet = {"service", "rollback", "detach", "quiet", "data_dir", "handler", "command"}
    quiet |= {"not_supported"}
    return sorted(
        "--" + dest.replace("_", "-")
        for dest, value in vars(args).items()
        if dest not in quiet and not dest.endswith("_command") and value not in (None, False, [])
    )


# ---------------------------------------------------------------------------- create


def _created(args: argparse.Namespace, environ: Mapping[str, str]) -> ServiceSpec:
    mode = ServiceMode(args.mode)
    if mode.is_global and args.replicas is not None:
        raise UsageError(f"--replicas cannot be used with --mode {mode}")
    env = read_env_files(args.env_file or (), environ)
    env.update(env_var(e, "--env", environ) for e in args.env or ())
    cap_add, cap_drop = effective_capabilities(args.cap_add or (), args.cap_drop or ())
    return ServiceSpec(
        name=args.name,
        image=args.image,
        command=tuple(args.command) if args.command else None,
        mode=mode,
        replicas=1 if args.replicas is None else args.replicas,
        max_concurrent=args.max_concurrent or 0,
        env=env,
        labels=_key_values(args.label, "--label"),
        container_labels=_key_values(args.container_label, "--container-label"),
        ports=tuple(parse_port(p) for p in args.publish or ()),
        mounts=tuple(parse_mount(m) for m in args.mount or ()),
        secrets=tuple(parse_file_ref(t, "--secret") for t in args.secret or ()),
        configs=tuple(parse_file_ref(t, "--config") for t in args.config or ()),
        networks=tuple(parse_network(n) for n in args.network or ()),
        extra_hosts=tuple(dict.fromkeys(parse_extra_host(h) for h in args.host or ())),
        sysctls=_key_values(args.sysctl, "--sysctl"),
        cap_add=cap_add,
        cap_drop=cap_drop,
        ulimits=merge_ulimits((), (parse_ulimit(u) for u in args.ulimit or ())),
        dns_servers=_unique(parse_dns_server(d) for d in args.dns or ()),
        dns_search=_unique(parse_dns_search(d) for d in args.dns_search or ()),
        dns_options=_unique(parse_dns_option(o) for o in args.dns_option or ()),
        generic_resources=_updated_generic_resources((), [], args.generic_resource or ()),
    )


def _unique(items: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))


def read_env_files(paths: Iterable[str], environ: Mapping[str, str]) -> dict[str, str]:
    """The variables of docker's `--env-file`s, later files winning: `NAME=VALUE` lines as
    written; a bare `NAME` passes `environ`'s value through, and is left out if unset there (as
    docker does: there is nothing to pass)."""
    env: dict[str, str] = {}
    for path in paths:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"--env-file: cannot read {path}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise UsageError(f"--env-file: {path} is not UTF-8 text") from None
        try:
            pairs = parse_env_text(text, environ)
        except ValueError as exc:
            raise UsageError(f"--env-file: {path}: {exc}") from None
        env.update((name, value) for name, value in pairs if value is not None)
    return env


def _key_values(items: Sequence[str] | None, flag: str) -> dict[str, str]:
    return dict(parse_key_value(item, flag) for item in items or ())


# ---------------------------------------------------------------------------- update


def env_var(text: str, flag: str, environ: Mapping[str, str]) -> tuple[str, str]:
    """`NAME=VALUE`, or a bare `NAME` passing `environ`'s value through (docker's ValidateEnv);
    a bare name that is not set there is refused rather than set to "" or dropped."""
    name, sep, value = text.partition("=")
    if not name:
        raise UsageError(f"{flag}: invalid {text!r}: expected NAME=VALUE")
    if sep:
        return name, value
    if name not in environ:
        raise UsageError(
            f"{flag} {name}: {name} is not set in this environment, so there is no value to "
            f"pass through; give {name}= for an empty value"
        )
    return name, environ[name]


def _updated(
    args: argparse.Namespace, base: ServiceSpec, environ: Mapping[str, str]
) -> ServiceSpec:
    changes: dict[str, Any] = {}
    if args.image:
        changes["image"] = args.image
    if args.args is not None:
        changes["command"] = _shell_words(args.args, "--args")
    if args.replicas is not None:
        changes["replicas"] = args.replicas
    if args.max_concurrent is not None:
        changes["max_concurrent"] = args.max_concurrent
    for field, flag in (
        ("env", "env"),
        ("labels", "label"),
        ("container_labels", "container-label"),
        ("sysctls", "sysctl"),
    ):
        removed, added = _pair(args, flag)
        if removed or added:
            kept = {k: v for k, v in getattr(base, field).items() if k not in set(removed)}
            kept.update(
                env_var(item, "--env-add", environ)
                if flag == "env"
                else parse_key_value(item, f"--{flag}-add")
                for item in added
            )
            changes[field] = kept
    for field, flag in (("secrets", "secret"), ("configs", "config")):
        removed, added = _pair(args, flag)
        if removed or added:
            refs: tuple[FileRef, ...] = getattr(base, field)
            changes[field] = _replace_by_target(
                [r for r in refs if r.name not in set(removed)],
                [parse_file_ref(item, f"--{flag}-add") for item in added],
                lambda ref: ref.target,
            )
    removed, added = _pair(args, "mount")
    if removed or added:
        gone = {_path(t) for t in removed}
        changes["mounts"] = _replace_by_target(
            [m for m in base.mounts if _path(m.target) not in gone],
            [parse_mount(item, "--mount-add") for item in added],
            lambda mount: _path(mount.target),
        )
    if args.cap_add or args.cap_drop:
        # docker's updateCapabilities: a capability added leaves the dropped list and the
        # reverse; adding wins over dropping the same one.
        to_add, to_drop = effective_capabilities(args.cap_add or (), args.cap_drop or ())
        kept_add = [c for c in normalize_capabilities(base.cap_add) if c not in to_drop]
        kept_drop = [c for c in normalize_capabilities(base.cap_drop) if c not in to_add]
        changes["cap_add"] = normalize_capabilities([*kept_add, *to_add])
        changes["cap_drop"] = normalize_capabilities([*kept_drop, *to_drop])
    removed, added = _pair(args, "publish")
    if removed or added:
        changes["ports"] = _updated_ports(base.ports, removed, added)
    removed, added = _pair(args, "network")
    if removed or added:
        changes["networks"] = _updated_networks(base.networks, removed, added)
    removed, added = _pair(args, "host")
    if removed or added:
        changes["extra_hosts"] = _updated_hosts(base.extra_hosts, removed, added)
    removed, added = _pair(args, "ulimit")
    if removed or added:
        kept_limits = [u for u in base.ulimits if u.name not in set(removed)]
        changes["ulimits"] = merge_ulimits(
            kept_limits, (parse_ulimit(u, "--ulimit-add") for u in added)
        )
    for field, flag, parse in (
        ("dns_servers", "dns", parse_dns_server),
        ("dns_search", "dns-search", parse_dns_search),
        ("dns_options", "dns-option", parse_dns_option),
    ):
        removed, added = _pair(args, flag)
        if removed or added:
            gone = {parse(r, f"--{flag}-rm") for r in removed}
            kept_values = [v for v in getattr(base, field) if v not in gone]
            changes[field] = _unique([*kept_values, *(parse(a, f"--{flag}-add") for a in added)])
    removed, added = _pair(args, "generic-resource")
    if removed or added:
        changes["generic_resources"] = _updated_generic_resources(
            base.generic_resources, removed, added
        )
    if args.force:
        changes["force_update"] = base.force_update + 1
    return dataclasses.replace(base, **changes)


def _pair(args: argparse.Namespace, flag: str) -> tuple[list[str], list[str]]:
    """The values of `--FLAG-rm` and `--FLAG-add` (absent on create: empty)."""
    dest = flag.replace("-", "_")
    return getattr(args, f"{dest}_rm", None) or [], getattr(args, f"{dest}_add", None) or []


def _replace_by_target(
    kept: list[Item], added: list[Item], target: Callable[[Item], str]
) -> tuple[Item, ...]:
    """`kept` with each of `added` in the place of the one at its target, or after them."""
    out = list(kept)
    for item in added:
        at = next((i for i, old in enumerate(out) if target(old) == target(item)), None)
        if at is None:
            out.append(item)
        else:
            out[at] = item
    return tuple(out)


def _updated_ports(
    ports: tuple[PortConfig, ...], removed: list[str], added: list[str]
) -> tuple[PortConfig, ...]:
    kept = list(ports)
    for text in removed:
        target, protocol, mode = parse_port_selector(text)
        matching = [
            p
            for p in kept
            if (p.target, p.protocol) == (target, protocol) and mode in (None, p.mode)
        ]
        if not matching:
            published = [p for p in kept if (p.published, p.protocol) == (target, protocol)]
            if published:
                # docker matches the target port; a published port here is a likely mistake.
                raise UsageError(
                    f"--publish-rm {text}: no published port has target {target}/{protocol}; "
                    f"{target} is the published port of target {published[0].target}: "
                    f"use --publish-rm {published[0].target}/{protocol}"
                )
        kept = [p for p in kept if p not in matching]
    for text in added:
        port = parse_port(text, "--publish-add")
        kept = [p for p in kept if (p.published, p.protocol) != (port.published, port.protocol)]
        kept.append(port)
    return tuple(kept)


def _updated_networks(
    networks: tuple[NetworkAttachment, ...], removed: list[str], added: list[str]
) -> tuple[NetworkAttachment, ...]:
    kept = [n for n in networks if n.name not in set(removed)]
    for text in added:
        network = parse_network(text, "--network-add")
        if any(n.name == network.name for n in kept):
            raise UsageError(
                f"--network-add {text}: the service is already attached to network "
                f"{network.name} (--network-rm it first to change its aliases)"
            )
        kept.append(network)
    return tuple(kept)


def _updated_hosts(hosts: tuple[str, ...], removed: list[str], added: list[str]) -> tuple[str, ...]:
    """docker's updateHosts: `HOST` removes every entry of that host, `HOST:IP` that one."""
    kept = list(hosts)
    for text in removed:
        if ":" in text or "=" in text:
            entry = parse_extra_host(text, "--host-rm")
            kept = [h for h in kept if h != entry]
        else:
            kept = [h for h in kept if host_name_of(h) != text.strip()]
    for text in added:
        entry = parse_extra_host(text, "--host-add")
        if entry not in kept:
            kept.append(entry)
    return tuple(kept)


def _updated_generic_resources(
    resources: tuple[GenericResource, ...], removed: Iterable[str], added: Iterable[str]
) -> tuple[GenericResource, ...]:
    """Removed by kind (`gpu`, or `gpu=2`); an added one replaces the one of its kind."""
    gone = {text.partition("=")[0].strip() for text in removed}
    return _replace_by_target(
        [r for r in resources if r.kind not in gone],
        [parse_generic_resource(text) for text in added],
        lambda resource: resource.kind,
    )


def _path(target: str) -> str:
    return target.rstrip("/") or "/"


def _shell_words(text: str, flag: str) -> tuple[str, ...] | None:
    """docker's ShlexOpt: words split as a shell would; none means the image's own."""
    try:
        words = shlex.split(text)
    except ValueError as exc:
        raise UsageError(f"{flag}: cannot split {text!r}: {exc}") from None
    return tuple(words) or None


# ---------------------------------------------------------------------------- shared


def _container_settings(args: argparse.Namespace, spec: ServiceSpec) -> ServiceSpec:
    """The container's settings both commands take: given, they replace the spec's."""
    changes: dict[str, Any] = {}
    if args.entrypoint is not None:
        changes["entrypoint"] = _shell_words(args.entrypoint, "--entrypoint")
    for flag, field in (
        ("user", "user"),
        ("workdir", "working_dir"),
        ("hostname", "hostname"),
        ("stop_signal", "stop_signal"),
    ):
        value = getattr(args, flag)
        if value is not None:
            changes[field] = value
    if "{{" in (args.hostname or ""):
        raise UsageError(
            f"--hostname {args.hostname}: templates such as {{{{.Node.Hostname}}}} are not "
            "supported yet; give the host name itself"
        )
    if args.init is not None:
        changes["init"] = args.init
    if args.stop_grace_period:
        changes["stop_grace_period_s"] = parse_duration(
            args.stop_grace_period, "--stop-grace-period"
        )
    if args.rebalance is not None:
        changes["rebalance"] = args.rebalance == "true"
    if args.log_driver is not None:
        changes["log_driver"] = args.log_driver
        changes["log_options"] = _key_values(args.log_opt, "--log-opt")
    elif args.log_opt:
        changes["log_options"] = {**spec.log_options, **_key_values(args.log_opt, "--log-opt")}
    for flag, field in (("read_only", "read_only"), ("tty", "tty"), ("limit_pids", "pids_limit")):
        value = getattr(args, flag)
        if value is not None:
            changes[field] = value
    return dataclasses.replace(spec, **changes)


def _scheduling(args: argparse.Namespace, spec: ServiceSpec) -> ServiceSpec:
    """Placement, resources, restart policy and rollout settings."""
    placement = spec.placement
    if args.constraint:
        placement = dataclasses.replace(placement, constraints=tuple(args.constraint))
    removed, added = _pair(args, "constraint")
    if removed or added:
        kept = [c for c in placement.constraints if c not in set(removed)]
        kept += [c for c in dict.fromkeys(added) if c not in kept]
        placement = dataclasses.replace(placement, constraints=tuple(kept))
    if args.placement_pref:
        placement = dataclasses.replace(placement, preferences=tuple(args.placement_pref))
    removed, added = _pair(args, "placement-pref")
    if removed or added:
        gone = {preference_label(r) or r for r in removed}
        kept = [p for p in placement.preferences if (preference_label(p) or p) not in gone]
        kept += [p for p in dict.fromkeys(added) if p not in kept]
        placement = dataclasses.replace(placement, preferences=tuple(kept))
    if args.replicas_max_per_node is not None:
        placement = dataclasses.replace(placement, max_replicas_per_node=args.replicas_max_per_node)
    reservations = Resources(
        parse_cpus(args.reserve_cpu, "--reserve-cpu")
        if args.reserve_cpu
        else spec.reservations.nano_cpus,
        parse_size(args.reserve_memory, "--reserve-memory")
        if args.reserve_memory
        else spec.reservations.memory_bytes,
    )
    limits = Resources(
        parse_cpus(args.limit_cpu, "--limit-cpu") if args.limit_cpu else spec.limits.nano_cpus,
        parse_size(args.limit_memory, "--limit-memory")
        if args.limit_memory
        else spec.limits.memory_bytes,
    )
    restart = spec.restart
    if args.restart_condition:
        restart = dataclasses.replace(restart, condition=RestartCondition(args.restart_condition))
    if args.restart_delay is not None:
        restart = dataclasses.replace(
            restart, delay_s=parse_duration(args.restart_delay, "--restart-delay")
        )
    if args.restart_max_attempts is not None:
        restart = dataclasses.replace(restart, max_attempts=args.restart_max_attempts)
    if args.restart_window is not None:
        restart = dataclasses.replace(
            restart, window_s=parse_duration(args.restart_window, "--restart-window")
        )
    return dataclasses.replace(
        spec,
        placement=placement,
        reservations=reservations,
        limits=limits,
        restart=restart,
        update=_update_config(args, "update", spec.update),
        rollback=_update_config(args, "rollback", spec.rollback),
    )


def _update_config(args: argparse.Namespace, prefix: str, base: UpdateConfig) -> UpdateConfig:
    def get(name: str) -> Any:
        return getattr(args, f"{prefix}_{name}", None)

    changes: dict[str, Any] = {}
    if get("parallelism") is not None:
        changes["parallelism"] = get("parallelism")
    if get("delay") is not None:
        changes["delay_s"] = parse_duration(get("delay"), f"--{prefix}-delay")
    if get("order") is not None:
        changes["order"] = UpdateOrder(get("order"))
    if get("failure_action") is not None:
        changes["failure_action"] = FailureAction(get("failure_action"))
    if get("monitor") is not None:
        changes["monitor_s"] = parse_duration(get("monitor"), f"--{prefix}-monitor")
    if get("max_failure_ratio") is not None:
        changes["max_failure_ratio"] = get("max_failure_ratio")
    return dataclasses.replace(base, **changes)


def _healthcheck(
    args: argparse.Namespace, current: Healthcheck | None, base: ServiceSpec | None
) -> Healthcheck | None:
    """docker's health flags. Timings given without --health-cmd change the service's own
    check; with none to change (create, or a service that uses its image's HEALTHCHECK or has
    it disabled) they are refused: swarmlet does not read the image's check, and a check with
    timings and no command would wait for a health status that may never come."""
    timings = [name for name in _HEALTH_TIMINGS if getattr(args, name) is not None]
    shown = ", ".join("--" + name.replace("_", "-") for name in timings)
    if args.no_healthcheck:
        if args.health_cmd is not None or timings:
            raise UsageError("--no-healthcheck conflicts with --health-* options")
        return Healthcheck(test=("NONE",))
    if args.health_cmd == "":
        if timings:
            raise UsageError(f'{shown}: --health-cmd "" returns to the image\'s check')
        return None  # update: back to the image's HEALTHCHECK
    if args.health_cmd is not None:
        keep = current if current is not None and current.test[:1] != ("NONE",) else None
        current = dataclasses.replace(keep or Healthcheck(), test=("CMD-SHELL", args.health_cmd))
    elif timings and (current is None or current.test[:1] in ((), ("NONE",))):
        if base is None:
            raise UsageError(
                f"{shown} needs --health-cmd: swarmlet does not apply timings to the image's "
                "HEALTHCHECK; give the check's command too"
            )
        state = "has it disabled" if current is not None else "uses its image's HEALTHCHECK"
        raise UsageError(
            f"{shown}: the service {state}, which swarmlet does not change; give --health-cmd"
        )
    if current is None or not timings:
        return current
    changes: dict[str, Any] = {}
    for name, field in (
        ("health_interval", "interval_s"),
        ("health_timeout", "timeout_s"),
        ("health_start_period", "start_period_s"),
    ):
        text = getattr(args, name)
        if text is not None:
            changes[field] = parse_duration(text, "--" + name.replace("_", "-"))
    if args.health_retries is not None:
        changes["retries"] = args.health_retries
    return dataclasses.replace(current, **changes)
