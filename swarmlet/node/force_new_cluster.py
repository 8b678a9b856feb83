"""Recovering from a lost majority: `swarmlet init --force-new-cluster` (issue #18), as Swarm's
and etcd's `--force-new-cluster` do.

When a majority of the voters is gone for good, no leader can be elected and nothing can be
written. On a surviving manager whose agent is stopped, this rewrites its Raft storage so that it
is the only voter of the same cluster, with the state it holds:

- every entry in its log is applied, committed or not, as etcd does: an entry this node holds but
  has not seen committed may have been acknowledged to a client by the old majority, and with
  that majority gone there is no one left to ask; an uncommitted entry of a deposed leader is
  only a write that had not been acknowledged, and applying it is what any later leader with
  this log could have done;
- the result is saved as one snapshot at the next index under a new term, higher than any in
  the log, so that nothing the old members still hold can overrule it; the log goes (the
  snapshot replaces it), in one atomic save;
- the configuration becomes this node as the only voter; every other member of the old
  configuration stays a learner, so the voter policy promotes managers that come back and new
  ones that join, and `swarmlet node rm` takes the lost ones out of the state.

Everything else is kept: cluster id, keys, tokens, services, secrets, networks, nodes. The
running containers are not touched; the agent adopts them when it starts.

Must not run while the agent runs (the CLI checks the pid file first).
"""

from __future__ import annotations

from dataclasses import dataclass

from swarmlet.raft.quorum import apply_conf_change, decode_conf_change
from swarmlet.raft.storage import RaftStorage
from swarmlet.raft.types import ConfState, EntryKind, HardState, Snapshot, SnapshotMeta
from swarmlet.state.machine import ClusterState
from swarmlet.wire import codec as wire


@dataclass(frozen=True, slots=True)
class ForcedCluster:
    index: int  # the new snapshot's
    term: int
    applied_uncommitted: int  # log entries past the last commit this node knew of
    previous_voters: tuple[str, ...]


def force_new_cluster(storage: RaftStorage, node_id: str) -> ForcedCluster:
    """Make `node_id` the only voter of what `storage` holds; see the module's doc."""
    hard_state, snapshot, entries = storage.load()
    state = ClusterState.restore(snapshot.data)
    conf = snapshot.meta.conf
    last_index, last_term = snapshot.meta.index, snapshot.meta.term
    for entry in entries:
        if entry.kind is EntryKind.CONF_CHANGE:
            conf = apply_conf_change(conf, decode_conf_change(entry.data))
        elif entry.data:  # an empty NORMAL entry is a leader's no-op
            state.apply(wire.decode(entry.data))  # a rejected command changes nothing, as live
        last_index, last_term = entry.index, entry.term
    if node_id not in conf.voters and node_id not in conf.learners:
        raise ValueError(f"this node ({node_id}) is not a member of the group it stored")
    term = max(hard_state.term, last_term) + 1
    index = last_index + 1
    others = set(conf.voters) | set(conf.learners)
    others.discard(node_id)
    new_conf = ConfState(voters=(node_id,), learners=tuple(sorted(others)))
    forced = Snapshot(SnapshotMeta(index=index, term=term, conf=new_conf), state.snapshot())
    storage.save(HardState(term=term, vote=None, commit=index), [], forced)
    return ForcedCluster(
        index=index,
        term=term,
        applied_uncommitted=max(0, last_index - hard_state.commit),
        previous_voters=conf.voters,
    )
