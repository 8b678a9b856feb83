"""The agent's tunables: timings of Raft, gossip, writes and departures, and the mesh's workers.

Every field carries its unit; the defaults are what a LAN cluster wants. Operators override a few
of them through the environment (`node.main.config_from_env`). Values only: nothing here starts,
reads or measures anything (`parse_metrics_addr` checks a string; the CLI uses it for its flag).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

from swarmlet import certs
from swarmlet.errors import UsageError
from swarmlet.gossip.config import GossipConfig
from swarmlet.proxy.worker_pool import default_worker_count
from swarmlet.raft.core import RaftConfig


@dataclass(frozen=True)
class AgentConfig:
    gossip: GossipConfig = field(default_factory=GossipConfig.lan)
    # Raft runs on ticks of `raft_tick_interval_s`. Election timeout: election_ticks..2x ticks,
    # i.e. 0.4-0.8 s: a dead leader is replaced in ~0.6 s + one election round trip, the 1 s
    # failover goal with margin for Python's scheduling jitter. Heartbeats every 2 ticks (100 ms,
    # etcd's default): 4-8 per election timeout, and half the idle traffic of one per tick.
    raft: RaftConfig = field(
        default_factory=lambda: RaftConfig(election_ticks=8, heartbeat_ticks=2)
    )
    raft_tick_interval_s: float = 0.05
    # Entries applied before the Raft log may be compacted into a snapshot (etcd's
    # --snapshot-count; `raft.driver` says what else it waits for).
    raft_snapshot_every: int = 2000
    # A voter down this long is replaced by a healthy standby manager (beyond Swarm).
    voter_grace_s: float = 30.0
    # How long a write waits for a leader (an election, a partition healing) before failing.
    write_timeout_s: float = 10.0
    # How often the agent refreshes its load figures in its gossip metadata.
    meta_refresh_s: float = 2.0
    leave_timeout_s: float = 2.0
    # How long the certificates this node issues (as a manager) are valid; nodes renew theirs
    # at half-life (`security.certificates`). Swarm's default is 90 days.
    cert_lifetime_s: float = certs.DEFAULT_LIFETIME_S
    # Extra processes serving the routing mesh's ports beside the agent (0: the agent alone).
    proxy_workers: int = field(default_factory=default_worker_count)
    # Where Prometheus scrapes this agent (`node.metrics`), as (host, port); "" listens on every
    # interface. None (the default): no metrics endpoint; it is opt-in.
    metrics_addr: tuple[str, int] | None = None


# RFC 1123 host names: dot-separated labels of letters, digits and inner hyphens.
_HOSTNAME = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*\.?")


def parse_metrics_addr(text: str) -> tuple[str, int]:
    """HOST:PORT (as Prometheus exporters take it: `:9100` is every interface, `[::1]:9100`
    an IPv6 address) -> (host, port). UsageError, saying what was expected, otherwise."""
    host, sep, port = text.strip().rpartition(":")
    expected = "expected HOST:PORT, e.g. 127.0.0.1:9946, [::1]:9946 or :9946 (every interface)"
    if not sep or not (port.isascii() and port.isdigit()) or not 1 <= int(port) <= 65535:
        raise UsageError(f"invalid metrics address {text!r}: {expected}, with a port 1-65535")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise UsageError(
                f"invalid metrics address {text!r}: {host!r} is no IPv6 address"
            ) from None
    elif host and not _HOSTNAME.fullmatch(host):
        raise UsageError(f"invalid metrics address {text!r}: {host!r} is no host name or address")
    return host, int(port)
