"""What every `swarmlet` subcommand shares: exit statuses, the parser pieces, finding and calling
the local agent, printing JSON.

The command modules (`cli.cluster`, `cli.node`, `cli.service`, ...) import from here and never
from `cli.main`, which imports them: the dependency runs one way. This module stays cheap to
import (argparse and the standard library): `swarmlet --version` and `--help` build the whole
parser, so trio, the control client and the data dir's crypto load only when a command calls
the agent.
"""

from __future__ import annotations

import argparse
import enum
import json
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from swarmlet.errors import UsageError

if TYPE_CHECKING:
    from typing import TypeAlias

    from rich.console import Console
    from rich.table import Table

    from swarmlet.api.control_socket import ControlClient
    from swarmlet.security.datadir import DataDir

    # What `ArgumentParser.add_subparsers()` returns: commands are added to it.
    Subcommands: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]


class ExitStatus(enum.IntEnum):
    """The process's exit status: what scripts may rely on."""

    OK = 0
    ERROR = 1  # the command failed: the message on stderr says why
    USAGE = 2  # the command line was wrong, or the command does not apply here
    STORAGE_CORRUPT = 3  # the agent refused to start: its Raft storage does not load
    INTERRUPTED = 130  # Ctrl-C (128 + SIGINT, as shells report it)


Command = Callable[[argparse.Namespace, "Console"], ExitStatus]


class UsageParser(argparse.ArgumentParser):
    """An ArgumentParser that raises UsageError instead of exiting, so `cli.main` maps every
    failure to its exit status in one place."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}")


# ---------------------------------------------------------------------------- parser pieces


def add_data_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir",
        help="the agent's data directory "
        "(default: $SWARMLET_DATA_DIR, or /var/lib/swarmlet as root)",
    )


def add_format(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--format", choices=("table", "json"), default="table", help="output format"
    )


def add_group(parent: Subcommands, name: str, help_: str, *, dest: str) -> Subcommands:
    """A command group (`node`, `service`, ...): its parser, holding the group's subcommands."""
    group = parent.add_parser(name, help=help_, description=help_)
    subcommands: Subcommands = group.add_subparsers(
        dest=dest, metavar="COMMAND", parser_class=UsageParser
    )
    subcommands.required = True
    return subcommands


def add_command(
    parent: Subcommands, name: str, handler: Command, help_: str, example: str
) -> argparse.ArgumentParser:
    """A command that runs `handler`; it takes --data-dir, and its help ends with `example`."""
    parser: argparse.ArgumentParser = parent.add_parser(
        name,
        help=help_,
        description=help_,
        epilog=f"example:\n  {example}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.set_defaults(handler=handler)
    add_data_dir(parser)
    return parser


# ---------------------------------------------------------------------------- the local agent


def data_dir(args: argparse.Namespace) -> DataDir:
    from swarmlet.security.datadir import DataDir, default_data_dir

    return DataDir(Path(args.data_dir) if args.data_dir else default_data_dir())


def client(args: argparse.Namespace) -> ControlClient:
    from swarmlet.api.control_socket import ControlClient

    return ControlClient(data_dir(args).socket_path)


def call(args: argparse.Namespace, op: str, **kwargs: Any) -> Any:
    """One request to the local agent's control API; its result, or the error it raised."""
    import trio

    return trio.run(lambda: client(args).call(op, **kwargs))


# ---------------------------------------------------------------------------- output


def print_json(console: Console, value: Any) -> None:
    """`value` as JSON: highlighted on a terminal, plain and unwrapped for scripts."""
    if console.is_terminal:
        console.print_json(json.dumps(value), highlight=False)
    else:
        console.print(json.dumps(value, indent=2), markup=False, highlight=False, soft_wrap=True)


def plain_table(columns: Sequence[str], *, wrap: Collection[str] = ()) -> Table:
    """A borderless table with these column headers, as `docker ... ls` prints; only the
    columns in `wrap` may wrap."""
    from rich.table import Table

    table = Table(box=None, pad_edge=False)
    for column in columns:
        table.add_column(column, no_wrap=column not in wrap)
    return table
