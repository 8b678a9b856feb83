"""A fake agent for CLI tests: answers the control socket with canned results, from a thread.

It speaks the real framing (`api.control_protocol`), one request per connection as the agent
does, and records the requests it received, so a test can run the real `swarmlet` command (in
this process or in a subprocess) against it without starting an agent.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from swarmlet.api.control_protocol import NEED_DATA, encode_frame, next_frame

NODE = {
    "id": "uficacalf7fm2zsuczba",
    "hostname": "c1",
    "addr": "127.0.50.1:7946",
    "publish_addr": "127.0.50.1",
    "status": "ready",
    "availability": "active",
    "role": "manager",
    "leader": True,
    "raft": "voter",
    "labels": {"zone": "a"},
    "cpus": 2.0,
    "memory_bytes": 25_275_973_632,
    "cpu_percent": 0.3,
    "memory_used_bytes": 522_485_760,
    "tasks": 2,
    "self": True,
}
SERVICE = {
    "id": "kumeeuaxer5uzjr3irma",
    "name": "web",
    "mode": "replicated",
    "image": "swarmlet/web:1",
    "replicas_desired": 2,
    "replicas_running": 2,
    "ports": [{"published": 18080, "target": 80, "protocol": "tcp", "mode": "ingress"}],
    "stack": "",
    "version": 1,
    "update_status": {"state": "", "started_at": 0.0, "completed_at": 0.0, "message": ""},
    "autoscale": None,
}
TASK = {
    "id": "mochy2kzkj31g6olcj0lp87jk",
    "name": "web.1",
    "service": "web",
    "slot": 1,
    "node": "uficacalf7fm2zsuczba",
    "node_name": "c1",
    "desired_state": "running",
    "state": "running",
    "healthy": None,
    "error": "",
    "message": "assigned",
    "container_id": "113d0216898e",
    "spec_version": 1,
    "created_at": 1_700_000_000.0,
    "updated_at": 1_700_000_001.0,
    "endpoints": [],
}
RESULTS: dict[str, Any] = {
    "node.ls": {"nodes": [NODE], "stale": False},
    "node.update": None,
    "service.ls": {"services": [SERVICE]},
    "service.ps": {"tasks": [TASK]},
}


@contextlib.contextmanager
def fake_agent(
    data_dir: Path, results: Mapping[str, Any] = RESULTS
) -> Iterator[list[dict[str, Any]]]:
    """Serve `results` (op -> result) on `data_dir`'s control socket; yields the requests seen.
    An op without a result is answered as the agent answers an unknown operation."""
    data_dir.mkdir(parents=True, exist_ok=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(data_dir / "control.sock"))
    listener.listen(16)
    listener.settimeout(0.05)
    requests: list[dict[str, Any]] = []
    stop = threading.Event()

    def answer(conn: socket.socket) -> None:
        buffer = bytearray()
        request = next_frame(buffer)
        while request is NEED_DATA:
            chunk = conn.recv(65536)
            if not chunk:
                return
            buffer.extend(chunk)
            request = next_frame(buffer)
        requests.append(request)
        op = request["op"]
        if op in results:
            conn.sendall(encode_frame({"ok": True, "result": results[op]}))
        else:
            body = {"ok": False, "error": f"unknown operation {op}", "type": "UsageError"}
            conn.sendall(encode_frame(body))

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(10)
                answer(conn)

    thread = threading.Thread(target=serve, name="fake-agent", daemon=True)
    thread.start()
    try:
        yield requests
    finally:
        stop.set()
        thread.join(timeout=10)
        listener.close()
