"""`swarmlet secret ...` and `swarmlet config ...`: create, list, inspect, remove.

`ls` takes docker's `-q`, `--filter` and `--format TEMPLATE` over docker's field names
(`docker_row`).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from swarmlet.cli.common import (
    ExitStatus,
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
    from collections.abc import Callable, Mapping
    from typing import Any

    from swarmlet.cli.common import Command, Subcommands
    from swarmlet.cli.gotemplate import Record
    from swarmlet.cli.output import Output

# `docker secret ls` / `docker config ls` columns: field -> header (docker CLI 28,
# cli/command/secret/formatter.go, cli/command/config/formatter.go).
SECRET_HEADERS = {
    "ID": "ID",
    "Name": "NAME",
    "Driver": "DRIVER",
    "CreatedAt": "CREATED",
    "UpdatedAt": "UPDATED",
    "Labels": "LABELS",
}
CONFIG_HEADERS = {k: v for k, v in SECRET_HEADERS.items() if k != "Driver"}

# `docker secret ls --filter` keys (and config's) -> the values they take (() for any).
FILTERS: dict[str, tuple[str, ...]] = {"id": (), "label": (), "name": ()}
MATCHERS: Mapping[str, Callable[[dict[str, Any], str], bool]] = {
    "id": lambda item, v: item["id"].startswith(v),
    "label": lambda item, v: labels_match(item["labels"], v),
    "name": lambda item, v: item["name"].startswith(v),
}


def docker_row(item: dict[str, Any], *, is_config: bool, now: float) -> Record:
    """A secret or config under docker's field names. Driver is empty (no secret drivers);
    UpdatedAt is CreatedAt: swarmlet's secrets and configs never change."""
    from swarmlet.cli.gotemplate import Record

    labels: dict[str, str] = item["labels"]
    age = human_duration(max(0.0, now - item["created_at"])) + " ago"
    fields: dict[str, Any] = {
        "ID": item["id"],
        "Name": item["name"],
        "Driver": "",
        "CreatedAt": age,
        "UpdatedAt": age,
        "Labels": ",".join(f"{k}={v}" for k, v in sorted(labels.items())),
        "Label": lambda name: labels.get(name, ""),
    }
    if is_config:
        del fields["Driver"]
    kind = "*config.configContext" if is_config else "*secret.secretContext"
    return Record(kind, fields)


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
        items = select(call(args, "secret.ls", is_config=is_config), args.filter, MATCHERS)

        def table() -> None:
            rows = [
                [
                    item["id"][:12],
                    item["name"],
                    str(item["size_bytes"]),
                    ", ".join(item["services"]),
                ]
                for item in items
            ]
            out.table(("ID", "NAME", "SIZE", "USED BY"), rows)

        def rows() -> tuple[Mapping[str, str], list[Record]]:
            now = time.time()
            headers = CONFIG_HEADERS if is_config else SECRET_HEADERS
            return headers, [docker_row(i, is_config=is_config, now=now) for i in items]

        print_list(
            out,
            args.format,
            args.quiet,
            table=table,
            as_json=lambda: items,
            ids=lambda: [item["id"] for item in items],
            rows=rows,
        )
        return ExitStatus.OK

    return run


def _inspect(is_config: bool) -> Command:
    def run(args: argparse.Namespace, out: Output) -> ExitStatus:
        items = [call(args, "secret.inspect", name=n, is_config=is_config) for n in args.names]
        print_inspected(out, args.format, items)
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
        p = add_command(
            kind_commands,
            "ls",
            _ls(is_config),
            f"list {kind}s",
            f"swarmlet {kind} ls",
            aliases=("list",),
        )
        add_list_flags(
            p,
            example="{{.Name}}\\t{{.CreatedAt}}",
            filters=FILTERS,
            filter_example="label=com.example.team",
        )
        p = add_command(
            kind_commands,
            "inspect",
            _inspect(is_config),
            f"show {kind}s" + (" (never the value)" if not is_config else ""),
            f"swarmlet {kind} inspect NAME",
        )
        add_inspect_format(p, "{{.name}} {{json .labels}}")
        p.add_argument("names", nargs="+", metavar="NAME")
        p = add_command(
            kind_commands,
            "rm",
            _rm(is_config),
            f"remove {kind}s (refused while in use)",
            f"swarmlet {kind} rm NAME",
            aliases=("remove",),
        )
        p.add_argument("names", nargs="+", metavar="NAME")
