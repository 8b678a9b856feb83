"""`swarmlet service create|update|rollback|scale|rm|ls|ps|inspect|logs`: the commands, how
they show progress, and their flags.

`service ls --format json` and `service ps NAME --format json` are contracts: see the keys in
`swarmlet.api.services` (`service_view`, `task_view`). Turning the flags into a ServiceSpec is
`cli.service_flags`. Commands that change services wait, unless `--detach`, until the services
converge (`wait_converged`), and exit non-zero if a rollout pauses, rolls back or cannot place
its tasks.
"""

from __future__ import annotations

import argparse
import contextlib
import time

from swarmlet.cli.common import (
    ExitStatus,
    add_command,
    add_group,
    call,
    client,
)
from swarmlet.errors import UsageError

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at run time
if TYPE_CHECKING:
    from typing import Any

    from rich.text import Text

    from swarmlet.cli.common import Subcommands
    from swarmlet.cli.output import Cell, Output
    from swarmlet.state.model import ServiceSpec

CONVERGE_TIMEOUT_S = 120.0
CONVERGE_POLL_INTERVAL_S = 0.1
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


# ---------------------------------------------------------------------------- progress


def wait_converged(
    args: argparse.Namespace, out: Output, names: list[str], *, version: int = 0
) -> ExitStatus:
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
                out.line(f"{name}: update paused: {s['update_status']['message']}")
                return ExitStatus.ERROR
            if version and status in ("rollback_started", "rollback_completed"):
                message = s["update_status"]["message"]
                out.line(f"{name}: the update failed and was rolled back: {message}")
                return ExitStatus.ERROR
            if version and status == "updating":
                done = False  # still rolling, or monitoring the last batch
        text = "; ".join(lines)
        if text != last:
            out.line(text)
            last = text
        tasks = call(args, "service.ps", services=names)["tasks"]
        if version:
            # After an update: done once every task meant to run carries the new spec.
            current = [t for t in tasks if t["desired_state"] == "running"]
            done = done and all(t["spec_version"] >= version for t in current)
        if done:
            return ExitStatus.OK
        rejected = [
            t for t in tasks if t["state"] == "rejected" and t["desired_state"] == "running"
        ]
        if rejected and all(
            t["state"] in ("rejected", "failed") for t in tasks if t["desired_state"] == "running"
        ):
            out.line(f"error: tasks are failing: {rejected[0]['error']}")
            return ExitStatus.ERROR
        time.sleep(CONVERGE_POLL_INTERVAL_S)
    out.line(f"error: not converged within {CONVERGE_TIMEOUT_S:.0f} s; see `swarmlet service ps`")
    return ExitStatus.ERROR


# ---------------------------------------------------------------------------- commands


def cmd_create(args: argparse.Namespace, out: Output) -> ExitStatus:
    from swarmlet.cli.service_flags import spec_from_args
    from swarmlet.wire import codec as wire

    spec = spec_from_args(args)
    result = call(args, "service.create", spec=wire.encode(spec))
    out.line(str(result["id"]))
    if args.detach:
        return ExitStatus.OK
    return wait_converged(args, out, [spec.name])


def _current_spec(args: argparse.Namespace, ref: str) -> ServiceSpec:
    from swarmlet.state.model import ServiceSpec
    from swarmlet.wire import codec as wire

    spec = wire.decode(call(args, "service.spec", service=ref), expect=(ServiceSpec,))
    assert isinstance(spec, ServiceSpec)
    return spec


def cmd_update(args: argparse.Namespace, out: Output) -> ExitStatus:
    from swarmlet.cli.service_flags import spec_from_args
    from swarmlet.wire import codec as wire

    spec = spec_from_args(args, base=_current_spec(args, args.service))
    result = call(args, "service.update", service=args.service, spec=wire.encode(spec))
    out.line(args.service)
    if args.detach:
        return ExitStatus.OK
    return wait_converged(args, out, [spec.name], version=result["version"])


def cmd_rollback(args: argparse.Namespace, out: Output) -> ExitStatus:
    call(args, "service.rollback", service=args.service)
    out.line(args.service)
    return ExitStatus.OK if args.detach else wait_converged(args, out, [args.service])


def cmd_scale(args: argparse.Namespace, out: Output) -> ExitStatus:
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
        out.line(f"{name} scaled to {replicas}")
    return ExitStatus.OK if args.detach else wait_converged(args, out, list(changes))


def cmd_rm(args: argparse.Namespace, out: Output) -> ExitStatus:
    for name in call(args, "service.rm", services=args.services)["removed"]:
        out.line(name)
    return ExitStatus.OK


def _ports_text(ports: list[dict[str, Any]]) -> str:
    return ", ".join(f"*:{p['published']}->{p['target']}/{p['protocol']}" for p in ports)


def print_services(out: Output, services: list[dict[str, Any]]) -> None:
    rows = [
        [
            s["id"][:12],
            s["name"],
            s["mode"],
            f"{s['replicas_running']}/{s['replicas_desired']}",
            s["image"],
            _ports_text(s["ports"]),
        ]
        for s in services
    ]
    out.table(("ID", "NAME", "MODE", "REPLICAS", "IMAGE", "PORTS"), rows)


def list_services(args: argparse.Namespace, out: Output, stack: str | None = None) -> ExitStatus:
    services = call(args, "service.ls", stack=stack)["services"]
    if args.format == "json":
        out.json(services)
    else:
        print_services(out, services)
    return ExitStatus.OK


