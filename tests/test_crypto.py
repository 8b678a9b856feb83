"""swarmlet.crypto: sealing (AES-256-GCM), nonces, cluster keys and join tokens."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from swarmlet import crypto
from swarmlet.crypto import (
    AAD_GOSSIP,
    AAD_JOIN,
    AAD_SECRET,
    AAD_TCP,
    NONCE_BYTES,
    SEAL_OVERHEAD,
    ClusterKeys,
    JoinToken,
    ManagerKeys,
    Sealer,
)
from swarmlet.errors import RemoteProtocolError, UsageError

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))


def _nonce(sealed: bytes) -> bytes:
    return sealed[:NONCE_BYTES]


# ------------------------------------------------------------------------------- sealing


@given(st.binary(max_size=300), st.binary(max_size=40))
def test_open_returns_what_was_sealed(plaintext: bytes, aad: bytes) -> None:
    sealed = Sealer(KEY).seal(plaintext, aad)
    assert len(sealed) == len(plaintext) + SEAL_OVERHEAD
    assert Sealer(KEY).open(sealed, aad) == plaintext  # any sealer with the key opens it


def test_sealing_hides_the_plaintext() -> None:
    sealed = Sealer(KEY).seal(b"attack at dawn" * 4, AAD_TCP)
    assert b"attack at dawn" not in sealed


@settings(max_examples=200)
@given(st.binary(min_size=0, max_size=64), st.data())
def test_any_flipped_bit_fails_authentication(plaintext: bytes, data: st.DataObject) -> None:
    sealed = bytearray(Sealer(KEY).seal(plaintext, AAD_GOSSIP))
    bit = data.draw(st.integers(min_value=0, max_value=len(sealed) * 8 - 1))
    sealed[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(RemoteProtocolError):
        Sealer(KEY).open(bytes(sealed), AAD_GOSSIP)


@given(st.binary(max_size=64), st.data())
def test_any_truncation_fails(plaintext: bytes, data: st.DataObject) -> None:
    sealed = Sealer(KEY).seal(plaintext, AAD_GOSSIP)
    cut = data.draw(st.integers(min_value=0, max_value=len(sealed) - 1))
    with pytest.raises(RemoteProtocolError):
        Sealer(KEY).open(sealed[:cut], AAD_GOSSIP)


def test_appended_bytes_fail_authentication() -> None:
    sealed = Sealer(KEY).seal(b"x", AAD_GOSSIP)
    with pytest.raises(RemoteProtocolError):
        Sealer(KEY).open(sealed + b"\x00", AAD_GOSSIP)


@pytest.mark.parametrize(
    ("sealed_for", "opened_as"),
    [
        (AAD_GOSSIP, AAD_TCP),
        (AAD_TCP, AAD_GOSSIP),
        (AAD_JOIN, AAD_TCP),
        (AAD_SECRET, AAD_GOSSIP),
        (AAD_TCP, b""),
    ],
)
def test_a_message_sealed_for_one_channel_does_not_open_on_another(
    sealed_for: bytes, opened_as: bytes
) -> None:
    sealed = Sealer(KEY).seal(b"payload", sealed_for)
    with pytest.raises(RemoteProtocolError, match="authentication"):
        Sealer(KEY).open(sealed, opened_as)


def test_a_message_sealed_with_another_key_fails() -> None:
    sealed = Sealer(OTHER_KEY).seal(b"payload", AAD_TCP)
    with pytest.raises(RemoteProtocolError, match="authentication"):
        Sealer(KEY).open(sealed, AAD_TCP)


@pytest.mark.parametrize("length", [0, 1, SEAL_OVERHEAD - 1])
def test_shorter_than_nonce_and_tag_is_rejected(length: int) -> None:
    with pytest.raises(RemoteProtocolError, match="too short"):
        Sealer(KEY).open(b"\x00" * length, AAD_TCP)


def test_random_garbage_of_any_length_is_rejected() -> None:
    for length in (SEAL_OVERHEAD, SEAL_OVERHEAD + 1, 100, 1500):
        with pytest.raises(RemoteProtocolError):
            Sealer(KEY).open(bytes(length), AAD_TCP)


# ------------------------------------------------------------------------------- nonces


def test_nonces_never_repeat_within_a_sealer() -> None:
    sealer = Sealer(KEY)
    nonces = {_nonce(sealer.seal(b"", AAD_GOSSIP)) for _ in range(5000)}
    assert len(nonces) == 5000


def test_two_sealers_of_one_key_draw_different_prefixes() -> None:
    prefixes = {_nonce(Sealer(KEY).seal(b"", AAD_GOSSIP))[:8] for _ in range(50)}
    assert len(prefixes) == 50


def test_nonce_counter_counts_up_from_one_under_one_prefix() -> None:
    sealer = Sealer(KEY)
    first, second = _nonce(sealer.seal(b"", b"")), _nonce(sealer.seal(b"", b""))
    assert first[:8] == second[:8]
    assert int.from_bytes(first[8:]) == 1
    assert int.from_bytes(second[8:]) == 2


def test_prefix_is_redrawn_before_the_counter_wraps() -> None:
    sealer = Sealer(KEY)
    sealer._counter = 0xFFFFFFFE
    last = _nonce(sealer.seal(b"a", b""))
    assert last[8:] == b"\xff\xff\xff\xff"  # the last counter value of this prefix
    after = _nonce(sealer.seal(b"b", b""))
    assert after[:8] != last[:8]
    assert int.from_bytes(after[8:]) == 1


def test_messages_sealed_around_the_prefix_change_still_open() -> None:
    sealer = Sealer(KEY)
    sealer._counter = 0xFFFFFFFE
    sealed = [sealer.seal(bytes([i]), AAD_TCP) for i in range(3)]
    assert [Sealer(KEY).open(s, AAD_TCP) for s in sealed] == [b"\x00", b"\x01", b"\x02"]
    assert len({_nonce(s) for s in sealed}) == 3


# ------------------------------------------------------------------------------- keys


def test_derived_keys_are_distinct_deterministic_and_not_the_master() -> None:
    keys, managers = ClusterKeys(KEY), ManagerKeys(KEY)
    assert len({KEY, keys.message_key, managers.secret_key, managers.token_key}) == 4
    assert ClusterKeys(KEY).message_key == keys.message_key
    assert ManagerKeys(KEY).secret_key == managers.secret_key
    assert len(keys.message_key) == crypto.KEY_BYTES


def test_fingerprint_is_stable_per_key_and_differs_between_keys() -> None:
    assert crypto.fingerprint(KEY) == crypto.fingerprint(bytes(KEY))
    assert ClusterKeys(KEY).fingerprint == crypto.fingerprint(KEY)
    assert crypto.fingerprint(KEY) != crypto.fingerprint(OTHER_KEY)
    assert re.fullmatch(r"[0-9a-f]{16}", crypto.fingerprint(KEY))


def test_new_keys_and_ids_are_random() -> None:
    assert len(crypto.new_key()) == crypto.KEY_BYTES
    assert crypto.new_key() != crypto.new_key()
    ids = {crypto.new_id() for _ in range(100)}
    assert len(ids) == 100
    assert all(re.fullmatch(r"[a-z2-7]+", i) for i in ids)


# ------------------------------------------------------------------------------- join tokens


def test_join_token_round_trips_through_its_text() -> None:
    token = JoinToken.new(ClusterKeys(KEY))
    text = str(token)
    assert text.startswith("SWLT-1-")
    assert JoinToken.parse(text) == token
    assert JoinToken.parse(f"  {text}\n") == token  # pasted with whitespace
    assert token.cluster_fingerprint == ClusterKeys(KEY).fingerprint


def test_each_new_token_has_its_own_secret_key_and_key_id() -> None:
    keys = ClusterKeys(KEY)
    tokens = [JoinToken.new(keys) for _ in range(20)]
    assert len({t.secret for t in tokens}) == 20
    assert len({t.join_key for t in tokens}) == 20
    assert len({t.key_id for t in tokens}) == 20
    assert all(len(t.key_id) == crypto.KEY_ID_BYTES for t in tokens)


def test_key_id_and_join_key_are_stable_for_one_token() -> None:
    token = JoinToken.new(ClusterKeys(KEY))
    again = JoinToken.parse(str(token))
    assert again.join_key == token.join_key
    assert again.key_id == token.key_id
    assert token.key_id not in token.join_key  # the id does not reveal the key


def test_a_joiner_and_the_cluster_share_the_join_key() -> None:
    token = JoinToken.new(ClusterKeys(KEY))
    sealed = Sealer(JoinToken.parse(str(token)).join_key).seal(b"join me", AAD_JOIN)
    assert Sealer(token.join_key).open(sealed, AAD_JOIN) == b"join me"
    with pytest.raises(RemoteProtocolError):
        Sealer(JoinToken.new(ClusterKeys(KEY)).join_key).open(sealed, AAD_JOIN)


GOOD_FP = "0123456789abcdef"
GOOD_SECRET = "abcdefghijklmnopqrstuvwxyz234567"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "SWLT-1-",
        f"SWLT-2-{GOOD_FP}-{GOOD_SECRET}",
        f"swlt-1-{GOOD_FP}-{GOOD_SECRET}",
        f"{GOOD_FP}-{GOOD_SECRET}",
        f"SWLT-1-{GOOD_FP}",
        f"SWLT-1-{GOOD_FP}-",
        f"SWLT-1-{GOOD_FP[:-1]}-{GOOD_SECRET}",
        f"SWLT-1-{GOOD_FP}0-{GOOD_SECRET}",
        f"SWLT-1-{GOOD_FP}-{GOOD_SECRET[:15]}",
        f"SWLT-1-{GOOD_FP}-{GOOD_SECRET}-extra",
        f"SWLT-1-{GOOD_FP}--{GOOD_SECRET}",
    ],
)
def test_malformed_tokens_are_usage_errors(text: str) -> None:
    with pytest.raises(UsageError, match="invalid join token"):
        JoinToken.parse(text)


def test_a_well_formed_token_parses_into_its_parts() -> None:
    token = JoinToken.parse(f"SWLT-1-{GOOD_FP}-{GOOD_SECRET}")
    assert token == JoinToken(GOOD_FP, GOOD_SECRET)


@pytest.mark.parametrize(
    "text",
    [
        f"SWLT-1-{'z' * 16}-{GOOD_SECRET}",
        f"SWLT-1-{GOOD_FP}-{'!' * 32}",
    ],
)
def test_tokens_with_characters_outside_their_alphabet_are_usage_errors(text: str) -> None:
    with pytest.raises(UsageError):
        JoinToken.parse(text)


def test_a_data_dirs_key_size_is_the_key_size() -> None:
    # `security.datadir` checks key files against its own copy (it loads no cryptography).
    from swarmlet.security import datadir

    assert datadir.KEY_BYTES == crypto.KEY_BYTES
