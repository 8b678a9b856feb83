"""The metrics endpoint over real loopback sockets, and its opt-in address: parsed from the
environment, refused with a clear error when malformed or busy."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio
import trio.testing
from prometheus_client.parser import text_string_to_metric_families as parse_text

from swarmlet.errors import UsageError
from swarmlet.node import metrics
from swarmlet.node.config import parse_metrics_addr
from swarmlet.node.main import config_from_env, run_agent
from swarmlet.node.metrics import serve_metrics
from swarmlet.security.datadir import DataDir
from tests.node.test_metrics import a_busy_agent

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
async def endpoint() -> AsyncIterator[int]:
    """A metrics endpoint of a busy fake agent on a free loopback port."""
    port = free_port()
    async with trio.open_nursery() as nursery:
        await nursery.start(serve_metrics, a_busy_agent(), (HOST, port))
        yield port
        nursery.cancel_scope.cancel()


async def exchange(port: int, request: bytes) -> bytes:
    """Send `request`, read until the server closes."""
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream(HOST, port)
        async with stream:
            await stream.send_all(request)
            response = b""
            while chunk := await stream.receive_some(65536):
                response += chunk
            return response


def split(response: bytes) -> tuple[str, dict[str, str], bytes]:
    head, _, body = response.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return status, headers, body


async def test_get_metrics_returns_the_text_exposition(endpoint: int) -> None:
    response = await exchange(endpoint, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    status, headers, body = split(response)
    assert status == "HTTP/1.1 200 OK"
    assert headers["content-type"].startswith("text/plain; version=0.0.4")
    assert int(headers["content-length"]) == len(body)
    families = {f.name: f for f in parse_text(body.decode())}
    assert families["swarmlet_raft_term"].samples[0].value == 7


async def test_openmetrics_is_served_when_the_scraper_asks_for_it(endpoint: int) -> None:
    accept = b"Accept: application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4\r\n"
    response = await exchange(endpoint, b"GET /metrics HTTP/1.1\r\n" + accept + b"\r\n")
    status, headers, body = split(response)
    assert status == "HTTP/1.1 200 OK"
    assert headers["content-type"].startswith("application/openmetrics-text")
    assert body.endswith(b"# EOF\n")


async def test_head_has_the_length_and_no_body(endpoint: int) -> None:
    status, headers, body = split(await exchange(endpoint, b"HEAD /metrics HTTP/1.0\r\n\r\n"))
    assert status == "HTTP/1.1 200 OK"
    assert int(headers["content-length"]) > 0
    assert body == b""


@pytest.mark.parametrize(
    ("request_", "status"),
    [
        (b"GET / HTTP/1.1\r\n\r\n", "HTTP/1.1 404 Not Found"),
        (b"POST /metrics HTTP/1.1\r\n\r\n", "HTTP/1.1 405 Method Not Allowed"),
        (b"nonsense\r\n\r\n", "HTTP/1.1 400 Bad Request"),
    ],
)
async def test_anything_but_get_metrics_is_refused(
    endpoint: int, request_: bytes, status: str
) -> None:
    assert split(await exchange(endpoint, request_))[0] == status


async def test_an_oversized_request_head_is_closed_without_answer(endpoint: int) -> None:
    too_long = b"GET /metrics HTTP/1.1\r\nX: " + b"a" * (metrics.MAX_REQUEST_HEAD_BYTES + 10)
    assert await exchange(endpoint, too_long) == b""


async def test_a_silent_client_is_closed_after_the_deadline(
    endpoint: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(metrics, "REQUEST_DEADLINE_S", 0.2)
    assert await exchange(endpoint, b"GET /metrics HTTP/1.1\r\n") == b""


async def test_connections_over_the_cap_are_closed_at_once(endpoint: int) -> None:
    idle = [await trio.open_tcp_stream(HOST, endpoint) for _ in range(metrics.MAX_CONNECTIONS)]
    await trio.testing.wait_all_tasks_blocked()  # each holds a slot, waiting for its request
    assert await exchange(endpoint, b"GET /metrics HTTP/1.1\r\n\r\n") == b""
    for stream in idle:
        await stream.aclose()
    await trio.testing.wait_all_tasks_blocked()  # their slots are free again
    status, _, _ = split(await exchange(endpoint, b"GET /metrics HTTP/1.1\r\n\r\n"))
    assert status == "HTTP/1.1 200 OK"


async def test_without_an_address_nothing_is_served() -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(serve_metrics, a_busy_agent(), None)
            # Returned at once: the nursery has nothing left to wait for.
            assert not nursery.child_tasks


async def test_a_busy_address_is_refused_with_what_to_do() -> None:
    with socket.socket() as taken:
        taken.bind((HOST, 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(UsageError, match=rf"cannot serve metrics on {HOST}:{port}: .*"):
            await serve_metrics(a_busy_agent(), (HOST, port))


# ---------------------------------------------------------------------------- the address


@pytest.mark.parametrize(
    ("text", "addr"),
    [
        ("127.0.0.1:9946", ("127.0.0.1", 9946)),
        (":9946", ("", 9946)),
        ("[::1]:9946", ("::1", 9946)),
        ("node-1.example.com:80", ("node-1.example.com", 80)),
        ("localhost:65535", ("localhost", 65535)),
    ],
)
def test_metrics_addresses_that_parse(text: str, addr: tuple[str, int]) -> None:
    assert parse_metrics_addr(text) == addr


@pytest.mark.parametrize(
    "text",
    ["9946", "127.0.0.1", "127.0.0.1:", "127.0.0.1:0", "127.0.0.1:70000", "host:http",
     "::1:9946", "[nothost]:9946", "bad_host:9946", "-a:1", "127.0.0.1:٩٩"],
)  # fmt: skip
def test_malformed_metrics_addresses_are_refused(text: str) -> None:
    with pytest.raises(UsageError, match="invalid metrics address"):
        parse_metrics_addr(text)


def test_metrics_are_off_unless_asked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SWARMLET_METRICS_ADDR", raising=False)
    assert config_from_env().metrics_addr is None


def test_the_environment_sets_the_metrics_address(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWARMLET_METRICS_ADDR", "127.0.0.2:9946")
    assert config_from_env().metrics_addr == ("127.0.0.2", 9946)


def test_a_malformed_environment_value_is_refused_by_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SWARMLET_METRICS_ADDR", "127.0.0.1")
    with pytest.raises(UsageError, match=r"SWARMLET_METRICS_ADDR: invalid metrics address"):
        config_from_env()


def test_the_agent_refuses_to_start_on_a_malformed_address(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Exit status 2 before anything is opened; the message it logs ("refusing to start:
    # SWARMLET_METRICS_ADDR: invalid metrics address ...") is checked end to end, through the
    # command's output, by tests/integration/test_metrics.py.
    monkeypatch.setenv("SWARMLET_METRICS_ADDR", "localhost:metrics")
    assert run_agent(DataDir(tmp_path)) == 2
    assert list(tmp_path.iterdir()) == []
