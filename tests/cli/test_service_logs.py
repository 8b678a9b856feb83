"""`swarmlet service logs`: each of docker's flags as the parser reads it and the request it
makes (tables), `--since` and `--tail` values as docker reads them, docker's line prefix, and
the command end to end against a fake agent."""

from __future__ import annotations

import argparse
import io
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import trio
from rich.console import Console

from swarmlet.api.control_socket import Emit, serve_control
from swarmlet.cli.main import build_parser, main
from swarmlet.cli.service_logs import parse_since, parse_tail, prefix, render, stream_args
from swarmlet.errors import UsageError

NOW = 1_764_750_000.0  # 2025-12-03T08:20:00Z

DEFAULTS = {
    "follow": False,
    "timestamps": False,
    "tail": "all",
    "since": None,
    "raw": False,
    "no_task_ids": False,
    "no_trunc": False,
    "no_resolve": False,
    "format": "text",
    "targets": ["web"],
}


def parse(argv: list[str]) -> argparse.Namespace:
    return build_parser("service").parse_args(["service", "logs", *argv])


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["web"], {}),
        (["-f", "web"], {"follow": True}),
        (["--follow", "web"], {"follow": True}),
        (["--follow=false", "web"], {"follow": False}),
        (["-t", "web"], {"timestamps": True}),
        (["--timestamps", "web"], {"timestamps": True}),
        (["-f", "-t", "web"], {"follow": True, "timestamps": True}),
        (["-n", "5", "web"], {"tail": "5"}),
        (["--tail", "all", "web"], {"tail": "all"}),
        (["--tail=1", "web"], {"tail": "1"}),
        (["--since", "10m", "web"], {"since": "10m"}),
        (["--since=2025-12-03T08:00:00Z", "web"], {"since": "2025-12-03T08:00:00Z"}),
        (["--raw", "web"], {"raw": True}),
        (["--no-task-ids", "web"], {"no_task_ids": True}),
        (["--no-trunc", "web"], {"no_trunc": True}),
        (["--no-resolve", "web"], {"no_resolve": True}),
        (["--format", "json", "web"], {"format": "json"}),
        (["web", "api"], {"targets": ["web", "api"]}),
        (["web.2", "mochy2kzkj31"], {"targets": ["web.2", "mochy2kzkj31"]}),
    ],
)
def test_each_flag_parses_as_docker_reads_it(argv: list[str], expected: dict[str, Any]) -> None:
    values = vars(parse(argv))
    values.pop("handler")
    values.pop("data_dir")
    values.pop("group", None)
    values.pop("command", None)
    assert {k: values[k] for k in DEFAULTS} == DEFAULTS | expected


@pytest.mark.parametrize(
    "argv",
    [
        [],  # an operand is required
        ["--format", "yaml", "web"],
        ["--raw=maybe", "web"],
    ],
)
def test_a_bad_command_line_is_a_usage_error(argv: list[str]) -> None:
    with pytest.raises(UsageError):
        parse(argv)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["web"], {"targets": ["web"], "follow": False, "tail": None, "since": None}),
        (["-f", "web", "api"], {"targets": ["web", "api"], "follow": True}),
        (["-n", "0", "web"], {"tail": 0}),
        (["--tail", "3", "web"], {"tail": 3}),
        (["--tail", "all", "web"], {"tail": None}),
        (["--tail", "-1", "web"], {"tail": None}),
        (["--since", "10m", "web"], {"since": NOW - 600}),
        (["--since", "1764740000", "web"], {"since": 1_764_740_000.0}),
    ],
)
def test_the_flags_make_the_agent_request(argv: list[str], expected: dict[str, Any]) -> None:
    request = stream_args(parse(argv), NOW)
    assert {k: request[k] for k in expected} == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10m", NOW - 600),
        ("1h30m", NOW - 5400),
        ("1.5s", NOW - 1.5),
        ("250ms", NOW - 0.25),
        ("90s", NOW - 90),
        ("-1m", NOW + 60),  # Go durations may be negative: a time ahead
        ("0", 0.0),  # docker reads "0" as the Unix epoch, not a duration
        ("10", 10.0),  # digits alone are Unix seconds: a duration needs its unit
        ("1764740000", 1_764_740_000.0),
        ("1764740000.5", 1_764_740_000.5),
        ("2025-12-03T08:00:00Z", 1_764_748_800.0),
        ("2025-12-03T08:00:00.25Z", 1_764_748_800.25),
        ("2025-12-03T09:00:00+01:00", 1_764_748_800.0),
        ("2025-12-03T08:00:00", datetime(2025, 12, 3, 8, 0, 0).timestamp()),  # local time
        ("2025-12-03", datetime(2025, 12, 3).timestamp()),
    ],
)
def test_since_reads_durations_times_and_unix_seconds(text: str, expected: float) -> None:
    assert parse_since(text, NOW) == pytest.approx(expected)


