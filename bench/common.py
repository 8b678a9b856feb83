"""Shared helpers of the cluster benchmarks: processes, swarmlet clusters, figures, iptables.

The reference systems (Serf and etcd clusters and their clients) are in `bench.reference`.

Everything runs on loopback addresses (127.0.0.x) of this machine and nothing else is contacted.
Every process a benchmark starts is recorded in `REGISTRY` and killed (SIGKILL) when the benchmark
ends, whatever the reason (normal exit, exception, Ctrl-C, SIGTERM); iptables rules carry a
comment unique to the benchmark's pid and are removed the same way.

Timing choices (decided here):
- swarmlet is observed through its control API (`api.control_socket.ControlClient`), so CLI start-up
  (~0.3 s per command) does not distort a measurement; the CLI is used for set-up only.
- Serf is observed through its own msgpack RPC protocol (what `serf members` speaks), on one
  persistent connection per agent, for the same reason: `serf members` is a process per poll, and
  nine of them every 50 ms would load this 2-core machine more than the agents under test.
- etcd is written through its HTTP/JSON gateway (`/v3/kv/put`) with a minimal keep-alive HTTP/1.1
  client written on trio, which is what the swarmlet side uses too (one event loop, same polling).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import trio

from swarmlet.api.control_socket import ControlClient

V = TypeVar("V")

SWARMLET = [sys.executable, "-m", "swarmlet"]
IPTABLES_COMMENT = f"swarmlet-bench-{os.getpid()}"


# ----------------------------------------------------------------------------- processes


@dataclass
class Registry:
    """Every pid and iptables rule a benchmark created, undone by `cleanup` (idempotent)."""

    pids: set[int] = field(default_factory=set)
    pid_files: set[Path] = field(default_factory=set)
    roots: list[Path] = field(default_factory=list)
    keep_dirs: bool = False

    def cleanup(self) -> None:
        remove_iptables_rules()
        for path in self.pid_files:
            pid = read_pid(path)
            if pid is not None:
                self.pids.add(pid)
        for pid in self.pids:
            if owned(pid):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
        for pid in self.pids:
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitpid(pid, os.WNOHANG)
        self.pids.clear()
        if not self.keep_dirs:
            for root in self.roots:
                shutil.rmtree(root, ignore_errors=True)
            self.roots.clear()


REGISTRY = Registry()


def _on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def _reap_agents_forever() -> None:
    while True:
        for path in list(REGISTRY.pid_files):
            pid = read_pid(path)
            if pid is not None:
                with contextlib.suppress(ChildProcessError, OSError):
                    os.waitpid(pid, os.WNOHANG)
        time.sleep(0.05)


def become_subreaper() -> None:
    """Adopt the agents that `swarmlet init/join/agent --detach` leave behind, and reap them.

    A detached agent is orphaned when its CLI exits. On this machine PID 1 reaps orphans only
    now and then, so a killed agent stays a zombie for seconds, its pid still "exists", and
    `swarmlet agent --detach` refuses to start ("an agent is already running"). As a child
    subreaper (prctl PR_SET_CHILD_SUBREAPER) this process adopts them; a thread reaps the pids
    named in the agents' pid files (only those: Popen and trio keep reaping their own children).
    """
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_child_subreaper = 36
    if libc.prctl(pr_set_child_subreaper, 1, 0, 0, 0) != 0:
        print("warning: prctl(PR_SET_CHILD_SUBREAPER) failed; killed agents may linger as zombies")
        return
    threading.Thread(target=_reap_agents_forever, name="reaper", daemon=True).start()


def install_cleanup() -> None:
    """Kill everything we started at exit; turn SIGTERM/SIGHUP into an exit that runs `finally`."""
    atexit.register(REGISTRY.cleanup)
    become_subreaper()
    signal.signal(signal.SIGTERM, _on_sigterm)
    signal.signal(signal.SIGHUP, _on_sigterm)


LOADAVG_START = os.getloadavg()


async def sample_terms(agents: Sequence[Agent], into: list[list[int]]) -> None:
    """Every agent's Raft term, once a second, as rows of `into` (a row misses an agent that
    did not answer within 5 s); elections in a window are its last row's highest term less its
    first's."""
    while True:
        row = []
        for a in agents:
            with trio.move_on_after(5):
                row.append(int((await a.client.call("status"))["raft"]["term"]))
        into.append(row)
        await trio.sleep(1.0)


