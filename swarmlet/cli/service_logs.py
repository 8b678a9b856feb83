"""`swarmlet service logs [OPTIONS] SERVICE|TASK...`: docker's `service logs`, what its flags
mean and its line format, over the agent's `service.logs` (`swarmlet.api.logs`). The flags are
declared with the other service commands' (`cli.service`), which loads this module only to run it.

A line reads as docker prints it: `[TIMESTAMP ]SERVICE.SLOT.TASKID@NODE    | LINE`, the slot
padded to the width of the replica count, TASKID docker's 12 characters unless `--no-trunc`;
`--no-task-ids` drops TASKID, `--no-resolve` prints ids for the service and node names, `--raw`
drops the prefix. Timestamps are Docker's own (`-t`), the ones the agent sorts merged lines by.
`--details` puts the logging driver's attributes of each line (`k=v,k=v`, sorted; empty when the
driver gives none) and a space after the prefix, as docker's CLI does; with `--raw`, as docker's
daemon sends them: with swarm's `com.docker.swarm.{node,service,task}.id` context, URL-escaped.
`--since` is turned into seconds since the epoch here, so `10m` means ten minutes before now on
this machine, as with docker. `--format json` prints each item as the agent sent it (a contract:
see `api.logs.ServiceLogs._item`).

Like every command module, this one imports nothing heavy at load time (`tests/cli/test_imports`).
"""

from __future__ import annotations

import argparse
import contextlib
import re
import time

from swarmlet.cli.common import ExitStatus, client
from swarmlet.errors import UsageError

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at run time
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

    from swarmlet.cli.output import Output

TASK_ID_LENGTH = 12  # docker's stringid.TruncateID
_TASK_COLOURS = (
    "cyan",
    "magenta",
    "green",
    "yellow",
    "blue",
    "bright_red",
    "bright_cyan",
    "bright_magenta",
)


# ---------------------------------------------------------------------------- flag values

# Go's time.ParseDuration, which docker uses for a relative --since: "10m", "1h30m", "1.5s".
_DURATION_PART = r"(?:\d+(?:\.\d*)?|\.\d+)(?:ns|us|µs|ms|s|m|h)"
_DURATION = re.compile(rf"[-+]?(?:{_DURATION_PART})+")
_DURATION_PARTS = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_UNIX = re.compile(r"\d+(?:\.\d{1,9})?")


def parse_since(text: str, now: float) -> float:
    """docker's `--since` (`api/types/time.GetTimestamp`) as seconds since the epoch: a Go
    duration before `now` (`10m`, `1h30m`), an RFC 3339 date or time (`2026-12-03`,
    `2026-12-03T08:25:03.5Z`; local time without a zone, as docker), or Unix seconds
    (`1764750303.5`)."""
    from datetime import datetime

    if text != "0" and _DURATION.fullmatch(text):
        seconds = sum(
            float(number) * _UNIT_SECONDS[unit] for number, unit in _DURATION_PARTS.findall(text)
        )
        return now - (-seconds if text.startswith("-") else seconds)
    if _UNIX.fullmatch(text):
        return float(text)
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(
            f"invalid --since {text!r}: give a duration (10m, 1h30m), an RFC 3339 time "
            "(2026-12-03T08:25:03Z) or Unix seconds"
        ) from None
    return when.timestamp()  # a naive time is local time


def parse_tail(text: str) -> int | None:
    """docker's `-n/--tail`: lines from the end of each task's log; `all` (or a negative
    number, as docker) for all of them: None."""
    if text == "all":
        return None
    try:
        lines = int(text)
    except ValueError:
        raise UsageError(f"invalid --tail {text!r}: a number of lines, or 'all'") from None
    return None if lines < 0 else lines


def stream_args(args: argparse.Namespace, now: float) -> dict[str, Any]:
    """The `service.logs` request the flags in `args` make (`now` anchors a relative --since)."""
    return {
        "targets": list(args.targets),
        "follow": args.follow,
        "tail": parse_tail(args.tail),
        "since": parse_since(args.since, now) if args.since else None,
    } | ({"details": True} if args.details else {})


# ---------------------------------------------------------------------------- one line


def prefix(
    item: Mapping[str, Any], *, task_ids: bool = True, trunc: bool = True, resolve: bool = True
) -> str:
    """docker's context before a line: `SERVICE.SLOT.TASKID@NODE    | `, padded so that the
    bars line up across slots of one service; "" for the agent's notes about a node."""
    service = item.get("service") if resolve else item.get("service_id")
    node = item.get("node") if resolve else item.get("node_id")
    if not item.get("task_id") or not service:
        return f"@{node}    | " if node else ""
    slot = str(item.get("slot", ""))
    name = f"{service}.{slot}"
    if task_ids:
        task_id = str(item["task_id"])
        name += "." + (task_id[:TASK_ID_LENGTH] if trunc else task_id)
    padding = " " * max(0, int(item.get("slot_width") or 0) - len(slot))
    return f"{name}@{node}{padding}    | "


def details_text(item: Mapping[str, Any], *, raw: bool) -> str:
    """docker's `--details` text before a line, without its trailing space. docker's CLI
    (`service logs`' logWriter) prints the driver's attributes `k=v` sorted and joined by commas,
    having taken swarm's context out; with `--raw` it prints the daemon's own
    (`attrsByteSlice`): the context included, sorted by key, each part URL-escaped."""
    from urllib.parse import quote_plus

    attrs = {str(k): str(v) for k, v in (item.get("details") or {}).items()}
    if not raw:
        return ",".join(sorted(f"{k}={v}" for k, v in attrs.items()))
    if item.get("task_id") and item.get("service_id"):
        attrs["com.docker.swarm.node.id"] = str(item.get("node_id", ""))
        attrs["com.docker.swarm.service.id"] = str(item["service_id"])
        attrs["com.docker.swarm.task.id"] = str(item["task_id"])
    return ",".join(f"{quote_plus(k)}={quote_plus(v)}" for k, v in sorted(attrs.items()))


def render(item: Mapping[str, Any], args: argparse.Namespace) -> tuple[str, str, str]:
    """(timestamp and space or "", prefix, line) of one item, as the flags in `args` ask."""
    stamp = f"{item['timestamp']} " if args.timestamps and item.get("timestamp") else ""
    context = (
        ""
        if args.raw
        else prefix(
            item,
            task_ids=not args.no_task_ids,
            trunc=not args.no_trunc,
            resolve=not args.no_resolve,
        )
    )
    line = str(item.get("line", ""))
    if args.details and item.get("task_id"):  # not on the agent's notes about a node
        line = details_text(item, raw=args.raw) + " " + line
    return stamp, context, line


def print_logs(args: argparse.Namespace, out: Output) -> ExitStatus:
    """`service logs`: the agent's lines as they come (merged in time order unless following)."""
    import json

    request = stream_args(args, time.time())
    colours: dict[str, str] = {}
    with (
        contextlib.suppress(KeyboardInterrupt),
        client(args).stream("service.logs", **request) as lines,
    ):
        for item in lines:
            if args.format == "json":
                out.line(json.dumps(item))
                continue
            stamp, context, line = render(item, args)
            if not out.is_terminal:
                out.line(stamp + context + line)
                continue
            from rich.text import Text

            task = str(item.get("task_id", ""))
            colour = colours.setdefault(task, _TASK_COLOURS[len(colours) % len(_TASK_COLOURS)])
            text = Text(stamp)
            text.append(context, style=colour)
            text.append(line)
            out.rich.print(text, highlight=False, soft_wrap=True)
    return ExitStatus.OK
