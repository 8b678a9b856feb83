"""The `swarmlet` command: assemble the parser, run the chosen command, map failures to exit
statuses.

`main(argv, console) -> ExitStatus` is the whole program; output goes through the injected rich
Console so tests capture it. Exceptions become exit statuses here and nowhere else: a StackError
or any other SwarmletError is an error (1), a UsageError a usage error (2), Ctrl-C is 130.
Scripts use `--format json`: its shape is a contract.

Each command group lives in its own module (`cli.cluster`, `cli.node`, `cli.service`,
`cli.stack`, `cli.secret`, `cli.dashboard`), which registers its parsers and shares helpers
through `cli.common`; none of them imports this module. Building the parser imports no more than
argparse, rich and those modules: what a command needs beyond that (trio, the control client,
the stack loader, the agent itself) is loaded when it runs, so `--version` and `--help` stay fast.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from rich.console import Console

from swarmlet import __version__
from swarmlet.cli import cluster, dashboard, node, secret, service, stack
from swarmlet.cli.common import Command, ExitStatus, UsageParser
from swarmlet.errors import StackError, SwarmletError, UsageError

# The order of `swarmlet --help`'s command list.
COMMAND_GROUPS = (cluster, node, service, stack, secret, dashboard)


def build_parser() -> argparse.ArgumentParser:
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
    parser.add_argument("--version", action="version", version=f"swarmlet {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=UsageParser)
    sub.required = True
    for group in COMMAND_GROUPS:
        group.register(sub)
    return parser


def main(argv: Sequence[str], console: Console | None = None) -> ExitStatus:
    # Piped output keeps whole lines (scripts parse it); a terminal gets its own width.
    console = console or Console(width=None if sys.stdout.isatty() else 200)
    err = Console(stderr=True)
    try:
        args = build_parser().parse_args(list(argv))
        handler: Command = args.handler
        return handler(args, console)
    except StackError as exc:
        err.print(f"error: {exc}", markup=False, highlight=False)
        return ExitStatus.ERROR
    except UsageError as exc:
        err.print(f"error: {exc}", markup=False, highlight=False)
        return ExitStatus.USAGE
    except SwarmletError as exc:
        err.print(f"error: {exc}", markup=False, highlight=False)
        return ExitStatus.ERROR
    except KeyboardInterrupt:
        return ExitStatus.INTERRUPTED


def entrypoint() -> None:
    sys.exit(main(sys.argv[1:]))
