"""docker's flag conventions in swarmlet's parser, in tables: `-q`, `--format`, `-f/--filter`,
boolean flags that take `=false`/`=true`, aliases, `-c -`, `inspect --format`. Each row is a
command line and what the parser makes of it (or the usage error it gives)."""

from __future__ import annotations

import argparse
from typing import Any

import pytest

from swarmlet.cli.common import parse_bool
from swarmlet.cli.main import build_parser
from swarmlet.errors import UsageError


def parsed(argv: list[str]) -> dict[str, Any]:
    values = vars(build_parser(argv[0]).parse_args(argv))
    values.pop("handler")
    return values


def handler_of(argv: list[str]) -> tuple[str, str]:
    handler = build_parser(argv[0]).parse_args(argv).handler
    return handler.__module__, handler.__qualname__


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        # -q
        (["node", "ls"], {"quiet": False, "format": "table", "filter": []}),
        (["node", "ls", "-q"], {"quiet": True}),
        (["node", "ls", "--quiet"], {"quiet": True}),
        (["node", "ls", "--quiet=false"], {"quiet": False}),
        (["node", "ls", "-q=true"], {"quiet": True}),
        (["service", "ls", "-q"], {"quiet": True}),
        (["service", "ps", "-q", "web"], {"quiet": True, "services": ["web"]}),
        (["service", "ps", "web", "-q"], {"quiet": True, "services": ["web"]}),
        (["stack", "ls", "-q"], {"quiet": True}),
        (["stack", "services", "-q", "web"], {"quiet": True, "name": "web"}),
        (["stack", "ps", "-q", "web"], {"quiet": True, "name": "web"}),
        (["secret", "ls", "-q"], {"quiet": True}),
        (["config", "ls", "-q"], {"quiet": True}),
        # --format
        (["node", "ls", "--format", "json"], {"format": "json"}),
        (["node", "ls", "--format", "table"], {"format": "table"}),
        (
            ["service", "ls", "--format", "{{.Name}} {{.Replicas}}"],
            {"format": "{{.Name}} {{.Replicas}}"},
        ),
        (
            ["service", "ls", "--format", "table {{.Name}}\\t{{.Image}}"],
            {"format": "table {{.Name}}\\t{{.Image}}"},
        ),
        (
            ["service", "ps", "web", "--format", "{{.ID}}", "-q"],
            {"format": "{{.ID}}", "quiet": True},
        ),
        (["stack", "ls", "--format", "{{.Name}}"], {"format": "{{.Name}}"}),
        (["secret", "ls", "--format", "{{json .}}"], {"format": "{{json .}}"}),
        (["config", "ls", "--format=table {{.ID}}"], {"format": "table {{.ID}}"}),
        # --format of inspect: json (docker's, and the default), or a template
        (["node", "inspect", "n1"], {"format": "json", "nodes": ["n1"]}),
        (["node", "inspect", "--format", "json", "n1"], {"format": "json"}),
        (
            ["node", "inspect", "-f", "{{.hostname}}", "n1", "n2"],
            {"format": "{{.hostname}}", "nodes": ["n1", "n2"]},
        ),
        (["service", "inspect", "--format=json", "web"], {"format": "json", "services": ["web"]}),
        (["secret", "inspect", "-f", "{{.name}}", "s"], {"format": "{{.name}}"}),
        (["config", "inspect", "--format", "json", "c"], {"format": "json"}),
        # --filter: repeatable, key lower-cased and spaces trimmed as docker does
        (
            ["node", "ls", "-f", "role=manager", "--filter", "name=n1"],
            {"filter": [("role", "manager"), ("name", "n1")]},
        ),
        (["node", "ls", "--filter", " Role = Worker "], {"filter": [("role", "worker")]}),
        (
            ["node", "ls", "-f", "label=zone=a", "-f", "node.label=zone"],
            {"filter": [("label", "zone=a"), ("node.label", "zone")]},
        ),
        (
            ["node", "ls", "-f", "membership=accepted", "-f", "id=uf"],
            {"filter": [("membership", "accepted"), ("id", "uf")]},
        ),
        (
            ["service", "ls", "-f", "mode=global", "-f", "name=web", "-f", "label=a", "-f", "id=k"],
            {"filter": [("mode", "global"), ("name", "web"), ("label", "a"), ("id", "k")]},
        ),
        (
            ["service", "ps", "web", "-f", "desired-state=running", "-f", "node=n1"],
            {"filter": [("desired-state", "running"), ("node", "n1")]},
        ),
        (
            ["service", "ps", "web", "-f", "id=m", "-f", "name=web.1"],
            {"filter": [("id", "m"), ("name", "web.1")]},
        ),
        (
            ["stack", "services", "web", "-f", "mode=replicated"],
            {"filter": [("mode", "replicated")]},
        ),
        (
            ["stack", "ps", "web", "-f", "desired-state=shutdown"],
            {"filter": [("desired-state", "shutdown")]},
        ),
        (
            ["secret", "ls", "-f", "name=db", "-f", "label=x=y", "-f", "id=abc"],
            {"filter": [("name", "db"), ("label", "x=y"), ("id", "abc")]},
        ),
        (["config", "ls", "--filter=name=site"], {"filter": [("name", "site")]}),
        # --no-trunc
        (["service", "ps", "web"], {"no_trunc": False}),
        (["service", "ps", "--no-trunc", "web"], {"no_trunc": True}),
        (["stack", "ps", "--no-trunc=true", "web"], {"no_trunc": True}),
        # boolean flags take docker's values, and a bare one never eats the next word
        (["service", "create", "--name", "w", "-d", "img"], {"detach": True, "image": "img"}),
        (["service", "create", "--name", "w", "--detach=false", "img"], {"detach": False}),
        (["service", "create", "--name", "w", "-d=0", "img"], {"detach": False}),
        (
            ["service", "create", "--name", "w", "--no-healthcheck=true", "img"],
            {"no_healthcheck": True},
        ),
        # after the image, flags are the container's command's
        (
            ["service", "create", "--name", "w", "img", "ls", "-d", "--force"],
            {"detach": False, "command": ["ls", "-d", "--force"]},
        ),
        # a flag's value is its value, even when it looks like a boolean flag
        (
            ["service", "create", "--name=-d", "--env=-d", "img"],
            {"name": "-d", "env": ["-d"], "detach": False},
        ),
        (
            ["service", "create", "--name", "w", "-e", "X=1", "-d", "img"],
            {"env": ["X=1"], "detach": True},
        ),
        (["service", "update", "--force", "web"], {"force": True, "service": "web"}),
        (["service", "update", "--force=true", "web"], {"force": True}),
        (
            ["service", "update", "--force=false", "--detach=True", "web"],
            {"force": False, "detach": True},
        ),
        (["service", "rollback", "-d=F", "web"], {"detach": False}),
        (["service", "scale", "--detach=t", "web=2"], {"detach": True, "pairs": ["web=2"]}),
        (["service", "logs", "--follow=false", "web"], {"follow": False}),
        (["service", "logs", "-f", "web"], {"follow": True, "targets": ["web"]}),
        (["node", "rm", "--force=true", "n3"], {"force": True, "nodes": ["n3"]}),
        (["node", "rm", "-f", "n3"], {"force": True}),
        (
            ["stack", "deploy", "--prune=false", "--detach=true", "-c", "a.yml", "web"],
            {"prune": False, "detach": True},
        ),
        (["stack", "deploy", "--prune", "-c", "a.yml", "web"], {"prune": True, "detach": False}),
        (["join-token", "-q=true", "worker"], {"quiet": True}),
        (["join-token", "--rotate=false", "manager"], {"rotate": False}),
        (["leave", "--force=1"], {"force": True}),
        (["events", "--no-follow=true"], {"no_follow": True}),
        (["agent", "--detach=false"], {"detach": False}),
        # short flags written together, as docker reads them: -ft is -f -t
        (["service", "logs", "-ft", "web"], {"follow": True, "timestamps": True}),
        (
            ["service", "logs", "-tfn", "5", "web"],
            {"follow": True, "timestamps": True, "tail": "5"},
        ),
        (["stack", "deploy", "-dc", "a.yml", "web"], {"detach": True, "compose_file": ["a.yml"]}),
        (
            ["stack", "deploy", "--resolve-image", "never", "-c", "a.yml", "web"],
            {"resolve_image": "never"},
        ),
        # node ps, node update --role
        (["node", "ps"], {"nodes": [], "quiet": False, "no_trunc": False, "filter": []}),
        (["node", "ps", "-q", "self", "n2"], {"nodes": ["self", "n2"], "quiet": True}),
        (
            ["node", "ps", "-f", "desired-state=running", "--format", "{{.Name}}"],
            {"filter": [("desired-state", "running")], "format": "{{.Name}}"},
        ),
        (["node", "update", "--role", "manager", "n2"], {"role": "manager", "node": "n2"}),
        (["node", "update", "--availability", "drain", "self"], {"role": None, "node": "self"}),
        # -c - : a stack file from standard input
        (["stack", "deploy", "-c", "-", "web"], {"compose_file": ["-"], "name": "web"}),
        (["stack", "config", "-c", "-"], {"compose_file": ["-"]}),
        (
            ["stack", "deploy", "-c", "base.yml", "-c", "-", "web"],
            {"compose_file": ["base.yml", "-"]},
        ),
    ],
)
def test_a_command_line_parses_as_docker_reads_it(
    argv: list[str], expected: dict[str, Any]
) -> None:
    values = parsed(argv)
    assert {key: values[key] for key in expected} == expected


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["node", "ls", "-f", "role"],
            "argument -f/--filter: bad format of filter (expected name=value)",
        ),
        (
            ["node", "ls", "-f", "color=red"],
            "argument -f/--filter: invalid filter 'color' "
            "(accepted: id, label, membership, name, node.label, role)",
        ),
        (
            ["node", "ls", "-f", "role=boss"],
            "invalid filter 'role=boss' (accepted: manager, worker)",
        ),
        (["node", "ls", "-f", "membership=gone"], "invalid filter 'membership=gone'"),
        (["service", "ls", "-f", "mode=replicated-job"], "invalid filter 'mode=replicated-job'"),
        (
            ["service", "ls", "-f", "node=n1"],
            "invalid filter 'node' (accepted: id, label, mode, name)",
        ),
        (
            ["service", "ps", "web", "-f", "mode=global"],
            "invalid filter 'mode' (accepted: desired-state, id, name, node)",
        ),
        (
            ["service", "ps", "web", "-f", "desired-state=dead"],
            "invalid filter 'desired-state=dead'",
        ),
        (["stack", "ps", "web", "-f", "label=a"], "invalid filter 'label'"),
        (["secret", "ls", "-f", "driver=x"], "invalid filter 'driver' (accepted: id, label, name)"),
        (["config", "ls", "-f", "names"], "bad format of filter"),
        (["stack", "ls", "-f", "name=x"], "unrecognized arguments: -f name=x"),
        (
            ["node", "ps", "-f", "node=n1"],
            "invalid filter 'node' (accepted: desired-state, id, name)",
        ),
        (["node", "update", "--role", "boss", "n2"], "argument --role: invalid choice: 'boss'"),
        (["node", "ls", "--format", "yaml"], "argument --format: invalid choice: 'yaml'"),
        (["service", "ls", "--format", "{.Name}"], "invalid choice: '{.Name}'"),
        (
            ["node", "inspect", "--format", "table", "n1"],
            "argument -f/--format: invalid choice: 'table'",
        ),
        (
            ["service", "update", "--force=maybe", "web"],
            "argument --force: invalid boolean value 'maybe' (true or false)",
        ),
        (["node", "ls", "-q=yes"], "argument -q/--quiet: invalid boolean value 'yes'"),
    ],
)
def test_a_wrong_flag_is_a_usage_error_in_dockers_words(argv: list[str], message: str) -> None:
    with pytest.raises(UsageError) as error:
        parsed(argv)
    assert message in str(error.value)


