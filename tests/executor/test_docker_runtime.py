"""Contract tests of the Docker runtime adapter (`executor.docker_runtime`) against the real
engine; the pure translations it relies on are tested in test_docker_translate.py.

Every test labels its containers with a fresh `swarmlet.test=<uuid>`, and a fixture removes them
(with the docker CLI, independently of the code under test) even when the test fails. If the
engine does not answer, these tests fail: they never skip. Every I/O test runs under
`trio.fail_after`.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import aclosing
from pathlib import Path
from typing import Any

import pytest
import trio

from swarmlet.errors import RuntimeAdapterError
from swarmlet.executor.docker_runtime import DockerRuntime, open_docker_runtime
from swarmlet.executor.runtime_types import (
    ContainerEvent,
    ContainerInfo,
    ContainerSpec,
    DockerError,
    HealthcheckSpec,
    MountSpec,
    PortBinding,
    UlimitSpec,
)
from swarmlet.executor.task_container import container_spec
from swarmlet.state.model import Service, ServiceSpec, Task, Ulimit
from swarmlet.testing.images import BUSYBOX_IMAGE, WEB_IMAGE, ensure_test_images

TEST_LABEL = "swarmlet.test"


@pytest.fixture(scope="session")
def _test_images() -> None:
    ensure_test_images()


@pytest.fixture
def labels() -> Iterator[dict[str, str]]:
    """A label unique to this test; every container, volume and network carrying it is removed
    afterwards,
    through the docker CLI so that cleanup does not depend on the code under test."""
    value = uuid.uuid4().hex
    yield {TEST_LABEL: value}
    selector = f"label={TEST_LABEL}={value}"
    containers = _docker_cli("ps", "-aq", "--filter", selector).split()
    if containers:
        _docker_cli("rm", "-f", "-v", *containers)
    volumes = _docker_cli("volume", "ls", "-q", "--filter", selector).split()
    if volumes:
        _docker_cli("volume", "rm", "-f", *volumes)
    networks = _docker_cli("network", "ls", "-q", "--filter", selector).split()
    if networks:
        _docker_cli("network", "rm", *networks)


def _docker_cli(*args: str) -> str:
    return subprocess.run(
        ["docker", *args], capture_output=True, text=True, check=True, timeout=60
    ).stdout


@pytest.fixture
async def runtime(_test_images: None) -> AsyncIterator[DockerRuntime]:
    with trio.fail_after(30):
        async with open_docker_runtime() as rt:
            yield rt


def _name(labels: dict[str, str], suffix: str) -> str:
    return f"swarmlet-test-{labels[TEST_LABEL][:12]}-{suffix}"


def _spec(test_labels: dict[str, str], suffix: str, **fields: Any) -> ContainerSpec:
    """A spec named after the test, labelled with `test_labels` unless `labels` is given."""
    fields.setdefault("labels", dict(test_labels))
    return ContainerSpec(name=_name(test_labels, suffix), **fields)


async def _http_get(host: str, port: int) -> tuple[int, bytes]:
    """GET / over HTTP/1.0, retried until the server answers (docker-proxy accepts connections
    before the process in the container listens, then closes them)."""
    while True:
        try:
            stream = await trio.open_tcp_stream(host, port)
            async with stream:
                await stream.send_all(b"GET / HTTP/1.0\r\nHost: test\r\n\r\n")
                data = b""
                while chunk := await stream.receive_some():
                    data += chunk
        except (OSError, trio.BrokenResourceError):
            data = b""
        if data:
            head, _, body = data.partition(b"\r\n\r\n")
            return int(head.split()[1]), body
        await trio.sleep(0.05)


async def _wait_for_event(
    events: AsyncIterator[ContainerEvent], container_id: str, action: str
) -> ContainerEvent:
    async for event in events:
        if event.container_id == container_id and event.action == action:
            return event
    raise AssertionError(f"the events stream ended before {action} of {container_id}")


async def _run_to_exit(rt: DockerRuntime, spec: ContainerSpec) -> ContainerInfo:
    async with rt.events(spec.labels) as events:
        info = await rt.run(spec)
        await _wait_for_event(events, info.id, "die")
    final = await rt.inspect(info.id)
    assert final is not None
    return final


async def _logs(rt: DockerRuntime, container_id: str, **kwargs: Any) -> list[bytes]:
    async with aclosing(rt.logs(container_id, **kwargs)) as lines:
        return [line async for line in lines]


@pytest.mark.docker
async def test_ping_answers(runtime: DockerRuntime) -> None:
    with trio.fail_after(10):
        await runtime.ping()


@pytest.mark.docker
@pytest.mark.parametrize("host_ip", ["127.0.0.1", "127.0.0.2"])
async def test_run_publishes_target_port_on_host_ip_and_answers_with_the_name(
    runtime: DockerRuntime, labels: dict[str, str], host_ip: str
) -> None:
    with trio.fail_after(30):
        named = await runtime.run(
            _spec(
                labels,
                "named",
                image=WEB_IMAGE,
                env={"NAME": "replica-1"},
                ports=(PortBinding(80),),
                host_ip=host_ip,
            )
        )
        anonymous = await runtime.run(
            _spec(labels, "anon", image=WEB_IMAGE, ports=(PortBinding(80),), host_ip=host_ip)
        )
        assert named.state == "running"
        assert set(named.host_ports) == {(80, "tcp")}
        assert await _http_get(host_ip, named.host_ports[(80, "tcp")]) == (200, b"replica-1\n")
        # Without NAME the body is the hostname, i.e. the container id prefix.
        port = anonymous.host_ports[(80, "tcp")]
        assert await _http_get(host_ip, port) == (200, anonymous.id[:12].encode() + b"\n")


@pytest.mark.docker
async def test_inspect_and_list_by_label_see_every_state(
    runtime: DockerRuntime, labels: dict[str, str]
) -> None:
    with trio.fail_after(30):
        sleeper = await runtime.run(
            _spec(labels, "sleep", image=BUSYBOX_IMAGE, command=("sleep", "60"))
        )
        done = await _run_to_exit(
            runtime, _spec(labels, "done", image=BUSYBOX_IMAGE, command=("sh", "-c", "exit 3"))
        )
        assert (done.state, done.exit_code) == ("exited", 3)
        assert done.finished_at != ""

        listed = {info.id: info for info in await runtime.list(labels)}
        assert set(listed) == {sleeper.id, done.id}
        assert listed[sleeper.id].state == "running"
        assert listed[sleeper.id].exit_code is None
        assert listed[sleeper.id].name == _name(labels, "sleep")
        assert listed[sleeper.id].labels[TEST_LABEL] == labels[TEST_LABEL]
        assert await runtime.list({TEST_LABEL: uuid.uuid4().hex}) == []

        await runtime.remove(sleeper.id)
        await runtime.remove(done.id)
        assert await runtime.inspect(sleeper.id) is None
        assert await runtime.list(labels) == []
        await runtime.remove(sleeper.id)  # a missing container is not an error


@pytest.mark.docker
async def test_stop_sends_the_stop_signal_and_records_the_exit(
    runtime: DockerRuntime, labels: dict[str, str]
) -> None:
    with trio.fail_after(30):
        web = await runtime.run(_spec(labels, "web", image=WEB_IMAGE))
        await runtime.stop(web.id, timeout_s=10)
        stopped = await runtime.inspect(web.id)
        assert stopped is not None
        # The web image exits 0 on SIGTERM; a SIGKILL after the grace period would give 137.
        assert (stopped.state, stopped.exit_code) == ("exited", 0)


@pytest.mark.docker
async def test_kill_is_seen_as_start_then_die_with_exit_code_137(
    runtime: DockerRuntime, labels: dict[str, str]
) -> None:
    with trio.fail_after(30):
        async with runtime.events(labels) as events:
            info = await runtime.run(
                _spec(labels, "victim", image=BUSYBOX_IMAGE, command=("sleep", "60"))
            )
            start = await _wait_for_event(events, info.id, "start")
            assert start.labels[TEST_LABEL] == labels[TEST_LABEL]
            assert start.name == info.name
            await runtime.kill(info.id)
            die = await _wait_for_event(events, info.id, "die")
            assert die.exit_code == 137
            assert die.time_ns >= start.time_ns


@pytest.mark.docker
async def test_events_only_report_containers_with_the_labels(
    runtime: DockerRuntime, labels: dict[str, str]
) -> None:
    other = {TEST_LABEL: labels[TEST_LABEL], "swarmlet.role": "other"}
    with trio.fail_after(30):
        async with runtime.events({**labels, "swarmlet.role": "mine"}) as events:
            await runtime.run(
                _spec(labels, "other", image=BUSYBOX_IMAGE, command=("true",), labels=other)
            )
            mine = await runtime.run(
                _spec(
                    labels,
                    "mine",
                    image=BUSYBOX_IMAGE,
                    command=("true",),
                    labels={**labels, "swarmlet.role": "mine"},
                )
            )
            first = await events.__anext__()
            assert first.container_id == mine.id


@pytest.mark.docker
async def test_leaving_events_returns_promptly_even_with_unread_events(
    runtime: DockerRuntime, labels: dict[str, str]
) -> None:
    with trio.fail_after(15):
        async with runtime.events(labels):
            await runtime.run(_spec(labels, "x", image=BUSYBOX_IMAGE, command=("true",)))
        async with runtime.events(labels):
            pass  # nothing ever arrives: closing must still end the reader thread


@pytest.mark.docker
async def test_body_exception_leaves_events_unwrapped(
    runtime: DockerRuntime, labels: dict[str, str]
) -> None:
    with trio.fail_after(15), pytest.raises(KeyError):
        async with runtime.events(labels):
            raise KeyError("mine")


@pytest.mark.docker
async def test_health_status_events_report_healthy_then_unhealthy(
    runtime: DockerRuntime, labels: dict[str, str], tmp_path: Path
) -> None:
    # The check passes while a file exists in a bind-mounted directory that the test controls,
    # so the order of events does not depend on timing.
    flag = tmp_path / "ok"
    flag.touch()
    check = HealthcheckSpec(
        test=("CMD-SHELL", "test -f /flag/ok"), interval_s=0.2, timeout_s=1, retries=1
    )
    spec = _spec(
        labels,
        "health",
        image=BUSYBOX_IMAGE,
        command=("sleep", "60"),
        healthcheck=check,
        mounts=(MountSpec(target="/flag", source=str(tmp_path), type="bind", read_only=True),),
    )
    with trio.fail_after(30):
        async with runtime.events(labels) as events:
            info = await runtime.run(spec)
            assert info.health in ("starting", "healthy")
            event = await _wait_for_event(events, info.id, "health_status: healthy")
            assert event.health_status == "healthy"
            flag.unlink()
            event = await _wait_for_event(events, info.id, "health_status: unhealthy")
            assert event.health_status == "unhealthy"
        final = await runtime.inspect(info.id)
        assert final is not None
        assert final.health == "unhealthy"


@pytest.mark.docker
async def test_missing_image_fails_with_dockers_own_pull_error(
    runtime: DockerRuntime, labels: dict[str, str]
) -> None:
    ref = f"swarmlet/missing-{labels[TEST_LABEL]}:1"
    with trio.fail_after(60):
        assert not await runtime.image_present(ref)
        with pytest.raises(RuntimeAdapterError) as caught:
            await runtime.ensure_image(ref)
        # The CLI prints the daemon's explanation after "Error response from daemon: ".
        cli = await trio.run_process(["docker", "pull", ref], capture_stderr=True, check=False)
        assert cli.returncode != 0
        daemon_says = cli.stderr.decode().strip().removeprefix("Error response from daemon: ")
        assert isinstance(caught.value, DockerError)
        assert caught.value.explanation == daemon_says
        assert str(caught.value) == f"docker pull {ref} failed: {daemon_says}"

        with pytest.raises(RuntimeAdapterError, match="No such image"):
            await runtime.run(_spec(labels, "noimage", image=ref))


@pytest.mark.docker
async def test_start_failure_raises_and_leaves_no_container(
    runtime: DockerRuntime, labels: dict[str, str]
) -> None:
    with trio.fail_after(30):
        with pytest.raises(RuntimeAdapterError, match="no/such/binary") as caught:
            await runtime.run(
                _spec(labels, "bad", image=BUSYBOX_IMAGE, command=("/no/such/binary",))
            )
        assert isinstance(caught.value, DockerError)
        assert caught.value.status_code is not None
        assert await runtime.list(labels) == []


@pytest.mark.docker
async def test_mount_options_that_do_not_fit_the_type_are_a_runtime_error(
    runtime: DockerRuntime, labels: dict[str, str], tmp_path: Path
) -> None:
    """docker-py refuses them before any request; the executor must see a RuntimeAdapterError
    (which fails the task), never docker's own exception (which would end the executor)."""
    bind = MountSpec(target="/y", source=str(tmp_path), type="bind", volume_driver_opts={"o": "p"})
    spec = _spec(labels, "badmount", image=BUSYBOX_IMAGE, command=("sleep", "60"), mounts=(bind,))
    with trio.fail_after(30):
        with pytest.raises(DockerError, match="bind"):
            await runtime.run(spec)
        assert await runtime.list(labels) == []


