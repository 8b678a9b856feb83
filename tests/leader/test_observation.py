"""leader.observation: when a node counts as ready (a table), and the observed state `observe`
assembles from gossip, the committed task statuses and this node's executor."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from swarmlet.gossip.messages import MemberState
from swarmlet.leader.observation import counts_as_ready, is_ready, observe, ready_node_ids
from swarmlet.state.commands import ReportTasks
from swarmlet.state.machine import ClusterState
from swarmlet.state.model import Node, Resources, Role, Task, TaskState
from swarmlet.state.observed import NodeMeta, TaskObservation


@pytest.mark.parametrize(
    ("member_state", "is_self", "ready"),
    [
        (MemberState.ALIVE, False, True),
        (MemberState.SUSPECT, False, True),  # a suspect may still refute: not down yet
        (MemberState.DEAD, False, False),
        (MemberState.LEFT, False, False),
        (None, False, False),  # never heard of
        (None, True, True),  # this node is running this code
        (MemberState.DEAD, True, True),
    ],
)
def test_counts_as_ready(member_state: MemberState | None, is_self: bool, ready: bool) -> None:
    assert counts_as_ready(member_state, is_self=is_self) is ready


def _meta() -> NodeMeta:
    return NodeMeta("n", "worker", "h:1", "h", nano_cpus=2_000_000_000, memory_bytes=1 << 30)


@dataclass
class Source:
    node_id: str = "me"
    state: ClusterState = field(default_factory=ClusterState)
    down_since: dict[str, float] = field(default_factory=dict)
    members: dict[str, MemberState] = field(default_factory=dict)
    metas: dict[str, NodeMeta] = field(default_factory=dict)
    local: tuple[TaskObservation, ...] = ()

    def member_state(self, node_id: str) -> MemberState | None:
        return self.members.get(node_id)

    def node_meta(self, node_id: str) -> NodeMeta | None:
        return self.metas.get(node_id)

    def local_observations(self) -> tuple[TaskObservation, ...]:
        return self.local


def _source() -> Source:
    source = Source()
    for node_id in ("me", "alive", "suspect", "dead", "unheard"):
        source.state.nodes[node_id] = Node(
            id=node_id, name=node_id, addr=f"{node_id}:1", publish_addr=node_id, role=Role.WORKER
        )
    source.members = {
        "me": MemberState.ALIVE,
        "alive": MemberState.ALIVE,
        "suspect": MemberState.SUSPECT,
        "dead": MemberState.DEAD,
    }
    source.down_since = {"dead": 12.5}
    return source


def test_observe_skips_nodes_gossip_has_not_heard_of() -> None:
    observed = observe(_source())
    assert set(observed.nodes) == {"me", "alive", "suspect", "dead"}


def test_observe_counts_suspects_as_ready_and_dates_the_dead() -> None:
    observed = observe(_source())
    assert {n: o.ready for n, o in observed.nodes.items()} == {
        "me": True,
        "alive": True,
        "suspect": True,
        "dead": False,
    }
    assert observed.nodes["dead"].changed_at == 12.5
    assert ready_node_ids(_source()) == {"me", "alive", "suspect"}
    assert not is_ready(_source(), "unheard")


def test_observe_takes_others_tasks_from_the_state_and_its_own_from_the_executor() -> None:
    source = _source()
    for task_id, node_id in (("t-remote", "alive"), ("t-own", "me"), ("t-unheard", "unheard")):
        source.state.tasks[task_id] = Task(task_id, "s", 1, 1, node_id=node_id)
        statuses = (TaskObservation(task_id, TaskState.STARTING),)
        assert source.state.apply(ReportTasks(node_id, statuses)).value == "1"
    source.state.apply(ReportTasks("alive", (TaskObservation("t-remote", TaskState.RUNNING),)))
    source.metas = {"alive": _meta(), "me": _meta()}
    # This node's committed status lags its executor.
    source.local = (TaskObservation("t-own", TaskState.RUNNING),)
    observed = observe(source)
    assert observed.tasks["t-remote"].state is TaskState.RUNNING
    assert observed.tasks["t-own"].state is TaskState.RUNNING
    assert "t-unheard" not in observed.tasks  # no verdict on a node gossip has not heard of
    assert observed.nodes["alive"].total == Resources(2_000_000_000, 1 << 30)
    assert observed.nodes["suspect"].total is None  # no meta yet