@pytest.mark.parametrize(
    ("alias", "canonical"),
    [
        (["node", "list"], ["node", "ls"]),
        (["node", "remove", "n1"], ["node", "rm", "n1"]),
        (["service", "list"], ["service", "ls"]),
        (["service", "remove", "web"], ["service", "rm", "web"]),
        (["stack", "list"], ["stack", "ls"]),
        (["stack", "up", "-c", "a.yml", "web"], ["stack", "deploy", "-c", "a.yml", "web"]),
        (["stack", "down", "web"], ["stack", "rm", "web"]),
        (["stack", "remove", "web"], ["stack", "rm", "web"]),
        (["secret", "list"], ["secret", "ls"]),
        (["secret", "remove", "s"], ["secret", "rm", "s"]),
        (["config", "list"], ["config", "ls"]),
        (["config", "remove", "c"], ["config", "rm", "c"]),
    ],
)
def test_dockers_aliases_run_the_same_command(alias: list[str], canonical: list[str]) -> None:
    assert handler_of(alias) == handler_of(canonical)
    alias_values, canonical_values = parsed(alias), parsed(canonical)
    for values in (alias_values, canonical_values):
        values.pop(next(k for k in values if k.endswith("_command")))  # the word typed
    assert alias_values == canonical_values


@pytest.mark.parametrize(
    ("text", "expected"),
    [(t, True) for t in ("1", "t", "T", "TRUE", "true", "True")]
    + [(f, False) for f in ("0", "f", "F", "FALSE", "false", "False")],
)
def test_boolean_values_are_gos_strconv_parsebool(text: str, expected: bool) -> None:
    assert parse_bool(text) is expected


