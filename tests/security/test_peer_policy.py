"""security.peer_policy: what an authenticated certificate is still worth against the replicated
state (removed, expired, another cluster, a role change since it was issued), and what its holder
may ask for; and the state machine's side of it: `cert_generation` and the revocation list."""

from __future__ import annotations

import dataclasses

import pytest

from swarmlet.certs import PeerIdentity
from swarmlet.security import peer_policy
from swarmlet.state.commands import AddNode, Command, RemoveNode, UpdateNode
from swarmlet.state.machine import ClusterState
from swarmlet.state.model import Availability, Node, Role, Task

CLUSTER = "c1"
NOW = 1_000_000.0


def node(node_id: str, role: Role, generation: int = 0) -> Node:
    return Node(
        node_id,
        node_id,
        f"{node_id}:1",
        "10.0.0.1",
        role,
        public_key=node_id.encode(),
        sealed_manager_key=b"blob" if role is Role.MANAGER else b"",
        cert_generation=generation,
    )


def world() -> ClusterState:
    """m1: a manager of generation 2 (promoted once, demoted, promoted again); w1: a worker
    of generation 1 (a demoted manager); w2: a worker; gone: a removed node. t1 runs on w1."""
    state = ClusterState()
    state.cluster_id = CLUSTER
    for n in (node("m1", Role.MANAGER, 2), node("w1", Role.WORKER, 1), node("w2", Role.WORKER)):
        state.nodes[n.id] = n
    state.removed_nodes["gone"] = NOW - 10
    state.tasks["t1"] = Task("t1", "s1", 1, 1, node_id="w1")
    return state


def peer(
    node_id: str,
    role: str = "worker",
    generation: int = 0,
    *,
    not_after: float = NOW + 60,
    cluster_id: str = CLUSTER,
) -> PeerIdentity:
    return PeerIdentity(node_id, role, generation, not_after, cluster_id, b"k" * 32)


# ------------------------------------------------------------------------------ admit


@pytest.mark.parametrize(
    ("certificate", "refusal"),
    [
        (peer("m1", "manager", 2, cluster_id="c2"), "other_cluster"),
        (peer("gone"), "removed"),
        (peer("gone", "manager", 5), "removed"),  # whatever else its certificate says
        (peer("w2", not_after=NOW - 0.001), "expired"),
        (peer("m1", "manager", 2, not_after=NOW - 1), "expired"),
    ],
)
def test_admit_refuses_with_a_word_that_says_why(certificate: PeerIdentity, refusal: str) -> None:
    assert peer_policy.admit(certificate, world(), CLUSTER, NOW) == refusal


@pytest.mark.parametrize(
    "certificate",
    [
        peer("m1", "manager", 2),  # as its record says
        peer("w2"),
        peer("w2", not_after=NOW),  # the last instant of its validity
        peer("m1", "manager", 3),  # a newer generation: a change this node has not applied yet
        peer("new", "worker", 0),  # joined: not in this node's state yet
        peer("w1", "worker", 0),  # a worker's certificate of an older generation stays a worker's
    ],
)
def test_admit_takes_a_certificate_as_it_is_when_nothing_since_supersedes_it(
    certificate: PeerIdentity,
) -> None:
    assert peer_policy.admit(certificate, world(), CLUSTER, NOW) == certificate


@pytest.mark.parametrize(
    ("certificate", "why"),
    [
        (peer("w1", "manager", 0), "demoted since: its record is a worker's of generation 1"),
        (peer("m1", "manager", 1), "demoted and promoted again since: generation 2"),
        (peer("m1", "manager", 0), "two role changes ago"),
        # The CA key outlives demotions and removals: what the state does not list as a
        # manager is not taken for one on a certificate's word, whatever its generation.
        (peer("w1", "manager", 1000), "minted by the demoted manager for its own id"),
        (peer("w2", "manager", 1), "a promotion this node has not applied yet"),
        (peer("new", "manager", 0), "an id this node's state does not list"),
    ],
)
def test_admit_takes_a_manager_certificate_the_state_does_not_back_as_a_workers(
    certificate: PeerIdentity, why: str
) -> None:
    admitted = peer_policy.admit(certificate, world(), CLUSTER, NOW)
    assert admitted == dataclasses.replace(certificate, role="worker"), why
    assert isinstance(admitted, PeerIdentity) and not admitted.is_manager


# ------------------------------------------------------------------------------ requests


@pytest.mark.parametrize(
    ("certificate", "counts"),
    [
        (peer("new", "manager", 0), True),  # a manager's join this replica has not applied yet
        (peer("w2", "manager", 1), True),  # a promotion it has not applied yet
        (peer("w2", "manager", 0), False),  # a generation its record already has: minted
        (peer("w1", "manager", 1), False),  # the demotion it applied: a voter only until the
        # leader takes it out of the group, and a worker to this node meanwhile
        (peer("w1", "worker", 2), False),  # a worker's certificate stays a worker's
    ],
)
def test_a_voter_of_the_log_the_replica_does_not_list_as_a_manager_yet(
    certificate: PeerIdentity, counts: bool
) -> None:
    """A restart replays what the node knew committed: its log's configuration may name voters
    its replica lists as workers or not at all. The log says they are managers; a certificate
    minted for a node that is no voter there gets nothing from it."""
    voters = ("m1", "new", "w1", "w2")
    admitted = peer_policy.admit(certificate, world(), CLUSTER, NOW, voters=voters)
    assert isinstance(admitted, PeerIdentity)
    assert admitted.is_manager is counts
    assert peer_policy.admit(certificate, world(), CLUSTER, NOW) == dataclasses.replace(
        certificate, role="worker"
    )  # and without the log's word, none of them


