"""A deterministic simulation of many `Swim` cores in one process.

A virtual clock, an in-memory network with seeded loss, delay (so reordering) and crashes, and
push-pull carried out in-process. Members are driven only through the public interface the real
driver uses: `next_deadline`/`tick`/`handle_datagram`/`take_outputs`/`take_events`/`local_state`/
`merge_remote_state`. Everything random comes from the seed, so a seed replays a run exactly.
"""

from __future__ import annotations

import contextlib
import heapq
import os
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from swarmlet.gossip.config import GossipConfig
from swarmlet.gossip.core import (
    EventKind,
    MemberEvent,
    SendDatagram,
    StartPushPull,
    Swim,
)
from swarmlet.gossip.messages import MemberState, Message

from .fake_keys import Signer, Verifier

Addr = tuple[str, int]


@dataclass(frozen=True)
class Net:
    loss: float = 0.0  # probability that a datagram is lost
    delay_min_s: float = 0.0005
    delay_max_s: float = 0.005  # uniform delay: datagrams overtake each other (reordering)
    push_pull_delay_s: float = 0.01  # TCP: never lost, only late
    # A busy receiver (a hogged core): with this probability a datagram waits an extra
    # uniform(0, stall_max_s) before it is handled.
    stall_prob: float = 0.0
    stall_max_s: float = 0.0


@dataclass
class Observed:
    """What the test wants to know after a run."""

    events: list[tuple[str, MemberEvent]] = field(default_factory=list)  # (observer, event)
    false_failures: list[tuple[str, MemberEvent]] = field(default_factory=list)
    datagrams: int = 0
    lost: int = 0


def sim_seeds(default: list[int]) -> list[int]:
    """Seeds for a simulation test; GOSSIP_SIM_SEED=<n> replays a single one."""
    env = os.environ.get("GOSSIP_SIM_SEED")
    return [int(env)] if env else default


@contextlib.contextmanager
def replay_hint(test: str, seed: int) -> Iterator[None]:
    """On failure, say how to replay this exact run."""
    try:
        yield
    except AssertionError as e:
        e.add_note(f"replay: GOSSIP_SIM_SEED={seed} .venv/bin/python -m pytest '{test}'")
        raise


