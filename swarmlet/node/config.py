"""The agent's tunables: timings of Raft, gossip, writes and departures, and the mesh's workers.

Every field carries its unit; the defaults are what a LAN cluster wants. Operators override a few
of them through the environment (`node.main.config_from_env`). Values only: nothing here starts,
reads or measures anything.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from swarmlet import certs
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