@pytest.mark.docker
async def test_name_conflict_is_a_runtime_error(
    runtime: DockerRuntime, labels: dict[str, str]
) -> None:
    spec = _spec(labels, "twin", image=BUSYBOX_IMAGE, command=("sleep", "60"))
    with trio.fail_after(30):
        await runtime.run(spec)
        with pytest.raises(DockerError) as caught:
            await runtime.run(spec)
        assert caught.value.status_code == 409


@pytest.mark.docker
async def test_logs_return_stdout_and_stderr_lines_and_honour_tail(
    runtime: DockerRuntime, labels: dict[str, str]
) -> None:
    # stdout and stderr are two pipes: Docker orders lines by when it reads them, so the writes
    # are spaced out to make the expected order the only possible one.
    script = "echo one; sleep 0.3; echo two >&2; sleep 0.3; printf 'three'"
    with trio.fail_after(30):
        info = await _run_to_exit(
            runtime, _spec(labels, "logs", image=BUSYBOX_IMAGE, command=("sh", "-c", script))
        )
        assert await _logs(runtime, info.id, follow=False) == [b"one", b"two", b"three"]
        assert await _logs(runtime, info.id, follow=False, tail=1) == [b"three"]


@pytest.mark.docker
async def test_followed_logs_stream_until_the_container_exits(
    runtime: DockerRuntime, labels: dict[str, str]
) -> None:
    script = "echo a; sleep 0.3; echo b"
    with trio.fail_after(30):
        info = await runtime.run(
            _spec(labels, "follow", image=BUSYBOX_IMAGE, command=("sh", "-c", script))
        )
        assert await _logs(runtime, info.id, follow=True) == [b"a", b"b"]


