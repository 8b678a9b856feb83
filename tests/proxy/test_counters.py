"""The mesh's counters across processes, and the messages between the agent and its proxy
workers: pure, no sockets."""

from __future__ import annotations

import msgpack
import pytest

from swarmlet.errors import RemoteProtocolError
from swarmlet.proxy.counters import PortCounters, PortStats, add, retire, snapshot, total
from swarmlet.proxy.routes import Route
from swarmlet.proxy.worker_protocol import RouteTable, WorkerReport
from swarmlet.state.observed import Endpoint
from swarmlet.wire import codec as wire

KEY = ("", 8080, "tcp")
VIP = ("10.0.9.2", 80, "tcp")
A, B = Endpoint(80, "tcp", "10.0.0.1", 30001), Endpoint(80, "tcp", "10.0.0.2", 30002)


def counters(key: tuple[str, int, str] = KEY, **fields: object) -> PortCounters:
    return PortCounters(*key, **fields)  # type: ignore[arg-type]


def test_a_snapshot_names_endpoints_as_host_and_port() -> None:
    stats = PortStats(connections=3, active=1, bytes_in=10, bytes_out=20, errors=1, retries=1)
    stats.per_endpoint.update({A: 2, B: 1})
    assert snapshot(KEY, stats) == counters(
        connections=3,
        active=1,
        bytes_in=10,
        bytes_out=20,
        errors=1,
        retries=1,
        endpoints={"10.0.0.1:30001": 2, "10.0.0.2:30002": 1},
    )


def test_counters_of_one_port_add_field_by_field_and_endpoint_by_endpoint() -> None:
    a = counters(connections=5, active=2, refused=1, endpoints={"a": 3, "b": 2})
    b = counters(connections=4, active=1, bytes_out=7, endpoints={"b": 1, "c": 3})
    assert add(a, b) == counters(
        connections=9, active=3, refused=1, bytes_out=7, endpoints={"a": 3, "b": 3, "c": 3}
    )


def test_counters_of_different_ports_do_not_add() -> None:
    with pytest.raises(ValueError, match="cannot add"):
        add(counters(KEY), counters(VIP))


def test_the_total_covers_the_agents_ports_only() -> None:
    own = [counters(KEY, connections=1), counters(VIP, connections=2)]
    worker_1 = {KEY: counters(KEY, connections=10)}
    worker_2 = {KEY: counters(KEY, connections=100), ("", 9, "tcp"): counters(("", 9, "tcp"))}
    assert total(own, [worker_1, worker_2]) == [
        counters(KEY, connections=111),
        counters(VIP, connections=2),
    ]


def test_a_dead_workers_counters_are_kept_but_not_its_active_connections() -> None:
    first = retire({}, {KEY: counters(connections=10, active=3, endpoints={"a": 10})})
    assert first == {KEY: counters(connections=10, endpoints={"a": 10})}
    second = retire(first, {KEY: counters(connections=5, active=1, endpoints={"a": 5})})
    assert second == {KEY: counters(connections=15, endpoints={"a": 15})}


def test_a_route_table_and_a_report_survive_the_wire() -> None:
    table = RouteTable(
        3,
        "127.0.0.1",
        (Route("web", 8080, "tcp", (A, B)), Route("api", 80, "tcp", (A,), "10.0.9.2")),
    )
    report = WorkerReport(3, (counters(connections=2, endpoints={"a": 2}),))
    assert wire.decode(wire.encode(table), expect=(RouteTable,)) == table
    assert wire.decode(wire.encode(report), expect=(WorkerReport,)) == report


def test_a_garbled_route_table_is_rejected() -> None:
    type_id, (version, host, routes) = msgpack.unpackb(
        wire.encode(RouteTable(1, "h", (Route("web", 8080, "tcp", (A,)),)))
    )
    routes[0][1][1] = "8080"  # the port as a string
    with pytest.raises(RemoteProtocolError, match="published"):
        wire.decode(msgpack.packb([type_id, [version, host, routes]]), expect=(RouteTable,))
    with pytest.raises(RemoteProtocolError):
        wire.decode(wire.encode(RouteTable(1, "h", ())), expect=(WorkerReport,))
