"""CLI start-up: wall time of `swarmlet` commands, beside the docker CLI and the interpreter.

    .venv/bin/python -m bench.cli_startup [--host 127.0.50.1] [--runs 30] [--json FILE]
                                          [--baseline SRC] [--no-bytecode-cache]

Every command is a fresh process, run `--runs` times, the commands interleaved round by round
(each round in a rotated order), after `--warmup` rounds that are not counted, so all of them
share the same moments of the machine's load. Wall time is from spawning the process to reaping
it; CPU time is the child's user + system time (from `wait4`), which a busy machine inflates less
than wall time. Output goes to /dev/null (not a terminal, as in a script), except in the
"(terminal)" row, whose output goes to a pseudo-terminal (120 columns, TERM=xterm-256color), as
in a person's shell, where swarmlet prints its tables in colour through rich; every run must
exit with the status the row expects, or the benchmark stops.

Bytecode: an installed package has its modules compiled (`__pycache__`), so the commands run
with a bytecode cache of their own (PYTHONPYCACHEPREFIX under the run's directory, filled by the
warm-up rounds; the work tree is left alone), whatever this shell sets: the shells of the
machine this was written on export PYTHONDONTWRITEBYTECODE=1, with which every swarmlet module
a command imports is compiled from source on every run. `--no-bytecode-cache` measures that
case.

The rows:
- `python3 -c pass`: this interpreter (the virtualenv's, as the console script runs it) doing
  nothing: the floor no Python command can go below.
- `docker --version` and `docker node ls --help`: the reference, a Go binary; neither needs a
  daemon.
- `swarmlet --version`, `swarmlet node ls --help`: the console script next to this interpreter.
- `swarmlet node ls` (no agent): the same command against a data dir where nothing answers.
- `swarmlet node ls`, `node ls --format json`, `service ls`, `service ps`: read commands against
  a real agent started by the benchmark (`swarmlet init` on `--host`), which runs one service of
  `--replicas` replicas of `--image`, so `service ps` has rows to print.
- `swarmlet node update --label-add`: a write (one Raft commit on a 1-manager cluster), each
  run with a new label value. Beside it, the same write and the `node.ls` read made in this
  process through the control socket: CLI wall minus that is what the command adds to the
  request itself.

`--baseline SRC` also measures the swarmlet rows with the `swarmlet` package found in SRC (e.g.
`git archive HEAD swarmlet | tar -x -C /tmp/before`), through the same console-script wrapper
pip generates, in the same rounds: a before/after in one run.

The agent, its data dir, its service's containers and networks are removed at the end, whatever
the reason the benchmark stops.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import shutil
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import common
from bench.common import REGISTRY, fmt, log, print_table, summary
from swarmlet.api.control_client import BlockingControlClient

GOAL_VERSION_MS = 60.0
GOAL_READ_MS = 120.0
SERVICE = "bench-web"
NODE_NAME = "c1"

# What pip writes as the `swarmlet` console script (setuptools' wrapper for an entry point).
CONSOLE_SCRIPT = """\
import sys
from swarmlet.cli.main import entrypoint
if __name__ == '__main__':
    sys.argv[0] = sys.argv[0].removesuffix('.exe')
    sys.exit(entrypoint())
"""


@dataclass
class Row:
    """One command measured: its argv, the exit status it must return, its samples."""

    label: str
    argv: list[str]
    goal_ms: float | None = None
    status: int = 0
    env: dict[str, str] | None = None
    terminal: bool = False  # stdout a pseudo-terminal of 120 x 40, as in a person's shell
    wall_s: list[float] = field(default_factory=list)
    cpu_s: list[float] = field(default_factory=list)

    def run_once(self, record: bool) -> None:
        master = slave = -1
        env = self.env
        if self.terminal:
            master, slave = os.openpty()
            fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
            env = {**(env or os.environ), "TERM": "xterm-256color"}
        start = time.perf_counter()
        proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=slave if self.terminal else subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
        )
        if self.terminal:
            os.close(slave)
            _drain(master)
        assert proc.stderr is not None
        err = proc.stderr.read()
        _, wait_status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(wait_status)
        proc.stderr.close()
        if proc.returncode != self.status:
            raise common.CommandFailed(
                f"{' '.join(self.argv)} exited {proc.returncode}, expected {self.status}\n"
                f"stderr: {err.decode(errors='replace')}"
            )
        if record:
            self.wall_s.append(wall)
            self.cpu_s.append(usage.ru_utime + usage.ru_stime)


def _drain(master: int) -> None:
    """Read a pseudo-terminal until the child's end is closed (EIO on Linux), then close it."""
    try:
        while os.read(master, 65536):
            pass
    except OSError:
        pass
    finally:
        os.close(master)


def _swarmlet_script() -> list[str]:
    script = Path(sys.executable).parent / "swarmlet"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "swarmlet"]


def _write_wrapper(root: Path) -> Path:
    wrapper = root / "swarmlet-baseline"
    wrapper.write_text(f"#!{sys.executable}\n{CONSOLE_SCRIPT}")
    wrapper.chmod(0o755)
    return wrapper


