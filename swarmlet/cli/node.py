"""`swarmlet node ls|ps|inspect|update|promote|demote|rm`: the cluster's nodes.

`node ls --format json` is a contract: the keys of `swarmlet.api.nodes.Control.node_view`.
The table adds what a person needs at a glance: which node answers (`*`), the leader, and a
manager that is down (`Unreachable`) or a standby that holds no vote (`(standby)`).
`-q`, `--filter` and `--format TEMPLATE` follow `docker node ls` (`docker_row`: docker's fields).
A node is named by ID, unique ID prefix or hostname, or `self` (the node of the agent asked),
as docker names them.
"""

from __future__ import annotations

import argparse

from swarmlet.cli.common import (
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
from swarmlet.cli.output import print_inspected, print_list
from swarmlet.errors import UsageError

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at run time
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import Any

    from swarmlet.cli.common import Command, Subcommands
    from swarmlet.cli.gotemplate import Record
    from swarmlet.cli.output import Cell, Output

NODE_COLUMNS = (
    "ID",
    "HOSTNAME",
    "ADDRESS",
    "STATUS",
    "AVAILABILITY",
    "MANAGER STATUS",
    "CPUS",
    "MEMORY",
    "TASKS",
)


def format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def manager_status(node: dict[str, Any], *, standby: bool = True) -> str:
    """The MANAGER STATUS column: Leader, Reachable or Unreachable, for managers only; a
    standby marked so (swarmlet's table: docker's field has docker's three words only)."""
    if node["role"] != "manager":
        return ""
    if node["leader"]:
        status = "Leader"
    else:
        status = "Reachable" if node["status"] == "ready" else "Unreachable"
    if standby and node["raft"] == "learner":
        status += " (standby)"
    return status


# `docker node ls` columns: field -> header (docker CLI 28, cli/command/node/formatter.go).
DOCKER_HEADERS = {
    "ID": "ID",
    "Self": "",
    "Hostname": "HOSTNAME",
    "Status": "STATUS",
    "Availability": "AVAILABILITY",
    "ManagerStatus": "MANAGER STATUS",
    "EngineVersion": "ENGINE VERSION",
    "TLSStatus": "TLS STATUS",
}


def docker_row(node: dict[str, Any]) -> Record:
    """A node under `docker node ls`'s field names. EngineVersion and TLSStatus are empty:
    the control API does not report them."""
    from swarmlet.cli.gotemplate import Record

    return Record(
        "*node.nodeContext",
        {
            "ID": node["id"],
            "Self": node["self"],
            "Hostname": node["hostname"],
            "Status": node["status"].capitalize(),
            "Availability": node["availability"].capitalize(),
            "ManagerStatus": manager_status(node, standby=False),
            "EngineVersion": "",
            "TLSStatus": "",
        },
    )


# `docker node ls --filter` keys -> the values they take (() for any).
FILTERS: dict[str, tuple[str, ...]] = {
    "id": (),
    "label": (),
    "membership": ("accepted", "pending"),
    "name": (),
    "node.label": (),
    "role": ("manager", "worker"),
}
MATCHERS: Mapping[str, Callable[[dict[str, Any], str], bool]] = {
    "id": lambda n, v: n["id"].startswith(v),
    # Nodes have one set of labels here (docker's `node.label`); `label` (docker's engine
    # labels) reads the same.
    "label": lambda n, v: labels_match(n["labels"], v),
    "node.label": lambda n, v: labels_match(n["labels"], v),
    # Every node listed is a member: swarmlet has no pending nodes (joining is the handshake).
    "membership": lambda n, v: v == "accepted",
    "name": lambda n, v: n["hostname"].startswith(v),
    "role": lambda n, v: n["role"] == v,
}


def cmd_ls(args: argparse.Namespace, out: Output) -> ExitStatus:
    result = call(args, "node.ls")
    nodes = select(result["nodes"], args.filter, MATCHERS)
    print_list(
        out,
        args.format,
        args.quiet,
        table=lambda: _print_table(out, nodes),
        as_json=lambda: nodes,
        ids=lambda: [n["id"] for n in nodes],
        rows=lambda: (DOCKER_HEADERS, [docker_row(n) for n in nodes]),
    )
    if args.format == "table" and not args.quiet and result.get("stale"):
        out.line(
            "warning: no leader answered; this is this node's last known state", style="yellow"
        )
    return ExitStatus.OK


def _print_table(out: Output, nodes: list[dict[str, Any]]) -> None:
    rows: list[list[Cell]] = []
    for n in nodes:
        status = n["status"].capitalize()
        rows.append(
            [
                n["id"][:12] + (" *" if n["self"] else ""),
                n["hostname"],
                n["addr"],
                ((status, "red"),) if n["status"] == "down" else status,
                n["availability"].capitalize(),
                manager_status(n),
                f"{n['cpus']:g}",
                format_bytes(n["memory_bytes"]),
                "-" if n["tasks"] is None else str(n["tasks"]),  # a worker knows its own only
            ]
        )
    out.table(NODE_COLUMNS, rows)


SELF = "self"  # docker's name for the node the command's agent runs on

# `docker node ps --filter` keys this command takes (docker's `label` aside: tasks carry none).
PS_FILTERS: dict[str, tuple[str, ...]] = {
    "desired-state": ("running", "shutdown", "accepted"),
    "id": (),
    "name": (),
}


def node_id(nodes: list[dict[str, Any]], ref: str) -> str:
    """The ID of the node `ref` names among `nodes` (from `node.ls`): `self`, an ID, a
    hostname, or an ID prefix that only one node has."""
    if ref == SELF:
        matches = [n for n in nodes if n["self"]]
    else:
        matches = [n for n in nodes if ref in (n["id"], n["hostname"])]
        matches = matches or [n for n in nodes if n["id"].startswith(ref)]
    if len(matches) != 1:
        raise UsageError(
            f"no such node: {ref}" if not matches else f"node {ref} is ambiguous (an ID prefix)"
        )
    return str(matches[0]["id"])


def resolve_self(args: argparse.Namespace, refs: list[str]) -> list[str]:
    """`refs` with `self` as the ID of this agent's node (one more request, only then)."""
    if SELF not in refs:
        return refs
    nodes = call(args, "node.ls")["nodes"]
    return [node_id(nodes, SELF) if ref == SELF else ref for ref in refs]


def cmd_ps(args: argparse.Namespace, out: Output) -> ExitStatus:
    from swarmlet.cli.service import list_tasks

    nodes = call(args, "node.ls")["nodes"]
    ids = {node_id(nodes, ref) for ref in args.nodes or [SELF]}
    return list_tasks(args, out, nodes=ids)


def cmd_inspect(args: argparse.Namespace, out: Output) -> ExitStatus:
    refs = resolve_self(args, args.nodes)
    results = [call(args, "node.inspect", node=ref) for ref in refs]
    print_inspected(out, args.format, results)
    return ExitStatus.OK


def cmd_update(args: argparse.Namespace, out: Output) -> ExitStatus:
    (ref,) = resolve_self(args, [args.node])
    changes = args.availability is not None or args.label_add or args.label_rm
    if changes or args.role is None:
        call(
            args,
            "node.update",
            node=ref,
            availability=args.availability,
            label_add=args.label_add or [],
            label_rm=args.label_rm or [],
        )
    if args.role is not None:
        call(args, "node.role", node=ref, role=args.role)
    out.line(args.node)
    return ExitStatus.OK


def _set_role(role: str) -> Command:
    def run(args: argparse.Namespace, out: Output) -> ExitStatus:
        for ref in resolve_self(args, args.nodes):
            view = call(args, "node.role", node=ref, role=role)
            out.line(f"Node {view['hostname']} is now a {role}.")
        return ExitStatus.OK

    return run


def cmd_rm(args: argparse.Namespace, out: Output) -> ExitStatus:
    for ref in args.nodes:
        call(args, "node.rm", node=ref, force=args.force)
        out.line(ref)
    return ExitStatus.OK


# ---------------------------------------------------------------------------- parser


def register(sub: Subcommands) -> None:
    nodes = add_group(sub, "node", "manage nodes", dest="node_command")
    p = add_command(
        nodes, "ls", cmd_ls, "list nodes", "swarmlet node ls --format json", aliases=("list",)
    )
    add_list_flags(
        p, example="{{.Hostname}}\\t{{.Status}}", filters=FILTERS, filter_example="role=manager"
    )
    p = add_command(
        nodes, "inspect", cmd_inspect, "show a node in detail (JSON)", "swarmlet node inspect n1"
    )
    add_inspect_format(p, "{{.hostname}} {{.status}}")
    p.add_argument("nodes", nargs="+", metavar="NODE", help="a node, or self")
    p = add_command(
        nodes,
        "ps",
        cmd_ps,
        "list the tasks of nodes (this agent's node by default)",
        "swarmlet node ps n2",
    )
    add_list_flags(
        p,
        example="{{.Name}}\\t{{.CurrentState}}",
        filters=PS_FILTERS,
        filter_example="desired-state=running",
        quiet="only display task IDs",
        operand="self",
    )
    add_bool(p, "--no-trunc", help_="do not truncate task IDs and errors")
    p.add_argument("nodes", nargs="*", metavar="NODE", help="a node, or self (the default)")
    p = add_command(
        nodes,
        "update",
        cmd_update,
        "change a node's availability, labels or role",
        "swarmlet node update --availability drain --label-add zone=a n2\n"
        "  swarmlet node update --role manager n2",
    )
    p.add_argument("--availability", choices=("active", "pause", "drain"))
    p.add_argument(
        "--role", choices=("manager", "worker"), help="promote or demote (as `node promote`)"
    )
    p.add_argument("--label-add", action="append", metavar="KEY=VALUE")
    p.add_argument("--label-rm", action="append", metavar="KEY")
    p.add_argument("node", metavar="NODE")
    p = add_command(
        nodes, "promote", _set_role("manager"), "make nodes managers", "swarmlet node promote n2"
    )
    p.add_argument("nodes", nargs="+", metavar="NODE")
    p = add_command(
        nodes, "demote", _set_role("worker"), "make nodes workers", "swarmlet node demote n2"
    )
    p.add_argument("nodes", nargs="+", metavar="NODE")
    p = add_command(
        nodes,
        "rm",
        cmd_rm,
        "remove nodes from the cluster",
        "swarmlet node rm --force n3",
        aliases=("remove",),
    )
    add_bool(p, "-f", "--force", help_="remove even if the node is not down")
    p.add_argument("nodes", nargs="+", metavar="NODE")
