"""Real agents on loopback addresses, driven through the `swarmlet` command, and the helpers the
integration tests share to read them (`services`, `tasks`) and to talk to their routing mesh
(`get`, `RequestLoop`). Fixtures built on these live in the conftest.py files.

Agent i listens on 127.0.0.i:PORT with its own data dir; a test cluster gets its own port so
clusters of different tests never meet. Partitions are real: iptables rules on the loopback
addresses (kernel-level), removed again on cleanup. Everything a cluster started is killed on
cleanup, whatever happened.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from swarmlet.errors import SwarmletError
from swarmlet.executor import secretfiles
from swarmlet.security.datadir import DataDir

SWARMLET = [sys.executable, "-m", "swarmlet"]
_IPTABLES_COMMENT = "swarmlet-test"


class CommandFailed(AssertionError):
    pass


@dataclass
class AgentHandle:
    index: int
    data_dir: Path
    host: str
    port: int

    @property
    def addr(self) -> str:
        return f"{self.host}:{self.port}"

    def pid(self) -> int | None:
        try:
            return int((self.data_dir / "agent.pid").read_text())
        except (FileNotFoundError, ValueError):
            return None

    def running(self) -> bool:
        """Whether the agent process of its pid file is still there (not stopped, not a
        zombie)."""
        pid = self.pid()
        return pid is not None and _alive(pid)


def run_cli(
    *args: str, data_dir: Path | None = None, check: bool = True, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    cmd = [*swarmlet_command(data_dir), *args]
    env = dict(os.environ)
    if data_dir is not None:
        env["SWARMLET_DATA_DIR"] = str(data_dir)  # not a flag: COMMAND ARG... would swallow it
        env.update(release_env(data_dir))
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, check=False, env=env
    )
    if check and proc.returncode != 0:
        raise CommandFailed(
            f"{' '.join(cmd)} exited {proc.returncode}\n"
            f"stdout: {proc.stdout}\nstderr: {proc.stderr}"
        )
    return proc


def wait_for(
    what: str, predicate: Callable[[], Any], timeout: float = 30.0, interval: float = 0.2
) -> Any:
    """Poll until `predicate` returns something truthy. Bounded, so a hang fails loudly."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except CommandFailed as exc:
            last = exc
        if last and not isinstance(last, Exception):
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; last: {last!r}")


