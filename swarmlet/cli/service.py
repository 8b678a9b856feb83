"""`swarmlet service create|update|rollback|scale|rm|ls|ps|inspect|logs`: the commands, how
they show progress, and their flags.

`service ls --format json` and `service ps NAME --format json` are contracts: see the keys in
`swarmlet.api.services` (`service_view`, `task_view`). `create` and `update` take docker CLI 28's
flags for every field of the service model (`update` with docker's --X-add/--X-rm pairs), each
with an example in its help; docker's flags the model cannot hold (`NOT_SUPPORTED`) are parsed
and refused with their reason. Turning the flags into a ServiceSpec is `cli.service_flags`.
Commands that change services wait, unless `--detach`, until the services converge
(`wait_converged`), and exit non-zero if a rollout pauses, rolls back or cannot place its tasks.
`ls` and `ps` (and `stack services`/`stack ps`, which share them) take docker's `-q`, `--filter`
and `--format TEMPLATE` over docker's field names (`service_row`, `task_row`).
"""

from __future__ import annotations

import argparse
import os
import time

from swarmlet.cli.common import (
    BoolFlag,
    ExitStatus,
    add_bool,
    add_command,
    add_group,
    add_inspect_format,
    add_list_flags,
    call,
    labels_match,
    select,
)
from swarmlet.cli.output import human_duration, print_inspected, print_list
from swarmlet.errors import UsageError

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at run time
if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Mapping
    from typing import Any

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
    """Show progress (unless `-q`) until every named service runs its replicas, or a job has
    all its completions (and, after an update, until the rolling update completed); non-zero
    if one fails, pauses or rolls back."""
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
            if s.get("job"):  # a job is done when its run has all its completions
                completed = s["job"]["completed"]
                lines.append(f"{name}: {completed}/{s['replicas_desired']} completed")
                done = done and completed >= s["replicas_desired"]
            else:
                lines.append(f"{name}: {s['replicas_running']}/{s['replicas_desired']} running")
                done = done and s["replicas_running"] >= s["replicas_desired"]
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
        if text != last and not getattr(args, "quiet", False):
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
    result = call(
        args,
        "service.create",
        spec=wire.encode(spec),
        no_resolve_image=bool(args.no_resolve_image),
        **_registry_auth(args, spec.image),
    )
    _print_warnings(result)
    out.line(str(result["id"]))
    if args.detach:
        return ExitStatus.OK
    return wait_converged(args, out, [spec.name])


def _registry_auth(args: argparse.Namespace, image: str) -> dict[str, Any]:
    """The request's `registry_auth` argument for `--with-registry-auth` (`api.registry_auth`):
    nothing without the flag (an update keeps the service's credential)."""
    from swarmlet.cli.registry_auth import config_path, credential_for
    from swarmlet.executor.registry_auth import registry_of

    if not args.with_registry_auth:
        return {}
    credential = credential_for(image)
    if credential is None:
        raise UsageError(
            f"--with-registry-auth: no credential for {registry_of(image)} in "
            f"{config_path(os.environ)}: log in with `docker login {registry_of(image)}` "
            "(or set DOCKER_CONFIG to the directory that holds it)"
        )
    return {"registry_auth": credential.as_mapping()}


def _print_warnings(result: dict[str, Any]) -> None:
    """The agent's warnings (an image it could not pin to a digest), on standard error."""
    from swarmlet.cli.output import error

    for warning in result.get("warnings") or ():
        error(f"warning: {warning}")


def _current_spec(args: argparse.Namespace, ref: str) -> ServiceSpec:
    from swarmlet.state.model import ServiceSpec
    from swarmlet.wire import codec as wire

    spec = wire.decode(call(args, "service.spec", service=ref), expect=(ServiceSpec,))
    assert isinstance(spec, ServiceSpec)
    return spec


def cmd_update(args: argparse.Namespace, out: Output) -> ExitStatus:
    from swarmlet.cli.service_flags import rollback_conflicts, spec_from_args
    from swarmlet.wire import codec as wire

    if args.rollback:
        others = rollback_conflicts(args)
        if others:
            raise UsageError(f"other flags may not be combined with --rollback: {' '.join(others)}")
        return cmd_rollback(args, out)
    spec = spec_from_args(args, base=_current_spec(args, args.service))
    result = call(
        args,
        "service.update",
        service=args.service,
        spec=wire.encode(spec),
        no_resolve_image=bool(args.no_resolve_image),
        **_registry_auth(args, spec.image),
    )
    _print_warnings(result)
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


