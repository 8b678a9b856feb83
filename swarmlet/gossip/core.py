"""SWIM + Lifeguard membership as a sans-I/O state machine (memberlist semantics).

Owns the membership table (name -> Member), the probe cycle, suspicion timers, local health
(Lifeguard "awareness"), the piggyback queue and the push-pull schedule. Time comes in as `now`
(seconds, any monotonic origin), chance from the injected `random.Random`. It never touches sockets
or clocks: the driver feeds it datagrams and push-pull states, calls `tick(now)` at
`next_deadline()`, and carries out `take_outputs()` in order.

Invariants:
  - our own member is always in the table; its incarnation only grows;
  - at most one probe of ours is in flight; at most one suspicion timer per member, and only for a
    SUSPECT member;
  - a member's (incarnation, state) only moves up `messages.precedence_key`, except that a newer
    Alive revives a DEAD/LEFT member, and a DEAD/LEFT member may come back at a new address with any
    incarnation (memberlist's dead-node reclaim: the restarted agent may have lost its counter);
  - anything illegal from the network changes nothing and increments a `dropped_*` counter;
  - only a member raises its own incarnation (see `_on_suspect`): news about X above the
    incarnation we know for X changes nothing unless X signed it (an Alive, when `verify` is set),
    so every accusation we accept is at an incarnation X has reached and can outbid by one, and
    our own incarnation grows by one per refutation, never to a value another member chose;
  - with `verify` set, an Alive or pushed state about another member that would change our belief
    is applied only if that member signed it; the record keeps the signature, so we relay the
    member's own words (gossip, push-pull, corrections) and never our own about it.

Decisions of our own, each with its reason:
  - no TCP fallback ping (memberlist sends one in parallel with the indirect probes): Lifeguard's
    nacks already tell a lossy network from a dead member, and the driver stays UDP-only for probes;
  - probe traffic (ping/ack/ping-req/nack plus piggybacked updates) fits `max_datagram_bytes`;
    gossip rounds may use up to `max_gossip_datagram_bytes` so a large meta still spreads (config);
  - an Ack that arrives after the direct-probe timeout still completes the probe, but counts as a
    missed direct ack for awareness (memberlist: the awareness delta stays +1 on an indirect ack);
  - a ping-req asking us to probe ourselves is illegal (requesters exclude the target);
  - after `leave` we stop probing and push-pull but keep answering pings and gossiping, so the leave
    spreads; `join` and `set_meta` after `leave` are caller bugs and raise.
"""

from __future__ import annotations

import enum
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from swarmlet.errors import LocalProtocolError

from . import maths, messages
from .broadcast import BroadcastQueue
from .config import GossipConfig
from .messages import (
    COMPOUND_OVERHEAD_BYTES,
    MAX_INCARNATION,
    MAX_NAME_BYTES,
    Ack,
    Alive,
    BroadcastMessage,
    Dead,
    MemberState,
    Message,
    Nack,
    Ping,
    PingReq,
    PushNodeState,
    PushPullState,
    Suspect,
    alive_signed_bytes,
    estimate_size,
    is_well_formed,
    leave_signed_bytes,
    overrides,
)
from .suspicion import Suspicion

MESSAGES = messages.MESSAGES

Addr = tuple[str, int]
# sign(data) -> this member's signature over `data`.
Sign = Callable[[bytes], bytes]
# verify(node, data, signature) -> did `node`'s key sign `data`? None, not an exception, for a
# node it has no key for (yet: a member that joined since its state was applied here): that
# is not a forgery, and an honest member may relay it.
Verify = Callable[[str, bytes, bytes], bool | None]


class EventKind(enum.IntEnum):
    JOIN = 0  # a new member, or a DEAD/LEFT one back alive
    UPDATE = 1  # an alive member's meta or address changed
    SUSPECT = 2  # ALIVE -> SUSPECT
    ALIVE = 3  # SUSPECT -> ALIVE (refuted); the member may carry new meta
    FAILED = 4  # -> DEAD (a failure)
    LEFT = 5  # -> LEFT (a clean departure)


@dataclass(frozen=True, slots=True)
class Member:
    name: str
    addr: Addr
    meta: bytes
    incarnation: int
    state: MemberState
    state_change_s: float  # `now` of the last change of `state`
    # The member's own signature over its Alive at `incarnation` with this addr and meta (b"" if
    # unsigned). A state change keeps it: it covers the facts, not the state.
    signature: bytes = b""


@dataclass(frozen=True, slots=True)
class MemberEvent:
    """`member` is the member as it is after the change: take its meta from every event kind."""

    kind: EventKind
    member: Member
    now: float


@dataclass(frozen=True, slots=True)
class SendDatagram:
    """Send `msgs` as one compound UDP datagram to `addr`.

    Their estimated size (`messages.estimate_size` + COMPOUND_OVERHEAD_BYTES) is within the
    config's datagram bound; the driver checks the encoded size and drops (and counts) a datagram
    that is still larger."""

    addr: Addr
    msgs: tuple[Message, ...]


@dataclass(frozen=True, slots=True)
class StartPushPull:
    """Connect to `addr` over TCP, send `local_state(join)`, pass the reply to
    `merge_remote_state`. On a connection failure do nothing: the next interval retries."""

    addr: Addr
    join: bool


Output = SendDatagram | StartPushPull


@dataclass(slots=True)
class _Probe:
    seq_no: int
    target: str
    target_incarnation: int
    direct_deadline_s: float
    end_s: float
    indirect_sent: bool = False
    expected_nacks: int = 0
    nacks: int = 0
    helpers: tuple[str, ...] = ()  # the members asked to probe the target for us (PingReq)