@pytest.mark.parametrize("text", ["yesterday", "10x", "m", "1h-5m", "2025-13-03", ""])
def test_since_refuses_what_docker_refuses(text: str) -> None:
    with pytest.raises(UsageError, match="invalid --since"):
        parse_since(text, NOW)


@pytest.mark.parametrize(
    ("text", "expected"), [("all", None), ("0", 0), ("7", 7), ("-1", None), ("-5", None)]
)
def test_tail_is_lines_or_all(text: str, expected: int | None) -> None:
    assert parse_tail(text) == expected


@pytest.mark.parametrize("text", ["", "ten", "1.5", "ALL"])
def test_tail_refuses_anything_else(text: str) -> None:
    with pytest.raises(UsageError, match="invalid --tail"):
        parse_tail(text)


ITEM = {
    "task": "web.3.mochy2kzkj",
    "task_id": "mochy2kzkj31g6olcj0lp87jk",
    "service": "web",
    "service_id": "kumeeuaxer5uzjr3irma",
    "slot": "3",
    "slot_width": 2,
    "node": "c1",
    "node_id": "uficacalf7fm2zsuczba",
    "timestamp": "2025-12-03T08:00:00.123456789Z",
    "line": "GET / 200",
}


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ({}, "web.3.mochy2kzkj31@c1     | "),
        ({"task_ids": False}, "web.3@c1     | "),
        ({"trunc": False}, "web.3.mochy2kzkj31g6olcj0lp87jk@c1     | "),
        (
            {"resolve": False},
            "kumeeuaxer5uzjr3irma.3.mochy2kzkj31@uficacalf7fm2zsuczba     | ",
        ),
    ],
)
def test_the_prefix_is_dockers(flags: dict[str, bool], expected: str) -> None:
    assert prefix(ITEM, **flags) == expected


def test_slots_as_wide_as_the_replica_count_are_not_padded() -> None:
    assert prefix(ITEM | {"slot": "12"}) == "web.12.mochy2kzkj31@c1    | "
    assert prefix(ITEM | {"slot_width": 0}) == "web.3.mochy2kzkj31@c1    | "


def test_a_note_about_a_node_has_no_task_in_its_prefix() -> None:
    note = {"task_id": "", "service": "", "node": "c2", "line": "(node is down: no logs)"}
    assert prefix(note) == "@c2    | "


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["web"], ("", "web.3.mochy2kzkj31@c1     | ")),
        (["-t", "web"], ("2025-12-03T08:00:00.123456789Z ", "web.3.mochy2kzkj31@c1     | ")),
        (["--raw", "web"], ("", "")),
        (["--raw", "-t", "web"], ("2025-12-03T08:00:00.123456789Z ", "")),
        (["-t", "--no-task-ids", "web"], ("2025-12-03T08:00:00.123456789Z ", "web.3@c1     | ")),
    ],
)
def test_render_puts_dockers_timestamp_before_the_prefix(
    argv: list[str], expected: tuple[str, str]
) -> None:
    assert render(ITEM, parse(argv)) == (*expected, "GET / 200")


async def test_the_command_asks_the_agent_and_prints_each_line_behind_its_prefix(
    tmp_path: Path,
) -> None:
    """The real CLI against the real control socket server, with a `service.logs` that records
    its arguments and sends two lines."""
    requests: list[dict[str, Any]] = []
    second = ITEM | {"timestamp": "2025-12-03T08:00:01.000000000Z", "line": "bye"}

    async def logs(args: dict[str, Any], emit: Emit) -> None:
        requests.append(args)
        for item in (ITEM, second):
            await emit(item)

    out = io.StringIO()
    console = Console(file=out, width=200, color_system=None)
    argv = ["service", "logs", "-t", "--tail", "2", "web", "--data-dir", str(tmp_path)]
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            await nursery.start(
                serve_control, tmp_path / "control.sock", {}, {"service.logs": logs}
            )
            status = await trio.to_thread.run_sync(main, argv, console)
            nursery.cancel_scope.cancel()
    assert status == 0
    assert out.getvalue().splitlines() == [
        "2025-12-03T08:00:00.123456789Z web.3.mochy2kzkj31@c1     | GET / 200",
        "2025-12-03T08:00:01.000000000Z web.3.mochy2kzkj31@c1     | bye",
    ]
    assert requests == [{"targets": ["web"], "follow": False, "tail": 2, "since": None}]
