"""`swarmlet dashboard`: the live, interactive terminal view (see `swarmlet.dashboard`).

It needs a terminal: scripts use `node ls`, `service ls`, `events --format json` instead.
"""

from __future__ import annotations

import argparse

from swarmlet.cli.common import ExitStatus, add_command, socket_path
from swarmlet.errors import UsageError

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at run time
if TYPE_CHECKING:
    from swarmlet.cli.common import Subcommands
    from swarmlet.cli.output import Output


def cmd_dashboard(args: argparse.Namespace, out: Output) -> ExitStatus:
    from swarmlet.dashboard import tui  # Textual and the view: load on demand

    if not args.interval > 0:
        raise UsageError(f"--interval: expected a positive number of seconds, got {args.interval}")
    if not out.is_terminal:
        raise UsageError(
            "the dashboard needs a terminal; in scripts, use `swarmlet node ls`, "
            "`swarmlet service ls` or `swarmlet events` (with --format json)"
        )
    tui.run(socket_path(args), interval_s=args.interval)
    return ExitStatus.OK


def register(sub: Subcommands) -> None:
    p = add_command(
        sub,
        "dashboard",
        cmd_dashboard,
        "live view of nodes, services, tasks and events: Enter drills down, / filters, "
        "s scales, l follows logs, ? shows the keys, q quits",
        "swarmlet dashboard --interval 1",
    )
    p.add_argument(
        "--interval",
        type=float,
        default=0.5,
        metavar="SECONDS",
        help="time between polls of the agent (default: 0.5)",
    )
