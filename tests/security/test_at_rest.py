"""The data key file and autolock (`security.at_rest`, issue #18): created in clear 0600, sealed
and unsealed as the replicated setting says (managers only), opened by the right unlock key
only. Real files, real scrypt; no sleeps."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import cast

import msgpack
import pytest
import trio
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from swarmlet import crypto
from swarmlet.errors import StorageCorruptError, UsageError
from swarmlet.node.replicated import ReplicatedState, encode_command
from swarmlet.raft.core import RaftConfig
from swarmlet.raft.driver import RaftDriver
from swarmlet.raft.storage import RaftStorage
from swarmlet.raft.types import ConfState, Entry, EntryKind, HardState, Snapshot, SnapshotMeta
from swarmlet.security import at_rest
from swarmlet.security.backup import SCRYPT_N, SCRYPT_P, SCRYPT_R, scrypt_key
from swarmlet.state.commands import InitCluster, SetAutolock
from swarmlet.state.machine import ApplyResult, ClusterState
from swarmlet.wire.transport import Counters, Transport

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
    node.sync(autolocked_state(key), MANAGERS, 1)
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
    node.sync(autolocked_state(old), MANAGERS, 1)
    node.sync(autolocked_state(new), MANAGERS, 2)
    with pytest.raises(UsageError, match="invalid unlock key"):
        at_rest.unlock(tmp_path, old)
    assert at_rest.unlock(tmp_path, new) == dek


def test_autolock_off_writes_the_key_in_clear_again(tmp_path: Path) -> None:
    dek = at_rest.read_data_key(tmp_path)
    assert dek is not None
    key = at_rest.new_unlock_key()
    node = at_rest.AtRest(tmp_path, dek, unlocked_with=None)
    node.sync(autolocked_state(key), MANAGERS, 1)
    state = autolocked_state(key)
    assert state.apply(SetAutolock(False)).ok
    node.sync(state, MANAGERS, 2)
    assert at_rest.read_data_key(tmp_path) == dek


def test_a_worker_never_locks(tmp_path: Path) -> None:
    dek = at_rest.read_data_key(tmp_path)
    assert dek is not None
    at_rest.AtRest(tmp_path, dek, unlocked_with=None).sync(
        autolocked_state(at_rest.new_unlock_key()), None, 1
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


@pytest.mark.parametrize("change", ["rotated", "turned off", "turned on"])
def test_a_setting_replayed_after_a_restart_does_not_undo_a_later_one(
    tmp_path: Path, change: str
) -> None:
    """A restarted manager replays its log from the commit index of its hard state, which may
    be older than what it had applied (it is saved with term and vote only): the replayed
    setting is not taken for news. It was: a replayed rotation sealed the data key again by the
    unlock key rotated away, a replayed "off" wrote it in clear under autolock."""
    dek = at_rest.read_data_key(tmp_path)
    assert dek is not None
    old, new = at_rest.new_unlock_key(), at_rest.new_unlock_key()
    before = {"rotated": autolocked_state(old), "turned off": autolocked_state(old)}.get(
        change, ClusterState()
    )
    after = autolocked_state(new) if change != "turned off" else ClusterState()
    node = at_rest.AtRest(tmp_path, dek, unlocked_with=None)
    node.sync(before, MANAGERS, 2)
    node.sync(after, MANAGERS, 3)  # then the node crashed; its hard state says commit 2
    file = at_rest.data_key_path(tmp_path).read_bytes()
    unlocked_with = new if change != "turned off" else None
    restarted = at_rest.AtRest(tmp_path, dek, unlocked_with=unlocked_with)
    restarted.sync(before, MANAGERS, 2)  # replayed
    assert at_rest.data_key_path(tmp_path).read_bytes() == file
    restarted.sync(after, MANAGERS, 3)  # caught up: nothing to change either
    assert at_rest.data_key_path(tmp_path).read_bytes() == file


def test_a_key_file_of_an_older_release_without_an_index_still_opens(tmp_path: Path) -> None:
    """Its sealed form authenticated the KDF parameters alone; it is followed from index 0."""
    dek, key, salt = crypto.new_key(), at_rest.new_unlock_key(), bytes(16)
    head = {"salt": salt, "n": SCRYPT_N, "r": SCRYPT_R, "p": SCRYPT_P}
    kek = scrypt_key(key, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    nonce = bytes(12)
    sealed = nonce + AESGCM(kek).encrypt(nonce, dek, at_rest.MAGIC + msgpack.packb(head))
    path = at_rest.data_key_path(tmp_path)
    path.write_bytes(at_rest.MAGIC + msgpack.packb({**head, "sealed": sealed}))
    assert at_rest.unlock(tmp_path, key) == dek
    node = at_rest.AtRest(tmp_path, dek, unlocked_with=key)
    node.sync(ClusterState(), MANAGERS, 1)  # autolock off, at any index
    assert at_rest.read_data_key(tmp_path) == dek


async def test_a_manager_restarted_behind_its_applied_index_keeps_the_current_seal(
    tmp_path: Path,
) -> None:
    """The real driver over real storage: the log holds a rotation (index 3) that the node had
    applied, and its key file followed, but its hard state says commit 2 (saved when it
    voted). Restarted with every other manager down, it applies up to 2 only: the file stays
    sealed by the current key, not by the one rotated away."""
    managers = crypto.ManagerKeys(crypto.new_key())
    old, new = at_rest.new_unlock_key(), at_rest.new_unlock_key()
    dek = crypto.new_key()
    state = ClusterState()
    init = InitCluster("c", 0.0, b"w", b"m", managers_public_key=managers.public_key)
    assert state.apply(init).ok
    assert state.apply(SetAutolock(True, at_rest.seal_unlock_key(managers, old))).ok
    rotation = SetAutolock(True, at_rest.seal_unlock_key(managers, new))
    conf = ConfState(voters=("n1", "n2", "n3"))
    cipher = at_rest.AtRest.cipher_of(dek)
    with RaftStorage.open(tmp_path / "raft", cipher=cipher) as storage:
        storage.save(
            HardState(1, None, 1), [], Snapshot(SnapshotMeta(1, 1, conf), state.snapshot())
        )
        entries = [
            Entry(1, 2, EntryKind.NORMAL, b""),
            Entry(1, 3, EntryKind.NORMAL, encode_command(rotation)),
        ]
        storage.save(None, entries)
        storage.save(HardState(2, "n2", 2))  # voted in term 2 when commit was 2
    before_crash = at_rest.AtRest(tmp_path, dek, unlocked_with=None)
    replayed = ClusterState.restore(state.snapshot())
    assert replayed.apply(rotation).ok
    before_crash.sync(replayed, managers, 3)
    assert at_rest.unlock(tmp_path, new) == dek

    replica = ReplicatedState()
    node = at_rest.AtRest(tmp_path, dek, unlocked_with=new)
    driver: RaftDriver[ApplyResult] = RaftDriver(
        "n1",
        RaftStorage.open(tmp_path / "raft", cipher=cipher),
        replica,
        cast(Transport, _Unreachable()),
        lambda _: None,
        config=RaftConfig(election_ticks=4, heartbeat_ticks=1),
        tick_interval_s=0.01,
        on_applied=lambda: node.sync(replica.state, managers, driver.applied),
    )
    assert driver.startup_commit == 2
    with trio.move_on_after(0.5):
        await driver.run()
    assert driver.applied == 2  # nobody to learn the commit of 3 from
    assert at_rest.unlock(tmp_path, new) == dek


class _Unreachable:
    """Every other manager is down: what the driver sends goes nowhere."""

    counters = Counters()
