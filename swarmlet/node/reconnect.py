"""Which members of the replicated state gossip should try to reach again (Serf's reconnect).

SWIM probes only the members it believes alive, so two groups that each declared the other dead
or gone (a partition that healed, or a node restarted after a clean stop whose start-up seeds
were empty because its state was not replayed yet) would never speak again. The state says who
belongs to the cluster; a member of it that gossip does not see alive is joined again (one
push-pull, which carries both sides' views), a few at a time so that many dead hosts cost a
bounded number of connection attempts per round.

Pure: the caller passes what gossip believes and an RNG; the agent runs the rounds.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable

from swarmlet.gossip.messages import MemberState

RECONNECT_INTERVAL_S = 5.0  # between rounds; Serf's reconnect_interval is 30 s
MAX_TARGETS_PER_ROUND = 3


def reconnect_targets(
    members: Iterable[tuple[str, str]],
    self_id: str,
    gossip_state: Callable[[str], MemberState | None],
    rng: random.Random,
    limit: int = MAX_TARGETS_PER_ROUND,
) -> list[str]:
    """Addresses of up to `limit` members (`(node id, addr)` of the state, removed nodes already
    left out) that gossip has never heard of or holds as dead or left, chosen at random so that
    one unreachable host cannot starve the others."""
    lost = sorted(
        addr
        for node_id, addr in members
        if node_id != self_id
        and gossip_state(node_id) not in (MemberState.ALIVE, MemberState.SUSPECT)
    )
    if len(lost) <= limit:
        return lost
    return sorted(rng.sample(lost, limit))
