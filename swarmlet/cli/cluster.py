"""`swarmlet init|join|agent|join-token|leave|status|events`: forming the cluster, running this
node's agent, and watching it; `update --autolock`, `unlock`, `unlock-key`: autolock (issue #18,
as `docker swarm update --autolock`, `docker swarm unlock`, `docker swarm unlock-key`).

`init` and `join` write a new data dir and then start the agent (`cli.agent_process`); both
refuse a data dir that already holds a node, so a node is never created twice. The order of
`init`'s writes is a crash-safety rule: see `cmd_init`. `status` and `events` only ask the
agent, so they load neither `agent_process` nor the join protocol.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from pathlib import Path

from swarmlet.cli.common import (
    BoolFlag,
    ExitStatus,
    add_bool,
    add_command,
    add_format,
    call,
    client,
    data_dir,
)
from swarmlet.errors import UsageError

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at run time
if TYPE_CHECKING:
    from typing import Any

    from swarmlet.cli.common import Subcommands
    from swarmlet.cli.output import Output
    from swarmlet.security.datadir import DataDir

DEFAULT_PORT = 7946
LEAVE_WAIT_S = 10.0


def default_advertise_host() -> str:
    """The address of the interface that routes outwards (no packet is sent by a UDP connect)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # TEST-NET-1: never routed anywhere, nothing is sent
            return str(s.getsockname()[0])
        except OSError:
            return "127.0.0.1"


def _new_node_dir(args: argparse.Namespace) -> DataDir:
    """The data dir for a new node; a UsageError if it already holds one."""
    datadir = data_dir(args)
    if datadir.exists():
        raise UsageError(
            f"{datadir.path} already holds a node; start it with `swarmlet agent`, "
            "or use another --data-dir"
        )
    return datadir


def _use_metrics_addr(args: argparse.Namespace) -> None:
    """`--metrics-addr`: checked before anything is written, then handed to the agent (in this
    process, or the background one, which inherits it) as SWARMLET_METRICS_ADDR."""
    if args.metrics_addr:
        import os

        from swarmlet.node.config import parse_metrics_addr

        try:
            parse_metrics_addr(args.metrics_addr)
        except UsageError as exc:
            raise UsageError(f"--metrics-addr: {exc}") from None
        os.environ["SWARMLET_METRICS_ADDR"] = args.metrics_addr


def _advertised(args: argparse.Namespace) -> list[str]:
    """`--generic-resource`: checked before anything is written (the node keeps the list in its
    data dir, `node.advertised_resources`)."""
    from swarmlet.state.generic_resources import parse_advertised

    entries: list[str] = args.generic_resource or []
    parse_advertised(entries)
    return entries


