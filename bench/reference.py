"""The reference systems of the benchmarks: Serf and etcd clusters on loopback addresses, and the
clients that observe them (Serf's msgpack RPC, a keep-alive HTTP/1.1 JSON client for etcd's
gateway). Processes are started and recorded through `bench.common`, so they are killed with the
rest (see its docstring for why these clients rather than `serf members` / `etcdctl`).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import trio

from bench.common import kill9, spawn

# ----------------------------------------------------------------------------- Serf


class SerfRPC:
    """Serf's msgpack RPC (the protocol of `serf members`): one persistent TCP connection."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.unpacker = msgpack.Unpacker(raw=False, unicode_errors="surrogateescape")
        self.seq = 0

    @classmethod
    async def open(cls, host: str, port: int) -> SerfRPC:
        rpc = cls(await trio.open_tcp_stream(host, port))
        await rpc.request("handshake", {"Version": 1})
        return rpc

    async def _next(self) -> Any:
        while True:
            for obj in self.unpacker:
                return obj
            data = await self.stream.receive_some(65536)
            if not data:
                raise ConnectionError("serf RPC closed")
            self.unpacker.feed(data)

    async def request(self, command: str, body: dict[str, Any] | None = None) -> Any:
        self.seq += 1
        msg = msgpack.packb({"Command": command, "Seq": self.seq}, use_bin_type=False)
        if body is not None:
            msg += msgpack.packb(body, use_bin_type=False)
        await self.stream.send_all(msg)
        header = await self._next()
        if header.get("Error"):
            raise RuntimeError(f"serf {command}: {header['Error']}")
        if command in ("members", "members-filtered", "stats"):
            return await self._next()
        return None

    async def members(self) -> dict[str, str]:
        """{name: status} (alive, failed, leaving, left)."""
        body = await self.request("members")
        return {m["Name"]: m["Status"] for m in body["Members"]}

    async def aclose(self) -> None:
        await self.stream.aclose()


