"""The Docker runtime adapter: the only module that imports `docker` (docker-py) and the one
place where swarmlet blocks on the engine.

Owns: the docker-py clients and their thread limits; creating, starting, stopping and removing
containers from a `ContainerSpec`; the engine's events stream; container logs and stats; images,
volumes and bridge networks. What it sends and reads is translated by `executor.docker_translate`
into the values of `executor.runtime_types`.

Invariants:
  - every blocking docker-py call runs in `trio.to_thread.run_sync` under a `CapacityLimiter`
    (`max_threads`); long-lived streams (events, logs) have their own client and limiter, so
    a node with many followers never starves the short calls;
  - every docker / requests exception is translated, inside the worker thread, into
    `DockerError`, a `RuntimeAdapterError` whose message is Docker's own explanation prefixed by
    the operation ("docker pull x:1 failed: <what the daemon said>");
  - `run` is create + start and never pulls (`ensure_image` does). If start (or joining a
    further network) fails, the created container is removed before the error is raised: the
    caller sees one failure and finds no half-made container later;
  - `remove` also removes the container's anonymous volumes (`v=True`, as swarmkit's executor
    does), so replaced replicas leak nothing; a missing container, or one whose removal is
    already in progress, is not an error;
  - every call through `_call` is timed in its worker thread (the engine's answer, not the wait
    for a thread) and counted by `operation_kind`, a closed set, on the trio thread: the
    figures `node.metrics` exports (`call_latency`, `call_failures`);
  - `events` asks for the events since the moment it was called, so one that fires while the
    HTTP stream is being set up is replayed, not lost; only lifecycle and health actions are
    requested (`CONTAINER_EVENT_ACTIONS`), since every health probe would otherwise add `exec_*`
    events; a stream that ends without being closed by us (the engine restarted) raises
    `DockerError` instead of looking like a quiet engine.

It must not know tasks, services or the cluster: callers choose names and labels
(`swarmlet.cluster`, `swarmlet.node`, `swarmlet.task`, ...) and filter by them.
"""

from __future__ import annotations

import collections
import math
import os
import socket
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager, suppress
from typing import Any, TypeVar

import docker
import docker.errors
import docker.types
import requests.exceptions
import trio
from docker.types.daemon import CancellableStream

from swarmlet.errors import RuntimeAdapterError
from swarmlet.executor.docker_translate import (
    BRIDGE_NAME_OPTION,
    CONTAINER_EVENT_ACTIONS,
    bounded_seconds,
    container_create_args,
    container_event_from_docker,
    container_info_from_inspect,
    container_stats_from_docker,
    label_filters,
    network_info_from_inspect,
)
from swarmlet.executor.registry_auth import RegistryCredential
from swarmlet.executor.runtime_types import (
    DOCKER_OPERATIONS,
    ContainerEvent,
    ContainerInfo,
    ContainerSpec,
    ContainerStats,
    DockerError,
    NetworkInfo,
    operation_kind,
)
from swarmlet.wire.histogram import DOCKER_CALL_BUCKETS_S, Histogram

__all__ = ["DOCKER_OPERATIONS", "DockerRuntime", "open_docker_runtime", "operation_kind"]

T = TypeVar("T")

_DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"
_NO_TIMEOUT: Any = None  # requests: no read timeout (docker's stubs say int)


# --------------------------------------------------------------------------------------------
# Calls into docker-py


def _translated(operation: str, fn: Callable[[], T]) -> Callable[[], T]:
    """Wrap `fn` so that docker's exceptions leave the worker thread as DockerError."""

    def call() -> T:
        try:
            return fn()
        except docker.errors.APIError as e:
            raise DockerError(operation, e.status_code, e.explanation or str(e)) from e
        except (docker.errors.DockerException, requests.exceptions.RequestException, OSError) as e:
            raise DockerError(operation, None, str(e) or type(e).__name__) from e

    return call


