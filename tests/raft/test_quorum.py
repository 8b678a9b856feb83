"""Table tests of the pure membership maths (swarmlet.raft.quorum) and the log."""

from __future__ import annotations

import pytest

from swarmlet.raft.log import RaftLog
from swarmlet.raft.quorum import (
    apply_conf_change,
    committed_index,
    decode_conf_change,
    encode_conf_change,
    has_quorum,
    quorum_size,
    refusal_reason,
)
from swarmlet.raft.types import ConfChange, ConfChangeKind, ConfState, Entry, Snapshot, SnapshotMeta

ADD_VOTER, ADD_LEARNER, REMOVE = (
    ConfChangeKind.ADD_VOTER,
    ConfChangeKind.ADD_LEARNER,
    ConfChangeKind.REMOVE,
)


@pytest.mark.parametrize(("voters", "size"), [(1, 1), (2, 2), (3, 2), (4, 3), (5, 3), (7, 4)])
def test_quorum_is_a_strict_majority(voters: int, size: int) -> None:
    assert quorum_size(voters) == size


@pytest.mark.parametrize(
    ("match", "voters", "index"),
    [
        ({"a": 5}, ["a"], 5),
        ({"a": 5, "b": 3, "c": 1}, ["a", "b", "c"], 3),
        ({"a": 5, "b": 3}, ["a", "b", "c"], 3),  # c unknown: counts as 0
        ({"a": 9, "b": 9, "c": 1, "d": 1}, ["a", "b", "c", "d"], 1),  # 2 of 4 is no majority
        ({"a": 9, "b": 9, "c": 7, "d": 1}, ["a", "b", "c", "d"], 7),
        ({"a": 9, "l": 9, "b": 1}, ["a", "b"], 1),  # learner l never counts
        ({}, [], 0),
    ],
)
def test_committed_index_is_the_quorum_th_largest_match(
    match: dict[str, int], voters: list[str], index: int
) -> None:
    assert committed_index(match, voters) == index


def test_has_quorum_counts_only_voters() -> None:
    assert has_quorum(["a", "b", "c"], ["a", "b"])
    assert not has_quorum(["a", "b", "c"], ["a", "x", "y"])


@pytest.mark.parametrize(
    ("change", "after"),
    [
        (ConfChange(ADD_VOTER, "d"), ConfState(("a", "b", "d"), ("c",))),
        (ConfChange(ADD_VOTER, "c"), ConfState(("a", "b", "c"), ())),  # promote
        (ConfChange(ADD_LEARNER, "a"), ConfState(("b",), ("a", "c"))),  # demote
        (ConfChange(REMOVE, "c"), ConfState(("a", "b"), ())),
        (ConfChange(REMOVE, "b"), ConfState(("a",), ("c",))),
    ],
)
def test_apply_conf_change(change: ConfChange, after: ConfState) -> None:
    assert apply_conf_change(ConfState(("a", "b"), ("c",)), change) == after


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (ConfChange(ADD_VOTER, "a"), "already a voter"),
        (ConfChange(ADD_LEARNER, "c"), "already a learner"),
        (ConfChange(REMOVE, "z"), "not a member"),
        (ConfChange(ADD_VOTER, ""), "empty"),
        (ConfChange(ADD_VOTER, "c"), None),
    ],
)
def test_refusal_reason(change: ConfChange, reason: str | None) -> None:
    got = refusal_reason(ConfState(("a", "b"), ("c",)), change)
    assert (got is None) if reason is None else (reason in (got or ""))


def test_last_voter_is_never_removed_or_demoted() -> None:
    conf = ConfState(("a",), ("c",))
    assert refusal_reason(conf, ConfChange(REMOVE, "a")) is not None
    assert refusal_reason(conf, ConfChange(ADD_LEARNER, "a")) is not None


@pytest.mark.parametrize("kind", list(ConfChangeKind))
def test_conf_change_encoding_round_trips(kind: ConfChangeKind) -> None:
    change = ConfChange(kind, "node-ü")
    assert decode_conf_change(encode_conf_change(change)) == change


def test_decoding_garbage_conf_change_raises() -> None:
    with pytest.raises(ValueError, match="empty"):
        decode_conf_change(b"")
    with pytest.raises(ValueError, match="not a valid ConfChangeKind"):
        decode_conf_change(b"\x09x")


def test_log_terms_and_compaction() -> None:
    log = RaftLog(Snapshot(SnapshotMeta(3, 2)), [Entry(2, 4), Entry(3, 5), Entry(3, 6)])
    assert (log.first_index, log.last_index, log.last_term) == (4, 6, 3)
    assert [log.term_at(i) for i in (2, 3, 4, 6, 7)] == [None, 2, 2, 3, None]
    assert log.last_index_of_term(2, 7) == 4
    assert log.last_index_of_term(9, 7) == 0
    assert log.first_index_of_term_at(6, 0) == 5
    log.compact(Snapshot(SnapshotMeta(5, 3)))
    assert log.entries() == (Entry(3, 6),)
    with pytest.raises(ValueError, match="does not fit"):
        log.append([Entry(3, 9)])  # gap
    with pytest.raises(ValueError, match="decrease"):
        log.append([Entry(2, 7)])  # term goes back
