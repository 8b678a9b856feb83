"""The `swarmlet` command: parse arguments, talk to the local agent, print results.

`main(argv, console) -> int` is the whole program; output goes through the injected rich Console
so tests capture it. Exceptions become exit codes in one place (`_run`). Scripts use
`--format json`: its shape is a contract.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import trio
from rich.console import Console
from rich.table import Table

from swarmlet import __version__, crypto
from swarmlet.api.control_socket import ControlClient
from swarmlet.errors import AgentUnavailableError, StackError, SwarmletError, UsageError
from swarmlet.security.datadir import DataDir, Identity, default_data_dir

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
DEFAULT_PORT = 7946
READY_TIMEOUT_S = 30.0

Command = Callable[[argparse.Namespace, Console], int]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # argparse exits; we want an exception
        raise UsageError(f"{self.prog}: {message}")


def _data_dir(args: argparse.Namespace) -> DataDir:
    return DataDir(Path(args.data_dir) if args.data_dir else default_data_dir())


def _client(args: argparse.Namespace) -> ControlClient:
    return ControlClient(_data_dir(args).socket_path)


def call(args: argparse.Namespace, op: str, **kwargs: Any) -> Any:
    return trio.run(lambda: _client(args).call(op, **kwargs))


def _print_json(console: Console, value: Any) -> None:
    console.print_json(
        json.dumps(value), highlight=False
    ) if console.is_terminal else console.print(
        json.dumps(value, indent=2), markup=False, highlight=False, soft_wrap=True
    )


def _default_advertise_host() -> str:
    """The address of the interface that routes outwards (no packet is sent by a UDP connect)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # TEST-NET-1: never routed anywhere, nothing is sent
            return str(s.getsockname()[0])
        except OSError:
            return "127.0.0.1"


# ---------------------------------------------------------------------------- agent lifecycle


def _agent_running(datadir: DataDir) -> bool:
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


def _start_background_agent(datadir: DataDir) -> subprocess.Popen[bytes]:
    datadir.create()
    log = open(datadir.log_file, "ab")  # noqa: SIM115 - handed to the child process
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "swarmlet", "agent", "--data-dir", str(datadir.path)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )
    finally:
        log.close()


