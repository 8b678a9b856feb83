"""The cluster key's epochs on the gossip datagrams: which key seals what this node sends, which
keys open what it receives.

The cluster key seals every gossip datagram (`wire.transport`). It is shared by every member,
so it is replaced when a node is removed (`security.keyring`): each replacement is an epoch,
numbered from 0 (the key `init` made, the one the join reply carries). A datagram names the
epoch of its key in clear, bound into the seal as associated data:

    epoch 0     [sealed]                                    (the format from before epochs)
    epoch >= 1  [MAGIC (4)][u32 epoch][sealed]

Epoch 0 keeps the old format so that members and tools that never saw a rotation read each other
unchanged. A random nonce that happens to begin with MAGIC would make an epoch-0 datagram look
like an epoch one: its seal then fails and it is dropped, as a lost datagram would be (a 2^-32
chance per sender session; UDP loss is normal for gossip).

The rule. A node sends under the newest epoch it holds, as soon as it holds it. It opens the
newest epoch, and the one before for `GRACE_S` after it learnt the newer one, so a member that
applies the rotation a little later is not cut off meanwhile; an older epoch, or the previous
one past its grace, is refused as `stale_epoch` (so is anything without a header once epoch 0 is
past: noise cannot be told from an epoch-0 datagram without the key), an epoch newer than any it
holds (a member that is ahead; this node catches up through Raft) as `unknown_epoch`, and what
does not open under the key of the epoch it names as `invalid`. Only the current and the previous
keys are kept.

Pure: the caller passes the time (a monotonic clock, in seconds) to every call that depends on it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from swarmlet.crypto import AAD_GOSSIP, Sealer
from swarmlet.errors import RemoteProtocolError

MAGIC = b"\xe5SWK"
_EPOCH = struct.Struct(">I")
HEADER_BYTES = len(MAGIC) + _EPOCH.size
MAX_EPOCH = 2**32 - 1
# Long enough for every member to apply a committed command on a loaded machine (they do within
# a second or two); short enough that a key a removed node holds stops opening anything soon.
GRACE_S = 15.0


def epoch_aad(epoch: int) -> bytes:
    """What a datagram's seal binds besides its body: its channel and, from epoch 1, the epoch
    (so a datagram cannot be relabelled with another epoch)."""
    return AAD_GOSSIP if epoch == 0 else AAD_GOSSIP + _EPOCH.pack(epoch)


@dataclass
class _Key:
    epoch: int
    sealer: Sealer
    until: float = float("inf")  # opens datagrams until then (the previous key's grace)


class DatagramKeys:
    """The epochs this node holds (see the module docstring)."""

    def __init__(self, epoch: int, message_key: bytes, *, grace_s: float = GRACE_S) -> None:
        _check_epoch(epoch)
        if grace_s < 0:
            raise ValueError("the grace period cannot be negative")
        self._grace_s = grace_s
        self._current = _Key(epoch, Sealer(message_key))
        self._previous: _Key | None = None

    @property
    def epoch(self) -> int:
        """The epoch this node sends under."""
        return self._current.epoch

    def install(self, epoch: int, message_key: bytes, now: float) -> bool:
        """Send under `epoch` from now on, keep opening the current one for the grace period.
        False (nothing changes) unless `epoch` is newer than the current one."""
        _check_epoch(epoch)
        if epoch <= self._current.epoch:
            return False
        self._previous = _Key(self._current.epoch, self._current.sealer, now + self._grace_s)
        self._current = _Key(epoch, Sealer(message_key))
        return True

    def accepted(self, now: float) -> tuple[int, ...]:
        """The epochs a datagram may be sealed under now, newest first."""
        previous = self._live_previous(now)
        return (self._current.epoch,) if previous is None else (self._current.epoch, previous.epoch)

    def seal(self, body: bytes) -> bytes:
        epoch = self._current.epoch
        sealed = self._current.sealer.seal(body, epoch_aad(epoch))
        return sealed if epoch == 0 else MAGIC + _EPOCH.pack(epoch) + sealed

    def open(self, data: bytes, now: float) -> bytes | str:
        """The body of a datagram, or why it is dropped: "stale_epoch", "unknown_epoch", or
        "invalid" (not sealed under the key of the epoch it names, or damaged)."""
        epoch, sealed = _parse(data)
        key = self._key_for(epoch, now)
        if isinstance(key, str):
            return key
        try:
            return key.sealer.open(sealed, epoch_aad(epoch))
        except RemoteProtocolError:
            return "invalid"

    def _key_for(self, epoch: int, now: float) -> _Key | str:
        if epoch == self._current.epoch:
            return self._current
        if epoch > self._current.epoch:
            return "unknown_epoch"
        previous = self._live_previous(now)
        if previous is not None and epoch == previous.epoch:
            return previous
        return "stale_epoch"

    def _live_previous(self, now: float) -> _Key | None:
        previous = self._previous
        if previous is not None and now >= previous.until:
            self._previous = previous = None  # past its grace: forgotten for good
        return previous


def _parse(data: bytes) -> tuple[int, bytes]:
    if len(data) >= HEADER_BYTES and data.startswith(MAGIC):
        (epoch,) = _EPOCH.unpack_from(data, len(MAGIC))
        return epoch, data[HEADER_BYTES:]
    return 0, data


def _check_epoch(epoch: int) -> None:
    if not 0 <= epoch <= MAX_EPOCH:
        raise ValueError(f"a cluster key epoch must be within 0..{MAX_EPOCH}, got {epoch}")
