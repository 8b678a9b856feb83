"""The `swarmlet` command: the entry point, the parser of the command being run, exit statuses.

`main(argv, console) -> ExitStatus` is the whole program; output goes through an `Output` (rich
Console injected by tests, created on demand otherwise: `cli.output`). Exceptions become exit
statuses here and nowhere else: a StackError or any other SwarmletError is an error (1), a
UsageError a usage error (2), Ctrl-C is 130. Errors go to stderr as one unwrapped line each.
Scripts use `--format json`: its shape is a contract.

Each command group lives in its own module (`cli.cluster`, `cli.node`, `cli.service`,
`cli.stack`, `cli.secret`, `cli.dashboard`), which registers its parsers and shares helpers
through `cli.common`; none of them imports this module.

Start-up time is part of the command's interface: people run `swarmlet node ls` all day and
scripts run it in loops, so nothing is loaded that the command line does not use.
- This module imports only `sys` and the version at load (the console script imports it before
  anything runs), and `swarmlet --version` is answered before argparse is loaded.
- A command line builds the parser of its own command's module only (`COMMAND_MODULES`): the
  first word names the command, and a command's parse never depends on another module's
  parsers. `--help`, or a first word that names no command, builds them all, so the command
  list and "invalid choice" errors stay complete.
- What a command needs beyond its parser (the control client, rich, trio, the stack loader, the
  agent) is imported by the command when it runs.
"""

from __future__ import annotations

import sys

from swarmlet import __version__

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at run time
if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Sequence

    from rich.console import Console

    from swarmlet.cli.common import ExitStatus, Subcommands

VERSION = f"swarmlet {__version__}"

# Every command, in the order of `swarmlet --help`'s list, and the module that registers it.
COMMAND_MODULES: dict[str, str] = {
    "init": "cluster",
    "join": "cluster",
    "agent": "cluster",
    "join-token": "cluster",
    "leave": "cluster",
    "status": "cluster",
    "events": "cluster",
    "backup": "cluster",
    "update": "cluster",
    "unlock": "cluster",
    "unlock-key": "cluster",
    "node": "node",
    "service": "service",
    "stack": "stack",
    "secret": "secret",
    "config": "secret",
    "dashboard": "dashboard",
}


def _register_function(module: str) -> Callable[[Subcommands], None]:
    """`register` of the command module `module`, imported now (by name: each import is spelt
    out, so the layering test sees it)."""
    if module == "cluster":
        from swarmlet.cli.cluster import register as cluster

        return cluster
    if module == "node":
        from swarmlet.cli.node import register as node

        return node
    if module == "service":
        from swarmlet.cli.service import register as service

        return service
    if module == "stack":
        from swarmlet.cli.stack import register as stack

        return stack
    if module == "secret":
        from swarmlet.cli.secret import register as secret

        return secret
    if module == "dashboard":
        from swarmlet.cli.dashboard import register as dashboard

        return dashboard
    raise ValueError(f"no command module {module!r}")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command; given `command` (the first word of a command line) and if
    it names one, the parser with only the commands of the module that registers it."""
    import argparse

    from swarmlet.cli.common import UsageParser

    parser = UsageParser(
        prog="swarmlet",
        description="A lightweight, Docker-Swarm-like container orchestrator.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            "examples:\n"
            "  swarmlet init --advertise-addr 10.0.0.1\n"
            "  swarmlet join --token SWLT-1-... 10.0.0.1:7946\n"
            "  swarmlet node ls\n"
            "  swarmlet stack deploy -c stacks/web.yml web\n"
        ),
    )
    parser.add_argument("--version", action="version", version=VERSION)
    sub: Subcommands = parser.add_subparsers(
        dest="command", metavar="COMMAND", parser_class=UsageParser
    )
    sub.required = True
    if command in COMMAND_MODULES:
        modules = [COMMAND_MODULES[command]]
    else:
        modules = list(dict.fromkeys(COMMAND_MODULES.values()))
    for module in modules:
        _register_function(module)(sub)
    return parser


def main(argv: Sequence[str], console: Console | None = None) -> ExitStatus:
    from swarmlet.cli.common import Command, ExitStatus
    from swarmlet.cli.output import Output, error
    from swarmlet.errors import StackError, SwarmletError, UsageError

    argv = list(argv)
    try:
        args = build_parser(argv[0] if argv else None).parse_args(argv)
        handler: Command = args.handler
        return handler(args, Output(console))
    except StackError as exc:
        error(f"error: {exc}")
        return ExitStatus.ERROR
    except UsageError as exc:
        error(f"error: {exc}")
        return ExitStatus.USAGE
    except SwarmletError as exc:
        error(f"error: {exc}")
        return ExitStatus.ERROR
    except KeyboardInterrupt:
        return ExitStatus.INTERRUPTED


def entrypoint() -> None:
    argv = sys.argv[1:]
    if argv == ["--version"]:
        # What argparse's version action prints (a test holds them equal), without argparse.
        sys.stdout.write(VERSION + "\n")
        sys.exit(0)
    sys.exit(main(argv))