def _wait_ready(
    datadir: DataDir, proc: subprocess.Popen[bytes] | None, want: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    """Poll the new agent's status until `want` holds; fail with its log if it dies first."""
    client = ControlClient(datadir.socket_path)
    deadline = time.monotonic() + READY_TIMEOUT_S
    last_error = ""
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = _log_tail(datadir)
            raise SwarmletError(f"the agent exited with status {proc.returncode}:\n{tail}")
        try:
            status: dict[str, Any] = trio.run(client.call, "status")
            if want(status):
                return status
        except AgentUnavailableError as exc:
            last_error = str(exc)
        time.sleep(0.1)
    raise SwarmletError(
        f"the agent did not become ready within {READY_TIMEOUT_S:.0f} s ({last_error}); "
        f"see {datadir.log_file}"
    )


def _log_tail(datadir: DataDir, lines: int = 20) -> str:
    try:
        return "\n".join(datadir.log_file.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


def _run_agent_foreground(datadir: DataDir, *, on_ready: Callable[[], None] | None = None) -> int:
    from swarmlet.node.main import run_agent  # the agent's imports are heavy: load on demand

    return run_agent(datadir, on_ready=on_ready)


def _member_and_led(status: dict[str, Any]) -> bool:
    return bool(status["member"]) and status["raft"]["leader_id"] is not None


# ---------------------------------------------------------------------------- commands


def cmd_init(args: argparse.Namespace, console: Console) -> int:
    datadir = _data_dir(args)
    if datadir.exists():
        raise UsageError(
            f"{datadir.path} already holds a node; start it with `swarmlet agent`, "
            "or use another --data-dir"
        )
    host = args.advertise_addr or _default_advertise_host()
    identity = Identity(
        node_id=crypto.new_id(),
        cluster_id=crypto.new_id(),
        name=args.name or socket.gethostname(),
        advertise_host=host,
        port=args.port,
        publish_host=args.publish_addr or "0.0.0.0",
        role="manager",
        bootstrap=True,
    )
    # The managers' key first: the identity is the commit point (`datadir`), so a crash in
    # between leaves a data dir that `init` may start again, never a node without the key.
    datadir.write_manager_key(crypto.new_key())  # managers only: see `swarmlet.security.keyring`
    datadir.write_identity(identity, crypto.new_key(), crypto.new_node_key())
    if args.foreground:
        return _run_agent_foreground(
            datadir,
            on_ready=lambda: console.print(f"swarmlet cluster initialised on {identity.addr}"),
        )
    proc = _start_background_agent(datadir)
    _wait_ready(datadir, proc, _member_and_led)
    worker = call(args, "join-token", role="worker")
    manager = call(args, "join-token", role="manager")
    console.print(
        f"Cluster initialised: this node ({identity.name}, {identity.node_id}) is a manager."
    )
    console.print("\nTo add a worker to this cluster, run:\n")
    console.print(
        f"    swarmlet join --token {worker['token']} {identity.addr}\n",
        markup=False,
        soft_wrap=True,
    )
    console.print("To add a manager to this cluster, run:\n")
    console.print(
        f"    swarmlet join --token {manager['token']} {identity.addr}\n",
        markup=False,
        soft_wrap=True,
    )
    return EXIT_OK


def cmd_join(args: argparse.Namespace, console: Console) -> int:
    from swarmlet.security.join import join_cluster

    datadir = _data_dir(args)
    if datadir.exists():
        raise UsageError(
            f"{datadir.path} already holds a node; start it with `swarmlet agent`, "
            "or use another --data-dir"
        )
    token = crypto.JoinToken.parse(args.token)
    host = args.advertise_addr or _default_advertise_host()
    identity = trio.run(
        lambda: join_cluster(
            args.remote,
            token,
            name=args.name or socket.gethostname(),
            name_is_explicit=bool(args.name),
            advertise_host=host,
            port=args.port,
            publish_host=args.publish_addr or "0.0.0.0",
            datadir=datadir,
        )
    )
    if args.foreground:
        return _run_agent_foreground(datadir)
    proc = _start_background_agent(datadir)
    _wait_ready(datadir, proc, lambda s: bool(s["member"]) and s["gossip"]["alive"] > 1)
    console.print(f"This node joined the cluster as a {identity.role} ({identity.name}).")
    return EXIT_OK


def cmd_agent(args: argparse.Namespace, console: Console) -> int:
    datadir = _data_dir(args)
    datadir.read_identity()  # a clear error if there is no node here
    if _agent_running(datadir):
        raise UsageError(
            f"an agent is already running for {datadir.path} (pid {datadir.read_pid()})"
        )
    if args.detach:
        proc = _start_background_agent(datadir)
        status = _wait_ready(datadir, proc, lambda s: True)
        console.print(f"agent {status['name']} started (pid {proc.pid})")
        return EXIT_OK
    return _run_agent_foreground(datadir)


def cmd_join_token(args: argparse.Namespace, console: Console) -> int:
    result = call(args, "join-token", role=args.role, rotate=args.rotate)
    if args.quiet:
        console.print(result["token"], markup=False)
        return EXIT_OK
    if args.rotate:
        console.print(f"Successfully rotated the {args.role} join token.\n")
    console.print(f"To add a {args.role} to this cluster, run:\n")
    console.print(
        f"    swarmlet join --token {result['token']} {result['addr']}\n",
        markup=False,
        soft_wrap=True,
    )
    return EXIT_OK


def cmd_leave(args: argparse.Namespace, console: Console) -> int:
    datadir = _data_dir(args)
    pid = datadir.read_pid()
    call(args, "leave", force=args.force)
    deadline = time.monotonic() + 10
    while pid is not None and time.monotonic() < deadline and _agent_running(datadir):
        time.sleep(0.05)
    console.print("Node left the cluster.")
    return EXIT_OK


def _format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def cmd_node_ls(args: argparse.Namespace, console: Console) -> int:
    result = call(args, "node.ls")
    nodes = result["nodes"]
    if args.format == "json":
        _print_json(console, nodes)
        return EXIT_OK
    table = Table(box=None, pad_edge=False)
    for column in (
        "ID",
        "HOSTNAME",
        "ADDRESS",
        "STATUS",
        "AVAILABILITY",
        "MANAGER STATUS",
        "CPUS",
        "MEMORY",
        "TASKS",
    ):
        table.add_column(column, no_wrap=True)
    for n in nodes:
        manager = ""
        if n["role"] == "manager":
            manager = (
                "Leader"
                if n["leader"]
                else ("Reachable" if n["status"] == "ready" else "Unreachable")
            )
            if n["raft"] == "learner":
                manager += " (standby)"
        status = n["status"].capitalize()
        table.add_row(
            n["id"][:12] + (" *" if n["self"] else ""),
            n["hostname"],
            n["addr"],
            f"[red]{status}[/red]" if n["status"] == "down" else status,
            n["availability"].capitalize(),
            manager,
            f"{n['cpus']:g}",
            _format_bytes(n["memory_bytes"]),
            str(n["tasks"]),
        )
    console.print(table)
    if result.get("stale"):
        console.print(
            "[yellow]warning: no leader answered; this is this node's last known state[/yellow]"
        )
    return EXIT_OK


def cmd_node_inspect(args: argparse.Namespace, console: Console) -> int:
    results = [call(args, "node.inspect", node=ref) for ref in args.nodes]
    _print_json(console, results)
    return EXIT_OK


def cmd_node_update(args: argparse.Namespace, console: Console) -> int:
    call(
        args,
        "node.update",
        node=args.node,
        availability=args.availability,
        label_add=args.label_add or [],
        label_rm=args.label_rm or [],
    )
    console.print(args.node, markup=False)
    return EXIT_OK


def _set_role(role: str) -> Command:
    def run(args: argparse.Namespace, console: Console) -> int:
        for ref in args.nodes:
            view = call(args, "node.role", node=ref, role=role)
            console.print(f"Node {view['hostname']} is now a {role}.")
        return EXIT_OK

    return run


def cmd_node_rm(args: argparse.Namespace, console: Console) -> int:
    for ref in args.nodes:
        call(args, "node.rm", node=ref, force=args.force)
        console.print(ref, markup=False)
    return EXIT_OK


def cmd_status(args: argparse.Namespace, console: Console) -> int:
    _print_json(console, call(args, "status"))
    return EXIT_OK


def _parse_since(text: str | None) -> float:
    if not text:
        return time.time()
    units = {"s": 1, "m": 60, "h": 3600}
    if text[-1] in units and text[:-1].replace(".", "", 1).isdigit():
        return time.time() - float(text[:-1]) * units[text[-1]]
    try:
        return float(text)
    except ValueError:
        raise UsageError(
            f"--since: expected a duration like 10m or a unix time, got {text!r}"
        ) from None


def cmd_events(args: argparse.Namespace, console: Console) -> int:
    types = []
    for f in args.filter or ():
        key, _, value = f.partition("=")
        if key != "type":
            raise UsageError(f"--filter: only type=node|service|task|raft is supported, got {f!r}")
        types.append(value)

    async def stream() -> None:
        async with _client(args).stream(
            "events", since=_parse_since(args.since), types=types, no_follow=args.no_follow
        ) as events:
            async for event in events:
                if args.format == "json":
                    console.print(json.dumps(event), markup=False, highlight=False, soft_wrap=True)
                else:
                    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(event["time"]))
                    console.print(
                        f"{stamp} {event['type']} {event['action']} {event['subject']}: "
                        f"{event['message']}",
                        markup=False,
                        highlight=False,
                    )

    with contextlib.suppress(KeyboardInterrupt):
        trio.run(stream)
    return EXIT_OK


# ---------------------------------------------------------------------------- parser


def _add_data_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data-dir",
        help="the agent's data directory "
        "(default: $SWARMLET_DATA_DIR, or /var/lib/swarmlet as root)",
    )