def swarmlet_rows(
    prefix: str, cli: list[str], data_dir: Path, absent_dir: Path, env: dict[str, str] | None
) -> list[Row]:
    dd = ["--data-dir", str(data_dir)]
    return [
        Row(f"{prefix} --version", [*cli, "--version"], GOAL_VERSION_MS, env=env),
        Row(f"{prefix} node ls --help", [*cli, "node", "ls", "--help"], env=env),
        Row(
            f"{prefix} node ls (no agent)",
            [*cli, "node", "ls", "--data-dir", str(absent_dir)],
            status=1,
            env=env,
        ),
        Row(f"{prefix} node ls", [*cli, "node", "ls", *dd], GOAL_READ_MS, env=env),
        Row(
            f"{prefix} node ls (terminal)",
            [*cli, "node", "ls", *dd],
            GOAL_READ_MS,
            env=env,
            terminal=True,
        ),
        Row(
            f"{prefix} node ls --format json",
            [*cli, "node", "ls", "--format", "json", *dd],
            GOAL_READ_MS,
            env=env,
        ),
        Row(f"{prefix} service ls", [*cli, "service", "ls", *dd], GOAL_READ_MS, env=env),
        Row(f"{prefix} service ps", [*cli, "service", "ps", SERVICE, *dd], GOAL_READ_MS, env=env),
    ]


class WriteRow(Row):
    """`node update --label-add bench.run=N`: a new value each run, so each run commits."""

    counter = 0

    def run_once(self, record: bool) -> None:
        WriteRow.counter += 1
        base = self.argv[:-2]
        self.argv = [*base, f"bench.run={WriteRow.counter}", NODE_NAME]
        super().run_once(record)


def measure_in_process(socket_path: Path, runs: int) -> dict[str, list[float]]:
    """The requests alone, made from this process with the client the command uses: `node.ls`
    and the `node.update` write."""
    client = BlockingControlClient(socket_path)
    samples: dict[str, list[float]] = {"node.ls": [], "node.update": []}
    for i in range(runs):
        start = time.perf_counter()
        client.call("node.ls")
        samples["node.ls"].append(time.perf_counter() - start)
        start = time.perf_counter()
        client.call(
            "node.update",
            node=NODE_NAME,
            availability=None,
            label_add=[f"bench.direct={i}"],
            label_rm=[],
        )
        samples["node.update"].append(time.perf_counter() - start)
    return samples


def start_agent(args: argparse.Namespace, data_dir: Path) -> str:
    """`swarmlet init` on `--host`, one service; the cluster id (for cleaning up by label)."""
    REGISTRY.pid_files.add(data_dir / "agent.pid")
    common.run_cli(
        "init",
        "--advertise-addr",
        args.host,
        "--publish-addr",
        args.host,
        "--port",
        str(args.port),
        "--name",
        NODE_NAME,
        "--data-dir",
        str(data_dir),
    )
    dd = ["--data-dir", str(data_dir)]
    common.run_cli(
        "service", "create", "--name", SERVICE, "--replicas", str(args.replicas), *dd, args.image
    )
    status: dict[str, Any] = BlockingControlClient(data_dir / "control.sock").call("status")
    return str(status["cluster_id"])


def stop_agent(data_dir: Path, cluster_id: str) -> None:
    """Remove the service (its containers go with it), stop the agent, remove what is left."""
    with contextlib.suppress(common.CommandFailed, subprocess.TimeoutExpired):
        common.run_cli("service", "rm", SERVICE, "--data-dir", str(data_dir), timeout=30)
    label = f"label=swarmlet.cluster={cluster_id}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and _docker_ids("ps", "-aq", "--filter", label):
        time.sleep(0.2)
    pid = common.read_pid(data_dir / "agent.pid")
    if pid is not None:
        common.kill9(pid)
    containers = _docker_ids("ps", "-aq", "--filter", label)
    if containers:
        subprocess.run(["docker", "rm", "-f", *containers], capture_output=True, check=False)
    networks = _docker_ids("network", "ls", "-q", "--filter", label)
    if networks:
        subprocess.run(["docker", "network", "rm", *networks], capture_output=True, check=False)


def _docker_ids(*args: str) -> list[str]:
    if shutil.which("docker") is None:
        return []
    out = subprocess.run(["docker", *args], capture_output=True, text=True, check=False)
    return out.stdout.split()


