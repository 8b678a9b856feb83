"""`service logs`: the lines of the containers of some services' (or single tasks') tasks, from
every node that runs them, as docker's `service logs` gives them.

Two sides, both here:
- `logs` (the control socket's `service.logs`, on a manager): resolves its targets (`select`),
  asks each node that runs some of the tasks with one `LogsRequest` (itself directly), and emits
  one item per line. Without follow it collects every line and emits them in the order of
  Docker's own timestamps, so lines merged from several nodes read in time order; with follow it
  emits lines as they arrive, and polls the state every `FOLLOW_POLL_INTERVAL_S` for new tasks
  of the selected services (or slots), opening their streams once they run.
- `_serve` (the cluster channel's `LogsRequest`, on any node): reads its own containers through
  the executor's runtime and sends one `LogLine` per line, to managers only.

With `details` (docker's `--details`), each node asks Docker for the logging driver's attributes
of every line (`split_details`) and the items carry them, unescaped, in `details`.

Invariants: a task's stream is opened at most once per call; one task's lines keep Docker's order
(the merge is a stable sort, and Docker's timestamps never go back within one container). The
items' `task` field (`SERVICE.SLOT.TASKID10`) is a contract with the dashboard (`feeds`).
"""

from __future__ import annotations

import collections
import re
import urllib.parse
from collections.abc import Iterable
from contextlib import aclosing
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

import trio

from swarmlet import off_loop
from swarmlet.api.cluster import LocalAgent
from swarmlet.api.control_socket import Emit, StreamHandler
from swarmlet.api.nodes import refuse_on_a_worker
from swarmlet.errors import RemoteProtocolError, UsageError
from swarmlet.security import peer_policy
from swarmlet.state.machine import ClusterState
from swarmlet.state.model import ServiceMode, Task, TaskState
from swarmlet.wire.peer_rpc import EndOfStream, LogLine, LogsRequest
from swarmlet.wire.transport import FramedStream, parse_addr

FOLLOW_POLL_INTERVAL_S = 0.5  # how soon `-f` opens the stream of a replica started after it
LINE_BUFFER = 256  # lines in flight between the node streams and the caller
# Without --follow, the most lines of one task shown: the newest (all are held in memory, to be
# sorted in time order); where a task has more, the output says so, and --since chooses.
MAX_LINES_PER_TASK = 100_000
# What a node's lines may make this one hold (another node may be compromised, and a `LogLine`
# can be 4 MiB; this node's own tasks may log gigabytes): a line is cut beyond MAX_LINE_BYTES
# (its text and the driver's attributes together), with a mark that says so; without --follow,
# a node's lines beyond MAX_BYTES_PER_NODE are not read.
# 100,000 lines of a task at 100 bytes fit; 256 lines in flight stay under 64 MiB.
MAX_LINE_BYTES = 256 * 1024
MAX_BYTES_PER_NODE = 64 * 1024 * 1024


# ---------------------------------------------------------------------------- selecting tasks


@dataclass(frozen=True, slots=True)
class Selection:
    """What `service logs` asked for. Services and slots also match tasks created later (what
    `-f` picks up); task ids match just those tasks."""

    services: frozenset[str] = frozenset()  # service ids
    slots: frozenset[tuple[str, int]] = frozenset()  # (service id, slot)
    tasks: frozenset[str] = frozenset()  # task ids

    def matches(self, task: Task) -> bool:
        return (
            task.id in self.tasks
            or task.service_id in self.services
            or (task.service_id, task.slot) in self.slots
        )

    def grows(self) -> bool:
        """Whether tasks created later can match (only then does following poll for them)."""
        return bool(self.services or self.slots)


