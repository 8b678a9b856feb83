"""`swarmlet node ls|inspect|update|promote|demote|rm`: the cluster's nodes.

`node ls --format json` is a contract: the keys of `swarmlet.api.nodes.Control.node_view`.
The table adds what a person needs at a glance: which node answers (`*`), the leader, and a
manager that is down (`Unreachable`) or a standby that holds no vote (`(standby)`).
"""

from __future__ import annotations

import argparse

from swarmlet.cli.common import (
    ExitStatus,
    add_command,
    add_format,
    add_group,
    call,
)

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at run time
if TYPE_CHECKING:
    from typing import Any

    from swarmlet.cli.common import Command, Subcommands
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


def manager_status(node: dict[str, Any]) -> str:
    """The MANAGER STATUS column: Leader, Reachable or Unreachable, for managers only."""
    if node["role"] != "manager":
        return ""
    if node["leader"]:
        status = "Leader"
    else:
        status = "Reachable" if node["status"] == "ready" else "Unreachable"
    if node["raft"] == "learner":
        status += " (standby)"
    return status


def cmd_ls(args: argparse.Namespace, out: Output) -> ExitStatus:
    result = call(args, "node.ls")
    nodes = result["nodes"]
    if args.format == "json":
        out.json(nodes)
        return ExitStatus.OK
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
                str(n["tasks"]),
            ]
        )
    out.table(NODE_COLUMNS, rows)
    if result.get("stale"):
        out.line(
            "warning: no leader answered; this is this node's last known state", style="yellow"
        )
    return ExitStatus.OK


def cmd_inspect(args: argparse.Namespace, out: Output) -> ExitStatus:
    results = [call(args, "node.inspect", node=ref) for ref in args.nodes]
    out.json(results)
    return ExitStatus.OK


def cmd_update(args: argparse.Namespace, out: Output) -> ExitStatus:
    call(
        args,
        "node.update",
        node=args.node,
        availability=args.availability,
        label_add=args.label_add or [],
        label_rm=args.label_rm or [],
    )
    out.line(args.node)
    return ExitStatus.OK


def _set_role(role: str) -> Command:
    def run(args: argparse.Namespace, out: Output) -> ExitStatus:
        for ref in args.nodes:
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
    p = add_command(nodes, "ls", cmd_ls, "list nodes", "swarmlet node ls --format json")
    add_format(p)
    p = add_command(
        nodes, "inspect", cmd_inspect, "show a node in detail (JSON)", "swarmlet node inspect n1"
    )
    p.add_argument("nodes", nargs="+", metavar="NODE")
    p = add_command(
        nodes,
        "update",
        cmd_update,
        "change a node's availability or labels",
        "swarmlet node update --availability drain --label-add zone=a n2",
    )
    p.add_argument("--availability", choices=("active", "pause", "drain"))
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
        nodes, "rm", cmd_rm, "remove nodes from the cluster", "swarmlet node rm --force n3"
    )
    p.add_argument("--force", action="store_true", help="remove even if the node is not down")
    p.add_argument("nodes", nargs="+", metavar="NODE")
