"""A failure as an honest accuser declares it, for the tests that need a dead member."""

from __future__ import annotations

from swarmlet.gossip.core import Swim
from swarmlet.gossip.messages import Dead, Suspect


def confirmed_dead(core: Swim, dead: Dead, at: float, sender: tuple[str, int]) -> float:
    """`dead` (a failure, in its accuser's word) handed to `core` at `at`, then the same
    accusation from the other members, each in its own name (the confirmations an honest
    failure gets from the members probing it), and `dead` again once the suspicion's timer ran
    out, as an honest accuser's Dead comes after its own. Returns when `core` took it."""
    core.handle_datagram(at, sender, (dead,), dead.accuser)
    suspicion = core._suspicions[dead.node]
    for other in (m.name for m in core.members()):
        if other not in (core.name, dead.node, dead.accuser):
            confirmation = Suspect(dead.incarnation, dead.node, other)
            core.handle_datagram(at, sender, (confirmation,), other)
    at = suspicion.deadline_s
    core.handle_datagram(at, sender, (dead,), dead.accuser)
    return at
