"""Real-host packaging: vagrant/provision.sh, the systemd unit, and installing with pip.

Fast tests check the scripts' syntax and argument handling, the Vagrantfile (loaded by Ruby,
where it is installed, against a recording stand-in for Vagrant), the unit file (with
`systemd-analyze verify` where systemd's tools are installed), and that `pip install` of the
sources into a fresh virtualenv gives a working `swarmlet` command (needs PyPI). The integration
test runs vagrant/test-provision.sh: provision.sh on a fresh Debian 12 container built from
Debian's mirror (no registry involved), then `--role init` and `--role join` on two containers.
"""

from __future__ import annotations

import configparser
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
VAGRANT = REPO / "vagrant"
UNIT = VAGRANT / "swarmlet-agent.service"
SCRIPTS = ("provision.sh", "test-provision.sh")
NODES = {
    "swarmlet-1": "192.168.56.11",
    "swarmlet-2": "192.168.56.12",
    "swarmlet-3": "192.168.56.13",
}
INSTALLED_SWARMLET = "/opt/swarmlet/venv/bin/swarmlet"
# First run on a machine: debootstrap (~3 min) plus the rest (~2-4 min); afterwards the image
# and the downloaded .debs are cached. The budget is far above both: a slow mirror is no failure.
PROVISION_TIMEOUT_S = 1500


def _bash(*args: str, timeout_s: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", *args], capture_output=True, text=True, timeout=timeout_s, check=False
    )


def _unit() -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=False, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment, method-assign]  # keys are case-sensitive
    parser.read(UNIT)
    return parser


# ---------------------------------------------------------------------------- scripts


@pytest.mark.parametrize("script", SCRIPTS)
def test_script_is_valid_bash(script: str) -> None:
    result = _bash("-n", str(VAGRANT / script))
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("script", SCRIPTS)
def test_script_help_prints_usage_and_succeeds(script: str) -> None:
    result = _bash(str(VAGRANT / script), "--help")
    assert result.returncode == 0, result.stderr
    assert "Usage:" in result.stdout


@pytest.mark.parametrize("script", SCRIPTS)
def test_script_rejects_unknown_option_with_usage_exit_status(script: str) -> None:
    result = _bash(str(VAGRANT / script), "--bogus")
    assert result.returncode == 2
    assert "unknown" in result.stderr


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["--role", "init"], "--role init needs --advertise-addr"),
        (
            ["--role", "join", "--advertise-addr", "10.0.0.2"],
            "--role join needs --advertise-addr, --token and --join",
        ),
        (["--role", "worker", "--advertise-addr", "10.0.0.2"], "--role is init or join"),
    ],
)
def test_provision_refuses_incomplete_role_before_touching_the_host(
    args: list[str], complaint: str
) -> None:
    result = _bash(str(VAGRANT / "provision.sh"), *args)
    assert result.returncode == 1
    assert complaint in result.stderr


# ---------------------------------------------------------------------------- Vagrantfile