@dataclass
class SerfAgent:
    index: int
    name: str
    host: str
    port: int
    rpc_port: int
    proc: subprocess.Popen[bytes] | None = None

    @property
    def addr(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass
class SerfCluster:
    """Serf agent i on 127.0.0.i:port (LAN defaults), RPC on 127.0.0.i:rpc_port."""

    root: Path
    port: int
    rpc_port: int
    agents: list[SerfAgent] = field(default_factory=list)

    def spawn(self, index: int, name: str | None = None, join: str | None = None) -> SerfAgent:
        name = name or f"s{index}"
        a = SerfAgent(index, name, f"127.0.0.{index}", self.port, self.rpc_port)
        cmd = [
            "serf",
            "agent",
            "-node",
            name,
            "-bind",
            a.addr,
            "-rpc-addr",
            f"{a.host}:{a.rpc_port}",
            "-log-level",
            "warn",
        ]
        if join:
            cmd += ["-join", join]
        a.proc = spawn(cmd, self.root / f"{name}.log")
        self.agents.append(a)
        return a

    def start(self, n: int) -> None:
        for i in range(1, n + 1):
            self.spawn(i)
        for a in self.agents:
            wait_tcp(a.host, a.rpc_port, 10)
        others = [a.addr for a in self.agents[1:]]
        if others:
            subprocess.run(
                ["serf", "join", "-rpc-addr", f"{self.agents[0].host}:{self.rpc_port}", *others],
                capture_output=True,
                check=True,
                timeout=30,
            )

    def kill(self, a: SerfAgent) -> None:
        assert a.proc is not None
        kill9(a.proc.pid)
        a.proc.wait()

    def stop_all(self) -> None:
        for a in self.agents:
            if a.proc is not None and a.proc.poll() is None:
                kill9(a.proc.pid)
                a.proc.wait()
        self.agents.clear()


def wait_tcp(host: str, port: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


async def serf_wait_all_see(
    observers: Sequence[SerfAgent],
    predicate: Callable[[dict[str, str]], bool],
    *,
    timeout_s: float,
    interval_s: float = 0.05,
    start: float | None = None,
) -> dict[str, float]:
    """As `wait_all_see`, through each Serf agent's RPC `members`."""
    start = time.monotonic() if start is None else start
    seen: dict[str, float] = {}

    async def poll(a: SerfAgent) -> None:
        rpc: SerfRPC | None = None
        try:
            while True:
                try:
                    if rpc is None:
                        rpc = await SerfRPC.open(a.host, a.rpc_port)
                    view = await rpc.members()
                except (OSError, ConnectionError, RuntimeError):
                    rpc = None
                    await trio.sleep(interval_s)
                    continue
                if predicate(view):
                    seen[a.name] = time.monotonic() - start
                    return
                await trio.sleep(interval_s)
        finally:
            if rpc is not None:
                with contextlib.suppress(Exception):
                    await rpc.aclose()

    with trio.move_on_after(timeout_s):
        async with trio.open_nursery() as nursery:
            for a in observers:
                nursery.start_soon(poll, a)
    return seen


# ----------------------------------------------------------------------------- etcd


@dataclass
class EtcdMember:
    name: str
    host: str
    peer_port: int
    client_port: int
    data_dir: Path
    cmd: list[str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def client_url(self) -> str:
        return f"http://{self.host}:{self.client_port}"


@dataclass
class EtcdCluster:
    """A static etcd cluster, member i on 127.0.0.(20+i), default heartbeat/election timeouts."""

    root: Path
    size: int = 3
    peer_port: int = 2380
    client_port: int = 2379
    members: list[EtcdMember] = field(default_factory=list)

    def start(self) -> None:
        hosts = [f"127.0.0.{21 + i}" for i in range(self.size)]
        initial = ",".join(f"e{i + 1}=http://{h}:{self.peer_port}" for i, h in enumerate(hosts))
        for i, host in enumerate(hosts):
            name = f"e{i + 1}"
            data_dir = self.root / name
            peer = f"http://{host}:{self.peer_port}"
            client = f"http://{host}:{self.client_port}"
            cmd = [
                "etcd",
                "--name",
                name,
                "--data-dir",
                str(data_dir),
                "--listen-peer-urls",
                peer,
                "--initial-advertise-peer-urls",
                peer,
                "--listen-client-urls",
                client,
                "--advertise-client-urls",
                client,
                "--initial-cluster",
                initial,
                "--initial-cluster-state",
                "new",
                "--initial-cluster-token",
                f"bench-{os.getpid()}",
                "--log-level",
                "warn",
            ]
            m = EtcdMember(
                name,
                host,
                self.peer_port,
                self.client_port,
                data_dir,
                cmd,
                self.root / f"{name}.log",
            )
            self.members.append(m)
            self.launch(m)
        self.wait_leader(30)

    def launch(self, m: EtcdMember) -> None:
        m.proc = spawn(m.cmd, m.log_path)

    def kill(self, m: EtcdMember) -> None:
        assert m.proc is not None
        kill9(m.proc.pid)
        m.proc.wait()

    def status(self, m: EtcdMember) -> dict[str, Any] | None:
        """`/v3/maintenance/status` of one member (header.member_id, leader, raftTerm)."""
        try:
            body = http_post_json(m.host, m.client_port, "/v3/maintenance/status", {}, 1.0)
        except (OSError, ValueError):
            return None
        return body if isinstance(body, dict) else None

    def leader(self) -> EtcdMember | None:
        for m in self.members:
            st = self.status(m)
            if st and st.get("leader") and st["leader"] == st["header"]["member_id"]:
                return m
        return None

    def wait_leader(self, timeout_s: float) -> EtcdMember:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            statuses = [self.status(m) for m in self.members]
            leaders = {s.get("leader") for s in statuses if s}
            if None not in statuses and len(leaders) == 1 and None not in leaders:
                leader = self.leader()
                if leader is not None:
                    return leader
            time.sleep(0.1)
        raise RuntimeError("etcd: no agreed leader in time")

    def stop_all(self) -> None:
        for m in self.members:
            if m.proc is not None and m.proc.poll() is None:
                kill9(m.proc.pid)
                m.proc.wait()


def http_post_json(host: str, port: int, path: str, body: dict[str, Any], timeout_s: float) -> Any:
    """One blocking HTTP/1.1 POST (set-up only; timed loops use `HttpConnection`)."""
    import http.client

    conn = http.client.HTTPConnection(host, port, timeout=timeout_s)
    try:
        conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        resp = conn.getresponse()
        data = resp.read()
        if resp.status != 200:
            raise ValueError(f"HTTP {resp.status}: {data[:200]!r}")
        return json.loads(data)
    finally:
        conn.close()


class HttpConnection:
    """A minimal keep-alive HTTP/1.1 JSON client on trio (no dependency beyond trio)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.stream: trio.SocketStream | None = None
        self.buffer = bytearray()

    async def post_json(self, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        if self.stream is None:
            self.stream = await trio.open_tcp_stream(self.host, self.port)
            self.buffer.clear()
        data = json.dumps(body).encode()
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
        ).encode()
        try:
            await self.stream.send_all(head + data)
            status, payload = await self._read_response()
        except BaseException:
            await self.aclose()
            raise
        return status, json.loads(payload) if payload else None

    async def _fill(self) -> None:
        assert self.stream is not None
        chunk = await self.stream.receive_some(65536)
        if not chunk:
            raise ConnectionError("HTTP connection closed")
        self.buffer.extend(chunk)

    async def _read_response(self) -> tuple[int, bytes]:
        while b"\r\n\r\n" not in self.buffer:
            await self._fill()
        end = self.buffer.index(b"\r\n\r\n")
        lines = bytes(self.buffer[:end]).decode("latin-1").split("\r\n")
        del self.buffer[: end + 4]
        status = int(lines[0].split()[1])
        headers = {
            k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])
        }
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = bytearray()
            while True:
                while b"\r\n" not in self.buffer:
                    await self._fill()
                i = self.buffer.index(b"\r\n")
                size = int(bytes(self.buffer[:i]).split(b";")[0], 16)
                del self.buffer[: i + 2]
                while len(self.buffer) < size + 2:
                    await self._fill()
                body += self.buffer[:size]
                del self.buffer[: size + 2]
                if size == 0:
                    return status, bytes(body)
        length = int(headers.get("content-length", "0"))
        while len(self.buffer) < length:
            await self._fill()
        body_bytes = bytes(self.buffer[:length])
        del self.buffer[:length]
        return status, body_bytes

    async def aclose(self) -> None:
        if self.stream is not None:
            with contextlib.suppress(Exception):
                await self.stream.aclose()
            self.stream = None


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()