def cmd_init(args: argparse.Namespace, out: Output) -> ExitStatus:
    import socket

    from swarmlet import crypto
    from swarmlet.cli import agent_process
    from swarmlet.node.advertised_resources import write_advertised
    from swarmlet.security.datadir import Identity

    _use_metrics_addr(args)
    advertised = _advertised(args)
    if advertised and args.force_new_cluster:
        raise UsageError(
            "--generic-resource with --force-new-cluster: start the agent with "
            "`swarmlet agent --generic-resource ...` to change what it advertises"
        )
    if args.autolock and (args.foreground or args.force_new_cluster):
        raise UsageError(
            "--autolock starts the agent in the background and unlocks it: without --foreground "
            "and --force-new-cluster (or run `swarmlet update --autolock=true` later)"
        )
    if args.force_new_cluster:
        if args.restore:
            raise UsageError("--force-new-cluster and --restore: choose one")
        return _force_new_cluster(args, out)
    backup = None
    if args.restore:
        from swarmlet.security.backup import open_backup

        path = Path(args.restore)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise UsageError(f"--restore: cannot read {path}: {exc.strerror}") from None
        backup = open_backup(data, _passphrase(args, confirm=False), source=str(path))
    datadir = _new_node_dir(args)
    host = args.advertise_addr or default_advertise_host()
    identity = Identity(
        node_id=crypto.new_id(),
        cluster_id=backup.cluster_id if backup is not None else crypto.new_id(),
        name=args.name or socket.gethostname(),
        advertise_host=host,
        port=args.port,
        publish_host=args.publish_addr or "0.0.0.0",
        role="manager",
        bootstrap=True,
    )
    # The managers' key first: the identity is the commit point (`datadir`), so a crash in
    # between leaves a data dir that `init` may start again, never a node without the key.
    if backup is not None:  # the old cluster's keys: its secrets, tokens and CA stay valid
        datadir.write_manager_key(backup.managers_key)
        datadir.write_restore_state(backup.state)  # the agent's first start seeds from it
        cluster_key = backup.cluster_key
    else:
        datadir.write_manager_key(crypto.new_key())  # managers only: `swarmlet.security.keyring`
        cluster_key = crypto.new_key()
    unlock_key = None
    if args.autolock:  # sealed from the first byte: the agent starts locked, and is unlocked below
        from swarmlet.security import at_rest

        unlock_key = at_rest.new_unlock_key()
        at_rest.create_sealed_data_key(datadir.path, unlock_key)
    datadir.write_identity(identity, cluster_key, crypto.new_node_key())
    write_advertised(datadir.path, advertised)  # the agent's start records them
    if args.foreground:
        return ExitStatus(
            agent_process.run_agent_foreground(
                datadir,
                on_ready=lambda: out.line(f"swarmlet cluster initialised on {identity.addr}"),
            )
        )
    proc = agent_process.start_background_agent(datadir)
    if unlock_key is not None:
        agent_process.wait_ready(datadir, proc, lambda status: bool(status.get("locked")))
        call(args, "unlock", key=unlock_key)
    agent_process.wait_ready(datadir, proc, agent_process.is_member_with_leader)
    worker = call(args, "join-token", role="worker")
    manager = call(args, "join-token", role="manager")
    out.line(f"Cluster initialised: this node ({identity.name}, {identity.node_id}) is a manager.")
    out.line("\nTo add a worker to this cluster, run:\n")
    out.line(f"    swarmlet join --token {worker['token']} {identity.addr}\n")
    out.line("To add a manager to this cluster, run:\n")
    out.line(f"    swarmlet join --token {manager['token']} {identity.addr}\n")
    if unlock_key is not None:
        _print_unlock_key(out, unlock_key)
    return ExitStatus.OK


def _print_unlock_key(out: Output, key: str) -> None:
    out.line("To unlock a swarmlet manager after it restarts, run `swarmlet unlock` and provide")
    out.line("the following key:\n")
    out.line(f"    {key}\n")
    out.line("Remember to store this key in a password manager: without it, a restarted manager")
    out.line("cannot read its Raft log.")


def cmd_update(args: argparse.Namespace, out: Output) -> ExitStatus:
    if args.autolock is None:
        raise UsageError("nothing to update: give --autolock=true or --autolock=false")
    result = call(args, "autolock.update", autolock=args.autolock)
    out.line("Cluster updated." if result["changed"] else "Autolock was already so: no change.")
    if result["key"]:
        _print_unlock_key(out, result["key"])
    return ExitStatus.OK


def cmd_unlock(args: argparse.Namespace, out: Output) -> ExitStatus:
    """The key from the terminal (not echoed) or one line of stdin, never from a flag (it would
    be in `ps` and the shell's history), as `docker swarm unlock` reads it."""
    import sys

    if sys.stdin.isatty():
        import getpass

        key = getpass.getpass("Enter unlock key: ")
    else:
        key = sys.stdin.readline()
    if not key.strip():
        raise UsageError("no unlock key given (type it, or pipe it on stdin)")
    call(args, "unlock", key=key.strip())
    out.line("Node unlocked: the agent is starting.")
    return ExitStatus.OK


def cmd_unlock_key(args: argparse.Namespace, out: Output) -> ExitStatus:
    result = call(args, "unlock-key", rotate=args.rotate)
    if args.quiet:
        out.line(str(result["key"]))
        return ExitStatus.OK
    if result["rotated"]:
        out.line("Successfully rotated the manager unlock key.\n")
    _print_unlock_key(out, result["key"])
    return ExitStatus.OK