class Sim:
    def __init__(
        self,
        seed: int,
        config: GossipConfig | None = None,
        net: Net | None = None,
        signed: bool = False,  # each member signs its Alive and verifies everyone else's
    ):
        self.seed = seed
        self.signed = signed
        self.config = config or GossipConfig.lan()
        self.net = net or Net()
        self.rng = random.Random(seed)
        self.now = 0.0
        self.nodes: dict[str, Swim] = {}  # running members
        self.addrs: dict[str, Addr] = {}
        self._by_addr: dict[Addr, str] = {}
        self.crashed: set[str] = set()
        self.observed = Observed()
        self._heap: list[tuple[float, int, object]] = []
        self._seq = 0
        self._timer_version: dict[str, int] = {}
        self._paused_until: dict[str, float] = {}

    # --- scenario ------------------------------------------------------------------------------

    def addr_of(self, i: int) -> Addr:
        return (f"10.0.{i // 250}.{i % 250 + 1}", 7946)

    def start(self, name: str, addr: Addr, seeds: list[Addr], incarnation: int = 0) -> Swim:
        rng = random.Random(f"{self.seed}:{name}:{incarnation}")
        core = Swim(
            self.config,
            name,
            addr,
            name.encode(),
            rng,
            self.now,
            incarnation,
            sign=Signer(name) if self.signed else None,
            verify=Verifier() if self.signed else None,
        )
        self.nodes[name] = core
        self.addrs[name] = addr
        self._by_addr[addr] = name
        self.crashed.discard(name)
        if seeds:
            core.join(self.now, seeds)
        self.flush(name)
        return core

    def forge(self, frm: Addr, to: Addr, msgs: tuple[Message, ...]) -> None:
        """A datagram from outside the cluster's members (one who holds the cluster key), never
        lost, delivered after the minimum delay."""
        self._push(self.now + self.net.delay_min_s, ("dgram", to, frm, msgs))

    def crash(self, name: str) -> None:
        del self.nodes[name]
        self.crashed.add(name)
        self._timer_version[name] = self._timer_version.get(name, 0) + 1

    def pause(self, name: str, duration_s: float) -> None:
        """Freeze a member (a starved process): its timers and datagrams wait until it resumes;
        the kernel keeps its datagrams meanwhile."""
        self._paused_until[name] = self.now + duration_s

    def cluster(self, n: int, stagger_s: float = 0.05) -> list[str]:
        """Start n members; each joins through member 0 only."""
        names = [f"n{i:03d}" for i in range(n)]
        self.start(names[0], self.addr_of(0), [])
        for i in range(1, n):
            self.run_until(self.now + stagger_s)
            self.start(names[i], self.addr_of(i), [self.addr_of(0)])
        return names

    # --- queries -------------------------------------------------------------------------------

    def state_seen(self, observer: str, name: str) -> MemberState | None:
        m = self.nodes[observer].member(name)
        return m.state if m is not None else None

    def converged(self) -> bool:
        """Every running member sees every running member ALIVE."""
        live = list(self.nodes)
        return all(self.state_seen(o, n) is MemberState.ALIVE for o in live for n in live)

    def all_see(self, name: str, states: tuple[MemberState, ...]) -> bool:
        return all(self.state_seen(o, name) in states for o in self.nodes if o != name)

    # --- engine --------------------------------------------------------------------------------

    def _push(self, at: float, item: object) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (at, self._seq, item))

    def flush(self, name: str) -> None:
        """Carry out a member's outputs, record its events and (re)arm its timer, as the driver
        does after every call into the core (tests call it after `leave`/`set_meta`)."""
        core = self.nodes[name]
        for out in core.take_outputs():
            if isinstance(out, SendDatagram):
                self.observed.datagrams += 1
                if self.rng.random() < self.net.loss:
                    self.observed.lost += 1
                    continue
                delay = self.rng.uniform(self.net.delay_min_s, self.net.delay_max_s)
                if self.net.stall_prob and self.rng.random() < self.net.stall_prob:
                    delay += self.rng.uniform(0.0, self.net.stall_max_s)
                self._push(self.now + delay, ("dgram", out.addr, self.addrs[name], out.msgs))
            else:
                assert isinstance(out, StartPushPull)
                self._push(self.now + self.net.push_pull_delay_s, ("pp", name, out))
        for ev in core.take_events():
            self.observed.events.append((name, ev))
            if ev.kind is EventKind.FAILED and ev.member.name in self.nodes:
                self.observed.false_failures.append((name, ev))
        version = self._timer_version.get(name, 0) + 1
        self._timer_version[name] = version
        self._push(max(self.now, core.next_deadline()), ("timer", name, version))

    def step(self) -> bool:
        if not self._heap:
            return False
        at, _, item = heapq.heappop(self._heap)
        assert at >= self.now
        self.now = at
        assert isinstance(item, tuple)
        kind = item[0]
        owner = self._owner(item)
        if owner is not None and self._paused_until.get(owner, 0.0) > at:
            self._push(self._paused_until[owner], item)  # handled when the process resumes
            return True
        if kind == "timer":
            _, name, version = item
            if name in self.nodes and self._timer_version.get(name) == version:
                self.nodes[name].tick(self.now)
                self.flush(name)
        elif kind == "dgram":
            _, to, frm, msgs = item
            target = self._by_addr.get(to)
            if target is not None and target in self.nodes:
                signer = self._by_addr.get(frm)  # what the transport's signature check gives
                self.nodes[target].handle_datagram(self.now, frm, msgs, signer)
                self.flush(target)
        else:
            _, name, out = item
            peer = self._by_addr.get(out.addr)
            if name in self.nodes and peer is not None and peer in self.nodes:
                a, b = self.nodes[name], self.nodes[peer]
                mine, theirs = a.local_state(out.join), b.local_state(out.join)
                b.merge_remote_state(self.now, mine)
                a.merge_remote_state(self.now, theirs)
                self.flush(peer)
                self.flush(name)
        return True

    def _owner(self, item: tuple[object, ...]) -> str | None:
        if item[0] == "timer":
            return str(item[1])
        if item[0] == "dgram":
            to = item[1]
            assert isinstance(to, tuple)
            return self._by_addr.get((str(to[0]), int(to[1])))
        return None

    def run_until(
        self, t: float, stop: Callable[[], bool] | None = None, check_every_s: float = 0.1
    ) -> bool:
        """Run to virtual time t, or until `stop()` holds (checked every `check_every_s`)."""
        while True:
            horizon = min(t, self.now + check_every_s) if stop is not None else t
            while self._heap and self._heap[0][0] <= horizon:
                self.step()
            self.now = max(self.now, horizon)
            if stop is not None and stop():
                return True
            if self.now >= t:
                return False
