"""What a command imports is what it uses: the `swarmlet` process of `--version`, of the read
commands and of a write loads no event loop, no rich, no crypto and none of the agent.

Each command runs in a fresh interpreter, as the console script runs it (`from swarmlet.cli.main
import entrypoint`), against a fake agent (or none), with its output to a pipe as in a script;
the test compares the modules loaded after the interpreter started. Start-up time itself is
measured by `bench.cli_startup`, never asserted.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli.fake_agent import fake_agent

# Run by the child: the command line is argv[2:], the modules it loaded go to the file argv[1].
PROBE = """\
import sys
before = set(sys.modules)
out, argv = sys.argv[1], sys.argv[2:]
sys.argv = ["swarmlet", *argv]
from swarmlet.cli.main import entrypoint
try:
    entrypoint()
except SystemExit as exc:
    status = exc.code
with open(out, "w") as f:
    f.write("\\n".join([str(status), *sorted(set(sys.modules) - before)]))
"""

# Loaded by no read command and no simple write (a module, or a package and all it holds).
HEAVY = (
    "trio",
    "rich",
    "cryptography",
    "docker",
    "yaml",
    "jsonschema",
    "psutil",
    "asyncio",
    "subprocess",
    "swarmlet.crypto",
    "swarmlet.wire",
    "swarmlet.state",
    "swarmlet.stack",
    "swarmlet.raft",
    "swarmlet.gossip",
    "swarmlet.leader",
    "swarmlet.executor",
    "swarmlet.proxy",
    "swarmlet.node",
    "swarmlet.dashboard",
    "swarmlet.api.control_socket",
    "swarmlet.security.datadir",  # the identity and keys: not needed to find the agent
    "swarmlet.cli.agent_process",
    "swarmlet.cli.cluster",
    "swarmlet.cli.service_flags",
    "swarmlet.cli.stack",
)

# What every command that asks the agent loads of swarmlet, besides its own command module.
CALLING_THE_AGENT = {
    "swarmlet",
    "swarmlet.errors",
    "swarmlet.cli",
    "swarmlet.cli.main",
    "swarmlet.cli.common",
    "swarmlet.cli.output",
    "swarmlet.api",
    "swarmlet.api.control_client",
    "swarmlet.api.control_protocol",
    "swarmlet.security",
    "swarmlet.security.datadir_location",
}


def run_probe(tmp_path: Path, *argv: str) -> tuple[int, set[str], str]:
    """Exit status, modules loaded, and stdout of `swarmlet ARGV` in a fresh interpreter."""
    out = tmp_path / "modules.txt"
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "TTY_COMPATIBLE")}
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, str(out), *argv],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert out.exists(), proc.stderr
    status, *modules = out.read_text().split("\n")
    return int(status), set(modules), proc.stdout


def heavy(modules: set[str]) -> set[str]:
    return {m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY)}


def swarmlet_modules(modules: set[str]) -> set[str]:
    return {m for m in modules if m == "swarmlet" or m.startswith("swarmlet.")}


def test_version_loads_only_the_entry_point(tmp_path: Path) -> None:
    status, modules, stdout = run_probe(tmp_path, "--version")
    assert (status, stdout) == (0, "swarmlet 0.1.0\n")
    # Not argparse, not typing: nothing at all but the package and the entry point.
    assert modules == {"swarmlet", "swarmlet.cli", "swarmlet.cli.main"}


@pytest.mark.parametrize(
    ("argv", "command_module", "printed"),
    [
        (["node", "ls"], "swarmlet.cli.node", "uficacalf7fm *  c1"),
        (["node", "ls", "--format", "json"], "swarmlet.cli.node", '"hostname": "c1"'),
        (["service", "ls"], "swarmlet.cli.service", "*:18080->80/tcp"),
        (["service", "ps", "web"], "swarmlet.cli.service", "web.1"),
        (["node", "update", "--label-add", "a=b", "c1"], "swarmlet.cli.node", "c1\n"),
    ],
)
def test_a_command_loads_no_event_loop_no_rich_and_none_of_the_agent(
    tmp_path: Path, argv: list[str], command_module: str, printed: str
) -> None:
    data_dir = tmp_path / "d"
    with fake_agent(data_dir) as requests:
        status, modules, stdout = run_probe(tmp_path, *argv, "--data-dir", str(data_dir))
    assert status == 0
    assert printed in stdout
    assert len(requests) == 1
    assert heavy(modules) == set()
    assert swarmlet_modules(modules) == CALLING_THE_AGENT | {command_module}


def test_no_agent_fails_without_loading_more(tmp_path: Path) -> None:
    status, modules, _ = run_probe(tmp_path, "node", "ls", "--data-dir", str(tmp_path / "none"))
    assert status == 1
    assert heavy(modules) == set()
    assert swarmlet_modules(modules) == CALLING_THE_AGENT | {"swarmlet.cli.node"}


def test_help_loads_the_parsers_only(tmp_path: Path) -> None:
    status, modules, stdout = run_probe(tmp_path, "--help")
    assert status == 0 and "node" in stdout
    assert heavy(modules) <= {
        "swarmlet.cli.cluster",
        "swarmlet.cli.stack",
    }  # their parsers; not what their commands load
    assert not {m for m in modules if m.startswith(("swarmlet.api", "swarmlet.security"))}


@pytest.mark.parametrize(
    "argv",
    [
        ["node", "ls"],
        ["node", "ls", "--format", "json"],
        ["service", "ls"],
        ["service", "ps", "web"],
        ["service", "ls", "--format", "json"],
        ["service", "ls", "--format", "{{.Name}}\t{{.Replicas}}"],  # tabs stay tabs
        ["node", "ls", "--format", "table {{.Hostname}}\\t{{.Status}}"],
    ],
)
def test_a_script_reads_what_rich_prints(tmp_path: Path, argv: list[str]) -> None:
    """The plain output of a command run as in a script equals the same command's output
    through rich (a Console injected, as the tests of every command do)."""
    from rich.console import Console

    from swarmlet.cli.main import main

    data_dir = tmp_path / "d"
    with fake_agent(data_dir):
        _, _, plain_stdout = run_probe(tmp_path, *argv, "--data-dir", str(data_dir))
        through_rich = io.StringIO()
        console = Console(file=through_rich, width=200)
        assert main([*argv, "--data-dir", str(data_dir)], console) == 0
    assert plain_stdout == through_rich.getvalue()


# The template engine and docker's list formatting: loaded only by a command given a template.
TEMPLATES = {
    "swarmlet.cli.gotemplate",
    "swarmlet.cli.gotemplate_values",
    "swarmlet.cli.docker_format",
}


@pytest.mark.parametrize(
    ("argv", "command_module", "loaded", "printed"),
    [
        (["service", "ls", "-q"], "swarmlet.cli.service", set(), "kumeeuaxer5u\n"),
        (["node", "ls", "--filter", "role=manager"], "swarmlet.cli.node", set(), "c1"),
        (
            ["service", "ls", "--format", "{{.Name}} {{.Replicas}}"],
            "swarmlet.cli.service",
            TEMPLATES,
            "web 2/2\n",
        ),
        (
            ["node", "ls", "--format", "table {{.Hostname}}"],
            "swarmlet.cli.node",
            TEMPLATES,
            "HOSTNAME\nc1\n",
        ),
    ],
)
def test_the_template_engine_is_loaded_only_for_a_template(
    tmp_path: Path, argv: list[str], command_module: str, loaded: set[str], printed: str
) -> None:
    data_dir = tmp_path / "d"
    with fake_agent(data_dir):
        status, modules, stdout = run_probe(tmp_path, *argv, "--data-dir", str(data_dir))
    assert status == 0
    assert printed in stdout
    assert heavy(modules) == set()
    assert swarmlet_modules(modules) == CALLING_THE_AGENT | {command_module} | loaded
