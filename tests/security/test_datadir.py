"""security.datadir: identity files, permissions, incarnations; and `init`'s order of writes."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import msgpack
import pytest

from swarmlet.cli import agent_process
from swarmlet.cli import main as cli
from swarmlet.errors import StorageCorruptError, UsageError
from swarmlet.security import datadir
from swarmlet.security.datadir import DataDir, Identity, write_atomic

KEY = bytes(range(32))
NODE_KEY = bytes(range(1, 33))
IDENTITY = Identity(
    node_id="abc",
    cluster_id="c1",
    name="host-1",
    advertise_host="10.0.0.1",
    port=7946,
    publish_host="0.0.0.0",
    role="manager",
    seeds=("10.0.0.2:7946", "10.0.0.3:7946"),
    bootstrap=True,
)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_identity_and_key_round_trip(tmp_path: Path) -> None:
    d = DataDir(tmp_path / "data")
    assert not d.exists()
    d.write_identity(IDENTITY, KEY, NODE_KEY)
    assert d.exists()
    assert DataDir(tmp_path / "data").read_identity() == (IDENTITY, KEY)
    assert DataDir(tmp_path / "data").read_node_key() == NODE_KEY
    assert IDENTITY.addr == "10.0.0.1:7946"


def test_identity_defaults_survive_a_round_trip(tmp_path: Path) -> None:
    d = DataDir(tmp_path)
    plain = Identity("n", "c", "h", "a", 1, "p", "worker")
    d.write_identity(plain, KEY, NODE_KEY)
    assert d.read_identity()[0] == plain


def test_files_are_owner_only_and_the_directory_is_0700(tmp_path: Path) -> None:
    old = os.umask(0)  # even with a permissive umask
    try:
        d = DataDir(tmp_path / "data")
        d.write_identity(IDENTITY, KEY, NODE_KEY)
    finally:
        os.umask(old)
    assert mode(d.path) == 0o700
    assert mode(d.identity_file) == 0o600
    assert mode(d.key_file) == 0o600
    assert mode(d.node_key_file) == 0o600
    d.write_manager_key(KEY)
    assert mode(d.manager_key_file) == 0o600


def test_an_existing_open_directory_is_tightened_to_0700(tmp_path: Path) -> None:
    path = tmp_path / "data"
    path.mkdir(mode=0o755)
    DataDir(path).create()
    assert mode(path) == 0o700


def test_atomic_writes_leave_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "f"
    write_atomic(target, b"one")
    write_atomic(target, b"two")
    assert target.read_bytes() == b"two"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]


def test_reading_a_missing_directory_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="swarmlet init"):
        DataDir(tmp_path / "nope").read_identity()
    with pytest.raises(UsageError):
        DataDir(tmp_path).read_identity()  # exists, but empty


def test_a_damaged_key_file_is_reported_as_corrupt(tmp_path: Path) -> None:
    d = DataDir(tmp_path)
    d.write_identity(IDENTITY, KEY, NODE_KEY)
    d.key_file.write_bytes(KEY[:10])
    with pytest.raises(StorageCorruptError, match="damaged"):
        d.read_identity()


def test_the_managers_key_is_optional_and_can_be_removed(tmp_path: Path) -> None:
    d = DataDir(tmp_path)
    d.write_identity(IDENTITY, KEY, NODE_KEY)
    assert d.read_manager_key() is None  # a worker's data dir
    d.write_manager_key(NODE_KEY)
    assert d.read_manager_key() == NODE_KEY
    d.remove_manager_key()
    d.remove_manager_key()  # idempotent
    assert d.read_manager_key() is None and not d.manager_key_file.exists()
    d.manager_key_file.write_bytes(b"short")
    with pytest.raises(StorageCorruptError, match="damaged"):
        d.read_manager_key()


def test_removing_the_managers_key_is_made_durable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = DataDir(tmp_path)
    d.write_manager_key(KEY)
    synced: list[Path] = []
    monkeypatch.setattr(datadir, "_fsync_dir", synced.append)
    d.remove_manager_key()
    assert synced == [tmp_path]  # the unlink reaches the disk before the node acts as a worker
    d.remove_manager_key()
    assert synced == [tmp_path]  # nothing removed, nothing to sync


def test_a_missing_or_damaged_node_key_is_reported_as_corrupt(tmp_path: Path) -> None:
    d = DataDir(tmp_path)
    d.write_identity(IDENTITY, KEY, NODE_KEY)
    d.node_key_file.write_bytes(b"short")
    with pytest.raises(StorageCorruptError, match="damaged"):
        d.read_node_key()
    d.node_key_file.unlink()
    # No other node holds a copy: the way out is a new node, unless this data dir was backed up.
    with pytest.raises(StorageCorruptError, match="missing; it exists nowhere else") as caught:
        d.read_node_key()
    assert "join the cluster again as a new node" in str(caught.value)


def test_init_writes_the_managers_key_before_the_identity(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The identity is the commit point: a crash before it leaves a data dir `init` takes again,
    never one that has an identity and no managers' key (which `agent` would refuse forever)."""

    def crash(*_args: object) -> None:
        raise OSError("power cut")

    started: list[DataDir] = []
    monkeypatch.setattr(DataDir, "write_identity", crash)
    monkeypatch.setattr(
        agent_process, "run_agent_foreground", lambda d, **_kw: started.append(d) or 0
    )
    argv = ["init", "--data-dir", str(tmp_path / "n1"), "--advertise-addr", "127.0.0.1"]
    with pytest.raises(OSError, match="power cut"):
        cli.main([*argv, "--foreground"])
    d = DataDir(tmp_path / "n1")
    assert d.read_manager_key() is not None and not d.exists()
    monkeypatch.undo()
    monkeypatch.setattr(
        agent_process, "run_agent_foreground", lambda d, **_kw: started.append(d) or 0
    )
    assert cli.main([*argv, "--foreground"]) == 0
    assert d.exists() and d.read_manager_key() is not None and len(started) == 1


