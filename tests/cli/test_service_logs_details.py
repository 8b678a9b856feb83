"""`service logs --details`: the flag, the request, and the text before each line as docker's
CLI prints it (sorted `k=v` without swarm's context) or, with `--raw`, as its daemon sends it."""

from __future__ import annotations

import argparse

import pytest

from swarmlet.cli.main import build_parser
from swarmlet.cli.service_logs import render, stream_args

ITEM = {
    "task": "web.3.mochy2kzkj",
    "task_id": "mochy2kzkj31xyz",
    "service": "web",
    "service_id": "svc1",
    "slot": "3",
    "slot_width": 1,
    "node": "c1",
    "node_id": "node1",
    "timestamp": "2025-12-03T08:00:00.123456789Z",
    "line": "GET / 200",
    "details": {"app.tier": "web tier", "COLOR": "blue"},
}


def parse(argv: list[str]) -> argparse.Namespace:
    return build_parser("service").parse_args(["service", "logs", *argv])


def test_the_flag_asks_the_agent_for_details_and_only_then() -> None:
    assert stream_args(parse(["--details", "web"]), 0.0)["details"] is True
    assert "details" not in stream_args(parse(["web"]), 0.0)
    assert "details" not in stream_args(parse(["--details=false", "web"]), 0.0)


@pytest.mark.parametrize(
    ("argv", "item", "line"),
    [
        (["--details", "web"], ITEM, "COLOR=blue,app.tier=web tier GET / 200"),
        (["--details", "web"], ITEM | {"details": {}}, " GET / 200"),
        (["web"], ITEM, "GET / 200"),
        (
            ["--details", "--raw", "web"],
            ITEM,
            "COLOR=blue,app.tier=web+tier,com.docker.swarm.node.id=node1,"
            "com.docker.swarm.service.id=svc1,com.docker.swarm.task.id=mochy2kzkj31xyz GET / 200",
        ),
        # the agent's notes about a node are not Docker's lines: nothing is added
        (
            ["--details", "web"],
            {"task_id": "", "node": "c2", "line": "(node is down: no logs)"},
            "(node is down: no logs)",
        ),
    ],
)
def test_details_come_before_the_line_as_docker_prints_them(
    argv: list[str], item: dict[str, object], line: str
) -> None:
    assert render(item, parse(argv))[2] == line


def test_details_follow_the_prefix_and_the_timestamp() -> None:
    stamp, context, line = render(ITEM, parse(["-t", "--details", "web"]))
    assert stamp + context + line == (
        "2025-12-03T08:00:00.123456789Z web.3.mochy2kzkj31@c1    | "
        "COLOR=blue,app.tier=web tier GET / 200"
    )
