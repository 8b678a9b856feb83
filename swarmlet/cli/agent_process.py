"""The agent as a process seen from the command line: start it in the background or in this
process, tell whether it runs, wait until it is ready.

`init`, `join` and `agent --detach` start the agent as a detached child (`python -m swarmlet
agent`, its output appended to the data dir's log) and return once it answers on its control
socket in the state the command promised; if it dies first, the error carries the tail of its
log. Whether an agent already runs is read from `agent.pid` and /proc, never by signalling it.

`join` starts its agent at once and hands it the join to make (`JoiningAgent`): the agent
loads its code, makes the join handshake itself and tells the command how it went. The command
then loads nothing of the agent's (trio, the handshake, the cryptography): a join on a busy
machine started two interpreters that loaded most of that twice.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from swarmlet.errors import AgentUnavailableError, SwarmletError, UsageError

if TYPE_CHECKING:
    from swarmlet.security.datadir import DataDir, Identity

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


def start_background_agent(datadir: DataDir) -> subprocess.Popen[bytes]:
    datadir.create()
    return _spawn(datadir, [], stdin=subprocess.DEVNULL)


def _spawn(
    datadir: DataDir, extra: list[str], *, stdin: int, pass_fds: tuple[int, ...] = ()
) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "swarmlet", "agent", "--data-dir", str(datadir.path), *extra]
    log = open(datadir.log_file, "ab")  # noqa: SIM115 - handed to the child process
    try:
        return subprocess.Popen(
            cmd,
            stdin=stdin,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
            pass_fds=pass_fds,
        )
    finally:
        log.close()


class JoiningAgent:
    """`join`'s agent, started before the join is made: it loads its code while the command
    checks its flags, then takes the join to make on its stdin (one JSON line: what
    `join_as_asked` takes), makes it, answers on a pipe of its own (`--join-reply-fd`), and
    runs. A pipe closed without a join makes it exit at once, having written nothing."""

    def __init__(self, datadir: DataDir) -> None:
        datadir.create()
        read_end, write_end = (_above_stdio(fd) for fd in os.pipe())
        try:
            fd = str(write_end)
            self.proc = _spawn(
                datadir, ["--join-reply-fd", fd], stdin=subprocess.PIPE, pass_fds=(write_end,)
            )
        except BaseException:
            os.close(read_end)
            raise
        finally:
            os.close(write_end)
        self._replies = os.fdopen(read_end, "rb")
        self._datadir = datadir

    def join(self, request: dict[str, Any]) -> dict[str, Any]:
        """Hand over the join, wait for its outcome: the node's role and name, or the error
        the handshake raised, raised here as the same kind (a usage error or another)."""
        assert self.proc.stdin is not None
        try:
            with self.proc.stdin:
                self.proc.stdin.write(json.dumps(request).encode() + b"\n")
        except BrokenPipeError:
            pass  # it died loading its code: its log says why (below)
        with self._replies:
            line = self._replies.readline()
        if not line:
            try:
                self.proc.wait(timeout=_GONE_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()  # silent, yet alive: no join of its is to be trusted
                self.proc.wait()
            tail = log_tail(self._datadir)
            raise SwarmletError(f"the agent exited with status {self.proc.returncode}:\n{tail}")
        reply: dict[str, Any] = json.loads(line)
        if reply["ok"]:
            return reply
        self.proc.wait()
        error = UsageError if reply["kind"] == "usage" else SwarmletError
        raise error(reply["message"])


_GONE_S = 10.0  # how long an agent that closed its answer pipe unanswered has to exit


def _above_stdio(fd: int) -> int:
    """`fd`, moved above 0-2 if it is one of them (a command run with its output closed gets
    them from `os.pipe`, and the agent's own stdout and stderr would then take their place)."""
    if fd > 2:
        return fd
    moved = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)
    os.close(fd)
    return moved


def wait_for_join() -> dict[str, Any] | None:
    """In `join`'s agent: load the agent's code, then wait for the join to make. None if the
    pipe closed without one (the command failed, or was interrupted)."""
    import swarmlet.node.main  # noqa: F401 - the point: imported before the wait

    line = sys.stdin.buffer.readline()
    return json.loads(line) if line else None


def join_in_this_process(datadir: DataDir, request: dict[str, Any]) -> Identity:
    """Make the join `request` describes (what `cmd_join` builds) and write the new node's data
    dir: the join handshake with the manager at `request["remote"]`."""
    import trio

    from swarmlet import crypto
    from swarmlet.node.advertised_resources import write_advertised
    from swarmlet.security.join import join_cluster

    token = crypto.JoinToken.parse(request["token"])
    identity = trio.run(
        lambda: join_cluster(
            request["remote"],
            token,
            name=request["name"],
            name_is_explicit=request["name_is_explicit"],
            advertise_host=request["advertise_host"],
            port=request["port"],
            publish_host=request["publish_host"],
            datadir=datadir,
            generic_resources=request["advertised"],
        )
    )
    write_advertised(datadir.path, request["advertised"])  # and re-advertised at each start
    return identity


def join_as_asked(datadir: DataDir, request: dict[str, Any], reply_fd: int) -> bool:
    """In `join`'s agent: make the join, and tell `JoiningAgent.join` how it went on
    `reply_fd`. True if the node joined (the agent then runs; it does so even if the command
    went away meanwhile, unless it was killed: the cluster holds the node's record by then)."""
    try:
        identity = join_in_this_process(datadir, request)
    except SwarmletError as exc:
        kind = "usage" if isinstance(exc, UsageError) else "error"
        print(f"join failed: {exc}", file=sys.stderr)  # the data dir's log
        _reply(reply_fd, {"ok": False, "kind": kind, "message": str(exc)})
        return False
    except Exception as exc:  # a defect: the command says what, the log has the traceback
        _reply(reply_fd, {"ok": False, "kind": "error", "message": f"{type(exc).__name__}: {exc}"})
        raise
    _reply(reply_fd, {"ok": True, "role": identity.role, "name": identity.name})
    return True


def _reply(fd: int, reply: dict[str, Any]) -> None:
    try:
        with os.fdopen(fd, "wb") as pipe:
            pipe.write(json.dumps(reply).encode() + b"\n")
    except OSError:
        pass  # the command is gone (interrupted): nobody to tell


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
