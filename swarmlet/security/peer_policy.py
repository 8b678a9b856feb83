"""Which authenticated peers are still members in good standing, and what each may ask for.

The TLS handshake proves that a peer holds a certificate the cluster CA signed (`swarmlet.certs`).
That is not enough: certificates outlive the facts they state. `admit` adds what the replicated
state knows since: a removed node (the revocation list) or an expired certificate is refused; a
certificate issued before the node's latest role change (an older generation) is taken for the
node's id only, as a worker's: a demoted manager keeps its connections and receives the Raft log
that tells it of its demotion (then renews its certificate), but nothing it sends counts as a
manager's. The transport asks on every connection and again before every message in either
direction, so a removed node is cut off as soon as the removal is applied here, even on a
connection it opened before.

A certificate must also be for the identity key in the node's record (`Node.signing_key`,
recorded when it joined): a signature of the CA alone does not make a node. The CA key stays the
same when the managers' key is rotated on a demotion (`security.managers_key_rotation`), so a
demoted manager that kept its copy of the old key can still derive it; a
certificate it mints in another member's name must name that member's key, and the TLS handshake
then needs that member's private key. What it can still mint: certificates for its own id, and
for ids no member's state lists. So a manager's certificate counts as one only for a node the
state lists as a manager (at the generation of its latest role change or after), or for a voter
of the Raft configuration in this node's log that its replica does not list as a manager yet
(a restart replays only what it knew committed); any other is taken as a worker's, for every
use: Raft takes leader and candidate messages only from managers, and the transport gives
managers larger frames. Before that rule, an ex-manager with a certificate minted for its own id
or an unknown one could send InstallSnapshot at a higher term and replace every manager's
state. A receiver that does not list a node yet checks its key against the keys it has seen
(the data dir's copy), if any.

The price of judging by the state: a follower cut off before a worker's promotion (or a
manager's join) reached its log takes that node for a worker, and if it is elected, waits for
the leadership to move before it catches up.

A receiver whose state is behind may accept a certificate that a newer state revokes: a removal
takes effect on each member when it applies it, as Raft gives every other change.

The checks of what a peer may ask for, once it is in good standing, are here too: each takes the
peer's certificate, never a field of its message.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping

from swarmlet.certs import PeerIdentity
from swarmlet.state.machine import ClusterState
from swarmlet.state.model import Node, Role


def admit(
    peer: PeerIdentity,
    state: ClusterState,
    cluster_id: str,
    now: float,
    *,
    voters: Collection[str] = (),
    known_keys: Mapping[str, bytes] | None = None,
) -> PeerIdentity | str:
    """`peer` as this node takes it now, or why it is refused (a short counter-friendly word).

    `voters`: the voters of the Raft configuration in this node's log, which may be ahead of
    its replica of the state (a restart replays only what it knows committed). `known_keys`:
    members' identity keys this node has seen, for a node its replica does not list (yet)."""
    if peer.cluster_id != cluster_id:
        return "other_cluster"
    if peer.node_id in state.removed_nodes:
        return "removed"
    if now > peer.not_after:
        return "expired"
    node = state.nodes.get(peer.node_id)
    key = node.signing_key if node is not None else (known_keys or {}).get(peer.node_id, b"")
    if key and peer.public_key != key:
        return "other_key"
    if peer.is_manager and not _manager_by_the_state(peer, node, state, voters):
        return dataclasses.replace(peer, role="worker")
    return peer


def _manager_by_the_state(
    peer: PeerIdentity, node: Node | None, state: ClusterState, voters: Collection[str]
) -> bool:
    """Whether a manager's certificate counts as one here. The CA key that signs certificates
    outlives demotions and removals, so a certificate proves nothing about who minted it: it
    counts for a node the replica lists as a manager (at the generation of its latest role
    change or after), or for a voter of this node's log whose record the replica does not hold
    or holds from before its latest role change (a restart's replica lags its log). A replica
    that lists no node at all (a manager that joined, before its first append or snapshot) has
    nothing to judge by and takes the certificate's word: its leader's messages are how it
    learns the state."""
    if not state.nodes:
        return True
    if node is not None and node.role is Role.MANAGER:
        return peer.generation >= node.cert_generation
    return peer.node_id in voters and (node is None or peer.generation > node.cert_generation)


def is_manager(peer: PeerIdentity, state: ClusterState) -> bool:
    """A manager by its certificate and, where this node knows it, by the state: a promotion
    this node has not applied yet is not taken on the certificate's word alone for requests,
    and a demotion applied here wins over any certificate (`admit` lowers its role anyway)."""
    node = state.nodes.get(peer.node_id)
    return peer.is_manager and node is not None and node.role is Role.MANAGER


def may_read_task(peer: PeerIdentity, state: ClusterState, task_id: str) -> bool:
    """Logs, secrets and other per-task data: managers, and the node that runs the task."""
    if is_manager(peer, state):
        return True
    task = state.tasks.get(task_id)
    return task is not None and task.node_id == peer.node_id
