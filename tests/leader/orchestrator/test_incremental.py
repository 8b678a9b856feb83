"""Scoped passes (`orchestrator.incremental`) against full ones (issue #16).

The property: on the same inputs, the leader's scoped pass returns exactly the commands and the
next timer of a full pass, so nothing outside the scope needed a change. It is checked on every
pass of the chaos simulation (`sim.py`: nodes down and up, drained, paused, joining, tasks
failing and rejected, scaling, rolling updates with rollbacks, rebalancing), over seeds, and on
a larger settled cluster for one random change at a time, where the scope must also be small.
"""

from __future__ import annotations

import dataclasses
import random

import pytest

from swarmlet.leader.orchestrator import counter_ids, plan
from swarmlet.leader.orchestrator.incremental import IncrementalPlanner
from swarmlet.state.commands import (
    Command,
    CreateSecret,
    PutTasks,
    SetUpdateStatus,
    UpdateService,
)
from swarmlet.state.machine import ClusterState
from swarmlet.state.model import (
    Availability,
    Placement,
    PortConfig,
    Resources,
    RestartPolicy,
    Secret,
    ServiceMode,
    Task,
    TaskState,
    UpdateConfig,
)
from tests.leader.orchestrator.cluster import (
    CPU,
    GIB,
    Harness,
    add_node,
    add_service,
    make_state,
)
from tests.leader.orchestrator.sim import Sim


def services_of(commands: tuple[Command, ...]) -> set[str]:
    found: set[str] = set()
    for command in commands:
        if isinstance(command, PutTasks):
            found.update(t.service_id for t in command.tasks)
        elif isinstance(command, (SetUpdateStatus, UpdateService)):
            found.add(command.service_id)
    return found


class Checked:
    """Drives a Harness with an `IncrementalPlanner` (never a periodic full pass) and, on every
    pass, compares it with a full pass on the same inputs, then applies the commands."""

    def __init__(self, h: Harness) -> None:
        self.h = h
        self.planner = IncrementalPlanner(full_pass_every_s=float("inf"))
        self.passes = 0
        self.scoped = 0
        self.skipped = 0  # passes that left some waiting task out of the scheduler

    @property
    def waiting(self) -> int:
        return len(self.h.state.tasks.waiting())

    def reconcile(self, commit: int | None = None) -> list[Command]:
        """`commit`: how many of the pass's commands are committed (None: all); a pass not
        committed whole is deferred, as the leader does."""
        h = self.h
        self.passes += 1
        observed = h.observed()
        prefix = f"p{self.passes}-"
        full = plan(h.state, observed, h.now, counter_ids(prefix))
        scoped = self.planner.plan(h.state, observed, h.now, counter_ids(prefix))
        scope = self.planner.last_scope
        self.skipped += scoped.scheduled < self.waiting
        assert scoped.commands == full.commands, (self.passes, scope)
        assert scoped.wakeup_at == full.wakeup_at, (self.passes, scope)
        if scope is not None:
            self.scoped += 1
            outside = services_of(full.commands) - scope.services
            # Only the tasks waiting for a node are looked at outside the scope.
            waiting = {t.service_id for t in h.state.tasks.waiting().values()}
            assert outside <= waiting, (self.passes, outside)
        committed = full.commands[:commit]
        for command in committed:
            result = h.state.apply(command)
            assert result.ok, (command, result.error)
        if len(committed) < len(full.commands):
            self.planner.deferred()
        return list(full.commands)


def checked_harness(state: ClusterState) -> tuple[Harness, Checked]:
    """A Harness whose every pass is a `Checked` one."""
    h = Harness(state)
    checked = Checked(h)
    h.reconcile = checked.reconcile  # type: ignore[method-assign]
    return h, checked


@pytest.mark.parametrize("seed", range(12))
def test_scoped_passes_equal_full_passes_through_chaos(seed: int) -> None:
    sim = Sim(seed)
    checked = Checked(sim.h)
    sim.h.reconcile = checked.reconcile  # type: ignore[method-assign]
    sim.run(120)
    assert checked.scoped == checked.passes - 1  # all but the first pass were scoped


# ------------------------------------------------------------------- one change at a time


