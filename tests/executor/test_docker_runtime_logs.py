"""`DockerRuntime.logs` against the real Docker Engine: Docker's own timestamps on each line (what
`service logs` merges lines from several nodes by) and `since`. The plain reading, `tail` and
follow are in test_docker_runtime.py."""

from __future__ import annotations

import re
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import aclosing
from typing import Any

import pytest
import trio

from swarmlet.api.logs import split_timestamp, timestamp_ns
from swarmlet.executor.docker_runtime import DockerRuntime, open_docker_runtime
from swarmlet.executor.runtime_types import ContainerSpec
from swarmlet.testing.images import BUSYBOX_IMAGE, ensure_test_images

TEST_LABEL = "swarmlet.test"
# RFC3339NanoFixed, as the engine writes it before each line.
DOCKER_TIMESTAMP = re.compile(rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z ")


@pytest.fixture
def labels() -> Iterator[dict[str, str]]:
    """A label unique to this test; its containers are removed afterwards by the docker CLI."""
    value = uuid.uuid4().hex
    yield {TEST_LABEL: value}
    ids = subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"label={TEST_LABEL}={value}"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.split()
    if ids:
        subprocess.run(["docker", "rm", "-f", *ids], capture_output=True, check=True, timeout=60)


@pytest.fixture
async def runtime() -> AsyncIterator[DockerRuntime]:
    await trio.to_thread.run_sync(ensure_test_images)
    with trio.fail_after(30):
        async with open_docker_runtime() as rt:
            yield rt


async def _exited(rt: DockerRuntime, labels: dict[str, str], script: str) -> str:
    """The id of a busybox container that ran `script` to its end."""
    spec = ContainerSpec(
        name=f"swarmlet-test-{labels[TEST_LABEL][:12]}-logs",
        image=BUSYBOX_IMAGE,
        command=("sh", "-c", script),
        labels=dict(labels),
    )
    async with rt.events(labels) as events:
        info = await rt.run(spec)
        async for event in events:
            if event.container_id == info.id and event.action == "die":
                return info.id
    raise AssertionError("the events stream ended before the container died")


async def _logs(rt: DockerRuntime, container_id: str, **kwargs: Any) -> list[bytes]:
    async with aclosing(rt.logs(container_id, **kwargs)) as lines:
        return [line async for line in lines]


@pytest.mark.docker
async def test_timestamps_put_dockers_own_before_each_line(
    runtime: DockerRuntime, labels: dict[str, str]
) -> None:
    with trio.fail_after(30):
        container_id = await _exited(runtime, labels, "echo one; sleep 0.2; echo two")
        lines = await _logs(runtime, container_id, follow=False, timestamps=True)
    assert [DOCKER_TIMESTAMP.sub(b"", line, count=1) for line in lines] == [b"one", b"two"]
    assert all(DOCKER_TIMESTAMP.match(line) for line in lines)
    stamps = [timestamp_ns(split_timestamp(line)[0]) for line in lines]
    # The engine's clock as it read each line, so in order. Not "0.2 s apart": the engine may read
    # the first line late, and asserting that gap failed once on a freshly booted machine.
    assert stamps[0] < stamps[1]


@pytest.mark.docker
async def test_since_keeps_only_lines_stamped_at_or_after_it(
    runtime: DockerRuntime, labels: dict[str, str]
) -> None:
    with trio.fail_after(30):
        container_id = await _exited(runtime, labels, "echo early; sleep 1; echo late")
        stamped = await _logs(runtime, container_id, follow=False, timestamps=True)
        early, late = (timestamp_ns(split_timestamp(line)[0]) for line in stamped)
        between = (early + late) / 2 / 1e9
        assert await _logs(runtime, container_id, follow=False, since=between) == [b"late"]
        before = early / 1e9 - 5
        assert await _logs(runtime, container_id, follow=False, since=before) == [
            b"early",
            b"late",
        ]
