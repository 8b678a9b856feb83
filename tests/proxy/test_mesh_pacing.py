"""The routing mesh follows the replicated state, which under a stream of writes moves at every
applied batch, every few milliseconds: it reads its routes as `tests.pacing` says (issue #20:
reading them at every batch was a twentieth of a follower's CPU under writes). And it listens on
no more ports than its descriptor budget holds."""

from __future__ import annotations

import socket

import pytest
import trio
import trio.testing

from swarmlet.proxy import mesh
from swarmlet.proxy.mesh import Proxy, Route
from tests.pacing import check_paced


async def test_the_routes_are_read_at_once_after_quiet_and_once_per_gap_under_a_stream(
    autojump_clock: trio.testing.MockClock,
) -> None:
    read_at: list[float] = []

    def routes() -> list[Route]:
        read_at.append(trio.current_time())
        return []

    proxy = Proxy("127.0.0.1", routes)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(proxy.run)
            await trio.sleep(0.5)  # quiet (the periodic look comes on the beat of 2 s)
            await check_paced(proxy.notify, read_at)
            nursery.cancel_scope.cancel()


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = sorted(s.getsockname()[1] for s in sockets)
    for s in sockets:
        s.close()
    return ports


async def test_ports_past_the_listener_budget_are_port_errors_not_listeners(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A range of 20,000 published ports took every descriptor, and the agent stopped at each
    # start: past the budget a port is a port error (shown by `service ps`) and takes nothing.
    monkeypatch.setattr(mesh, "MAX_LISTENERS", 3)
    ports = _free_ports(5)
    routes = [Route("web", p, "tcp", ()) for p in reversed(ports)]
    routes.append(Route("web", 80, "tcp", (), host="127.0.0.9"))  # a VIP: after the published
    proxy = Proxy("127.0.0.1", lambda: routes)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(proxy.run)
            assert sorted(key[1] for key in proxy.relay.listeners) == ports[:3]
            assert proxy.port_errors == {
                (p, "tcp"): f"cannot listen on 127.0.0.1:{p}: this node listens on 3 ports at most"
                for p in ports[3:]
            }
            for port in ports[3:]:
                with pytest.raises(OSError, match="all attempts to connect"):
                    await trio.open_tcp_stream("127.0.0.1", port)
            nursery.cancel_scope.cancel()
