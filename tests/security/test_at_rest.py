"""The data key file and autolock (`security.at_rest`, issue #18): created in clear 0600, sealed
and unsealed as the replicated setting says (managers only), opened by the right unlock key
only. Real files, real scrypt; no sleeps."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from swarmlet import crypto
from swarmlet.errors import StorageCorruptError, UsageError
from swarmlet.security import at_rest
from swarmlet.state.commands import SetAutolock
from swarmlet.state.machine import ClusterState

MANAGERS = crypto.ManagerKeys(bytes(range(32)))


def autolocked_state(key: str) -> ClusterState:
    state = ClusterState()
    assert state.apply(SetAutolock(True, at_rest.seal_unlock_key(MANAGERS, key))).ok
    return state


def test_a_new_node_gets_a_clear_data_key_owner_only(tmp_path: Path) -> None:
    dek = at_rest.read_data_key(tmp_path)
    assert dek is not None and len(dek) == 32
    path = at_rest.data_key_path(tmp_path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert at_rest.read_data_key(tmp_path) == dek  # the same key on the next start
    assert not at_rest.is_locked(tmp_path)


def test_autolock_seals_the_key_and_only_the_unlock_key_opens_it(tmp_path: Path) -> None:
    dek = at_rest.read_data_key(tmp_path)
    assert dek is not None
    node = at_rest.AtRest(tmp_path, dek, unlocked_with=None)
    key = at_rest.new_unlock_key()
    node.sync(autolocked_state(key), MANAGERS)
    assert at_rest.is_locked(tmp_path)
    assert dek not in at_rest.data_key_path(tmp_path).read_bytes()
    assert at_rest.read_data_key(tmp_path) is None
    with pytest.raises(UsageError, match="does not open this node's data key"):
        at_rest.unlock(tmp_path, at_rest.new_unlock_key())
    assert at_rest.unlock(tmp_path, key) == dek


def test_rotation_reseals_and_the_old_key_is_refused(tmp_path: Path) -> None:
    dek = at_rest.read_data_key(tmp_path)
    assert dek is not None
    old, new = at_rest.new_unlock_key(), at_rest.new_unlock_key()
    node = at_rest.AtRest(tmp_path, dek, unlocked_with=None)
    node.sync(autolocked_state(old), MANAGERS)
    node.sync(autolocked_state(new), MANAGERS)
    with pytest.raises(UsageError, match="invalid unlock key"):
        at_rest.unlock(tmp_path, old)
    assert at_rest.unlock(tmp_path, new) == dek


def test_autolock_off_writes_the_key_in_clear_again(tmp_path: Path) -> None:
    dek = at_rest.read_data_key(tmp_path)
    assert dek is not None
    key = at_rest.new_unlock_key()
    node = at_rest.AtRest(tmp_path, dek, unlocked_with=None)
    node.sync(autolocked_state(key), MANAGERS)
    state = autolocked_state(key)
    assert state.apply(SetAutolock(False)).ok
    node.sync(state, MANAGERS)
    assert at_rest.read_data_key(tmp_path) == dek


def test_a_worker_never_locks(tmp_path: Path) -> None:
    dek = at_rest.read_data_key(tmp_path)
    assert dek is not None
    at_rest.AtRest(tmp_path, dek, unlocked_with=None).sync(
        autolocked_state(at_rest.new_unlock_key()), None
    )
    assert not at_rest.is_locked(tmp_path)


def test_malformed_unlock_key_and_damaged_file_are_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="invalid unlock key: expected SWLKEY-1-"):
        at_rest.check_unlock_key("SWLKEY-1-short")
    at_rest.data_key_path(tmp_path).write_bytes(b"garbage")
    with pytest.raises(StorageCorruptError, match="is damaged"):
        at_rest.read_data_key(tmp_path)


def test_state_rejects_autolock_on_without_a_key_and_off_with_one() -> None:
    state = ClusterState()
    assert not state.apply(SetAutolock(True)).ok
    assert not state.apply(SetAutolock(False, b"blob")).ok
    assert not state.autolock


def test_autolock_setting_survives_a_snapshot() -> None:
    state = autolocked_state(at_rest.new_unlock_key())
    restored = ClusterState.restore(state.snapshot())
    assert restored.autolock and restored.sealed_unlock_key == state.sealed_unlock_key


def test_workers_cannot_open_the_unlock_key_in_the_state() -> None:
    key = at_rest.new_unlock_key()
    sealed = at_rest.seal_unlock_key(MANAGERS, key)
    assert key.encode() not in sealed
    with pytest.raises(Exception, match="authentication"):
        at_rest.open_unlock_key(crypto.ManagerKeys(bytes(32)), sealed)
