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
for ids no member ever had. So a manager's certificate counts as one only where this node's
replica, its Raft log or the members it has heard of back it (`_manager_by_the_state`); any
other is taken as a worker's, for every use: Raft takes leader and candidate messages only from
managers, and the transport gives managers larger frames. Before that rule, an ex-manager with
a certificate minted for its own id or a new one could send InstallSnapshot or appends at a
higher term and replace every manager's state.

What is left, each a narrow window: a node that lists no member and has heard of none (a join
answered by an older release) takes any manager's certificate; a node that lists none yet (just
joined, before its first snapshot, or a worker before its first view) takes one from any member
it has heard of, an ex-manager included; a demoted manager stays a voter until the leader takes
it out of the group, and meanwhile a certificate it mints newer than its record counts where
that change has not reached the log; a restart's replica that predates a demotion lists the node
as a manager. And the price: a follower cut off before a worker's promotion reached its log
takes that node for a worker, and if it is elected, waits for the leadership to move before it
catches up. Replacing the CA at every demotion and removal would close the windows.

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
    heard_of = known_keys or {}
    key = node.signing_key if node is not None else heard_of.get(peer.node_id, b"")
    if key and peer.public_key != key:
        return "other_key"
    if peer.is_manager and not _manager_by_the_state(peer, node, state, voters, heard_of):
        return dataclasses.replace(peer, role="worker")
    return peer


def _manager_by_the_state(
    peer: PeerIdentity,
    node: Node | None,
    state: ClusterState,
    voters: Collection[str],
    heard_of: Mapping[str, bytes],
) -> bool:
    """Whether a manager's certificate counts as one here. The CA key that signs certificates
    outlives demotions and removals, so a certificate proves nothing about who minted it:

    - a node the replica lists as a manager: at the generation of its latest role change or
      after (an older one was issued before a demotion);
    - a node it lists as a worker: only as a voter of this node's log, with a certificate newer
      than the record (a promotion the replica has not applied: a restart replays only what it
      knew committed);
    - a node it does not list: a member this node has heard of (the join reply's list, then
      every record it applied, `heard_of`, whose key `admit` checked) or a voter of its log:
      a leader may send a joining manager a snapshot older than its own join, and a restart's
      replica lags its log. An id no member ever had (minted) counts as a worker's.

    A node that has heard of no member at all (none listed, no keys kept: a join answered by
    a release that sent none) has nothing to judge by and takes the certificate's word."""
    if node is not None and node.role is Role.MANAGER:
        return peer.generation >= node.cert_generation
    if node is not None:
        return peer.node_id in voters and peer.generation > node.cert_generation
    if not state.nodes and not heard_of:
        return True
    return peer.node_id in voters or peer.node_id in heard_of


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
