"""The real dashboard in a real terminal (tmux) against a real two-agent cluster.

It shows both nodes ready, takes keys (opens a node's screen and comes back), shows the one we
kill -9 as DOWN, keeps running (and says so) when its own agent dies too, quits on `q` with
status 0, and leaves the terminal as it found it: the alternate screen off and the same termios
settings (`stty -g`) as before it started.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.cluster import local_cluster, wait_for

pytestmark = pytest.mark.integration

WIDTH, HEIGHT = 120, 40


class Tmux:
    """One tmux server of our own (its own socket), so nothing else's sessions are touched."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.session = "dash"

    def __call__(self, *args: str) -> str:
        proc = subprocess.run(
            ["tmux", "-L", self.name, *args],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        return proc.stdout

    def screen(self) -> str:
        return self("capture-pane", "-p", "-t", self.session)

    def kill(self) -> None:
        subprocess.run(
            ["tmux", "-L", self.name, "kill-server"], capture_output=True, timeout=10, check=False
        )


@pytest.fixture
def tmux() -> Iterator[Tmux]:
    if shutil.which("tmux") is None:
        pytest.fail("tmux is not installed (.ci/setup.sh installs it)")
    t = Tmux(f"swarmlet-dash-{os.getpid()}")
    try:
        yield t
    finally:
        t.kill()


def node_statuses(screen: str) -> dict[str, str]:
    """{node name: ready | DOWN} from the Nodes section of a captured screen."""
    statuses: dict[str, str] = {}
    in_nodes = False
    for line in screen.splitlines():
        if line.startswith(("── ", "━━ ")):  # a heading; "━━ ▶" is the focused pane's
            in_nodes = line.startswith(("── Nodes", "━━ ▶ Nodes"))
            continue
        tokens = line.replace("★", " ").replace("▶", " ").split()
        if in_nodes and len(tokens) >= 2:
            for word in ("ready", "DOWN"):
                if word in tokens:
                    statuses[tokens[0].rstrip("*")] = word
    return statuses


def wait_screen(
    tmux: Tmux, what: str, predicate: Callable[[str], bool], rc_file: Path, timeout: float = 60
) -> None:
    """Poll the screen until `predicate` holds; fail with the screen if the dashboard exits."""
    deadline = time.monotonic() + timeout
    screen = ""
    while time.monotonic() < deadline:
        screen = tmux.screen()
        if predicate(screen):
            return
        if rc_file.exists():
            pytest.fail(
                f"the dashboard exited ({rc_file.read_text().strip()}) before {what}:\n{screen}"
            )
        time.sleep(0.2)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}; the screen:\n{screen}")


def test_dashboard_shows_a_killed_agent_down_and_quits_on_q(tmp_path: Path, tmux: Tmux) -> None:
    with local_cluster(tmp_path) as cluster:
        cluster.start(managers=2)
        rc_file, before, after = tmp_path / "rc", tmp_path / "stty.before", tmp_path / "stty.after"
        env = [f"SWARMLET_DATA_DIR={cluster.agents[0].data_dir}"]
        if os.environ.get("PYTHONPATH"):
            env.append(f"PYTHONPATH={os.environ['PYTHONPATH']}")
        dashboard = shlex.join(
            ["env", *env, sys.executable, "-m", "swarmlet", "dashboard", "--interval", "0.3"]
        )
        script = (
            f"stty -g > {shlex.quote(str(before))}; {dashboard}; "
            f"echo $? > {shlex.quote(str(rc_file))}; stty -g > {shlex.quote(str(after))}; "
            "exec sleep 600"
        )
        tmux("new-session", "-d", "-s", tmux.session, "-x", str(WIDTH), "-y", str(HEIGHT), script)

        wait_screen(
            tmux,
            "both nodes ready",
            lambda screen: (
                node_statuses(screen) == {"n1": "ready", "n2": "ready"} and "● ok" in screen
            ),
            rc_file,
        )
        assert tmux("display-message", "-p", "-t", tmux.session, "#{alternate_on}").strip() == "1"
        # Keys reach it through the real terminal: open the first node, then go back.
        tmux("send-keys", "-t", tmux.session, "1", "Enter")
        wait_screen(tmux, "n1's screen", lambda screen: "── Node n1" in screen, rc_file)
        tmux("send-keys", "-t", tmux.session, "Escape")
        wait_screen(tmux, "the overview", lambda screen: "━━ ▶ Nodes" in screen, rc_file)

        cluster.kill(cluster.agents[1])
        wait_screen(
            tmux,
            "n2 down",
            lambda screen: node_statuses(screen) == {"n1": "ready", "n2": "DOWN"},
            rc_file,
        )
        # The agent it talks to dies too: the dashboard keeps running and says so.
        cluster.kill(cluster.agents[0])
        wait_screen(
            tmux, "the agent unreachable", lambda screen: "✗ unreachable" in screen, rc_file
        )
        assert node_statuses(tmux.screen()) == {"n1": "ready", "n2": "DOWN"}  # the last known

        tmux("send-keys", "-t", tmux.session, "q")
        wait_for("the dashboard to exit", lambda: rc_file.exists() and after.exists(), timeout=20)
        assert rc_file.read_text().strip() == "0"
        assert tmux("display-message", "-p", "-t", tmux.session, "#{alternate_on}").strip() == "0"
        assert after.read_text() == before.read_text()
        assert "── Nodes" not in tmux.screen()
