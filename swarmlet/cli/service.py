"""`swarmlet service create|update|rollback|scale|rm|ls|ps|inspect|logs`: the commands, how
they show progress, and their flags.

`service ls --format json` and `service ps NAME --format json` are contracts: see the keys in
`swarmlet.api.services` (`service_view`, `task_view`). Turning the flags into a ServiceSpec is
`cli.service_flags`. Commands that change services wait, unless `--detach`, until the services
converge (`wait_converged`), and exit non-zero if a rollout pauses, rolls back or cannot place
its tasks. `ls` and `ps` (and `stack services`/`stack ps`, which share them) take docker's `-q`,
`--filter` and `--format TEMPLATE` over docker's field names (`service_row`, `task_row`).
"""

from __future__ import annotations

import argparse
import contextlib
import time

from swarmlet.cli.common import (
    ExitStatus,
    add_bool,
    add_command,
    add_group,
    add_inspect_format,
    add_list_flags,
    call,
    client,
    labels_match,
    select,
)
from swarmlet.cli.output import human_duration, print_inspected, print_list
from swarmlet.errors import UsageError

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at run time
if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Mapping
    from typing import Any

    from rich.text import Text

    from swarmlet.cli.common import Subcommands
    from swarmlet.cli.gotemplate import Record
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


# `docker service ls` columns: field -> header (docker CLI 28, cli/command/service/formatter.go).
SERVICE_HEADERS = {
    "ID": "ID",
    "Name": "NAME",
    "Mode": "MODE",
    "Replicas": "REPLICAS",
    "Image": "IMAGE",
    "Ports": "PORTS",
}


def display_image(image: str) -> str:
    """An image as docker's lists show it: a tagged reference without its digest."""
    name, _, _digest = image.partition("@")
    return name if _digest and ":" in name.rsplit("/", 1)[-1] else image


def service_row(service: dict[str, Any]) -> Record:
    from swarmlet.cli.gotemplate import Record

    return Record(
        "*formatter.serviceContext",
        {
            "ID": service["id"][:12],
            "Name": service["name"],
            "Mode": service["mode"],
            "Replicas": f"{service['replicas_running']}/{service['replicas_desired']}",
            "Image": display_image(service["image"]),
            "Ports": _ports_text(service["ports"]),
        },
    )


# `docker service ls --filter` keys -> the values they take (() for any).
SERVICE_FILTERS: dict[str, tuple[str, ...]] = {
    "id": (),
    "label": (),
    "mode": ("replicated", "global"),
    "name": (),
}
SERVICE_MATCHERS: Mapping[str, Callable[[dict[str, Any], str], bool]] = {
    "id": lambda s, v: s["id"].startswith(v),
    "label": lambda s, v: labels_match(s["labels"], v),
    "mode": lambda s, v: s["mode"] == v,
    "name": lambda s, v: s["name"].startswith(v),
}


def list_services(args: argparse.Namespace, out: Output, stack: str | None = None) -> ExitStatus:
    services = call(args, "service.ls", stack=stack)["services"]
    if any(key == "label" for key, _ in args.filter):
        # The list does not carry labels: they are in each service's spec.
        for s in services:
            s["labels"] = call(args, "service.inspect", service=s["id"])["spec"]["labels"]
    services = select(services, args.filter, SERVICE_MATCHERS)
    for s in services:
        s.pop("labels", None)  # the JSON stays the documented list
    print_list(
        out,
        args.format,
        args.quiet,
        table=lambda: print_services(out, services),
        as_json=lambda: services,
        ids=lambda: [s["id"][:12] for s in services],  # docker's service IDs are short here
        rows=lambda: (SERVICE_HEADERS, [service_row(s) for s in services]),
    )
    return ExitStatus.OK


# `docker service ps` columns: field -> header (docker CLI 28, cli/command/task/formatter.go).
TASK_HEADERS = {
    "ID": "ID",
    "Name": "NAME",
    "Image": "IMAGE",
    "Node": "NODE",
    "DesiredState": "DESIRED STATE",
    "CurrentState": "CURRENT STATE",
    "Error": "ERROR",
    "Ports": "PORTS",
}
TASK_ERROR_WIDTH = 30  # docker's maxErrLength


def ellipsis(text: str, width: int) -> str:
    """docker's formatter.Ellipsis: at most `width` characters, the last one `…` if cut."""
    return text if len(text) <= width else text[: width - 1] + "…"


def task_row(task: dict[str, Any], image: str, *, truncate: bool, now: float) -> Record:
    """A task under `docker service ps`'s field names. Image is its service's current image;
    Ports (the task's host-mode ports) is empty: the control API does not report them."""
    from swarmlet.cli.gotemplate import Record

    since = max(0.0, now - (task["updated_at"] or now))
    error = task["error"]
    if truncate:
        error = ellipsis(error, TASK_ERROR_WIDTH)
    return Record(
        "*task.taskContext",
        {
            "ID": task["id"][:12] if truncate else task["id"],
            "Name": task["name"],
            "Image": display_image(image) if truncate else image,
            "Node": task["node_name"],
            "DesiredState": task["desired_state"].capitalize(),
            "CurrentState": f"{task['state'].capitalize()} {human_duration(since).lower()} ago",
            "Error": f'"{error}"' if error else "",
            "Ports": "",
        },
    )


