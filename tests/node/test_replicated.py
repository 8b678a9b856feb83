"""node.replicated: `ClusterState` as the Raft driver's state machine. Entries decode into
commands, results go back unchanged, an undecodable entry is refused without touching the state,
and snapshots round-trip."""

from __future__ import annotations

import logging

import pytest

from swarmlet.node.replicated import ReplicatedState, encode_command
from swarmlet.raft.state_machine import StateMachine
from swarmlet.state.commands import InitCluster, SetTargetVoters
from swarmlet.state.machine import ApplyResult

INIT = InitCluster("c1", 1.0, b"w", b"m")


def test_it_is_a_raft_state_machine() -> None:
    machine: StateMachine[ApplyResult] = ReplicatedState()
    assert machine.snapshot_later()() == ReplicatedState().snapshot_later()()


def test_a_snapshot_is_of_the_state_when_it_was_taken() -> None:
    # The driver encodes it in a thread while the state moves on.
    replicated = ReplicatedState()
    replicated.apply(2, encode_command(INIT))
    encode = replicated.snapshot_later()
    taken = replicated.snapshot_later()()
    replicated.apply(3, encode_command(SetTargetVoters(5)))
    assert encode() == taken != replicated.snapshot_later()()


def test_an_entry_applies_its_command_and_answers_with_the_result() -> None:
    replicated = ReplicatedState()
    result = replicated.apply(2, encode_command(INIT))
    assert result.ok
    assert replicated.state.cluster_id == "c1"


def test_a_refused_command_answers_with_its_reason() -> None:
    replicated = ReplicatedState()
    replicated.apply(2, encode_command(INIT))
    result = replicated.apply(3, encode_command(SetTargetVoters(2)))  # even counts are refused
    assert not result.ok and result.error


def test_an_undecodable_entry_is_refused_and_changes_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    replicated = ReplicatedState()
    replicated.apply(2, encode_command(INIT))
    before = replicated.snapshot_later()()
    with caplog.at_level(logging.ERROR):
        result = replicated.apply(7, b"\xc1 not msgpack")
    assert not result.ok and result.error.startswith("undecodable command:")
    assert replicated.snapshot_later()() == before
    assert "committed entry 7 is not a valid command" in caplog.text


def test_a_snapshot_restores_the_same_state() -> None:
    replicated = ReplicatedState()
    replicated.apply(2, encode_command(INIT))
    copy = ReplicatedState()
    copy.restore(replicated.snapshot_later()())
    assert copy.state.cluster_id == "c1"
    assert copy.snapshot_later()() == replicated.snapshot_later()()
    copy.restore(b"")
    assert copy.state.cluster_id == ""