def test_a_replica_that_lists_no_node_takes_a_managers_certificate_at_its_word() -> None:
    """A manager that joined, before its first append: nothing else can vouch for its leader."""
    empty = ClusterState()
    empty.cluster_id = CLUSTER
    certificate = peer("m1", "manager", 2)
    assert peer_policy.admit(certificate, empty, CLUSTER, NOW) == certificate


@pytest.mark.parametrize(
    ("certificate", "expected"),
    [
        (peer("m1", "manager", 2), True),
        (peer("w1", "manager", 1), False),  # the state says worker: a demotion applied here wins
        (peer("w2", "manager", 1), False),  # a promotion not applied here is not taken on trust
        (peer("m1", "worker", 2), False),  # the record says manager; the certificate does not
        (peer("new", "manager", 0), False),  # not in this node's state
    ],
)
def test_is_manager_needs_both_the_certificate_and_the_state(
    certificate: PeerIdentity, expected: bool
) -> None:
    assert peer_policy.is_manager(certificate, world()) is expected


@pytest.mark.parametrize(
    ("certificate", "task_id", "expected"),
    [
        (peer("m1", "manager", 2), "t1", True),  # managers read every task's data
        (peer("m1", "manager", 2), "t9", True),
        (peer("w1", "worker", 1), "t1", True),  # the node that runs it
        (peer("w2"), "t1", False),  # another node's task
        (peer("w2"), "t9", False),  # no such task
        (peer("w2", "manager", 1), "t1", False),  # a manager certificate the state does not back
    ],
)
def test_may_read_task_only_for_managers_and_the_node_that_runs_it(
    certificate: PeerIdentity, task_id: str, expected: bool
) -> None:
    assert peer_policy.may_read_task(certificate, world(), task_id) is expected


# ------------------------------------------------------------------------------ the state's side


def applied(state: ClusterState, command: Command) -> None:
    result = state.apply(command)
    assert result.ok, result.error


def test_a_role_change_raises_the_generation_and_nothing_else_does() -> None:
    state = ClusterState()
    applied(state, AddNode(node("n1", Role.WORKER)))

    def generation() -> int:
        return state.nodes["n1"].cert_generation

    assert generation() == 0
    for unchanged in (
        UpdateNode("n1", labels_add={"zone": "a"}),
        UpdateNode("n1", availability=Availability.DRAIN),
        UpdateNode("n1", addr="10.0.0.2:1"),
        UpdateNode("n1", role=Role.WORKER),  # a worker "demoted": no change of role
    ):
        applied(state, unchanged)
        assert generation() == 0, unchanged
    applied(state, UpdateNode("n1", role=Role.MANAGER, sealed_manager_key=b"blob"))
    assert generation() == 1
    applied(state, UpdateNode("n1", role=Role.MANAGER))  # promoted again: already one
    assert generation() == 1
    applied(state, UpdateNode("n1", role=Role.WORKER))
    assert generation() == 2


def test_a_refused_promotion_leaves_the_generation_as_it_was() -> None:
    state = ClusterState()
    applied(state, AddNode(node("n1", Role.WORKER)))
    assert not state.apply(UpdateNode("n1", role=Role.MANAGER)).ok  # no managers' key for it
    assert state.nodes["n1"].cert_generation == 0


def test_a_removed_node_is_on_the_revocation_list_even_after_a_snapshot() -> None:
    state = ClusterState()
    applied(state, AddNode(node("n1", Role.WORKER)))
    applied(state, AddNode(node("n2", Role.WORKER)))
    applied(state, RemoveNode("n1", removed_at=123.0))
    assert "n1" not in state.nodes
    assert state.removed_nodes == {"n1": 123.0}
    restored = ClusterState.restore(state.snapshot())
    assert restored.removed_nodes == {"n1": 123.0}
    assert set(restored.nodes) == {"n2"}
    assert peer_policy.admit(peer("n1"), restored, CLUSTER, NOW) == "removed"
    copy = state.copy()  # a copy's list is its own
    applied(copy, RemoveNode("n2", removed_at=124.0))
    assert copy.removed_nodes == {"n1": 123.0, "n2": 124.0}
    assert state.removed_nodes == {"n1": 123.0}


@pytest.mark.parametrize("same_key", [True, False])
def test_a_removed_node_id_cannot_join_again(same_key: bool) -> None:
    """Not even with the key it had: a node that was removed joins anew, under a new id."""
    state = ClusterState()
    applied(state, AddNode(node("n1", Role.WORKER)))
    applied(state, RemoveNode("n1", removed_at=5.0))
    again = node("n1", Role.WORKER)
    if not same_key:
        again = dataclasses.replace(again, public_key=b"another key")
    before = state.snapshot()
    result = state.apply(AddNode(again))
    assert not result.ok and "was removed from the cluster" in result.error
    assert state.snapshot() == before  # a refused command changes nothing
