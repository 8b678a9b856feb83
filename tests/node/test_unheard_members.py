"""node.agent: a member of the state that gossip has not heard of `UNHEARD_DOWN_AFTER_S` after
the agent started counts as down, since the start (issue #18). Asking is a pure read; the
record the voter policy reads (`down_since`) is written once, by a start-up timer.

A real `Agent` on a real data dir, not run: its replica of the state is filled directly, and
its start is moved back in time instead of waiting 30 s."""

from __future__ import annotations

import time
from pathlib import Path

import trio

from swarmlet import crypto
from swarmlet.gossip.messages import MemberState
from swarmlet.node.agent import UNHEARD_DOWN_AFTER_S, Agent
from swarmlet.security.datadir import DataDir, Identity
from swarmlet.state.model import Node, Role

LOST = "lost-node"


def an_agent(tmp_path: Path, *, started_s_ago: float) -> Agent:
    datadir = DataDir(tmp_path / "n1")
    identity = Identity("n1", "c1", "n1", "127.0.0.1", 1, "127.0.0.1", "manager", bootstrap=True)
    datadir.write_manager_key(crypto.new_key())
    datadir.write_identity(identity, crypto.new_key(), crypto.new_node_key())
    agent = Agent(datadir)
    lost = Node(LOST, LOST, "127.0.0.2:1", "127.0.0.2", Role.MANAGER)
    agent.state.nodes[LOST] = lost  # as if its replica had loaded it
    agent._started = time.monotonic() - started_s_ago
    return agent


async def test_an_unheard_member_is_no_verdict_before_the_delay(tmp_path: Path) -> None:
    agent = an_agent(tmp_path, started_s_ago=0.0)
    assert agent.member_state(LOST) is None
    assert agent.down_since == {}


async def test_an_unheard_member_is_down_after_the_delay_and_asking_writes_nothing(
    tmp_path: Path,
) -> None:
    agent = an_agent(tmp_path, started_s_ago=UNHEARD_DOWN_AFTER_S + 1)
    assert agent.member_state(LOST) is MemberState.DEAD
    assert agent.member_state("not-in-the-state") is None
    assert agent.down_since == {}  # a getter: nothing recorded by asking


async def test_the_start_up_timer_records_unheard_members_down_since_the_start(
    tmp_path: Path,
) -> None:
    agent = an_agent(tmp_path, started_s_ago=UNHEARD_DOWN_AFTER_S + 1)
    agent.down_since["failed-earlier"] = 5.0  # a verdict of gossip's own is kept as it is
    with trio.fail_after(5):
        await agent._record_unheard_down()
    assert agent.down_since == {LOST: agent._started, "failed-earlier": 5.0}
    assert agent.node_id not in agent.down_since  # this node is always heard of: by itself


async def test_the_start_up_timer_waits_for_the_delay(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    agent = an_agent(tmp_path, started_s_ago=UNHEARD_DOWN_AFTER_S - 10)
    with trio.move_on_after(9):
        await agent._record_unheard_down()
    assert agent.down_since == {}
