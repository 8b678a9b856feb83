"""A failure as an honest accuser declares it, for the tests that need a dead member."""

from __future__ import annotations

from swarmlet.gossip.core import Swim
from swarmlet.gossip.messages import Dead


def confirmed_dead(core: Swim, dead: Dead, at: float, sender: tuple[str, int]) -> float:
    """`dead` (a failure, in its accuser's word) handed to `core` at `at`, and again once the
    suspicion it starts has run the least a suspicion runs, as an honest accuser's Dead comes
    after its own timer. Returns when `core` took it."""
    core.handle_datagram(at, sender, (dead,))
    suspicion = core._suspicions[dead.node]
    at = suspicion.started_s + suspicion.min_s
    core.handle_datagram(at, sender, (dead,))
    return at
