"""node.agent: a node's gossip metadata has a bounded size whatever the node runs, and should
gossip refuse it anyway, the agent records an event and keeps running on its last metadata
(issue #16: a refused `set_meta` once raised out of the agent, which then crash-looped)."""

from __future__ import annotations

import dataclasses

from swarmlet.gossip.config import GossipConfig
from swarmlet.gossip.core import Swim
from swarmlet.node.agent import Agent
from swarmlet.node.events import EventLog
from swarmlet.state.observed import NodeMeta, encode_meta, meta_news
from swarmlet.wire.transport import Counters

LONGEST_NAME = "n" * 255  # names are bounded (`gossip.messages`); the rest are numbers


def test_the_largest_possible_metadata_fits_gossip() -> None:
    meta = NodeMeta(
        name=LONGEST_NAME,
        role="manager",
        addr=f"[{'f' * 39}]:65535",
        publish_host="f" * 39,
        nano_cpus=2**63 - 1,
        memory_bytes=2**63 - 1,
        cpu_percent=100.0,
        memory_used_bytes=2**63 - 1,
        raft_term=2**53,
        raft_commit=2**53,
        leader_id="x" * 64,
        version=2**63 - 1,
    )
    assert len(encode_meta(meta)) < GossipConfig().max_meta_bytes // 16


class RefusingGossip:
    """A gossip driver whose core refuses every metadata (`Swim._check_meta`'s error)."""

    def __init__(self) -> None:
        self.calls = 0

    def set_meta(self, meta: bytes) -> None:
        self.calls += 1
        Swim._check_meta(GossipConfig(max_meta_bytes=8), meta)


def test_metadata_gossip_refuses_is_an_event_not_a_crash() -> None:
    agent = Agent.__new__(Agent)  # only what `_publish_meta` touches
    agent.gossip = RefusingGossip()  # type: ignore[assignment]
    agent.counters = Counters()
    agent.events = EventLog()
    meta = NodeMeta("n1", "worker", "10.0.0.1:7946", "10.0.0.1", 1, 1)
    agent._publish_meta(meta)
    agent._publish_meta(meta)
    assert agent.gossip.calls == 2  # type: ignore[attr-defined]
    assert agent.counters["gossip_meta_too_large"] == 2
    events = agent.events.since(0.0)
    assert [(e.type, e.action, e.subject) for e in events] == [("node", "meta-too-large", "n1")] * 2
    assert "max_meta_bytes is 8" in events[0].message


# ----------------------------------------------------------------------------- when to republish

BASE = NodeMeta("n1", "worker", "10.0.0.1:7946", "10.0.0.1", 1, 1, cpu_percent=15.0)


def test_what_members_act_on_is_republished_at_once() -> None:
    assert meta_news(None, BASE)
    for change in (
        {"name": "n2"},
        {"role": "manager"},
        {"raft_term": 7},
        {"leader_id": "abc"},
    ):
        assert meta_news(BASE, dataclasses.replace(BASE, **change)), change  # type: ignore[arg-type]


def test_load_jitter_across_a_bucket_edge_is_not_news() -> None:
    """The idle agents' load jittered across 10% edges (19% -> 21% -> 18%...): each crossing was a
    signed Alive spread to every member."""
    for cpu in (0.0, 21.0, 29.0, 34.9, 9.0):
        assert not meta_news(BASE, dataclasses.replace(BASE, cpu_percent=cpu)), cpu
    # ... nor what nobody acts on: the counters that ride along with the next real change.
    quiet = dataclasses.replace(BASE, raft_commit=99, memory_used_bytes=5, version=3)
    assert not meta_news(BASE, quiet)


def test_a_load_that_moved_far_is_news() -> None:
    assert meta_news(BASE, dataclasses.replace(BASE, cpu_percent=35.0))
    assert meta_news(BASE, dataclasses.replace(BASE, cpu_percent=100.0))
    moved = dataclasses.replace(BASE, cpu_percent=60.0)
    assert meta_news(moved, BASE)  # down as well as up
