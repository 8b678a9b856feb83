"""Scheduler throughput: place a batch of tasks over many nodes (called by bench/ and a test)."""

from __future__ import annotations

import time

from swarmlet.leader.scheduler import ObservedNode, schedule
from swarmlet.state.model import Resources, Service, ServiceSpec, Task
from tests.leader.orchestrator.cluster import CPU, GIB, make_state


def run_throughput(
    nodes: int = 1_000, tasks: int = 100_000, services: int = 100
) -> tuple[int, float]:
    """Schedule `tasks` pending tasks of `services` services over `nodes` nodes in one batch.
    Returns (tasks placed, seconds spent in `schedule`)."""
    state = make_state(nodes, resources=Resources(64 * CPU, 256 * GIB))
    for s in range(services):
        sid = f"s{s:04d}"
        state.services[sid] = Service(
            sid, ServiceSpec(name=sid, image="x", reservations=Resources(CPU // 100, 1 << 20))
        )
    per_service = tasks // services
    batch = [
        Task(id=f"{s:04d}-{i}", service_id=f"s{s:04d}", slot=i + 1, spec_version=1)
        for s in range(services)
        for i in range(per_service)
    ]
    observed = {nid: ObservedNode(nid, ready=True) for nid in state.nodes}
    started = time.perf_counter()
    decisions = schedule(state, observed, batch)
    elapsed_s = time.perf_counter() - started
    return sum(1 for d in decisions if d.node_id), elapsed_s
