"""The PROXY protocol header (HAProxy's spec, haproxy.org/download/3.0/doc/proxy-protocol.txt)
that the mesh writes to a replica before any client byte, on the ports that opt in
(`PortConfig.proxy_protocol`), so the replica learns the real client's address through the mesh.

Version 1 is one text line, "PROXY TCP4 <client> <local> <client port> <local port>\\r\\n"
(TCP6 for IPv6); version 2 is binary: a 12-byte signature, the version and command byte (0x21:
v2, PROXY), the family and transport byte (0x11: TCP over IPv4, 0x21: TCP over IPv6), the
length of the addresses that follow (big-endian), then the source and destination addresses and
ports. "Local" is the address the client connected to (the node's published address). No TLVs.

Pure: addresses in, bytes out.
"""

from __future__ import annotations

import ipaddress
import struct

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
_V2_PROXY_COMMAND = 0x21  # version 2 (high nibble), PROXY command (low nibble)
_V2_TCP4 = 0x11  # AF_INET (high nibble), STREAM (low nibble)
_V2_TCP6 = 0x21  # AF_INET6, STREAM

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def _address(host: str) -> Address:
    address = ipaddress.ip_address(host.partition("%")[0])  # a link-local scope is not sent
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped  # an IPv4 client of a dual-stack socket
    return address


def proxy_header(version: str, client: tuple[str, int], local: tuple[str, int]) -> bytes:
    """The header of `version` ("v1" or "v2") for a TCP connection from `client` (host, port)
    to `local`. Both addresses come from one socket, so they are of one family; should they
    not be, both are sent as IPv6 (an IPv4 address as IPv4-mapped)."""
    source, destination = _address(client[0]), _address(local[0])
    if source.version != destination.version:
        source, destination = _as_ipv6(source), _as_ipv6(destination)
    if version == "v1":
        family = "TCP4" if source.version == 4 else "TCP6"
        return (
            f"PROXY {family} {source.compressed} {destination.compressed} "
            f"{client[1]} {local[1]}\r\n"
        ).encode("ascii")
    if version == "v2":
        family_byte = _V2_TCP4 if source.version == 4 else _V2_TCP6
        addresses = source.packed + destination.packed + struct.pack("!HH", client[1], local[1])
        return (
            V2_SIGNATURE
            + struct.pack("!BBH", _V2_PROXY_COMMAND, family_byte, len(addresses))
            + addresses
        )
    raise ValueError(f"unknown PROXY protocol version {version!r}: v1 or v2")


def _as_ipv6(address: Address) -> ipaddress.IPv6Address:
    if isinstance(address, ipaddress.IPv6Address):
        return address
    return ipaddress.IPv6Address(b"\0" * 10 + b"\xff\xff" + address.packed)