# `docker service ps --filter` keys -> the values they take (() for any).
TASK_FILTERS: dict[str, tuple[str, ...]] = {
    "desired-state": ("running", "shutdown", "accepted"),
    "id": (),
    "name": (),
    "node": (),
}
TASK_MATCHERS: Mapping[str, Callable[[dict[str, Any], str], bool]] = {
    "desired-state": lambda t, v: t["desired_state"] == v,
    "id": lambda t, v: t["id"].startswith(v),
    "name": lambda t, v: t["name"].startswith(v),
    # A node by name or by ID (docker resolves either to the ID).
    "node": lambda t, v: bool(t["node"]) and (t["node_name"] == v or t["node"].startswith(v)),
}


def list_tasks(
    args: argparse.Namespace,
    out: Output,
    *,
    services: list[str] | None = None,
    stack: str | None = None,
    nodes: Collection[str] | None = None,
) -> ExitStatus:
    """The tasks of `services`, of `stack`, or (neither given) of every service; only those on
    `nodes` (IDs) if given; and only those `--filter` selects."""
    tasks = call(args, "service.ps", services=services, stack=stack)["tasks"]
    if nodes is not None:
        tasks = [t for t in tasks if t["node"] in nodes]
    tasks = select(tasks, args.filter, TASK_MATCHERS)

    def rows() -> tuple[Mapping[str, str], list[Record]]:
        # Tasks do not carry their image: their services' (one more request, for templates only).
        images = {s["name"]: s["image"] for s in call(args, "service.ls")["services"]}
        now = time.time()
        truncate = not args.no_trunc
        return TASK_HEADERS, [
            task_row(t, images.get(t["service"], ""), truncate=truncate, now=now) for t in tasks
        ]

    print_list(
        out,
        args.format,
        args.quiet,
        table=lambda: print_tasks(out, tasks, truncate=not args.no_trunc),
        as_json=lambda: tasks,
        ids=lambda: [t["id"] for t in tasks],  # full IDs, as docker's `-q` prints them
        rows=rows,
    )
    return ExitStatus.OK


def cmd_ls(args: argparse.Namespace, out: Output) -> ExitStatus:
    return list_services(args, out)


def print_tasks(out: Output, tasks: list[dict[str, Any]], *, truncate: bool = True) -> None:
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
                t["id"][:12] if truncate else t["id"],
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


def add_ls_flags(parser: argparse.ArgumentParser, operand: str = "") -> None:
    """`service ls` and `stack services`: docker's list flags over docker's service fields."""
    add_list_flags(
        parser,
        example="{{.Name}}\\t{{.Replicas}}",
        filters=SERVICE_FILTERS,
        filter_example="mode=replicated",
        operand=operand,
    )


def add_ps_flags(parser: argparse.ArgumentParser) -> None:
    """`service ps` and `stack ps`: docker's list flags over docker's task fields."""
    add_list_flags(
        parser,
        example="{{.Name}}\\t{{.CurrentState}}",
        filters=TASK_FILTERS,
        filter_example="desired-state=running",
        quiet="only display task IDs",
        operand="web",
    )
    add_bool(parser, "--no-trunc", help_="do not truncate task IDs and errors")


def cmd_ps(args: argparse.Namespace, out: Output) -> ExitStatus:
    return list_tasks(args, out, services=args.services)


def cmd_inspect(args: argparse.Namespace, out: Output) -> ExitStatus:
    items = [call(args, "service.inspect", service=ref) for ref in args.services]
    print_inspected(out, args.format, items)
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
    add_bool(p, "--no-healthcheck", help_="disable the image's healthcheck")
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
    add_bool(p, "-d", "--detach", help_="do not wait for the service to converge")
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
    add_bool(p, "--force", help_="restart every replica with the same spec")
    _add_spec_flags(p)
    p.add_argument("service", metavar="SERVICE")

    p = add_command(
        services,
        "rollback",
        cmd_rollback,
        "return to the previous spec",
        "swarmlet service rollback web",
    )
    add_bool(p, "-d", "--detach", help_="do not wait for the service to converge")
    p.add_argument("service", metavar="SERVICE")

    p = add_command(
        services, "scale", cmd_scale, "change replica counts", "swarmlet service scale web=5 api=2"
    )
    add_bool(p, "-d", "--detach", help_="do not wait for the services to converge")
    p.add_argument("pairs", nargs="+", metavar="SERVICE=REPLICAS")

    p = add_command(
        services, "rm", cmd_rm, "remove services", "swarmlet service rm web", aliases=("remove",)
    )
    p.add_argument("services", nargs="+", metavar="SERVICE")

    p = add_command(
        services,
        "ls",
        cmd_ls,
        "list services",
        "swarmlet service ls --format json",
        aliases=("list",),
    )
    add_ls_flags(p)

    p = add_command(services, "ps", cmd_ps, "list a service's tasks", "swarmlet service ps web")
    add_ps_flags(p)
    p.add_argument("services", nargs="+", metavar="SERVICE")

    p = add_command(
        services,
        "inspect",
        cmd_inspect,
        "show services in detail (JSON)",
        "swarmlet service inspect web",
    )
    add_inspect_format(p, "{{.spec.image}}")
    p.add_argument("services", nargs="+", metavar="SERVICE")

    p = add_command(
        services,
        "logs",
        cmd_logs,
        "print a service's logs from every node",
        "swarmlet service logs -f web",
    )
    add_bool(p, "-f", "--follow", help_="keep printing new lines")
    p.add_argument("--tail", type=int)
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.add_argument("service", metavar="SERVICE")
