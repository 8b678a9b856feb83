"""`wire.hosts`: what passes is something the resolver takes without raising anything but
OSError; what fails made `connect` or `sendto` raise UnicodeError, ValueError or OverflowError."""

from __future__ import annotations

import pytest
import trio

from swarmlet.errors import UsageError
from swarmlet.gossip.driver import GossipDatagram
from swarmlet.gossip.messages import Ping
from swarmlet.wire.hosts import is_host, is_port
from swarmlet.wire.transport import BAD_ADDRESS_ERRORS, Transport, parse_addr

GOOD = (
    "10.0.0.2",
    "::1",
    "[fe80::1]",
    "node-1",
    "n1.example.org",
    "a" * 63,
    "x.y.",
    "0a.b",
    "proj_mgr_1",  # compose's container names, which Docker's DNS resolves
    "1.2.3.999",  # not an address: a name, that will not resolve (an OSError)
)
BAD = (
    "",
    "a" * 64,
    "a\x00b",
    ".",
    "x..y",
    "-a",
    "a-",
    "bücher.de",
    "a b",
    "a" * 254,
    "[::1",
    "::1]",
)


@pytest.mark.parametrize("host", GOOD)
def test_addresses_and_dns_names_are_hosts(host: str) -> None:
    assert is_host(host)


@pytest.mark.parametrize("host", BAD)
def test_anything_else_is_not(host: str) -> None:
    assert not is_host(host)


def test_the_longest_name_is_a_host() -> None:
    name = ".".join(["a" * 63] * 3 + ["b" * 61])
    assert len(name) == 253 and is_host(name)
    assert not is_host(name + "c")


@pytest.mark.parametrize("host", ["a" * 64, "a\x00b", "."])
async def test_the_hosts_refused_are_ones_trio_raises_on(host: str) -> None:
    """Why they are refused: trio's `sendto` raises something else than OSError (which every
    caller handles) for each."""
    with (
        trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM) as sock,
        pytest.raises(BAD_ADDRESS_ERRORS) as raised,
    ):
        await sock.sendto(b"x", (host, 9))
    assert not isinstance(raised.value, OSError)


@pytest.mark.parametrize("host", GOOD)
def test_the_hosts_taken_pass_the_idna_codec_that_trio_resolves_them_with(host: str) -> None:
    """What raised UnicodeError was the IDNA codec; a name it takes can only fail to resolve
    (an OSError), never stop whoever tried it."""
    assert host.encode("idna")


@pytest.mark.parametrize("host", ["a" * 64, "."])
async def test_the_transport_makes_them_an_oserror_all_the_same(host: str) -> None:
    transport = Transport(("127.0.0.1", 0), bytes(32), tls=None)  # type: ignore[arg-type]
    with pytest.raises(OSError, match="not an address"):
        await transport.connect((host, 9))


def test_ports() -> None:
    assert [is_port(p) for p in (1, 65535, 0, 65536, -1, True, "80")] == [
        True,
        True,
        False,
        False,
        False,
        False,
        False,
    ]


@pytest.mark.parametrize(
    "text", ["a" * 70 + ":7946", "1.2.3.4:99999", "1.2.3.4:0", "host", ":7946", "a\x00b:1", "h:٣"]
)
def test_parse_addr_refuses_what_would_not_connect(text: str) -> None:
    with pytest.raises(UsageError, match="invalid address"):
        parse_addr(text)


def test_parse_addr_takes_hosts_and_ports() -> None:
    assert parse_addr("10.0.0.2:7946") == ("10.0.0.2", 7946)
    assert parse_addr("node-1:80") == ("node-1", 80)
    assert parse_addr("[::1]:7946") == ("[::1]", 7946)


async def test_a_datagram_to_a_bad_address_is_a_counted_send_error() -> None:
    transport = Transport(("127.0.0.1", 0), bytes(32), tls=None)  # type: ignore[arg-type]
    await transport.open_udp()
    ping = GossipDatagram((Ping(1, "n2"),))
    assert not await transport.send_datagram(("a" * 70, 9), ping)
    assert not await transport.send_datagram(("127.0.0.1", 70000), ping)
    assert transport.counters["datagram_send_errors"] == 2
    assert transport._udp is not None
    transport._udp.close()
