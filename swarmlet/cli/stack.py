"""`swarmlet stack ...`: deploy compose-like stack files, list, inspect and remove stacks.

Loading, interpolation, validation and conversion all happen here, before anything is sent:
a stack that fails to load changes nothing in the cluster. The stack loader is heavy to import,
so only the commands that read stack files load it. `-c -` reads a stack file from standard
input, as docker does: its relative paths (and `.env`) are the working directory's.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from swarmlet.cli.common import (
    ExitStatus,
    add_bool,
    add_command,
    add_group,
    add_list_flags,
    call,
)
from swarmlet.cli.output import error, print_list
from swarmlet.cli.service import (
    add_ls_flags,
    add_ps_flags,
    list_services,
    list_tasks,
    wait_converged,
)
from swarmlet.errors import StackError, UsageError

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at run time
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Any

    from swarmlet.cli.common import Subcommands
    from swarmlet.cli.gotemplate import Record
    from swarmlet.cli.output import Output
    from swarmlet.stack.convert import StackPlan
    from swarmlet.stack.loader import LoadedStack
    from swarmlet.state.model import ServiceSpec


STDIN = "-"


def _load(args: argparse.Namespace) -> LoadedStack:
    from swarmlet.stack import load_stack

    names: list[str] = args.compose_file
    if names.count(STDIN) > 1:
        raise StackError(STDIN, "", "standard input can be read once only")
    for name in names:
        if name != STDIN and not Path(name).exists():
            raise StackError(name, "", "no such file")
    if STDIN not in names:
        return load_stack([Path(n) for n in names], dict(os.environ))
    # The loader reads files, and resolves `.env` and `env_file` beside the file: a stack from
    # standard input is read from a hidden file in the working directory, gone once loaded,
    # and its errors name `-`.
    text = sys.stdin.read()
    try:
        with tempfile.NamedTemporaryFile(
            "w", encoding="utf-8", dir=".", prefix=".swarmlet-stdin-", suffix=".yml"
        ) as copy:
            copy.write(text)
            copy.flush()
            stdin_path = Path(copy.name)
            try:
                return load_stack(
                    [stdin_path if n == STDIN else Path(n) for n in names], dict(os.environ)
                )
            except StackError as exc:
                if Path(exc.file) == stdin_path:
                    raise StackError(STDIN, exc.path, exc.message) from None
                raise
    except OSError as exc:
        raise StackError(
            STDIN, "", f"cannot read a stack from standard input here: {exc.strerror or exc}"
        ) from None


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


def _registry_auth(args: argparse.Namespace, specs: Sequence[ServiceSpec]) -> dict[str, Any]:
    """`--with-registry-auth`: this client's credential for each service's image (None where it
    has none, which docker sends as an empty credential); nothing without the flag."""
    from swarmlet.cli.registry_auth import credential_for

    if not args.with_registry_auth:
        return {}
    found = [credential_for(spec.image) for spec in specs]
    return {"registry_auth": [c.as_mapping() if c is not None else None for c in found]}


def cmd_deploy(args: argparse.Namespace, out: Output) -> ExitStatus:
    from swarmlet.wire import codec as wire

    if args.resolve_image == "changed":
        raise UsageError(
            "--resolve-image changed: not supported: swarmlet resolves every service's tag "
            "(always) or none (never)"
        )
    plan = _plan(args)
    result = call(
        args,
        "stack.deploy",
        name=args.name,
        services=[wire.encode(spec) for spec in plan.services],
        secrets=_secret_payloads(plan),
        prune=args.prune,
        no_resolve_image=args.resolve_image == "never",
        **_registry_auth(args, plan.services),
    )
    for warning in result.get("warnings") or ():
        error(f"warning: {warning}")
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


# `docker stack ls` columns: field -> header (docker CLI 28, cli/command/stack/formatter).
STACK_HEADERS = {"Name": "NAME", "Services": "SERVICES"}


def docker_row(stack: dict[str, Any]) -> Record:
    from swarmlet.cli.gotemplate import Record

    # docker's Services is the count as a string.
    return Record(
        "*formatter.stackContext", {"Name": stack["name"], "Services": str(stack["services"])}
    )


def cmd_ls(args: argparse.Namespace, out: Output) -> ExitStatus:
    stacks = call(args, "stack.ls")["stacks"]

    def rows() -> tuple[Mapping[str, str], list[Record]]:
        return STACK_HEADERS, [docker_row(s) for s in stacks]

    print_list(
        out,
        args.format,
        args.quiet,
        table=lambda: out.table(
            ("NAME", "SERVICES"),
            [[s["name"], str(s["services"])] for s in stacks],
            wrap=("NAME", "SERVICES"),
        ),
        as_json=lambda: stacks,
        ids=lambda: [s["name"] for s in stacks],  # stacks have no IDs: their names
        rows=rows,
    )
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


COMPOSE_HELP = "a stack file (repeatable; - reads standard input)"


def register(sub: Subcommands) -> None:
    stacks = add_group(sub, "stack", "manage stacks", dest="stack_command")

    p = add_command(
        stacks,
        "deploy",
        cmd_deploy,
        "deploy or update a stack",
        "swarmlet stack deploy -c stacks/web.yml web\n"
        "  swarmlet stack up -c - web < stacks/web.yml\n"
        "  swarmlet stack deploy --detach=false -c stacks/web.yml web",
        aliases=("up",),
    )
    p.add_argument(
        "-c", "--compose-file", action="append", required=True, metavar="FILE", help=COMPOSE_HELP
    )
    add_bool(p, "--prune", help_="remove services no longer in the files")
    p.add_argument(
        "--resolve-image",
        choices=("always", "changed", "never"),
        default="always",
        help="pin each image's tag to its digest through its registry (always) or keep the "
        "tags (never), e.g. --resolve-image never",
    )
    add_bool(
        p,
        "--with-registry-auth",
        help_="send this client's credential for each image's registry (from "
        "$DOCKER_CONFIG/config.json) to the nodes that pull it; without it, services keep "
        "theirs",
    )
    add_bool(p, "-d", "--detach", help_="do not wait for the services to converge")
    p.add_argument("name", metavar="STACK")

    p = add_command(
        stacks,
        "config",
        cmd_config,
        "print the normalised stack document",
        "swarmlet stack config -c stacks/web.yml",
    )
    p.add_argument(
        "-c", "--compose-file", action="append", required=True, metavar="FILE", help=COMPOSE_HELP
    )
    p.add_argument("--format", choices=("yaml", "json"), default="yaml")

    p = add_command(stacks, "ls", cmd_ls, "list stacks", "swarmlet stack ls", aliases=("list",))
    add_list_flags(p, example="{{.Name}}\\t{{.Services}}", quiet="only display names")

    p = add_command(stacks, "ps", cmd_ps, "list a stack's tasks", "swarmlet stack ps web")
    add_ps_flags(p)
    p.add_argument("name", metavar="STACK")

    p = add_command(
        stacks, "services", cmd_services, "list a stack's services", "swarmlet stack services web"
    )
    add_ls_flags(p, operand="web")
    p.add_argument("name", metavar="STACK")

    p = add_command(
        stacks, "rm", cmd_rm, "remove stacks", "swarmlet stack rm web", aliases=("remove", "down")
    )
    p.add_argument("names", nargs="+", metavar="STACK")
