"""The messages between the agent's proxy and its worker processes, and their framing on the
control socket (a Unix socketpair the agent opens for each worker).

Agent -> worker: a `RouteTable` each time the agent's routes change, latest wins; the worker
then listens on exactly the ports the agent holds, with the same endpoints. Worker -> agent: a
`WorkerReport` of its cumulative counters (`swarmlet.proxy.counters` adds them up).

Framing: each message is one msgpack value (`swarmlet.wire.codec`) written back to back on the
stream; a `ControlDecoder` per direction and per connection cuts the stream into messages,
bounded by CONTROL_MAX_BYTES, and accepts only the one type that direction carries.

The wire types register under `catalog.PROXY_WORKERS` in the order of `WIRE_TYPES` (append only:
the ids are positions). Both ends run the same version of this module, so nothing here is kept
for older peers. Pure: no sockets, no trio; the pool and the worker process do the I/O.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

from swarmlet.proxy.counters import PortCounters
from swarmlet.proxy.routes import Route
from swarmlet.wire import catalog
from swarmlet.wire import codec as wire

CONTROL_MAX_BYTES = 16 * 1024 * 1024  # one route table or report, at most


@dataclass(frozen=True, slots=True)
class RouteTable:
    """Every port the agent listens on, with its endpoints: the worker listens on these."""

    version: int  # counts the tables the agent sent; a worker's reports echo the last applied
    publish_host: str
    routes: tuple[Route, ...]


@dataclass(frozen=True, slots=True)
class WorkerReport:
    """A worker's counters since it started, for each port it listens on. Sent when they
    changed, and at once after each route table is applied."""

    table_version: int
    ports: tuple[PortCounters, ...]


# Registered under `catalog.PROXY_WORKERS` (append only).
WIRE_TYPES: tuple[type, ...] = (Route, RouteTable, PortCounters, WorkerReport)
wire.register_all(catalog.PROXY_WORKERS, WIRE_TYPES)

Message = TypeVar("Message", RouteTable, WorkerReport)


def encode(message: RouteTable | WorkerReport) -> bytes:
    """One message, framed for the control socket."""
    return wire.encode(message)


class ControlDecoder(Generic[Message]):
    """The messages of one direction of one control socket, from its bytes as they arrive.
    Raises `RemoteProtocolError` for anything but a well-formed `expect`, a message larger
    than CONTROL_MAX_BYTES included."""

    def __init__(self, expect: type[Message]) -> None:
        self._expect: type[Message] = expect
        self._unpacker = wire.new_unpacker(CONTROL_MAX_BYTES)

    def feed(self, chunk: bytes | bytearray) -> Iterator[Message]:
        """The messages `chunk` completes, one at a time: each is decoded only when the
        previous one has been handled."""
        self._unpacker.feed(chunk)
        for value in self._unpacker:
            message: Message = wire.from_plain(value, expect=(self._expect,))
            yield message