def list_tasks(
    args: argparse.Namespace,
    out: Output,
    *,
    services: list[str] | None = None,
    stack: str | None = None,
) -> ExitStatus:
    tasks = call(args, "service.ps", services=services, stack=stack)["tasks"]
    if args.format == "json":
        out.json(tasks)
    else:
        print_tasks(out, tasks)
    return ExitStatus.OK


def cmd_ls(args: argparse.Namespace, out: Output) -> ExitStatus:
    return list_services(args, out)


def print_tasks(out: Output, tasks: list[dict[str, Any]]) -> None:
    rows: list[list[Cell]] = []
    now = time.time()
    for t in tasks:
        since = max(0.0, now - (t["updated_at"] or now))
        state = (
            (t["state"].capitalize(), _STATE_STYLES.get(t["state"], "")),
            (f" {_ago(since)}", "dim"),
        )
        error = t["error"] or (t["message"] if t["state"] == "pending" else "")
        rows.append(
            [
                t["id"][:12],
                t["name"],
                t["node_name"] or "-",
                t["desired_state"].capitalize(),
                state,
                error,
            ]
        )
    out.table(
        ("ID", "NAME", "NODE", "DESIRED STATE", "CURRENT STATE", "ERROR"), rows, wrap=("ERROR",)
    )


def _ago(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} seconds ago"
    if seconds < 3600:
        return f"{seconds / 60:.0f} minutes ago"
    return f"{seconds / 3600:.0f} hours ago"


def cmd_ps(args: argparse.Namespace, out: Output) -> ExitStatus:
    return list_tasks(args, out, services=args.services)


def cmd_inspect(args: argparse.Namespace, out: Output) -> ExitStatus:
    out.json([call(args, "service.inspect", service=ref) for ref in args.services])
    return ExitStatus.OK


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


def _log_line(item: dict[str, Any], colours: dict[str, str]) -> Text:
    """`TASK@NODE | line`, the prefix in the task's own colour."""
    from rich.text import Text

    prefix = f"{item['task']}@{item['node']}"
    colour = colours.setdefault(item["task"], _TASK_COLOURS[len(colours) % len(_TASK_COLOURS)])
    text = Text(prefix.ljust(max(28, len(prefix))) + " | ", style=colour)
    text.append(item["line"])
    return text


def cmd_logs(args: argparse.Namespace, out: Output) -> ExitStatus:
    import json

    colours: dict[str, str] = {}
    with (
        contextlib.suppress(KeyboardInterrupt),
        client(args).stream(
            "service.logs", service=args.service, follow=args.follow, tail=args.tail
        ) as lines,
    ):
        for item in lines:
            if args.format == "json":
                out.line(json.dumps(item))
                continue
            out.rich.print(_log_line(item, colours), highlight=False, soft_wrap=True)
    return ExitStatus.OK


# ---------------------------------------------------------------------------- parser


def _add_spec_flags(p: argparse.ArgumentParser) -> None:
    """The flags `create` and `update` share (`service_flags.spec_from_args` reads them)."""
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


def register(sub: Subcommands) -> None:
    services = add_group(sub, "service", "manage services", dest="service_command")

    p = add_command(
        services,
        "create",
        cmd_create,
        "create a service",
        "swarmlet service create --name web --replicas 3 -p 8080:80 swarmlet/web:1",
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
    _add_spec_flags(p)
    p.add_argument("image", metavar="IMAGE")
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="COMMAND ARG...")

    p = add_command(
        services,
        "update",
        cmd_update,
        "change a service (rolling update)",
        "swarmlet service update --image swarmlet/web:2 --update-order start-first web",
    )
    p.add_argument("--image")
    p.add_argument("--env-add", action="append", metavar="K=V")
    p.add_argument("--env-rm", action="append", metavar="K")
    p.add_argument("--publish-add", action="append")
    p.add_argument("--publish-rm", action="append")
    p.add_argument("--force", action="store_true", help="restart every replica with the same spec")
    _add_spec_flags(p)
    p.add_argument("service", metavar="SERVICE")

    p = add_command(
        services,
        "rollback",
        cmd_rollback,
        "return to the previous spec",
        "swarmlet service rollback web",
    )
    p.add_argument("-d", "--detach", action="store_true")
    p.add_argument("service", metavar="SERVICE")

    p = add_command(
        services, "scale", cmd_scale, "change replica counts", "swarmlet service scale web=5 api=2"
    )
    p.add_argument("-d", "--detach", action="store_true")
    p.add_argument("pairs", nargs="+", metavar="SERVICE=REPLICAS")

    p = add_command(services, "rm", cmd_rm, "remove services", "swarmlet service rm web")
    p.add_argument("services", nargs="+", metavar="SERVICE")

    p = add_command(services, "ls", cmd_ls, "list services", "swarmlet service ls --format json")
    p.add_argument("--format", choices=("table", "json"), default="table")

    p = add_command(services, "ps", cmd_ps, "list a service's tasks", "swarmlet service ps web")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.add_argument("services", nargs="+", metavar="SERVICE")

    p = add_command(
        services,
        "inspect",
        cmd_inspect,
        "show services in detail (JSON)",
        "swarmlet service inspect web",
    )
    p.add_argument("services", nargs="+", metavar="SERVICE")

    p = add_command(
        services,
        "logs",
        cmd_logs,
        "print a service's logs from every node",
        "swarmlet service logs -f web",
    )
    p.add_argument("-f", "--follow", action="store_true")
    p.add_argument("--tail", type=int)
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.add_argument("service", metavar="SERVICE")