@pytest.mark.parametrize(
    "content",
    [b"\xc1", b"", msgpack.packb(1), msgpack.packb({"node_id": "x"})],
    ids=["garbage", "empty", "not-a-map", "missing-keys"],
)
def test_a_damaged_identity_file_is_reported_as_such(tmp_path: Path, content: bytes) -> None:
    d = DataDir(tmp_path)
    d.write_identity(IDENTITY, KEY, NODE_KEY)
    d.identity_file.write_bytes(content)
    with pytest.raises((UsageError, StorageCorruptError)):
        d.read_identity()


def test_incarnations_strictly_increase_and_start_at_the_wall_clock(tmp_path: Path) -> None:
    d = DataDir(tmp_path)
    first = d.next_incarnation(1000.0)
    assert first >= 1000
    got = [first] + [d.next_incarnation(1000.0) for _ in range(5)]
    assert got == sorted(set(got))  # strictly increasing
    assert DataDir(tmp_path).next_incarnation(999.0) > got[-1]  # a restart, clock gone back
    assert DataDir(tmp_path).next_incarnation(5000.7) >= 5000  # clock jumped ahead


def test_incarnation_is_at_least_the_whole_seconds_of_the_wall_clock(tmp_path: Path) -> None:
    # Note: int() floors, so 1234.9 gives 1234, not >= 1234.9 (whole seconds are what counts).
    assert DataDir(tmp_path).next_incarnation(1234.9) == 1234


def test_a_damaged_incarnation_file_restarts_from_the_wall_clock(tmp_path: Path) -> None:
    d = DataDir(tmp_path)
    d.incarnation_file.write_text("garbage")
    assert d.next_incarnation(77.0) == 77


def test_pid_file_is_read_and_removed(tmp_path: Path) -> None:
    d = DataDir(tmp_path)
    assert d.read_pid() is None
    d.pid_file.write_text("1234")
    assert d.read_pid() == 1234
    d.remove_pid()
    d.remove_pid()  # twice is fine
    assert d.read_pid() is None


