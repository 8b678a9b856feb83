"""Deterministic simulation of the orchestrator: the leader's loop, fake agents, chaos.

Each step: maybe an event (a node goes down or comes back, is drained or reactivated, a task
fails, a node starts rejecting tasks, a service is scaled or updated), then `reconcile` (every
command must be accepted by `ClusterState.apply`), then the agents act on part of their work (so
tasks linger in every state), then the clock moves on. Invariants are checked after every
reconcile:

- no task is desired running on a node gossip declares down;
- no slot has two alive tasks desired running, except a handover (start-first update or
  rebalance), and never three;
- a replicated service fills exactly `replicas` slots; a global service has at most one slot
  per node;
- on every node, reservations fit the capacity, host-mode ports are exclusive, and
  max-replicas-per-node holds.
After the chaos every node comes back and the agents behave: the services converge (replicas
running, one task per node for global services, finished updates on the current version) and
reconcile then has nothing more to say.

Run one seed: `python -m tests.leader.orchestrator.sim --seed 7 -v`; a sweep: `--seeds 0-999`.
"""

from __future__ import annotations

import argparse
import random
import sys
from collections import Counter

from swarmlet.leader.orchestrator.context import is_current
from swarmlet.leader.scheduler import is_active, occupies
from swarmlet.state.commands import Command, PutTasks
from swarmlet.state.model import (
    Availability,
    FailureAction,
    Placement,
    PortConfig,
    Resources,
    ServiceMode,
    Task,
    TaskState,
    UpdateConfig,
    UpdateOrder,
    UpdateState,
)
from tests.leader.orchestrator.cluster import (
    GIB,
    Harness,
    add_node,
    add_service,
    make_state,
    node_id,
)

NODES = 6


def build(rng: random.Random) -> Harness:
    state = make_state(NODES - 1, labels={1: {"zone": "a"}, 2: {"zone": "b"}, 3: {"zone": "a"}})
    h = Harness(state)
    add_service(
        h.state,
        "web",
        replicas=rng.randint(1, 8),
        update=UpdateConfig(
            failure_action=FailureAction.ROLLBACK, max_failure_ratio=0.3, monitor_s=3.0
        ),
    )
    add_service(
        h.state,
        "api",
        replicas=rng.randint(1, 5),
        update=UpdateConfig(
            order=UpdateOrder.START_FIRST, parallelism=rng.randint(0, 2), monitor_s=2.0
        ),
    )
    add_service(h.state, "agent", mode=ServiceMode.GLOBAL, update=UpdateConfig(monitor_s=1.0))
    add_service(
        h.state,
        "edge",
        replicas=rng.randint(1, 4),
        reservations=Resources(memory_bytes=3 * GIB),
        ports=(PortConfig(8080, 80, mode="host"),),
        placement=Placement(max_replicas_per_node=1, preferences=("spread=node.labels.zone",)),
    )
    return h


