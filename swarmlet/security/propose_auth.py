"""Who may have the leader commit a command: managers only, proven with the managers' key.

Every member holds the cluster key, workers too, so a `ProposeRequest` on the cluster channel
proves only membership. A worker that could propose would make itself a manager, or a service
that mounts any secret on it. So the proposer signs the request with an HMAC-SHA256 under a key
derived from the managers' key (`crypto.ManagerKeys.propose_key`) over the encoded command, its
own id, the leader's id, a fresh nonce and its wall-clock time; the leader (`ProposeGuard`)
commits it only if the MAC holds, the request is addressed to it, its time is within
`MAX_SKEW_S` of the leader's clock and its nonce is new.

Non-managers propose nothing. The writes that reach the leader from elsewhere are a user's
(the control API, which refuses them on a worker: `api.nodes.managers_only`) and the join
handler's (`security.join.JoinAcceptor`, on managers only: only they can open the join tokens).
The rest is proposed by the leader itself (orchestration, voter policy, autoscaling); a worker's
observations (task states, liveness, leaving) travel by gossip, and no agent rewrites its own
record when it restarts. So an unauthenticated request is refused whatever its command; nothing
needs the "about the proposer's own node" exception.

Replays. The seen nonces are kept until their time leaves the window, at most `MAX_SEEN` of
them: past that, the oldest are forgotten. Everything sent at or before the newest forgotten
time is refused (a rising floor), so a replay is never accepted for lack of memory. The memory
is the leader's: a request captured on the wire could be replayed to the same leader after it
restarted, within `MAX_SKEW_S` of being sent (binding the leader's id stops replays to another
manager).

A rotation of the managers' key (`security.managers_key_rotation`, when a manager leaves the
managers). The leader checks a MAC under the key its own state names, and a MAC under the key
it held just before is refused too, with its own reason ("made with the previous managers'
key"), for no grace period. Why not accept the previous key for a while: the proposer signed
with it because it had not applied the rotation yet, so its command was built on the state
before it, and may carry a value sealed under the retired key (a secret, a join token, a
registry credential, the managers' key for a node it admits or promotes) that no manager could
open once committed. Refused, the write fails at once with that reason, and the user (or the
loop that wrote it) retries it from a state that has caught up, in milliseconds. What a grace
would have bought is only the absence of that retry; the demoted manager itself gains nothing
either way, as its certificate is no longer a manager's (`node.forwarding` checks the sender
before the MAC).

Pure: the time and the nonce come in; no I/O.
"""

from __future__ import annotations

import heapq
import math
import struct

from swarmlet.crypto import ManagerKeys
from swarmlet.errors import RemoteProtocolError
from swarmlet.wire.peer_rpc import ProposeRequest

MAX_SKEW_S = 60.0  # how far a request's time may be from the leader's clock, either way
MAX_SEEN = 65536  # nonces remembered (about 2 MB): a full window of busy forwarded writes
NONCE_BYTES = 16


def _signed_part(request: ProposeRequest) -> bytes:
    """Every field but the MAC, each length-prefixed so no two requests share an encoding."""
    parts = (
        request.command,
        request.proposer.encode(),
        request.leader.encode(),
        request.nonce,
        struct.pack(">d", request.sent_at),
    )
    return b"".join(struct.pack(">I", len(p)) + p for p in parts)


def sign(
    keys: ManagerKeys, command: bytes, *, proposer: str, leader: str, nonce: bytes, now: float
) -> ProposeRequest:
    """A `ProposeRequest` for `command` (wire-encoded) from `proposer` to `leader`."""
    unsigned = ProposeRequest(command, proposer, leader, nonce, now)
    return ProposeRequest(command, proposer, leader, nonce, now, keys.mac(_signed_part(unsigned)))


class ProposeGuard:
    """The leader's check of forwarded requests, with its memory of the nonces it accepted."""

    def __init__(self, *, max_skew_s: float = MAX_SKEW_S, max_seen: int = MAX_SEEN) -> None:
        self.max_skew_s = max_skew_s
        self.max_seen = max_seen
        self._seen: set[bytes] = set()
        self._by_time: list[tuple[float, bytes]] = []  # a heap of (sent_at, nonce), oldest first
        self._floor = -math.inf  # requests sent at or before this are refused (see the docstring)
        # The managers' keys of the last checks: the current one, and the one it replaced (only
        # to say why a request under it is refused: see the docstring).
        self._current: ManagerKeys | None = None
        self._previous: ManagerKeys | None = None

    def check(
        self, keys: ManagerKeys | None, request: ProposeRequest, *, leader: str, now: float
    ) -> str:
        """Why `request` may not be proposed by `leader` at `now`; an empty string if it may,
        and then its nonce is remembered."""
        if keys is None:
            return "this node does not hold the managers' key"
        if keys != self._current:
            self._previous, self._current = self._current, keys
        try:
            keys.check_mac(_signed_part(request), request.mac)
        except RemoteProtocolError:
            if self._authenticated_by_previous(request):
                return (
                    "made with the previous managers' key (it was just rotated, and the "
                    "proposer had not applied the rotation yet): retry the write"
                )
            return "not authenticated with the managers' key: only managers may write"
        if request.leader != leader:
            return f"addressed to another leader ({request.leader})"
        skew = now - request.sent_at
        if not abs(skew) <= self.max_skew_s:  # also refuses a NaN
            return f"stale: {abs(skew):.0f} s off the leader's clock (max {self.max_skew_s:.0f})"
        if len(request.nonce) != NONCE_BYTES:
            return f"the nonce must be {NONCE_BYTES} bytes"
        # Out of the window: a replay of these is refused as stale anyway (and by the floor,
        # should the leader's clock step back).
        while self._by_time and self._by_time[0][0] < now - self.max_skew_s:
            self._forget_oldest()
        if request.sent_at <= self._floor or request.nonce in self._seen:
            return "replayed"
        self._seen.add(request.nonce)
        heapq.heappush(self._by_time, (request.sent_at, request.nonce))
        while len(self._by_time) > self.max_seen:
            self._forget_oldest()
        return ""

    def _authenticated_by_previous(self, request: ProposeRequest) -> bool:
        if self._previous is None:
            return False
        try:
            self._previous.check_mac(_signed_part(request), request.mac)
        except RemoteProtocolError:
            return False
        return True

    def _forget_oldest(self) -> None:
        sent_at, nonce = heapq.heappop(self._by_time)
        self._seen.discard(nonce)
        self._floor = max(self._floor, sent_at)
