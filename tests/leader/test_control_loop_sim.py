"""The control-loop simulation (`bench.control_loop_sim`) at a tiny size: it converges through
the real cores (every task placed and reported running, the killed nodes' tasks replaced, the
returned nodes given work again), and, with the leader's CPU kept off the virtual clock, a seed
replays the same run."""

from __future__ import annotations

from collections import Counter

from bench.control_loop_sim import SimConfig, Simulation, report, run_scenario
from swarmlet.errors import ProposalTooLargeError
from swarmlet.state.commands import Command
from swarmlet.state.machine import ApplyResult
from swarmlet.state.model import TaskState
from swarmlet.wire import codec as wire

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


class EntryLimited(Simulation):
    """The simulation's leader with the Raft driver's refusal of a write over its limit (here
    32 KiB for `RaftDriver.propose`'s 16 MiB, so that a plan of a few thousand tasks is over)."""

    limit = 32 * 1024

    def __init__(self, config: SimConfig) -> None:
        super().__init__(config)
        self.refused = 0
        self.largest = 0

    async def propose(self, command: Command) -> ApplyResult:
        size = len(wire.encode(command))
        if size > self.limit:
            self.refused += 1
            raise ProposalTooLargeError(f"a write of {size} bytes is over the limit")
        self.largest = max(self.largest, size)
        return await super().propose(command)


def test_a_plan_over_the_entry_limit_is_committed_in_parts() -> None:
    """One service of 2,000 replicas: the first plan (about 115 kB) is over the entry limit.
    As one entry it was refused, deferred and planned again forever; in halves, every replica
    runs, each entry within the limit."""
    sim = EntryLimited(
        SimConfig(
            nodes=10,
            tasks=2_000,
            services=1,
            published_services=0,
            seed=7,
            charge_cpu=False,
            profile_top=0,
            phase_max_s=600.0,
        )
    )
    deploy = sim.deploy()
    assert deploy.converged
    assert len(running_by_slot(sim)) == 2_000
    assert sim.refused > 0  # the halving was needed, and done
    assert 0 < sim.largest <= sim.limit