class Sim:
    def __init__(self, seed: int, *, verbose: bool = False) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.h = build(self.rng)
        self.verbose = verbose
        self.rejecting: set[str] = set()
        self.joined = False

    def log(self, text: str) -> None:
        if self.verbose:
            print(f"[{self.h.now:8.2f}] {text}")

    # ---------------------------------------------------------------------------- chaos

    def event(self) -> None:
        h, rng = self.h, self.rng
        nodes = sorted(h.state.nodes)
        roll = rng.random()
        nid = rng.choice(nodes)
        if roll < 0.08:
            h.down.add(nid)
            self.log(f"{nid} down")
        elif roll < 0.18:
            h.down.discard(nid)
            self.log(f"{nid} up")
        elif roll < 0.22:
            h.set_availability(nid, Availability.DRAIN)
            self.log(f"{nid} drain")
        elif roll < 0.25:
            h.set_availability(nid, Availability.PAUSE)
            self.log(f"{nid} pause")
        elif roll < 0.32:
            h.set_availability(nid, Availability.ACTIVE)
            self.log(f"{nid} active")
        elif roll < 0.40:
            running = [t for t in h.state.tasks.values() if self._seen(t) is TaskState.RUNNING]
            if running:
                victim = rng.choice(sorted(running, key=lambda t: t.id))
                h.fail(victim.id)
                self.log(f"task {victim.id} fails")
        elif roll < 0.43:
            self.rejecting.symmetric_difference_update({nid})
            self.log(f"{nid} rejecting={nid in self.rejecting}")
        elif roll < 0.48:
            sid = rng.choice(["s-web", "s-api"])
            h.update_spec(sid, replicas=rng.randint(0, 8))
            self.log(f"scale {sid} to {h.state.services[sid].spec.replicas}")
        elif roll < 0.53:
            sid = rng.choice(["s-web", "s-api", "s-agent", "s-edge"])
            h.update_spec(sid, image=f"img:{rng.randint(0, 1_000_000)}")
            self.log(f"update {sid}")
        elif roll < 0.55 and not self.joined:
            add_node(h.state, NODES)
            self.joined = True
            self.log(f"{node_id(NODES)} joins")

    def _seen(self, task: Task) -> TaskState:
        obs = self.h.tasks.get(task.id)
        return max(task.state, obs.state) if obs else task.state

    def agents(self, diligence: float) -> None:
        h = self.h
        for task in sorted(h.state.tasks.values(), key=lambda t: t.id):
            if not task.node_id or task.node_id in h.down or self.rng.random() > diligence:
                continue
            seen = self._seen(task)
            if seen.terminal or task.state < TaskState.ASSIGNED:
                continue
            if task.desired_state > TaskState.RUNNING:
                h.observe(task.id, TaskState.SHUTDOWN)
            elif seen < TaskState.RUNNING:
                if task.node_id in self.rejecting:
                    h.observe(task.id, TaskState.REJECTED, error="image missing")
                else:
                    h.observe(task.id, TaskState.RUNNING)

    # ---------------------------------------------------------------------------- checks

    def check(self) -> None:
        h = self.h
        self.check_nodes()
        for task in h.state.tasks.values():
            assert not (
                task.node_id in h.down
                and task.desired_state is TaskState.RUNNING
                and not self._seen(task).terminal
            ), f"task {task.id} desired running on down node {task.node_id}"
        for service in h.state.services.values():
            slots: dict[tuple[int, str], list[Task]] = {}
            for task in h.state.tasks_of(service.id):
                key = (task.slot, "") if task.slot else (0, task.node_id)
                slots.setdefault(key, []).append(task)
            filled = 0
            for key, tasks in slots.items():
                alive = [
                    t
                    for t in tasks
                    if t.desired_state is TaskState.RUNNING and not self._seen(t).terminal
                ]
                assert len(alive) <= 2, f"{service.spec.name} slot {key}: {len(alive)} alive"
                if len(alive) == 2:
                    handover = service.spec.rebalance or (
                        service.spec.update.order is UpdateOrder.START_FIRST
                    )
                    assert handover, f"{service.spec.name} slot {key}: two tasks"
                filled += any(is_current(t) for t in tasks)
            if service.spec.mode is ServiceMode.REPLICATED:
                assert filled == service.spec.replicas, (
                    f"{service.spec.name}: {filled} slots for {service.spec.replicas} replicas"
                )
            else:
                per_node = Counter(k[1] for k in slots if any(is_current(t) for t in slots[k]))
                assert all(n == 1 for n in per_node.values())

    def check_nodes(self) -> None:
        """What the scheduler promises: reservations fit, host ports are exclusive, max
        replicas per node hold (over the recorded states the scheduler works from)."""
        h = self.h
        memory: Counter[str] = Counter()
        ports: Counter[tuple[str, int]] = Counter()
        replicas: Counter[tuple[str, str]] = Counter()
        for task in h.state.tasks.values():
            service = h.state.services.get(task.service_id)
            if service is None or not occupies(task):
                continue
            memory[task.node_id] += service.spec.reservations.memory_bytes
            for port in service.spec.ports:
                if port.mode == "host":
                    ports[(task.node_id, port.published)] += 1
            if is_active(task):
                replicas[(task.node_id, task.service_id)] += 1
        for nid, used in memory.items():
            assert used <= h.state.nodes[nid].resources.memory_bytes, f"{nid} overcommitted"
        assert all(n == 1 for n in ports.values()), f"host port shared: {ports}"
        for (nid, sid), n in replicas.items():
            limit = h.state.services[sid].spec.placement.max_replicas_per_node
            assert not limit or n <= limit, f"{sid}: {n} replicas on {nid}"

    def check_assignments(self, before: dict[str, Task], commands: list[Command]) -> None:
        """The scheduler only hands new tasks to ready, active nodes."""
        h = self.h
        for command in commands:
            if not isinstance(command, PutTasks):
                continue
            for task in command.tasks:
                old = before.get(task.id)
                newly = old is None or old.state < TaskState.ASSIGNED
                if task.state is TaskState.ASSIGNED and newly:
                    node = h.state.nodes[task.node_id]
                    assert task.node_id not in h.down, f"{task.id} assigned to a down node"
                    assert node.availability is Availability.ACTIVE, f"{task.id} on {node.id}"

    def converged(self) -> None:
        h = self.h
        for service in h.state.services.values():
            running = h.running(service.id)
            if service.spec.mode is ServiceMode.REPLICATED:
                assert len(running) == service.spec.replicas, (
                    f"{service.spec.name}: {len(running)} running, want {service.spec.replicas}"
                )
            else:
                eligible = sorted(
                    n.id for n in h.state.nodes.values() if n.availability is Availability.ACTIVE
                )
                assert sorted(t.node_id for t in running) == eligible, service.spec.name
            if service.update_status.state is UpdateState.COMPLETED:
                assert all(t.spec_version == service.version for t in running)
            assert service.update_status.state not in (
                UpdateState.UPDATING,
                UpdateState.ROLLBACK_STARTED,
            ), f"{service.spec.name}: update still {service.update_status.state}"
        assert h.reconcile() == [], "reconcile is not idempotent after convergence"

    # ---------------------------------------------------------------------------- run

    def run(self, steps: int) -> None:
        h = self.h
        for _ in range(steps):
            if self.rng.random() < 0.5:
                self.event()
            before = dict(h.state.tasks)
            self.check_assignments(before, h.reconcile())
            self.check()
            self.agents(diligence=self.rng.uniform(0.3, 1.0))
            h.now += self.rng.choice((0.1, 0.5, 1.0, 3.0))
        # Heal: every node back, active, no failures; give timers (back-off, cooldown) time.
        h.down.clear()
        self.rejecting.clear()
        for nid in sorted(h.state.nodes):
            h.set_availability(nid, Availability.ACTIVE)
        for _ in range(60):
            h.reconcile()
            self.check()
            self.agents(diligence=1.0)
            h.now += 31.0
        self.converged()


def run_seed(seed: int, steps: int = 150, *, verbose: bool = False) -> None:
    try:
        Sim(seed, verbose=verbose).run(steps)
    except AssertionError as exc:
        raise AssertionError(f"seed {seed}: {exc}") from exc


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seed", type=int)
    parser.add_argument("--seeds", default="0-99")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args()
    if args.seed is not None:
        seeds = [args.seed]
    else:
        lo, hi = (int(x) for x in args.seeds.split("-"))
        seeds = list(range(lo, hi + 1))
    failed = 0
    for seed in seeds:
        try:
            run_seed(seed, args.steps, verbose=args.verbose)
        except AssertionError as exc:
            failed += 1
            print(exc)
    print(f"{len(seeds) - failed}/{len(seeds)} seeds passed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
