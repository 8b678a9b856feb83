"""The control-loop simulation (`bench.control_loop_sim`) at a tiny size, run twice: with the
leader's scoped passes (`LeaderDuties.orchestration_pass`) and with a full pass every time (what
the leader did before #16). The runs are identical, entry for entry: the scoped passes change what
the leader spends, never what it decides."""

from __future__ import annotations

import pytest

from bench.control_loop_sim import run_scenario
from swarmlet.leader.depends_on import hold_back_dependents
from swarmlet.leader.duties import LeaderDuties
from swarmlet.leader.observation import observe
from swarmlet.leader.orchestrator.core import Plan, plan
from tests.leader.test_control_loop_sim import TINY


def full_pass(self: LeaderDuties, now: float) -> Plan:
    observed = observe(self.host)
    return plan(hold_back_dependents(self.host.state, observed), observed, now, self._ids)


def test_scoped_passes_replay_the_run_of_full_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    scoped, scoped_sim = run_scenario(TINY)
    assert scoped_sim.duties.passes > 0 and scoped_sim.duties.pass_cpu_s > 0
    monkeypatch.setattr(LeaderDuties, "orchestration_pass", full_pass)
    full, full_sim = run_scenario(TINY)
    for name, phase in scoped.phases.items():
        again = full.phases[name]
        assert (phase.virtual_s, phase.entries, phase.entry_bytes, phase.statuses) == (
            again.virtual_s,
            again.entries,
            again.entry_bytes,
            again.statuses,
        ), name
    assert scoped.moves == full.moves
    assert scoped_sim.state.tasks == full_sim.state.tasks
