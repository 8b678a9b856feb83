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
then needs that member's private key. What it can still mint: certificates for its own id, which
the state's role (`is_manager`) and the revocation list judge as they judge its real one, and for
ids no member's state lists yet, which are admitted as nothing more than unknown nodes (no manager's
rights, no task's data). A receiver that has not applied a node's record yet cannot check its key.

A receiver whose state is behind may accept a certificate that a newer state revokes: a removal
takes effect on each member when it applies it, as Raft gives every other change.

The checks of what a peer may ask for, once it is in good standing, are here too: each takes the
peer's certificate, never a field of its message.
"""

from __future__ import annotations

import dataclasses

from swarmlet.certs import PeerIdentity
from swarmlet.state.machine import ClusterState
from swarmlet.state.model import Role


def admit(
    peer: PeerIdentity, state: ClusterState, cluster_id: str, now: float
) -> PeerIdentity | str:
    """`peer` as this node takes it now, or why it is refused (a short counter-friendly word)."""
    if peer.cluster_id != cluster_id:
        return "other_cluster"
    if peer.node_id in state.removed_nodes:
        return "removed"
    if now > peer.not_after:
        return "expired"
    node = state.nodes.get(peer.node_id)
    if node is not None and node.signing_key and peer.public_key != node.signing_key:
        return "other_key"
    if peer.is_manager and node is not None and peer.generation < node.cert_generation:
        return dataclasses.replace(peer, role="worker")  # issued before a role change
    return peer


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
