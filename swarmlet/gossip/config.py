"""Tunables of the SWIM + Lifeguard membership core.

Owns the numbers and why they were chosen; the formulas that use them live in `maths`. Every field
carries its unit in its name. `GossipConfig.lan()` is the default for agents on one LAN (or on
loopback addresses of one machine).

How the LAN default meets its goal (10 members; a killed member declared dead by all with a median
of <= 2 s, a few times sooner than memberlist's LAN config with its 1 s probe interval; no false
DEAD over 10 minutes at 5% packet loss with a busy CPU delaying the receivers):

detection ~= first probe of the victim + one probe interval (ping, then ping-req) + the minimum
suspicion timeout, on every member's own timer:
  - each of the 9 survivors probes the victim once per round of 9 probes (9 * 0.3 s = 2.7 s), at an
    independent phase, so the first probe comes ~2.7 / 10 = 0.27 s after the crash on average;
  - the probe ends 0.3 s later without an ack: Suspect;
  - min suspicion = 4 * max(1, log10(10)) * 0.3 s = 1.2 s. With k = 4 - 2 = 2 expected
    confirmations, the next two survivors to probe the victim (~0.3 s and ~0.6 s later) confirm
    it, so the timer shrinks to the minimum before it fires. A confirmation counts only in its
    accuser's own name (a signature covers its signer's word), so each accuser sends its
    Suspect straight to the other members (`core._tell_accusation`): every member's timer
    starts with the first Suspect it hears and shrinks with the same confirmations;
  - another member's Dead is one more confirmation, not a verdict: each member declares the
    death on its own timer, within a gossip round or two of the first.
  Sum: ~0.27 + 0.3 + 1.2 + 0.2 ~= 2.0 s in the worst case of that chain, ~1.8 s typically.
  tests/gossip/test_sim.py holds the goal in virtual time (also at 5% loss, and at 50 members,
  where the minimum suspicion grows with log10(n)); bench/failure_detection.py measures it on real
  agents and bench/README.md records the figures.

false positives: a live member is only *suspected* when the ping and all three indirect paths fail
(at 5% loss: (1 - 0.95^2) * (1 - 0.95^4)^3 ~= 6e-4 per probe, about one suspicion a minute in a
10-member cluster). A lone suspicion gets no confirmation, so it runs the max timeout,
6 * 1.2 s = 7.2 s, while the refutation needs the Suspect to reach the victim (buddy system: the
next probe of the victim carries it; or a gossip round) and its Alive to spread back: well under
1 s even with scheduling delays of tens of milliseconds from the hogged core. A member that really
stalls is confirmed by several others and declared dead after ~1.2 s: the price of fast detection.
The simulation tests hold both sides: a member frozen for less than the detection time survives,
one frozen for longer is declared dead (and rejoins by refuting once it runs again), and long runs
at 5% loss with datagrams held up by busy receivers see no false death.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import maths
from .messages import ALIVE_OVERHEAD_BYTES, COMPOUND_OVERHEAD_BYTES, MAX_NAME_BYTES


@dataclass(frozen=True, slots=True)
class GossipConfig:
    # How often we probe one member (round robin), before Lifeguard scaling. Shorter: faster
    # detection, more packets (2 per probe, ~3/s per member at 0.3 s) and less time for the
    # indirect probe. Must exceed 2 * probe_timeout_s so nacks arrive before the probe ends.
    probe_interval_s: float = 0.3
    # How long we wait for the direct Ack before asking others (ping-req). Shorter: earlier indirect
    # probes; too short and a busy peer (scheduling delay on a hogged core) looks unresponsive,
    # which costs an indirect probe and raises our own awareness score. Intermediaries wait this
    # long before sending a Nack.
    probe_timeout_s: float = 0.12
    # Members asked to probe indirectly (SWIM k). More: fewer false suspicions under loss, more
    # packets on each failed probe.
    indirect_checks: int = 3
    # Minimum suspicion timeout = suspicion_mult * max(1, log10(n)) * probe_interval_s (memberlist).
    # Larger: more time to refute, slower detection. k = suspicion_mult - 2 confirmations are
    # expected to reach the minimum.
    suspicion_mult: int = 4
    # Maximum suspicion timeout = this * minimum (Lifeguard dynamic suspicion): how long a lone,
    # unconfirmed suspicion waits for a refutation.
    suspicion_max_timeout_mult: int = 6
    # Each update is piggybacked retransmit_mult * ceil(log10(n + 1)) times. Larger: more reliable
    # dissemination under loss, larger datagrams.
    retransmit_mult: int = 4
    # A gossip round (only when updates are queued) sends them to gossip_nodes random members.
    # Shorter/more: faster spread of Suspect/Dead/Alive (detection and refutation), more packets.
    gossip_interval_s: float = 0.1
    gossip_nodes: int = 3
    # TCP full-state exchange with one random member (scaled up above 32 members). Shorter: faster
    # repair after partitions and of lost updates; each exchange carries every member's meta.
    push_pull_interval_s: float = 15.0
    # Probe traffic (ping, ack, ping-req, nack and their piggybacked updates) stays within one
    # Ethernet MTU so a probe is never fragmented: a fragmented datagram is lost when any fragment
    # is, which would turn large metadata into false suspicions.
    max_datagram_bytes: int = 1400
    # Gossip rounds may send larger datagrams (IP fragments them) so that an Alive with a large meta
    # still spreads by gossip; must hold one Alive with max_meta_bytes of meta. Must not exceed what
    # the driver's UDP socket accepts (65507 bytes).
    max_gossip_datagram_bytes: int = 32768
    # Bound on a member's opaque meta (hostname, role, labels, resources, task states).
    max_meta_bytes: int = 16384
    # Lifeguard local health multiplier cap: probe interval and timeout are scaled by up to this
    # factor while we miss acks and nacks (we are the slow one). Larger: a struggling member backs
    # off further, detecting others more slowly meanwhile.
    awareness_max_multiplier: int = 8
    # Dead and left members are gossiped to (so a falsely-dead member learns it and refutes), then
    # forgotten after this long; a member may come back at a new address once DEAD or LEFT.
    dead_reclaim_s: float = 30.0

    def __post_init__(self) -> None:
        if self.probe_interval_s <= 0 or self.probe_timeout_s <= 0:
            raise ValueError("probe_interval_s and probe_timeout_s must be positive")
        if self.probe_timeout_s >= self.probe_interval_s:
            raise ValueError("probe_timeout_s must be shorter than probe_interval_s")
        if self.gossip_interval_s <= 0 or self.push_pull_interval_s <= 0:
            raise ValueError("gossip_interval_s and push_pull_interval_s must be positive")
        if self.suspicion_mult < 1 or self.suspicion_max_timeout_mult < 1:
            raise ValueError("suspicion multipliers must be >= 1")
        if self.retransmit_mult < 1 or self.awareness_max_multiplier < 1:
            raise ValueError("retransmit_mult and awareness_max_multiplier must be >= 1")
        if self.indirect_checks < 0 or self.gossip_nodes < 1:
            raise ValueError("indirect_checks must be >= 0 and gossip_nodes >= 1")
        if self.max_datagram_bytes < 512:
            raise ValueError("max_datagram_bytes must be at least 512")
        largest_alive = self.max_meta_bytes + 2 * MAX_NAME_BYTES + ALIVE_OVERHEAD_BYTES
        if largest_alive + COMPOUND_OVERHEAD_BYTES > self.max_gossip_datagram_bytes:
            raise ValueError("max_gossip_datagram_bytes cannot hold an Alive with max_meta_bytes")
        if self.max_gossip_datagram_bytes > 65507:
            raise ValueError("max_gossip_datagram_bytes exceeds the largest UDP payload")

    @classmethod
    def lan(cls) -> GossipConfig:
        """The LAN default: see the module docstring for the detection and false-positive budget."""
        return cls()

    def suspicion_min_s(self, n: int) -> float:
        return maths.suspicion_timeout_s(self.suspicion_mult, n, self.probe_interval_s)

    def suspicion_max_s(self, n: int) -> float:
        return self.suspicion_max_timeout_mult * self.suspicion_min_s(n)
