"""The PROXY protocol header, byte for byte against HAProxy's spec
(haproxy.org/download/3.0/doc/proxy-protocol.txt): its v1 examples and length bounds, and the v2
layout (signature, version and command, family and transport, length, addresses, ports)."""

from __future__ import annotations

import ipaddress
import struct

import pytest

from swarmlet.proxy.proxy_header import V2_SIGNATURE, proxy_header

# The spec's 12-byte v2 signature, as it spells it out.
SPEC_SIGNATURE = bytes([0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A])


def test_v1_tcp4_is_the_specs_example_line() -> None:
    header = proxy_header("v1", ("192.168.0.1", 56324), ("192.168.0.11", 443))
    assert header == b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n"


def test_v1_tcp4_at_its_longest_is_the_specs_56_bytes() -> None:
    header = proxy_header("v1", ("255.255.255.255", 65535), ("255.255.255.255", 65535))
    assert header == b"PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n"
    assert len(header) == 56


def test_v1_tcp6_at_its_longest_is_the_specs_104_bytes() -> None:
    full = ":".join(["ffff"] * 8)
    header = proxy_header("v1", (full, 65535), (full, 65535))
    assert header == f"PROXY TCP6 {full} {full} 65535 65535\r\n".encode()
    assert len(header) == 104


def test_v1_tcp6_writes_addresses_in_their_short_form() -> None:
    header = proxy_header("v1", ("2001:db8:0:0:0:0:0:7", 40000), ("2001:db8::1", 8080))
    assert header == b"PROXY TCP6 2001:db8::7 2001:db8::1 40000 8080\r\n"


def test_v2_tcp4_layout() -> None:
    header = proxy_header("v2", ("192.168.0.1", 56324), ("192.168.0.11", 443))
    assert V2_SIGNATURE == SPEC_SIGNATURE
    assert header[:12] == SPEC_SIGNATURE
    assert header[12] == 0x21  # version 2, command PROXY
    assert header[13] == 0x11  # AF_INET, STREAM
    assert struct.unpack("!H", header[14:16]) == (12,)  # 4 + 4 + 2 + 2
    assert header[16:20] == bytes([192, 168, 0, 1])
    assert header[20:24] == bytes([192, 168, 0, 11])
    assert struct.unpack("!HH", header[24:28]) == (56324, 443)
    assert len(header) == 16 + 12


def test_v2_tcp6_layout() -> None:
    header = proxy_header("v2", ("2001:db8::7", 40000), ("2001:db8::1", 8080))
    assert header[:12] == SPEC_SIGNATURE
    assert header[12] == 0x21
    assert header[13] == 0x21  # AF_INET6, STREAM
    assert struct.unpack("!H", header[14:16]) == (36,)  # 16 + 16 + 2 + 2
    assert header[16:32] == ipaddress.IPv6Address("2001:db8::7").packed
    assert header[32:48] == ipaddress.IPv6Address("2001:db8::1").packed
    assert struct.unpack("!HH", header[48:52]) == (40000, 8080)
    assert len(header) == 16 + 36


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_an_ipv4_client_of_a_dual_stack_socket_is_sent_as_ipv4(version: str) -> None:
    mapped = proxy_header(version, ("::ffff:10.0.0.5", 1234), ("::ffff:10.0.0.1", 80))
    assert mapped == proxy_header(version, ("10.0.0.5", 1234), ("10.0.0.1", 80))


def test_a_link_local_scope_is_not_sent() -> None:
    header = proxy_header("v1", ("fe80::1%eth0", 1234), ("fe80::2%eth0", 80))
    assert header == b"PROXY TCP6 fe80::1 fe80::2 1234 80\r\n"


def test_an_unknown_version_is_refused() -> None:
    with pytest.raises(ValueError, match="v3"):
        proxy_header("v3", ("10.0.0.5", 1234), ("10.0.0.1", 80))
