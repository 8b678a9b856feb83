"""The version of a data dir's on-disk format: the `FORMAT` file, reading it, refusing a newer
one, and migrating an older one (issue #18).

`FORMAT` holds a JSON object ``{"format": N, "written_by": "<swarmlet version>"}`` (JSON, not
msgpack: an operator reads it with `cat` when an agent refuses to start). Its number covers the
whole data dir of a release: the files `datadir` lists, the Raft directory (`raft/`, whose record
frame, log segments, snapshots and hard state `raft.disk_format` defines) and any file a later
release adds. A change anywhere under the data dir that an older agent would misread bumps
`DATA_FORMAT` and adds a step to `_MIGRATIONS`.

Why one number for the data dir, Raft included, rather than one per file or a record in `raft/`:
the data dir is written by one agent of one release, its files are read together at start and
they change together (a Raft record kind that needs a key file, as encryption at rest does); one
number is one check and one migration path, with no combination of versions that was never
tested. The Raft directory is never moved alone: a backup carries the replicated state, not
files (`security.backup`).

Formats:
    1  every release before this file existed: no `FORMAT`. A data dir holding other files but
       no `FORMAT` is format 1.
    2  this release: format 1 plus `FORMAT`. Nothing else changed, so 1 -> 2 only writes the file,
       and an agent of format 1 still runs on a format-2 data dir (it ignores the file) unless a
       later change of this release writes something it cannot read.

Invariants: `FORMAT` is written last by a migration (it is the commit point: a crash midway
leaves the old number, and the migration runs again, so each step must be idempotent); a fresh
data dir gets it first (`DataDir.create`), before anything else is written, so only a data dir of
an older release lacks it. A number above `DATA_FORMAT` is never rewritten nor migrated: the
agent refuses to start (`DataDirTooNewError`, exit status 2) and says which version wrote it.
Knows nothing of what the other files hold; `datadir` owns the directory and its atomic writes.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from swarmlet import __version__
from swarmlet.errors import StorageCorruptError, UsageError

log = logging.getLogger(__name__)

# The format of the data dirs this release writes. Other modules that change what the data dir
# holds (Raft record kinds, key files) refer to this number; bump it with a migration step.
DATA_FORMAT = 2
# What a data dir without a FORMAT file is: every release before versioning.
UNVERSIONED_FORMAT = 1
FORMAT_FILE_NAME = "FORMAT"
_MAX_FORMAT_BYTES = 4096  # a few dozen bytes in practice; a bigger file is not ours


class DataDirTooNewError(UsageError):
    """A data dir written by a newer release: its files may mean what this code cannot read."""


@dataclass(frozen=True, slots=True)
class FormatRecord:
    format: int
    written_by: str  # the swarmlet version that wrote the FORMAT file; "" for format 1

    def encode(self) -> bytes:
        body = {"format": self.format, "written_by": self.written_by}
        return (json.dumps(body, sort_keys=True) + "\n").encode()

    @classmethod
    def decode(cls, data: bytes, path: Path) -> FormatRecord:
        """StorageCorruptError, naming `path`, for anything but a well-formed record."""
        try:
            body = json.loads(data)
            number, written_by = body["format"], body["written_by"]
        except (ValueError, TypeError, KeyError) as exc:
            raise _damaged(path, repr(exc)) from None
        if type(number) is not int or number < 1 or not isinstance(written_by, str):
            raise _damaged(path, f"format {number!r}, written by {written_by!r}")
        return cls(number, written_by)


def current_record() -> FormatRecord:
    return FormatRecord(DATA_FORMAT, __version__)


def read_format(path: Path) -> FormatRecord | None:
    """The format of the data dir at `path`; None for a data dir that does not exist or holds
    nothing (a fresh one)."""
    file = path / FORMAT_FILE_NAME
    try:
        with file.open("rb") as f:
            data = f.read(_MAX_FORMAT_BYTES + 1)
    except FileNotFoundError:
        try:
            holds_files = any(path.iterdir())
        except FileNotFoundError:
            return None
        return FormatRecord(UNVERSIONED_FORMAT, "") if holds_files else None
    if len(data) > _MAX_FORMAT_BYTES:
        raise _damaged(file, f"over {_MAX_FORMAT_BYTES} bytes")
    return FormatRecord.decode(data, file)


def check_readable(path: Path) -> FormatRecord | None:
    """The data dir's format if this code can read it (this release's or an older one, which
    `migrate` brings up to date); DataDirTooNewError for a newer one."""
    record = read_format(path)
    if record is not None and record.format > DATA_FORMAT:
        raise DataDirTooNewError(
            f"{path} was written by swarmlet {record.written_by or '(unknown version)'} in data "
            f"dir format {record.format}; this swarmlet {__version__} reads formats up to "
            f"{DATA_FORMAT}: run that version (or a newer one) on this host, or remove the data "
            "dir and join the cluster again as a new node"
        )
    return record


# Format N -> N + 1, for each N below DATA_FORMAT: what turns a data dir of format N into one of
# N + 1, except writing FORMAT (`migrate` does that last). Each must be idempotent.
Migration = Callable[[Path], None]


def _format_1_to_2(path: Path) -> None:
    """Format 2 is format 1 plus the FORMAT file: no other file changes."""


_MIGRATIONS: dict[int, Migration] = {1: _format_1_to_2}


def pending_migrations(found: int) -> list[tuple[int, Migration]]:
    """The steps that bring format `found` up to `DATA_FORMAT`, in order (pure)."""
    missing = [n for n in range(found, DATA_FORMAT) if n not in _MIGRATIONS]
    if missing:  # a bump of DATA_FORMAT without its step is a bug of ours
        raise AssertionError(f"no migration from data dir format {missing[0]}")
    return [(n, _MIGRATIONS[n]) for n in range(found, DATA_FORMAT)]


def migrate(path: Path, write_atomic: Callable[[Path, bytes, int], None]) -> int | None:
    """Bring the data dir at `path` up to `DATA_FORMAT` before the agent opens anything in it:
    run the pending steps, then write FORMAT. Returns the format found (None: nothing there);
    DataDirTooNewError for a newer one. `write_atomic` is `datadir.write_atomic` (passed in: it
    owns the O_EXCL|O_NOFOLLOW creation and the fsyncs)."""
    record = check_readable(path)
    if record is None or record.format == DATA_FORMAT:
        return None if record is None else record.format
    for number, step in pending_migrations(record.format):
        log.info("migrating %s from data dir format %d to %d", path, number, number + 1)
        step(path)
    write_atomic(path / FORMAT_FILE_NAME, current_record().encode(), 0o644)
    log.info("%s is now data dir format %d (was %d)", path, DATA_FORMAT, record.format)
    return record.format


def _damaged(path: Path, detail: str) -> StorageCorruptError:
    return StorageCorruptError(
        f"{path} is damaged ({detail}); it should hold the data dir's format, e.g. "
        f"{current_record().encode().decode().strip()}: restore it from a backup of this data dir"
    )
