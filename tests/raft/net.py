"""A hand-driven network for rule tests: nodes' Readies are drained into a list of pending
messages, which a test delivers, drops or filters explicitly."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Sequence

from swarmlet.raft.core import RaftConfig, RaftNode, Ready
from swarmlet.raft.messages import Message, ReadState, Role
from swarmlet.raft.types import ConfState, Entry, HardState, Snapshot, SnapshotMeta

Pred = Callable[[Message], bool]


def boot_snapshot(voters: Sequence[str], learners: Sequence[str] = ()) -> Snapshot:
    return Snapshot(
        SnapshotMeta(index=1, term=1, conf=ConfState(tuple(voters), tuple(learners))), b""
    )


def make_node(
    nid: str,
    voters: Sequence[str] = ("n1", "n2", "n3"),
    *,
    config: RaftConfig | None = None,
    seed: int = 0,
    term: int = 0,
    vote: str | None = None,
    entries: Sequence[Entry] = (),
    learners: Sequence[str] = (),
    snapshot: Snapshot | None = None,
) -> RaftNode:
    return RaftNode(
        nid,
        config or RaftConfig(),
        random.Random(f"{seed}/{nid}"),
        hard_state=HardState(term=term, vote=vote),
        snapshot=snapshot if snapshot is not None else boot_snapshot(voters, learners),
        entries=list(entries),
    )


def role(node: RaftNode) -> Role:
    """The node's role, read through a call so that type checkers do not narrow it."""
    return node.role


class Net:
    def __init__(self, nodes: Iterable[RaftNode]) -> None:
        self.nodes = {n.id: n for n in nodes}
        self.pending: list[Message] = []
        self.applied: dict[str, list[Entry]] = {nid: [] for nid in self.nodes}
        self.reads: dict[str, list[ReadState]] = {nid: [] for nid in self.nodes}
        self.readies: dict[str, list[Ready]] = {nid: [] for nid in self.nodes}
        self.isolated: set[str] = set()

    def add(self, node: RaftNode) -> None:
        self.nodes[node.id] = node
        self.applied.setdefault(node.id, [])
        self.reads.setdefault(node.id, [])
        self.readies.setdefault(node.id, [])

    def flush(self) -> None:
        """Drain every node's Readies (persistence is instant here); queue their messages."""
        for nid, node in self.nodes.items():
            while node.has_ready():
                rd = node.ready()
                self.readies[nid].append(rd)
                self.pending.extend(
                    m for m in rd.messages if not ({m.from_id, m.to_id} & self.isolated)
                )
                self.applied[nid].extend(rd.committed_entries)
                self.reads[nid].extend(rd.read_states)
                node.advance(rd)

    def take(self, pred: Pred = lambda m: True) -> list[Message]:
        self.flush()
        out = [m for m in self.pending if pred(m)]
        self.pending = [m for m in self.pending if not pred(m)]
        return out

    def deliver(self, pred: Pred = lambda m: True) -> int:
        """Deliver the pending messages that match (once); returns how many."""
        msgs = self.take(pred)
        for m in msgs:
            if m.to_id in self.nodes:
                self.nodes[m.to_id].step(m)
        self.flush()
        return len(msgs)

    def drop(self, pred: Pred = lambda m: True) -> None:
        self.take(pred)

    def run(self, pred: Pred = lambda m: True, max_rounds: int = 100) -> None:
        """Deliver until no matching message is pending; the rest are dropped."""
        for _ in range(max_rounds):
            if not self.deliver(pred):
                self.pending = []
                return
        raise AssertionError("the network did not settle")

    def tick(self, nid: str, times: int = 1, pred: Pred = lambda m: True) -> None:
        for _ in range(times):
            self.nodes[nid].tick()
            self.run(pred)

    def tick_all(self, times: int = 1, pred: Pred = lambda m: True) -> None:
        for _ in range(times):
            for nid in list(self.nodes):
                if nid not in self.isolated:
                    self.nodes[nid].tick()
            self.run(pred)

    def elect(self, nid: str) -> RaftNode:
        """Tick `nid` alone until it leads (the others hear nothing and stay followers)."""
        node = self.nodes[nid]
        for _ in range(4 * node.config.election_ticks):
            if node.role == Role.LEADER:
                return node
            self.tick(nid)
        raise AssertionError(f"{nid} did not become leader")

    def leaders(self) -> list[str]:
        return [nid for nid, n in self.nodes.items() if n.role == Role.LEADER]


def cluster(n: int = 3, *, config: RaftConfig | None = None, learners: Sequence[str] = ()) -> Net:
    voters = [f"n{i}" for i in range(1, n + 1)]
    return Net(
        make_node(nid, voters, config=config, learners=learners) for nid in voters + list(learners)
    )