def _passphrase(args: argparse.Namespace, *, confirm: bool) -> str:
    """A backup's passphrase: from --passphrase-file, SWARMLET_BACKUP_PASSPHRASE, or asked on
    the terminal (twice when sealing); never a flag's value (it would be in `ps` and history)."""
    import os
    import sys

    if args.passphrase_file:
        try:
            return Path(args.passphrase_file).read_text().rstrip("\n")
        except OSError as exc:
            raise UsageError(f"--passphrase-file: {exc.strerror}: {args.passphrase_file}") from None
    if os.environ.get("SWARMLET_BACKUP_PASSPHRASE"):
        return os.environ["SWARMLET_BACKUP_PASSPHRASE"]
    if not sys.stdin.isatty():
        raise UsageError(
            "a backup needs a passphrase: --passphrase-file FILE, SWARMLET_BACKUP_PASSPHRASE, "
            "or a terminal to type it on"
        )
    import getpass

    passphrase = getpass.getpass("Backup passphrase: ")
    if confirm and getpass.getpass("Again: ") != passphrase:
        raise UsageError("the passphrases differ")
    return passphrase


def cmd_backup(args: argparse.Namespace, out: Output) -> ExitStatus:
    from swarmlet.security.backup import Backup, seal_backup
    from swarmlet.security.datadir import write_atomic

    datadir = data_dir(args)
    _identity, cluster_key = datadir.read_identity()
    if datadir.read_manager_key() is None:
        raise UsageError("this node is not a manager: run `swarmlet backup` on a manager")
    passphrase = _passphrase(args, confirm=True)
    taken, managers_key = _state_and_its_managers_key(args, datadir)
    sealed = seal_backup(
        Backup(
            cluster_id=taken["cluster_id"],
            created_at=time.time(),
            raft_index=taken["index"],
            managers_key=managers_key,
            cluster_key=cluster_key,
            state=taken["state"],
        ),
        passphrase,
    )
    path = Path(args.file)
    write_atomic(path, sealed)  # owner-only: it holds the cluster's keys
    out.line(f"backed up the state at index {taken['index']} to {path} ({len(sealed)} bytes)")
    return ExitStatus.OK


def _state_and_its_managers_key(
    args: argparse.Namespace, datadir: DataDir
) -> tuple[dict[str, Any], bytes]:
    """The state at a read barrier, and the managers' key its secrets are sealed with: read
    after the state, and both taken again if a rotation (a manager left the managers) came in
    between, until this node's key file has caught up with the state."""
    from swarmlet import crypto
    from swarmlet.state.machine import ClusterState

    for _attempt in range(10):
        taken = call(args, "backup")
        managers_key = datadir.read_manager_key()
        if managers_key is None:
            raise UsageError("this node is no longer a manager: run `swarmlet backup` on a manager")
        state = ClusterState.restore(taken["state"])
        if crypto.ManagerKeys(managers_key).public_key == state.managers_public_key:
            return taken, managers_key
        time.sleep(0.5)
    raise UsageError(
        "the managers' key kept changing during the backup (managers leaving?): try again"
    )


def _force_new_cluster(args: argparse.Namespace, out: Output) -> ExitStatus:
    """`init --force-new-cluster`: this stopped manager becomes the only voter of its cluster
    (`node.force_new_cluster`), then its agent starts."""
    from swarmlet.cli import agent_process
    from swarmlet.node.force_new_cluster import force_new_cluster
    from swarmlet.raft.storage import RaftStorage

    given = [f for f in ("advertise_addr", "publish_addr", "name") if getattr(args, f)]
    if given:
        flags = ", ".join("--" + f.replace("_", "-") for f in given)
        raise UsageError(f"{flags}: --force-new-cluster keeps the node as it is")
    datadir = data_dir(args)
    identity, _ = datadir.read_identity()  # a clear error if there is no node here
    if datadir.read_manager_key() is None:
        raise UsageError("--force-new-cluster: this node is not a manager (no managers' key)")
    if agent_process.agent_running(datadir):
        raise UsageError(
            f"--force-new-cluster: the agent of {datadir.path} is running "
            f"(pid {datadir.read_pid()}); stop it first"
        )
    from swarmlet.security import at_rest

    data_key = at_rest.read_data_key(datadir.path)
    if data_key is None:
        raise UsageError(
            "--force-new-cluster: this node is locked (autolock); start it (`swarmlet agent`), "
            "unlock it, and stop it, or restore the cluster from a backup"
        )
    with RaftStorage.open(datadir.raft_dir, cipher=at_rest.AtRest.cipher_of(data_key)) as storage:
        try:
            forced = force_new_cluster(storage, identity.node_id)
        except ValueError as exc:
            raise UsageError(f"--force-new-cluster: {exc}") from None
    lost = [v for v in forced.previous_voters if v != identity.node_id]
    out.line(
        f"Forced a new cluster: this node ({identity.name}) is its only voter, at index "
        f"{forced.index}, term {forced.term}; {forced.applied_uncommitted} entries not known "
        "to be committed were kept."
    )
    if lost:
        out.line(
            f"The other voters ({', '.join(lost)}) are learners now: `swarmlet node rm` the "
            "ones that are gone for good, and join new managers."
        )
    if args.foreground:
        return ExitStatus(agent_process.run_agent_foreground(datadir))
    proc = agent_process.start_background_agent(datadir)
    agent_process.wait_ready(datadir, proc, agent_process.is_member_with_leader)
    out.line("The agent is running and leads.")
    return ExitStatus.OK