def _by_digest(ref: str) -> str:
    """`name:tag@digest` as `name@digest` (the engine ignores the tag of such a reference);
    any other reference as it is."""
    name, at, digest = ref.partition("@")
    if not at:
        return ref
    head, slash, last = name.rpartition("/")
    return f"{head}{slash}{last.partition(':')[0]}@{digest}"


def _short(container_id: str) -> str:
    return container_id[:12]


def _next_or_none(stream: Iterator[T]) -> T | None:
    return next(stream, None)


def _shut_down(stream: CancellableStream[Any]) -> None:
    """Shut the stream's socket down: a thread blocked reading it wakes up and ends."""
    stream.close()


def _release(stream: CancellableStream[Any]) -> None:
    """Close the HTTP response once no thread reads it. `CancellableStream.close` closes the
    socket object, but the response's file object still references it, so its descriptor stays
    open (and warns when collected) until the response itself is closed."""
    response: requests.Response | None = getattr(stream, "_response", None)
    if response is not None:
        response.close()


class _EventStream:
    """The async iterator handed out by `DockerRuntime.events`."""

    def __init__(self, receive: trio.MemoryReceiveChannel[ContainerEvent]) -> None:
        self._receive = receive
        self.failure: RuntimeAdapterError | None = None

    def __aiter__(self) -> _EventStream:
        return self

    async def __anext__(self) -> ContainerEvent:
        try:
            return await self._receive.receive()
        except trio.EndOfChannel:
            if self.failure is not None:
                raise self.failure from None
            raise StopAsyncIteration from None


