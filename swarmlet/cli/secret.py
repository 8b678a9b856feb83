"""`swarmlet secret ...` and `swarmlet config ...`: create, list, inspect, remove."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from swarmlet.cli.common import (
    ExitStatus,
    add_command,
    add_group,
    call,
)
from swarmlet.errors import UsageError

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at run time
if TYPE_CHECKING:
    from swarmlet.cli.common import Command, Subcommands
    from swarmlet.cli.output import Output


def _kind(is_config: bool) -> str:
    return "config" if is_config else "secret"


def _create(is_config: bool) -> Command:
    def run(args: argparse.Namespace, out: Output) -> ExitStatus:
        if args.file == "-":
            data = sys.stdin.buffer.read()
        else:
            try:
                data = Path(args.file).read_bytes()
            except OSError as exc:
                raise UsageError(f"cannot read {args.file}: {exc.strerror or exc}") from None
        from swarmlet.state.specparse import parse_key_value

        labels = dict(parse_key_value(text, "--label") for text in args.label or ())
        result = call(
            args, "secret.create", name=args.name, data=data, labels=labels, is_config=is_config
        )
        out.line(str(result["id"]))
        return ExitStatus.OK

    return run


def _ls(is_config: bool) -> Command:
    def run(args: argparse.Namespace, out: Output) -> ExitStatus:
        items = call(args, "secret.ls", is_config=is_config)
        if args.format == "json":
            out.json(items)
            return ExitStatus.OK
        rows = [
            [item["id"][:12], item["name"], str(item["size_bytes"]), ", ".join(item["services"])]
            for item in items
        ]
        out.table(("ID", "NAME", "SIZE", "USED BY"), rows)
        return ExitStatus.OK

    return run


def _inspect(is_config: bool) -> Command:
    def run(args: argparse.Namespace, out: Output) -> ExitStatus:
        out.json([call(args, "secret.inspect", name=n, is_config=is_config) for n in args.names])
        return ExitStatus.OK

    return run


def _rm(is_config: bool) -> Command:
    def run(args: argparse.Namespace, out: Output) -> ExitStatus:
        for name in args.names:
            out.line(str(call(args, "secret.rm", name=name, is_config=is_config)["removed"]))
        return ExitStatus.OK

    return run


def register(sub: Subcommands) -> None:
    for is_config in (False, True):
        kind = _kind(is_config)
        kind_commands = add_group(sub, kind, f"manage {kind}s", dest=f"{kind}_command")
        p = add_command(
            kind_commands,
            "create",
            _create(is_config),
            f"create a {kind} from a file or stdin",
            f"printf s3cret | swarmlet {kind} create db_password -",
        )
        p.add_argument("--label", action="append", metavar="k=v")
        p.add_argument("name", metavar="NAME")
        p.add_argument("file", metavar="FILE|-")
        p = add_command(kind_commands, "ls", _ls(is_config), f"list {kind}s", f"swarmlet {kind} ls")
        p.add_argument("--format", choices=("table", "json"), default="table")
        p = add_command(
            kind_commands,
            "inspect",
            _inspect(is_config),
            f"show {kind}s" + (" (never the value)" if not is_config else ""),
            f"swarmlet {kind} inspect NAME",
        )
        p.add_argument("names", nargs="+", metavar="NAME")
        p = add_command(
            kind_commands,
            "rm",
            _rm(is_config),
            f"remove {kind}s (refused while in use)",
            f"swarmlet {kind} rm NAME",
        )
        p.add_argument("names", nargs="+", metavar="NAME")
