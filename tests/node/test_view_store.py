"""node.view_store: a worker's view on its disk is sealed under its data key and bound to the
node; one that cannot be read, whatever the reason, is set aside and counted, never loaded."""

from __future__ import annotations

from pathlib import Path

import msgpack
import pytest

from swarmlet import crypto
from swarmlet.node.view_store import FILE_NAME, ViewStore
from swarmlet.state.machine import ClusterState
from swarmlet.state.model import Node, Role, Service, ServiceSpec, Task
from swarmlet.wire.transport import Counters

NODE = "w1"
KEY = bytes(range(32))


def view() -> ClusterState:
    state = ClusterState()
    state.cluster_id = "c1"
    state.nodes[NODE] = Node(NODE, NODE, "127.0.0.1:1", "127.0.0.1", Role.WORKER)
    state.services["s"] = Service(
        id="s", spec=ServiceSpec(name="web", image="web:1", env={"A": "secret"})
    )
    state.tasks["t1"] = Task("t1", "s", 1, 1, node_id=NODE)
    return state


def store(path: Path, *, node: str = NODE, key: bytes = KEY) -> tuple[ViewStore, Counters]:
    counters = Counters()
    return ViewStore(path, crypto.Sealer(key), node, counters), counters


def test_a_saved_view_loads_as_it_was_and_its_file_holds_nothing_in_clear(tmp_path: Path) -> None:
    s, counters = store(tmp_path)
    assert s.load() is None  # nothing kept yet
    s.save(s.encode(view(), 42, "m1", in_raft=True))
    stored = s.load()
    assert stored is not None
    assert stored.state.snapshot() == view().snapshot()
    assert (stored.index, stored.leader_id, stored.in_raft) == (42, "m1", True)
    raw = (tmp_path / FILE_NAME).read_bytes()
    assert b"secret" not in raw and b"web:1" not in raw
    assert (tmp_path / FILE_NAME).stat().st_mode & 0o777 == 0o600
    s.remove()
    assert s.load() is None and counters["worker_view_unreadable"] == 0


def sealed_plain(fields: object) -> bytes:
    return crypto.Sealer(KEY).seal(msgpack.packb(fields), b"swarmlet worker view " + NODE.encode())


@pytest.mark.parametrize(
    "damage",
    [
        "another node's",
        "another key's",
        "torn",
        "a bit flipped",
        "not a map",
        "another format",
        "a bad index",
        "a state that is no state",
    ],
)
def test_a_view_that_cannot_be_read_is_set_aside_and_counted(tmp_path: Path, damage: str) -> None:
    path = tmp_path / FILE_NAME
    good = view().snapshot()
    fields = {"format": 1, "index": 3, "leader": "m1", "in_raft": False, "state": good}
    if damage == "another node's":
        other, _ = store(tmp_path, node="w2")
        other.save(other.encode(view(), 3, None, in_raft=False))
    elif damage == "another key's":
        other, _ = store(tmp_path, key=bytes(32))
        other.save(other.encode(view(), 3, None, in_raft=False))
    else:
        data = sealed_plain(fields)
        if damage == "torn":
            data = data[:-7]
        elif damage == "a bit flipped":
            data = data[:40] + bytes([data[40] ^ 1]) + data[41:]
        elif damage == "not a map":
            data = sealed_plain([1, 2, 3])
        elif damage == "another format":
            data = sealed_plain(fields | {"format": 2})
        elif damage == "a bad index":
            data = sealed_plain(fields | {"index": "3"})
        elif damage == "a state that is no state":
            data = sealed_plain(fields | {"state": b"\x93\x01\x02\x03"})
        path.write_bytes(data)
    s, counters = store(tmp_path)
    assert s.load() is None
    assert counters["worker_view_unreadable"] == 1
    assert not path.exists() and (tmp_path / f"{FILE_NAME}.unreadable").exists()
    assert s.load() is None and counters["worker_view_unreadable"] == 1  # set aside once
