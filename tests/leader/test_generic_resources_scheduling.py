"""Generic resources in the scheduler and the orchestrator: fit, the ids given, their release, and
the property that no node's generic resources are ever over-committed (chaos simulation, with
scoped passes checked against full ones)."""

from __future__ import annotations

import dataclasses
from collections import Counter

import pytest

from swarmlet.leader.scheduler import NodeTallies, Scheduler, occupies
from swarmlet.state.commands import UpdateNode
from swarmlet.state.generic_resources import parse_advertised
from swarmlet.state.machine import ClusterState
from swarmlet.state.model import (
    GenericResource,
    NamedResource,
    Placement,
    TaskState,
    UpdateConfig,
    UpdateOrder,
)
from tests.leader.orchestrator.cluster import Harness, active, add_service, make_state
from tests.leader.orchestrator.sim import Sim
from tests.leader.orchestrator.test_incremental import Checked


def advertise(state: ClusterState, node_id: str, *texts: str) -> None:
    node = state.nodes[node_id]
    parsed = parse_advertised(texts)
    resources = dataclasses.replace(node.resources, generic=parsed.generic, named=parsed.named)
    assert state.apply(UpdateNode(node_id, resources=resources)).ok


def gpu_cluster() -> Harness:
    """Three nodes; n01 names two GPUs, n02 counts four SSDs, n03 has none."""
    state = make_state(3)
    advertise(state, "n01", "gpu=g1,g2")
    advertise(state, "n02", "ssd=4")
    return Harness(state)


def held_ids(state: ClusterState) -> Counter[tuple[str, NamedResource]]:
    return Counter(
        (t.node_id, r) for t in state.tasks.values() if occupies(t) for r in t.assigned_resources
    )


def test_named_ids_go_one_task_each_and_the_rest_pend_saying_why() -> None:
    h = gpu_cluster()
    add_service(h.state, "cuda", replicas=3, generic_resources=(GenericResource("gpu", 1),))
    h.settle()
    tasks = sorted(h.state.tasks_of("s-cuda"), key=lambda t: t.slot)
    placed = [t for t in tasks if t.node_id]
    assert [(t.node_id, t.assigned_resources) for t in placed] == [
        ("n01", (NamedResource("gpu", "g1"),)),
        ("n01", (NamedResource("gpu", "g2"),)),
    ]
    [waiting] = [t for t in tasks if not t.node_id]
    assert waiting.state is TaskState.PENDING


def test_the_pending_reason_names_the_kind() -> None:
    h = gpu_cluster()
    add_service(h.state, "cuda", replicas=3, generic_resources=(GenericResource("gpu", 1),))
    h.settle()
    [waiting] = [t for t in h.state.tasks_of("s-cuda") if not t.node_id]
    assert waiting.message == "no suitable node (3 nodes have insufficient generic resources gpu)"


def test_discrete_counts_are_reserved_and_get_no_ids() -> None:
    h = gpu_cluster()
    add_service(h.state, "db", replicas=3, generic_resources=(GenericResource("ssd", 2),))
    h.settle()
    placed = [t for t in active(h.state, "s-db") if t.node_id]
    assert sorted((t.node_id, t.assigned_resources) for t in placed) == [("n02", ())] * 2
    [waiting] = [t for t in h.state.tasks_of("s-db") if not t.node_id]
    assert "insufficient generic resources ssd" in waiting.message


def test_a_task_reserving_two_gets_two_distinct_ids() -> None:
    h = gpu_cluster()
    add_service(h.state, "train", replicas=1, generic_resources=(GenericResource("gpu", 2),))
    h.settle()
    [task] = active(h.state, "s-train")
    assert task.assigned_resources == (NamedResource("gpu", "g1"), NamedResource("gpu", "g2"))


def test_ids_are_freed_when_the_task_ends_and_given_to_its_replacement() -> None:
    h = gpu_cluster()
    add_service(h.state, "cuda", replicas=3, generic_resources=(GenericResource("gpu", 1),))
    h.settle()
    [first] = [t for t in active(h.state, "s-cuda") if t.slot == 1]
    h.fail(first.id)
    h.settle(rounds=20, dt=5.0)
    holders = [t for t in h.state.tasks.values() if occupies(t)]
    assert sorted(r.value for t in holders for r in t.assigned_resources) == ["g1", "g2"]
    assert all(n == 1 for n in held_ids(h.state).values())
    # scaled to 0, every id is free again: a new service takes both
    h.update_spec("s-cuda", replicas=0)
    h.settle()
    add_service(h.state, "next", replicas=2, generic_resources=(GenericResource("gpu", 1),))
    h.settle()
    assert sorted(r.value for t in active(h.state, "s-next") for r in t.assigned_resources) == [
        "g1",
        "g2",
    ]


