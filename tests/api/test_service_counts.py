"""What `service ls` says a global service (or a global job's run) wants: a task on every node
that may take one, as Swarm counts. Counted from the tasks alone, a global service the leader
had not planned yet wanted 0 and ran 0, and `service create` (which waits for the count) returned
before any task existed: the CI flake of test_global_service_runs_on_every_node_including_new_ones
once the leader's pass ran in a thread."""

from __future__ import annotations

from typing import cast

from swarmlet.api.cluster import LocalAgent
from swarmlet.api.services import ServiceControl
from swarmlet.gossip.messages import MemberState
from swarmlet.leader.observation import ObservedView, observe
from swarmlet.state.commands import PutTasks, UpdateNode
from swarmlet.state.machine import ClusterState
from swarmlet.state.model import Availability, Placement, ServiceMode, Task
from swarmlet.state.observed import NodeMeta
from tests.leader.orchestrator.cluster import add_service, make_state, node_id


class StandIn:
    """The agent as `ServiceControl` sees it: every node alive in gossip."""

    def __init__(self, state: ClusterState) -> None:
        self.state = state
        self.node_id = node_id(1)
        self.down_since: dict[str, float] = {}
        self.stream_handlers: dict[type, object] = {}  # where `ServiceLogs` registers

    def member_state(self, node: str) -> MemberState:
        return MemberState.ALIVE

    def node_meta(self, node: str) -> NodeMeta | None:
        return None

    def local_observations(self) -> tuple[()]:
        return ()

    def observed(self) -> ObservedView:
        return observe(self)


def desired(state: ClusterState, name: str) -> int:
    agent = StandIn(state)
    control = ServiceControl(cast(LocalAgent, agent))
    service = next(s for s in state.services.values() if s.spec.name == name)
    observed = agent.observed()
    return int(control.service_view(service, observed.tasks, observed.nodes)["replicas_desired"])


def test_a_global_service_not_planned_yet_wants_a_task_per_eligible_node() -> None:
    state = make_state(3, labels={2: {"zone": "a"}, 3: {"zone": "a"}})
    add_service(state, "agent", mode=ServiceMode.GLOBAL)
    add_service(
        state,
        "zoned",
        mode=ServiceMode.GLOBAL,
        placement=Placement(constraints=("node.labels.zone==a",)),
    )
    add_service(state, "job", mode=ServiceMode.GLOBAL_JOB)
    assert (desired(state, "agent"), desired(state, "zoned"), desired(state, "job")) == (3, 2, 3)


def test_a_paused_node_keeps_its_task_and_it_is_counted() -> None:
    state = make_state(3)
    service = add_service(state, "agent", mode=ServiceMode.GLOBAL)
    tasks = tuple(
        Task(f"t{i}", service.id, 0, service.version, node_id=node_id(i)) for i in (1, 2, 3)
    )
    assert state.apply(PutTasks(tasks)).ok
    assert state.apply(UpdateNode(node_id(3), availability=Availability.PAUSE)).ok
    assert desired(state, "agent") == 3  # 2 eligible, 3 tasks kept
