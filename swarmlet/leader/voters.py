"""Which nodes vote in Raft: the leader's voter policy, as a pure function.

Managers are the voters, up to a target (1, 3, 5 or 7); a manager beyond it is a learner (a
non-voting replica of the state). A worker is in the group only while its release is too old to
be served by a session (issue #16: a learner receives every entry, every service's spec). The
leader calls `next_conf_change` whenever the membership or liveness changes and proposes the one
change it returns (Raft: one server at a time); after it commits, it asks again.

Beyond Swarm: a voter that has been down longer than `grace_s` is replaced automatically by a
healthy manager that is not voting yet, so the cluster regains its fault tolerance without an
operator. The replacement is promoted first and the dead voter demoted next, so the number of
live voters never drops during the exchange. Without a standby, a long-dead voter is still
demoted (it counts for nothing and only inflates the quorum); it is promoted again when it
returns healthy.

Invariants:
  * the target voter count is odd for the number of healthy managers (an even count tolerates no
    more failures than the odd count below it); single-server steps pass through even counts;
  * the leader is never demoted or removed by this policy (it transfers leadership first);
  * only nodes alive in gossip are promoted.
"""

from __future__ import annotations

from collections.abc import Mapping, Set

from swarmlet.raft.types import ConfChange, ConfChangeKind, ConfState
from swarmlet.state.model import Node, Role
from swarmlet.wire.protocol_version import ONCE_SINCE, SESSIONS_SINCE


def cannot_apply_the_log(version: int | None, once_applied: bool) -> bool:
    """Whether a node of protocol `version` (None: not known yet) cannot apply the Raft log of
    a state that has applied a `Once` (`once_applied`), which its release does not know."""
    return once_applied and version is not None and version < ONCE_SINCE


def desired_voter_count(target: int, healthy_managers: int) -> int:
    """The largest odd number <= min(target, healthy managers), and at least 1."""
    n = max(1, min(target, healthy_managers))
    return n if n % 2 == 1 else n - 1


def next_conf_change(
    conf: ConfState,
    nodes: Mapping[str, Node],
    alive: Set[str],
    down_since: Mapping[str, float],
    now: float,
    *,
    leader_id: str,
    target_voters: int,
    grace_s: float,
    protocols: Mapping[str, int] = {},  # read only
    session_protocol: int = SESSIONS_SINCE,
    once_applied: bool = False,
) -> ConfChange | None:
    """The one membership change to make now, or None. `protocols`: each node's release, as the
    protocol of the last stream with it (absent: not known); from `session_protocol` on, a
    worker takes its state from a session rather than as a learner. `once_applied`: the state
    has applied a `Once` (`ClusterState.applied_requests`), which a node of a protocol older
    than ONCE_SINCE cannot apply, nor a snapshot that remembers one."""
    voters = set(conf.voters)
    learners = set(conf.learners)
    members = voters | learners

    def too_old(node_id: str) -> bool:
        return cannot_apply_the_log(protocols.get(node_id), once_applied)

    # 1. Nodes removed from the cluster leave the group (never the leader itself), and so does
    #    a node whose release cannot apply the log (README, "Upgrading": it joined, or was
    #    promoted, after the cluster was upgraded); it is not added again while it runs that.
    for node_id in sorted(members - set(nodes)):
        if node_id != leader_id:
            return ConfChange(ConfChangeKind.REMOVE, node_id)
    for node_id in sorted(members):
        if node_id != leader_id and too_old(node_id):
            return ConfChange(ConfChangeKind.REMOVE, node_id)

    # 2. Every manager receives the log, and a worker too old for a session (issue #16): a
    #    worker's state comes from a manager's session (`node.worker_sessions`), which holds
    #    only what it needs; one whose release is not known yet is left as it is.
    def legacy(node_id: str) -> bool:
        version = protocols.get(node_id)
        return version is not None and version < session_protocol

    for node_id in sorted(set(nodes) - members):
        if too_old(node_id):
            continue
        if nodes[node_id].role is Role.MANAGER or legacy(node_id):
            return ConfChange(ConfChangeKind.ADD_LEARNER, node_id)

    # 3. Workers do not vote; one that speaks sessions leaves the group.
    for node_id in sorted(voters):
        if node_id != leader_id and nodes[node_id].role is not Role.MANAGER and len(voters) > 1:
            return ConfChange(ConfChangeKind.ADD_LEARNER, node_id)
    for node_id in sorted(learners):
        version = protocols.get(node_id)
        if (
            nodes[node_id].role is Role.WORKER
            and version is not None
            and version >= session_protocol
        ):
            return ConfChange(ConfChangeKind.REMOVE, node_id)

    def long_down(node_id: str) -> bool:
        since = down_since.get(node_id)
        return node_id not in alive and since is not None and now - since >= grace_s

    healthy_voters = {v for v in voters if not long_down(v)}
    standby = sorted(
        n for n in learners if nodes[n].role is Role.MANAGER and n in alive and n not in down_since
    )
    want = desired_voter_count(target_voters, len(healthy_voters) + len(standby))

    # 4. Promote a healthy standby manager while healthy voters are fewer than wanted.
    if len(healthy_voters) < want and standby:
        return ConfChange(ConfChangeKind.ADD_VOTER, standby[0])

    # 5. Once enough healthy voters are in, demote voters that have been down too long. (Without a
    #    standby this leaves the fault tolerance as it was: a dead voter counts for nothing.)
    for node_id in sorted(voters - healthy_voters):
        if node_id != leader_id and len(healthy_voters) >= want:
            return ConfChange(ConfChangeKind.ADD_LEARNER, node_id)

    # 6. The target was lowered: demote healthy voters beyond it, never the leader.
    if len(voters) > target_voters:
        for node_id in sorted(voters - {leader_id}):
            return ConfChange(ConfChangeKind.ADD_LEARNER, node_id)
    return None