def elections(rows: list[list[int]], members: int) -> int:
    """Leader elections over `sample_terms`' rows of `members` agents (whole rows only)."""
    whole = [row for row in rows if len(row) == members]
    return max(whole[-1]) - max(whole[0])


def print_load() -> None:
    """The machine is shared: say how busy it was, since every figure depends on it."""
    print(
        f"load average (1/5/15 min) at start: {' '.join(f'{x:.1f}' for x in LOADAVG_START)}, "
        f"now: {' '.join(f'{x:.1f}' for x in os.getloadavg())}; nproc {os.cpu_count()}"
    )


def make_root(name: str, keep: bool = False) -> Path:
    root = Path(tempfile.mkdtemp(prefix=f"bench-{name}-", dir="/var/tmp"))
    REGISTRY.roots.append(root)
    REGISTRY.keep_dirs = REGISTRY.keep_dirs or keep
    return root


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def owned(pid: int) -> bool:
    """True if `pid` is still a process this benchmark started, not a reused pid.

    Pids are recycled quickly on a busy machine (pid_max 32768), so a pid read from a stale pid
    file, or one of a process already reaped, may now belong to someone else: only our children
    (including the detached agents adopted as subreaper) and processes whose command line names
    one of our data dirs are ours."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        if ppid == os.getpid():
            return True
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read().decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
        return False
    return any(str(root) in cmdline for root in REGISTRY.roots)


def kill9(pid: int) -> None:
    """SIGKILL (if the pid is still ours) and wait until the process is gone (reaped if ours)."""
    if not owned(pid):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)
        if not alive(pid):
            return
        time.sleep(0.005)


def spawn(cmd: Sequence[str], log_path: Path) -> subprocess.Popen[bytes]:
    log = open(log_path, "ab")  # noqa: SIM115 - handed to the child, closed below
    try:
        proc = subprocess.Popen(
            list(cmd), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    finally:
        log.close()
    REGISTRY.pids.add(proc.pid)
    return proc


def ensure_installed(binaries: Sequence[str], packages: Sequence[str]) -> None:
    """Install the reference system from Debian packages if one of its commands is missing."""
    if all(shutil.which(b) for b in binaries):
        return
    if os.geteuid() != 0:
        sys.exit(f"missing {', '.join(binaries)}: run `apt-get install -y {' '.join(packages)}`")
    print(f"installing {' '.join(packages)} ...", flush=True)
    subprocess.run(["apt-get", "install", "-y", *packages], check=True)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP+UDP port free on `host` right now (taken on every 127.0.0.x later, by convention)."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            port = int(s.getsockname()[1])
        if 20000 <= port <= 60000:
            return port
    raise RuntimeError("no free port")


# ----------------------------------------------------------------------------- iptables


def add_drop_rule(src: str, dst: str, probability: float) -> None:
    rule = ["-s", src, "-d", dst, "-m", "comment", "--comment", IPTABLES_COMMENT]
    if probability < 1.0:
        rule += ["-m", "statistic", "--mode", "random", "--probability", f"{probability}"]
    subprocess.run(["iptables", "-A", "INPUT", *rule, "-j", "DROP"], check=True)


def remove_iptables_rules() -> None:
    """Delete every INPUT rule carrying this benchmark's comment."""
    if shutil.which("iptables") is None:
        return
    out = subprocess.run(["iptables", "-S", "INPUT"], capture_output=True, text=True, check=False)
    for line in out.stdout.splitlines():
        if IPTABLES_COMMENT in line and line.startswith("-A INPUT "):
            args = line.split()[2:]
            subprocess.run(["iptables", "-D", "INPUT", *args], check=False)


# ----------------------------------------------------------------------------- CPU hog


def start_cpu_hog(core: int) -> int:
    """One busy Python process pinned to `core` (taskset); returns its pid (registered)."""
    cmd = ["taskset", "-c", str(core), sys.executable, "-c", "while True: pass"]
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL)
    REGISTRY.pids.add(proc.pid)
    return proc.pid


# ----------------------------------------------------------------------------- figures


