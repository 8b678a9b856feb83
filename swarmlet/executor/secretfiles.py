"""Secret and config files for a task's containers: written to memory, never to disk.

Each task that uses secrets or configs gets a directory on a tmpfs (`/run/swarmlet` when /run is
a tmpfs, else `/dev/shm/swarmlet`), one file per secret with the uid, gid and mode asked for,
bind-mounted read-only into the container at its target. The directory is removed when the task
leaves this node. Nothing here ever writes a secret's value to the data dir or to a disk-backed
filesystem; `docker inspect` shows only the tmpfs path. The values come from
`secretdelivery`, which fetched or opened them for this task alone.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

from swarmlet.errors import RuntimeAdapterError
from swarmlet.state.model import FileRef

SECRETS_DIR = "/run/secrets"


def _fs_type(path: Path) -> str:
    """The filesystem type of the mount holding `path` (longest matching mount point)."""
    best, best_type = "", ""
    with contextlib.suppress(OSError), open("/proc/mounts") as mounts:
        for line in mounts:
            parts = line.split()
            if len(parts) >= 3 and str(path).startswith(parts[1]) and len(parts[1]) > len(best):
                best, best_type = parts[1], parts[2]
    return best_type


def tmpfs_root() -> Path:
    for candidate in (Path("/run"), Path("/dev/shm")):
        if candidate.is_dir() and _fs_type(candidate) == "tmpfs":
            return candidate / "swarmlet"
    raise RuntimeAdapterError("no tmpfs for secrets: neither /run nor /dev/shm is a tmpfs")


def target_path(ref: FileRef, *, is_config: bool) -> str:
    if ref.target.startswith("/"):
        return ref.target
    return (
        f"{SECRETS_DIR}/{ref.target or ref.name}" if not is_config else f"/{ref.target or ref.name}"
    )


def materialize(
    node_id: str,
    task_id: str,
    refs: Sequence[tuple[FileRef, bool]],
    values: Mapping[tuple[str, bool], bytes],
) -> list[tuple[str, str]]:
    """Write each (ref, is_config) file for the task, its content `values[(name, is_config)]`
    (KeyError if missing); return (host path, container target)."""
    task_dir = tmpfs_root() / node_id / task_id
    task_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(task_dir, 0o711)  # traversable by the container's user, not listable
    mounts = []
    for index, (ref, is_config) in enumerate(refs):
        path = task_dir / f"{index}-{'config' if is_config else 'secret'}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, values[(ref.name, is_config)])
        finally:
            os.close(fd)
        with contextlib.suppress(ValueError, OSError):
            os.chown(path, int(ref.uid or 0), int(ref.gid or 0))
        os.chmod(path, ref.mode)
        mounts.append((str(path), target_path(ref, is_config=is_config)))
    return mounts


def remove(node_id: str, task_id: str) -> None:
    with contextlib.suppress(RuntimeAdapterError):
        shutil.rmtree(tmpfs_root() / node_id / task_id, ignore_errors=True)
