"""node.force_new_cluster: a surviving manager's storage becomes a one-voter group of the same
cluster, with every entry of its log applied, under a term above any it held (issue #18)."""

from __future__ import annotations

from pathlib import Path

import pytest

from swarmlet.node.force_new_cluster import force_new_cluster
from swarmlet.raft.quorum import encode_conf_change
from swarmlet.raft.storage import RaftStorage
from swarmlet.raft.types import (
    ConfChange,
    ConfChangeKind,
    ConfState,
    Entry,
    EntryKind,
    HardState,
    Snapshot,
    SnapshotMeta,
)
from swarmlet.state.commands import InitCluster, SetTargetVoters
from swarmlet.state.machine import ClusterState
from swarmlet.wire import codec as wire

ADD_W2 = ConfChange(ConfChangeKind.ADD_LEARNER, "w2")


def stored(tmp_path: Path) -> Path:
    """n1, n2, n3 voters and w1 a learner at the snapshot; then a committed write, a conf change
    adding learner w2, and a write past the commit index this node knew of."""
    state = ClusterState()
    state.apply(InitCluster("c1", 1.0, b"w", b"m", target_voters=3))
    conf = ConfState(voters=("n1", "n2", "n3"), learners=("w1",))
    path = tmp_path / "raft"
    with RaftStorage.open(path) as storage:
        storage.save(
            HardState(term=7, vote="n2", commit=3),
            [
                Entry(6, 2, data=wire.encode(SetTargetVoters(5))),
                Entry(
                    7,
                    3,
                    EntryKind.CONF_CHANGE,
                    encode_conf_change(ConfChange(ConfChangeKind.ADD_LEARNER, "w2")),
                ),
                Entry(7, 4),  # a leader's no-op
                Entry(7, 5, data=wire.encode(SetTargetVoters(7))),  # not known committed
            ],
            Snapshot(SnapshotMeta(index=1, term=5, conf=conf), state.snapshot()),
        )
    return path


def test_the_survivor_is_the_only_voter_of_the_same_state_under_a_new_term(tmp_path: Path) -> None:
    path = stored(tmp_path)
    with RaftStorage.open(path) as storage:
        forced = force_new_cluster(storage, "n1")
    assert (forced.index, forced.term, forced.applied_uncommitted) == (6, 8, 2)
    assert forced.previous_voters == ("n1", "n2", "n3")
    with RaftStorage.open(path) as storage:  # what the agent will read
        hard_state, snapshot, entries = storage.load()
    assert hard_state == HardState(term=8, vote=None, commit=6)
    assert snapshot.meta == SnapshotMeta(
        index=6, term=8, conf=ConfState(voters=("n1",), learners=("n2", "n3", "w1", "w2"))
    )
    assert entries == []
    state = ClusterState.restore(snapshot.data)
    assert (state.cluster_id, state.target_voters) == ("c1", 7)  # the uncommitted write too


def test_a_node_that_is_not_in_the_group_is_refused_and_nothing_changes(tmp_path: Path) -> None:
    path = stored(tmp_path)
    with RaftStorage.open(path) as storage, pytest.raises(ValueError, match="not a member"):
        force_new_cluster(storage, "stranger")
    with RaftStorage.open(path) as storage:
        hard_state, snapshot, entries = storage.load()
    assert (hard_state.term, snapshot.meta.index, len(entries)) == (7, 1, 4)
