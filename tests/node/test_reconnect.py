"""The choice of members gossip tries to reach again (`node.reconnect`)."""

from __future__ import annotations

import random

from swarmlet.gossip.messages import MemberState
from swarmlet.node.reconnect import reconnect_targets

MEMBERS = [(f"n{i}", f"10.0.0.{i}:7946") for i in range(1, 6)]


def _states(**states: MemberState | None) -> dict[str, MemberState | None]:
    return states


def test_alive_and_suspected_members_are_left_alone_and_so_is_self() -> None:
    states = _states(n1=None, n2=MemberState.ALIVE, n3=MemberState.SUSPECT)
    members = MEMBERS[:3]
    assert reconnect_targets(members, "n1", states.get, random.Random(1)) == []


def test_never_heard_of_dead_and_left_members_are_joined_again() -> None:
    states = _states(
        n2=MemberState.DEAD, n3=MemberState.LEFT, n4=MemberState.ALIVE
    )  # n5: never heard of
    targets = reconnect_targets(MEMBERS, "n1", states.get, random.Random(1))
    assert targets == ["10.0.0.2:7946", "10.0.0.3:7946", "10.0.0.5:7946"]


def test_a_round_tries_at_most_the_limit_and_every_lost_member_gets_its_turn() -> None:
    members = [(f"n{i}", f"10.0.{i // 256}.{i % 256}:7946") for i in range(1000)]
    rng = random.Random(7)
    seen: set[str] = set()
    for _ in range(6000):  # coupon collector: ~2,300 rounds expected
        targets = reconnect_targets(members, "n0", lambda _id: None, rng, limit=3)
        assert len(targets) == 3
        seen.update(targets)
    assert len(seen) == 999  # every member but self, at random