class DockerRuntime:
    """Async facade over one docker-py client. Make it with `open_docker_runtime`."""

    def __init__(
        self,
        client: docker.DockerClient,
        stream_client: docker.DockerClient,
        *,
        limiter: trio.CapacityLimiter,
        stream_limiter: trio.CapacityLimiter,
    ) -> None:
        self._api = client.api
        # Same engine, for events and logs: no read timeout (a quiet `logs --follow` must not
        # time out after 60 s) and a connection pool as large as the stream limiter.
        self._stream_api = stream_client.api
        self._limiter = limiter
        self._stream_limiter = stream_limiter
        # By `operation_kind`, updated on the trio thread only: seconds per call, and the calls
        # that raised DockerError (the engine refused, or was not reached).
        self.call_latency: dict[str, Histogram] = {}
        self.call_failures: collections.Counter[str] = collections.Counter()

    async def _call(self, operation: str, fn: Callable[[], T]) -> T:
        call = _translated(operation, fn)
        elapsed_s: list[float] = []  # written by the worker thread, read once it has returned

        def timed() -> T:
            started = time.perf_counter()
            try:
                return call()
            finally:
                elapsed_s.append(time.perf_counter() - started)

        kind = operation_kind(operation)
        try:
            return await trio.to_thread.run_sync(timed, limiter=self._limiter)
        except DockerError:
            self.call_failures[kind] += 1
            raise
        finally:
            if elapsed_s:
                histogram = self.call_latency.get(kind)
                if histogram is None:
                    histogram = self.call_latency[kind] = Histogram(DOCKER_CALL_BUCKETS_S)
                histogram.observe(elapsed_s[0])

    async def ping(self) -> None:
        await self._call("ping", self._api.ping)

    async def image_present(self, ref: str) -> bool:
        def present() -> bool:
            try:
                self._api.inspect_image(ref)  # type: ignore[no-untyped-call]
            except docker.errors.ImageNotFound:
                return False
            return True

        return await self._call(f"image inspect {ref}", present)

    async def ensure_image(self, ref: str, credential: RegistryCredential | None = None) -> None:
        """Return when `ref` is present, pulling it if needed; a failed pull raises DockerError
        with the daemon's message (e.g. "pull access denied for ...", "dial tcp: lookup ...").
        `credential` is the service's for the image's registry (`--with-registry-auth`), given
        to this pull alone.

        A pinned reference (`name:tag@sha256:...`, as managers record them) is the digest: it
        is present only if that digest is, whatever image the tag names here, and it is pulled
        as `name@sha256:...` (docker-py splits `name:tag@digest` into a bogus repository)."""
        ref = _by_digest(ref)
        if await self.image_present(ref):
            return

        def pull() -> None:
            # The daemon reports most pull failures inside the progress stream with HTTP 200,
            # and docker-py's `images.pull` ignores them: read the stream ourselves, to its end
            # (which releases the connection), keeping the first error.
            error: str | None = None
            auth = credential.auth_config() if credential is not None else None
            for message in self._api.pull(ref, stream=True, decode=True, auth_config=auth):
                if "error" in message and error is None:
                    detail = message.get("errorDetail") or {}
                    error = str(detail.get("message") or message["error"])
            if error is not None:
                raise DockerError(f"pull {ref}", None, error)
            self._api.inspect_image(ref)  # type: ignore[no-untyped-call]

        await self._call(f"pull {ref}", pull)

    async def run(self, spec: ContainerSpec) -> ContainerInfo:
        """Create and start a container; return its info, with the host ports Docker chose."""
        create_args, host_args = container_create_args(spec)

        def run() -> ContainerInfo:
            if "mounts" in host_args:
                # docker-py's Mount also checks that the options fit the mount type; built here,
                # inside the translation, so a mismatch is a DockerError like any other refusal.
                host_args["mounts"] = [docker.types.Mount(**m) for m in host_args["mounts"]]
            created = self._api.create_container(
                host_config=self._api.create_host_config(**host_args), **create_args
            )
            container_id = created["Id"]
            try:
                for network in spec.networks[1:]:
                    self._api.connect_container_to_network(container_id, network)
                self._api.start(container_id)
            except docker.errors.APIError:
                # The start (or connect) error is the one that matters; a failed cleanup must
                # not hide it.
                with suppress(docker.errors.APIError):
                    self._api.remove_container(container_id, force=True, v=True)
                raise
            return container_info_from_inspect(self._api.inspect_container(container_id))

        return await self._call(f"run {spec.name}", run)

    async def inspect(self, container_id: str) -> ContainerInfo | None:
        def inspect() -> ContainerInfo | None:
            try:
                return container_info_from_inspect(self._api.inspect_container(container_id))
            except docker.errors.NotFound:
                return None

        return await self._call(f"inspect {_short(container_id)}", inspect)

    async def list(self, labels: Mapping[str, str]) -> list[ContainerInfo]:
        """Containers in every state that carry all of `labels` (no labels: every container)."""
        filters = {"label": label_filters(labels)} if labels else None

        def list_() -> list[ContainerInfo]:
            infos = []
            for row in self._api.containers(all=True, filters=filters):
                try:
                    attrs = self._api.inspect_container(row["Id"])
                except docker.errors.NotFound:
                    continue  # removed between the list and the inspect
                infos.append(container_info_from_inspect(attrs))
            return infos

        return await self._call("list", list_)

    async def stop(self, container_id: str, timeout_s: float) -> None:
        """Send the stop signal, then SIGKILL after `timeout_s` (rounded up to whole seconds)."""
        await self._call(
            f"stop {_short(container_id)}",
            lambda: self._api.stop(container_id, timeout=math.ceil(bounded_seconds(timeout_s))),
        )

    async def remove(self, container_id: str, force: bool = True) -> None:
        """Remove the container and its anonymous volumes; a missing one is not an error."""

        def remove() -> None:
            try:
                self._api.remove_container(container_id, force=force, v=True)
            except docker.errors.NotFound:
                pass
            except docker.errors.APIError as e:
                # Two removers raced: the container is going away, which is what we asked for.
                if not (e.status_code == 409 and "already in progress" in str(e.explanation)):
                    raise

        await self._call(f"remove {_short(container_id)}", remove)

    async def kill(self, container_id: str, signal: str = "SIGKILL") -> None:
        await self._call(
            f"kill {_short(container_id)}", lambda: self._api.kill(container_id, signal=signal)
        )

    def events(
        self, labels: Mapping[str, str], *, since_s: float | None = None
    ) -> AbstractAsyncContextManager[AsyncIterator[ContainerEvent]]:
        """The engine's container events for containers carrying all of `labels`, from `since_s`
        (epoch seconds; default: now, so nothing between this call and the first read is lost).

            async with runtime.events({"swarmlet.node": node_id}) as events:
                async for event in events: ...

        A worker thread reads docker-py's decoding generator; leaving the block closes the HTTP
        response, which ends that thread at once."""
        return self._events(labels, time.time() if since_s is None else since_s)

    @asynccontextmanager
    async def _events(
        self, labels: Mapping[str, str], since_s: float
    ) -> AsyncIterator[AsyncIterator[ContainerEvent]]:
        filters: dict[str, Any] = {"type": ["container"], "event": list(CONTAINER_EVENT_ACTIONS)}
        if labels:
            filters["label"] = label_filters(labels)
        # Docker parses "seconds.nanoseconds" (api/types/time.ParseTimestamps); docker-py passes a
        # string through, and its stubs only know int (whole seconds would replay up to 1 s early).
        since: Any = f"{since_s:.9f}"
        stream = await self._call(
            "events", lambda: self._stream_api.events(since=since, filters=filters, decode=True)
        )
        send, receive = trio.open_memory_channel[ContainerEvent](0)
        iterator = _EventStream(receive)
        closing = False

        def pump() -> None:
            # Runs in a worker thread until the stream ends. `trio.from_thread.run(send.send, ...)`
            # gives back-pressure; it raises BrokenResourceError once the consumer has left.
            try:
                for raw in stream:
                    event = container_event_from_docker(raw)
                    if event is not None:
                        trio.from_thread.run(send.send, event)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return
            except Exception as e:
                if not closing:
                    iterator.failure = DockerError("events", None, str(e) or type(e).__name__)
                return
            # docker-py ends the iteration quietly when the connection drops.
            if not closing:
                iterator.failure = DockerError(
                    "events", None, "the engine closed the events stream (did it restart?)"
                )

        async def run_pump() -> None:
            try:
                await trio.to_thread.run_sync(pump, limiter=self._stream_limiter)
            finally:
                send.close()

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(run_pump)
                try:
                    yield iterator
                finally:
                    # Synchronous on purpose: this must run even when we are being cancelled.
                    closing = True
                    receive.close()  # a pump blocked in send() gets BrokenResourceError
                    _shut_down(stream)  # a pump blocked in recv() sees the socket shut down
        except BaseExceptionGroup as group:
            # The pump never raises, so a group holds the body's exception alone: unwrap it so
            # that callers see their own exception, not an ExceptionGroup.
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from None
            raise
        finally:
            _release(stream)  # the nursery has joined the pump: nobody reads the response now

    async def logs(
        self,
        container_id: str,
        *,
        follow: bool,
        tail: int | None = None,
        since: float | None = None,
        timestamps: bool = False,
        details: bool = False,
    ) -> AsyncGenerator[bytes, None]:
        """stdout and stderr interleaved, one line at a time without its newline: the last
        `tail` lines (all if None) of those Docker stamped at or after `since` (epoch seconds),
        each behind Docker's own timestamp and a space if `timestamps` (RFC 3339 with 9-digit
        nanoseconds, from the engine's clock as it read the line), then, if `details`, the
        logging driver's attributes and a space (the Engine API's `details=true`: `k=v,k=v`,
        URL-escaped, sorted by key; "" when the driver gives none, as json-file without
        `--log-opt labels/env`). With `follow` the iteration ends when the container stops.
        Use it under `contextlib.aclosing` (or iterate to the end) so that the HTTP stream is
        closed promptly."""

        def open_details() -> Any:
            # docker-py's `logs` has no `details`: the same request, with it, through the
            # client's own request helpers (private, so not in its stubs).
            api: Any = self._stream_api
            params: dict[str, Any] = {
                "stdout": 1,
                "stderr": 1,
                "follow": int(follow),
                "timestamps": int(timestamps),
                "tail": "all" if tail is None else tail,
                "details": 1,
            }
            if since:
                params["since"] = since
            url = api._url("/containers/{0}/logs", container_id)
            response = api._get(url, params=params, stream=True)
            return api._get_result(container_id, True, response)

        stream = await self._call(
            f"logs {_short(container_id)}",
            open_details
            if details
            else lambda: self._stream_api.logs(
                container_id,
                stdout=True,
                stderr=True,
                stream=True,
                follow=follow,
                tail="all" if tail is None else tail,
                since=since,
                timestamps=timestamps,
            ),
        )
        pending = b""
        try:
            while True:
                # abandon_on_cancel: a cancelled read leaves the thread blocked in recv() until
                # the finally below shuts the socket down, which ends it at once.
                chunk = await trio.to_thread.run_sync(
                    _next_or_none, stream, abandon_on_cancel=True, limiter=self._stream_limiter
                )
                if chunk is None:
                    break
                *lines, pending = (pending + chunk).split(b"\n")
                for line in lines:
                    yield line
            if pending:
                yield pending
        finally:
            _shut_down(stream)
            # An abandoned reader may still be waking up; closing under it only makes its
            # (discarded) read fail.
            _release(stream)

    async def stats(self, container_id: str) -> ContainerStats:
        """One sample; the engine takes about a second to measure the CPU delta."""
        raw = await self._call(
            f"stats {_short(container_id)}",
            lambda: self._api.stats(container_id, stream=False),
        )
        return container_stats_from_docker(raw)

    async def create_volume(
        self,
        name: str,
        driver: str = "local",
        driver_opts: Mapping[str, str] | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> None:
        """Create a named volume; an existing one with the same driver is kept (Docker's rule)."""
        await self._call(
            f"volume create {name}",
            lambda: self._api.create_volume(
                name,
                driver=driver,
                driver_opts=dict(driver_opts or {}),
                labels=dict(labels or {}),
            ),
        )

    async def remove_volume(self, name: str) -> None:
        """Remove a named volume; a missing one is not an error, one in use is (409)."""

        def remove() -> None:
            with suppress(docker.errors.NotFound):
                self._api.remove_volume(name)

        await self._call(f"volume rm {name}", remove)

    async def exposed_ports(self, image: str) -> tuple[tuple[int, str], ...]:
        """The image's EXPOSE ports as (port, protocol), sorted."""

        def exposed() -> tuple[tuple[int, str], ...]:
            attrs = self._api.inspect_image(image)  # type: ignore[no-untyped-call]
            keys = ((attrs.get("Config") or {}).get("ExposedPorts")) or {}
            ports = []
            for key in keys:
                port, _, protocol = str(key).partition("/")
                ports.append((int(port), protocol or "tcp"))
            return tuple(sorted(ports))

        return await self._call(f"image inspect {image}", exposed)

    async def create_network(
        self,
        name: str,
        *,
        labels: Mapping[str, str],
        subnet: str = "",
        ip_range: str = "",
        gateway: str = "",
        internal: bool = False,
        bridge: str = "",
    ) -> NetworkInfo:
        """Create a bridge network. Without `subnet`, Docker picks a free one from its pools;
        `ip_range` limits the addresses Docker gives to containers; `bridge` names the host
        interface (at most 15 characters)."""

        def create() -> NetworkInfo:
            ipam = None
            if subnet:
                pool = docker.types.IPAMPool(
                    subnet=subnet, iprange=ip_range or None, gateway=gateway or None
                )
                ipam = docker.types.IPAMConfig(pool_configs=[pool])
            created = self._api.create_network(
                name,
                driver="bridge",
                options={BRIDGE_NAME_OPTION: bridge} if bridge else None,
                ipam=ipam,
                internal=internal,
                labels=dict(labels),
                check_duplicate=True,
            )
            return network_info_from_inspect(self._api.inspect_network(created["Id"]))

        return await self._call(f"network create {name}", create)

    async def networks(self, labels: Mapping[str, str]) -> tuple[NetworkInfo, ...]:
        """Networks that carry all of `labels`."""

        def list_() -> tuple[NetworkInfo, ...]:
            rows = self._api.networks(filters={"label": label_filters(labels)})
            infos = []
            for row in rows:
                with suppress(docker.errors.NotFound):  # removed since the list
                    infos.append(network_info_from_inspect(self._api.inspect_network(row["Id"])))
            return tuple(infos)

        return await self._call("network ls", list_)

    async def subnets_in_use(self) -> tuple[str, ...]:
        """Every subnet of every network on this engine, of any driver, IPv4 and IPv6."""

        def list_() -> tuple[str, ...]:
            return tuple(
                config["Subnet"]
                for row in self._api.networks()
                for config in ((row.get("IPAM") or {}).get("Config") or ())
                if config.get("Subnet")
            )

        return await self._call("network ls", list_)

    async def inspect_network(self, name: str) -> NetworkInfo | None:
        def inspect() -> NetworkInfo | None:
            try:
                return network_info_from_inspect(self._api.inspect_network(name))
            except docker.errors.NotFound:
                return None

        return await self._call(f"network inspect {name}", inspect)

    async def remove_network(self, name: str) -> None:
        """Remove a network; a missing one is not an error, one with containers is (403)."""

        def remove() -> None:
            with suppress(docker.errors.NotFound):
                self._api.remove_network(name)

        await self._call(f"network rm {name}", remove)


def _probe_unix_socket(path: str, timeout_s: float) -> None:
    """Connect once and close. docker-py leaks its socket when a unix-socket connect fails (a
    ResourceWarning later); probing first with a socket we close gives the same error cleanly."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(timeout_s)
        probe.connect(path)


@asynccontextmanager
async def open_docker_runtime(
    *,
    max_threads: int = 8,
    max_stream_threads: int = 64,
    base_url: str | None = None,
    request_timeout_s: float = 60.0,
) -> AsyncIterator[DockerRuntime]:
    """Connect to the engine (`base_url`, else $DOCKER_HOST, else the local socket) and ping it;
    an engine that does not answer raises DockerError at once. TLS settings ($DOCKER_TLS_VERIFY)
    are not read: swarmlet talks to the local engine."""

    url = base_url or os.environ.get("DOCKER_HOST") or _DEFAULT_DOCKER_HOST

    def connect() -> docker.DockerClient:
        if url.startswith("unix://"):
            _probe_unix_socket(url.removeprefix("unix://"), request_timeout_s)
        return docker.DockerClient(
            base_url=url, version="auto", timeout=timeout_s, max_pool_size=max_threads + 2
        )

    # requests takes a float or None (no read timeout); docker's stubs say int.
    timeout_s: Any = request_timeout_s
    limiter = trio.CapacityLimiter(max_threads)
    client = await trio.to_thread.run_sync(_translated(f"connect {url}", connect), limiter=limiter)
    try:
        # The version is already negotiated: no second round trip.
        # Streams hold their connection for their whole life: one pooled connection each.
        stream_client = docker.DockerClient(
            base_url=url,
            version=client.api.api_version,
            timeout=_NO_TIMEOUT,
            max_pool_size=max_stream_threads,
        )
        try:
            runtime = DockerRuntime(
                client,
                stream_client,
                limiter=limiter,
                stream_limiter=trio.CapacityLimiter(max_stream_threads),
            )
            await runtime.ping()
            yield runtime
        finally:
            stream_client.close()
    finally:
        client.close()
