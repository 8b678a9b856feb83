"""The agent as a process seen from the command line: start it in the background or in this
process, tell whether it runs, wait until it is ready.

`init`, `join` and `agent --detach` start the agent as a detached child (`python -m swarmlet
agent`, its output appended to the data dir's log) and return once it answers on its control
socket in the state the command promised; if it dies first, the error carries the tail of its
log. Whether an agent already runs is read from `agent.pid` and /proc, never by signalling it.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from swarmlet.errors import AgentUnavailableError, SwarmletError

if TYPE_CHECKING:
    from swarmlet.security.datadir import DataDir

READY_TIMEOUT_S = 30.0
READY_POLL_INTERVAL_S = 0.1

AgentStatus = dict[str, Any]  # the result of the control API's `status`


def agent_running(datadir: DataDir) -> bool:
    """Is the process in agent.pid alive and ours? A pid file left by a killed agent may name a
    zombie (nothing reaps it in some containers) or, later, an unrelated process."""
    pid = datadir.read_pid()
    if pid is None:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    state = stat.rsplit(")", 1)[-1].split()[0]
    return state != "Z" and b"swarmlet" in cmdline


def start_background_agent(datadir: DataDir, *, held: bool = False) -> subprocess.Popen[bytes]:
    """`held`: the agent loads its code, then waits for `release(proc)` before it reads anything
    of the data dir, and exits quietly if the pipe closes first. `join` starts it so while the
    join handshake runs: the agent's imports (about half a second) then overlap the handshake
    instead of following it."""
    datadir.create()
    cmd = [sys.executable, "-m", "swarmlet", "agent", "--data-dir", str(datadir.path)]
    log = open(datadir.log_file, "ab")  # noqa: SIM115 - handed to the child process
    try:
        return subprocess.Popen(
            [*cmd, "--held"] if held else cmd,
            stdin=subprocess.PIPE if held else subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )
    finally:
        log.close()


RELEASE = b"go\n"


def release(proc: subprocess.Popen[bytes]) -> None:
    """Let a held agent (`start_background_agent(held=True)`) start."""
    assert proc.stdin is not None
    with proc.stdin:
        proc.stdin.write(RELEASE)


def abandon(proc: subprocess.Popen[bytes]) -> None:
    """A held agent that must not start: it sees its pipe close and exits."""
    assert proc.stdin is not None
    proc.stdin.close()
    proc.wait()


def wait_for_release() -> bool:
    """In a held agent: load the agent's code, then wait for `release`. False if the pipe
    closed without it (the command that started it failed, or was interrupted)."""
    import swarmlet.node.main  # noqa: F401 - the point: imported before the wait

    return sys.stdin.buffer.readline() == RELEASE


def run_agent_foreground(datadir: DataDir, *, on_ready: Callable[[], None] | None = None) -> int:
    """Run the agent in this process until it stops; its exit status."""
    from swarmlet.node.main import run_agent  # the agent's imports are heavy: load on demand

    return run_agent(datadir, on_ready=on_ready)


def wait_ready(
    datadir: DataDir,
    proc: subprocess.Popen[bytes] | None,
    want: Callable[[AgentStatus], bool],
) -> AgentStatus:
    """Poll the new agent's status until `want` holds; fail with its log if it dies first."""
    from swarmlet.api.control_client import BlockingControlClient

    client = BlockingControlClient(datadir.socket_path)
    deadline = time.monotonic() + READY_TIMEOUT_S
    last_error = ""
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = log_tail(datadir)
            raise SwarmletError(f"the agent exited with status {proc.returncode}:\n{tail}")
        try:
            status: AgentStatus = client.call("status")
            if want(status):
                return status
        except AgentUnavailableError as exc:
            last_error = str(exc)
        time.sleep(READY_POLL_INTERVAL_S)
    raise SwarmletError(
        f"the agent did not become ready within {READY_TIMEOUT_S:.0f} s ({last_error}); "
        f"see {datadir.log_file}"
    )


def log_tail(datadir: DataDir, lines: int = 20) -> str:
    try:
        return "\n".join(datadir.log_file.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


def is_member_with_leader(status: AgentStatus) -> bool:
    """Ready for `init`: this node is in the state and a leader is known."""
    return bool(status["member"]) and status["raft"]["leader_id"] is not None


def is_member_seeing_others(status: AgentStatus) -> bool:
    """Ready for `join`: this node is in the state and gossip sees another live node."""
    return bool(status["member"]) and status["gossip"]["alive"] > 1
