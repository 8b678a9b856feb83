"""A fixed cluster as the control API reports it, for golden and unit tests of the dashboard.

Three nodes (n1 the leader, n3 down), three services: `web` converging (2 of 3 running, a replica
pending), `api` whose rolling update is paused after a failure, `cache` global and complete; and a
handful of events. `T0` is a fixed wall-clock time; views use UTC (`utc_offset_s=0`).
"""

from __future__ import annotations

from typing import Any

from swarmlet.dashboard.view import View, build_view

T0 = 1_795_000_000.0  # 2026-11-18T...Z, fixed so golden files do not move
GIB = 1024**3

STATUS: dict[str, Any] = {
    "node_id": "a1b2c3d4e5f60001",
    "name": "n1",
    "cluster_id": "c1d2e3f4a5b6c7d8",
    "member": True,
    "addr": "127.0.0.1:7946",
    "raft": {
        "role": "leader",
        "term": 7,
        "leader_id": "a1b2c3d4e5f60001",
        "commit_index": 1234,
        "applied_index": 1234,
        "voters": ["a1b2c3d4e5f60001", "a1b2c3d4e5f60002", "a1b2c3d4e5f60003"],
        "learners": [],
    },
    "gossip": {"members": 3, "alive": 2, "incarnation": 1, "awareness": 0},
    "counters": {},
    "proxy": {
        "8080/tcp": {
            "service": "web",
            "connections": 100,
            "active": 3,
            "bytes_in": 10_000,
            "bytes_out": 200_000,
            "errors": 0,
        },
        "9000/tcp": {
            "service": "api",
            "connections": 40,
            "active": 1,
            "bytes_in": 1_000,
            "bytes_out": 5_000,
            "errors": 1,
        },
    },
}


def _node(n: int, **changes: Any) -> dict[str, Any]:
    node: dict[str, Any] = {
        "id": f"a1b2c3d4e5f6000{n}",
        "hostname": f"n{n}",
        "addr": f"127.0.0.{n}:7946",
        "status": "ready",
        "availability": "active",
        "role": "manager",
        "leader": n == 1,
        "raft": "voter",
        "labels": {},
        "cpus": 4.0,
        "memory_bytes": 8 * GIB,
        "cpu_percent": 10.0 * n,
        "memory_used_bytes": n * GIB,
        "tasks": 2,
        "self": n == 1,
    }
    node.update(changes)
    return node


NODES: dict[str, Any] = {
    "stale": False,
    "nodes": [
        _node(1),
        _node(2, availability="drain", tasks=1),
        _node(3, status="down", cpu_percent=0.0, memory_used_bytes=0, tasks=0, role="worker"),
    ],
}


def _service(name: str, **changes: Any) -> dict[str, Any]:
    service: dict[str, Any] = {
        "id": f"s-{name}",
        "name": name,
        "mode": "replicated",
        "image": f"swarmlet/{name}:1",
        "replicas_desired": 1,
        "replicas_running": 1,
        "ports": [],
        "stack": "demo",
        "version": 1,
        "update_status": {"state": "", "started_at": 0.0, "completed_at": 0.0, "message": ""},
        "autoscale": None,
    }
    service.update(changes)
    return service


SERVICES: dict[str, Any] = {
    "stale": False,
    "services": [
        _service(
            "api",
            image="swarmlet/api:2",
            replicas_desired=2,
            replicas_running=2,
            version=2,
            ports=[{"published": 9000, "target": 90, "protocol": "tcp", "mode": "ingress"}],
            update_status={
                "state": "paused",
                "started_at": T0 - 60,
                "completed_at": 0.0,
                "message": "update paused: task api.1 failed: exit code 1",
            },
        ),
        _service(
            "cache", mode="global", image="swarmlet/cache:1", replicas_desired=2, replicas_running=2
        ),
        _service(
            "web",
            replicas_desired=3,
            replicas_running=2,
            ports=[
                {"published": 8080, "target": 80, "protocol": "tcp", "mode": "ingress"},
                {"published": 5353, "target": 53, "protocol": "udp", "mode": "ingress"},
            ],
        ),
    ],
}


