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