def _add_format(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", choices=("table", "json"), default="table", help="output format")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="swarmlet",
        description="A lightweight, Docker-Swarm-like container orchestrator.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            "examples:\n"
            "  swarmlet init --advertise-addr 10.0.0.1\n"
            "  swarmlet join --token SWLT-1-... 10.0.0.1:7946\n"
            "  swarmlet node ls\n"
            "  swarmlet stack deploy -c stacks/web.yml web\n"
        ),
    )
    parser.add_argument("--version", action="version", version=f"swarmlet {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    def command(name: str, handler: Command, help_: str, example: str, parent: Any = sub) -> Any:
        p = parent.add_parser(
            name,
            help=help_,
            description=help_,
            epilog=f"example:\n  {example}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        p.set_defaults(handler=handler)
        _add_data_dir(p)
        return p

    p = command(
        "init",
        cmd_init,
        "create a new cluster with this host as its first manager",
        "swarmlet init --advertise-addr 127.0.0.1 --data-dir /tmp/n1",
    )
    p.add_argument("--advertise-addr", help="address the other agents reach this one on")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="gossip/raft port (UDP+TCP)")
    p.add_argument(
        "--publish-addr", help="address published service ports listen on (default: all)"
    )
    p.add_argument("--name", help="node name (default: the host name)")
    p.add_argument("--foreground", action="store_true", help="run the agent in this process")

    p = command(
        "join",
        cmd_join,
        "join an existing cluster with a join token",
        "swarmlet join --token SWLT-1-... --advertise-addr 127.0.0.2 --data-dir /tmp/n2 "
        "127.0.0.1:7946",
    )
    p.add_argument("--token", required=True, help="a worker or manager join token")
    p.add_argument("--advertise-addr", help="address the other agents reach this one on")
    p.add_argument("--port", type=int, default=DEFAULT_PORT)
    p.add_argument(
        "--publish-addr", help="address published service ports listen on (default: all)"
    )
    p.add_argument("--name", help="node name (default: the host name)")
    p.add_argument("--foreground", action="store_true", help="run the agent in this process")
    p.add_argument("remote", metavar="HOST:PORT", help="any member of the cluster")

    p = command(
        "agent",
        cmd_agent,
        "run the agent of an existing data dir (after a reboot, a crash, or under systemd)",
        "swarmlet agent --data-dir /var/lib/swarmlet",
    )
    p.add_argument("--detach", action="store_true", help="run in the background")

    p = command(
        "join-token",
        cmd_join_token,
        "print (or rotate) the token for joining as a worker or a manager",
        "swarmlet join-token -q worker",
    )
    p.add_argument("role", choices=("worker", "manager"))
    p.add_argument("-q", "--quiet", action="store_true", help="print the token only")
    p.add_argument("--rotate", action="store_true", help="replace the token (existing nodes stay)")

    p = command("leave", cmd_leave, "leave the cluster and stop this agent", "swarmlet leave")
    p.add_argument("--force", action="store_true", help="leave even if the managers lose quorum")

    p = command(
        "status", cmd_status, "this agent's view: raft, gossip, counters (JSON)", "swarmlet status"
    )

    p = command(
        "events",
        cmd_events,
        "stream cluster events",
        "swarmlet events --since 10m --filter type=node",
    )
    p.add_argument("--since", help="start from this long ago (10s, 5m, 1h) or a unix time")
    p.add_argument("--filter", action="append", help="type=node|service|task|raft")
    p.add_argument("--no-follow", action="store_true", help="print past events and exit")
    _add_format(p)

    node = sub.add_parser("node", help="manage nodes", description="manage nodes")
    node_sub = node.add_subparsers(dest="node_command", metavar="COMMAND", parser_class=_Parser)
    node_sub.required = True
    p = command("ls", cmd_node_ls, "list nodes", "swarmlet node ls --format json", node_sub)
    _add_format(p)
    p = command(
        "inspect",
        cmd_node_inspect,
        "show a node in detail (JSON)",
        "swarmlet node inspect n1",
        node_sub,
    )
    p.add_argument("nodes", nargs="+", metavar="NODE")
    p = command(
        "update",
        cmd_node_update,
        "change a node's availability or labels",
        "swarmlet node update --availability drain --label-add zone=a n2",
        node_sub,
    )
    p.add_argument("--availability", choices=("active", "pause", "drain"))
    p.add_argument("--label-add", action="append", metavar="KEY=VALUE")
    p.add_argument("--label-rm", action="append", metavar="KEY")
    p.add_argument("node", metavar="NODE")
    p = command(
        "promote", _set_role("manager"), "make nodes managers", "swarmlet node promote n2", node_sub
    )
    p.add_argument("nodes", nargs="+", metavar="NODE")
    p = command(
        "demote", _set_role("worker"), "make nodes workers", "swarmlet node demote n2", node_sub
    )
    p.add_argument("nodes", nargs="+", metavar="NODE")
    p = command(
        "rm", cmd_node_rm, "remove nodes from the cluster", "swarmlet node rm --force n3", node_sub
    )
    p.add_argument("--force", action="store_true", help="remove even if the node is not down")
    p.add_argument("nodes", nargs="+", metavar="NODE")

    # These import this module: load them once the parser exists.
    from swarmlet.cli import dashboard as cli_dashboard
    from swarmlet.cli import secret as cli_secret
    from swarmlet.cli import service as cli_service
    from swarmlet.cli import stack as cli_stack

    cli_service.register(sub, command)
    cli_stack.register(sub, command)
    cli_secret.register(sub, command)
    cli_dashboard.register(sub, command)
    return parser


def main(argv: Sequence[str], console: Console | None = None) -> int:
    # Piped output keeps whole lines (scripts parse it); a terminal gets its own width.
    console = console or Console(width=None if sys.stdout.isatty() else 200)
    err = Console(stderr=True)
    try:
        args = build_parser().parse_args(list(argv))
        handler: Command = args.handler
        return handler(args, console)
    except StackError as exc:
        err.print(f"error: {exc}", markup=False, highlight=False)
        return EXIT_ERROR
    except UsageError as exc:
        err.print(f"error: {exc}", markup=False, highlight=False)
        return EXIT_USAGE
    except SwarmletError as exc:
        err.print(f"error: {exc}", markup=False, highlight=False)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130


def entrypoint() -> None:
    sys.exit(main(sys.argv[1:]))
