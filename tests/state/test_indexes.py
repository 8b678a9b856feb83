"""state.indexes: the task indexes follow every write (apply, a batch, a direct poke, a copy
written on either side) exactly as a fresh count would, the secret and service indexes answer
as a scan would, and the change journal names every record written since a mark, once, and says
when it cannot tell."""

from __future__ import annotations

import dataclasses
import random

import pytest

from swarmlet.state.commands import (
    AddNode,
    Batch,
    CreateSecret,
    CreateService,
    InitCluster,
    PutTasks,
    RemoveNode,
    RemoveSecret,
    RemoveService,
    RemoveTasks,
    ReportTasks,
    UpdateService,
)
from swarmlet.state.indexes import ChangeJournal, SecretTable, TaskTable, index_problems
from swarmlet.state.machine import ClusterState
from swarmlet.state.model import (
    NetworkAttachment,
    Node,
    PortConfig,
    Role,
    Secret,
    Service,
    ServiceSpec,
    Task,
    TaskState,
)
from swarmlet.state.observed import TaskObservation


def cluster(nodes: int = 4, services: int = 3) -> ClusterState:
    state = ClusterState()
    assert state.apply(InitCluster("c", 0.0, b"w", b"m")).ok
    for i in range(nodes):
        node = Node(f"n{i}", f"host{i}", f"10.0.0.{i}:1", f"10.0.0.{i}", Role.WORKER)
        assert state.apply(AddNode(node)).ok
    for i in range(services):
        assert state.apply(CreateService(Service(f"s{i}", ServiceSpec(f"svc{i}", "img")))).ok
    return state


def random_task(rng: random.Random, state: ClusterState, task_id: str) -> Task:
    old = state.tasks.get(task_id)
    if old is None:
        return Task(task_id, rng.choice(sorted(state.services)), rng.randint(1, 5), 1)
    node = old.node_id or rng.choice(["", *sorted(state.nodes)])
    states = [s for s in TaskState if s >= old.state]
    return dataclasses.replace(
        old,
        node_id=node,
        state=rng.choice(states),
        desired_state=max(old.desired_state, rng.choice([TaskState.RUNNING, TaskState.SHUTDOWN])),
    )


def test_indexes_follow_random_commands_like_a_fresh_count() -> None:
    rng = random.Random(5)
    state = cluster()
    ids = [f"t{i}" for i in range(40)]
    copies = []
    for step in range(300):
        roll = rng.random()
        if roll < 0.5:
            batch = [random_task(rng, state, rng.choice(ids)) for _ in range(rng.randint(1, 4))]
            state.apply(PutTasks(tuple({t.id: t for t in batch}.values())))
        elif roll < 0.6:
            state.apply(RemoveTasks(tuple(rng.sample(ids, 3))))
        elif roll < 0.7:
            one = PutTasks((random_task(rng, state, rng.choice(ids)),))
            bad = RemoveNode("no-such-node", 1.0)
            state.apply(Batch((one, bad)))  # refused as a whole
            state.apply(Batch((one,)))
        elif roll < 0.75:
            poked = random_task(rng, state, rng.choice(ids))
            state.tasks[poked.id] = poked
        elif roll < 0.8:
            copies.append(state.copy())  # then both sides are written
            copy = copies[-1]
            copy.tasks.pop(rng.choice(ids), None)
            copy.tasks[f"c{step}"] = Task(f"c{step}", "s0", 1, 1, node_id="n1")
        elif roll < 0.82 and len(state.nodes) > 1:
            state.apply(RemoveNode(rng.choice(sorted(state.nodes)), 1.0))
        assert index_problems(state.tasks) == [], step
    for copy in copies:
        assert index_problems(copy.tasks) == []
    state.apply(RemoveService("s1", 2.0))
    assert all(t.desired_state >= TaskState.SHUTDOWN for t in state.tasks.of_service("s1").values())
    assert index_problems(state.tasks) == []


def test_a_task_under_another_id_is_refused() -> None:
    state = cluster()
    with pytest.raises(ValueError, match="another id"):
        state.tasks["x"] = Task("y", "s0", 1, 1)


def test_a_restored_or_assigned_table_is_indexed() -> None:
    state = cluster()
    state.tasks = {"a": Task("a", "s0", 1, 1, node_id="n0"), "b": Task("b", "s1", 1, 1)}
    assert isinstance(state.tasks, TaskTable)
    assert set(state.tasks.on_node("n0")) == {"a"}
    assert set(state.tasks.waiting()) == {"a", "b"}
    again = ClusterState.restore(state.snapshot())
    assert set(again.tasks.of_service("s1")) == {"b"}
    assert index_problems(again.tasks) == []


