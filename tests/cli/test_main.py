"""cli.main: failures map to exit statuses in one place; a command line builds only its own
command's parser, which parses as the whole one does; the parser loads no heavy module; the
command modules never import the entry point. (What each command imports: `test_imports`.)"""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from swarmlet.cli import agent_process
from swarmlet.cli import main as cli_main
from swarmlet.cli.common import ExitStatus
from swarmlet.cli.main import COMMAND_MODULES, build_parser, main
from swarmlet.security.datadir import DataDir


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[ExitStatus, str, str]:
    out = io.StringIO()
    status = main(argv, Console(file=out, width=200))
    # Errors go to a Console on stderr, wrapped at its width: compare the words.
    return status, out.getvalue(), " ".join(capsys.readouterr().err.split())


@pytest.mark.parametrize("flag", ["--advertise-addr", "--publish-addr"])
@pytest.mark.parametrize("command", ["init", "join"])
def test_an_address_the_other_agents_would_refuse_is_refused_at_once(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, command: str, flag: str
) -> None:
    """Every member drops gossip from a host with a 64-byte label (it made them raise):
    such a node must not be made at all."""
    argv = [command, "--data-dir", str(tmp_path / "n"), flag, "a" * 64]
    if command == "join":
        argv += ["--token", "SWMTKN-x", "127.0.0.1:7946"]
    status, _, err = run(argv, capsys)
    assert status is ExitStatus.USAGE
    assert f"argument {flag}: {'a' * 64!r} is not an IP address or a host name" in err
    assert not (tmp_path / "n").exists()


def test_a_bad_command_line_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = run(["node", "ls", "--format", "yaml"], capsys)
    assert status is ExitStatus.USAGE
    assert "error: swarmlet node ls: argument --format: invalid choice: 'yaml'" in err


def test_a_missing_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = run([], capsys)
    assert status is ExitStatus.USAGE
    assert "the following arguments are required: COMMAND" in err


def test_no_agent_is_an_error_that_says_how_to_start_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, _, err = run(["node", "ls", "--data-dir", str(tmp_path)], capsys)
    assert status is ExitStatus.ERROR
    assert "no agent answers" in err and "swarmlet agent --detach" in err


def test_a_stack_that_does_not_load_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, _, err = run(["stack", "config", "-c", str(tmp_path / "missing.yml")], capsys)
    assert status is ExitStatus.ERROR
    assert "no such file" in err


def test_exit_statuses_are_the_documented_numbers() -> None:
    assert [int(s) for s in ExitStatus] == [0, 1, 2, 3, 130]


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["node", "ls", "--help"],
        ["service", "create", "--help"],
        ["stack", "deploy", "--help"],
        ["secret", "create", "--help"],
        ["config", "ls", "--help"],
        ["events", "--help"],
    ],
)
def test_help_exits_cleanly(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(argv)
    assert exc.value.code == 0


def test_every_command_group_is_registered() -> None:
    parser = build_parser()
    (sub,) = [a for a in parser._actions if a.dest == "command"]
    assert set(sub.choices or ()) == {
        "init",
        "join",
        "agent",
        "join-token",
        "leave",
        "status",
        "events",
        "backup",
        "update",
        "unlock",
        "unlock-key",
        "node",
        "service",
        "stack",
        "secret",
        "config",
        "dashboard",
    }


def _commands(parser: argparse.ArgumentParser) -> list[str]:
    (sub,) = [a for a in parser._actions if a.dest == "command"]
    return list(sub.choices or ())


def test_the_command_table_names_every_command_in_help_order() -> None:
    assert _commands(build_parser()) == list(COMMAND_MODULES)


@pytest.mark.parametrize("command", list(COMMAND_MODULES))
def test_a_command_line_builds_the_parsers_of_its_own_module_only(command: str) -> None:
    module = COMMAND_MODULES[command]
    assert _commands(build_parser(command)) == [
        name for name, owner in COMMAND_MODULES.items() if owner == module
    ]


@pytest.mark.parametrize("first_word", [None, "--help", "-h", "--version", "nod", "NODE"])
def test_anything_else_builds_every_parser(first_word: str | None) -> None:
    assert _commands(build_parser(first_word)) == list(COMMAND_MODULES)


@pytest.mark.parametrize(
    "argv",
    [
        ["node", "ls", "--format", "json", "--data-dir", "/d"],
        ["service", "update", "--image", "web:2", "--update-order", "start-first", "web"],
        ["service", "create", "--name", "web", "-p", "8080:80", "img", "sh", "-c", "x"],
        ["stack", "deploy", "-c", "a.yml", "-c", "b.yml", "--prune", "web"],
        ["config", "ls", "--format", "json"],
        ["events", "--since", "10m", "--filter", "type=node", "--no-follow"],
        ["join-token", "-q", "worker"],
        ["stack", "up", "-c", "-", "--detach=false", "web"],
        ["node", "ls", "-q", "-f", "role=manager", "--format", "{{.ID}}"],
        ["service", "ps", "web", "--no-trunc", "--format", "table {{.ID}}"],
        ["secret", "list", "--filter", "label=a"],
    ],
)
def test_the_partial_parser_parses_as_the_whole_one(argv: list[str]) -> None:
    def parsed(parser: argparse.ArgumentParser) -> dict[str, Any]:
        values = vars(parser.parse_args(argv))
        # (a handler made per build, like `secret._ls(is_config)`, is a new closure each time)
        handler = values.pop("handler")
        cells = [c.cell_contents for c in handler.__closure__ or ()]
        return {**values, "handler": (handler.__module__, handler.__qualname__, cells)}

    assert parsed(build_parser(argv[0])) == parsed(build_parser())


def test_version_is_answered_before_argparse_as_argparse_answers_it(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(SystemExit) as by_argparse:
        main(["--version"])
    from_argparse = capsys.readouterr()
    monkeypatch.setattr(sys, "argv", ["swarmlet", "--version"])
    with pytest.raises(SystemExit) as fast:
        cli_main.entrypoint()
    assert (fast.value.code, capsys.readouterr()) == (by_argparse.value.code, from_argparse)
    assert from_argparse.out == "swarmlet 0.1.0\n"


def _modules_after(code: str) -> set[str]:
    probe = f"import sys\n{code}\nprint('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", probe], check=True, capture_output=True, text=True, timeout=60
    ).stdout
    return set(out.split())