def test_a_start_first_update_needs_a_free_id_for_the_new_task() -> None:
    h = gpu_cluster()
    add_service(
        h.state,
        "cuda",
        replicas=1,
        generic_resources=(GenericResource("gpu", 1),),
        update=UpdateConfig(order=UpdateOrder.START_FIRST, monitor_s=0.0),
    )
    h.settle()
    h.update_spec("s-cuda", image="busybox:2")
    h.settle(rounds=20)
    [task] = active(h.state, "s-cuda")
    assert task.spec_version == 2
    assert task.assigned_resources == (NamedResource("gpu", "g2"),)  # g1 was still held
    assert all(n == 1 for n in held_ids(h.state).values())


def test_kept_tallies_count_generic_resources_as_a_fresh_count() -> None:
    h = gpu_cluster()
    tallies = NodeTallies(h.state)
    add_service(h.state, "cuda", replicas=2, generic_resources=(GenericResource("gpu", 1),))
    add_service(h.state, "db", replicas=1, generic_resources=(GenericResource("ssd", 3),))
    for _ in range(3):
        h.settle(rounds=2)
        assert tallies.advance(h.state)
        observed = h.observed().nodes
        kept = Scheduler(h.state, observed, tallies).infos
        fresh = Scheduler(h.state, observed).infos
        assert {n: (i.used_discrete, i.used_named) for n, i in kept.items()} == {
            n: (i.used_discrete, i.used_named) for n, i in fresh.items()
        }
    assert tallies.nodes["n02"].used_discrete == Counter({"ssd": 3})
    assert set(tallies.nodes["n01"].used_named) == {
        NamedResource("gpu", "g1"),
        NamedResource("gpu", "g2"),
    }


# ---------------------------------------------------------------------------- the property


class GenericSim(Sim):
    """The orchestrator's chaos simulation with generic resources: most nodes name GPUs, one
    counts them, every node counts SSDs; `web` reserves a GPU, `api` (start-first) two SSDs."""

    def __init__(self, seed: int) -> None:
        super().__init__(seed)
        self.checked_holders = 0  # (node, id) pairs held, summed over the checks
        state = self.h.state
        for i, nid in enumerate(sorted(state.nodes)):
            gpus = "gpu=4" if i == 2 else "gpu=" + ",".join(f"{nid}-g{k}" for k in range(3))
            advertise(state, nid, gpus, "ssd=6")
        self.h.update_spec("s-web", generic_resources=(GenericResource("gpu", 1),))
        self.h.update_spec(
            "s-api",
            generic_resources=(GenericResource("ssd", 2),),
            placement=Placement(preferences=("spread=node.labels.zone",)),
        )

    def check_nodes(self) -> None:
        super().check_nodes()
        state = self.h.state
        named: Counter[tuple[str, NamedResource]] = Counter()
        counted: Counter[tuple[str, str]] = Counter()
        for task in state.tasks.values():
            service = state.services.get(task.service_id)
            if service is None or not occupies(task):
                continue
            named.update((task.node_id, r) for r in task.assigned_resources)
            given = {r.kind for r in task.assigned_resources}
            for want in service.spec.generic_resources:
                if want.kind not in given:
                    counted[(task.node_id, want.kind)] += want.value
                else:  # a named kind: exactly the count reserved
                    ids = [r for r in task.assigned_resources if r.kind == want.kind]
                    assert len(ids) == want.value, task
        self.checked_holders += len(named)
        for (nid, resource), n in named.items():
            assert n == 1, f"{resource} held by {n} tasks on {nid}"
            assert resource in state.nodes[nid].resources.named, f"{resource} not on {nid}"
        for (nid, kind), n in counted.items():
            capacity = {r.kind: r.value for r in state.nodes[nid].resources.generic}
            assert n <= capacity.get(kind, 0), f"{nid}: {n} {kind} for {capacity}"


@pytest.mark.parametrize("seed", range(10))
def test_generic_resources_are_never_over_committed_and_scoped_passes_agree(seed: int) -> None:
    sim = GenericSim(seed)
    checked = Checked(sim.h)
    sim.h.reconcile = checked.reconcile  # type: ignore[method-assign]
    sim.run(120)
    assert sim.checked_holders, "the simulation gave no ids: it checked nothing"