@pytest.mark.docker
async def test_cancelled_log_follow_releases_the_stream(
    runtime: DockerRuntime, labels: dict[str, str]
) -> None:
    with trio.fail_after(30):
        info = await runtime.run(
            _spec(labels, "quiet", image=BUSYBOX_IMAGE, command=("sleep", "60"))
        )
        with trio.move_on_after(0.3) as scope:
            await _logs(runtime, info.id, follow=True)
        assert scope.cancelled_caught


@pytest.mark.docker
async def test_stats_report_the_memory_limit(
    runtime: DockerRuntime, labels: dict[str, str]
) -> None:
    limit = 64 << 20
    with trio.fail_after(30):
        info = await runtime.run(
            _spec(
                labels,
                "stats",
                image=BUSYBOX_IMAGE,
                command=("sleep", "60"),
                memory_bytes=limit,
                nano_cpus=500_000_000,
            )
        )
        stats = await runtime.stats(info.id)
        assert stats.memory_limit_bytes == limit
        assert 0 < stats.memory_bytes < limit
        assert stats.cpu_percent >= 0.0


@pytest.mark.docker
async def test_spec_options_reach_the_container(
    runtime: DockerRuntime, labels: dict[str, str]
) -> None:
    script = "id -u; pwd; hostname; echo $GREETING; grep -c db.internal /etc/hosts; ulimit -n"
    spec = _spec(
        labels,
        "options",
        image=BUSYBOX_IMAGE,
        entrypoint=("sh", "-c"),
        command=(script,),
        env={"GREETING": "hello"},
        user="65534",
        working_dir="/tmp",
        hostname="replica-7",
        extra_hosts={"db.internal": "10.1.2.3"},
        ulimits=(UlimitSpec("nofile", 1024, 2048),),
        cap_drop=("NET_RAW",),
        init=True,
        stop_signal="SIGINT",
        stop_grace_s=1,
        read_only=True,
        mounts=(MountSpec(target="/scratch", type="tmpfs", tmpfs_size_bytes=1 << 20),),
        log_driver="json-file",
        log_options={"max-size": "1m"},
    )
    with trio.fail_after(30):
        info = await _run_to_exit(runtime, spec)
        assert info.exit_code == 0, info
        assert await _logs(runtime, info.id, follow=False) == [
            b"65534",
            b"/tmp",
            b"replica-7",
            b"hello",
            b"1",
            b"1024",
        ]