def command_env(root: Path, *, bytecode_cache: bool) -> dict[str, str]:
    """The environment of the measured commands: this one, as a user's shell has it."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED", "PYTHONPYCACHEPREFIX")
    }
    if bytecode_cache:
        env["PYTHONPYCACHEPREFIX"] = str(root / "pycache")
    else:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def run_rounds(rows: Sequence[Row], runs: int, warmup: int) -> None:
    for n in range(warmup + runs):
        shift = n % len(rows)
        for row in [*rows[shift:], *rows[:shift]]:
            row.run_once(record=n >= warmup)
        if (n + 1) % 10 == 0:
            log(f"round {n + 1 - warmup}/{runs}")


def ms(x: float) -> str:
    return fmt(x * 1000, 1)


def report(
    rows: Sequence[Row], floor: Row, direct: dict[str, list[float]], write: Row, read: Row
) -> dict[str, Any]:
    floor_ms = summary(floor.wall_s)["median"] * 1000
    table = []
    figures: dict[str, Any] = {}
    for row in rows:
        wall = summary(row.wall_s)
        cpu = summary(row.cpu_s)
        table.append(
            [
                row.label,
                int(wall["n"]),
                ms(wall["median"]),
                ms(wall["min"]),
                ms(wall["max"]),
                ms(cpu["median"]),
                fmt(wall["median"] * 1000 - floor_ms, 1),
                "-" if row.goal_ms is None else f"{row.goal_ms:.0f}",
            ]
        )
        figures[row.label] = {
            "argv": row.argv,
            "wall_ms": {k: v * 1000 if k != "n" else v for k, v in wall.items()},
            "cpu_ms": {k: v * 1000 if k != "n" else v for k, v in cpu.items()},
            "goal_ms": row.goal_ms,
            "wall_ms_runs": [round(x * 1000, 2) for x in row.wall_s],
        }
    print_table(
        "CLI start-up (ms; wall from spawn to exit, output to /dev/null)",
        ["command", "runs", "median", "min", "max", "CPU median", "median - floor", "goal"],
        table,
    )
    overhead = []
    for label, cli_row, op in (("read", read, "node.ls"), ("write", write, "node.update")):
        cli_ms = summary(cli_row.wall_s)["median"] * 1000
        op_ms = summary(direct[op])["median"] * 1000
        overhead.append(
            [f"{cli_row.label}", fmt(cli_ms, 1), op, fmt(op_ms, 1), fmt(cli_ms - op_ms, 1)]
        )
        figures[f"in-process {op}"] = {
            "wall_ms": {k: v * 1000 if k != "n" else v for k, v in summary(direct[op]).items()}
        }
        figures[f"{label} overhead ms"] = cli_ms - op_ms
    print_table(
        "What a command adds to its request (medians, ms; the request made from this process)",
        ["command", "CLI wall", "request", "request alone", "CLI - request"],
        overhead,
    )
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host", default="127.0.50.1", help="loopback address of the agent")
    parser.add_argument("--port", type=int, default=7946)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=2, help="rounds run first, not counted")
    parser.add_argument("--image", default="swarmlet/web:1", help="image of the service")
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--baseline", metavar="SRC", help="a source tree with an older swarmlet/")
    parser.add_argument(
        "--no-bytecode-cache",
        action="store_true",
        help="run the commands with PYTHONDONTWRITEBYTECODE=1 (see the docstring)",
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 5 runs")
    parser.add_argument("--json", help="write the figures to this file")
    parser.add_argument("--keep", action="store_true", help="keep the data dir and agent log")
    args = parser.parse_args()
    if args.quick:
        args.runs = 5
    common.install_cleanup()
    root = common.make_root("cli", keep=args.keep)
    data_dir = root / NODE_NAME
    absent = root / "absent"
    log(f"starting an agent on {args.host}:{args.port} (data dir {data_dir})")
    cluster_id = start_agent(args, data_dir)
    env = command_env(root, bytecode_cache=not args.no_bytecode_cache)
    try:
        floor = Row("python3 -c pass", [sys.executable, "-c", "pass"], env=env)
        rows: list[Row] = [floor]
        if shutil.which("docker"):
            rows.append(Row("docker --version", ["docker", "--version"], env=env))
            rows.append(Row("docker node ls --help", ["docker", "node", "ls", "--help"], env=env))
        else:
            print("docker: not installed, its rows are missing")
        cli = _swarmlet_script()
        ours = swarmlet_rows("swarmlet", cli, data_dir, absent, env)
        write = WriteRow(
            "swarmlet node update (write)",
            [*cli, "node", "update", "--data-dir", str(data_dir), "--label-add", "x", "x"],
            env=env,
        )
        rows += [*ours, write]
        if args.baseline:
            src = Path(args.baseline).resolve()
            env = {**env, "PYTHONPATH": str(src)}
            wrapper = [str(_write_wrapper(root))]
            rows += swarmlet_rows("before:", wrapper, data_dir, absent, env)
            rows.append(
                WriteRow(
                    "before: node update (write)",
                    [
                        *wrapper,
                        "node",
                        "update",
                        "--data-dir",
                        str(data_dir),
                        "--label-add",
                        "x",
                        "x",
                    ],
                    env=env,
                )
            )
        log(f"measuring {len(rows)} commands x {args.runs} runs ({' '.join(cli)})")
        run_rounds(rows, args.runs, args.warmup)
        direct = measure_in_process(data_dir / "control.sock", args.runs)
    finally:
        stop_agent(data_dir, cluster_id)
    read = next(r for r in ours if r.label == "swarmlet node ls")
    figures = report(rows, floor, direct, write, read)
    common.print_load()
    common.write_json(
        args.json,
        {"host": args.host, "runs": args.runs, "warmup": args.warmup, "figures": figures},
    )


if __name__ == "__main__":
    main()