def settled_cluster(rng: random.Random) -> tuple[Harness, Checked]:
    h, checked = checked_harness(
        make_state(12, labels={i: {"zone": "ab"[i % 2]} for i in range(1, 13)})
    )
    for i in range(8):
        add_service(h.state, f"r{i}", replicas=rng.randint(1, 15))
    add_service(h.state, "g", mode=ServiceMode.GLOBAL)
    add_service(
        h.state,
        "pref",
        replicas=6,
        placement=dataclasses.replace(
            h.state.services["s-r0"].spec.placement, preferences=("spread=node.labels.zone",)
        ),
    )
    h.settle(rounds=6)
    h.now += 100.0
    h.settle(rounds=3)
    assert h.reconcile() == []
    return h, checked


def one_change(h: Harness, rng: random.Random) -> str:
    nodes = sorted(h.state.nodes)
    running = sorted(t.id for s in h.state.services for t in h.running(s))
    kind = rng.choice(["fail", "fail", "down", "up", "drain", "scale", "update", "join"])
    if kind == "fail":
        h.fail(rng.choice(running))
    elif kind == "down":
        h.down.add(rng.choice(nodes))
    elif kind == "up":
        h.down.discard(rng.choice(sorted(h.down) or nodes))
    elif kind == "drain":
        h.set_availability(rng.choice(nodes), Availability.DRAIN)
    elif kind == "scale":
        h.update_spec(f"s-r{rng.randrange(8)}", replicas=rng.randint(0, 15))
    elif kind == "update":
        h.update_spec(f"s-r{rng.randrange(8)}", image=f"img:{rng.random()}")
    else:
        add_node(h.state, 20 + len(nodes))
    return kind


@pytest.mark.parametrize("seed", range(6))
def test_one_change_at_a_time_is_reconciled_in_its_scope(seed: int) -> None:
    rng = random.Random(seed)
    h, checked = settled_cluster(rng)
    for _ in range(25):
        for _ in range(5):  # whatever came due meanwhile (a back-off, a cool-down) is done
            if not h.reconcile():
                break
        kind = one_change(h, rng)
        h.reconcile()
        scope = checked.planner.last_scope
        assert scope is not None
        if kind == "fail":  # one task's service, nothing else
            assert len(scope.services) == 1 and not scope.nodes, scope
        for _ in range(4):  # let it play out, every pass still checked
            h.agents()
            h.now += 1.0
            h.reconcile()
        h.now += 40.0


def test_a_failed_task_is_replaced_by_a_pass_that_looks_at_its_service_only() -> None:
    h, checked = settled_cluster(random.Random(1))
    victim = h.running("s-r3")[0]
    h.fail(victim.id)
    commands = h.reconcile()
    assert checked.planner.last_scope is not None
    assert checked.planner.last_scope.services == {"s-r3"}
    replaced = [t for c in commands if isinstance(c, PutTasks) for t in c.tasks]
    assert {t.service_id for t in replaced} == {"s-r3"}
    assert any(t.id == victim.id and t.state is TaskState.FAILED for t in replaced)
    assert any(t.state is TaskState.ASSIGNED and t.slot == victim.slot for t in replaced)


def test_nothing_changed_means_nothing_looked_at() -> None:
    h, checked = settled_cluster(random.Random(2))
    h.now += 1.0
    assert h.reconcile() == []
    scope = checked.planner.last_scope
    assert scope is not None and not scope.services and not scope.nodes


def test_a_deferred_pass_is_looked_at_again() -> None:
    h, checked = settled_cluster(random.Random(3))
    victim = h.running("s-r2")[0]
    h.fail(victim.id)
    observed = h.observed()
    lost = checked.planner.plan(h.state, observed, h.now, counter_ids("lost-"))
    assert lost.commands  # ... and never committed
    checked.planner.deferred()
    again = checked.planner.plan(h.state, observed, h.now, counter_ids("again-"))
    assert services_of(again.commands) == {"s-r2"}


