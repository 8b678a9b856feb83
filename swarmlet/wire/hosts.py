"""What a peer may give as a host to connect to: an IP address, or a DNS name as RFC 1123 spells
one. Pure.

Hosts come from the network (gossip's `Alive.host` and `PingReq.target_host`, a joining node's
`addr`, a task's endpoint) and end in `socket.connect` or `sendto`, which do not only fail with
OSError on a bad one: a label over 63 bytes raises UnicodeError (the IDNA codec), a NUL byte
ValueError. Such an exception escaping a handler stopped the agent, so one datagram could stop
every member. Checked where the host enters, a host is something the resolver can take; a host
that passes may still not resolve or answer, which is the ordinary OSError every caller handles.
"""

from __future__ import annotations

import ipaddress
import re

MAX_NAME_BYTES = 253  # a DNS name, without the trailing dot
# RFC 1123 labels, and the underscore that Docker's and compose's names carry ("proj_mgr_1",
# which Docker's DNS resolves): it makes no resolver raise anything but OSError.
_LABEL = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)")


def is_host(text: object) -> bool:
    """Whether `text` is an IPv4 or IPv6 address (bare or in brackets) or a DNS name."""
    if not isinstance(text, str) or not text or not text.isascii():
        return False
    bare = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    try:
        ipaddress.ip_address(bare)
        return True
    except ValueError:
        pass
    name = text.removesuffix(".")
    return len(name) <= MAX_NAME_BYTES and all(_LABEL.fullmatch(x) for x in name.split("."))


def is_port(value: object) -> bool:
    """A TCP or UDP port a peer can be reached on (1-65535; int, not bool)."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value <= 65535


def host_of(addr: str) -> str:
    """The host of "HOST:PORT" (an IPv6 host bare or in brackets); "" if `addr` is empty."""
    host = addr.rpartition(":")[0] if ":" in addr else addr
    return host.removeprefix("[").removesuffix("]")


def ip_of(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address `host` spells (bare or in brackets); None for a name."""
    try:
        return ipaddress.ip_address(host.removeprefix("[").removesuffix("]"))
    except ValueError:
        return None


def same_host(a: str, b: str) -> bool:
    """Whether two hosts name one address: equal IPs however spelled ("::1", "0::1"), or equal
    names but for case and a trailing dot. An empty host is no host."""
    if a == b:
        return bool(a)
    ip_a, ip_b = ip_of(a), ip_of(b)
    if ip_a is not None or ip_b is not None:
        return ip_a is not None and ip_a == ip_b
    return bool(a) and a.lower().rstrip(".") == b.lower().rstrip(".")
