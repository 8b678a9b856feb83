"""The agent's data directory: identity, keys, and where everything else lives.

Layout (all files owned by the agent's user, the directory and secrets 0700/0600):
    FORMAT             the data dir's format and the swarmlet version that wrote it
                       (`datadir_format`): written first in a fresh data dir, checked by every
                       reader of the identity, brought up to date when the agent starts
    identity.msgpack   who this node is and how it was started (see `Identity`)
    cluster.key        the cluster master key (32 bytes); every node
    node.key           this node's X25519 private key (32 bytes); every node, written with the
                       identity: its public key goes into the node's record at join time
    managers.key       the managers' key (32 bytes); managers only (see `security.keyring`):
                       written by `init` (before the identity), or when the node's record first
                       carries it sealed to this node (join as a manager, promotion); removed
                       when it is demoted or removed from the cluster
    raft/              the Raft log, hard state and snapshots (`swarmlet.raft.storage`)
    worker-view.sealed a worker's last view of the state, sealed under its data key
                       (`node.view_store`); removed when the node becomes a manager
    control.sock       the control API (Unix socket, 0600); found by `datadir_location`
    agent.pid          the running agent's pid
    agent.log          the agent's log when it runs in the background

Files are replaced atomically (write a temp file, fsync, rename, fsync the directory), so a crash
leaves either the old or the new version. A file is created only with O_EXCL|O_NOFOLLOW, and a
data dir another user owns is refused (`DataDir.check_owner`): nothing here writes through a link
someone planted, or trusts a directory someone else controls. The identity file is the commit
point of `init` and `join`: written last, so a data dir without it holds no node and may be
initialised again.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import shutil
from dataclasses import dataclass
from pathlib import Path

import msgpack

from swarmlet.errors import StorageCorruptError, UsageError
from swarmlet.security import datadir_format
from swarmlet.security.datadir_location import ENV_VAR as ENV_VAR
from swarmlet.security.datadir_location import control_socket_path
from swarmlet.security.datadir_location import default_data_dir as default_data_dir

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at run time
if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

# Keys are read as bytes here; `swarmlet.crypto` and `swarmlet.certs` (pyca/cryptography: about
# 80 ms of imports on a busy machine) are loaded by the methods that use them, so that the
# commands that only find, create or check a data dir (`join` first) do without them.
KEY_BYTES = 32  # `crypto.KEY_BYTES`: every key of a data dir (a test holds them equal)

# A file this module creates is always new, never reached through a link: whatever was at its
# name (a crash's leftover, a link someone planted to make the agent write its keys elsewhere)
# is neither written through nor reused.
_CREATE_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def _create_new(path: Path, mode: int) -> int:
    """A new file at `path`, open for writing, with exactly `mode` (whatever the umask). A
    leftover at the name is unlinked first: that removes the entry, never what a link names."""
    try:
        fd = os.open(path, _CREATE_NEW, mode)
    except FileExistsError:
        os.unlink(path)
        fd = os.open(path, _CREATE_NEW, mode)  # a second one appearing meanwhile is refused
    os.fchmod(fd, mode)
    return fd


def write_atomic(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace `path` with `data`: a new temporary file, fsync, rename over `path` (which
    replaces a link there, never follows it), fsync the directory."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = _create_new(tmp, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    os.close(fd)
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def remove_durably(path: Path) -> None:
    """Remove `path` if it is there, and fsync its directory: a crash does not bring it back."""
    try:
        path.unlink()
    except FileNotFoundError:
        return
    _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    """Make a rename or unlink in `path` durable."""
    dir_fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Identity:
    """Who this node is. Written once by `init`/`join`; `addr`/`publish_addr` may be updated."""

    node_id: str
    cluster_id: str
    name: str
    advertise_host: str
    port: int
    publish_host: str
    role: str  # the role the node joined with; the replicated state is authoritative afterwards
    seeds: tuple[str, ...] = ()  # "host:port" of members known at join time, for restarts
    bootstrap: bool = False  # True for the node that ran `init`: it seeds a new Raft group

    @property
    def addr(self) -> str:
        return f"{self.advertise_host}:{self.port}"


class DataDir:
    def __init__(self, path: Path) -> None:
        self.path = path

    @property
    def identity_file(self) -> Path:
        return self.path / "identity.msgpack"

    @property
    def key_file(self) -> Path:
        return self.path / "cluster.key"

    @property
    def node_key_file(self) -> Path:
        return self.path / "node.key"

    @property
    def manager_key_file(self) -> Path:
        return self.path / "managers.key"

    @property
    def cert_file(self) -> Path:
        """This node's certificate (PEM, `swarmlet.certs`); replaced on each renewal."""
        return self.path / "node.crt"

    @property
    def tls_key_file(self) -> Path:
        """The PEM form of this node's identity key (`crypto.node_signing_key`), which is
        derived from node.key: OpenSSL loads keys from files only."""
        return self.path / "node-tls.key"

    @property
    def ca_file(self) -> Path:
        """The cluster CA's certificate: the only issuer this node trusts."""
        return self.path / "ca.crt"

    @property
    def member_keys_file(self) -> Path:
        return self.path / "members.msgpack"

    @property
    def raft_dir(self) -> Path:
        return self.path / "raft"

    @property
    def raft_superseded_file(self) -> Path:
        """Present while this node is a worker that a manager serves by session and that still
        keeps the Raft log of its learner days (an upgrade, a demotion): dropped at the next
        start (`drop_superseded_raft_log`)."""
        return self.path / "raft.superseded"

    @property
    def worker_view_file(self) -> Path:
        """A worker's last view, sealed under its data key (`node.view_store`)."""
        return self.path / "worker-view.sealed"

    @property
    def restore_file(self) -> Path:
        """A backup's state for the first start of a node made by `init --restore`."""
        return self.path / "restore.state"

    @property
    def socket_path(self) -> Path:
        return control_socket_path(self.path)

    @property
    def pid_file(self) -> Path:
        return self.path / "agent.pid"

    @property
    def log_file(self) -> Path:
        return self.path / "agent.log"

    @property
    def incarnation_file(self) -> Path:
        return self.path / "gossip.incarnation"

    @property
    def format_file(self) -> Path:
        return self.path / datadir_format.FORMAT_FILE_NAME

    def exists(self) -> bool:
        return self.identity_file.exists()

    def create(self) -> None:
        """Make the directory; a fresh (empty) one gets this release's FORMAT before anything
        else, so that only a data dir of an older release lacks it. Each directory it makes
        is durable in its parent (a power cut right after a join must not lose the node)."""
        made = [d for d in (self.path, *self.path.parents) if not d.exists()]
        self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
        for directory in made:
            _fsync_dir(directory.parent)
        self.check_owner()
        os.chmod(self.path, 0o700)
        if datadir_format.read_format(self.path) is None:
            write_atomic(self.format_file, datadir_format.current_record().encode(), 0o644)

    def check_format(self) -> None:
        """DataDirTooNewError (a UsageError: exit status 2) if a newer release wrote this data
        dir; StorageCorruptError if its FORMAT is damaged. An older format is readable."""
        datadir_format.check_readable(self.path)

    def migrate_format(self) -> int | None:
        """Bring an older data dir up to this release's format (the agent, before it opens
        anything); the format found, None if there is no data dir."""
        self.check_owner()
        return datadir_format.migrate(self.path, write_atomic)

    def check_owner(self) -> None:
        """Refuse a data dir that another user owns: that user could replace the keys, the
        identity and the Raft log this agent trusts (a missing one is left to the caller)."""
        try:
            owner = os.stat(self.path).st_uid  # through a link: the directory that is used
        except FileNotFoundError:
            return
        if owner != os.geteuid():
            raise UsageError(
                f"{self.path} is owned by {_user(owner)}, not by {_user(os.geteuid())} who runs "
                "the agent: that user could replace its keys and state; give it to the agent's "
                f"user (chown -R {os.geteuid()} {self.path}) or use another --data-dir"
            )

    def write_identity(
        self,
        identity: Identity,
        key: bytes,
        node_key: bytes,
        certificate: tuple[bytes, bytes] | None = None,
    ) -> None:
        """`key`: the cluster key; `node_key`: this node's private key (`crypto.new_node_key`);
        `certificate`: (this node's, the CA's), from the join reply. The identity file goes
        last: it is what makes the data dir a node's (`exists`)."""
        self.create()
        write_atomic(self.key_file, key)
        write_atomic(self.node_key_file, node_key)
        if certificate is not None:
            self.write_certificate(*certificate)
        body = {
            "node_id": identity.node_id,
            "cluster_id": identity.cluster_id,
            "name": identity.name,
            "advertise_host": identity.advertise_host,
            "port": identity.port,
            "publish_host": identity.publish_host,
            "role": identity.role,
            "seeds": list(identity.seeds),
            "bootstrap": identity.bootstrap,
        }
        write_atomic(self.identity_file, msgpack.packb(body, use_bin_type=True))

    def read_identity(self) -> tuple[Identity, bytes]:
        self.check_owner()
        self.check_format()  # before trusting any file of a release that may mean otherwise
        if not self.exists():
            raise UsageError(
                f"{self.path} holds no swarmlet node: run `swarmlet init` or `swarmlet join` first"
            )
        key = _read_key(
            self.key_file,
            "restore it from a backup of this data dir, or remove the data dir and join the "
            "cluster again",
        )
        try:
            body = msgpack.unpackb(self.identity_file.read_bytes(), raw=False)
            identity = Identity(
                node_id=body["node_id"],
                cluster_id=body["cluster_id"],
                name=body["name"],
                advertise_host=body["advertise_host"],
                port=body["port"],
                publish_host=body["publish_host"],
                role=body["role"],
                seeds=tuple(body.get("seeds", ())),
                bootstrap=body.get("bootstrap", False),
            )
        except (msgpack.UnpackException, ValueError, TypeError, KeyError, AttributeError) as exc:
            raise StorageCorruptError(
                f"{self.identity_file} is damaged ({exc!r}); restore it from a backup, "
                "or remove the data dir and join the cluster again"
            ) from None
        return identity, key

    def read_node_key(self) -> bytes:
        # Made by this node and never sent anywhere: no other node holds a copy.
        return _read_key(
            self.node_key_file,
            "it exists nowhere else unless this data dir was backed up: restore it from such a "
            "backup, or remove the data dir, join the cluster again as a new node, and remove "
            "the old one (`swarmlet node rm` on a manager)",
        )

    def read_manager_key(self) -> bytes | None:
        """The managers' key, or None on a node that does not hold it (a worker)."""
        try:
            return _checked_key(self.manager_key_file, self.manager_key_file.read_bytes())
        except FileNotFoundError:
            return None

    def write_manager_key(self, key: bytes) -> None:
        self.create()
        write_atomic(self.manager_key_file, key)

    def remove_manager_key(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.manager_key_file.unlink()
            _fsync_dir(self.path)

    def has_certificate(self) -> bool:
        return self.cert_file.exists() and self.ca_file.exists()

    def write_certificate(self, cert_pem: bytes, ca_pem: bytes | None = None) -> None:
        """Install a (new) certificate for this node's identity key, and the CA's on first use.
        The key file is written from node.key each time, so the three always agree."""
        self.create()
        from swarmlet import certs

        write_atomic(self.tls_key_file, certs.private_key_pem(self.signing_key()))
        if ca_pem is not None:
            write_atomic(self.ca_file, ca_pem, 0o644)
        write_atomic(self.cert_file, cert_pem, 0o644)

    def read_certificate(self) -> tuple[bytes, bytes]:
        """(this node's certificate, the CA's), both PEM; StorageCorruptError if missing."""
        try:
            return self.cert_file.read_bytes(), self.ca_file.read_bytes()
        except FileNotFoundError as exc:
            raise StorageCorruptError(
                f"{exc.filename} is missing: this node has no certificate (a data dir from before "
                "certificates, or damaged); a manager issues its own at start, a worker must be "
                "removed (`swarmlet node rm`) and join again"
            ) from None

    def write_member_keys(self, keys: dict[str, bytes]) -> None:
        """Node id -> Ed25519 identity key of each member this node knows: whose datagrams it
        can check at start, before its replica of the state has caught up (after a restart of
        the whole cluster, the state a node loads may predate most members)."""
        self.create()
        write_atomic(self.member_keys_file, msgpack.packb(keys, use_bin_type=True), 0o644)

    def read_member_keys(self) -> dict[str, bytes]:
        try:
            body = msgpack.unpackb(self.member_keys_file.read_bytes(), raw=False)
            return {str(k): bytes(v) for k, v in body.items()}
        except FileNotFoundError:
            return {}
        except (msgpack.UnpackException, ValueError, TypeError, AttributeError) as exc:
            # Only a cache of what the state holds: it is rebuilt as the state is applied.
            log.warning("%s is damaged (%r); ignored", self.member_keys_file, exc)
            return {}

    def write_restore_state(self, state: bytes) -> None:
        """Before the identity (the commit point): the first start seeds its storage from it
        (`node.bootstrap.restore_storage`), never from an empty state."""
        self.create()
        write_atomic(self.restore_file, state)

    def read_restore_state(self) -> bytes | None:
        try:
            return self.restore_file.read_bytes()
        except FileNotFoundError:
            return None

    def remove_restore_state(self) -> None:
        self.restore_file.unlink(missing_ok=True)

    def mark_raft_superseded(self, superseded: bool) -> None:
        if superseded:
            write_atomic(self.raft_superseded_file, b"")
        else:
            self.raft_superseded_file.unlink(missing_ok=True)

    def drop_superseded_raft_log(self) -> bool:
        """Before the storage opens: remove the Raft log a worker no longer needs (it holds
        every service's spec). Safe: the mark is set only while this node is in no manager's
        Raft configuration, and a node added to it later starts as a learner that catches up
        from the leader. The mark goes last, so a crash in between removes the rest again."""
        if not self.raft_superseded_file.exists():
            return False
        if self.raft_dir.exists():
            shutil.rmtree(self.raft_dir)
        self.raft_superseded_file.unlink()
        return True

    def signing_key(self) -> Ed25519PrivateKey:
        from swarmlet import crypto

        return crypto.node_signing_key(self.read_node_key())

    def next_incarnation(self, wall_clock_s: float) -> int:
        """A gossip incarnation higher than any this node used before (persisted first).

        Seeded from the wall clock: a run refutes suspicions far fewer times than it lives
        seconds, so a restart starts above everything the previous run reached, even if the
        previous run could not persist its last value.
        """
        try:
            last = int(self.incarnation_file.read_text())
        except (FileNotFoundError, ValueError):
            last = 0
        nxt = max(last + 1, int(wall_clock_s))
        write_atomic(self.incarnation_file, str(nxt).encode(), 0o644)
        return nxt

    def read_pid(self) -> int | None:
        try:
            return int(self.pid_file.read_text())
        except (FileNotFoundError, ValueError):
            return None

    def write_pid(self, pid: int) -> None:
        write_atomic(self.pid_file, str(pid).encode(), 0o644)

    def remove_pid(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.pid_file.unlink()


def _user(uid: int) -> str:
    try:
        return f"uid {uid} ({pwd.getpwuid(uid).pw_name})"
    except KeyError:
        return f"uid {uid}"


def _read_key(path: Path, if_missing: str) -> bytes:
    """`if_missing`: what the operator can do about a missing file."""
    try:
        return _checked_key(path, path.read_bytes())
    except FileNotFoundError:
        raise StorageCorruptError(f"{path} is missing; {if_missing}") from None


def _checked_key(path: Path, key: bytes) -> bytes:
    if len(key) != KEY_BYTES:
        raise StorageCorruptError(f"{path} is damaged (expected {KEY_BYTES} bytes)")
    return key