@pytest.mark.docker
async def test_a_services_container_settings_reach_docker_and_the_container(
    runtime: DockerRuntime, labels: dict[str, str]
) -> None:
    """From the service model to the engine: what `docker inspect` reads back, and what the
    processes inside see (the script exits 0 only if every setting took effect)."""
    script = (
        'test "$(ulimit -n)" = 1024'
        " && ! touch /probe 2>/dev/null"
        " && grep -q '^nameserver 10.0.0.53' /etc/resolv.conf"
        " && grep -q '^search example.com' /etc/resolv.conf"
        " && grep -q '^options ndots:2' /etc/resolv.conf"
        " && test -t 1"
    )
    service = Service(
        id="s1",
        spec=ServiceSpec(
            name=_name(labels, "settings"),
            image=BUSYBOX_IMAGE,
            entrypoint=("sh", "-c"),
            command=(script,),
            container_labels=dict(labels),
            ulimits=(Ulimit("nofile", 1024, 2048), Ulimit("nproc", 512, 512)),
            log_driver="local",
            log_options={"max-size": "1m"},
            dns_servers=("10.0.0.53",),
            dns_search=("example.com",),
            dns_options=("ndots:2",),
            read_only=True,
            tty=True,
            pids_limit=64,
        ),
    )
    task = Task(id="t1", service_id="s1", slot=1, spec_version=1, node_id="n1")
    spec = container_spec(service, task, cluster_id="c1", node_id="n1", host_ip="127.0.0.1")
    with trio.fail_after(30):
        info = await _run_to_exit(runtime, spec)
    assert info.exit_code == 0, info
    (inspected,) = json.loads(_docker_cli("inspect", info.id))
    host = inspected["HostConfig"]
    assert host["Ulimits"] == [
        {"Name": "nofile", "Soft": 1024, "Hard": 2048},
        {"Name": "nproc", "Soft": 512, "Hard": 512},
    ]
    assert host["LogConfig"] == {"Type": "local", "Config": {"max-size": "1m"}}
    assert (host["Dns"], host["DnsSearch"], host["DnsOptions"]) == (
        ["10.0.0.53"],
        ["example.com"],
        ["ndots:2"],
    )
    assert (host["ReadonlyRootfs"], host["PidsLimit"]) == (True, 64)
    assert inspected["Config"]["Tty"] is True


