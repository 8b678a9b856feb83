"""security.backup: a backup opens with its passphrase only, any change to it is detected, and a
file that is not one, or of a newer format, is refused saying so."""

from __future__ import annotations

from collections.abc import Callable

import msgpack
import pytest

from swarmlet.errors import UsageError
from swarmlet.security.backup import MAGIC, Backup, open_backup, seal_backup

BACKUP = Backup(
    cluster_id="c1",
    created_at=1.5,
    raft_index=42,
    managers_key=b"m" * 32,
    cluster_key=b"k" * 32,
    state=b"\x93state",
)
PASSPHRASE = "correct horse battery"


def test_a_backup_opens_with_its_passphrase() -> None:
    sealed = seal_backup(BACKUP, PASSPHRASE)
    assert open_backup(sealed, PASSPHRASE) == BACKUP
    assert b"m" * 32 not in sealed and b"state" not in sealed  # nothing in the clear


def test_each_backup_has_its_own_salt_and_nonce() -> None:
    assert seal_backup(BACKUP, PASSPHRASE) != seal_backup(BACKUP, PASSPHRASE)


def test_the_wrong_passphrase_is_refused() -> None:
    with pytest.raises(UsageError, match="f does not open with this passphrase"):
        open_backup(seal_backup(BACKUP, PASSPHRASE), "another passphrase", source="f")


def _with_header(sealed: bytes, **changes: object) -> bytes:
    return MAGIC + msgpack.packb({**msgpack.unpackb(sealed[len(MAGIC) :]), **changes})


@pytest.mark.parametrize(
    ("mangle", "message"),
    [
        (lambda b: b[:-1] + bytes([b[-1] ^ 1]), "does not open with this passphrase"),
        (lambda b: b"not a backup", "is not a swarmlet backup"),
        (lambda b: MAGIC + b"\xc1", "is damaged"),
        (lambda b: _with_header(b, version=2), "is of backup format 2; this swarmlet reads 1"),
        (lambda b: _with_header(b, n=2**30), "implausible key derivation parameters"),
        # The header is authenticated: a cheaper key derivation does not open it.
        (lambda b: _with_header(b, n=2**14), "does not open with this passphrase"),
    ],
)
def test_a_changed_or_foreign_file_is_refused_even_with_the_passphrase(
    mangle: Callable[[bytes], bytes], message: str
) -> None:
    with pytest.raises(UsageError, match=message):
        open_backup(mangle(seal_backup(BACKUP, PASSPHRASE)), PASSPHRASE, source="f")


def test_a_short_passphrase_is_refused() -> None:
    with pytest.raises(UsageError, match="at least 12 characters"):
        seal_backup(BACKUP, "short")
