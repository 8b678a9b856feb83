"""The control-loop simulation (`bench.control_loop_sim`) at a tiny size: it converges through
the real cores (every task placed and reported running, the killed nodes' tasks replaced, the
returned nodes given work again), and, with the leader's CPU kept off the virtual clock, a seed
replays the same run."""

from __future__ import annotations

from collections import Counter

from bench.control_loop_sim import SimConfig, Simulation, report, run_scenario
from swarmlet.state.model import TaskState

TINY = SimConfig(nodes=20, tasks=200, services=4, seed=3, charge_cpu=False, profile_top=0)


def running_by_slot(sim: Simulation) -> dict[tuple[str, int], str]:
    """(service, slot) -> the node whose committed status says its task runs."""
    found: dict[tuple[str, int], str] = {}
    for task in sim.state.tasks.values():
        status = sim.state.task_status.get(task.id)
        if task.desired_state is TaskState.RUNNING and status and status.state is TaskState.RUNNING:
            assert (task.service_id, task.slot) not in found, f"slot of {task.id} runs twice"
            found[(task.service_id, task.slot)] = task.node_id
    return found


def test_tiny_cluster_deploys_reschedules_and_rebalances() -> None:
    result, sim = run_scenario(TINY)

    assert list(result.phases) == ["deploy", "idle", "single change", "kill", "return"]
    assert all(p.converged for p in result.phases.values())
    slots = running_by_slot(sim)
    assert len(slots) == TINY.tasks
    assert sorted(Counter(s for s, _ in slots).values()) == [50, 50, 50, 50]

    # The killed nodes' tasks were written off and every one of their slots runs elsewhere.
    assert len(result.killed) == 2
    assert result.lost_tasks
    for task_id in result.lost_tasks:
        task = sim.state.tasks.get(task_id)
        assert task is None or task.state is TaskState.ORPHANED, task_id
    # Rebalancing gave the returned nodes work again: each service is spread within one
    # replica over all 20 nodes (50 replicas: 2 or 3 on each), the returned ones included.
    assert result.moves > 0
    per_node = Counter((service_id, nid) for (service_id, _), nid in slots.items())
    for service_id in sim.state.services:
        counts = [per_node[(service_id, nid)] for nid in sim.nodes]
        assert min(counts) == 2 and max(counts) == 3, (service_id, counts)

    # Reports and entries were counted, and the single change's pass was measured.
    deploy = result.phases["deploy"]
    assert deploy.entries >= TINY.services + 1  # the service creates, then the first plan
    assert deploy.statuses >= 2 * TINY.tasks  # STARTING and RUNNING, at the least once each
    assert deploy.report_bytes > 0
    assert result.single_change is not None
    assert result.single_change.commands >= 1
    assert "control loop simulation: 20 nodes" in report(result)


def test_same_seed_replays_the_same_run() -> None:
    first, _ = run_scenario(TINY)
    second, _ = run_scenario(TINY)
    for name, phase in first.phases.items():
        again = second.phases[name]
        assert (phase.virtual_s, phase.entries, phase.entry_bytes, phase.reports) == (
            again.virtual_s,
            again.entries,
            again.entry_bytes,
            again.reports,
        ), name
    assert first.killed == second.killed
    assert first.moves == second.moves


def test_one_worker_runs_a_thousand_tasks() -> None:
    """Issue #16: 1,000 tasks on one node. The manager's node is drained, so the one worker runs
    every replica; its statuses reach the leader as reports of a bounded size whatever the node
    runs, and are committed in batches: a status costs the same bytes at 1,000 tasks as at one."""
    sim = Simulation(
        SimConfig(
            nodes=2,
            tasks=1000,
            services=2,
            seed=5,
            charge_cpu=False,
            profile_top=0,
            drain_manager=True,
        )
    )
    deploy = sim.deploy()
    assert deploy.converged
    worker = next(nid for nid in sim.nodes if nid != sim.leader_id)
    assert Counter(running_by_slot(sim).values()) == {worker: 1000}
    assert deploy.statuses >= 2000  # STARTING and RUNNING, at the least once each
    assert deploy.report_bytes / deploy.statuses < 200  # bytes per status, not per node
    assert deploy.entries < deploy.statuses / 10  # committed in batches