@pytest.mark.parametrize("text", ["yes", "no", "on", "tRuE", ""])
def test_other_boolean_values_are_refused(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_bool(text)


@pytest.mark.parametrize(
    ("argv", "examples"),
    [
        (
            ["node", "ls"],
            [
                "-q",
                "--format '{{.Hostname}}\\t{{.Status}}'",
                "--format 'table {{.Hostname}}\\t{{.Status}}'",
                "--filter role=manager",
            ],
        ),
        (
            ["service", "ls"],
            ["-q", "--format '{{.Name}}\\t{{.Replicas}}'", "--filter mode=replicated"],
        ),
        (
            ["service", "ps"],
            [
                "-q",
                "--format 'table {{.Name}}\\t{{.CurrentState}}'",
                "--filter desired-state=running",
            ],
        ),
        (["stack", "ls"], ["-q", "--format '{{.Name}}\\t{{.Services}}'"]),
        (["stack", "services"], ["-q", "--filter mode=replicated"]),
        (["stack", "ps"], ["-q", "--filter desired-state=running"]),
        (["stack", "deploy"], ["stack up -c - web < stacks/web.yml", "--detach=false"]),
        (
            ["secret", "ls"],
            ["-q", "--format '{{.Name}}\\t{{.CreatedAt}}'", "--filter label=com.example.team"],
        ),
        (["config", "ls"], ["-q", "--filter label=com.example.team"]),
        (["node", "inspect"], ["--format '{{.hostname}} {{.status}}'"]),
        (["node", "ps"], ["-q self", "--filter desired-state=running self"]),
        (["node", "update"], ["--role manager n2"]),
        (["service", "inspect"], ["--format '{{.spec.image}}'"]),
        (["secret", "inspect"], ["--format '{{.name}} {{json .labels}}'"]),
    ],
)
def test_help_shows_an_example_of_each_new_flag(
    argv: list[str], examples: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        build_parser(argv[0]).parse_args([*argv, "--help"])
    help_text = capsys.readouterr().out
    for example in examples:
        assert example in help_text