@pytest.mark.docker
async def test_named_volume_outlives_its_container_and_removal_is_idempotent(
    runtime: DockerRuntime, labels: dict[str, str]
) -> None:
    volume = _name(labels, "vol")
    mount = (MountSpec(target="/data", source=volume),)
    with trio.fail_after(30):
        await runtime.create_volume(volume, labels=labels)
        await runtime.create_volume(volume, labels=labels)  # exists: kept
        writer = _spec(
            labels,
            "writer",
            image=BUSYBOX_IMAGE,
            command=("sh", "-c", "echo kept > /data/f"),
            mounts=mount,
        )
        reader = _spec(
            labels, "reader", image=BUSYBOX_IMAGE, command=("cat", "/data/f"), mounts=mount
        )
        written = await _run_to_exit(runtime, writer)
        assert written.exit_code == 0
        read = await _run_to_exit(runtime, reader)
        assert await _logs(runtime, read.id, follow=False) == [b"kept"]
        for info in (written, read):
            await runtime.remove(info.id)
        await runtime.remove_volume(volume)
        await runtime.remove_volume(volume)  # missing: not an error


async def test_unreachable_engine_fails_loudly() -> None:
    with trio.fail_after(30), pytest.raises(DockerError) as caught:
        async with open_docker_runtime(base_url="unix:///nonexistent/docker.sock"):
            pass
    assert str(caught.value).startswith("docker connect unix:///nonexistent/docker.sock failed: ")
    assert caught.value.status_code is None