def cmd_join(args: argparse.Namespace, out: Output) -> ExitStatus:
    from swarmlet.cli import agent_process

    _use_metrics_addr(args)
    advertised = _advertised(args)
    datadir = _new_node_dir(args)
    request = {
        "remote": args.remote,
        "token": args.token,
        "name": args.name or _hostname(),
        "name_is_explicit": bool(args.name),
        "advertise_host": args.advertise_addr or default_advertise_host(),
        "port": args.port,
        "publish_host": args.publish_addr or "0.0.0.0",
        "advertised": advertised,  # recorded by the manager that admits the node
    }
    if args.foreground:
        agent_process.join_in_this_process(datadir, request)
        return ExitStatus(agent_process.run_agent_foreground(datadir))
    # The agent makes the join: started now, it loads its code while this command finishes
    # with its flags, and this command loads none of it (`agent_process.JoiningAgent`).
    agent = agent_process.JoiningAgent(datadir)
    try:
        joined = agent.join(request)
    except KeyboardInterrupt:
        agent.proc.kill()  # interrupted, the join is not made (unless the cluster took it)
        raise
    agent_process.wait_ready(datadir, agent.proc, agent_process.is_member_seeing_others)
    out.line(f"This node joined the cluster as a {joined['role']} ({joined['name']}).")
    return ExitStatus.OK


def _hostname() -> str:
    import socket

    return socket.gethostname()


def cmd_agent(args: argparse.Namespace, out: Output) -> ExitStatus:
    from swarmlet.cli import agent_process
    from swarmlet.node.advertised_resources import write_advertised

    if args.join_reply_fd is not None:
        request = agent_process.wait_for_join()
        if request is None:
            return ExitStatus.OK  # `join` failed and said why; this agent never started
        if not agent_process.join_as_asked(data_dir(args), request, args.join_reply_fd):
            return ExitStatus.ERROR  # `join` says why
    _use_metrics_addr(args)
    advertised = _advertised(args)
    datadir = data_dir(args)
    datadir.read_identity()  # a clear error if there is no node here
    if agent_process.agent_running(datadir):
        raise UsageError(
            f"an agent is already running for {datadir.path} (pid {datadir.read_pid()})"
        )
    if advertised:  # replaces the kept list; the agent records it as it starts
        write_advertised(datadir.path, advertised)
    if args.detach:
        proc = agent_process.start_background_agent(datadir)
        status = agent_process.wait_ready(datadir, proc, lambda s: True)
        out.line(f"agent {status['name']} started (pid {proc.pid})")
        return ExitStatus.OK
    return ExitStatus(agent_process.run_agent_foreground(datadir))


def cmd_join_token(args: argparse.Namespace, out: Output) -> ExitStatus:
    result = call(args, "join-token", role=args.role, rotate=args.rotate)
    if args.quiet:
        out.line(str(result["token"]))
        return ExitStatus.OK
    if args.rotate:
        out.line(f"Successfully rotated the {args.role} join token.\n")
    out.line(f"To add a {args.role} to this cluster, run:\n")
    out.line(f"    swarmlet join --token {result['token']} {result['addr']}\n")
    return ExitStatus.OK


