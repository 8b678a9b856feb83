"""Secret and config files for a task's containers: written to memory, never to disk.

Each task that uses secrets or configs gets a directory on a tmpfs (`/run/swarmlet` when /run is
a tmpfs, else `/dev/shm/swarmlet`), one file per secret with the uid, gid and mode asked for,
bind-mounted read-only into the container at its target. Nothing here ever writes a secret's
value to the data dir or to a disk-backed filesystem; `docker inspect` shows only the tmpfs path.
The values come from `secretdelivery`, which fetched or opened them for this task alone.

Invariants, and the attacks they stop:
  * The root, the node's directory and each task's directory are directories owned by the
    agent's user with mode 0700, so no other local user can list, read or plant anything in
    them (a task directory used to be 0711, and a secret of mode 0444 in it was readable by any
    user who guessed its path). A bind mount does not need the host's directories to be open:
    the container reaches the file through its own mount.
  * Every directory is opened with O_NOFOLLOW and checked on its open descriptor, and every
    file is created relative to that descriptor: a symlink or a directory planted by someone
    else (`/dev/shm` is writable by every user) is refused, never followed, so a secret is never
    written, chowned or removed outside the task's own directory. A directory of ours that
    others could read but not write (what older versions left) is narrowed to 0700.
  * Secret files are created with O_CREAT|O_EXCL|O_NOFOLLOW: nothing already at a secret's path
    (a planted symlink, a leftover file) is ever written through or reused.
  * A refused directory or file is a SecretsUnavailableError naming the path and what to do:
    the task is rejected, the agent keeps running.
  * Node and task ids must be single path components: an id from the replicated state cannot
    name a path outside the node's directory.
The executor removes a task's directory on every path that ends the task (`remove`).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import stat
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from swarmlet.errors import RuntimeAdapterError, SecretsUnavailableError, SwarmletError
from swarmlet.state.model import FileRef

log = logging.getLogger(__name__)

SECRETS_DIR = "/run/secrets"
DIR_MODE = 0o700
_OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_CREATE_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


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


def _component(name: str, what: str) -> str:
    if not name or name in (".", "..") or "/" in name or "\0" in name:
        raise SecretsUnavailableError(f"{what} {name!r} cannot name a secrets directory")
    return name


def _unsafe(path: Path, why: str) -> SecretsUnavailableError:
    return SecretsUnavailableError(
        f"{path} is not safe for secrets ({why}); it must be a directory owned by uid "
        f"{os.geteuid()} with mode 0700: remove it and the agent makes it again"
    )


def _open_dir(path: Path, *, parent_fd: int | None, create: bool) -> int:
    """An open descriptor of the directory `path` (`path.name` inside `parent_fd`, if given),
    made 0700 if `create` and missing; refused unless it is a real directory of ours that no one
    else can write to. The caller closes the descriptor."""
    name = path.name if parent_fd is not None else str(path)
    if create:
        with contextlib.suppress(FileExistsError):
            os.mkdir(name, DIR_MODE, dir_fd=parent_fd)
    try:
        fd = os.open(name, _OPEN_DIR, dir_fd=parent_fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise _unsafe(path, "a symlink or not a directory") from None
        raise
    try:
        info = os.fstat(fd)
        if info.st_uid != os.geteuid():
            raise _unsafe(path, f"owned by uid {info.st_uid}")
        mode = stat.S_IMODE(info.st_mode)
        if mode & 0o022:
            raise _unsafe(path, f"mode {mode:04o}: others may write to it")
        if mode != DIR_MODE:
            log.warning("narrowing %s from mode %04o to %04o", path, mode, DIR_MODE)
            os.fchmod(fd, DIR_MODE)
    except BaseException:
        os.close(fd)
        raise
    return fd


@contextlib.contextmanager
def _node_dir(root: Path, node_id: str, *, create: bool) -> Iterator[int]:
    root_fd = _open_dir(root, parent_fd=None, create=create)
    try:
        node_fd = _open_dir(root / _component(node_id, "node id"), parent_fd=root_fd, create=create)
    finally:
        os.close(root_fd)
    try:
        yield node_fd
    finally:
        os.close(node_fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def materialize(
    node_id: str,
    task_id: str,
    refs: Sequence[tuple[FileRef, bool]],
    values: Mapping[tuple[str, bool], bytes],
    *,
    root: Path | None = None,
) -> list[tuple[str, str]]:
    """Write each (ref, is_config) file for the task, its content `values[(name, is_config)]`
    (KeyError if missing); return (host path, container target). `root`: the secrets tmpfs
    directory (`tmpfs_root()` unless a test gives its own). SecretsUnavailableError if a
    directory or a file is not safe (see the module's invariants)."""
    _component(node_id, "node id")  # before anything is made
    root = tmpfs_root() if root is None else root
    task_dir = root / node_id / _component(task_id, "task id")
    mounts = []
    with _node_dir(root, node_id, create=True) as node_fd:
        task_fd = _open_dir(task_dir, parent_fd=node_fd, create=True)
        try:
            for index, (ref, is_config) in enumerate(refs):
                name = f"{index}-{'config' if is_config else 'secret'}"
                content = values[(ref.name, is_config)]
                try:
                    fd = os.open(name, _CREATE_FILE, 0o600, dir_fd=task_fd)
                except FileExistsError:
                    raise SecretsUnavailableError(
                        f"{task_dir / name} already exists: a secret file is never written "
                        f"through or reused; remove {task_dir} and start the task again"
                    ) from None
                try:
                    _write_all(fd, content)
                    with contextlib.suppress(ValueError, OSError):
                        os.fchown(fd, int(ref.uid or 0), int(ref.gid or 0))
                    os.fchmod(fd, ref.mode)
                finally:
                    os.close(fd)
                mounts.append((str(task_dir / name), target_path(ref, is_config=is_config)))
        finally:
            os.close(task_fd)
    return mounts


def remove(node_id: str, task_id: str, *, root: Path | None = None) -> None:
    """Remove the task's secret files and directory, if any. Never raises: a failure is logged
    (the files stay in memory until the agent's next start sweeps them, or a reboot)."""
    try:
        root = tmpfs_root() if root is None else root
    except RuntimeAdapterError:
        return  # no tmpfs: no secret was ever written
    try:
        with _node_dir(root, node_id, create=False) as node_fd:
            name = _component(task_id, "task id")
            if stat.S_ISLNK(os.stat(name, dir_fd=node_fd, follow_symlinks=False).st_mode):
                os.unlink(name, dir_fd=node_fd)  # a planted link: the link goes, never its target
            else:
                shutil.rmtree(name, dir_fd=node_fd)  # fd-based: follows no link inside
    except FileNotFoundError:
        pass
    except (OSError, SwarmletError) as exc:
        log.warning("secret files of task %s not removed: %s", task_id, exc)


def task_ids(node_id: str, *, root: Path | None = None) -> set[str]:
    """The tasks that have a secrets directory on this node (for a sweep after a restart)."""
    try:
        root = tmpfs_root() if root is None else root
    except RuntimeAdapterError:
        return set()  # no tmpfs: no secret was ever written
    try:
        with _node_dir(root, node_id, create=False) as node_fd:
            return set(os.listdir(node_fd))
    except FileNotFoundError:
        return set()
    except (OSError, SwarmletError) as exc:
        log.warning("secrets directory of node %s not listed: %s", node_id, exc)
        return set()
