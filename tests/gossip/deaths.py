"""A failure as an honest accuser declares it, for the tests that need a dead member."""

from __future__ import annotations

from swarmlet.gossip.core import Swim
from swarmlet.gossip.messages import Dead, Suspect


def confirmed_dead(core: Swim, dead: Dead, at: float, sender: tuple[str, int]) -> float:
    """`dead` (a failure, in its accuser's word) handed to `core` at `at`, then the same
    accusation from another member in its own name (the confirmation an honest failure gets
    from the other members probing it), and `dead` again once the suspicion has run the least
    a suspicion runs, as an honest accuser's Dead comes after its own timer (with no other
    member to confirm it, once the suspicion's timer ran out). Returns when `core` took it."""
    core.handle_datagram(at, sender, (dead,))
    suspicion = core._suspicions[dead.node]
    others = [m.name for m in core.members() if m.name not in (core.name, dead.node, dead.accuser)]
    if not others:  # nobody else to confirm it: the suspicion's own timer
        at = suspicion.deadline_s
    else:
        confirmation = Suspect(dead.incarnation, dead.node, others[0])
        core.handle_datagram(at, sender, (confirmation,), others[0])
        at = suspicion.started_s + suspicion.min_s
    core.handle_datagram(at, sender, (dead,))
    return at
