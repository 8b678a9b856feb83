"""What a leader knows about one follower's (or learner's) log, and the flow control of appends.

Three states, as etcd/raft's tracker:
- PROBE: the leader does not know where the follower's log matches; one append at a time
  (`probe_sent` pauses until an answer or a heartbeat response).
- REPLICATE: the logs match up to `match`; appends are pipelined, `next` advances optimistically,
  and at most `max_inflight` append messages may be unacknowledged.
- SNAPSHOT: an InstallSnapshot is in flight; appends pause until it is acknowledged, or
  `snapshot_elapsed_ticks` reaches the retry timeout (the message may have been lost).

`match` only grows, except through `regress`: a follower whose disk lost a tail it had
acknowledged reports a log shorter than `match` (etcd's tracker, which trusts disks, has no such
path and ignores that report as stale).
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass, field


class ProgressState(enum.IntEnum):
    PROBE = 0
    REPLICATE = 1
    SNAPSHOT = 2


@dataclass(slots=True)
class Progress:
    next: int
    match: int = 0
    state: ProgressState = ProgressState.PROBE
    probe_sent: bool = False
    pending_snapshot: int = 0
    snapshot_elapsed_ticks: int = 0
    recent_active: bool = False
    read_ack_seq: int = 0
    inflight: deque[int] = field(default_factory=deque)  # last index of each unacked append

    def become_probe(self) -> None:
        # Resume from what is known to match; a snapshot in flight covered up to pending_snapshot.
        if self.state == ProgressState.SNAPSHOT:
            self.next = max(self.match + 1, self.pending_snapshot + 1)
        else:
            self.next = self.match + 1
        self.state = ProgressState.PROBE
        self.probe_sent = False
        self.pending_snapshot = 0
        self.inflight.clear()

    def become_replicate(self) -> None:
        self.state = ProgressState.REPLICATE
        self.next = self.match + 1
        self.probe_sent = False
        self.pending_snapshot = 0
        self.inflight.clear()

    def become_snapshot(self, index: int) -> None:
        self.state = ProgressState.SNAPSHOT
        self.pending_snapshot = index
        self.snapshot_elapsed_ticks = 0
        self.probe_sent = False
        self.inflight.clear()

    def is_paused(self, max_inflight: int) -> bool:
        if self.state == ProgressState.PROBE:
            return self.probe_sent
        if self.state == ProgressState.REPLICATE:
            return len(self.inflight) >= max_inflight
        return True

    def maybe_update(self, index: int) -> bool:
        """A success ack up to `index`; True if it taught us something new."""
        updated = False
        if index > self.match:
            self.match = index
            self.probe_sent = False
            updated = True
        self.next = max(self.next, index + 1)
        while self.inflight and self.inflight[0] <= index:
            self.inflight.popleft()
        return updated

    def regress(self, last: int) -> None:
        """The follower reported a log ending at `last`, below `match`: forget what it no longer
        holds and probe from there. The only way `match` goes down (see RaftNode)."""
        self.match = min(self.match, last)
        self.state = ProgressState.PROBE
        self.next = last + 1
        self.probe_sent = False
        self.pending_snapshot = 0
        self.inflight.clear()

    def maybe_decrease(self, rejected: int, next_guess: int) -> bool:
        """A reject of the append whose prev_index was `rejected`. False if the reject is stale.
        `next_guess` is where the §5.3 hint says to resume."""
        if self.state == ProgressState.REPLICATE:
            if rejected <= self.match:
                return False
            # Raft §5.3: fall back to probing from the hinted index.
            self.state = ProgressState.PROBE
            self.inflight.clear()
        elif self.state == ProgressState.SNAPSHOT or self.next - 1 != rejected:
            return False
        self.next = max(min(rejected, next_guess), self.match + 1, 1)
        self.probe_sent = False
        return True