def cmd_leave(args: argparse.Namespace, out: Output) -> ExitStatus:
    from swarmlet.cli import agent_process

    datadir = data_dir(args)
    pid = datadir.read_pid()
    call(args, "leave", force=args.force)
    deadline = time.monotonic() + LEAVE_WAIT_S
    while pid is not None and time.monotonic() < deadline and agent_process.agent_running(datadir):
        time.sleep(0.05)
    out.line("Node left the cluster.")
    return ExitStatus.OK


def cmd_status(args: argparse.Namespace, out: Output) -> ExitStatus:
    out.json(call(args, "status"))
    return ExitStatus.OK


def parse_since(text: str | None, now: float) -> float:
    """`--since`: a duration back from `now` (10s, 5m, 1h) or a unix time; `now` if empty."""
    if not text:
        return now
    units = {"s": 1, "m": 60, "h": 3600}
    if text[-1] in units and text[:-1].replace(".", "", 1).isdigit():
        return now - float(text[:-1]) * units[text[-1]]
    try:
        return float(text)
    except ValueError:
        raise UsageError(
            f"--since: expected a duration like 10m or a unix time, got {text!r}"
        ) from None


def cmd_events(args: argparse.Namespace, out: Output) -> ExitStatus:
    import json

    types = []
    for f in args.filter or ():
        key, _, value = f.partition("=")
        if key != "type":
            raise UsageError(f"--filter: only type=node|service|task|raft is supported, got {f!r}")
        types.append(value)
    since = parse_since(args.since, time.time())

    with (
        contextlib.suppress(KeyboardInterrupt),
        client(args).stream("events", since=since, types=types, no_follow=args.no_follow) as events,
    ):
        for event in events:
            if args.format == "json":
                out.line(json.dumps(event))
            else:
                stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(event["time"]))
                out.line(
                    f"{stamp} {event['type']} {event['action']} {event['subject']}: "
                    f"{event['message']}"
                )
    return ExitStatus.OK


# ---------------------------------------------------------------------------- parser


def _host(text: str) -> str:
    """An --advertise-addr or --publish-addr: what the other agents would refuse is refused
    here, before the node is made (`wire.hosts`)."""
    from swarmlet.wire.hosts import is_host

    if not is_host(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not an IP address or a host name")
    return text


def _add_node_address_flags(parser: argparse.ArgumentParser, *, port_help: str | None) -> None:
    parser.add_argument(
        "--advertise-addr", type=_host, help="address the other agents reach this one on"
    )
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=port_help)
    parser.add_argument(
        "--publish-addr",
        type=_host,
        help="address published service ports listen on (default: all)",
    )
    parser.add_argument("--name", help="node name (default: the host name)")
    add_bool(parser, "--foreground", help_="run the agent in this process")
    _add_metrics_flag(parser)
    _add_generic_resource_flag(parser)


def _add_generic_resource_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--generic-resource",
        action="append",
        metavar="KIND=ID|KIND=COUNT",
        help="a resource this node advertises to services' --generic-resource (repeatable; "
        "kept in the data dir; `agent` replaces the kept list), e.g. --generic-resource "
        "gpu=UUID1 --generic-resource gpu=UUID2 (named) or --generic-resource ssd=3 (a count)",
    )


def _add_passphrase_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--passphrase-file",
        metavar="FILE",
        help="read the backup's passphrase from FILE (or SWARMLET_BACKUP_PASSPHRASE, or the "
        "terminal), e.g. --passphrase-file /root/pass",
    )


def _add_metrics_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--metrics-addr",
        metavar="HOST:PORT",
        help="serve Prometheus metrics at http://HOST:PORT/metrics (or SWARMLET_METRICS_ADDR), "
        "e.g. --metrics-addr 127.0.0.1:9946",
    )