def select(state: ClusterState, refs: Iterable[str]) -> Selection:
    """Docker's `SERVICE|TASK` operands: a service name or id; a task id or a unique prefix of
    one; a task name `SERVICE.SLOT.TASKID` (as the log prefix shows it); or `SERVICE.SLOT`, the
    tasks of one slot. Raises UsageError naming an operand that matches nothing."""
    services: set[str] = set()
    slots: set[tuple[str, int]] = set()
    tasks: set[str] = set()
    for ref in refs:
        service = state.find_service(ref)
        if service is not None:
            services.add(service.id)
            continue
        task_id = _task_id(state, ref)
        if task_id:
            tasks.add(task_id)
            continue
        name, _, slot = ref.rpartition(".")
        service = state.find_service(name) if name and slot.isdigit() else None
        if service is None:
            raise UsageError(f"no such service or task: {ref}")
        slots.add((service.id, int(slot)))
    return Selection(frozenset(services), frozenset(slots), frozenset(tasks))


def _task_id(state: ClusterState, ref: str) -> str:
    """The task `ref` names (an id, a unique id prefix or a task name), or ""."""
    if ref in state.tasks:
        return ref
    name, _, tail = ref.rpartition(".")
    if name.count(".") >= 1 and tail:  # SERVICE.SLOT.TASKID: the id part, as a prefix
        ref = tail
    matches = [task_id for task_id in state.tasks if task_id.startswith(ref)] if ref else []
    if len(matches) > 1:
        raise UsageError(f"task id prefix {ref!r} is ambiguous: give more of the id")
    return matches[0] if matches else ""


# ---------------------------------------------------------------------------- Docker's timestamps

# Docker writes `RFC3339NanoFixed` (2026-12-03T08:25:03.123456789Z) then a space, before each line.
_TIMESTAMP = re.compile(rb"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d) ")


def split_timestamp(raw: bytes) -> tuple[str, bytes]:
    """A line Docker gave with `timestamps=True` as (timestamp, line); ("", raw) without one."""
    match = _TIMESTAMP.match(raw)
    if match is None:
        return "", raw
    return raw[: match.end() - 1].decode(), raw[match.end() :]


def timestamp_ns(text: str) -> int:
    """Nanoseconds since the epoch of Docker's timestamp `text`; 0 for "" or anything else
    (a date of the right shape that does not exist, as month 13, included)."""
    match = _TIMESTAMP.match(text.encode() + b" ")
    if match is None:
        return 0
    seconds, fraction, zone = (g.decode() if g else "" for g in match.groups())
    try:
        when = datetime.fromisoformat(seconds + ("+00:00" if zone == "Z" else zone))
    except ValueError:
        return 0
    return int(when.timestamp()) * 1_000_000_000 + int(fraction.ljust(9, "0") or 0)


def split_details(raw: bytes) -> tuple[dict[str, str], bytes]:
    """A line Docker gave with `details=True` (its timestamp split off) as (the logging driver's
    attributes, line). Docker writes them `k=v,k=v` with keys and values URL-escaped (Go's
    QueryEscape), then a space; none is an empty string, so the line starts with the space.
    A line with no such part (or a malformed one) comes back whole, with no attributes."""
    head, space, line = raw.partition(b" ")
    if not space:
        return {}, raw
    if not head:
        return {}, line
    attrs = {}
    for pair in head.decode(errors="replace").split(","):
        key, equals, value = pair.partition("=")
        if not equals:
            return {}, raw
        attrs[urllib.parse.unquote_plus(key)] = urllib.parse.unquote_plus(value)
    return attrs, line


class _Line(NamedTuple):
    node_id: str
    task_id: str  # "" for a note about a node (down, unreachable)
    timestamp: str  # Docker's, or ""
    text: str
    attrs: tuple[tuple[str, str], ...] = ()  # the logging driver's, with `details`


def in_time_order(lines: list[_Line]) -> list[_Line]:
    """Lines merged from several streams, by Docker's timestamp. Stable: lines of one stream
    that share a timestamp (or have none, as notes) keep their order."""
    return sorted(lines, key=lambda line: timestamp_ns(line.timestamp))


# ---------------------------------------------------------------------------- the control side


def _tail(value: object) -> int:
    """The request's `tail`: lines per container from the end; -1 for all (docker's default)."""
    if value is None or value == "all":
        return -1
    if isinstance(value, int) and not isinstance(value, bool):
        return max(value, -1)
    raise UsageError(f"tail: expected a number of lines or 'all', not {value!r}")


def _since(value: object) -> float:
    if value is None:
        return 0.0
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return float(value)
    raise UsageError(f"since: expected seconds since the epoch, not {value!r}")