@dataclass
class LocalCluster:
    root: Path
    port: int
    agents: list[AgentHandle] = field(default_factory=list)
    cluster_id: str = ""
    _partitioned: list[list[str]] = field(default_factory=list)

    def handle(self, index: int) -> AgentHandle:
        return AgentHandle(index, self.root / f"n{index}", f"127.0.0.{index}", self.port)

    def init(self) -> AgentHandle:
        a = self.handle(1)
        run_cli(
            "init",
            "--advertise-addr",
            a.host,
            "--port",
            str(a.port),
            "--publish-addr",
            a.host,
            "--name",
            "n1",
            data_dir=a.data_dir,
        )
        self.agents.append(a)
        self.cluster_id = self.status(a)["cluster_id"]
        return a

    def token(self, role: str, via: AgentHandle | None = None) -> str:
        via = via or self.agents[0]
        return run_cli("join-token", "-q", role, data_dir=via.data_dir).stdout.strip()

    def join(
        self, role: str, via: AgentHandle | None = None, *, extra: Sequence[str] = ()
    ) -> AgentHandle:
        """`extra`: more `join` flags (e.g. `--generic-resource gpu=g1`)."""
        a = self.handle(len(self.agents) + 1)
        via = via or self.agents[0]
        with _killed_if_it_fails(a):  # not in `agents` yet: the cleanup would not see it
            run_cli(
                "join",
                "--token",
                self.token(role, via),
                "--advertise-addr",
                a.host,
                "--port",
                str(a.port),
                "--publish-addr",
                a.host,
                "--name",
                f"n{a.index}",
                *extra,
                via.addr,
                data_dir=a.data_dir,
            )
        self.agents.append(a)
        return a

    def start(self, managers: int, workers: int = 0) -> None:
        self.init()
        for _ in range(managers - 1):
            self.join("manager")
        for _ in range(workers):
            self.join("worker")

    # ------------------------------------------------------------------ observation

    def node_ls(self, a: AgentHandle) -> list[dict[str, Any]]:
        out = run_cli("node", "ls", "--format", "json", data_dir=a.data_dir, timeout=30).stdout
        result: list[dict[str, Any]] = json.loads(out)
        return result

    def status(self, a: AgentHandle) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(run_cli("status", data_dir=a.data_dir).stdout)
        return result

    def leader_of(self, a: AgentHandle) -> str | None:
        leader: str | None = self.status(a)["raft"]["leader_id"]
        return leader

    def agent_by_node_id(self, node_id: str) -> AgentHandle:
        for a in self.agents:
            if self.status(a)["node_id"] == node_id:
                return a
        raise KeyError(node_id)

    def node_id(self, a: AgentHandle) -> str:
        node_id: str = json.loads(run_cli("status", data_dir=a.data_dir).stdout)["node_id"]
        return node_id

    # ------------------------------------------------------------------ faults

    def kill(self, a: AgentHandle) -> None:
        pid = a.pid()
        assert pid is not None, f"agent {a.index} has no pid file"
        os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
        wait_for(f"agent {a.index} to die", lambda: not _alive(pid), timeout=10)

    def restart(self, a: AgentHandle) -> None:
        run_cli("agent", "--detach", data_dir=a.data_dir)

    def partition(self, isolated: AgentHandle) -> None:
        """Drop every packet between `isolated` and the other agents, both ways (iptables)."""
        for other in self.agents:
            if other is isolated:
                continue
            for src, dst in ((isolated.host, other.host), (other.host, isolated.host)):
                rule = [
                    "-s",
                    src,
                    "-d",
                    dst,
                    "-m",
                    "comment",
                    "--comment",
                    _IPTABLES_COMMENT,
                    "-j",
                    "DROP",
                ]
                subprocess.run(["iptables", "-I", "INPUT", *rule], check=True)
                self._partitioned.append(rule)

    def heal(self) -> None:
        while self._partitioned:
            rule = self._partitioned.pop()
            subprocess.run(["iptables", "-D", "INPUT", *rule], check=False)

    def containers(self, **labels: str) -> list[dict[str, str]]:
        """This cluster's containers (running or not) as {id, node, task, service, state}."""
        filters = [f"label=swarmlet.cluster={self.cluster_id}"]
        filters += [f"label=swarmlet.{k}={v}" for k, v in labels.items()]
        return docker_containers(docker_cli, filters)

    def cleanup(self) -> None:
        self.heal()
        for a in self.agents:
            _kill_if_running(a)
        if self.cluster_id:
            ids = [c["id"] for c in self.containers()]
            # Bounded: an engine that hangs (CI saw `docker rm -f` wait 10 minutes on containers
            # whose shims were gone) fails this test with TimeoutExpired instead of the run.
            if ids:
                subprocess.run(
                    ["docker", "rm", "-f", *ids], capture_output=True, check=False, timeout=120
                )
            for network in self.networks():
                subprocess.run(
                    ["docker", "network", "rm", network], capture_output=True, timeout=60
                )
        for a in self.agents:
            remove_secret_files(a.data_dir)

    def networks(self, **labels: str) -> list[str]:
        """The names of this cluster's Docker networks (the nodes' bridges)."""
        args = ["docker", "network", "ls", "--format", "{{.Name}}"]
        args += ["--filter", f"label=swarmlet.cluster={self.cluster_id}"]
        for k, v in labels.items():
            args += ["--filter", f"label=swarmlet.{k}={v}"]
        return subprocess.run(args, capture_output=True, text=True, check=True).stdout.split()


def docker_cli(*args: str, check: bool = True) -> str:
    """`docker ARGS` on this machine's engine; its stdout."""
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check).stdout


def docker_containers(docker: Callable[..., str], filters: Sequence[str]) -> list[dict[str, str]]:
    """The containers `docker ps -a` lists under `filters`, as {id, node, task, service, state}.

    The state is `docker inspect`'s, not the listing's: Docker 20.10 sends a container's "die"
    event, then releases its network and mounts, and only then updates the copy `docker ps`
    reads, so a listing can still say "running" after the agent has seen the exit (a job's task
    complete, its container listed as running: a CI failure). Inspect reads the container under
    its lock, which that cleanup holds, so it answers once the exit is fully handled."""
    args = ["ps", "-aq", "--no-trunc"]
    for f in filters:
        args += ["--filter", f]
    ids = docker(*args).split()
    if not ids:
        return []
    # A container removed since the listing is left out (inspect fails for it, prints the rest).
    found = json.loads(docker("inspect", *ids, check=False) or "[]")
    return [
        {
            "id": info["Id"],
            "node": (labels := info["Config"]["Labels"] or {}).get("swarmlet.node", ""),
            "task": labels.get("swarmlet.task", ""),
            "service": labels.get("swarmlet.service", ""),
            "state": info["State"]["Status"],
        }
        for info in found
    ]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie child counts as dead.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


