"""A fake agent behind a real control socket: the fixture cluster, its writes recorded and applied.

It answers the calls the dashboard makes with the fixture cluster (`fixtures.py`), records every
write with its arguments (the same operations and arguments the CLI sends), applies a scale to
its service list, streams events in batches and a few log lines per task. `serve_in_thread` runs
it in a thread of its own (its own trio run) for the Textual app, which runs on asyncio.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import trio

from swarmlet.api.control_socket import Emit, serve_control
from swarmlet.errors import UsageError
from swarmlet.state.model import ServiceSpec
from swarmlet.wire import codec as wire

from .fixtures import NODES, SERVICES, STATUS, TASKS


class FakeAgent:
    def __init__(self, batches: list[list[dict[str, Any]]] | None = None, *, worker: bool = False):
        self.batches = list(batches or [])
        self.since: list[float] = []
        self.status = copy.deepcopy(STATUS)
        self.nodes = copy.deepcopy(NODES)
        self.services = copy.deepcopy(SERVICES)
        self.tasks = copy.deepcopy(TASKS)
        self.writes: list[tuple[str, dict[str, Any]]] = []
        self.worker = worker

    def _service(self, name: str) -> dict[str, Any]:
        for s in self.services["services"]:
            if s["name"] == name:
                return dict(s)
        raise UsageError(f"no such service: {name}")

    def handlers(self) -> dict[str, Any]:
        def read(value: Any) -> Any:
            async def handler(args: dict[str, Any]) -> Any:
                return copy.deepcopy(value)

            return handler

        def write(op: str) -> Any:
            async def handler(args: dict[str, Any]) -> Any:
                if self.worker:  # as `api.nodes.managers_only` refuses
                    raise UsageError("this node is a worker: run this on a manager")
                self.writes.append((op, args))
                return self._apply(op, args)

            return handler

        async def spec(args: dict[str, Any]) -> bytes:
            s = self._service(str(args["service"]))
            return wire.encode(ServiceSpec(name=s["name"], image=s["image"], force_update=2))

        return {
            "status": read(self.status),
            "node.ls": read(self.nodes),
            "service.ls": read(self.services),
            "service.ps": read(self.tasks),
            "service.spec": spec,
            **{
                op: write(op)
                for op in (
                    "service.scale",
                    "service.update",
                    "service.rollback",
                    "service.rm",
                    "node.update",
                )
            },
        }

    def _apply(self, op: str, args: dict[str, Any]) -> Any:
        if op == "service.scale":
            for s in self.services["services"]:
                if s["name"] in args["scale"]:
                    s["replicas_desired"] = args["scale"][s["name"]]
            return {"scaled": dict(args["scale"])}
        if op == "service.update":
            return {"id": "s-x", "version": 7}
        if op == "service.rm":
            return {"removed": list(args["services"])}
        return {"id": "x"}

    def streams(self) -> dict[str, Any]:
        return {"events": self.events, "service.logs": self.logs}

    async def events(self, args: dict[str, Any], emit: Emit) -> None:
        self.since.append(float(args["since"]))
        batch = self.batches.pop(0) if self.batches else []
        for event in batch:
            await emit(event)
        if not self.batches:
            await trio.sleep_forever()  # a follower: the stream stays open

    async def logs(self, args: dict[str, Any], emit: Emit) -> None:
        service = str(args["service"])
        for t in self.tasks["tasks"]:
            if t["service"] == service and t["node"]:
                name = f"{service}.{t['slot']}.{t['id'][:10]}"
                await emit({"task": name, "node": t["node_name"], "line": f"hello from {t['id']}"})
        if args.get("follow"):
            await trio.sleep_forever()


async def serve(nursery: trio.Nursery, path: Path, agent: FakeAgent) -> None:
    await nursery.start(serve_control, path, agent.handlers(), agent.streams())


@contextmanager
def serve_in_thread(path: Path, agent: FakeAgent) -> Iterator[FakeAgent]:
    """The fake agent on `path`, served by a trio run in a thread, stopped on exit."""
    ready = threading.Event()
    box: dict[str, Any] = {}

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            box["token"] = trio.lowlevel.current_trio_token()
            box["cancel"] = nursery.cancel_scope.cancel
            await serve(nursery, path, agent)
            ready.set()

    def run() -> None:
        try:
            trio.run(main)
        except BaseException as exc:  # reported to the test below
            box["error"] = exc
            ready.set()

    thread = threading.Thread(target=run, name="fake-agent", daemon=True)
    thread.start()
    assert ready.wait(10), "the fake agent did not start"
    if "error" in box:
        raise box["error"]
    try:
        yield agent
    finally:
        box["token"].run_sync_soon(box["cancel"])
        thread.join(10)
        assert not thread.is_alive(), "the fake agent did not stop"