def quantile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated quantile (numpy's default), NaN for no values."""
    if not values:
        return math.nan
    xs = sorted(values)
    pos = (len(xs) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def summary(values: Sequence[float]) -> dict[str, float]:
    return {
        "n": float(len(values)),
        "median": quantile(values, 0.5),
        "min": min(values) if values else math.nan,
        "max": max(values) if values else math.nan,
        "p99": quantile(values, 0.99),
    }


def ratio(a: float, b: float) -> float:
    return a / b if b and not math.isnan(b) else math.nan


def fmt(x: float, digits: int = 3) -> str:
    return "-" if isinstance(x, float) and math.isnan(x) else f"{x:.{digits}f}"


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    print(f"\n{title}")
    for n, row in enumerate(cells):
        print(
            "  ".join(
                c.rjust(w) if i else c.ljust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
        if n == 0:
            print("  ".join("-" * w for w in widths))


def write_json(path: str | None, result: dict[str, Any]) -> None:
    if not path:
        return
    result = {
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "nproc": os.cpu_count(),
        "loadavg_start": LOADAVG_START,
        "loadavg_end": os.getloadavg(),
        **result,
    }
    Path(path).write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"wrote {path}")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# ----------------------------------------------------------------------------- swarmlet


class CommandFailed(RuntimeError):
    pass


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    cmd = [*SWARMLET, *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise CommandFailed(
            f"{' '.join(cmd)} exited {proc.returncode}\n"
            f"stdout: {proc.stdout}\nstderr: {proc.stderr}"
        )
    return proc


@dataclass
class Agent:
    index: int
    name: str
    data_dir: Path
    host: str
    port: int
    role: str

    @property
    def addr(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def client(self) -> ControlClient:
        return ControlClient(self.data_dir / "control.sock")

    def pid(self) -> int | None:
        return read_pid(self.data_dir / "agent.pid")


@dataclass
class SwarmletCluster:
    """Agent i on 127.0.0.i:port, data dir root/nI (as tests/integration/cluster.py does)."""

    root: Path
    port: int
    agents: list[Agent] = field(default_factory=list)
    _tokens: dict[str, str] = field(default_factory=dict)

    def _agent(self, index: int, role: str, name: str | None = None) -> Agent:
        name = name or f"n{index}"
        agent = Agent(index, name, self.root / name, f"127.0.0.{index}", self.port, role)
        REGISTRY.pid_files.add(agent.data_dir / "agent.pid")
        return agent

    def init(self) -> Agent:
        a = self._agent(1, "manager")
        run_cli(
            "init",
            "--advertise-addr",
            a.host,
            "--port",
            str(a.port),
            "--publish-addr",
            a.host,
            "--name",
            a.name,
            "--data-dir",
            str(a.data_dir),
        )
        self.agents.append(a)
        return a

    def token(self, role: str) -> str:
        if role not in self._tokens:
            out = run_cli("join-token", "-q", role, "--data-dir", str(self.agents[0].data_dir))
            self._tokens[role] = out.stdout.strip()
        return self._tokens[role]

    def join_command(self, a: Agent, via: Agent | None = None) -> list[str]:
        via = via or self.agents[0]
        return [
            *SWARMLET,
            "join",
            "--token",
            self.token(a.role),
            "--advertise-addr",
            a.host,
            "--port",
            str(a.port),
            "--publish-addr",
            a.host,
            "--name",
            a.name,
            "--data-dir",
            str(a.data_dir),
            via.addr,
        ]

    def join(self, role: str, index: int | None = None, name: str | None = None) -> Agent:
        index = index or (max(x.index for x in self.agents) + 1)
        a = self._agent(index, role, name)
        proc = subprocess.run(
            self.join_command(a), capture_output=True, text=True, timeout=120, check=False
        )
        if proc.returncode != 0:
            via = self.agents[0]
            via_pid = via.pid()
            raise CommandFailed(
                f"join of {a.name} exited {proc.returncode}: {proc.stderr}\n"
                f"{via.name} pid {via_pid} alive={via_pid is not None and alive(via_pid)}; "
                f"its agent.log ends:\n{self.log_tail(via)}\n"
                f"{a.name}'s agent.log ends:\n{self.log_tail(a)}"
            )
        self.agents.append(a)
        return a

    def start(self, managers: int, workers: int) -> None:
        self.init()
        for _ in range(managers - 1):
            self.join("manager")
        for _ in range(workers):
            self.join("worker")

    def by_name(self, name: str) -> Agent:
        return next(a for a in self.agents if a.name == name)

    def kill(self, a: Agent) -> None:
        pid = a.pid()
        if pid is None:
            raise RuntimeError(f"{a.name} has no pid file")
        REGISTRY.pids.add(pid)
        kill9(pid)

    def restart(self, a: Agent) -> None:
        old = a.pid()
        deadline = time.monotonic() + 15
        while old is not None and time.monotonic() < deadline:
            try:
                os.kill(old, 0)  # as `swarmlet agent` checks: a zombie still counts as running
            except ProcessLookupError:
                break
            time.sleep(0.02)
        run_cli("agent", "--detach", "--data-dir", str(a.data_dir))
        pid = a.pid()
        if pid is not None:
            REGISTRY.pids.add(pid)

    def pids(self) -> dict[str, int]:
        return {a.name: p for a in self.agents if (p := a.pid()) is not None}

    def log_tail(self, a: Agent, lines: int = 30) -> str:
        try:
            text = (a.data_dir / "agent.log").read_text(errors="replace")
        except FileNotFoundError:
            return "(no agent.log)"
        return "\n".join(text.splitlines()[-lines:])


async def node_status(a: Agent, timeout_s: float = 2.0) -> dict[str, str] | None:
    """{hostname: ready|down} as agent `a` reports it, or None when it does not answer in time."""
    with trio.move_on_after(timeout_s):
        try:
            result = await a.client.call("node.ls")
        except Exception:
            return None
        return {n["hostname"]: n["status"] for n in result["nodes"]}
    return None


async def _status(a: Agent, timeout_s: float = 5.0) -> dict[str, Any] | None:
    """Agent `a`'s `status` (its local view, no read barrier), or None when it does not answer."""
    with trio.move_on_after(timeout_s):
        try:
            result: dict[str, Any] = await a.client.call("status")
        except Exception:
            return None
        return result
    return None


async def _wait_all(
    observers: Sequence[Agent],
    read: Callable[[Agent], Awaitable[V | None]],
    predicate: Callable[[V], bool],
    *,
    timeout_s: float,
    interval_s: float,
    start: float | None,
) -> dict[str, float]:
    """Poll `read(observer)` for each observer until `predicate` holds; the first time (seconds
    after `start`) each observer reported it. Observers that never do within the timeout are
    absent."""
    start = time.monotonic() if start is None else start
    seen: dict[str, float] = {}

    async def poll(a: Agent) -> None:
        while True:
            view = await read(a)
            now = time.monotonic()
            if view is not None and predicate(view):
                seen[a.name] = now - start
                return
            await trio.sleep(interval_s)

    with trio.move_on_after(timeout_s):
        async with trio.open_nursery() as nursery:
            for a in observers:
                nursery.start_soon(poll, a)
    return seen


async def wait_all_see(
    observers: Sequence[Agent],
    predicate: Callable[[dict[str, str]], bool],
    *,
    timeout_s: float,
    interval_s: float = 0.05,
    start: float | None = None,
) -> dict[str, float]:
    """`_wait_all` on each observer's node.ls ({hostname: ready|down})."""
    return await _wait_all(
        observers, node_status, predicate, timeout_s=timeout_s, interval_s=interval_s, start=start
    )


async def wait_all_status(
    observers: Sequence[Agent],
    predicate: Callable[[dict[str, Any]], bool],
    *,
    timeout_s: float,
    interval_s: float = 0.05,
    start: float | None = None,
) -> dict[str, float]:
    """`_wait_all` on each observer's `status` (its local view, no read barrier)."""
    return await _wait_all(
        observers, _status, predicate, timeout_s=timeout_s, interval_s=interval_s, start=start
    )


def wait_until(what: str, done: Callable[[], bool], *, timeout_s: float, poll_s: float) -> float:
    """Poll `done` every `poll_s` until it holds; return the monotonic time it did."""
    start = time.monotonic()
    while not done():
        if time.monotonic() - start > timeout_s:
            raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(poll_s)
    return time.monotonic()


def wait_all_see_sync(
    observers: Sequence[Agent],
    predicate: Callable[[dict[str, str]], bool],
    timeout_s: float,
) -> dict[str, float]:
    async def go() -> dict[str, float]:
        return await wait_all_see(observers, predicate, timeout_s=timeout_s)

    return trio.run(go)


@contextlib.contextmanager
def cleanup_on_exit() -> Iterator[None]:
    """Run the body, then kill everything started and remove the iptables rules."""
    install_cleanup()
    try:
        yield
    finally:
        REGISTRY.cleanup()