def register(sub: Subcommands) -> None:
    p = add_command(
        sub,
        "init",
        cmd_init,
        "create a new cluster with this host as its first manager",
        "swarmlet init --advertise-addr 127.0.0.1 --data-dir /tmp/n1",
    )
    _add_node_address_flags(p, port_help="gossip/raft port (UDP+TCP)")
    p.add_argument(
        "--restore",
        metavar="FILE",
        help="start the cluster from a backup (`swarmlet backup`): its services, secrets, "
        "configs and networks; other hosts join again, e.g. --restore /backups/swarm.bak",
    )
    _add_passphrase_flag(p)
    add_bool(
        p,
        "--force-new-cluster",
        help_="after losing a majority of the managers: make this stopped manager the only "
        "voter of its cluster, keeping its state, e.g. swarmlet init --force-new-cluster "
        "--data-dir /var/lib/swarmlet",
    )
    add_bool(
        p,
        "--autolock",
        help_="keep the managers' Raft data keys sealed by an unlock key, which a restarted "
        "manager waits for (`swarmlet unlock`); the key is printed",
    )

    p = add_command(
        sub,
        "join",
        cmd_join,
        "join an existing cluster with a join token",
        "swarmlet join --token SWLT-1-... --advertise-addr 127.0.0.2 --data-dir /tmp/n2 "
        "127.0.0.1:7946",
    )
    p.add_argument("--token", required=True, help="a worker or manager join token")
    _add_node_address_flags(p, port_help=None)
    p.add_argument("remote", metavar="HOST:PORT", help="any member of the cluster")

    p = add_command(
        sub,
        "agent",
        cmd_agent,
        "run the agent of an existing data dir (after a reboot, a crash, or under systemd)",
        "swarmlet agent --data-dir /var/lib/swarmlet",
    )
    add_bool(p, "--detach", help_="run in the background")
    # `join`'s own start of the agent (`agent_process.JoiningAgent`): the pipe it answers on.
    p.add_argument("--join-reply-fd", type=int, help=argparse.SUPPRESS)
    _add_metrics_flag(p)
    _add_generic_resource_flag(p)

    p = add_command(
        sub,
        "join-token",
        cmd_join_token,
        "print (or rotate) the token for joining as a worker or a manager",
        "swarmlet join-token -q worker",
    )
    p.add_argument("role", choices=("worker", "manager"))
    add_bool(p, "-q", "--quiet", help_="print the token only")
    add_bool(p, "--rotate", help_="replace the token (existing nodes stay)")

    p = add_command(
        sub, "leave", cmd_leave, "leave the cluster and stop this agent", "swarmlet leave"
    )
    add_bool(p, "--force", help_="leave even if the managers lose quorum")

    add_command(
        sub,
        "status",
        cmd_status,
        "this agent's view: raft, gossip, counters (JSON)",
        "swarmlet status",
    )

    p = add_command(
        sub,
        "events",
        cmd_events,
        "stream cluster events",
        "swarmlet events --since 10m --filter type=node",
    )
    p.add_argument("--since", help="start from this long ago (10s, 5m, 1h) or a unix time")
    p.add_argument("--filter", action="append", help="type=node|service|task|raft")
    add_bool(p, "--no-follow", help_="print past events and exit")
    add_format(p)

    p = add_command(
        sub,
        "backup",
        cmd_backup,
        "write the replicated state, with the cluster's keys, to FILE sealed by a passphrase "
        "(on a manager)",
        "swarmlet backup --passphrase-file /root/pass /backups/swarm.bak",
    )
    p.add_argument("file", metavar="FILE", help="where to write the backup")
    _add_passphrase_flag(p)

    p = add_command(
        sub,
        "update",
        cmd_update,
        "update the cluster's settings: autolock (on a manager; prints the unlock key)",
        "swarmlet update --autolock=true",
    )
    p.add_argument(
        "--autolock",
        action=BoolFlag,
        default=None,
        help="lock restarted managers until `swarmlet unlock` (=true) or not (=false)",
    )

    add_command(
        sub,
        "unlock",
        cmd_unlock,
        "unlock this locked manager with the unlock key (read from the terminal or stdin)",
        "swarmlet unlock < /root/unlock.key",
    )

    p = add_command(
        sub,
        "unlock-key",
        cmd_unlock_key,
        "print (or rotate) the unlock key of an autolocked cluster (on a manager)",
        "swarmlet unlock-key -q --rotate",
    )
    add_bool(p, "-q", "--quiet", help_="print the key only")
    add_bool(p, "--rotate", help_="replace the key (each running manager re-seals its data key)")
