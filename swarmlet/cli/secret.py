"""`swarmlet secret ...` and `swarmlet config ...`: create, list, inspect, remove."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from swarmlet.cli.main import EXIT_OK, _print_json, call
from swarmlet.errors import UsageError
from swarmlet.state.specparse import parse_key_value


def _kind(is_config: bool) -> str:
    return "config" if is_config else "secret"


def _create(is_config: bool) -> Any:
    def run(args: argparse.Namespace, console: Console) -> int:
        if args.file == "-":
            data = sys.stdin.buffer.read()
        else:
            try:
                data = Path(args.file).read_bytes()
            except OSError as exc:
                raise UsageError(f"cannot read {args.file}: {exc.strerror or exc}") from None
        labels = dict(parse_key_value(text, "--label") for text in args.label or ())
        result = call(
            args, "secret.create", name=args.name, data=data, labels=labels, is_config=is_config
        )
        console.print(result["id"], markup=False)
        return EXIT_OK

    return run


def _ls(is_config: bool) -> Any:
    def run(args: argparse.Namespace, console: Console) -> int:
        items = call(args, "secret.ls", is_config=is_config)
        if args.format == "json":
            _print_json(console, items)
            return EXIT_OK
        table = Table(box=None, pad_edge=False)
        for column in ("ID", "NAME", "SIZE", "USED BY"):
            table.add_column(column, no_wrap=True)
        for item in items:
            table.add_row(
                item["id"][:12], item["name"], str(item["size_bytes"]), ", ".join(item["services"])
            )
        console.print(table)
        return EXIT_OK

    return run


def _inspect(is_config: bool) -> Any:
    def run(args: argparse.Namespace, console: Console) -> int:
        _print_json(
            console, [call(args, "secret.inspect", name=n, is_config=is_config) for n in args.names]
        )
        return EXIT_OK

    return run


def _rm(is_config: bool) -> Any:
    def run(args: argparse.Namespace, console: Console) -> int:
        for name in args.names:
            console.print(
                call(args, "secret.rm", name=name, is_config=is_config)["removed"], markup=False
            )
        return EXIT_OK

    return run


def register(sub: Any, command: Any) -> None:
    for is_config in (False, True):
        kind = _kind(is_config)
        parser = sub.add_parser(kind, help=f"manage {kind}s", description=f"manage {kind}s")
        ksub = parser.add_subparsers(dest=f"{kind}_command", metavar="COMMAND")
        ksub.required = True
        p = command(
            "create",
            _create(is_config),
            f"create a {kind} from a file or stdin",
            f"printf s3cret | swarmlet {kind} create db_password -",
            ksub,
        )
        p.add_argument("--label", action="append", metavar="k=v")
        p.add_argument("name", metavar="NAME")
        p.add_argument("file", metavar="FILE|-")
        p = command("ls", _ls(is_config), f"list {kind}s", f"swarmlet {kind} ls", ksub)
        p.add_argument("--format", choices=("table", "json"), default="table")
        p = command(
            "inspect",
            _inspect(is_config),
            f"show {kind}s" + (" (never the value)" if not is_config else ""),
            f"swarmlet {kind} inspect NAME",
            ksub,
        )
        p.add_argument("names", nargs="+", metavar="NAME")
        p = command(
            "rm",
            _rm(is_config),
            f"remove {kind}s (refused while in use)",
            f"swarmlet {kind} rm NAME",
            ksub,
        )
        p.add_argument("names", nargs="+", metavar="NAME")
