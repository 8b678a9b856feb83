"""`swarmlet service ...`: build service specs from flags, print services and tasks.

`service ls --format json` and `service ps NAME --format json` are contracts: see the keys in
`swarmlet.api.services` (`service_view`, `task_view`).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import time
from typing import Any

import trio
from rich.console import Console
from rich.table import Table
from rich.text import Text

from swarmlet.cli.main import EXIT_ERROR, EXIT_OK, _client, _print_json, call
from swarmlet.errors import UsageError
from swarmlet.leader.autoscaler import parse_autoscale
from swarmlet.state.model import (
    FailureAction,
    Healthcheck,
    Resources,
    RestartCondition,
    ServiceMode,
    ServiceSpec,
    UpdateConfig,
    UpdateOrder,
)
from swarmlet.state.specparse import (
    parse_cpus,
    parse_duration,
    parse_file_ref,
    parse_key_value,
    parse_mount,
    parse_port,
    parse_size,
    validate_spec,
)
from swarmlet.wire import codec as wire

CONVERGE_TIMEOUT_S = 120.0
_STATE_STYLES = {
    "running": "green",
    "failed": "red",
    "rejected": "red",
    "orphaned": "red",
    "pending": "yellow",
    "starting": "cyan",
    "shutdown": "dim",
    "complete": "dim",
}


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


def spec_from_args(args: argparse.Namespace, base: ServiceSpec | None = None) -> ServiceSpec:
    """A new spec from `service create` flags, or `base` changed by `service update` flags."""
    if base is None:
        if args.mode == "global" and args.replicas is not None:
            raise UsageError("--replicas cannot be used with --mode global")
        base = ServiceSpec(
            name=args.name,
            image=args.image,
            command=tuple(args.command) if args.command else None,
            mode=ServiceMode(args.mode),
            replicas=1 if args.replicas is None else args.replicas,
        )
        env = dict(parse_key_value(e, "--env") for e in args.env or ())
        labels = dict(parse_key_value(e, "--label") for e in args.label or ())
        container_labels = dict(
            parse_key_value(e, "--container-label") for e in args.container_label or ()
        )
        ports = tuple(parse_port(p) for p in args.publish or ())
        mounts = tuple(parse_mount(m) for m in args.mount or ())
        base = dataclasses.replace(
            base,
            secrets=tuple(parse_file_ref(t, "--secret") for t in args.secret or ()),
            configs=tuple(parse_file_ref(t, "--config") for t in args.config or ()),
            env=env,
            labels=labels,
            container_labels=container_labels,
            ports=ports,
            mounts=mounts,
        )
    else:
        changes: dict[str, Any] = {}
        if args.image:
            changes["image"] = args.image
        if args.replicas is not None:
            changes["replicas"] = args.replicas
        if args.env_add or args.env_rm:
            env = {k: v for k, v in base.env.items() if k not in set(args.env_rm or ())}
            env.update(parse_key_value(e, "--env-add") for e in args.env_add or ())
            changes["env"] = env
        if args.publish_add or args.publish_rm:
            removed = {int(p.split(":")[0]) if ":" in p else int(p) for p in args.publish_rm or ()}
            kept = [p for p in base.ports if p.published not in removed]
            added = [parse_port(p, "--publish-add") for p in args.publish_add or ()]
            changes["ports"] = (*kept, *added)
        if args.force:
            changes["force_update"] = base.force_update + 1
        base = dataclasses.replace(base, **changes)

    placement = base.placement
    if args.constraint:
        placement = dataclasses.replace(placement, constraints=tuple(args.constraint))
    if args.placement_pref:
        placement = dataclasses.replace(placement, preferences=tuple(args.placement_pref))
    if args.replicas_max_per_node is not None:
        placement = dataclasses.replace(placement, max_replicas_per_node=args.replicas_max_per_node)
    reservations = Resources(
        parse_cpus(args.reserve_cpu, "--reserve-cpu")
        if args.reserve_cpu
        else base.reservations.nano_cpus,
        parse_size(args.reserve_memory, "--reserve-memory")
        if args.reserve_memory
        else base.reservations.memory_bytes,
    )
    limits = Resources(
        parse_cpus(args.limit_cpu, "--limit-cpu") if args.limit_cpu else base.limits.nano_cpus,
        parse_size(args.limit_memory, "--limit-memory")
        if args.limit_memory
        else base.limits.memory_bytes,
    )
    restart = base.restart
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
    healthcheck = base.healthcheck
    if args.no_healthcheck:
        healthcheck = Healthcheck(test=("NONE",))
    elif args.health_cmd:
        healthcheck = Healthcheck(
            test=("CMD-SHELL", args.health_cmd),
            interval_s=parse_duration(args.health_interval, "--health-interval")
            if args.health_interval
            else 0.0,
            timeout_s=parse_duration(args.health_timeout, "--health-timeout")
            if args.health_timeout
            else 0.0,
            retries=args.health_retries or 0,
            start_period_s=parse_duration(args.health_start_period, "--health-start-period")
            if args.health_start_period
            else 0.0,
        )
    spec = dataclasses.replace(
        base,
        placement=placement,
        reservations=reservations,
        limits=limits,
        restart=restart,
        healthcheck=healthcheck,
        update=_update_config(args, "update", base.update),
        rollback=_update_config(args, "rollback", base.rollback),
        rebalance=base.rebalance if args.rebalance is None else args.rebalance == "true",
        stop_grace_period_s=parse_duration(args.stop_grace_period, "--stop-grace-period")
        if args.stop_grace_period
        else base.stop_grace_period_s,
    )
    if args.autoscale is not None:
        spec = dataclasses.replace(spec, autoscale=parse_autoscale(args.autoscale))
        if spec.autoscale is not None:
            bounded = min(
                max(spec.replicas, spec.autoscale.min_replicas), spec.autoscale.max_replicas
            )
            spec = dataclasses.replace(spec, replicas=bounded)
    validate_spec(spec)
    return spec


# ---------------------------------------------------------------------------- progress


def wait_converged(
    args: argparse.Namespace, console: Console, names: list[str], *, version: int = 0
) -> int:
    """Show progress until every named service runs its replicas (and, after an update, until
    the rolling update completed); non-zero if one fails, pauses or rolls back."""
    deadline = time.monotonic() + CONVERGE_TIMEOUT_S
    last = ""
    while time.monotonic() < deadline:
        services = {s["name"]: s for s in call(args, "service.ls")["services"]}
        lines = []
        done = True
        for name in names:
            s = services.get(name)
            if s is None:
                continue
            lines.append(f"{name}: {s['replicas_running']}/{s['replicas_desired']} running")
            if s["replicas_running"] < s["replicas_desired"]:
                done = False
            status = s["update_status"]["state"]
            if status in ("paused", "rollback_paused"):
                console.print(f"{name}: update paused: {s['update_status']['message']}")
                return EXIT_ERROR
            if version and status in ("rollback_started", "rollback_completed"):
                message = s["update_status"]["message"]
                console.print(f"{name}: the update failed and was rolled back: {message}")
                return EXIT_ERROR
            if version and status == "updating":
                done = False  # still rolling, or monitoring the last batch
        text = "; ".join(lines)
        if text != last:
            console.print(text)
            last = text
        tasks = call(args, "service.ps", services=names)["tasks"]
        if version:
            # After an update: done once every task meant to run carries the new spec.
            current = [t for t in tasks if t["desired_state"] == "running"]
            done = done and all(t["spec_version"] >= version for t in current)
        if done:
            return EXIT_OK
        rejected = [
            t for t in tasks if t["state"] == "rejected" and t["desired_state"] == "running"
        ]
        if rejected and all(
            t["state"] in ("rejected", "failed") for t in tasks if t["desired_state"] == "running"
        ):
            console.print(f"error: tasks are failing: {rejected[0]['error']}")
            return EXIT_ERROR
        time.sleep(0.1)
    console.print(
        f"error: not converged within {CONVERGE_TIMEOUT_S:.0f} s; see `swarmlet service ps`"
    )
    return EXIT_ERROR


# ---------------------------------------------------------------------------- commands


def _encode(spec: ServiceSpec) -> bytes:
    return wire.encode(spec)


def cmd_create(args: argparse.Namespace, console: Console) -> int:
    spec = spec_from_args(args)
    result = call(args, "service.create", spec=_encode(spec))
    console.print(result["id"], markup=False)
    if args.detach:
        return EXIT_OK
    return wait_converged(args, console, [spec.name])


def _current_spec(args: argparse.Namespace, ref: str) -> ServiceSpec:
    spec = wire.decode(call(args, "service.spec", service=ref), expect=(ServiceSpec,))
    assert isinstance(spec, ServiceSpec)
    return spec


def cmd_update(args: argparse.Namespace, console: Console) -> int:
    spec = spec_from_args(args, base=_current_spec(args, args.service))
    result = call(args, "service.update", service=args.service, spec=_encode(spec))
    console.print(args.service, markup=False)
    if args.detach:
        return EXIT_OK
    return wait_converged(args, console, [spec.name], version=result["version"])


def cmd_rollback(args: argparse.Namespace, console: Console) -> int:
    call(args, "service.rollback", service=args.service)
    console.print(args.service, markup=False)
    return EXIT_OK if args.detach else wait_converged(args, console, [args.service])


def cmd_scale(args: argparse.Namespace, console: Console) -> int:
    changes: dict[str, int] = {}
    for item in args.pairs:
        name, sep, value = item.partition("=")
        if not sep or not value.lstrip("-").isdigit():
            raise UsageError(f"invalid {item!r}: expected SERVICE=REPLICAS")
        if int(value) < 0:
            raise UsageError(f"invalid {item!r}: replicas must be 0 or more")
        changes[name] = int(value)
    call(args, "service.scale", scale=changes)
    for name, replicas in changes.items():
        console.print(f"{name} scaled to {replicas}", markup=False)
    return EXIT_OK if args.detach else wait_converged(args, console, list(changes))


def cmd_rm(args: argparse.Namespace, console: Console) -> int:
    for name in call(args, "service.rm", services=args.services)["removed"]:
        console.print(name, markup=False)
    return EXIT_OK


def _ports_text(ports: list[dict[str, Any]]) -> str:
    return ", ".join(f"*:{p['published']}->{p['target']}/{p['protocol']}" for p in ports)


def print_services(console: Console, services: list[dict[str, Any]]) -> None:
    table = Table(box=None, pad_edge=False)
    for column in ("ID", "NAME", "MODE", "REPLICAS", "IMAGE", "PORTS"):
        table.add_column(column, no_wrap=True)
    for s in services:
        table.add_row(
            s["id"][:12],
            s["name"],
            s["mode"],
            f"{s['replicas_running']}/{s['replicas_desired']}",
            s["image"],
            _ports_text(s["ports"]),
        )
    console.print(table)


def list_services(args: argparse.Namespace, console: Console, stack: str | None = None) -> int:
    services = call(args, "service.ls", stack=stack)["services"]
    if args.format == "json":
        _print_json(console, services)
    else:
        print_services(console, services)
    return EXIT_OK


def list_tasks(
    args: argparse.Namespace,
    console: Console,
    *,
    services: list[str] | None = None,
    stack: str | None = None,
) -> int:
    tasks = call(args, "service.ps", services=services, stack=stack)["tasks"]
    if args.format == "json":
        _print_json(console, tasks)
    else:
        print_tasks(console, tasks)
    return EXIT_OK


def cmd_ls(args: argparse.Namespace, console: Console) -> int:
    return list_services(args, console)


def print_tasks(
    console: Console, tasks: list[dict[str, Any]], *, show_service: bool = False
) -> None:
    table = Table(box=None, pad_edge=False)
    for column in ("ID", "NAME", "NODE", "DESIRED STATE", "CURRENT STATE", "ERROR"):
        table.add_column(column, no_wrap=column != "ERROR")
    now = time.time()
    for t in tasks:
        since = max(0.0, now - (t["updated_at"] or now))
        state = Text(t["state"].capitalize(), style=_STATE_STYLES.get(t["state"], ""))
        state.append(f" {_ago(since)}", style="dim")
        error = t["error"] or (t["message"] if t["state"] == "pending" else "")
        table.add_row(
            t["id"][:12],
            t["name"],
            t["node_name"] or "-",
            t["desired_state"].capitalize(),
            state,
            error,
        )
    console.print(table)


def _ago(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} seconds ago"
    if seconds < 3600:
        return f"{seconds / 60:.0f} minutes ago"
    return f"{seconds / 3600:.0f} hours ago"


def cmd_ps(args: argparse.Namespace, console: Console) -> int:
    return list_tasks(args, console, services=args.services)


def cmd_inspect(args: argparse.Namespace, console: Console) -> int:
    _print_json(console, [call(args, "service.inspect", service=ref) for ref in args.services])
    return EXIT_OK


_TASK_COLOURS = (
    "cyan",
    "magenta",
    "green",
    "yellow",
    "blue",
    "bright_red",
    "bright_cyan",
    "bright_magenta",
)


def cmd_logs(args: argparse.Namespace, console: Console) -> int:
    colours: dict[str, str] = {}

    async def stream() -> None:
        async with _client(args).stream(
            "service.logs", service=args.service, follow=args.follow, tail=args.tail
        ) as lines:
            async for item in lines:
                prefix = f"{item['task']}@{item['node']}"
                colour = colours.setdefault(
                    item["task"], _TASK_COLOURS[len(colours) % len(_TASK_COLOURS)]
                )
                if args.format == "json":
                    console.print(json.dumps(item), markup=False, highlight=False, soft_wrap=True)
                    continue
                text = Text(prefix.ljust(max(28, len(prefix))) + " | ", style=colour)
                text.append(item["line"])
                console.print(text, highlight=False, soft_wrap=True)

    with contextlib.suppress(KeyboardInterrupt):
        trio.run(stream)
    return EXIT_OK


# ---------------------------------------------------------------------------- parser


def _spec_flags(p: argparse.ArgumentParser, *, create: bool) -> None:
    p.add_argument(
        "--constraint", action="append", help="placement constraint, e.g. node.labels.zone==a"
    )
    p.add_argument("--placement-pref", action="append", help="spread=node.labels.KEY")
    p.add_argument("--replicas-max-per-node", type=int)
    p.add_argument("--reserve-cpu")
    p.add_argument("--reserve-memory")
    p.add_argument("--limit-cpu")
    p.add_argument("--limit-memory")
    p.add_argument("--restart-condition", choices=("any", "on-failure", "none"))
    p.add_argument(
        "--restart-delay", help="fixed delay between restarts (default: exponential back-off)"
    )
    p.add_argument("--restart-max-attempts", type=int)
    p.add_argument("--restart-window")
    p.add_argument("--health-cmd")
    p.add_argument("--health-interval")
    p.add_argument("--health-timeout")
    p.add_argument("--health-retries", type=int)
    p.add_argument("--health-start-period")
    p.add_argument("--no-healthcheck", action="store_true")
    p.add_argument("--stop-grace-period")
    p.add_argument(
        "--rebalance", choices=("true", "false"), help="move replicas back when nodes return"
    )
    for prefix in ("update", "rollback"):
        p.add_argument(f"--{prefix}-parallelism", type=int)
        p.add_argument(f"--{prefix}-delay")
        p.add_argument(f"--{prefix}-order", choices=("start-first", "stop-first"))
        p.add_argument(f"--{prefix}-failure-action", choices=("pause", "continue", "rollback"))
        p.add_argument(f"--{prefix}-monitor")
        p.add_argument(f"--{prefix}-max-failure-ratio", type=float)
    p.add_argument(
        "--autoscale",
        metavar="POLICY",
        help="min=2,max=10,cpu=70[,memory=512M][,rps=100] per replica, or none",
    )
    p.add_argument(
        "-d", "--detach", action="store_true", help="do not wait for the service to converge"
    )
    p.add_argument("--replicas", type=int)


def register(sub: Any, command: Any) -> None:
    service = sub.add_parser("service", help="manage services", description="manage services")
    ssub = service.add_subparsers(dest="service_command", metavar="COMMAND")
    ssub.required = True

    p = command(
        "create",
        cmd_create,
        "create a service",
        "swarmlet service create --name web --replicas 3 -p 8080:80 swarmlet/web:1",
        ssub,
    )
    p.add_argument("--name", required=True)
    p.add_argument("--mode", choices=("replicated", "global"), default="replicated")
    p.add_argument("-p", "--publish", action="append", help="PUBLISHED:TARGET[/tcp|udp]")
    p.add_argument("-e", "--env", action="append", metavar="K=V")
    p.add_argument("--label", action="append", metavar="k=v")
    p.add_argument("--container-label", action="append", metavar="k=v")
    p.add_argument("--mount", action="append", help="type=volume,source=NAME,target=/PATH")
    p.add_argument("--secret", action="append", help="NAME or source=NAME,target=PATH,mode=0400")
    p.add_argument("--config", action="append", help="NAME or source=NAME,target=/PATH")
    _spec_flags(p, create=True)
    p.add_argument("image", metavar="IMAGE")
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="COMMAND ARG...")

    p = command(
        "update",
        cmd_update,
        "change a service (rolling update)",
        "swarmlet service update --image swarmlet/web:2 --update-order start-first web",
        ssub,
    )
    p.add_argument("--image")
    p.add_argument("--env-add", action="append", metavar="K=V")
    p.add_argument("--env-rm", action="append", metavar="K")
    p.add_argument("--publish-add", action="append")
    p.add_argument("--publish-rm", action="append")
    p.add_argument("--force", action="store_true", help="restart every replica with the same spec")
    _spec_flags(p, create=False)
    p.add_argument("service", metavar="SERVICE")

    p = command(
        "rollback",
        cmd_rollback,
        "return to the previous spec",
        "swarmlet service rollback web",
        ssub,
    )
    p.add_argument("-d", "--detach", action="store_true")
    p.add_argument("service", metavar="SERVICE")

    p = command(
        "scale", cmd_scale, "change replica counts", "swarmlet service scale web=5 api=2", ssub
    )
    p.add_argument("-d", "--detach", action="store_true")
    p.add_argument("pairs", nargs="+", metavar="SERVICE=REPLICAS")

    p = command("rm", cmd_rm, "remove services", "swarmlet service rm web", ssub)
    p.add_argument("services", nargs="+", metavar="SERVICE")

    p = command("ls", cmd_ls, "list services", "swarmlet service ls --format json", ssub)
    p.add_argument("--format", choices=("table", "json"), default="table")

    p = command("ps", cmd_ps, "list a service's tasks", "swarmlet service ps web", ssub)
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.add_argument("services", nargs="+", metavar="SERVICE")

    p = command(
        "inspect",
        cmd_inspect,
        "show services in detail (JSON)",
        "swarmlet service inspect web",
        ssub,
    )
    p.add_argument("services", nargs="+", metavar="SERVICE")

    p = command(
        "logs",
        cmd_logs,
        "print a service's logs from every node",
        "swarmlet service logs -f web",
        ssub,
    )
    p.add_argument("-f", "--follow", action="store_true")
    p.add_argument("--tail", type=int)
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.add_argument("service", metavar="SERVICE")
