"""swarmlet.leader.voters: the leader's voter policy (`next_conf_change`, `desired_voter_count`).

Nodes are named by role: `L` the leader (a manager), `m*` managers, `w*` workers. Unless a test
says otherwise, every worker is of protocol 2, a release before workers' sessions: a learner.
"""

from __future__ import annotations

from collections.abc import Iterable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from swarmlet.leader.voters import desired_voter_count, next_conf_change
from swarmlet.raft.types import ConfChange, ConfChangeKind, ConfState
from swarmlet.state.model import Node, Role
from swarmlet.wire.protocol_version import ONCE_SINCE

ADD_VOTER, ADD_LEARNER, REMOVE = (
    ConfChangeKind.ADD_VOTER,
    ConfChangeKind.ADD_LEARNER,
    ConfChangeKind.REMOVE,
)
GRACE_S = 30.0
NOW = 1000.0
OLD, SESSIONS = 2, 3  # protocols: before workers' sessions, and the first with them


def nodes_of(ids: Iterable[str]) -> dict[str, Node]:
    return {
        i: Node(i, i, f"{i}:1", i, Role.WORKER if i.startswith("w") else Role.MANAGER) for i in ids
    }


def change(
    voters: Iterable[str],
    learners: Iterable[str] = (),
    *,
    nodes: Iterable[str] | None = None,
    down: dict[str, float] | None = None,
    target: int = 3,
    leader: str = "L",
    protocols: dict[str, int] | None = None,
    once_applied: bool = False,
) -> ConfChange | None:
    """`nodes` defaults to every member; `down` maps node -> seconds down (not alive);
    `protocols`: each node's known release (default: every worker's is 2)."""
    conf = ConfState(tuple(voters), tuple(learners))
    all_nodes = nodes_of(nodes if nodes is not None else [*conf.voters, *conf.learners])
    if protocols is None:
        protocols = {n: OLD for n in all_nodes if n.startswith("w")}
    down = down or {}
    alive = set(all_nodes) - set(down)
    down_since = {n: NOW - seconds for n, seconds in down.items()}
    return next_conf_change(
        conf,
        all_nodes,
        alive,
        down_since,
        NOW,
        leader_id=leader,
        target_voters=target,
        grace_s=GRACE_S,
        protocols=protocols,
        session_protocol=SESSIONS,
        once_applied=once_applied,
    )


@pytest.mark.parametrize(
    ("target", "healthy", "want"),
    [
        (3, 0, 1),
        (3, 1, 1),
        (3, 2, 1),
        (3, 3, 3),
        (3, 4, 3),
        (3, 9, 3),
        (5, 4, 3),
        (5, 5, 5),
        (5, 6, 5),
        (7, 6, 5),
        (7, 7, 7),
        (1, 5, 1),
    ],
)
def test_desired_voter_count_is_the_largest_odd_number_within_target_and_managers(
    target: int, healthy: int, want: int
) -> None:
    assert desired_voter_count(target, healthy) == want