@pytest.mark.docker
async def test_networks_are_created_listed_joined_and_removed(
    runtime: DockerRuntime, labels: dict[str, str]
) -> None:
    with trio.fail_after(60):
        picked = await runtime.create_network(_name(labels, "a"), labels=labels)
        assert picked.subnet and picked.gateway and picked.bridge.startswith("br-")
        lower = picked.subnet.replace(".0.0/16", ".0.0/17") if "/16" in picked.subnet else ""
        await runtime.remove_network(picked.name)
        chosen = await runtime.create_network(
            _name(labels, "b"),
            labels=labels,
            subnet=picked.subnet,
            ip_range=lower or picked.subnet,
            gateway=picked.gateway,
            bridge="swltest" + labels[TEST_LABEL][:8],
        )
        assert (chosen.subnet, chosen.gateway) == (picked.subnet, picked.gateway)
        assert chosen.bridge == "swltest" + labels[TEST_LABEL][:8]
        other = await runtime.create_network(_name(labels, "c"), labels=labels)
        assert {n.name for n in await runtime.networks(labels)} == {chosen.name, other.name}
        info = await runtime.run(
            _spec(
                labels,
                "two",
                image=BUSYBOX_IMAGE,
                command=("sleep", "60"),
                networks=(chosen.name, other.name),
            )
        )
        attrs = _docker_cli("inspect", "-f", "{{json .NetworkSettings.Networks}}", info.id)
        assert chosen.name in attrs and other.name in attrs
        with pytest.raises(DockerError):  # a network with a container on it stays
            await runtime.remove_network(chosen.name)
        await runtime.remove(info.id)
        await runtime.remove_network(chosen.name)
        await runtime.remove_network(chosen.name)  # already gone: not an error
        assert await runtime.inspect_network(chosen.name) is None
        assert await runtime.exposed_ports(WEB_IMAGE) == ((80, "tcp"),)
        assert await runtime.exposed_ports(BUSYBOX_IMAGE) == ()
