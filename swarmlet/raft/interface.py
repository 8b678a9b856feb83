"""The types of RaftNode's public interface: its configuration, its `Ready` (the caller's
obligations) and the refusals it raises. Data only; the rules live in swarmlet.raft.core."""

from __future__ import annotations

from dataclasses import dataclass

from swarmlet.errors import SwarmletError
from swarmlet.raft.messages import Message, ReadState, SoftState
from swarmlet.raft.types import Entry, HardState, Snapshot


class ConfChangeRefused(SwarmletError):
    """The leader refused a membership change; `reason` says why (retry later if transient)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"membership change refused: {reason}")


class LeadershipTransferError(SwarmletError):
    """Leadership cannot be transferred to that node (not a voter of the group)."""


@dataclass(frozen=True)
class RaftConfig:
    """Timing is in ticks of the driver's tick_interval_s (see the module docstring)."""

    election_ticks: int = 10  # followers time out after [election_ticks, 2*election_ticks)
    heartbeat_ticks: int = 1  # leader heartbeat period; must be < election_ticks
    pre_vote: bool = True  # thesis §9.6
    check_quorum: bool = True  # leader steps down without a quorum for election_ticks; stickiness
    max_entries_per_append: int = 64  # batch size of one AppendEntries
    # ... and its entries' bytes, past the first entry (etcd's MaxSizePerMsg): 64 large entries
    # made a frame over the transport's limit, dropped by every follower and resent as it was,
    # so nothing committed again.
    max_bytes_per_append: int = 8 * 1024 * 1024
    max_inflight_appends: int = 16  # unacknowledged appends per follower in REPLICATE state
    snapshot_retry_ticks: int = 20  # resend an unacknowledged InstallSnapshot after this

    def __post_init__(self) -> None:
        if not 0 < self.heartbeat_ticks < self.election_ticks:
            raise ValueError("need 0 < heartbeat_ticks < election_ticks")
        if self.max_entries_per_append < 1 or self.max_inflight_appends < 1:
            raise ValueError("max_entries_per_append and max_inflight_appends must be >= 1")
        if self.max_bytes_per_append < 1:
            raise ValueError("max_bytes_per_append must be >= 1")
        if self.snapshot_retry_ticks < 1:
            raise ValueError("snapshot_retry_ticks must be >= 1")


@dataclass(frozen=True, slots=True)
class Ready:
    """What the driver must do, in this order, then call `RaftNode.advance(ready)`:

    1. Persist durably (write, then fsync) before sending anything:
       `snapshot` if not None (a snapshot received from the leader: store it and discard the WHOLE
       log), then `entries` (append; they may overwrite a suffix: truncate the stored log from
       entries[0].index first), then `hard_state` if not None.
    2. Send `messages` (best effort; Raft tolerates loss, duplication and reordering).
    3. If `snapshot` is not None, restore the state machine from it; then apply
       `committed_entries` in order (CONF_CHANGE entries need no action from the state machine:
       the core already uses them).
    4. Serve `read_states`: the state machine now reflects at least `index` of each.
    5. Show `soft_state` (role, leader, term) if not None.

    One exception to the order of 1 and 2 (Raft thesis §10.2.1): a leader may send its appends
    before its own fsync when the Ready changes no term or vote and commits none of its own new
    entries, because it counts itself in a quorum only after `advance`, once its fsync is done.
    """

    hard_state: HardState | None
    entries: tuple[Entry, ...]
    snapshot: Snapshot | None
    messages: tuple[Message, ...]
    committed_entries: tuple[Entry, ...]
    read_states: tuple[ReadState, ...]
    soft_state: SoftState | None