@dataclass(slots=True)
class _Relay:
    """We ping a target for someone else's ping-req (SWIM §3.1)."""

    requester: Addr
    requester_seq_no: int
    nack: bool
    deadline_s: float
    target: str = ""  # who alone may answer our Ping


_COUNTERS = (
    "probes",
    "acks",
    "indirect_probes",
    "ping_reqs_sent",
    "relays",
    "nacks_sent",
    "nacks_received",
    "nacks_missed",
    "suspects",
    "suspect_confirmations",  # Lifeguard's: another accuser's own Suspect shortened a timer
    "accusations_told",  # our own failed probe's Suspect, sent straight to members
    "refutes",
    "failed",
    "dead_taken_as_suspect",  # another member's Dead before our own suspicion of X ran out
    "gossip_datagrams",
    "push_pulls",
    "corrections_sent",
    "dropped_malformed",
    "dropped_unknown_ack",
    "dropped_unknown_nack",
    "dropped_stale",
    "dropped_unknown_member",
    "dropped_wrong_target",
    "dropped_ack_of_another",  # an Ack signed by a member that was not asked (`_on_ack`)
    "dropped_in_our_name",  # another member's Suspect or Dead naming us as its accuser
    "dropped_relay_unknown_target",  # a PingReq for a node that is not a member here
    "dropped_addr_conflict",
    "dropped_addr_not_recorded",  # an Alive at another address than the member's record's
    "dropped_meta_too_large",
    "dropped_illegal",
    "dropped_above_known",  # news about X above the incarnation we know, not signed by X
    "dropped_unverified",  # an Alive or pushed state that X's key did not sign
    "dropped_datagram_shape",  # more probes, or more updates about one member, than we send
    "dropped_after_bad_signature",  # the rest of a datagram or pushed state after a forgery
    "dropped_push_pull_duplicate",  # a pushed state naming one member twice
    "refute_impossible",  # a refutation would pass MAX_INCARNATION - 1 (only our own past can ask)
)


# What one datagram of ours holds (`_send`, `_gossip`): at most one probe message, and about
# each member at most two updates (a probe's buddy Suspect, and the queued update about it: the
# queue keeps one per member). Anything more is not ours, and each message costs its receiver
# work: a Ping an Ack, a PingReq a Ping and a Nack, an Alive a signature check; one datagram of
# 6,578 Pings was 6,579 datagrams out.
_PROBES = (Ping, Ack, PingReq, Nack)
_UPDATES_ABOUT_ONE_MEMBER = 2
# Members told of our own accusation at once (`Swim._tell_accusation`): every other live one
# in a cluster of up to this many plus two (us and the suspect), a random sample beyond.
_ACCUSATION_FANOUT = 16


def _of_our_shape(msgs: Sequence[object]) -> bool:
    probes = 0
    updates: dict[object, int] = {}
    for m in msgs:
        if isinstance(m, _PROBES):
            probes += 1
            if probes > 1:
                return False
        else:
            node = getattr(m, "node", None)
            updates[node] = updates.get(node, 0) + 1
            if updates[node] > _UPDATES_ABOUT_ONE_MEMBER:
                return False
    return True


