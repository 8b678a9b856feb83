"""swarmlet.crypto: sealing to a node's public key, and the managers' key (seals, signatures,
MACs)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from swarmlet import crypto
from swarmlet.crypto import (
    PUBLIC_KEY_BYTES,
    SEALED_TO_OVERHEAD,
    ManagerKeys,
    new_node_key,
    open_sealed,
    public_key_of,
    seal_to,
)
from swarmlet.errors import RemoteProtocolError

NODE_KEY = new_node_key()
OTHER_NODE_KEY = new_node_key()
AAD = crypto.delivery_aad("node-1", "task-1", b"nonce-1")
MANAGERS = ManagerKeys(bytes(range(32)))


# ------------------------------------------------------------------------------- seal_to


@given(st.binary(max_size=300))
def test_a_sealed_value_opens_with_the_recipients_private_key(plaintext: bytes) -> None:
    sealed = seal_to(public_key_of(NODE_KEY), plaintext, AAD)
    assert len(sealed) == len(plaintext) + SEALED_TO_OVERHEAD
    assert open_sealed(NODE_KEY, sealed, AAD) == plaintext


def test_each_seal_uses_a_new_ephemeral_key_and_hides_the_plaintext() -> None:
    public = public_key_of(NODE_KEY)
    first, second = (seal_to(public, b"hunter2 hunter2", AAD) for _ in range(2))
    assert first[:PUBLIC_KEY_BYTES] != second[:PUBLIC_KEY_BYTES]
    assert first != second
    assert b"hunter2" not in first


def test_another_private_key_cannot_open_it() -> None:
    sealed = seal_to(public_key_of(NODE_KEY), b"s3cret", AAD)
    with pytest.raises(RemoteProtocolError):
        open_sealed(OTHER_NODE_KEY, sealed, AAD)


@settings(max_examples=200)
@given(st.binary(max_size=64), st.data())
def test_any_flipped_bit_fails(plaintext: bytes, data: st.DataObject) -> None:
    sealed = bytearray(seal_to(public_key_of(NODE_KEY), plaintext, AAD))
    bit = data.draw(st.integers(min_value=0, max_value=len(sealed) * 8 - 1))
    sealed[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(RemoteProtocolError):
        open_sealed(NODE_KEY, bytes(sealed), AAD)


@given(st.binary(max_size=64), st.data())
def test_any_truncation_fails(plaintext: bytes, data: st.DataObject) -> None:
    sealed = seal_to(public_key_of(NODE_KEY), plaintext, AAD)
    cut = data.draw(st.integers(min_value=0, max_value=len(sealed) - 1))
    with pytest.raises(RemoteProtocolError):
        open_sealed(NODE_KEY, sealed[:cut], AAD)


def test_a_delivery_for_one_task_or_node_does_not_open_as_another() -> None:
    sealed = seal_to(public_key_of(NODE_KEY), b"s3cret", AAD)
    for aad in (
        crypto.delivery_aad("node-1", "task-2", b"nonce-1"),
        crypto.delivery_aad("node-2", "task-1", b"nonce-1"),
        crypto.delivery_aad("node-1", "task-1", b"nonce-2"),  # an answer to another request
    ):
        with pytest.raises(RemoteProtocolError):
            open_sealed(NODE_KEY, sealed, aad)


@pytest.mark.parametrize(
    "public_key",
    [b"", bytes(31), bytes(33), bytes(32)],  # bytes(32): the all-zero, low-order point
    ids=["empty", "short", "long", "low-order"],
)
def test_an_unusable_public_key_is_refused(public_key: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        seal_to(public_key, b"x", AAD)


def test_node_keys_are_random_and_their_public_halves_stable() -> None:
    assert NODE_KEY != OTHER_NODE_KEY
    assert public_key_of(NODE_KEY) == public_key_of(NODE_KEY)
    assert len(public_key_of(NODE_KEY)) == PUBLIC_KEY_BYTES
    assert crypto.check_public_key(public_key_of(NODE_KEY)) == public_key_of(NODE_KEY)


# ------------------------------------------------------------------------------- the managers' key


def test_secrets_round_trip_and_another_managers_key_cannot_open_them() -> None:
    sealed = MANAGERS.seal_secret("x1", b"api-key")
    assert b"api-key" not in sealed
    assert MANAGERS.open_secret("x1", sealed) == b"api-key"
    with pytest.raises(RemoteProtocolError):
        ManagerKeys(bytes(32)).open_secret("x1", sealed)


def test_a_sealed_secret_cannot_be_moved_to_another_secret() -> None:
    sealed = MANAGERS.seal_secret("x1", b"api-key")
    with pytest.raises(RemoteProtocolError):
        MANAGERS.open_secret("x2", sealed)


def test_the_managers_signature_verifies_with_their_public_key_only() -> None:
    signature = MANAGERS.sign(b"delivery")
    assert len(signature) == crypto.SIGNATURE_BYTES
    crypto.check_signature(MANAGERS.public_key, signature, b"delivery")
    other = ManagerKeys(bytes(32))
    assert other.public_key != MANAGERS.public_key
    assert MANAGERS.public_key == ManagerKeys(bytes(range(32))).public_key  # derived, stable
    for public_key, sig, data in (
        (MANAGERS.public_key, signature, b"delivery!"),  # other data
        (other.public_key, signature, b"delivery"),  # another key
        (MANAGERS.public_key, other.sign(b"delivery"), b"delivery"),  # a forged signature
        (MANAGERS.public_key, b"", b"delivery"),
        (b"", signature, b"delivery"),  # a state without the managers' public key
    ):
        with pytest.raises(RemoteProtocolError):
            crypto.check_signature(public_key, sig, data)


def test_a_mac_checks_only_with_the_same_key_and_data() -> None:
    mac = MANAGERS.mac(b"command")
    MANAGERS.check_mac(b"command", mac)
    with pytest.raises(RemoteProtocolError):
        MANAGERS.check_mac(b"command2", mac)
    with pytest.raises(RemoteProtocolError):
        ManagerKeys(bytes(32)).check_mac(b"command", mac)
    with pytest.raises(RemoteProtocolError):
        MANAGERS.check_mac(b"command", mac[:-1])


def test_each_purpose_has_its_own_derived_key() -> None:
    keys = {MANAGERS.secret_key, MANAGERS.token_key, MANAGERS.propose_key, MANAGERS.master}
    assert len(keys) == 4


def test_a_sealed_token_opens_only_under_its_own_role() -> None:
    sealed = MANAGERS.seal_token("worker", "SWLT-1-x-y")
    assert MANAGERS.open_token("worker", sealed) == "SWLT-1-x-y"
    with pytest.raises(RemoteProtocolError):
        MANAGERS.open_token("manager", sealed)  # cannot be passed off as the manager token


def test_the_managers_key_sealed_to_a_node_opens_only_for_that_node() -> None:
    blob = MANAGERS.seal_to_node("n1", public_key_of(NODE_KEY))
    assert MANAGERS.master not in blob
    assert ManagerKeys.open_from_node(NODE_KEY, "n1", blob) == MANAGERS
    with pytest.raises(RemoteProtocolError):
        ManagerKeys.open_from_node(OTHER_NODE_KEY, "n1", blob)
    with pytest.raises(RemoteProtocolError):
        ManagerKeys.open_from_node(NODE_KEY, "n2", blob)  # moved to another node's record
