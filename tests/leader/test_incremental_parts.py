"""The parts that keep the leader's pass proportional to a change (issue #16), each against what
it replaces, after random changes: `ObservationCache.refresh` against `observe` (and the tasks it
says changed against a comparison), `NodeTallies` against a fresh count."""

from __future__ import annotations

import dataclasses
import random

from swarmlet.gossip.messages import MemberState
from swarmlet.leader.observation import ObservationCache, observe
from swarmlet.leader.scheduler import NodeTallies, Scheduler
from swarmlet.state.commands import PutTasks, RemoveTasks, ReportTasks, UpdateNode, UpdateService
from swarmlet.state.model import (
    Node,
    PortConfig,
    Resources,
    Role,
    Service,
    ServiceSpec,
    Task,
    TaskState,
)
from swarmlet.state.observed import Endpoint, NodeMeta, TaskObservation
from tests.leader.test_observation import Source

NODES = ("me", "n1", "n2", "n3", "n4")
SERVICES = ("a", "b", "c")


def cluster() -> Source:
    source = Source()
    for i, node_id in enumerate(NODES):
        source.state.nodes[node_id] = Node(
            node_id, node_id, f"10.0.0.{i + 1}:1", f"10.0.0.{i + 1}", Role.WORKER
        )
        source.members[node_id] = MemberState.ALIVE
    for name in SERVICES:
        spec = ServiceSpec(name=name, image="x", reservations=Resources(memory_bytes=1 << 20))
        source.state.services[name] = Service(id=name, spec=spec)
    return source


def random_change(rng: random.Random, source: Source, step: int) -> None:
    state = source.state
    tasks = sorted(state.tasks)
    roll = rng.random()
    node_id = rng.choice(NODES)
    if roll < 0.25 or not tasks:
        task = Task(f"t{step}", rng.choice(SERVICES), rng.randint(1, 9), 1, node_id=node_id)
        state.apply(PutTasks((dataclasses.replace(task, state=TaskState.ASSIGNED),)))
    elif roll < 0.55:
        task = state.tasks[rng.choice(tasks)]
        addr = state.nodes[task.node_id].addr.rpartition(":")[0]
        host = rng.choice([addr, "10.9.9.9", "0.0.0.0", "127.0.0.1"])  # some are refused
        obs = TaskObservation(
            task.id,
            rng.choice([TaskState.STARTING, TaskState.RUNNING, TaskState.FAILED]),
            endpoints=(Endpoint(80, "tcp", host, rng.randint(30000, 30009)),),
        )
        state.apply(ReportTasks(rng.choice([task.node_id, node_id]), (obs,)))
    elif roll < 0.62:
        state.apply(RemoveTasks((rng.choice(tasks),)))
    elif roll < 0.70:
        source.members[node_id] = rng.choice(list(MemberState))
    elif roll < 0.74:
        source.members.pop(node_id, None)  # not heard of (any more)
    elif roll < 0.80:
        i = NODES.index(node_id) + 1
        addr = rng.choice([f"10.0.0.{i}:1", f"10.0.1.{i}:1"])
        state.apply(UpdateNode(node_id, addr=addr))
    elif roll < 0.85:
        source.metas[node_id] = NodeMeta(node_id, "worker", "", "", rng.randint(1, 4), 1 << 30)
    elif roll < 0.92:
        mine = [t for t in tasks if state.tasks[t].node_id == "me"]
        if mine:
            picked = rng.sample(mine, min(len(mine), rng.randint(0, 3)))
            source.local = tuple(TaskObservation(t, TaskState.RUNNING) for t in picked)
    else:
        service = state.services[rng.choice(SERVICES)]
        ports = rng.choice([(), (PortConfig(8080, 80, mode="host"),)])
        spec = dataclasses.replace(
            service.spec,
            ports=ports,
            reservations=Resources(rng.randint(0, 9), rng.randint(0, 9) << 20),
        )
        state.apply(UpdateService(service.id, spec, float(step)))


def test_the_cache_answers_what_observe_does_and_names_what_changed() -> None:
    for seed in range(8):
        rng = random.Random(seed)
        source = cluster()
        cache = ObservationCache()
        before = cache.refresh(source)
        for step in range(150):
            random_change(rng, source, step)
            if rng.random() < 0.1:
                source.state = source.state.copy()  # a new replica object: it starts over
            if rng.random() < 0.3:
                continue  # several changes between two passes
            fresh = observe(source)
            kept = cache.refresh(source)
            assert kept == fresh, (seed, step)
            assert kept.refused == fresh.refused, (seed, step)
            changed = {
                t
                for t in before.tasks.keys() | kept.tasks.keys()
                if before.tasks.get(t) != kept.tasks.get(t)
            }
            assert changed <= cache.changed_tasks, (seed, step)
            before = kept


def tallies_of(scheduler: Scheduler) -> dict[str, tuple[object, ...]]:
    return {
        nid: (i.total, dict(i.by_service), i.reserved_cpu, i.reserved_mem, sorted(i.ports))
        for nid, i in scheduler.infos.items()
    }


def test_kept_tallies_count_what_a_fresh_count_does() -> None:
    for seed in range(8):
        rng = random.Random(seed)
        source = cluster()
        tallies = NodeTallies(source.state)
        for step in range(150):
            random_change(rng, source, step)
            if rng.random() < 0.2:
                task = source.state.tasks.get(rng.choice(sorted(source.state.tasks) or ["-"]))
                if task is not None:  # a task moves on: it holds its node, or stops holding it
                    later = rng.choice([s for s in TaskState if s >= task.state])
                    source.state.apply(PutTasks((dataclasses.replace(task, state=later),)))
            assert tallies.advance(source.state)
            observed = observe(source).nodes
            kept = Scheduler(source.state, observed, tallies)
            assert tallies_of(kept) == tallies_of(Scheduler(source.state, observed)), (seed, step)