def test_a_move_that_found_no_room_is_tried_again_when_another_service_frees_it() -> None:
    """`Plan.watch`: web cannot rebalance onto n02 while big holds its memory; once big is
    scaled down (a change of big's alone), the pass looks at web too, as a full pass would."""
    h, checked = checked_harness(make_state(2, labels={1: {"x": "1"}}))
    gib = 1 << 30
    add_service(
        h.state,
        "web",
        replicas=4,
        reservations=Resources(memory_bytes=gib),
        placement=Placement(constraints=("node.labels.x==1",)),
    )
    add_service(
        h.state,
        "big",
        reservations=Resources(memory_bytes=7 * gib + gib // 2),
        placement=Placement(constraints=("node.hostname==host2",)),
    )
    h.settle(rounds=4)
    assert h.placement("s-web") == {"n01": 4} and h.placement("s-big") == {"n02": 1}
    h.update_spec("s-web", placement=Placement())  # n02 is eligible now, but full
    h.settle(rounds=3)
    assert h.placement("s-web") == {"n01": 4}
    assert "s-web" in checked.planner._watch
    h.update_spec("s-big", replicas=0)
    h.settle(rounds=4)
    assert h.placement("s-web").get("n02", 0) >= 1  # rebalanced, every pass checked


# ------------------------------------------------------------------- tasks left pending


def crowded_cluster() -> tuple[Harness, Checked]:
    """More replicas than room: greedy fills memory, capped hits max replicas per node,
    nowhere matches no node. Every pass is checked against a full pass."""
    h, checked = checked_harness(make_state(6, resources=Resources(4 * CPU, 4 * GIB)))
    add_service(h.state, "greedy", replicas=20, reservations=Resources(memory_bytes=3 * GIB))
    add_service(h.state, "capped", replicas=8, placement=Placement(max_replicas_per_node=1))
    add_service(
        h.state, "nowhere", replicas=5, placement=Placement(constraints=("node.labels.x==y",))
    )
    h.settle(rounds=4)
    return h, checked


def test_a_write_that_concerns_no_placement_asks_the_scheduler_nothing() -> None:
    h, checked = crowded_cluster()
    waiting = len(h.state.tasks.waiting())
    assert waiting == 14 + 2 + 5
    for i in range(3):
        assert h.state.apply(CreateSecret(Secret(f"cfg{i}", f"cfg{i}", b"x", is_config=True))).ok
        h.now += 1.0
        skipped = checked.skipped
        assert h.reconcile() == []
        assert checked.skipped == skipped + 1
    assert len(h.state.tasks.waiting()) == waiting


def pending_of(h: Harness, service_id: str) -> list[Task]:
    return [t for t in h.state.tasks.waiting().values() if t.service_id == service_id]


def test_a_write_from_outside_the_pass_that_frees_room_lets_a_pending_task_in() -> None:
    """No pass of the orchestrator records it (another writer did): the tallies moved."""
    h, _ = crowded_cluster()
    h.update_spec("s-greedy", restart=RestartPolicy(delay_s=60.0))
    h.settle(rounds=3)
    before = len(pending_of(h, "s-greedy"))
    victim = h.running("s-greedy")[0]
    stopped = dataclasses.replace(victim, state=TaskState.FAILED, message="stopped elsewhere")
    assert h.state.apply(PutTasks((stopped,))).ok
    h.reconcile()  # checked against a full pass
    assert len(pending_of(h, "s-greedy")) == before - 1  # the replacement waits 60 s


def test_a_task_left_pending_that_another_writer_rewrote_is_asked_again() -> None:
    h, _ = crowded_cluster()
    [task, *_] = pending_of(h, "s-nowhere")
    assert h.state.apply(PutTasks((dataclasses.replace(task, message="tampered"),))).ok
    h.reconcile()
    assert h.state.tasks[task.id].message.startswith("no suitable node")


def test_what_a_lost_pass_told_the_pending_tasks_is_told_again() -> None:
    """A node joins and has not reported yet: the pass that tells every pending task so is
    never committed. Nothing the scheduler reads changes after it, yet the next pass tells
    them again (it expected its own writes back)."""
    h, checked = crowded_cluster()
    h.unknown.add(add_node(h.state, 9))
    lost = checked.planner.plan(h.state, h.observed(), h.now, counter_ids("lost-"))
    assert lost.commands  # ... and never committed
    checked.planner.deferred()
    h.now += 1.0
    h.reconcile()  # checked against a full pass
    for task in h.state.tasks.waiting().values():
        assert "1 node has not reported its status" in task.message


def test_a_fresh_task_placed_changes_what_the_tasks_left_pending_are_told() -> None:
    """A replacement started after its restart delay takes the memory that made n01 refuse the
    pending task of `capped` for its replica limit. `backup` comes first in the batch, so the
    pass that places it tells that task the new reason at once (as a full pass does)."""
    h, checked = checked_harness(make_state(2, resources=Resources(4 * CPU, 4 * GIB)))
    two = Resources(memory_bytes=2 * GIB)
    add_service(
        h.state,
        "capped",
        replicas=3,
        reservations=two,
        placement=Placement(max_replicas_per_node=1),
    )
    add_service(h.state, "backup", reservations=two, restart=RestartPolicy(delay_s=5.0))
    h.settle(rounds=3)
    [waiting] = pending_of(h, "s-capped")
    told = waiting.message
    assert "memory" in told
    h.fail(h.running("s-backup")[0].id)
    h.settle(rounds=2)
    assert "memory" not in h.state.tasks[waiting.id].message
    h.now += 5.0
    h.settle(rounds=2)
    assert h.running("s-backup")
    assert h.state.tasks[waiting.id].message == told
    assert checked.skipped > 0


def rolling_service(h: Harness, reservations: Resources) -> None:
    """Service s: 3 replicas, updated one at a time."""
    add_service(
        h.state, "s", replicas=3, reservations=reservations, update=UpdateConfig(parallelism=1)
    )


def test_a_lost_pass_that_took_a_task_out_of_waiting_leaves_none_unasked() -> None:
    """The lost pass retired a waiting task T (a rolling update step) and created its
    successor; the next pass decides otherwise (the update waits for an unhealthy task), so T
    waits still and must be told why again, as a full pass does (review of f632f30)."""
    h, checked = checked_harness(make_state(2, resources=Resources(4 * CPU, 4 * GIB)))
    rolling_service(h, Resources(memory_bytes=3 * GIB))
    h.reconcile()
    h.now += 1.0
    first, second, waiting = sorted(h.state.tasks.values(), key=lambda t: t.slot)
    assert first.node_id and second.node_id and not waiting.node_id
    h.observe(second.id, TaskState.RUNNING)  # the first never reports running
    h.update_spec("s-s", image="busybox:2")
    h.reconcile()  # slot 1 is replaced first
    h.now += 1.0
    h.observe(first.id, TaskState.SHUTDOWN)
    h.reconcile()
    h.now += 1.0
    [successor] = [
        t
        for t in h.state.tasks.values()
        if t.slot == 1 and t.desired_state is TaskState.RUNNING and t.id != first.id
    ]
    h.observe(successor.id, TaskState.RUNNING)
    h.now += 1.0
    add_node(h.state, 3, resources=Resources(4 * CPU, 2 * GIB))  # what T is told changes
    assert checked.reconcile(commit=0)  # retires T, creates its successor: lost
    h.now += 1.0
    h.observe(successor.id, TaskState.RUNNING, healthy=False)  # slot 1 busy: the update waits
    h.reconcile()  # checked against a full pass
    assert "3 nodes lack memory" in h.state.tasks[waiting.id].message


def test_a_spec_change_is_explained_to_every_waiting_task_of_a_rolling_update() -> None:
    """The update replaces one waiting task per step, but the scheduler explains every one
    from the new spec at once: the service's write alone must send them all to it."""
    h, _ = checked_harness(make_state(2, resources=Resources(4 * CPU, 4 * GIB)))
    rolling_service(h, Resources(memory_bytes=8 * GIB))
    h.settle(rounds=2)
    assert all("memory" in t.message for t in h.state.tasks.waiting().values())
    h.update_spec("s-s", reservations=Resources(nano_cpus=8 * CPU))
    h.settle(rounds=2)  # every pass checked against a full pass
    assert all("CPU" in t.message for t in h.state.tasks.waiting().values())


@pytest.mark.parametrize("seed", range(10))
def test_pending_tasks_through_chaos_with_lost_and_partly_committed_passes(seed: int) -> None:
    """Crowded services of every kind, nodes lost, drained, paused, unknown, joining and
    shrinking, tasks failing, unhealthy and rewritten by another writer, specs changed, services
    removed and created, writes no placement depends on; a pass's commands now and then lost or
    committed in part. Every pass
    is checked against a full pass. (After a review's fuzzer, which ran 900 seeds.)"""
    rng = random.Random(seed)
    h, checked = checked_harness(
        make_state(5, resources=Resources(4 * CPU, 4 * GIB), labels={1: {"z": "a"}, 2: {"z": "b"}})
    )
    add_service(
        h.state,
        "greedy",
        replicas=12,
        reservations=Resources(memory_bytes=3 * GIB),
        update=UpdateConfig(parallelism=rng.randint(0, 2), monitor_s=2.0),
    )
    add_service(h.state, "capped", replicas=7, placement=Placement(max_replicas_per_node=1))
    add_service(
        h.state, "nowhere", replicas=4, placement=Placement(constraints=("node.labels.x==y",))
    )
    add_service(
        h.state, "glob", mode=ServiceMode.GLOBAL, reservations=Resources(memory_bytes=2 * GIB)
    )
    add_service(
        h.state, "port", replicas=6, ports=(PortConfig(8080, 80, mode="host"),), rebalance=True
    )
    add_service(
        h.state,
        "pref",
        replicas=5,
        reservations=Resources(nano_cpus=2 * CPU),
        placement=Placement(preferences=("spread=node.labels.z",)),
    )
    h.settle(rounds=4)
    for step in range(40):
        _chaos_step(h, rng, step)
        for _ in range(rng.randint(1, 3)):
            checked.reconcile(commit=None if rng.random() < 0.7 else rng.randrange(4))
            if rng.random() < 0.7:
                h.agents()
            h.now += rng.choice([0.0, 0.5, 1.0, 3.0])
    assert checked.skipped > 0


def _chaos_step(h: Harness, rng: random.Random, step: int) -> None:
    nodes = sorted(h.state.nodes)
    services = sorted(h.state.services)
    running = sorted(t.id for s in services for t in h.running(s))
    waiting = sorted(h.state.tasks.waiting())
    kind = rng.choice(
        ["fail", "down", "up", "unknown", "known", "drain", "active", "pause", "scale",
         "update", "join", "shrink", "unhealthy", "rewrite", "remove", "create", "config"]
    )  # fmt: skip
    if kind == "fail" and running:
        h.fail(rng.choice(running))
    elif kind == "down":
        h.down.add(rng.choice(nodes))
    elif kind == "up" and h.down:
        h.down.discard(rng.choice(sorted(h.down)))
    elif kind == "unknown":
        h.unknown.add(rng.choice(nodes))
    elif kind == "known" and h.unknown:
        h.unknown.discard(rng.choice(sorted(h.unknown)))
    elif kind in ("drain", "active", "pause"):
        h.set_availability(rng.choice(nodes), Availability(kind))
    elif kind == "scale" and services:
        service = rng.choice(services)
        if not h.state.services[service].spec.mode.is_global:
            h.update_spec(service, replicas=rng.randint(0, 14))
    elif kind == "update" and services:
        h.update_spec(rng.choice(services), image=f"img:{step}")
    elif kind == "join":
        gib = rng.choice([2, 4, 8])
        add_node(h.state, 40 + step, resources=Resources(4 * CPU, gib * GIB))
    elif kind == "shrink":
        h.capacity[rng.choice(nodes)] = Resources(4 * CPU, rng.choice([1, 4, 8]) * GIB)
    elif kind == "unhealthy" and running:
        h.observe(rng.choice(running), TaskState.RUNNING, healthy=False)
    elif kind == "rewrite" and waiting:
        task = h.state.tasks[rng.choice(waiting)]
        assert h.state.apply(PutTasks((dataclasses.replace(task, message="rewritten"),))).ok
    elif kind == "remove" and services:
        h.remove_service(rng.choice(services))
    elif kind == "config":  # a write no placement depends on
        config = Secret(f"c{step}", f"c{step}", b"", is_config=True)
        assert h.state.apply(CreateSecret(config)).ok
    elif kind == "create":
        gib = rng.choice([0, 1, 3])
        add_service(h.state, f"x{step}", replicas=rng.randint(1, 6),
                    reservations=Resources(memory_bytes=gib * GIB))  # fmt: skip