class Swim:
    def __init__(
        self,
        config: GossipConfig,
        name: str,
        addr: Addr,
        meta: bytes,
        rng: random.Random,
        now: float,
        incarnation: int = 0,
        *,
        sign: Sign | None = None,
        verify: Verify | None = None,
        recorded_addr: Callable[[str], Addr | None] | None = None,
    ) -> None:
        """`sign` signs our own Alive (else we send it unsigned); `verify`, if given, is required
        to pass for any Alive or pushed state about another member that changes our belief;
        `recorded_addr`, if given, is where the cluster's records say a member is (None: they
        do not say), and a member is taken at no other address."""
        if not name or len(name.encode()) > MAX_NAME_BYTES:
            raise ValueError(f"member name must be 1..{MAX_NAME_BYTES} bytes: {name!r}")
        if not 0 <= incarnation < MAX_INCARNATION:
            raise ValueError(f"incarnation must be in 0..{MAX_INCARNATION - 1}")
        self._check_meta(config, meta)
        self.config = config
        self.name = name
        self.addr: Addr = (addr[0], addr[1])
        self._rng = rng
        self._sign = sign
        self._verify = verify
        self._recorded_addr = recorded_addr
        self.counters: dict[str, int] = dict.fromkeys(_COUNTERS, 0)
        self._members: dict[str, Member] = {}
        self._probe_order: list[str] = []  # other members, shuffled each pass (memberlist)
        self._probe_index = 0
        self._probe: _Probe | None = None
        self._relays: dict[int, _Relay] = {}
        self._suspicions: dict[str, Suspicion] = {}
        # Verified leaves above the incarnation we know of their member, one per member, until
        # its Alive at that incarnation comes (see `_on_dead`).
        self._pending_leaves: dict[str, Dead] = {}
        self._forged = False  # a signature failed in the datagram or pushed state at hand
        # Who signed the datagram at hand (None: not known, its accusers are taken at their
        # word); a Suspect confirms a suspicion only in its accuser's own name (`_on_suspect`).
        self._signer: str | None = None
        self._gone: dict[str, float] = {}  # DEAD/LEFT others -> when to forget them
        self._queue = BroadcastQueue()
        self._outputs: list[Output] = []
        self._events: list[MemberEvent] = []
        self._awareness = 0  # Lifeguard local health score, 0 = healthy
        self._seq_no = rng.randrange(1 << 30)
        self._left = False
        self._suspect_turn = False
        self._leave_item: int | None = None
        # memberlist staggers each timer by a random fraction of its interval so members that
        # start together do not probe and gossip in lockstep.
        self._next_probe_s = now + rng.random() * config.probe_interval_s
        self._next_gossip_s = now + rng.random() * config.gossip_interval_s
        self._next_push_pull_s = now + rng.random() * config.push_pull_interval_s
        me = self._signed(Member(name, self.addr, meta, incarnation, MemberState.ALIVE, now))
        self._members[name] = me
        self._event(EventKind.JOIN, me, now)
        self._queue.queue(self._alive_of(me))

    # --- public interface ------------------------------------------------------------------------

    @property
    def incarnation(self) -> int:
        return self._members[self.name].incarnation

    @property
    def awareness(self) -> int:
        """Lifeguard local health score: probe interval and timeout are scaled by (score + 1)."""
        return self._awareness

    def members(self) -> list[Member]:
        return list(self._members.values())

    def member(self, name: str) -> Member | None:
        return self._members.get(name)

    def take_outputs(self) -> list[Output]:
        out, self._outputs = self._outputs, []
        return out

    def take_events(self) -> list[MemberEvent]:
        out, self._events = self._events, []
        return out

    def join(self, now: float, seeds: Sequence[Addr]) -> None:
        """Ask the driver for a push-pull (join=True) with each seed other than ourselves."""
        if self._left:
            raise RuntimeError("join after leave: start a new Swim with a higher incarnation")
        for seed in seeds:
            seed_addr = (seed[0], seed[1])
            if seed_addr != self.addr:
                self._outputs.append(StartPushPull(seed_addr, join=True))
                self.counters["push_pulls"] += 1

    def leave(self, now: float) -> None:
        """Broadcast a Dead about ourselves from ourselves: the others record LEFT, not FAILED."""
        if self._left:
            return
        self._left = True
        self._probe = None
        me = self._members[self.name]
        signature = b""
        if self._sign is not None:
            signature = self._sign(leave_signed_bytes(self.name, me.incarnation))
        self._leave_item = self._queue.queue(Dead(me.incarnation, self.name, self.name, signature))
        me = replace(me, state=MemberState.LEFT, state_change_s=now)
        self._members[self.name] = me
        self._event(EventKind.LEFT, me, now)

    def leave_broadcast_done(self) -> bool:
        """True once the leave was piggybacked retransmit_limit times, or nobody is left to tell."""
        if not self._left:
            return False
        if self._leave_item is None or not self._queue.is_queued(self._leave_item):
            return True
        return not any(
            m.state in (MemberState.ALIVE, MemberState.SUSPECT)
            for m in self._members.values()
            if m.name != self.name
        )

    def set_meta(self, now: float, meta: bytes) -> None:
        if self._left:
            raise RuntimeError("set_meta after leave")
        self._check_meta(self.config, meta)
        me = self._members[self.name]
        me = self._signed(replace(me, meta=meta, incarnation=me.incarnation + 1))
        self._members[self.name] = me
        self._queue.queue(self._alive_of(me))
        self._event(EventKind.UPDATE, me, now)

    def local_state(self, join: bool = False) -> PushPullState:
        return PushPullState(
            source=self.name,
            join=join,
            members=tuple(
                PushNodeState(
                    m.name, m.addr[0], m.addr[1], m.meta, m.incarnation, m.state, m.signature
                )
                for m in self._members.values()
            ),
        )

    def merge_remote_state(self, now: float, state: PushPullState, peer: str | None = None) -> None:
        """memberlist state.go `mergeState`: apply each entry as the matching message; a remote
        DEAD (or SUSPECT) becomes a Suspect, so the member gets a chance to refute. Only a
        suspicion: the pusher may hold it from a relay, not from a probe of its own, so it is
        nobody's accusation here; gossiped on, it names `peer` (the member the stream's
        certificate names; None without certificates: the state's `source`), not this member
        (memberlist's choice: a worker that pushed "X is suspect" to k members made k accusers
        of them, each gossiping it in its own name; review)."""
        raw: object = state  # decoded from a peer: trust no annotation
        entries: object = getattr(raw, "members", None)
        if (
            not isinstance(raw, PushPullState)
            or not isinstance(raw.join, bool)
            or not isinstance(raw.source, str)
            or not isinstance(entries, tuple | list)
        ):
            self.counters["dropped_malformed"] += 1
            return
        # One entry per member, as `local_state` sends: each may cost a signature check.
        names = [getattr(entry, "name", None) for entry in entries]
        if len(set(names)) != len(names):
            self.counters["dropped_push_pull_duplicate"] += 1
            return
        self._forged = False
        self._signer = None
        for entry in entries:
            if self._forged:  # an honest member pushes only what it checked
                self.counters["dropped_after_bad_signature"] += 1
                return
            if not is_well_formed(entry) or not isinstance(entry, PushNodeState):
                self.counters["dropped_malformed"] += 1
                continue
            remote_state = MemberState(entry.state)
            if entry.name == self.name and entry.incarnation > self.incarnation:
                # Whatever the peer made of it, only our own earlier Alive (signed by us: a run
                # that lost its counter) can tell us of a higher incarnation; `_on_alive` checks.
                remote_state = MemberState.ALIVE
            if remote_state is MemberState.ALIVE:
                alive = Alive(
                    entry.incarnation,
                    entry.name,
                    entry.host,
                    entry.port,
                    entry.meta,
                    entry.signature,
                )
                self._on_alive(now, alive)
            elif remote_state is MemberState.LEFT and self._verify is None:
                self._on_dead(now, Dead(entry.incarnation, entry.name, entry.name))
            else:
                # A pushed LEFT carries no proof that the member itself left (its leave
                # signature travels with its Dead, not in push-pull state): with signatures
                # on, only a suspicion, which the member refutes if it is still there.
                accuser = peer if peer is not None else raw.source
                suspect = Suspect(entry.incarnation, entry.name, accuser)
                self._on_suspect(now, suspect, direct=False)

    def handle_datagram(
        self, now: float, from_addr: Addr, msg: object, signer: str | None = None
    ) -> None:
        """`msg` is one decoded datagram: a tuple or list of messages (a compound), or one.
        Dropped whole if it is not of the shape we send (`_of_our_shape`); the rest of it is
        dropped at the first forged signature (an honest member relays only what it checked).
        `signer`: the member whose signature the transport checked on it (None without
        signatures)."""
        msgs = msg if isinstance(msg, tuple | list) else (msg,)
        if not _of_our_shape(msgs):
            self.counters["dropped_datagram_shape"] += 1
            return
        self._forged = False
        self._signer = signer
        for m in msgs:
            if self._forged:
                self.counters["dropped_after_bad_signature"] += 1
                return
            if not is_well_formed(m):
                self.counters["dropped_malformed"] += 1
                continue
            if isinstance(m, Ping):
                self._on_ping(from_addr, m)
            elif isinstance(m, Ack):
                self._on_ack(now, m)
            elif isinstance(m, PingReq):
                self._on_ping_req(now, from_addr, m)
            elif isinstance(m, Nack):
                self._on_nack(m)
            elif isinstance(m, Alive):
                self._on_alive(now, m)
            elif isinstance(m, Suspect):
                if not self._in_our_name(m.accuser):
                    direct = self._in_signers_name(m.accuser)
                    self._on_suspect(now, m, from_addr, direct=direct)
            elif isinstance(m, Dead):
                if m.accuser == m.node or not self._in_our_name(m.accuser):
                    self._on_dead(now, m, from_addr)
            else:  # a PushNodeState has no business in a datagram
                self.counters["dropped_malformed"] += 1

    def next_deadline(self) -> float:
        deadlines = [math.inf]
        if not self._left:
            deadlines += [self._next_probe_s, self._next_push_pull_s]
        if len(self._queue) and len(self._members) > 1:  # alone, there is nobody to gossip to
            deadlines.append(self._next_gossip_s)
        if self._probe is not None:
            deadlines.append(self._probe.end_s)
            if not self._probe.indirect_sent:
                deadlines.append(self._probe.direct_deadline_s)
        deadlines += [r.deadline_s for r in self._relays.values()]
        deadlines += [s.deadline_s for s in self._suspicions.values()]
        deadlines += self._gone.values()
        return min(deadlines)

    def tick(self, now: float) -> None:
        probe = self._probe
        if probe is not None and not probe.indirect_sent and now >= probe.direct_deadline_s:
            self._send_indirect_probes(probe)
        if probe is not None and now >= probe.end_s:
            self._probe_failed(now, probe)
        for seq_no, relay in list(self._relays.items()):
            if now >= relay.deadline_s:
                del self._relays[seq_no]
                if relay.nack:
                    # Lifeguard §IV-A: tell the requester we tried and got nothing.
                    self._send(relay.requester, [Nack(relay.requester_seq_no)])
                    self.counters["nacks_sent"] += 1
        for name, suspicion in list(self._suspicions.items()):
            if now >= suspicion.deadline_s:
                del self._suspicions[name]
                m = self._members.get(name)
                if m is not None and m.state is MemberState.SUSPECT:
                    self._declare_dead(now, Dead(m.incarnation, name, self.name), left=False)
        if not self._left and now >= self._next_probe_s:
            self._next_probe_s = now + self._start_probe(now)
        if now >= self._next_gossip_s:
            self._gossip(now)
            self._next_gossip_s = now + self.config.gossip_interval_s
        if not self._left and now >= self._next_push_pull_s:
            self._start_push_pull()
            interval = maths.push_pull_interval_scaled_s(
                self.config.push_pull_interval_s, len(self._members)
            )
            self._next_push_pull_s = now + interval
        for name, forget_s in list(self._gone.items()):
            if now >= forget_s:
                self._forget(name)

    # --- probing (SWIM §3.1, Lifeguard §IV-A) ----------------------------------------------------

    def _next_seq_no(self) -> int:
        self._seq_no = (self._seq_no + 1) % (messages.MAX_SEQ_NO + 1)
        return self._seq_no

    def _next_probe_target(self) -> Member | None:
        """memberlist state.go `probe`: walk the shuffled list, skip dead and left members, and
        reshuffle at the end of each pass."""
        checked = 0
        while checked <= len(self._probe_order):
            if self._probe_index >= len(self._probe_order):
                self._rng.shuffle(self._probe_order)
                self._probe_index = 0
                checked += 1
                continue
            name = self._probe_order[self._probe_index]
            self._probe_index += 1
            m = self._members.get(name)
            if m is not None and m.state in (MemberState.ALIVE, MemberState.SUSPECT):
                return m
            checked += 1
        return None

    def _suspect_to_probe(self, now: float) -> Member | None:
        """Every other probe goes to a member we suspect, least recently probed first.

        Not in memberlist or Lifeguard, whose buddy system only helps when the round robin happens
        to reach the suspect (once per n - 1 probes, 15 s at 50 members: longer than a lone
        suspicion lasts). Probing it now carries our Suspect to it, so a member that missed a
        refutation gets it back in the reply (see `_correct`), and a dead suspect collects
        independent confirmations sooner. Alternating keeps the round robin going when many
        members are suspect at once (a partition)."""
        self._suspect_turn = not self._suspect_turn
        if not self._suspect_turn or not self._suspicions:
            return None
        name, suspicion = min(self._suspicions.items(), key=lambda item: item[1].probed_s)
        member = self._members.get(name)
        if member is None or member.state is not MemberState.SUSPECT:
            return None
        suspicion.probed_s = now
        return member

    def _start_probe(self, now: float) -> float:
        """Ping the next member; return the (awareness-scaled) time until the next probe."""
        interval_s = maths.awareness_scaled_s(self.config.probe_interval_s, self._awareness)
        self._probe = None
        target = self._suspect_to_probe(now) or self._next_probe_target()
        if target is None:
            return interval_s
        timeout_s = maths.awareness_scaled_s(self.config.probe_timeout_s, self._awareness)
        seq_no = self._next_seq_no()
        self._probe = _Probe(
            seq_no, target.name, target.incarnation, now + timeout_s, now + interval_s
        )
        msgs: list[Message] = []
        if target.state is MemberState.SUSPECT:
            # Lifeguard §IV-C buddy system: tell the suspect first, so it can refute at once.
            msgs.append(Suspect(target.incarnation, target.name, self.name))
        msgs.append(Ping(seq_no, target.name))
        self._send(target.addr, msgs)
        self.counters["probes"] += 1
        return interval_s

    def _send_indirect_probes(self, probe: _Probe) -> None:
        probe.indirect_sent = True
        target = self._members.get(probe.target)
        if target is None:
            return
        peers = [
            m
            for m in self._members.values()
            if m.state is MemberState.ALIVE and m.name not in (self.name, probe.target)
        ]
        chosen = self._rng.sample(peers, min(self.config.indirect_checks, len(peers)))
        probe.helpers = tuple(peer.name for peer in chosen)
        self.counters["indirect_probes"] += 1
        for peer in chosen:
            req = PingReq(probe.seq_no, target.name, target.addr[0], target.addr[1], nack=True)
            self._send(peer.addr, [req])
            probe.expected_nacks += 1
            self.counters["ping_reqs_sent"] += 1

    def _probe_failed(self, now: float, probe: _Probe) -> None:
        self._probe = None
        # memberlist state.go `probeNode`: with nack-capable peers, each missing nack raises our
        # score (we may be the one losing packets); without peers, any failed probe does.
        if probe.expected_nacks > 0:
            missed = max(0, probe.expected_nacks - probe.nacks)
            self.counters["nacks_missed"] += missed
            self._apply_awareness(missed)
        else:
            self._apply_awareness(1)
        accusation = Suspect(probe.target_incarnation, probe.target, self.name)
        before = self._suspicions.get(probe.target)
        was_accuser = before is not None and self.name in before.accusers
        self._on_suspect(now, accusation)
        suspicion = self._suspicions.get(probe.target)
        if suspicion is not None and self.name in suspicion.accusers and not was_accuser:
            self._tell_accusation(accusation)  # once a suspicion: later probes add nothing

    def _tell_accusation(self, accusation: Suspect) -> None:
        """Our own Suspect, straight to up to `_ACCUSATION_FANOUT` live members, besides the
        gossip: only an accuser's own word confirms a suspicion (`_on_suspect`), and the gossip
        reaches a few members a round, so a failure's confirmations came slower than when
        relayed copies counted (bench/README.md, 2026-12-07 11:13). One small datagram a member,
        once a suspicion."""
        peers = [
            m
            for m in self._members.values()
            if m.name not in (self.name, accusation.node) and m.state is MemberState.ALIVE
        ]
        for peer in self._rng.sample(peers, min(len(peers), _ACCUSATION_FANOUT)):
            self._outputs.append(SendDatagram(peer.addr, (accusation,)))
            self.counters["accusations_told"] += 1

    def _on_ping(self, from_addr: Addr, ping: Ping) -> None:
        if ping.target != self.name:
            self.counters["dropped_wrong_target"] += 1
            return
        self._send(from_addr, [Ack(ping.seq_no)])

    def _on_ack(self, now: float, ack: Ack) -> None:
        """An Ack counts only in the name of a member that may send it: our probe's target, or
        a member we asked to probe it; for a probe we relay, its target. Sequence numbers are
        no secret (every Ping shows one), so a worker that sprayed Acks had probes of a dead
        member succeed, and it was never detected (review)."""
        probe = self._probe
        signer = self._signer
        if probe is not None and ack.seq_no == probe.seq_no:
            if signer is not None and signer != probe.target and signer not in probe.helpers:
                self.counters["dropped_ack_of_another"] += 1
                return
            self._probe = None
            self.counters["acks"] += 1
            # memberlist: -1 for a direct ack in time; a late or relayed ack leaves +1.
            self._apply_awareness(-1 if now <= probe.direct_deadline_s else 1)
            return
        relay = self._relays.get(ack.seq_no)
        if relay is not None:
            if signer is not None and signer != relay.target:
                self.counters["dropped_ack_of_another"] += 1
                return
            del self._relays[ack.seq_no]
            self._send(relay.requester, [Ack(relay.requester_seq_no)])
            return
        self.counters["dropped_unknown_ack"] += 1

    def _on_ping_req(self, now: float, from_addr: Addr, req: PingReq) -> None:
        if req.target == self.name:
            self.counters["dropped_illegal"] += 1
            return
        target = self._members.get(req.target)
        if target is None:
            # Relayed only to a member, at the address we hold for it: the requester's would
            # have members send pings to any address and port it named. Told, as a relay that
            # heard nothing tells it (Lifeguard: a requester missing nacks blames itself).
            self.counters["dropped_relay_unknown_target"] += 1
            if req.nack:
                self._send(from_addr, [Nack(req.seq_no)])
                self.counters["nacks_sent"] += 1
            return
        seq_no = self._next_seq_no()
        deadline_s = now + self.config.probe_timeout_s
        self._relays[seq_no] = _Relay(from_addr, req.seq_no, req.nack, deadline_s, req.target)
        self._send(target.addr, [Ping(seq_no, req.target)])
        self.counters["relays"] += 1

    def _on_nack(self, nack: Nack) -> None:
        probe = self._probe
        if probe is None or nack.seq_no != probe.seq_no or not probe.indirect_sent:
            self.counters["dropped_unknown_nack"] += 1
            return
        probe.nacks = min(probe.expected_nacks, probe.nacks + 1)
        self.counters["nacks_received"] += 1

    def _apply_awareness(self, delta: int) -> None:
        self._awareness = maths.awareness_apply_delta(
            self._awareness, delta, self.config.awareness_max_multiplier
        )

    # --- membership rules (memberlist state.go aliveNode / suspectNode / deadNode) ---------------

    def _on_alive(self, now: float, a: Alive) -> None:
        if self._left and a.node == self.name:
            return  # memberlist: never let a queued Alive undo our leave
        if len(a.meta) > self.config.max_meta_bytes:
            self.counters["dropped_meta_too_large"] += 1
            return
        old = self._members.get(a.node)
        addr = (a.host, a.port)
        if (old is None or old.addr != addr) and not self._at_recorded_addr(a.node, addr):
            # A member signs its own address, so it could name any: after a leave of its own,
            # an Alive at a victim's address would have every member probe, ping and connect
            # there (memberlist takes a dead or left member's new address).
            self.counters["dropped_addr_not_recorded"] += 1
            return
        if old is None:
            if not self._verified(a):
                return
            new = Member(a.node, addr, a.meta, a.incarnation, MemberState.ALIVE, now, a.signature)
            self._add(new)
            self._queue.queue(a)
            self._event(EventKind.JOIN, new, now)
            return
        reclaim = False
        if old.addr != addr:
            if old.state in (MemberState.DEAD, MemberState.LEFT):
                reclaim = True  # memberlist DeadNodeReclaimTime: the name moved to a new address
            else:
                self.counters["dropped_addr_conflict"] += 1
                return
        if a.node == self.name:
            if a.incarnation < old.incarnation or (
                a.incarnation == old.incarnation and a.meta == old.meta
            ):
                return  # our own news coming back to us
            if a.incarnation > old.incarnation and not self._signed_by_us(a):
                # Only we raise our incarnation: outbidding a number someone else chose would
                # let them walk us to MAX_INCARNATION, where no refutation is possible.
                self.counters["dropped_above_known"] += 1
                return
            # A different Alive about us at our incarnation, or our own from before a restart
            # that lost its counter: outbid it.
            self._refute(a.incarnation)
            return
        if not reclaim and not overrides(
            MemberState.ALIVE, a.incarnation, old.state, old.incarnation
        ):
            if a.incarnation < old.incarnation:
                self.counters["dropped_stale"] += 1
            return
        # Only now, after the cheap checks: a rebroadcast of what we know costs no verification.
        if not self._verified(a):
            return
        self._suspicions.pop(a.node, None)
        self._queue.queue(a)
        revived = old.state is not MemberState.ALIVE
        new = Member(
            a.node,
            addr,
            a.meta,
            a.incarnation,
            MemberState.ALIVE,
            now if revived else old.state_change_s,
            a.signature,
        )
        self._members[a.node] = new
        self._gone.pop(a.node, None)
        if old.state in (MemberState.DEAD, MemberState.LEFT):
            self._event(EventKind.JOIN, new, now)
        elif old.state is MemberState.SUSPECT:
            self._event(EventKind.ALIVE, new, now)
        elif old.meta != new.meta or old.addr != new.addr:
            self._event(EventKind.UPDATE, new, now)
        leave = self._pending_leaves.pop(a.node, None)
        if leave is not None and leave.incarnation == a.incarnation:
            self._on_dead(now, leave)

    def _in_signers_name(self, accuser: str) -> bool:
        return self._signer is None or accuser == self._signer

    def _in_our_name(self, accuser: str) -> bool:
        """Whether a message from another member names us as its accuser: a forgery, or an echo
        of our own accusation, which we hold already. Taken, it would be gossiped on under our
        signature, and count everywhere as our own word (review: a worker made honest members
        its accusers so)."""
        if accuser == self.name and self._signer is not None and self._signer != self.name:
            self.counters["dropped_in_our_name"] += 1
            return True
        return False

    def _on_suspect(
        self, now: float, s: Suspect, sender: Addr | None = None, *, direct: bool = True
    ) -> None:
        """`direct`: the accuser itself says so (it signed the datagram, or this member is it).
        Only then does it confirm a suspicion (Lifeguard §IV-B): any member may relay a
        Suspect, and a datagram's signature covers its signer's word only, so a compromised
        worker that named k other members as accusers cut a live member's suspicion from its
        lone 7.2 s to the confirmed 1.2 s, less than a refutation may take on a busy machine.
        An accuser's own Suspect reaches the other members straight from it
        (`_tell_accusation`)."""
        old = self._members.get(s.node)
        if old is None:
            self.counters["dropped_unknown_member"] += 1
            return
        if s.incarnation < old.incarnation:
            self.counters["dropped_stale"] += 1
            self._correct(sender, old)
            return
        if s.incarnation > old.incarnation:
            self._drop_above_known()
            return
        suspicion = self._suspicions.get(s.node)
        if suspicion is not None:
            # Lifeguard §IV-B: an independent confirmation shortens the timer; re-gossip news.
            if direct and suspicion.confirm(s.accuser):
                self.counters["suspect_confirmations"] += 1
                self._queue.queue(s)
            return
        if old.state is not MemberState.ALIVE:
            return
        if s.node == self.name:
            self._refute(s.incarnation)  # at our own incarnation: the checks above
            return
        self._queue.queue(s)
        # At the incarnation we know (see above), so the record's signature still covers it.
        new = replace(old, state=MemberState.SUSPECT, state_change_s=now)
        self._members[s.node] = new
        n = len(self._members)
        min_s = self.config.suspicion_min_s(n)
        max_s = self.config.suspicion_max_s(n)
        k = maths.suspicion_confirmations_k(self.config.suspicion_mult, n)
        accuser = s.accuser if direct else None  # a relay makes no accuser (`Suspicion`)
        self._suspicions[s.node] = Suspicion.start(now, accuser, k, min_s, max_s)
        self.counters["suspects"] += 1
        self._event(EventKind.SUSPECT, new, now)

    def _on_dead(self, now: float, d: Dead, sender: Addr | None = None) -> None:
        old = self._members.get(d.node)
        if old is None:
            self.counters["dropped_unknown_member"] += 1
            return
        if d.incarnation < old.incarnation:
            self.counters["dropped_stale"] += 1
            self._correct(sender, old)
            return
        if d.incarnation > old.incarnation:
            if d.accuser == d.node and self._leave_verified(d):
                # The member's own leave, after a refutation we have not heard yet (they often
                # leave together, the leave first): kept until the refutation's Alive comes.
                self._pending_leaves[d.node] = d
            self._drop_above_known()
            return
        if old.state in (MemberState.DEAD, MemberState.LEFT):
            self._suspicions.pop(d.node, None)
            return
        if d.node == self.name:
            self._refute(d.incarnation)  # after leave our state is LEFT: we never get here
            return
        left = d.accuser == d.node
        if left and not self._leave_verified(d):
            # A leave skips the grace a failure gets (a voter's seat is handed on at once):
            # one unsigned datagram must not make a live manager a learner.
            self.counters["dropped_unverified"] += 1
            return
        if not left and not self._death_confirmed(now, d, sender):
            self.counters["dead_taken_as_suspect"] += 1
            return
        self._declare_dead(now, d, left)

    def _death_confirmed(self, now: float, d: Dead, sender: Addr | None) -> bool:
        """Whether another member's word that X failed is taken as a death here: only once this
        member's own suspicion of X has run out, the Dead counting as its signer's
        confirmation (Lifeguard's timer; else a suspicion, or that confirmation). memberlist
        takes the word at once, so any member (a compromised worker, in this threat model)
        could have the leader write off every task of a live node with one datagram; taken
        once the suspicion was `min_s` old, with a Suspect and a Dead 1.2 s later (review). An
        honest failure's accusers reach every member in their own names
        (`_tell_accusation`), so the timers everywhere shrink to about `min_s` together."""
        direct = self._in_signers_name(d.accuser)
        suspicion = self._suspicions.get(d.node)
        if suspicion is None:
            self._on_suspect(now, Suspect(d.incarnation, d.node, d.accuser), sender, direct=direct)
            return False
        if direct and suspicion.confirm(d.accuser):
            self.counters["suspect_confirmations"] += 1
            self._queue.queue(Suspect(d.incarnation, d.node, d.accuser))
        return now >= suspicion.deadline_s

    def _leave_verified(self, d: Dead) -> bool:
        """Whether a leave is signed by the member that leaves (always, when we do not verify)."""
        if self._verify is None:
            return True
        return self._checked(
            self._verify(d.node, leave_signed_bytes(d.node, d.incarnation), d.signature)
        )

    def _declare_dead(self, now: float, d: Dead, left: bool) -> None:
        """`d.node` is dead (our own suspicion ran out, or it was confirmed long enough) or left
        (in its own signed word)."""
        old = self._members[d.node]
        self._suspicions.pop(d.node, None)
        self._queue.queue(d)
        state = MemberState.LEFT if left else MemberState.DEAD
        # At the incarnation we know (see above), so the record's signature still covers it.
        new = replace(old, state=state, state_change_s=now)
        self._members[d.node] = new
        self._gone[d.node] = now + self.config.dead_reclaim_s
        if not left:
            self.counters["failed"] += 1
        self._event(EventKind.LEFT if left else EventKind.FAILED, new, now)

    def _at_recorded_addr(self, name: str, addr: Addr) -> bool:
        if name == self.name or self._recorded_addr is None:
            return True
        recorded = self._recorded_addr(name)
        return recorded is None or recorded == addr

    def _drop_above_known(self) -> None:
        """A Suspect or Dead about X at an incarnation above the one we know for X.

        Not in SWIM or memberlist, which follow any higher incarnation in an accusation, so one
        forged at the cap could never be outbid. Only X raises X's incarnation, and it says so in
        an Alive (signed, when we verify) that reaches us as it reaches the accuser, who could
        only have learnt the higher number from it. Dropping the accusation is therefore safe
        for failure detection: at worst a suspicion waits until that Alive arrives (and our own
        probes suspect a silent X at the incarnation we know). About ourselves it is the same
        rule: we refute only an accusation at our current incarnation, so nothing another
        member sends can raise ours by more than one."""
        self.counters["dropped_above_known"] += 1

    def _correct(self, sender: Addr | None, known: Member) -> None:
        """The sender accuses a member of an incarnation that member has already refuted: send it
        the refutation directly.

        Not in memberlist. Rumour mongering leaves a tail: with retransmit limit L, a member misses
        every copy of a refutation with probability ~exp(-L * delivery rate) (~1e-3 at L = 8 and 10%
        loss), keeps its lone suspicion and declares a live member dead at the max timeout. Its
        own gossip of the stale Suspect reaches members that know better; one of them answering
        closes the gap at the cost of one datagram per stale accusation."""
        if sender is None or known.state is not MemberState.ALIVE or sender == self.addr:
            return
        if known.name == self.name and self._left:
            return
        self._send(sender, [self._alive_of(known)])
        self.counters["corrections_sent"] += 1

    def _refute(self, accused_incarnation: int) -> None:
        """SWIM §4.2: outbid the accusation with a newer incarnation and broadcast Alive.
        Lifeguard §IV-A: having to refute means others find us slow, so raise our score."""
        me = self._members[self.name]
        incarnation = max(me.incarnation, accused_incarnation) + 1
        if incarnation >= MAX_INCARNATION:
            # Only our own signed past can bring us here (others cannot raise us; see
            # `_drop_above_known`): stay put rather than send an Alive no peer would accept.
            self.counters["refute_impossible"] += 1
            return
        me = self._signed(replace(me, incarnation=incarnation))
        self._members[self.name] = me
        self._apply_awareness(1)
        self._queue.queue(self._alive_of(me))
        self.counters["refutes"] += 1

    # --- table upkeep ----------------------------------------------------------------------------

    def _add(self, member: Member) -> None:
        self._members[member.name] = member
        # memberlist: insert at a random offset so new members are not all probed together.
        self._probe_order.append(member.name)
        i = self._rng.randrange(len(self._probe_order))
        self._probe_order[i], self._probe_order[-1] = self._probe_order[-1], self._probe_order[i]

    def _forget(self, name: str) -> None:
        del self._gone[name]
        self._members.pop(name, None)
        self._suspicions.pop(name, None)
        self._pending_leaves.pop(name, None)
        i = self._probe_order.index(name)
        del self._probe_order[i]
        if i < self._probe_index:
            self._probe_index -= 1

    def _event(self, kind: EventKind, member: Member, now: float) -> None:
        self._events.append(MemberEvent(kind, member, now))

    @staticmethod
    def _check_meta(config: GossipConfig, meta: bytes) -> None:
        if len(meta) > config.max_meta_bytes:
            raise LocalProtocolError(
                f"member meta is {len(meta)} bytes; max_meta_bytes is {config.max_meta_bytes}"
            )

    def _alive_of(self, m: Member) -> Alive:
        return Alive(m.incarnation, m.name, m.addr[0], m.addr[1], m.meta, m.signature)

    # --- signed statements -----------------------------------------------------------------------

    def _signed(self, me: Member) -> Member:
        """Our own record with our signature over its facts (called whenever they change)."""
        if self._sign is None:
            return replace(me, signature=b"")
        data = alive_signed_bytes(me.name, me.incarnation, me.addr[0], me.addr[1], me.meta)
        return replace(me, signature=self._sign(data))

    def _check_signature(self, a: Alive) -> bool:
        assert self._verify is not None
        data = alive_signed_bytes(a.node, a.incarnation, a.host, a.port, a.meta)
        return self._checked(self._verify(a.node, data, a.signature))

    def _checked(self, valid: bool | None) -> bool:
        """Whether a signature was checked good, noting a forgery (a bad signature by a key we
        know): what follows it from the same sender is dropped."""
        if valid is False:
            self._forged = True
        return valid is True

    def _verified(self, a: Alive) -> bool:
        """May `a` about another member change our belief? True without `verify`."""
        if self._verify is None or self._check_signature(a):
            return True
        self.counters["dropped_unverified"] += 1
        return False

    def _signed_by_us(self, a: Alive) -> bool:
        """Is `a`, about us, our own statement? Never without `verify`: it could be anyone's."""
        return self._verify is not None and self._check_signature(a)

    # --- dissemination ---------------------------------------------------------------------------

    def _retransmit_limit(self) -> int:
        return maths.retransmit_limit(self.config.retransmit_mult, len(self._members))

    def _send(self, addr: Addr, msgs: list[Message], budget_bytes: int | None = None) -> None:
        """Emit one datagram: `msgs`, then as many queued updates as fit (SWIM §4.1 piggyback)."""
        if budget_bytes is None:
            budget_bytes = self.config.max_datagram_bytes
        used = COMPOUND_OVERHEAD_BYTES + sum(estimate_size(m) for m in msgs)
        extra: list[BroadcastMessage] = self._queue.take(
            budget_bytes - used, self._retransmit_limit()
        )
        self._outputs.append(SendDatagram(addr, (*msgs, *extra)))

    def _gossip(self, now: float) -> None:
        """memberlist state.go `gossip`: send queued updates to a few random live or suspect
        members, and to recently dead ones so a wrongly declared member hears it and refutes."""
        if not len(self._queue):
            return
        candidates = [
            m
            for m in self._members.values()
            if m.name != self.name
            and m.state in (MemberState.ALIVE, MemberState.SUSPECT, MemberState.DEAD)
        ]
        for peer in self._rng.sample(candidates, min(self.config.gossip_nodes, len(candidates))):
            budget = self.config.max_gossip_datagram_bytes - COMPOUND_OVERHEAD_BYTES
            msgs = self._queue.take(budget, self._retransmit_limit())
            if not msgs:
                return
            self._outputs.append(SendDatagram(peer.addr, tuple(msgs)))
            self.counters["gossip_datagrams"] += 1

    def _start_push_pull(self) -> None:
        """memberlist state.go `pushPull`: a full-state exchange with one random live member."""
        peers = [
            m
            for m in self._members.values()
            if m.name != self.name and m.state is MemberState.ALIVE
        ]
        if not peers:
            return
        peer = self._rng.choice(peers)
        self._outputs.append(StartPushPull(peer.addr, join=False))
        self.counters["push_pulls"] += 1