def test_the_data_dir_comes_from_the_environment_first(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(datadir.ENV_VAR, str(tmp_path))
    assert datadir.default_data_dir() == tmp_path
    monkeypatch.delenv(datadir.ENV_VAR)
    if os.geteuid() == 0:
        assert datadir.default_data_dir() == Path("/var/lib/swarmlet")
    else:
        monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
        assert datadir.default_data_dir() == tmp_path / "swarmlet"


# ------------------------------------------------------------------ hostile files and owners


def _victim(tmp_path: Path) -> Path:
    """A file outside the data dir that a planted link points to."""
    victim = tmp_path / "victim"
    victim.write_bytes(b"original")
    victim.chmod(0o644)
    return victim


def _unchanged(victim: Path) -> bool:
    return victim.read_bytes() == b"original" and mode(victim) == 0o644


def test_a_link_planted_at_the_temporary_name_is_not_written_through(tmp_path: Path) -> None:
    victim = _victim(tmp_path)
    target = tmp_path / "data" / "f"
    target.parent.mkdir()
    (target.parent / ".f.tmp").symlink_to(victim)
    (target.parent / ".g.tmp").symlink_to(tmp_path / "nowhere")  # dangling: not created
    write_atomic(target, b"new")
    write_atomic(target.parent / "g", b"new")
    assert _unchanged(victim)
    assert not (tmp_path / "nowhere").exists()
    assert target.read_bytes() == b"new"
    assert sorted(p.name for p in target.parent.iterdir()) == ["f", "g"]


def test_a_link_planted_at_the_final_name_is_replaced_not_followed(tmp_path: Path) -> None:
    victim = _victim(tmp_path)
    target = tmp_path / "f"
    target.symlink_to(victim)
    write_atomic(target, b"new")
    assert _unchanged(victim)
    assert not target.is_symlink()
    assert target.read_bytes() == b"new"
    assert mode(target) == 0o600


def test_keys_and_the_pid_are_never_written_through_planted_links(tmp_path: Path) -> None:
    victim = _victim(tmp_path)
    d = DataDir(tmp_path / "data")
    d.create()
    d.key_file.symlink_to(victim)
    (d.path / ".node.key.tmp").symlink_to(victim)
    d.pid_file.symlink_to(victim)
    d.write_identity(IDENTITY, KEY, NODE_KEY)
    d.write_pid(4321)
    assert _unchanged(victim)
    assert d.read_identity() == (IDENTITY, KEY)
    assert d.read_node_key() == NODE_KEY
    assert d.read_pid() == 4321


def test_a_leftover_temporary_file_does_not_block_a_write(tmp_path: Path) -> None:
    target = tmp_path / "f"
    (tmp_path / ".f.tmp").write_bytes(b"half a write from before a crash")
    write_atomic(target, b"new", 0o644)
    assert target.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]


def test_a_written_file_has_exactly_its_mode_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        write_atomic(tmp_path / "f", b"x", 0o644)
    finally:
        os.umask(old)
    assert mode(tmp_path / "f") == 0o644


def test_a_data_dir_owned_by_another_user_is_refused_with_its_path_and_owner(
    tmp_path: Path,
) -> None:
    path = tmp_path / "data"
    DataDir(path).write_identity(IDENTITY, KEY, NODE_KEY)
    path.chmod(0o755)
    os.chown(path, 12345, 12345)
    for use in (DataDir(path).create, DataDir(path).read_identity):
        with pytest.raises(UsageError, match="owned by uid 12345") as raised:
            use()
        assert str(path) in str(raised.value)
        assert f"uid {os.geteuid()}" in str(raised.value)
    assert mode(path) == 0o755  # left for its owner to look at


def test_a_data_dir_reached_through_a_link_is_judged_by_the_directory(tmp_path: Path) -> None:
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    ours.mkdir()
    theirs.mkdir()
    os.chown(theirs, 12345, 12345)
    (tmp_path / "link-to-ours").symlink_to(ours)
    (tmp_path / "link-to-theirs").symlink_to(theirs)
    DataDir(tmp_path / "link-to-ours").write_identity(IDENTITY, KEY, NODE_KEY)
    assert DataDir(tmp_path / "link-to-ours").read_identity() == (IDENTITY, KEY)
    with pytest.raises(UsageError, match="owned by uid 12345"):
        DataDir(tmp_path / "link-to-theirs").write_identity(IDENTITY, KEY, NODE_KEY)
    assert list(theirs.iterdir()) == []


def test_each_directory_create_makes_is_durable_in_its_parent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Files inside are fsynced with their directory; without the parents' fsyncs a power cut
    # soon after a join could lose the whole data dir, the node's keys and first vote with it
    # (review).
    synced: list[Path] = []
    monkeypatch.setattr(datadir, "_fsync_dir", synced.append)
    DataDir(tmp_path / "a" / "node").create()
    assert {tmp_path, tmp_path / "a"} <= set(synced)
    synced.clear()
    DataDir(tmp_path / "a" / "node").create()
    assert tmp_path not in synced and tmp_path / "a" not in synced
