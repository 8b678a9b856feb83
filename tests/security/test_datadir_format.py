"""security.datadir_format: the data dir's FORMAT file, migration of an older data dir, refusal of
a newer one (issue #18). The end-to-end case, a data dir made by the previous release itself, is
tests/integration/test_upgrade.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from swarmlet import __version__
from swarmlet.errors import StorageCorruptError
from swarmlet.node.main import run_agent
from swarmlet.security import datadir_format
from swarmlet.security.datadir import DataDir, Identity, write_atomic
from swarmlet.security.datadir_format import (
    DATA_FORMAT,
    FORMAT_FILE_NAME,
    DataDirTooNewError,
    FormatRecord,
    read_format,
)

IDENTITY = Identity("abc", "c1", "host-1", "10.0.0.1", 7946, "0.0.0.0", "manager")


def format_of(path: Path) -> dict[str, object]:
    body: dict[str, object] = json.loads((path / FORMAT_FILE_NAME).read_text())
    return body


def a_release_1_data_dir(path: Path) -> DataDir:
    """What every release before versions left: a node's files, no FORMAT."""
    d = DataDir(path)
    d.write_identity(IDENTITY, bytes(32), bytes(range(32)))
    (path / FORMAT_FILE_NAME).unlink()
    (path / "raft").mkdir()
    (path / "raft" / "hardstate").write_bytes(b"\x00\x01raft bytes")
    return d


def test_a_fresh_data_dir_gets_this_release_s_format_before_anything_else(tmp_path: Path) -> None:
    d = DataDir(tmp_path / "data")
    d.create()
    assert sorted(p.name for p in d.path.iterdir()) == [FORMAT_FILE_NAME]
    assert format_of(d.path) == {"format": DATA_FORMAT, "written_by": __version__}
    d.write_identity(IDENTITY, bytes(32), bytes(range(32)))
    assert format_of(d.path)["format"] == DATA_FORMAT
    assert d.migrate_format() == DATA_FORMAT  # nothing to do


def test_a_data_dir_without_format_but_with_files_is_format_1(tmp_path: Path) -> None:
    d = a_release_1_data_dir(tmp_path / "data")
    assert read_format(d.path) == FormatRecord(1, "")
    assert read_format(tmp_path / "missing") is None
    (tmp_path / "empty").mkdir()
    assert read_format(tmp_path / "empty") is None


def test_an_older_data_dir_is_migrated_and_its_files_are_kept(tmp_path: Path) -> None:
    d = a_release_1_data_dir(tmp_path / "data")
    before = {p.relative_to(d.path): p.read_bytes() for p in d.path.rglob("*") if p.is_file()}
    assert d.migrate_format() == 1
    assert format_of(d.path) == {"format": DATA_FORMAT, "written_by": __version__}
    after = {p.relative_to(d.path): p.read_bytes() for p in d.path.rglob("*") if p.is_file()}
    assert after.pop(Path(FORMAT_FILE_NAME))
    assert after == before
    assert d.read_identity()[0] == IDENTITY
    assert d.migrate_format() == DATA_FORMAT  # a second start finds it done


def test_a_data_dir_that_create_finds_holding_files_is_left_for_the_migration(
    tmp_path: Path,
) -> None:
    """`create` (any write) stamps only a fresh directory: stamping an old one would skip its
    migration."""
    d = a_release_1_data_dir(tmp_path / "data")
    d.write_member_keys({"n1": bytes(32)})
    assert not (d.path / FORMAT_FILE_NAME).exists()


def test_every_older_format_has_a_migration_path() -> None:
    for found in range(1, DATA_FORMAT + 1):
        steps = datadir_format.pending_migrations(found)
        assert [n for n, _ in steps] == list(range(found, DATA_FORMAT))


def newer(path: Path) -> None:
    path.mkdir(exist_ok=True)
    (path / FORMAT_FILE_NAME).write_text('{"format": 3, "written_by": "9.9.9"}\n')


def test_a_newer_data_dir_is_refused_saying_which_version_wrote_it(tmp_path: Path) -> None:
    d = DataDir(tmp_path)
    d.write_identity(IDENTITY, bytes(32), bytes(range(32)))
    newer(tmp_path)
    for refused in (d.migrate_format, d.read_identity, d.check_format):
        with pytest.raises(DataDirTooNewError) as exc:
            refused()
        message = str(exc.value)
        assert "format 3" in message and "swarmlet 9.9.9" in message, message
        assert f"up to {DATA_FORMAT}" in message
    assert format_of(tmp_path) == {"format": 3, "written_by": "9.9.9"}  # never rewritten


def test_the_agent_refuses_a_newer_data_dir_with_exit_status_2(tmp_path: Path) -> None:
    d = DataDir(tmp_path)
    d.write_identity(IDENTITY, bytes(32), bytes(range(32)))
    newer(tmp_path)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert run_agent(d) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == names  # nothing opened, nothing written
    assert format_of(tmp_path)["format"] == 3


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"not json", id="not-json"),
        pytest.param(b'{"format": 0, "written_by": ""}', id="format-0"),
        pytest.param(b'{"format": "2", "written_by": ""}', id="format-a-string"),
        pytest.param(b'{"format": true, "written_by": ""}', id="format-a-bool"),
        pytest.param(b'{"format": 2}', id="no-version"),
        pytest.param(b"[2]", id="not-an-object"),
        pytest.param(b" " * 5000, id="oversized"),
    ],
)
def test_a_damaged_format_file_is_corruption_naming_the_file(
    tmp_path: Path, content: bytes
) -> None:
    write_atomic(tmp_path / FORMAT_FILE_NAME, content)
    with pytest.raises(StorageCorruptError, match=FORMAT_FILE_NAME):
        DataDir(tmp_path).migrate_format()
    assert run_agent(DataDir(tmp_path)) == 3
