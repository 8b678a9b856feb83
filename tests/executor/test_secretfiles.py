"""executor.secretfiles, and the executor removing a task's secrets on every path that ends it.

Real files and directories under tmp_path stand in for the tmpfs (the checks are the same on any
filesystem). Each hostile layout is one a local user or a leftover could produce: a symlink where
a directory or a secret file goes (`/dev/shm` is writable by every user), a directory owned by
someone else or writable by others. Each test checks that the secret is refused with an error
that names the path, and that nothing was written, changed or removed outside the task's own
directory. The executor tests drive the real `Executor` with a fake runtime in virtual time.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any, cast

import pytest
import trio
import trio.testing

from swarmlet.errors import RuntimeAdapterError, SecretsUnavailableError
from swarmlet.executor import secretfiles
from swarmlet.executor.driver import Executor
from swarmlet.executor.networks import LocalNetworks
from swarmlet.executor.runtime_types import ContainerInfo
from swarmlet.state.machine import ClusterState
from swarmlet.state.model import FileRef, Service, ServiceSpec, Task, TaskState
from swarmlet.state.observed import TaskObservation

NODE = "node1"
REFS = [(FileRef("db", "db_password", uid="1000", gid="1001", mode=0o440), False)]
VALUES = {("db", False): b"s3cret"}


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def _materialize(root: Path, task_id: str = "t1") -> list[tuple[str, str]]:
    return secretfiles.materialize(NODE, task_id, REFS, VALUES, root=root)


def test_secrets_go_to_directories_of_the_agent_user_with_mode_0700(tmp_path: Path) -> None:
    root = tmp_path / "swarmlet"
    [(host_path, target)] = _materialize(root)
    assert target == "/run/secrets/db_password"
    assert Path(host_path) == root / NODE / "t1" / "0-secret"
    for directory in (root, root / NODE, root / NODE / "t1"):
        assert _mode(directory) == 0o700
        assert directory.stat().st_uid == os.geteuid()
    info = Path(host_path).stat()
    assert Path(host_path).read_bytes() == b"s3cret"
    assert (stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid) == (0o440, 1000, 1001)


@pytest.mark.parametrize("where", ["root", "node"])
def test_a_symlinked_directory_is_refused_and_nothing_is_written_through_it(
    tmp_path: Path, where: str
) -> None:
    root = tmp_path / "swarmlet"
    elsewhere = tmp_path / "attacker"
    elsewhere.mkdir()
    if where == "root":
        root.symlink_to(elsewhere)
    else:
        root.mkdir(mode=0o700)
        (root / NODE).symlink_to(elsewhere)
    with pytest.raises(SecretsUnavailableError, match="symlink") as raised:
        _materialize(root)
    assert str(root if where == "root" else root / NODE) in str(raised.value)
    assert list(elsewhere.iterdir()) == []


def test_a_directory_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "swarmlet"
    (root / NODE).mkdir(parents=True, mode=0o700)
    root.chmod(0o700)
    os.chown(root / NODE, 12345, 12345)
    with pytest.raises(SecretsUnavailableError, match="owned by uid 12345") as raised:
        _materialize(root)
    assert str(root / NODE) in str(raised.value)
    assert list((root / NODE).iterdir()) == []


@pytest.mark.parametrize("mode", [0o777, 0o770, 0o702])
def test_a_directory_others_can_write_to_is_refused(tmp_path: Path, mode: int) -> None:
    root = tmp_path / "swarmlet"
    root.mkdir()
    root.chmod(mode)
    with pytest.raises(SecretsUnavailableError, match="others may write"):
        _materialize(root)
    assert list(root.iterdir()) == []
    assert _mode(root) == mode  # left as it was, for the operator to look at


def test_a_directory_of_ours_others_could_only_read_is_narrowed_to_0700(tmp_path: Path) -> None:
    # What earlier versions left (mkdir's default mode for the parents, 0711 for a task).
    root = tmp_path / "swarmlet"
    (root / NODE / "t1").mkdir(parents=True)
    root.chmod(0o755)
    (root / NODE).chmod(0o755)
    (root / NODE / "t1").chmod(0o711)
    _materialize(root)
    assert [_mode(d) for d in (root, root / NODE, root / NODE / "t1")] == [0o700] * 3


@pytest.mark.parametrize("dangling", [False, True], ids=["to-a-file", "dangling"])
def test_a_symlink_planted_at_a_secrets_path_is_never_written_through(
    tmp_path: Path, dangling: bool
) -> None:
    root = tmp_path / "swarmlet"
    task_dir = root / NODE / "t1"
    task_dir.mkdir(parents=True, mode=0o700)
    for directory in (root, root / NODE):
        directory.chmod(0o700)
    victim = tmp_path / "victim"
    if not dangling:
        victim.write_bytes(b"original")
    (task_dir / "0-secret").symlink_to(victim)
    with pytest.raises(SecretsUnavailableError, match="already exists") as raised:
        _materialize(root)
    assert str(task_dir / "0-secret") in str(raised.value)
    if dangling:
        assert not victim.exists()
    else:
        assert victim.read_bytes() == b"original"
        assert _mode(victim) == 0o644


def test_a_leftover_secret_file_is_never_reused(tmp_path: Path) -> None:
    root = tmp_path / "swarmlet"
    _materialize(root)
    with pytest.raises(SecretsUnavailableError, match="already exists"):
        _materialize(root)


@pytest.mark.parametrize("task_id", ["", ".", "..", "../t1", "a/b", "/etc"])
def test_an_id_that_is_not_one_path_component_is_refused(tmp_path: Path, task_id: str) -> None:
    root = tmp_path / "swarmlet"
    with pytest.raises(SecretsUnavailableError, match="task id"):
        secretfiles.materialize(NODE, task_id, REFS, VALUES, root=root)
    with pytest.raises(SecretsUnavailableError, match="node id"):
        secretfiles.materialize(task_id, "t1", REFS, VALUES, root=root)
    assert list(tmp_path.iterdir()) == []  # nothing made, anywhere


def test_remove_deletes_the_task_directory_and_follows_no_link(tmp_path: Path) -> None:
    root = tmp_path / "swarmlet"
    _materialize(root)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_bytes(b"keep")
    (root / NODE / "t1" / "link").symlink_to(outside)
    (root / NODE / "t2").symlink_to(outside)  # a task "directory" that is a link
    secretfiles.remove(NODE, "t1", root=root)
    secretfiles.remove(NODE, "t2", root=root)
    assert list((root / NODE).iterdir()) == []
    assert (outside / "keep").read_bytes() == b"keep"
    secretfiles.remove(NODE, "t1", root=root)  # already gone: nothing to do


def test_remove_through_a_symlinked_node_directory_touches_nothing(tmp_path: Path) -> None:
    root = tmp_path / "swarmlet"
    root.mkdir(mode=0o700)
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "t1").mkdir(parents=True)
    (root / NODE).symlink_to(elsewhere)
    secretfiles.remove(NODE, "t1", root=root)
    assert (elsewhere / "t1").is_dir()
    assert secretfiles.task_ids(NODE, root=root) == set()


def test_task_ids_lists_the_tasks_with_secrets(tmp_path: Path) -> None:
    root = tmp_path / "swarmlet"
    assert secretfiles.task_ids(NODE, root=root) == set()
    _materialize(root, "t1")
    _materialize(root, "t2")
    assert secretfiles.task_ids(NODE, root=root) == {"t1", "t2"}


# ------------------------------------------------------------------------------ the executor


class NoEvents:
    def __aiter__(self) -> NoEvents:
        return self

    async def __anext__(self) -> Any:
        await trio.sleep_forever()


def _read_all(paths: list[str]) -> list[bytes]:
    return [Path(path).read_bytes() for path in paths]


class FakeRuntime:
    """What the Executor asks of Docker: `run` fails, blocks or succeeds as told."""

    def __init__(self, root: Path, run: str = "ok") -> None:
        self.root = root
        self.run_mode = run
        self.seen_at_run: list[bytes] = []  # the secret file's content when `run` was called
        self.containers: list[ContainerInfo] = []
        self.stopped: list[str] = []
        self.removed: list[str] = []

    @contextlib.asynccontextmanager
    async def events(self, labels: Mapping[str, str]) -> AsyncIterator[NoEvents]:
        yield NoEvents()

    async def list(self, labels: Mapping[str, str]) -> list[ContainerInfo]:
        return list(self.containers)

    async def ensure_image(self, image: str) -> None:
        pass

    async def run(self, spec: Any) -> ContainerInfo:
        self.seen_at_run += _read_all([m.source for m in spec.mounts if m.type == "bind"])
        if self.run_mode == "fail":
            raise RuntimeAdapterError("no such image")
        if self.run_mode == "block":
            await trio.sleep_forever()
        info = _container("c-" + spec.labels["swarmlet.task"], spec.labels["swarmlet.task"])
        self.containers.append(info)
        return info

    async def stop(self, container_id: str, grace_s: float) -> None:
        self.stopped.append(container_id)

    async def remove(self, container_id: str, force: bool = False) -> None:
        self.removed.append(container_id)


def _container(container_id: str, task_id: str) -> ContainerInfo:
    labels = {"swarmlet.task": task_id}
    return ContainerInfo(container_id, task_id, labels, "running", None, None, {}, "", "", "")


class FakeNetworks:
    def __init__(self) -> None:
        self.synced_at: list[float] = []  # trio's clock at each sync: one per reconcile pass

    async def load(self) -> None:
        pass

    async def sync(self, state: ClusterState) -> None:
        self.synced_at.append(trio.current_time())

    def hosts_for(self, state: ClusterState, spec: ServiceSpec) -> dict[str, str]:
        return {}


def _state(*tasks: Task) -> ClusterState:
    state = ClusterState()
    spec = ServiceSpec("web", "nginx", secrets=(REFS[0][0],))
    state.services["s1"] = Service("s1", spec)
    for task in tasks:
        state.tasks[task.id] = task
    return state


def _task(task_id: str, desired: TaskState = TaskState.RUNNING) -> Task:
    return Task(task_id, "s1", 1, 1, desired_state=desired, node_id=NODE)


class Harness:
    def __init__(
        self, root: Path, runtime: FakeRuntime, state: ClusterState, *, current: bool = True
    ) -> None:
        """`current`: whether the state can be made current (`Executor`'s `sync`: False for
        a worker on the view it kept on disk, or a manager without a quorum; an attempt then
        waits 5 s, as the agent's does, for a manager or a leader that does not come)."""
        self.state = state
        self.current = current
        self.observations: dict[str, TaskObservation] = {}

        async def sync() -> bool:
            await trio.lowlevel.checkpoint()
            if not self.current:
                await trio.sleep(5.0)
            return self.current

        def publish() -> None:
            self.observations = dict(self.executor.observations)

        async def task_files(task: Task) -> Mapping[tuple[str, bool], bytes]:
            return VALUES

        self.networks = FakeNetworks()
        self.executor = Executor(
            cast(Any, runtime),
            cluster_id="c1",
            node_id=NODE,
            host_ip="127.0.0.1",
            state=lambda: self.state,
            sync=sync,
            publish=publish,
            record_event=lambda *args: None,
            networks=cast(LocalNetworks, self.networks),
            task_files=task_files,
        )


async def _settle() -> None:
    await trio.testing.wait_all_tasks_blocked()
    await trio.sleep(1.0)  # virtual time: the stop's endpoint drain, the reconcile passes
    await trio.testing.wait_all_tasks_blocked()


async def test_a_failed_start_leaves_no_secret_behind(
    secrets_root: Path, autojump_clock: trio.testing.MockClock
) -> None:
    runtime = FakeRuntime(secrets_root, run="fail")
    harness = Harness(secrets_root, runtime, _state(_task("t1")))
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(harness.executor.run)
            await _settle()
            nursery.cancel_scope.cancel()
    assert runtime.seen_at_run == [b"s3cret"]  # the secret was there when Docker was asked
    assert harness.observations["t1"].state is TaskState.REJECTED
    assert secretfiles.task_ids(NODE) == set()


async def test_a_start_cancelled_midway_leaves_no_secret_behind(
    secrets_root: Path, autojump_clock: trio.testing.MockClock
) -> None:
    runtime = FakeRuntime(secrets_root, run="block")
    harness = Harness(secrets_root, runtime, _state(_task("t1")))
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(harness.executor.run)
            await _settle()
            assert secretfiles.task_ids(NODE) == {"t1"}
            nursery.cancel_scope.cancel()  # the agent stops while Docker starts the container
    assert secretfiles.task_ids(NODE) == set()


async def test_a_stopped_task_leaves_no_secret_behind(
    secrets_root: Path, autojump_clock: trio.testing.MockClock
) -> None:
    runtime = FakeRuntime(secrets_root)
    harness = Harness(secrets_root, runtime, _state(_task("t1")))
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(harness.executor.run)
            await _settle()
            assert harness.observations["t1"].state is TaskState.RUNNING
            assert secretfiles.task_ids(NODE) == {"t1"}
            harness.state = _state(_task("t1", desired=TaskState.SHUTDOWN))
            harness.executor.notify()
            await _settle()
            nursery.cancel_scope.cancel()
    assert runtime.stopped == ["c-t1"]
    assert secretfiles.task_ids(NODE) == set()


async def test_a_restarted_agent_removes_the_secrets_of_tasks_without_a_container(
    secrets_root: Path, autojump_clock: trio.testing.MockClock
) -> None:
    for task_id in ("running", "ended", "unknown"):
        secretfiles.materialize(NODE, task_id, REFS, VALUES)
    runtime = FakeRuntime(secrets_root)
    runtime.containers = [_container("c-running", "running")]
    state = _state(_task("running"), _task("ended", desired=TaskState.SHUTDOWN))
    harness = Harness(secrets_root, runtime, state)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(harness.executor.run)
            nursery.cancel_scope.cancel()
    assert secretfiles.task_ids(NODE) == {"running"}


def _planted_symlink(root: Path) -> Path:
    elsewhere = root.parent / "elsewhere"
    elsewhere.mkdir()
    root.symlink_to(elsewhere)
    return elsewhere


async def test_an_unsafe_secrets_directory_rejects_the_task_and_the_agent_goes_on(
    secrets_root: Path, autojump_clock: trio.testing.MockClock
) -> None:
    elsewhere = _planted_symlink(secrets_root)
    runtime = FakeRuntime(secrets_root)
    harness = Harness(secrets_root, runtime, _state(_task("t1")))
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(harness.executor.run)
            await _settle()
            rejected = harness.observations["t1"]
            # The agent still runs: a task without secrets starts.
            harness.state.services["s2"] = Service("s2", ServiceSpec("plain", "nginx"))
            harness.state.tasks["t2"] = Task("t2", "s2", 1, 1, node_id=NODE)
            harness.executor.notify()
            await _settle()
            nursery.cancel_scope.cancel()
    assert rejected.state is TaskState.REJECTED
    assert str(secrets_root) in rejected.error
    assert "symlink" in rejected.error
    assert harness.observations["t2"].state is TaskState.RUNNING
    assert list(elsewhere.iterdir()) == []