def test_journal_names_what_changed_since_a_mark() -> None:
    state = cluster()
    assert state.journal.since(0) is None  # nobody was listening: unknown
    mark = state.journal.mark()
    changes = state.journal.since(mark)
    assert changes is not None and not changes
    task = Task("t1", "s0", 1, 1, node_id="n2", state=TaskState.ASSIGNED)
    assert state.apply(PutTasks((task,))).ok
    assert state.apply(ReportTasks("n2", (TaskObservation("t1", TaskState.RUNNING),))).ok
    assert state.apply(RemoveService("s2", 1.0)).ok
    changes = state.journal.since(mark)
    assert changes is not None
    assert changes.tasks == {"t1": "s0"}
    assert changes.statuses == {"t1"}
    assert changes.services == {"s2"}
    assert changes.nodes == set()
    second = state.journal.mark()
    assert state.apply(RemoveNode("n2", 2.0)).ok
    later = state.journal.since(second)
    assert later is not None
    assert later.nodes == {"n2"} and later.tasks == {"t1": "s0"} and later.statuses == {"t1"}
    assert state.apply(RemoveTasks(("t1",))).ok
    gone = state.journal.since(second)
    assert gone is not None and gone.tasks == {"t1": "s0"}  # a reaped task still names its service


def test_a_batch_notes_only_what_it_wrote() -> None:
    state = cluster()
    tasks = tuple(Task(f"t{i}", "s0", i + 1, 1) for i in range(5))
    assert state.apply(PutTasks(tasks)).ok
    mark = state.journal.mark()
    changed = dataclasses.replace(tasks[0], node_id="n1", state=TaskState.ASSIGNED)
    assert state.apply(Batch((PutTasks((changed,)), RemoveTasks(("t4",))))).ok
    changes = state.journal.since(mark)
    assert changes is not None
    assert changes.tasks == {"t0": "s0", "t4": "s0"} and not changes.services
    assert index_problems(state.tasks) == []
    assert set(state.tasks.on_node("n1")) == {"t0"}


def test_journal_forgets_the_oldest_and_then_says_it_cannot_tell() -> None:
    journal = ChangeJournal(max_keys=8)
    mark = journal.mark()
    for i in range(5):
        journal.note("task", f"t{i}", "s")
    recent = journal.mark()
    for i in range(5, 12):
        journal.note("task", f"t{i}", "s")
    assert journal.since(mark) is None
    changes = journal.since(recent)
    assert changes is not None and set(changes.tasks) == {f"t{i}" for i in range(5, 12)}


def _scan(secrets: dict[str, Secret], name: str, is_config: bool) -> Secret | None:
    """What `ClusterState.secret_by_name` answered before the index: the first written."""
    return next((s for s in secrets.values() if (s.name, s.is_config) == (name, is_config)), None)


def test_the_secret_name_index_answers_like_a_scan_through_every_kind_of_write() -> None:
    rng = random.Random(11)
    states = [cluster()]
    names = [f"name{i}" for i in range(6)]
    for step in range(600):
        roll = rng.random()
        state = rng.choice(states)  # the first, or a copy: a copy and its original share
        key = f"x{rng.randrange(12)}"
        if roll < 0.3:
            name, is_config = rng.choice(names), rng.random() < 0.5
            created = Secret(f"new{step}", name, b"v", is_config=is_config)
            state.apply(CreateSecret(created))  # refused when the name is taken
        elif roll < 0.5:  # a direct write: new, rewritten, renamed, or a duplicate name
            state.secrets[key] = Secret(key, rng.choice(names), b"v", is_config=rng.random() < 0.5)
        elif roll < 0.6:
            state.secrets.pop(key, None)
        elif roll < 0.65:
            state.secrets.setdefault(key, Secret(key, rng.choice(names), b"v"))
        elif roll < 0.7 and state.secrets:
            state.apply(RemoveSecret(rng.choice(sorted(state.secrets))))
        elif roll < 0.75:
            states.append(state.copy())  # then both sides are written
        elif roll < 0.77:
            states[states.index(state)] = ClusterState.restore(state.snapshot())
        for held in states:
            for name in names:
                for is_config in (False, True):
                    want = _scan(dict(held.secrets), name, is_config)
                    assert held.secret_by_name(name, is_config=is_config) == want, step
    assert len(states) > 10


