"""`swarmlet stack ...`: deploy compose-like stack files, list, inspect and remove stacks.

Loading, interpolation, validation and conversion all happen here, before anything is sent:
a stack that fails to load changes nothing in the cluster. The stack loader is heavy to import,
so only the commands that read stack files load it.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from swarmlet.cli.common import (
    ExitStatus,
    add_command,
    add_group,
    call,
)
from swarmlet.cli.output import error
from swarmlet.cli.service import list_services, list_tasks, wait_converged
from swarmlet.errors import StackError

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at run time
if TYPE_CHECKING:
    from typing import Any

    from swarmlet.cli.common import Subcommands
    from swarmlet.cli.output import Output
    from swarmlet.stack.convert import StackPlan
    from swarmlet.stack.loader import LoadedStack


def _load(args: argparse.Namespace) -> LoadedStack:
    from swarmlet.stack import load_stack

    files = [Path(f) for f in args.compose_file]
    for f in files:
        if not f.exists():
            raise StackError(str(f), "", "no such file")
    return load_stack(files, dict(os.environ))


def _plan(args: argparse.Namespace) -> StackPlan:
    from swarmlet.stack.convert import convert_stack

    loaded = _load(args)
    plan = convert_stack(args.name, loaded, file=args.compose_file[0])
    for warning in plan.warnings:
        error(warning)
    return plan


def _secret_payloads(plan: StackPlan) -> list[dict[str, Any]]:
    payloads = []
    for items, is_config in ((plan.secrets, False), (plan.configs, True)):
        for item in items:
            if item.external:
                continue
            path = Path(item.file)
            try:
                data = path.read_bytes()
            except OSError as exc:
                kind = "configs" if is_config else "secrets"
                raise StackError(
                    str(path), f"{kind}.{item.key}.file", f"cannot read: {exc.strerror or exc}"
                ) from None
            payloads.append({"name": item.name, "data": data, "is_config": is_config})
    return payloads


def cmd_deploy(args: argparse.Namespace, out: Output) -> ExitStatus:
    from swarmlet.wire import codec as wire

    plan = _plan(args)
    result = call(
        args,
        "stack.deploy",
        name=args.name,
        services=[wire.encode(spec) for spec in plan.services],
        secrets=_secret_payloads(plan),
        prune=args.prune,
    )
    for key, verb in (("created", "Creating"), ("updated", "Updating"), ("removed", "Removing")):
        for name in result[key]:
            out.line(f"{verb} service {name}")
    if args.detach or not (result["created"] or result["updated"]):
        return ExitStatus.OK
    return wait_converged(args, out, [s.name for s in plan.services])


def cmd_config(args: argparse.Namespace, out: Output) -> ExitStatus:
    from swarmlet.stack import render_config

    loaded = _load(args)
    for warning in loaded.warnings:
        error(warning)
    out.write(render_config(loaded.config, args.format))
    return ExitStatus.OK


def cmd_ls(args: argparse.Namespace, out: Output) -> ExitStatus:
    stacks = call(args, "stack.ls")["stacks"]
    if args.format == "json":
        out.json(stacks)
        return ExitStatus.OK
    rows = [[s["name"], str(s["services"])] for s in stacks]
    out.table(("NAME", "SERVICES"), rows, wrap=("NAME", "SERVICES"))
    return ExitStatus.OK


def cmd_ps(args: argparse.Namespace, out: Output) -> ExitStatus:
    return list_tasks(args, out, stack=args.name)


def cmd_services(args: argparse.Namespace, out: Output) -> ExitStatus:
    return list_services(args, out, stack=args.name)


def cmd_rm(args: argparse.Namespace, out: Output) -> ExitStatus:
    for name in args.names:
        result = call(args, "stack.rm", name=name)
        for service in result["removed_services"]:
            out.line(f"Removing service {service}")
        for secret in result["removed_secrets"]:
            out.line(f"Removing secret {secret}")
    return ExitStatus.OK


def register(sub: Subcommands) -> None:
    stacks = add_group(sub, "stack", "manage stacks", dest="stack_command")

    p = add_command(
        stacks,
        "deploy",
        cmd_deploy,
        "deploy or update a stack",
        "swarmlet stack deploy -c stacks/web.yml web",
    )
    p.add_argument("-c", "--compose-file", action="append", required=True, metavar="FILE")
    p.add_argument("--prune", action="store_true", help="remove services no longer in the files")
    p.add_argument(
        "-d", "--detach", action="store_true", help="do not wait for the services to converge"
    )
    p.add_argument("name", metavar="STACK")

    p = add_command(
        stacks,
        "config",
        cmd_config,
        "print the normalised stack document",
        "swarmlet stack config -c stacks/web.yml",
    )
    p.add_argument("-c", "--compose-file", action="append", required=True, metavar="FILE")
    p.add_argument("--format", choices=("yaml", "json"), default="yaml")

    p = add_command(stacks, "ls", cmd_ls, "list stacks", "swarmlet stack ls")
    p.add_argument("--format", choices=("table", "json"), default="table")

    p = add_command(stacks, "ps", cmd_ps, "list a stack's tasks", "swarmlet stack ps web")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.add_argument("name", metavar="STACK")

    p = add_command(
        stacks, "services", cmd_services, "list a stack's services", "swarmlet stack services web"
    )
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.add_argument("name", metavar="STACK")

    p = add_command(stacks, "rm", cmd_rm, "remove stacks", "swarmlet stack rm web")
    p.add_argument("names", nargs="+", metavar="STACK")