class ServiceLogs:
    def __init__(self, agent: LocalAgent) -> None:
        self.agent = agent
        agent.stream_handlers[LogsRequest] = self._serve

    def streams(self) -> dict[str, StreamHandler]:
        return {"service.logs": self.logs}

    async def logs(self, args: dict[str, Any], emit: Emit) -> None:
        """Arguments: `targets` (docker's SERVICE|TASK operands; `service`, one name, is the
        older spelling), `follow`, `tail` (lines per task, None or "all" for all), `since`
        (seconds since the epoch), `details` (the logging driver's attributes of each line).
        One item per line; see `_item` for its keys. Refused on a worker, as `service ps` is
        (the nodes it would ask serve logs to managers only)."""
        refuse_on_a_worker(self.agent)
        await self.agent.read_barrier()
        refs = args.get("targets") or [args.get("service", "")]
        selection = select(self.agent.state, [str(ref) for ref in refs])
        follow = bool(args.get("follow"))
        tail = _tail(args.get("tail"))
        if not follow and not 0 <= tail <= MAX_LINES_PER_TASK:
            # Every line is held until all nodes are done, to be sorted: the newest
            # MAX_LINES_PER_TASK of each task at most (a note says so where it cut).
            tail = MAX_LINES_PER_TASK
        template = LogsRequest(
            (), follow, tail, _since(args.get("since")), details=bool(args.get("details"))
        )
        opened: dict[str, Task] = {}
        send, receive = trio.open_memory_channel[_Line](LINE_BUFFER)
        async with trio.open_nursery() as nursery:
            self._open_new(selection, template, opened, nursery, send)
            if template.follow and selection.grows():
                nursery.start_soon(self._watch, selection, template, opened, send.clone())
            send.close()
            async with receive:
                if template.follow:
                    async for line in receive:
                        await emit(self._item(line, opened))
                else:
                    lines = [line async for line in receive]
                    per_task = collections.Counter(line.task_id for line in lines)
                    for task_id, count in per_task.items():
                        if task_id and count >= MAX_LINES_PER_TASK:
                            note = f"(the newest {MAX_LINES_PER_TASK} lines only: see --since)"
                            lines.append(_Line(opened[task_id].node_id, task_id, "", note))
                    # In a thread: reading 100,000 timestamps takes a quarter of a second, and a
                    # worker chooses how many lines its tasks send (found by review).
                    for line in await off_loop.run(lambda: in_time_order(lines)):
                        await emit(self._item(line, opened))

    def _open_new(
        self,
        selection: Selection,
        template: LogsRequest,
        opened: dict[str, Task],
        nursery: trio.Nursery,
        out: trio.MemorySendChannel[_Line],
    ) -> None:
        """Start a stream per node for the selected tasks not opened yet that have run: before
        RUNNING a task may have no container yet, and a later poll opens it."""
        observed = self.agent.observed().tasks
        by_node: dict[str, list[str]] = {}
        for task in sorted(self.agent.state.tasks.values(), key=lambda t: (t.slot, t.id)):
            if task.id in opened or not task.node_id or not selection.matches(task):
                continue
            obs = observed.get(task.id)
            if max(task.state, obs.state if obs else TaskState.NEW) < TaskState.RUNNING:
                continue
            opened[task.id] = task
            by_node.setdefault(task.node_id, []).append(task.id)
        for node_id, task_ids in by_node.items():
            request = LogsRequest(
                tuple(task_ids), template.follow, template.tail, template.since, template.details
            )
            nursery.start_soon(self._node_logs, node_id, request, out.clone())

    async def _watch(
        self,
        selection: Selection,
        template: LogsRequest,
        opened: dict[str, Task],
        out: trio.MemorySendChannel[_Line],
    ) -> None:
        """While following: open the streams of tasks that start later, until every selected
        service is removed (holding `out` open keeps the follow going meanwhile)."""
        selected = selection.services | {service_id for service_id, _ in selection.slots}
        async with out, trio.open_nursery() as nursery:
            while any(s in self.agent.state.services for s in selected):
                self._open_new(selection, template, opened, nursery, out)
                await trio.sleep(FOLLOW_POLL_INTERVAL_S)

    def _item(self, line: _Line, opened: dict[str, Task]) -> dict[str, Any]:
        """One line for the caller: `task` (SERVICE.SLOT.TASKID10), `task_id`, `service`,
        `service_id`, `slot` (the slot, or the node's name for a global service's task),
        `slot_width` (digits of the replica count: docker pads the prefix by it), `node`,
        `node_id`, `timestamp` (Docker's RFC 3339, or ""), `line` and `details` (the logging
        driver's attributes, with `details`; {} without)."""
        task = opened.get(line.task_id)
        service = self.agent.state.services.get(task.service_id) if task else None
        item: dict[str, Any] = {
            "task": line.task_id,
            "task_id": line.task_id,
            "service": "",
            "service_id": "",
            "slot": "",
            "slot_width": 0,
            "node": self.agent.node_name(line.node_id),
            "node_id": line.node_id,
            "timestamp": line.timestamp,
            "line": line.text,
            "details": dict(line.attrs),
        }
        if task is not None:
            name = service.spec.name if service else task.service_id
            slot = str(task.slot or self.agent.node_name(task.node_id))
            replicated = service is not None and service.spec.mode is ServiceMode.REPLICATED
            item |= {
                "task": f"{name}.{slot}.{task.id[:10]}",
                "service": name,
                "service_id": task.service_id,
                "slot": slot,
                "slot_width": len(str(service.spec.replicas)) if service and replicated else 0,
            }
        return item

    async def _node_logs(
        self, node_id: str, request: LogsRequest, out: trio.MemorySendChannel[_Line]
    ) -> None:
        async with out:
            try:
                if node_id == self.agent.node_id:
                    # Held as another node's are: a task of this node logging 800 MB took the
                    # agent to 867 MB (review).
                    local_send, local_receive = trio.open_memory_channel[LogLine](LINE_BUFFER)
                    local_held = 0
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(self._local_logs, request, local_send)
                        async with local_receive:
                            async for local in local_receive:
                                line, local_held, over = self._hold(
                                    node_id, local, request, local_held
                                )
                                await out.send(line)
                                if over:
                                    nursery.cancel_scope.cancel()
                                    return
                    return
                node = self.agent.state.nodes.get(node_id)
                if node is None or not self.agent.is_ready(node_id):
                    await out.send(_Line(node_id, "", "", "(node is down: no logs)"))
                    return
                stream = await self.agent.transport.connect(parse_addr(node.addr), node_id)
                asked = set(request.task_ids)
                # Without --follow what a node sends is held (see `logs`): an honest one sends
                # `tail` lines a task at most; one that goes on (a node need not stop on its
                # own) is cut, with some slack for a runtime that counts lines its own way.
                allowed = None if request.follow else 2 * request.tail + 100
                sent: collections.Counter[str] = collections.Counter()
                held = 0  # bytes of this node's lines held (without --follow)
                async with stream.stream:
                    await stream.send(request)
                    while True:
                        msg = await stream.receive(expect=(LogLine, EndOfStream))
                        if msg is None or isinstance(msg, EndOfStream):
                            if msg is not None and msg.error:
                                await out.send(_Line(node_id, "", "", f"({msg.error})"))
                            return
                        if msg.task_id not in asked:  # a node speaks for its own tasks only
                            self.agent.transport.counters["logs_dropped_foreign_task"] += 1
                            continue
                        sent[msg.task_id] += 1
                        line, held, over = self._hold(node_id, msg, request, held)
                        if over:
                            await out.send(line)
                            return
                        if allowed is not None and sent[msg.task_id] > request.tail:
                            if sent[msg.task_id] > allowed:
                                self.agent.transport.counters["logs_cut_beyond_tail"] += 1
                                note = f"(more lines than the {request.tail} asked for: cut)"
                                await out.send(_Line(node_id, "", "", note))
                                return
                            continue  # beyond what was asked: not shown
                        await out.send(line)
            except (
                OSError,
                trio.BrokenResourceError,
                RemoteProtocolError,
                trio.TooSlowError,
            ) as exc:
                await out.send(_Line(node_id, "", "", f"(logs unavailable: {exc})"))

    # ------------------------------------------------------------------------ the node side

    def _hold(
        self, node_id: str, msg: LogLine, request: LogsRequest, held: int
    ) -> tuple[_Line, int, bool]:
        """A node's line as it is held (`_bounded`, a cut counted), the bytes of its node's
        lines held with it (without --follow), and whether they went past MAX_BYTES_PER_NODE:
        then the line is the note that ends the node's lines (counted)."""
        line, size, cut = _bounded(node_id, msg, details=request.details)
        if cut:
            self.agent.transport.counters["logs_cut_long_line"] += 1
        if request.follow:
            return line, held, False
        held += size
        if held <= MAX_BYTES_PER_NODE:
            return line, held, False
        self.agent.transport.counters["logs_cut_beyond_bytes"] += 1
        note = f"(more than {MAX_BYTES_PER_NODE >> 20} MiB of lines from this node: cut; "
        return _Line(node_id, "", "", note + "see --since or --tail)"), held, True

    async def _local_logs(self, request: LogsRequest, out: trio.MemorySendChannel[LogLine]) -> None:
        """Lines of this node's containers for `request.task_ids`, into `out` (then closed),
        each with Docker's timestamp split off."""
        executor = self.agent.executor

        async def one(
            task_id: str, container_id: str, out: trio.MemorySendChannel[LogLine]
        ) -> None:
            assert executor is not None
            lines = executor.runtime.logs(
                container_id,
                follow=request.follow,
                tail=None if request.tail < 0 else request.tail,
                since=request.since or None,
                timestamps=True,
                details=request.details,
            )
            async with out, aclosing(lines):
                async for raw in lines:
                    timestamp, line = split_timestamp(raw)
                    attrs: dict[str, str] = {}
                    if request.details:
                        attrs, line = split_details(line)
                    await out.send(LogLine(task_id, line, timestamp, attrs))

        async with out, trio.open_nursery() as nursery:
            if executor is None:
                return
            for task_id in request.task_ids:
                container_id = executor.container_of(task_id)
                if container_id:
                    nursery.start_soon(one, task_id, container_id, out.clone())

    async def _serve(self, stream: FramedStream, request: LogsRequest) -> None:
        # Logs are per-task data: they go to managers only (`service logs` runs on one), as
        # the connection's certificate and this node's state say.
        if stream.peer is None or not peer_policy.is_manager(stream.peer, self.agent.state):
            self.agent.transport.counters["logs_refused_not_manager"] += 1
            await stream.send(EndOfStream(error="logs are served to managers only"))
            return
        if request.follow:
            stream.let_the_reader_pause()  # into a pager the operator paused, for instance
        send, receive = trio.open_memory_channel[LogLine](LINE_BUFFER)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._local_logs, request, send)
            async with receive:
                async for msg in receive:
                    await stream.send(msg)
        await stream.send(EndOfStream())


_TIMESTAMP_CHARS = 64  # Docker's RFC 3339 with nanoseconds and a zone is 35 at most


def _bounded(node_id: str, msg: LogLine, *, details: bool) -> tuple[_Line, int, bool]:
    """A node's line as it is held, the bytes it takes at most, and whether it was cut:
    its attributes only if they were asked for, a timestamp of Docker's shape only, and over
    MAX_LINE_BYTES all told, the start of its text, marked, without its attributes."""
    timestamp = msg.timestamp if len(msg.timestamp) <= _TIMESTAMP_CHARS else ""
    attrs = tuple(sorted(msg.attrs.items())) if details else ()
    size = len(msg.line) + len(timestamp) + sum(len(k) + len(v) for k, v in attrs)
    if size <= MAX_LINE_BYTES:
        text = msg.line.decode(errors="replace")
        return _Line(node_id, msg.task_id, timestamp, text, attrs), size, False
    start = msg.line[:MAX_LINE_BYTES].decode(errors="replace")
    text = f"{start} ... (cut: {size} bytes with its attributes, over {MAX_LINE_BYTES})"
    return _Line(node_id, msg.task_id, timestamp, text), MAX_LINE_BYTES + 128, True
