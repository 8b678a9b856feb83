"""wire.datagram_keys: the cluster key's epochs on gossip datagrams. A sender seals under the
newest epoch it holds; a receiver opens the newest and, for a grace period after learning it, the
previous one; anything older, or the previous one past its grace, is refused as stale, an epoch
it does not hold yet as unknown. Epoch 0 keeps the format from before epochs."""

from __future__ import annotations

import pytest

from swarmlet import crypto
from swarmlet.errors import RemoteProtocolError
from swarmlet.wire.datagram_keys import HEADER_BYTES, MAGIC, DatagramKeys, epoch_aad

K0, K1, K2 = (crypto.ClusterKeys(crypto.new_key()).message_key for _ in range(3))
GRACE = 10.0


def holding(*keys: tuple[int, bytes], now: float = 0.0) -> DatagramKeys:
    """A node that learnt `keys` in order, all at `now`."""
    (epoch, key), *later = keys
    ring = DatagramKeys(epoch, key, grace_s=GRACE)
    for epoch, key in later:
        assert ring.install(epoch, key, now)
    return ring


def test_epoch_0_is_the_format_from_before_epochs() -> None:
    """A node that never saw a rotation reads and is read by one that predates epochs."""
    ring = holding((0, K0))
    legacy = crypto.Sealer(K0)
    assert ring.open(legacy.seal(b"hello", crypto.AAD_GOSSIP), 0.0) == b"hello"
    assert legacy.open(ring.seal(b"back"), crypto.AAD_GOSSIP) == b"back"


def test_a_sender_switches_to_the_newest_epoch_as_soon_as_it_holds_it() -> None:
    ring = holding((0, K0))
    assert ring.install(1, K1, now=5.0)
    data = ring.seal(b"x")
    assert data.startswith(MAGIC) and ring.epoch == 1
    assert crypto.Sealer(K1).open(data[HEADER_BYTES:], epoch_aad(1)) == b"x"
    with pytest.raises(RemoteProtocolError):  # not readable with the old key
        crypto.Sealer(K0).open(data[HEADER_BYTES:], epoch_aad(1))


def test_the_previous_epoch_opens_for_the_grace_period_only() -> None:
    late = holding((0, K0))  # a member that has not applied the rotation yet
    ring = holding((0, K0), (1, K1), now=100.0)
    old = late.seal(b"late")
    assert ring.accepted(100.0) == (1, 0)
    assert ring.open(old, 100.0 + GRACE - 0.001) == b"late"
    assert ring.open(old, 100.0 + GRACE) == "stale_epoch"
    assert ring.accepted(100.0 + GRACE) == (1,)
    # Forgotten for good: an earlier clock reading does not bring it back.
    assert ring.open(old, 100.0) == "stale_epoch"


def test_only_the_previous_epoch_has_a_grace_period() -> None:
    at_1 = holding((0, K0), (1, K1))
    ring = holding((0, K0), (1, K1), (2, K2), now=0.0)
    assert ring.accepted(0.0) == (2, 1)
    assert ring.open(at_1.seal(b"one"), 1.0) == b"one"
    assert ring.open(holding((0, K0)).seal(b"zero"), 1.0) == "stale_epoch"


def test_an_epoch_newer_than_any_held_is_unknown_not_invalid() -> None:
    """A member that applied the rotation first: this one catches up through Raft."""
    ahead = holding((0, K0), (1, K1))
    assert holding((0, K0)).open(ahead.seal(b"x"), 0.0) == "unknown_epoch"


def test_a_datagram_relabelled_with_another_epoch_does_not_open() -> None:
    """The epoch is bound into the seal: a datagram of epoch 2 relabelled 1 (a key a removed
    node may still hold during the grace period) fails, as does a forged header."""
    ring = holding((0, K0), (1, K1), (2, K2))
    data = ring.seal(b"x")
    relabelled = MAGIC + (1).to_bytes(4, "big") + data[HEADER_BYTES:]
    assert ring.open(relabelled, 0.0) == "invalid"
    assert ring.open(data, 0.0) == b"x"
    assert ring.open(MAGIC + (2).to_bytes(4, "big") + b"\0" * 40, 0.0) == "invalid"
    # Without a header, a datagram is of epoch 0, stale here, and noise is too; at epoch 0, noise
    # is invalid.
    assert ring.open(b"noise", 0.0) == "stale_epoch"
    assert holding((0, K0)).open(b"noise", 0.0) == "invalid"


def test_a_key_of_the_right_epoch_but_not_the_members_is_invalid() -> None:
    """A removed node that guesses the epoch number still lacks the key."""
    removed = holding((0, K0), (1, crypto.new_key()))
    assert holding((0, K0), (1, K1)).open(removed.seal(b"x"), 0.0) == "invalid"


def test_installing_an_epoch_that_is_not_newer_changes_nothing() -> None:
    ring = holding((0, K0), (2, K2), now=0.0)
    assert not ring.install(2, K1, now=1.0)
    assert not ring.install(1, K1, now=1.0)
    assert ring.epoch == 2 and ring.accepted(1.0) == (2, 0)
    with pytest.raises(ValueError, match="must be within"):
        ring.install(2**32, K1, now=1.0)
    with pytest.raises(ValueError, match="must be within"):
        DatagramKeys(-1, K0)
