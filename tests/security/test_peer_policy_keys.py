"""security.peer_policy: a certificate is worth something only for the identity key in its node's
record. The CA key is derived from the managers' key, which a demoted manager may have kept: a
certificate it mints in a member's name for its own key is refused; for its own id, or for an id
no record lists yet (a join this node has not applied), there is no key to compare."""

from __future__ import annotations

import dataclasses

from swarmlet.certs import PeerIdentity
from swarmlet.security import peer_policy
from swarmlet.state.machine import ClusterState
from swarmlet.state.model import Node, Role

CLUSTER = "c1"
NOW = 1_000_000.0
M1_KEY, W1_KEY, OTHER_KEY = b"1" * 32, b"2" * 32, b"3" * 32


def state() -> ClusterState:
    s = ClusterState()
    s.cluster_id = CLUSTER
    s.nodes["m1"] = Node("m1", "m1", "m1:1", "h", Role.MANAGER, signing_key=M1_KEY)
    s.nodes["w1"] = Node("w1", "w1", "w1:1", "h", Role.WORKER, signing_key=W1_KEY)
    s.nodes["old"] = Node("old", "old", "old:1", "h", Role.WORKER)  # recorded before the key
    return s


def cert(node_id: str, key: bytes, role: str = "manager") -> PeerIdentity:
    return PeerIdentity(node_id, role, 1000, NOW + 60, CLUSTER, key)


def test_a_certificate_for_another_key_than_the_records_is_refused() -> None:
    """Minted in a manager's name for the minter's key (the handshake proves that key only)."""
    assert peer_policy.admit(cert("m1", W1_KEY), state(), CLUSTER, NOW) == "other_key"
    assert peer_policy.admit(cert("w1", OTHER_KEY, "worker"), state(), CLUSTER, NOW) == "other_key"


def test_a_certificate_for_the_records_key_is_admitted_and_judged_by_the_state() -> None:
    """Its own id and key, whatever role the minter wrote: the state's role is what counts."""
    s = state()
    minted = cert("w1", W1_KEY, "manager")
    admitted = peer_policy.admit(minted, s, CLUSTER, NOW)
    assert admitted == dataclasses.replace(minted, role="worker")
    assert isinstance(admitted, PeerIdentity) and not peer_policy.is_manager(admitted, s)
    assert peer_policy.admit(cert("m1", M1_KEY), s, CLUSTER, NOW) == cert("m1", M1_KEY)


def test_without_a_recorded_key_there_is_nothing_to_compare() -> None:
    """A record from before identity keys, or a node this replica does not list yet."""
    s = state()
    assert peer_policy.admit(cert("old", OTHER_KEY, "worker"), s, CLUSTER, NOW) == cert(
        "old", OTHER_KEY, "worker"
    )
    unknown = peer_policy.admit(cert("new", OTHER_KEY), s, CLUSTER, NOW)
    assert isinstance(unknown, PeerIdentity) and not peer_policy.is_manager(unknown, s)


def test_a_node_the_replica_does_not_list_is_checked_against_the_keys_seen() -> None:
    """The data dir's copy of the members' keys: a restart's replica may not list a member yet,
    and a certificate minted in its name for another key must not pass meanwhile."""
    s = state()
    seen = {"new": OTHER_KEY}
    assert peer_policy.admit(cert("new", W1_KEY), s, CLUSTER, NOW, known_keys=seen) == "other_key"
    admitted = peer_policy.admit(
        cert("new", OTHER_KEY), s, CLUSTER, NOW, voters=("new",), known_keys=seen
    )
    assert admitted == cert("new", OTHER_KEY)


def test_a_joining_manager_follows_a_leader_its_first_snapshot_does_not_list() -> None:
    """A leader sends a joining manager the snapshot it holds, which may predate the leader's
    own join (init's, until 2,000 entries are applied): restored, it lists the first node
    only, a voter alone. The leader is a member the join reply named, so its appends count
    (found by review: a state-only rule refused them, for good)."""
    s = ClusterState()
    s.cluster_id = CLUSTER
    s.nodes["m1"] = Node("m1", "m1", "m1:1", "h", Role.MANAGER, signing_key=M1_KEY)
    heard_of = {"m1": M1_KEY, "leader": OTHER_KEY}
    admitted = peer_policy.admit(
        cert("leader", OTHER_KEY), s, CLUSTER, NOW, voters=("m1",), known_keys=heard_of
    )
    assert isinstance(admitted, PeerIdentity) and admitted.is_manager
    minted = peer_policy.admit(
        cert("minted", W1_KEY), s, CLUSTER, NOW, voters=("m1",), known_keys=heard_of
    )
    assert isinstance(minted, PeerIdentity) and not minted.is_manager


def test_a_node_that_lists_no_member_yet_judges_by_the_members_it_heard_of() -> None:
    empty = ClusterState()
    empty.cluster_id = CLUSTER
    heard_of = {"m1": M1_KEY}
    known = peer_policy.admit(cert("m1", M1_KEY), empty, CLUSTER, NOW, known_keys=heard_of)
    assert isinstance(known, PeerIdentity) and known.is_manager
    minted = peer_policy.admit(cert("minted", W1_KEY), empty, CLUSTER, NOW, known_keys=heard_of)
    assert isinstance(minted, PeerIdentity) and not minted.is_manager
