"""Control API handlers with known answers, for the tests of both control clients: each one
answers, or fails with one kind of error, so a test can see how the error reaches the client."""

from __future__ import annotations

from typing import Any

from swarmlet.api.control_socket import Emit, Handler, StreamHandler
from swarmlet.errors import NoLeaderError, NotLeaderError, StackError, UsageError


async def echo(args: dict[str, Any]) -> Any:
    return args


async def big(args: dict[str, Any]) -> Any:
    """An answer of `size` bytes (a listing of 100,000 tasks) to a short request."""
    return {"data": b"\x01" * int(args["size"])}


async def usage(args: dict[str, Any]) -> Any:
    raise UsageError("no such service 'web'")


async def not_leader(args: dict[str, Any]) -> Any:
    raise NotLeaderError(args.get("hint"))


async def no_leader(args: dict[str, Any]) -> Any:
    raise NoLeaderError("no leader; retry later")


async def stack(args: dict[str, Any]) -> Any:
    raise StackError("web.yml", "services.app.image", "required")


async def count(args: dict[str, Any], emit: Emit) -> None:
    for i in range(int(args.get("n", 0))):
        await emit({"i": i})


async def count_then_fail(args: dict[str, Any], emit: Emit) -> None:
    await emit("first")
    raise UsageError("stream broke")


HANDLERS: dict[str, Handler] = {
    "echo": echo,
    "big": big,
    "usage": usage,
    "not_leader": not_leader,
    "no_leader": no_leader,
    "stack": stack,
}
STREAMS: dict[str, StreamHandler] = {"count": count, "count_then_fail": count_then_fail}