@pytest.fixture(scope="module")
def vagrantfile() -> dict[str, Any]:
    """The Vagrantfile as loaded by Ruby against a recording stand-in for Vagrant's DSL."""
    ruby = shutil.which("ruby")
    if ruby is None:
        pytest.fail("ruby is not installed (Debian package ruby; .ci/setup.sh installs it)")
    result = subprocess.run(
        [ruby, str(Path(__file__).with_name("load_vagrantfile.rb")), str(VAGRANT / "Vagrantfile")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    loaded: dict[str, Any] = json.loads(result.stdout)
    return loaded


def _calls(loaded: dict[str, Any], receiver: str, method: str) -> list[list[Any]]:
    return [c for c in loaded["calls"] if c[0] == receiver and c[1] == method]


def _inline_provisioners(loaded: dict[str, Any], machine: str) -> list[str]:
    return [c[3]["inline"] for c in _calls(loaded, f"machine:{machine}.vm", "provision")]


def test_vagrantfile_defines_three_debian_vms_on_the_private_network(
    vagrantfile: dict[str, Any],
) -> None:
    assert _calls(vagrantfile, "config.vm", "box=") == [
        ["config.vm", "box=", ["debian/bookworm64"], {}]
    ]
    machines = [c[2][0] for c in _calls(vagrantfile, "config.vm", "define")]
    assert machines == list(NODES)
    for name, ip in NODES.items():
        networks = _calls(vagrantfile, f"machine:{name}.vm", "network")
        assert [(c[2], c[3]) for c in networks] == [(["private_network"], {"ip": ip})]
    for memory in _calls(vagrantfile, "config.vm.provider", "memory="):
        assert 1024 <= memory[2][0] <= 2048


def test_vagrantfile_syncs_the_repository_outside_the_venv(vagrantfile: dict[str, Any]) -> None:
    folders = {c[2][0]: (c[2][1], c[3]) for c in _calls(vagrantfile, "config.vm", "synced_folder")}
    target, options = folders[".."]
    assert target == "/opt/swarmlet/src"
    # rsync --delete must never reach /opt/swarmlet/venv.
    assert not "/opt/swarmlet/venv".startswith(target)
    assert ".venv/" in options["rsync__exclude"]


def test_vagrantfile_inits_the_first_vm_and_joins_the_others_to_it(
    vagrantfile: dict[str, Any],
) -> None:
    (init,) = _inline_provisioners(vagrantfile, "swarmlet-1")
    assert "vagrant/provision.sh --role init --advertise-addr 192.168.56.11" in init
    for name in ("swarmlet-2", "swarmlet-3"):
        (join,) = _inline_provisioners(vagrantfile, name)
        assert f"--role join --advertise-addr {NODES[name]}" in join
        assert "--join 192.168.56.11:7946" in join
        assert "manager.token" in join
    # The first VM saves the tokens; the last one has the first deploy the web stack.
    assert _calls(vagrantfile, "machine:swarmlet-1.trigger", "after")
    assert _calls(vagrantfile, "machine:swarmlet-3.trigger", "after")
    assert (
        "stack deploy -c /opt/swarmlet/src/stacks/web.yml web"
        in vagrantfile["strings"]["DEPLOY_WEB"]
    )


def test_vagrantfile_shell_scripts_are_valid_bash(
    vagrantfile: dict[str, Any], tmp_path: Path
) -> None:
    scripts = [vagrantfile["strings"]["DEPLOY_WEB"]]
    scripts += [s for name in NODES for s in _inline_provisioners(vagrantfile, name)]
    for index, script in enumerate(scripts):
        path = tmp_path / f"script-{index}.sh"
        path.write_text(script)
        result = _bash("-n", str(path))
        assert result.returncode == 0, f"{script}\n{result.stderr}"


# ---------------------------------------------------------------------------- systemd unit


def test_unit_runs_the_agent_in_the_foreground_on_the_default_data_dir() -> None:
    service = _unit()["Service"]
    assert service["ExecStart"] == f"{INSTALLED_SWARMLET} agent --data-dir /var/lib/swarmlet"
    assert service["Type"] == "exec"  # the agent does not fork
    assert "--detach" not in service["ExecStart"]


def test_unit_stops_with_sigterm_and_restarts_after_failures() -> None:
    unit = _unit()
    assert unit["Service"]["KillSignal"] == "SIGTERM"
    assert unit["Service"]["TimeoutStopSec"] == "15"
    assert unit["Service"]["Restart"] == "on-failure"
    assert set(unit["Unit"]["After"].split()) >= {"docker.service", "network-online.target"}
    assert unit["Install"]["WantedBy"] == "multi-user.target"


def test_unit_hardening_leaves_docker_socket_and_secret_tmpfs_reachable() -> None:
    service = _unit()["Service"]
    # strict would make /run read-only: no docker.sock writes, no /run/swarmlet secret files.
    assert service["ProtectSystem"] != "strict"
    # A private /dev/shm (the secrets' fallback tmpfs) would be invisible to dockerd.
    assert "PrivateDevices" not in service
    assert "AF_UNIX" in service["RestrictAddressFamilies"].split()
    assert service["NoNewPrivileges"] == "yes"


def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.fail(
            "systemd-analyze is not installed (Debian package systemd; .ci/setup.sh installs it)"
        )
    # verify insists that ExecStart's binary exists: point it at a stand-in, change nothing else.
    stand_in = tmp_path / "swarmlet"
    stand_in.write_text("#!/bin/sh\n")
    stand_in.chmod(0o755)
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text().replace(INSTALLED_SWARMLET, str(stand_in)))
    result = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    # verify only warns (exit status 0) about unknown keys and unparsable values.
    assert result.stderr.strip() == ""


# ---------------------------------------------------------------------------- pip install


def test_pip_install_into_a_fresh_venv_gives_a_working_swarmlet(tmp_path: Path) -> None:
    # Build from a copy, as provision.sh does: an in-tree build would write build/ into the repo.
    source = tmp_path / "src"
    source.mkdir()
    shutil.copy(REPO / "pyproject.toml", source)
    shutil.copy(REPO / "README.md", source)
    shutil.copytree(
        REPO / "swarmlet", source / "swarmlet", ignore=shutil.ignore_patterns("__pycache__")
    )
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1")
    subprocess.run(
        [str(venv / "bin/python"), "-m", "pip", "install", "-q", str(source)],
        check=True,
        timeout=600,
        env=env,
    )
    version = subprocess.run(
        [str(venv / "bin/swarmlet"), "--version"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert version.stdout.startswith("swarmlet ")
    helped = subprocess.run(
        [str(venv / "bin/swarmlet"), "init", "--help"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert "--advertise-addr" in helped.stdout


# ---------------------------------------------------------------------------- a fresh Debian


def _docker_answers() -> bool:
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode == 0
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return False


@pytest.mark.integration
@pytest.mark.docker
def test_provision_installs_swarmlet_on_fresh_debian_and_forms_a_cluster() -> None:
    if not _docker_answers():
        pytest.fail("no Docker Engine answers")
    image_cached = (
        subprocess.run(
            ["docker", "image", "inspect", "swarmlet-test/debian:12"], capture_output=True
        ).returncode
        == 0
    )
    if not image_cached and os.geteuid() != 0:
        pytest.fail("building the Debian image needs root (debootstrap)")
    result = _bash(str(VAGRANT / "test-provision.sh"), timeout_s=PROVISION_TIMEOUT_S)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "test-provision.sh: ok" in result.stdout
    assert "skipping swarmlet-agent.service" in result.stdout  # no systemd in a container
    assert "already installed from this source" in result.stdout  # the second run
    assert "two-node cluster: ok" in result.stdout  # --role init, then --role join