def test_an_assigned_secret_table_is_indexed() -> None:
    state = cluster()
    state.secrets = {"a": Secret("a", "db", b"v"), "b": Secret("b", "db", b"v", is_config=True)}
    assert isinstance(state.secrets, SecretTable)
    assert state.secret_by_name("db") == Secret("a", "db", b"v")
    assert state.secret_by_name("db", is_config=True) == Secret("b", "db", b"v", is_config=True)
    state.secrets.clear()
    assert state.secret_by_name("db") is None


def _services_holding(services: dict[str, Service]) -> dict[str, dict[object, list[str]]]:
    """What each service index must hold, by a scan in the table's order."""
    found: dict[str, dict[object, list[str]]] = {"names": {}, "ports": {}, "networks": {}}
    for sid, service in services.items():
        found["names"].setdefault(service.spec.name, []).append(sid)
        for port in {(p.published, p.protocol) for p in service.spec.ports if p.mode == "ingress"}:
            found["ports"].setdefault(port, []).append(sid)
        for network in service.vip_indexes:
            found["networks"].setdefault(network, []).append(sid)
    return found


def test_the_service_indexes_answer_like_a_scan_through_every_kind_of_write() -> None:
    """Names, ingress ports and virtual-IP networks, through applied commands (checked, so
    unique), direct writes (duplicates, renames, a port gained that another holds), copies
    written on both sides and restores."""
    rng = random.Random(17)
    states = [cluster(services=0)]
    names = [f"svc{i}" for i in range(5)]

    def spec() -> ServiceSpec:
        ports = tuple(
            PortConfig(rng.choice([80, 81, 82]), 8080, rng.choice(["tcp", "udp"]), mode)
            for mode in rng.sample(["ingress", "ingress", "host"], rng.randint(0, 2))
        )
        networks = tuple(
            NetworkAttachment(n) for n in rng.sample(["a", "b", "c"], rng.randint(0, 2))
        )
        return ServiceSpec(rng.choice(names), "img", ports=ports, networks=networks)

    for step in range(800):
        roll = rng.random()
        state = rng.choice(states)
        key = f"s{rng.randrange(10)}"
        if roll < 0.25:
            state.apply(CreateService(Service(f"new{step}", spec())))  # refused when taken
        elif roll < 0.4 and state.services:
            sid = rng.choice(sorted(state.services))
            state.apply(UpdateService(sid, spec(), float(step)))
        elif roll < 0.55:  # a direct write: new, rewritten, renamed, or a duplicate
            networks = {n: 1 for n in rng.sample(["a", "b", "c"], rng.randint(0, 2))}
            state.services[key] = Service(key, spec(), vip_indexes=networks)
        elif roll < 0.65:
            state.services.pop(key, None)
        elif roll < 0.72 and state.services:
            state.apply(RemoveService(rng.choice(sorted(state.services)), float(step)))
        elif roll < 0.77:
            states.append(state.copy())  # then both sides are written
        elif roll < 0.79:
            states[states.index(state)] = ClusterState.restore(state.snapshot())
        for held in states:
            table = held.services
            want = _services_holding(dict(table))
            for index, name in ((table.names, "names"), (table.ingress_ports, "ports")):
                for key_, ids in want[name].items():
                    assert list(index.get(key_)) == ids, (step, name, key_)
            assert set(table.names._buckets) == set(want["names"])
            assert set(table.ingress_ports._buckets) == set(want["ports"])
            networks = table.vip_networks._buckets  # in no promised order
            assert {k: set(v) for k, v in networks.items()} == {
                k: set(v) for k, v in want["networks"].items()
            }
            for name in names:
                first = want["names"].get(name)
                assert held.service_by_name(name) == (table[first[0]] if first else None)
    assert len(states) > 10


def test_a_port_held_twice_is_refused_naming_its_last_publisher_as_a_scan_did() -> None:
    """Two publishers of one port cannot be written through `apply`; a state that holds them
    anyway (an older release's) answers what the scan of every service answered, on every
    replica alike."""
    state = cluster(services=0)
    for sid in ("first", "second"):
        state.services[sid] = Service(sid, ServiceSpec(sid, "img", ports=(PortConfig(80, 80),)))
    result = state.apply(
        CreateService(Service("third", ServiceSpec("third", "img", ports=(PortConfig(80, 80),))))
    )
    assert not result.ok and result.error.endswith("published by service second")
    again = ClusterState.restore(state.snapshot())
    assert (
        again.apply(
            CreateService(
                Service("third", ServiceSpec("third", "img", ports=(PortConfig(80, 80),)))
            )
        ).error
        == result.error
    )
