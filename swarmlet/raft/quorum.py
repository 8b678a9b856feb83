"""Small pure maths of Raft membership: majorities, the commit index of a set of match indexes,
and single-server configuration changes (thesis §4.1) with their entry encoding.

Nothing here knows about roles, messages or time.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from swarmlet.raft.types import ConfChange, ConfChangeKind, ConfState


def quorum_size(voters: int) -> int:
    """A majority of `voters` (Raft §5.2); 0 voters has no quorum (returns 1, never reachable)."""
    return voters // 2 + 1


def committed_index(match_index: Mapping[str, int], voters: Iterable[str]) -> int:
    """The highest index that a majority of `voters` hold (Raft §5.3, Figure 2 "leaders" last
    rule), i.e. the quorum-th largest match index. 0 when there are no voters. The caller still
    checks that the entry there is of its own term (Raft §5.4.2)."""
    matches = sorted((match_index.get(v, 0) for v in voters), reverse=True)
    if not matches:
        return 0
    return matches[quorum_size(len(matches)) - 1]


def has_quorum(voters: Iterable[str], yes: Iterable[str]) -> bool:
    """Whether the node ids in `yes` include a majority of `voters`."""
    vs = set(voters)
    return len(vs & set(yes)) >= quorum_size(len(vs))


def apply_conf_change(conf: ConfState, change: ConfChange) -> ConfState:
    """The configuration after one single-server change (thesis §4.1). Members stay sorted so that
    every node derives an identical ConfState from the same log."""
    voters = set(conf.voters)
    learners = set(conf.learners)
    node = change.node_id
    if change.kind == ConfChangeKind.ADD_VOTER:
        voters.add(node)
        learners.discard(node)
    elif change.kind == ConfChangeKind.ADD_LEARNER:
        learners.add(node)
        voters.discard(node)
    else:
        voters.discard(node)
        learners.discard(node)
    return ConfState(voters=tuple(sorted(voters)), learners=tuple(sorted(learners)))


def refusal_reason(conf: ConfState, change: ConfChange) -> str | None:
    """Why `change` is not a valid single-server change of `conf`, or None if it is."""
    node = change.node_id
    if not node:
        return "the node id is empty"
    if change.kind == ConfChangeKind.ADD_VOTER and node in conf.voters:
        return f"{node} is already a voter"
    if change.kind == ConfChangeKind.ADD_LEARNER and node in conf.learners:
        return f"{node} is already a learner"
    if change.kind == ConfChangeKind.REMOVE and node not in conf.voters + conf.learners:
        return f"{node} is not a member"
    if change.kind in (ConfChangeKind.REMOVE, ConfChangeKind.ADD_LEARNER) and conf.voters == (
        node,
    ):
        return f"{node} is the last voter"
    return None


def encode_conf_change(change: ConfChange) -> bytes:
    """The `data` of a CONF_CHANGE entry: one byte of kind, then the node id in UTF-8."""
    return bytes([int(change.kind)]) + change.node_id.encode()


def decode_conf_change(data: bytes) -> ConfChange:
    """Inverse of `encode_conf_change`; raises ValueError on bytes it did not produce."""
    if not data:
        raise ValueError("empty conf change")
    return ConfChange(kind=ConfChangeKind(data[0]), node_id=data[1:].decode())