def replicas_text(service: dict[str, Any]) -> str:
    """docker's REPLICAS column: "running/desired"; for a job, "running/may-run (done/wanted
    completed)", where may-run is what max-concurrent lets run of what is left."""
    running, desired = service["replicas_running"], service["replicas_desired"]
    job = service.get("job")
    if not job:
        return f"{running}/{desired}"
    done = job["completed"]
    may_run = max(0, min(job["max_concurrent"] or desired, desired - done))
    return f"{running}/{may_run} ({done}/{desired} completed)"


def print_services(out: Output, services: list[dict[str, Any]]) -> None:
    rows = [
        [
            s["id"][:12],
            s["name"],
            s["mode"],
            replicas_text(s),
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
            "Replicas": replicas_text(service),
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


def cmd_logs(args: argparse.Namespace, out: Output) -> ExitStatus:
    from swarmlet.cli.service_logs import print_logs

    return print_logs(args, out)


# ---------------------------------------------------------------------------- parser

# docker's service flags that swarmlet's service model cannot hold yet: flag -> (why, the value
# that asks for what swarmlet does anyway, if any). They are parsed, and the table rides along
# in the parsed arguments (`not_supported`), so that using one is refused with its reason by
# `service_flags.refuse_unsupported` (which this module must not import), never ignored.
NOT_SUPPORTED: dict[str, tuple[str, str | None]] = {
    "--group": ("the service model has no supplementary groups", None),
    "--isolation": ("isolation modes are Windows-only", "default"),
    "--credential-spec": ("credential specs are Windows-only", None),
    "--endpoint-mode": ("services are reached through a virtual IP only (no dnsrr)", "vip"),
}
_NOT_SUPPORTED_SWITCHES: tuple[str, ...] = ()  # boolean ones (none at the moment)


def _add_not_supported(p: argparse.ArgumentParser, *, update: bool) -> None:
    p.set_defaults(not_supported=NOT_SUPPORTED)
    for flag, (reason, harmless) in NOT_SUPPORTED.items():
        text = f"not supported yet: {reason}"
        if harmless is not None:
            text += f" ({harmless}, what swarmlet does, is accepted)"
        if flag in _NOT_SUPPORTED_SWITCHES:
            p.add_argument(flag, action=BoolFlag, default=None, help=text)
        elif update and flag == "--group":
            p.add_argument("--group-add", action="append", help=text)
            p.add_argument("--group-rm", action="append", help=text)
        else:
            p.add_argument(flag, action="append", help=text)


def _add_container_flags(p: argparse.ArgumentParser, *, update: bool) -> None:
    """The container settings Swarm's ContainerSpec has beyond the command and its user: ulimits,
    logging, DNS, read-only root, TTY, process limit, generic resources. `update` takes docker's
    --X-add/--X-rm pairs for the lists."""
    lists = (
        ("--ulimit", "NAME=SOFT[:HARD]", "a ulimit (-1: unlimited)", "nofile=1024:2048", "nofile"),
        ("--dns", "IP", "a DNS server", "8.8.8.8", "8.8.8.8"),
        ("--dns-option", "OPTION", "a resolv.conf option", "ndots:2", "ndots:2"),
        ("--dns-search", "DOMAIN", "a DNS search domain", "example.com", "example.com"),
        (
            "--generic-resource",
            "KIND=COUNT",
            "a count of a generic resource each task reserves on its node (which advertises "
            "it: `swarmlet join --generic-resource`)",
            "gpu=2",
            "gpu=2",
        ),
    )
    for flag, metavar, what, example, removed in lists:
        if not update:
            p.add_argument(
                flag,
                action="append",
                metavar=metavar,
                help=f"{what} (repeatable), e.g. {flag} {example}",
            )
            continue
        p.add_argument(
            f"{flag}-add",
            action="append",
            metavar=metavar,
            help=f"add or update {what}, e.g. {flag}-add {example}",
        )
        p.add_argument(
            f"{flag}-rm",
            action="append",
            metavar=metavar.partition("=")[0],
            help=f"remove {what}, e.g. {flag}-rm {removed}",
        )
    p.add_argument(
        "--log-driver",
        metavar="DRIVER",
        help="the containers' logging driver (update: '' for the node's default), "
        "e.g. --log-driver local",
    )
    p.add_argument(
        "--log-opt",
        action="append",
        metavar="K=V",
        help="a logging driver option (update without --log-driver: added to the current "
        "ones), e.g. --log-opt max-size=10m",
    )
    p.add_argument(
        "--read-only",
        action=BoolFlag,
        default=None,
        help="mount the containers' root file system read-only, e.g. --read-only",
    )
    p.add_argument(
        "-t",
        "--tty",
        action=BoolFlag,
        default=None,
        help="allocate a pseudo-TTY, e.g. -t",
    )
    p.add_argument(
        "--limit-pids",
        type=int,
        metavar="N",
        help="processes a task may run at most (0: unlimited), e.g. --limit-pids 100",
    )


def _add_spec_flags(p: argparse.ArgumentParser, *, update: bool) -> None:
    """The flags `create` and `update` share (`service_flags.spec_from_args` reads them); on
    `update` each changes only what it names, and `=""` returns a setting to the image's."""
    p.add_argument(
        "--replicas", type=int, help="number of tasks (a job: completions), e.g. --replicas 3"
    )
    p.add_argument(
        "--max-concurrent",
        type=int,
        metavar="N",
        help="a job's tasks that run at once (default: all), e.g. --max-concurrent 2",
    )
    p.add_argument(
        "--entrypoint",
        metavar="COMMAND",
        help="overwrite the image's ENTRYPOINT, split as a shell would, e.g. "
        "--entrypoint '/bin/sh -c'",
    )
    p.add_argument("-u", "--user", help="user[:group] in the container, e.g. -u 1000:1000")
    p.add_argument("-w", "--workdir", help="working directory in the container, e.g. -w /srv")
    p.add_argument("--hostname", help="the containers' host name, e.g. --hostname web")
    p.add_argument("--stop-signal", help="signal that stops a container, e.g. SIGQUIT")
    p.add_argument(
        "--init",
        action=BoolFlag,
        default=None,
        help="run an init as PID 1 that forwards signals and reaps processes, e.g. --init",
    )
    p.add_argument(
        "--cap-add",
        action="append",
        metavar="CAP",
        help="add a Linux capability (repeatable), e.g. --cap-add NET_ADMIN",
    )
    p.add_argument(
        "--cap-drop",
        action="append",
        metavar="CAP",
        help="drop a Linux capability (repeatable), e.g. --cap-drop ALL",
    )
    p.add_argument(
        "--constraint",
        action="append",
        help="placement constraint (repeatable; on update: replaces them all), "
        "e.g. node.labels.zone==a",
    )
    p.add_argument(
        "--placement-pref",
        action="append",
        metavar="PREF",
        help="spread replicas over a node label (on update: replaces them all), "
        "e.g. spread=node.labels.zone",
    )
    p.add_argument(
        "--replicas-max-per-node",
        type=int,
        help="at most this many tasks on one node (0: no limit), e.g. 2",
    )
    p.add_argument("--reserve-cpu", help="CPUs each task needs free on its node, e.g. 0.5")
    p.add_argument("--reserve-memory", help="memory each task needs free on its node, e.g. 256M")
    p.add_argument("--limit-cpu", help="CPUs a task may use at most, e.g. 1.5")
    p.add_argument("--limit-memory", help="memory a task may use at most, e.g. 512M")
    p.add_argument(
        "--restart-condition",
        choices=("any", "on-failure", "none"),
        help="when to restart a task's container, e.g. on-failure",
    )
    p.add_argument(
        "--restart-delay",
        help="fixed delay between restarts (default: exponential back-off), e.g. 5s",
    )
    p.add_argument(
        "--restart-max-attempts",
        type=int,
        help="restarts before giving up (0: no limit), e.g. 3",
    )
    p.add_argument(
        "--restart-window", help="window in which --restart-max-attempts counts, e.g. 2m"
    )
    p.add_argument(
        "--health-cmd",
        help="command that checks health, run by a shell, e.g. 'wget -qO- localhost/health'",
    )
    timing = "(with --health-cmd, or on update to the service's own check)"
    p.add_argument("--health-interval", help=f"time between checks {timing}, e.g. 10s")
    p.add_argument("--health-timeout", help=f"time one check may take {timing}, e.g. 3s")
    p.add_argument(
        "--health-retries",
        type=int,
        help=f"failures in a row that make a task unhealthy {timing}, e.g. 3",
    )
    p.add_argument(
        "--health-start-period",
        help=f"time to start before failures count {timing}, e.g. 30s",
    )
    add_bool(
        p,
        "--no-healthcheck",
        help_="disable the image's HEALTHCHECK, e.g. --no-healthcheck",
    )
    p.add_argument(
        "--stop-grace-period",
        help="time between the stop signal and SIGKILL, e.g. 30s",
    )
    p.add_argument(
        "--rebalance",
        choices=("true", "false"),
        help="move replicas back when nodes return, e.g. --rebalance false",
    )
    for prefix, verb in (("update", "updated"), ("rollback", "rolled back")):
        actions = ("pause", "continue", "rollback") if prefix == "update" else ("pause", "continue")
        p.add_argument(
            f"--{prefix}-parallelism",
            type=int,
            help=f"tasks {verb} at once (0: all), e.g. 2",
        )
        p.add_argument(f"--{prefix}-delay", help=f"delay between batches {verb}, e.g. 10s")
        p.add_argument(
            f"--{prefix}-order",
            choices=("start-first", "stop-first"),
            help="start the new task before stopping the old one, or the reverse, e.g. start-first",
        )
        p.add_argument(
            f"--{prefix}-failure-action",
            choices=actions,
            help=f"what to do when a task {verb} fails, e.g. {actions[-1]}",
        )
        p.add_argument(
            f"--{prefix}-monitor",
            help=f"how long to watch each task {verb} for failure, e.g. 5s",
        )
        p.add_argument(
            f"--{prefix}-max-failure-ratio",
            type=float,
            help="fraction of failed tasks tolerated, e.g. 0.1",
        )
    p.add_argument(
        "--autoscale",
        metavar="POLICY",
        help="min=2,max=10,cpu=70[,memory=512M][,rps=100] per replica, or none, "
        "e.g. --autoscale min=2,max=10,cpu=70",
    )
    add_bool(
        p,
        "--no-resolve-image",
        help_="keep the image's tag as given, instead of pinning it to the digest the "
        "registry names now (images named without a registry host are never pinned), "
        "e.g. --no-resolve-image",
    )
    add_bool(
        p,
        "--with-registry-auth",
        help_="send this client's credential for the image's registry (from "
        "$DOCKER_CONFIG/config.json, as `docker login` writes it) to the nodes that pull it"
        + ("; without it, the service keeps the one it has" if update else "")
        + ", e.g. --with-registry-auth",
    )
    add_bool(p, "-d", "--detach", help_="do not wait for the service to converge, e.g. -d")
    add_bool(p, "-q", "--quiet", help_="do not print progress, e.g. -q")
    _add_container_flags(p, update=update)
    _add_not_supported(p, update=update)


def _add_create_flags(p: argparse.ArgumentParser) -> None:
    """What only `create` takes: the lists `update` changes with --X-add/--X-rm."""
    p.add_argument("--name", required=True, help="the service's name, e.g. --name web")
    p.add_argument(
        "--mode",
        choices=("replicated", "global", "replicated-job", "global-job"),
        default="replicated",
        help="replicated (--replicas tasks), global (one task per node), or a job that runs its "
        "tasks to completion: replicated-job (--replicas completions) or global-job (one per "
        "node), e.g. --mode global",
    )
    p.add_argument(
        "-p",
        "--publish",
        action="append",
        metavar="PORT",
        help="publish a port: PUBLISHED:TARGET[/tcp|udp] or published=P,target=T"
        "[,protocol=udp][,mode=host][,proxy-protocol=v1|v2], e.g. -p 8080:80",
    )
    p.add_argument(
        "-e", "--env", action="append", metavar="K=V", help="environment variable, e.g. -e A=1"
    )
    p.add_argument(
        "--env-file",
        action="append",
        metavar="FILE",
        help="read NAME=VALUE lines (a bare NAME passes this environment's value through, "
        "if set); -e wins, e.g. --env-file ./web.env",
    )
    p.add_argument(
        "-l", "--label", action="append", metavar="K=V", help="service label, e.g. -l team=web"
    )
    p.add_argument(
        "--container-label",
        action="append",
        metavar="K=V",
        help="label on the service's containers, e.g. --container-label tier=front",
    )
    p.add_argument(
        "--mount",
        action="append",
        help="type=volume|bind|tmpfs,source=S,target=/PATH[,readonly][,volume-driver=D]"
        "[,volume-opt=K=V], e.g. type=volume,source=data,target=/data",
    )
    p.add_argument(
        "--secret",
        action="append",
        help="a secret as a file in /run/secrets: NAME, or source=NAME,target=FILE[,uid=U]"
        "[,gid=G][,mode=0400], e.g. --secret source=db_pw,target=password",
    )
    p.add_argument(
        "--config",
        action="append",
        help="a config as a file: NAME, or source=NAME,target=/PATH[,mode=0444], "
        "e.g. --config source=nginx_conf,target=/etc/nginx/nginx.conf",
    )
    p.add_argument(
        "--network",
        action="append",
        help="a network to join (swarmlet makes it on each node), NAME or name=NAME,alias=A, "
        "e.g. --network back",
    )
    p.add_argument(
        "--host",
        action="append",
        metavar="HOST:IP",
        help="an /etc/hosts entry, e.g. --host db:10.0.0.5",
    )
    p.add_argument(
        "--sysctl",
        action="append",
        metavar="K=V",
        help="a namespaced kernel parameter, e.g. --sysctl net.core.somaxconn=1024",
    )


def _add_update_flags(p: argparse.ArgumentParser) -> None:
    """What only `update` takes: the image, the command, and docker's --X-add/--X-rm pairs
    (removals apply first, then additions, so --X-rm A --X-add A replaces A)."""
    p.add_argument("--image", help="the new image, e.g. --image swarmlet/web:2")
    p.add_argument(
        "--args",
        metavar="COMMAND",
        help="the command's arguments, split as a shell would ('' for the image's CMD), "
        "e.g. --args 'httpd -f -p 80'",
    )
    # (flag, metavar, help): each pair of docker's --X-add/--X-rm, in docker's order
    pairs = (
        ("--env-add", "K=V", "add or update an environment variable, e.g. --env-add A=1"),
        ("--env-rm", "K", "remove an environment variable, e.g. --env-rm A"),
        ("--label-add", "K=V", "add or update a service label, e.g. --label-add team=web"),
        ("--label-rm", "K", "remove a service label, e.g. --label-rm team"),
        (
            "--container-label-add",
            "K=V",
            "add or update a container label, e.g. --container-label-add tier=front",
        ),
        ("--container-label-rm", "K", "remove a container label, e.g. --container-label-rm tier"),
        (
            "--secret-add",
            "SECRET",
            "add a secret, or replace the one at its target, "
            "e.g. --secret-add source=db_pw_v2,target=db_pw",
        ),
        ("--secret-rm", "NAME", "remove a secret by its name, e.g. --secret-rm db_pw_v1"),
        (
            "--config-add",
            "CONFIG",
            "add a config, or replace the one at its target, "
            "e.g. --config-add source=nginx_v2,target=/etc/nginx/nginx.conf",
        ),
        ("--config-rm", "NAME", "remove a config by its name, e.g. --config-rm nginx_v1"),
        (
            "--mount-add",
            "MOUNT",
            "add a mount, or replace the one at its target, "
            "e.g. --mount-add type=volume,source=data,target=/data",
        ),
        ("--mount-rm", "TARGET", "remove a mount by its target path, e.g. --mount-rm /data"),
        (
            "--publish-add",
            "PORT",
            "publish a port, or replace the one at its published port, e.g. --publish-add 8080:80",
        ),
        (
            "--publish-rm",
            "PORT",
            "remove a published port by its TARGET port (80, 80/udp, 8080:80 or "
            "published=8080,target=80), e.g. --publish-rm 80/tcp",
        ),
        ("--network-add", "NETWORK", "join a network, e.g. --network-add name=back,alias=api"),
        ("--network-rm", "NAME", "leave a network, e.g. --network-rm back"),
        (
            "--constraint-add",
            "CONSTRAINT",
            "add a placement constraint, e.g. --constraint-add node.labels.zone==a",
        ),
        (
            "--constraint-rm",
            "CONSTRAINT",
            "remove a placement constraint, e.g. --constraint-rm node.labels.zone==a",
        ),
        (
            "--placement-pref-add",
            "PREF",
            "add a placement preference, e.g. --placement-pref-add spread=node.labels.zone",
        ),
        (
            "--placement-pref-rm",
            "PREF",
            "remove a placement preference, e.g. --placement-pref-rm spread=node.labels.zone",
        ),
        ("--host-add", "HOST:IP", "add an /etc/hosts entry, e.g. --host-add db:10.0.0.5"),
        (
            "--host-rm",
            "HOST[:IP]",
            "remove a host's /etc/hosts entries, or that one entry, e.g. --host-rm db",
        ),
        (
            "--sysctl-add",
            "K=V",
            "add or update a sysctl, e.g. --sysctl-add net.core.somaxconn=1024",
        ),
        ("--sysctl-rm", "K", "remove a sysctl, e.g. --sysctl-rm net.core.somaxconn"),
    )
    for flag, metavar, help_ in pairs:
        p.add_argument(flag, action="append", metavar=metavar, help=help_)
    add_bool(p, "--force", help_="restart every replica with the same spec, e.g. --force")
    add_bool(
        p,
        "--rollback",
        help_="return to the previous spec (as `service rollback`), e.g. --rollback",
    )


def register(sub: Subcommands) -> None:
    services = add_group(sub, "service", "manage services", dest="service_command")

    p = add_command(
        services,
        "create",
        cmd_create,
        "create a service",
        "swarmlet service create --name web --replicas 3 -p 8080:80 swarmlet/web:1\n"
        "  swarmlet service create --name api --secret source=db_pw,target=password "
        "--network back --env-file api.env -u 1000 swarmlet/api:1 serve --port 80",
    )
    _add_create_flags(p)
    _add_spec_flags(p, update=False)
    p.add_argument("image", metavar="IMAGE")
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="COMMAND ARG...")

    p = add_command(
        services,
        "update",
        cmd_update,
        "change a service (rolling update)",
        "swarmlet service update --image swarmlet/web:2 --update-order start-first web\n"
        "  swarmlet service update --secret-rm db_pw --secret-add source=db_pw_v2,target=db_pw "
        "web\n"
        "  swarmlet service update --publish-rm 80/tcp --publish-add 9090:80 web",
    )
    _add_update_flags(p)
    _add_spec_flags(p, update=True)
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
        "print the logs of services or tasks from every node",
        "swarmlet service logs -f -t --since 10m web",
    )
    add_bool(p, "-f", "--follow", help_="keep printing new lines, of replicas started later too")
    add_bool(p, "-t", "--timestamps", help_="show Docker's timestamps (merged lines sort by them)")
    p.add_argument(
        "-n",
        "--tail",
        default="all",
        metavar="N|all",
        help="lines from the end of each task's log (default: all)",
    )
    p.add_argument(
        "--since",
        metavar="TIME",
        help="only lines since a time (2026-12-03T08:25:03Z, Unix seconds) or for a while (10m)",
    )
    add_bool(p, "--raw", help_="no prefix before the lines")
    add_bool(
        p,
        "--details",
        help_="each line's extra attributes from the logging driver (the labels and env "
        "variables --log-opt labels=/env= name), as docker prints them",
    )
    add_bool(p, "--no-task-ids", help_="no task ids in the prefix")
    add_bool(p, "--no-trunc", help_="full task ids in the prefix")
    add_bool(p, "--no-resolve", help_="service and node ids instead of names in the prefix")
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.add_argument("targets", nargs="+", metavar="SERVICE|TASK")