def _task(service: str, slot: int, node: int | None, state: str, **changes: Any) -> dict[str, Any]:
    node_id = f"a1b2c3d4e5f6000{node}" if node else ""
    task: dict[str, Any] = {
        "id": f"t-{service}-{slot}-{node}-{state}",
        "name": f"{service}.{slot or f'n{node}'}",
        "service": service,
        "slot": slot,
        "node": node_id,
        "node_name": f"n{node}" if node else "",
        "desired_state": "running",
        "state": state,
        "healthy": None,
        "error": "",
        "message": "",
        "container_id": "c0ffee" if state == "running" else "",
        "spec_version": 1,
        "updated_at": T0 - 100,
    }
    task.update(changes)
    return task


TASKS: dict[str, Any] = {
    "tasks": [
        # api: slot 1 failed at version 2 and is being retried; slot 2 still runs version 1.
        _task("api", 1, 1, "failed", desired_state="shutdown", spec_version=2, error="exit code 1"),
        _task("api", 1, 1, "running", spec_version=1, desired_state="shutdown"),
        _task("api", 1, 2, "starting", spec_version=2),
        _task("api", 2, 2, "running", spec_version=1, healthy=True),
        _task("cache", 0, 1, "running"),
        _task("cache", 0, 2, "running", healthy=False),
        _task("cache", 0, 3, "orphaned", desired_state="shutdown"),
        # web: slot 3's replica was on n3 (down) and waits for a node.
        _task("web", 1, 1, "running"),
        _task("web", 2, 2, "running"),
        _task("web", 3, 3, "orphaned", desired_state="shutdown", updated_at=T0 - 50),
        _task(
            "web",
            3,
            None,
            "pending",
            updated_at=T0 - 40,
            message="no suitable node: 1 node is draining, 1 node is down",
        ),
        _task("web", 4, 1, "shutdown", desired_state="shutdown"),
    ]
}

EVENTS: list[dict[str, Any]] = [
    {
        "seq": 1,
        "time": T0 - 300,
        "type": "raft",
        "action": "elected",
        "subject": "n1",
        "message": "n1 is the leader for term 7",
    },
    {
        "seq": 2,
        "time": T0 - 200,
        "type": "service",
        "action": "created",
        "subject": "web",
        "message": "3 replicas",
    },
    {
        "seq": 3,
        "time": T0 - 120,
        "type": "service",
        "action": "updating",
        "subject": "api",
        "message": "image swarmlet/api:1 -> swarmlet/api:2",
    },
    {
        "seq": 4,
        "time": T0 - 90,
        "type": "task",
        "action": "failed",
        "subject": "api.1",
        "message": "exit code 1\n(see `swarmlet service logs api`)",
    },
    {
        "seq": 5,
        "time": T0 - 89,
        "type": "service",
        "action": "paused",
        "subject": "api",
        "message": "update paused: task api.1 failed: exit code 1",
    },
    {
        "seq": 6,
        "time": T0 - 60,
        "type": "node",
        "action": "suspect",
        "subject": "n3",
        "message": "no ack from n3 within 1.5 s",
    },
    {
        "seq": 7,
        "time": T0 - 55,
        "type": "node",
        "action": "down",
        "subject": "n3",
        "message": "n3 is down; its tasks will be rescheduled",
    },
    {
        "seq": 8,
        "time": T0 - 50,
        "type": "task",
        "action": "orphaned",
        "subject": "web.3",
        "message": "node n3 is down",
    },
    {
        "seq": 9,
        "time": T0 - 40,
        "type": "task",
        "action": "pending",
        "subject": "web.3",
        "message": "no suitable node: 1 node is draining, 1 node is down",
    },
]


def previous_view() -> View:
    """The poll before `fixed_view`: proxy counters two seconds earlier."""
    status = dict(STATUS)
    status["proxy"] = {
        "8080/tcp": dict(
            STATUS["proxy"]["8080/tcp"], connections=80, bytes_in=8_000, bytes_out=100_000
        ),
        "9000/tcp": dict(STATUS["proxy"]["9000/tcp"], connections=39),
    }
    return build_view(status, NODES, SERVICES, TASKS, EVENTS[:-1], None, T0 - 2.0)


def fixed_view() -> View:
    return build_view(STATUS, NODES, SERVICES, TASKS, EVENTS, previous_view(), T0)
