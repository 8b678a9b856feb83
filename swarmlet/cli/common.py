"""What every `swarmlet` subcommand shares: exit statuses, the parser pieces, finding and calling
the local agent.

The command modules (`cli.cluster`, `cli.node`, `cli.service`, ...) import from here and never
from `cli.main`, which imports them: the dependency runs one way. This module stays cheap to
import (argparse and the standard library, not even `typing`): `--help` builds the whole parser,
and every command builds its own. A command loads what it uses when it runs: the blocking
control client (a socket and msgpack, no event loop) when it calls the agent, rich only when
its output needs it (`cli.output`).
"""

from __future__ import annotations

import argparse
import enum
from collections.abc import Callable
from pathlib import Path

from swarmlet.errors import UsageError

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at run time
if TYPE_CHECKING:
    from typing import Any, NoReturn, TypeAlias

    from swarmlet.api.control_client import BlockingControlClient
    from swarmlet.cli.output import Output
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


Command = Callable[[argparse.Namespace, "Output"], ExitStatus]


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


def data_dir_path(args: argparse.Namespace) -> Path:
    """`--data-dir`, or the default (`$SWARMLET_DATA_DIR`, ...)."""
    from swarmlet.security.datadir_location import default_data_dir

    return Path(args.data_dir) if args.data_dir else default_data_dir()


def data_dir(args: argparse.Namespace) -> DataDir:
    """The data dir, for the commands that read or write it (identity, keys, pid)."""
    from swarmlet.security.datadir import DataDir

    return DataDir(data_dir_path(args))


def socket_path(args: argparse.Namespace) -> Path:
    """The agent's control socket: found without loading what reads the data dir's files."""
    from swarmlet.security.datadir_location import control_socket_path

    return control_socket_path(data_dir_path(args))


def client(args: argparse.Namespace) -> BlockingControlClient:
    from swarmlet.api.control_client import BlockingControlClient

    return BlockingControlClient(socket_path(args))


def call(args: argparse.Namespace, op: str, **kwargs: Any) -> Any:
    """One request to the local agent's control API; its result, or the error it raised."""
    return client(args).call(op, **kwargs)