_next_port = [17000 + (os.getpid() % 500) * 10]


def remove_secret_files(data_dir: Path) -> None:
    """What the node's next agent start would sweep, for an agent killed for good: its tasks'
    secret files on the tmpfs (`executor.secretfiles`), which outlive the process."""
    try:
        node_id = DataDir(data_dir).read_identity()[0].node_id
    except (OSError, SwarmletError):
        return  # never got an identity: never had a task
    for task_id in secretfiles.task_ids(node_id):
        secretfiles.remove(node_id, task_id)
    with contextlib.suppress(OSError, SwarmletError):
        os.rmdir(secretfiles.tmpfs_root() / node_id)  # empty by now


def _kill_if_running(a: AgentHandle) -> None:
    pid = a.pid()
    if pid is not None and _alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def _killed_if_it_fails(a: AgentHandle) -> Iterator[None]:
    """A join that fails may leave its agent running (started, then never ready)."""
    try:
        yield
    except BaseException:
        _kill_if_running(a)
        raise


@contextlib.contextmanager
def local_cluster(root: Path) -> Iterator[LocalCluster]:
    _next_port[0] += 1
    cluster = LocalCluster(root, _next_port[0])
    try:
        yield cluster
    finally:
        cluster.cleanup()


# ---------------------------------------------------------------------------- reading a cluster


def services(cluster: LocalCluster, via: int = 0) -> dict[str, dict[str, Any]]:
    """`service ls` as seen by agent `via`, by service name."""
    out = run_cli("service", "ls", "--format", "json", data_dir=cluster.agents[via].data_dir).stdout
    return {s["name"]: s for s in json.loads(out)}


def tasks(cluster: LocalCluster, name: str, via: int = 0) -> list[dict[str, Any]]:
    """`service ps NAME` as seen by agent `via`."""
    out = run_cli("service", "ps", name, "--format", "json", data_dir=cluster.agents[via].data_dir)
    result: list[dict[str, Any]] = json.loads(out.stdout)
    return result


# ---------------------------------------------------------------------------- the routing mesh


def get(host: str, port: int) -> str:
    """The body of an HTTP GET of / at host:port (a replica of the test web image names itself)."""
    with urllib.request.urlopen(f"http://{host}:{port}/", timeout=5) as response:
        body: bytes = response.read()
        return body.decode().strip()


def answer(host: str, port: int) -> str:
    """`get`, or "" while nothing answers yet (for `wait_for`)."""
    try:
        return get(host, port)
    except OSError:
        return ""


class RequestLoop:
    """Requests in a background thread until stopped; records every failure (a refused or reset
    connection, a timeout, an HTTP response cut short or malformed), so that a failure shows in
    `failures` instead of ending the loop."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.ok = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                get(self.host, self.port)
                self.ok += 1
            except (OSError, http.client.HTTPException) as exc:
                self.failures.append(repr(exc))

    def __enter__(self) -> RequestLoop:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


# ---------------------------------------------------------------- agents of another release (#18)
#
# A node may run another release's swarmlet (tests/integration/test_upgrade.py): its own python,
# from a virtualenv that holds that release. Every command run for the node's data dir, and so
# the agent that `init`, `join` and `agent --detach` start, runs under that python.

RELEASE_PYTHON: dict[Path, str] = {}  # data dir -> the python of its release; absent: this tree


def use_release(data_dir: Path, python: str | None) -> None:
    """Run the node of `data_dir` with `python`'s swarmlet from now on (None: this tree's)."""
    if python is None:
        RELEASE_PYTHON.pop(data_dir, None)
    else:
        RELEASE_PYTHON[data_dir] = python


def swarmlet_command(data_dir: Path | None) -> list[str]:
    python = RELEASE_PYTHON.get(data_dir) if data_dir is not None else None
    return SWARMLET if python is None else [python, "-m", "swarmlet"]


def release_env(data_dir: Path) -> dict[str, str]:
    """PYTHONSAFEPATH: `python -m` would otherwise put the working directory (this tree, whose
    `swarmlet/` shadows the release's) first on sys.path, in the agent it starts as well."""
    return {"PYTHONSAFEPATH": "1"} if data_dir in RELEASE_PYTHON else {}