@pytest.mark.parametrize(
    ("case", "kwargs", "expected"),
    [
        ("join becomes learner", {"voters": ["L"], "nodes": ["L", "w1"]}, (ADD_LEARNER, "w1")),
        (
            "manager join is learner first",
            {"voters": ["L"], "nodes": ["L", "m1"]},
            (ADD_LEARNER, "m1"),
        ),
        ("promote 2nd manager? no: 2 is even", {"voters": ["L"], "learners": ["m1"]}, None),
        ("promote to reach 3", {"voters": ["L"], "learners": ["m1", "m2"]}, (ADD_VOTER, "m1")),
        ("promote the next one", {"voters": ["L", "m1"], "learners": ["m2"]}, (ADD_VOTER, "m2")),
        ("stop at target", {"voters": ["L", "m1", "m2"], "learners": ["m3"]}, None),
        (
            "5 with target 5",
            {"voters": ["L", "m1", "m2"], "learners": ["m3", "m4"], "target": 5},
            (ADD_VOTER, "m3"),
        ),
        (
            "4 managers, target 5: 3",
            {"voters": ["L", "m1", "m2"], "learners": ["m3"], "target": 5},
            None,
        ),
        ("workers never promoted", {"voters": ["L"], "learners": ["w1", "w2", "w3"]}, None),
        (
            "worker voter demoted",
            {"voters": ["L", "w1", "m1"], "learners": ["m2"]},
            (ADD_LEARNER, "w1"),
        ),
        (
            "removed node removed",
            {"voters": ["L", "m1", "m2"], "learners": ["w1"], "nodes": ["L", "m1", "m2"]},
            (REMOVE, "w1"),
        ),
        (
            "removed voter removed",
            {"voters": ["L", "m1", "m2"], "nodes": ["L", "m1"]},
            (REMOVE, "m2"),
        ),
        (
            "target lowered",
            {"voters": ["L", "m1", "m2", "m3", "m4"], "target": 3},
            (ADD_LEARNER, "m1"),
        ),
        (
            "target lowered, next",
            {"voters": ["L", "m2", "m3", "m4"], "learners": ["m1"], "target": 3},
            (ADD_LEARNER, "m2"),
        ),
        ("leader worker not demoted", {"voters": ["w0"], "learners": [], "leader": "w0"}, None),
        ("lone worker voter kept", {"voters": ["w1"], "nodes": ["w1"], "leader": "w1"}, None),
        (
            "down within grace: kept",
            {"voters": ["L", "m1", "m2"], "learners": ["m3"], "down": {"m2": GRACE_S - 1}},
            None,
        ),
        (
            "down beyond grace: promote standby",
            {"voters": ["L", "m1", "m2"], "learners": ["m3"], "down": {"m2": GRACE_S}},
            (ADD_VOTER, "m3"),
        ),
        (
            "then demote the dead",
            {"voters": ["L", "m1", "m2", "m3"], "down": {"m2": GRACE_S + 5}},
            (ADD_LEARNER, "m2"),
        ),
        (
            "dead standby not promoted",
            {"voters": ["L", "m1"], "learners": ["m3"], "down": {"m3": 1.0}},
            None,
        ),
        ("converged", {"voters": ["L", "m1", "m2"], "learners": ["m3", "w1", "w2"]}, None),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_voter_policy_table(
    case: str, kwargs: dict[str, object], expected: tuple[ConfChangeKind, str] | None
) -> None:
    got = change(**kwargs)  # type: ignore[arg-type]
    assert (None if got is None else (got.kind, got.node_id)) == expected, case


def test_the_leader_is_never_removed_even_when_gone_from_the_nodes() -> None:
    got = change(["L", "m1", "m2"], ["w1"], nodes=["m1", "m2"])
    assert got is None or got.node_id != "L"


def test_the_leader_is_never_demoted_when_the_target_is_lowered() -> None:
    assert change(["L", "m1", "m2"], target=1) == ConfChange(ADD_LEARNER, "m1")
    assert change(["L", "m2"], ["m1"], target=1) == ConfChange(ADD_LEARNER, "m2")
    assert change(["L"], ["m1", "m2"], target=1) is None


def test_the_leader_is_never_demoted_when_it_is_down_beyond_grace() -> None:
    # (a leader's own view never says it is down, but the policy must not act on it either)
    got = change(["L", "m1", "m2"], ["m3"], down={"L": 999.0})
    assert got is None or got.node_id != "L" or got.kind is not ADD_LEARNER


@pytest.mark.parametrize(
    ("voters", "down", "target"),
    [(["L", "m1", "m2"], {"m2": 60.0}, 3), (["L", "m1", "m2", "m3", "m4"], {"m4": 60.0}, 5)],
)
def test_a_long_dead_voter_without_a_standby_is_demoted(
    voters: list[str], down: dict[str, float], target: int
) -> None:
    # Decision (membership.py docstring): a voter dead past the grace period counts for nothing
    # and only inflates the quorum, so it is demoted; it is promoted again once it is back.
    got = change(voters, ["w1"], down=down, target=target)
    assert got is not None
    assert got.kind is ADD_LEARNER
    assert got.node_id in down


def test_a_leader_missing_from_the_nodes_does_not_crash_the_policy() -> None:
    change(["L", "m1", "m2"], nodes=["m1", "m2"])


# ------------------------------------------------------------------------------- property


def _apply(conf: ConfState, c: ConfChange) -> ConfState:
    voters, learners = list(conf.voters), list(conf.learners)
    for group in (voters, learners):
        if c.node_id in group:
            group.remove(c.node_id)
    if c.kind is ADD_VOTER:
        voters.append(c.node_id)
    elif c.kind is ADD_LEARNER:
        learners.append(c.node_id)
    return ConfState(tuple(voters), tuple(learners))


_member_ids = [f"m{i}" for i in range(1, 7)] + [f"w{i}" for i in range(1, 4)]


@st.composite
def _clusters(draw: st.DrawFn) -> tuple[ConfState, list[str], dict[str, float], int]:
    members = draw(st.lists(st.sampled_from(_member_ids), unique=True, max_size=8))
    voters = ["L"] + [m for m in members if draw(st.booleans())]
    learners = [m for m in members if m not in voters]
    cluster = draw(st.lists(st.sampled_from(_member_ids), unique=True, max_size=8))
    down = {
        n: draw(st.sampled_from((1.0, GRACE_S, 100.0)))
        for n in cluster
        if draw(st.integers(0, 3)) == 0
    }
    target = draw(st.sampled_from((1, 3, 5, 7)))
    return ConfState(tuple(voters), tuple(learners)), ["L", *cluster], down, target


@pytest.mark.parametrize("workers_protocol", [OLD, SESSIONS])
@settings(max_examples=300, deadline=None)
@given(cluster=_clusters())
def test_applying_the_changes_converges_quickly_and_keeps_a_voter(
    cluster: tuple[ConfState, list[str], dict[str, float], int], workers_protocol: int
) -> None:
    conf, node_ids, down, target = cluster
    nodes = nodes_of(node_ids)
    protocols = {n: workers_protocol for n in nodes if n.startswith("w")}
    alive = set(nodes) - set(down)
    down_since = {n: NOW - s for n, s in down.items()}
    bound = 3 * (len(conf.voters) + len(conf.learners) + len(nodes)) + 2
    for _ in range(bound):
        c = next_conf_change(
            conf,
            nodes,
            alive,
            down_since,
            NOW,
            leader_id="L",
            target_voters=target,
            grace_s=GRACE_S,
            protocols=protocols,
            session_protocol=SESSIONS,
        )
        if c is None:
            break
        before = conf
        conf = _apply(conf, c)
        assert "L" in conf.voters
        if c.kind is ADD_VOTER:
            assert c.node_id in alive
            assert nodes[c.node_id].role is Role.MANAGER
        if c.kind is ADD_VOTER or c.node_id not in alive:
            # promotions and demotions of dead voters never lower the failures tolerated
            assert _tolerance(conf, alive) >= _tolerance(before, alive)
    else:
        pytest.fail(f"no convergence in {bound} steps: {conf}")
    # Converged: every node is a member (but workers served by sessions), nothing else is, no
    # worker votes, target respected.
    members = {n for n in nodes if workers_protocol == OLD or nodes[n].role is Role.MANAGER}
    assert set(conf.voters) | set(conf.learners) == members | {"L"}
    assert all(nodes[v].role is Role.MANAGER for v in conf.voters)
    assert len(conf.voters) <= target


def _tolerance(conf: ConfState, alive: set[str]) -> int:
    """How many more voters may fail before the group loses its quorum."""
    quorum = len(conf.voters) // 2 + 1
    return sum(1 for v in conf.voters if v in alive) - quorum


# ------------------------------------------------------------------ workers' sessions (#16)


@pytest.mark.parametrize(
    ("case", "kwargs", "expected"),
    [
        (
            "a worker of a release with sessions is never added",
            {"voters": ["L"], "nodes": ["L", "w1"], "protocols": {"w1": SESSIONS}},
            None,
        ),
        (
            "nor one whose release is not known yet",
            {"voters": ["L"], "nodes": ["L", "w1"], "protocols": {}},
            None,
        ),
        (
            "an older worker still learns the log",
            {"voters": ["L"], "nodes": ["L", "w1"], "protocols": {"w1": OLD}},
            (ADD_LEARNER, "w1"),
        ),
        (
            "a learner worker that speaks sessions leaves the group",
            {"voters": ["L"], "learners": ["w1"], "protocols": {"w1": SESSIONS}},
            (REMOVE, "w1"),
        ),
        (
            "a learner worker of an unknown release stays",
            {"voters": ["L"], "learners": ["w1"], "protocols": {}},
            None,
        ),
        (
            "a worker voter is demoted first, removed next",
            {"voters": ["L", "w1", "m1"], "protocols": {"w1": SESSIONS}},
            (ADD_LEARNER, "w1"),
        ),
        (
            "a manager is added whatever its release",
            {"voters": ["L"], "nodes": ["L", "m1"], "protocols": {}},
            (ADD_LEARNER, "m1"),
        ),
        (
            "a promoted worker (now a manager) is added",
            {"voters": ["L"], "nodes": ["L", "m1"], "protocols": {"m1": SESSIONS}},
            (ADD_LEARNER, "m1"),
        ),
    ],
)
def test_workers_that_speak_sessions_are_not_in_the_group(
    case: str, kwargs: dict[str, object], expected: tuple[ConfChangeKind, str] | None
) -> None:
    got = change(**kwargs)  # type: ignore[arg-type]
    assert (got.kind, got.node_id) == expected if got is not None else expected is None, case


ONCE_CASES = [
    (
        "a promoted manager of an older release is not added",
        {"voters": ["L"], "nodes": ["L", "m1"], "protocols": {"m1": ONCE_SINCE - 1}},
        None,
    ),
    (
        "a manager of an older release that is a member leaves",
        {"voters": ["L", "m1", "m2"], "protocols": {"m1": ONCE_SINCE - 1, "m2": ONCE_SINCE}},
        (REMOVE, "m1"),
    ),
    (
        "a worker too old for sessions is not added as a learner",
        {"voters": ["L"], "nodes": ["L", "w1"], "protocols": {"w1": OLD}},
        None,
    ),
    (
        "a manager whose release is not known yet is added (and leaves once it is known old)",
        {"voters": ["L"], "nodes": ["L", "m1"], "protocols": {}},
        (ADD_LEARNER, "m1"),
    ),
    (
        "a manager of this release is added",
        {"voters": ["L"], "nodes": ["L", "m1"], "protocols": {"m1": ONCE_SINCE}},
        (ADD_LEARNER, "m1"),
    ),
]


@pytest.mark.parametrize(("case", "kwargs", "expected"), ONCE_CASES, ids=[c[0] for c in ONCE_CASES])
def test_once_a_once_is_applied_no_node_that_cannot_apply_it_is_in_the_group(
    case: str, kwargs: dict[str, object], expected: tuple[ConfChangeKind, str] | None
) -> None:
    """Found by a review: a worker of an older release, promoted after the upgrade, was added
    as a learner, and its replica refused every `Once` of the log (and any snapshot)."""
    got = change(**kwargs, once_applied=True)  # type: ignore[arg-type]
    assert (got.kind, got.node_id) == expected if got is not None else expected is None, case
    if expected is None or expected[0] is REMOVE:  # before any Once: as it always was
        assert change(**kwargs) != got  # type: ignore[arg-type]