def test_building_the_parser_loads_no_heavy_module() -> None:
    """`swarmlet --version` and `--help` build the whole parser: they must stay fast."""
    loaded = _modules_after("from swarmlet.cli.main import build_parser; build_parser()")
    heavy = {
        "trio",
        "msgpack",
        "cryptography",
        "socket",
        "swarmlet.api",
        "swarmlet.security",
        "swarmlet.stack",
        "swarmlet.state",
        "swarmlet.node",
        "swarmlet.dashboard",
        "rich",
    }
    assert not heavy & loaded


def test_join_leaves_the_handshake_and_its_imports_to_the_agent_it_starts(tmp_path: Path) -> None:
    """The agent `join` starts makes the handshake (`agent_process.JoiningAgent`): the command
    itself loads neither trio nor cryptography (on a busy machine, two interpreters loading
    them was much of a join's time), and an error of the handshake still reaches its stderr
    and its exit status. The data dir keeps no node, and no agent is left."""
    token = "SWLT-1-" + "0" * 16 + "-" + "a" * 32
    node = tmp_path / "n"
    argv = ["join", "--data-dir", str(node), "--token", token, "--advertise-addr", "127.0.0.1"]
    code = (
        "from swarmlet.cli.main import main\n"
        f"status = main({[*argv, '127.0.0.1:9']!r})\n"
        "print('exit', int(status))"
    )
    probe = f"import sys\n{code}\nprint('\\n'.join(sorted(sys.modules)))"
    proc = subprocess.run(
        [sys.executable, "-c", probe], check=True, capture_output=True, text=True, timeout=60
    )
    loaded = set(proc.stdout.split())
    assert "exit" in loaded and "1" in loaded  # ExitStatus.ERROR: nothing listens on port 9
    assert "cannot reach 127.0.0.1:9" in proc.stderr
    assert not {"trio", "cryptography", "swarmlet.security.join"} & loaded
    assert not (node / "identity.msgpack").exists()
    assert "cannot reach 127.0.0.1:9" in (node / "agent.log").read_text()  # the agent's log too
    assert not agent_process.agent_running(DataDir(node))


def test_join_run_with_its_output_closed_still_ends(tmp_path: Path) -> None:
    """With stdout and stderr closed, the pipe the agent answers on got fds 1 and 2, which the
    agent's own output took over: it answered into its log, and `join` waited for ever (a
    successful one) (review). The pipe is kept above 0-2 now."""
    token = "SWLT-1-" + "0" * 16 + "-" + "a" * 32
    node = tmp_path / "n"
    join = f"{sys.executable} -m swarmlet join --data-dir {node} --token {token}"
    join += " --advertise-addr 127.0.0.1 127.0.0.1:9"
    proc = subprocess.run(["sh", "-c", f"exec {join} >&- 2>&-"], timeout=60, check=False)
    assert proc.returncode == int(ExitStatus.ERROR)
    assert "cannot reach 127.0.0.1:9" in (node / "agent.log").read_text()
    assert '"ok"' not in (node / "agent.log").read_text()  # the answer went where it should
    assert not agent_process.agent_running(DataDir(node))


@pytest.mark.parametrize(
    "module",
    ["common", "agent_process", "cluster", "node", "service", "service_flags", "stack", "secret"],
)
def test_command_modules_do_not_import_the_entry_point(module: str) -> None:
    assert "swarmlet.cli.main" not in _modules_after(f"import swarmlet.cli.{module}")
