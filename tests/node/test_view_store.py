"""node.view_store: a worker's view on its disk is sealed under its data key and bound to the
node; one that cannot be read, whatever the reason, is set aside and counted, never loaded, and
never stops the agent."""

from __future__ import annotations

from pathlib import Path

import msgpack
import pytest

from swarmlet import crypto
from swarmlet.node import view_store
from swarmlet.node.view_store import UnreadableView, ViewStore
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
    return ViewStore(path / "view.sealed", crypto.Sealer(key), node, counters), counters


def save(s: ViewStore, state: ClusterState, index: int = 3) -> None:
    s.save(ViewStore.take(state, index, "m1", True))


def test_a_saved_view_loads_as_it_was_and_its_file_holds_nothing_in_clear(tmp_path: Path) -> None:
    s, counters = store(tmp_path)
    assert s.load() is None  # nothing kept yet
    state = view()
    taken = ViewStore.take(state, 42, "m1", True)
    state.tasks["t2"] = Task("t2", "s", 2, 1, node_id=NODE)  # the loop moves on meanwhile
    s.save(taken)
    stored = s.load()
    assert stored is not None
    assert stored.state.snapshot() == view().snapshot()  # as taken, without t2
    assert (stored.index, stored.leader_id, stored.in_raft) == (42, "m1", True)
    raw = s.path.read_bytes()
    assert b"secret" not in raw and b"web:1" not in raw
    assert s.path.stat().st_mode & 0o777 == 0o600
    s.remove()
    assert not s.path.exists() and s.load() is None
    s.remove()  # nothing there: nothing to do
    assert counters["worker_view_unreadable"] == 0


def sealed(fields: object) -> bytes:
    plain = msgpack.packb(fields, use_bin_type=True)
    return crypto.Sealer(KEY).seal(plain, crypto.AAD_WORKER_VIEW + NODE.encode())


GOOD = [1, 3, "m1", False, view().snapshot()]
DAMAGE = {
    "torn": lambda data: data[:-7],
    "a bit flipped": lambda data: data[:40] + bytes([data[40] ^ 1]) + data[41:],
    "not a list": lambda _: sealed({"format": 1}),
    "another format": lambda _: sealed([2, *GOOD[1:]]),
    "a field short": lambda _: sealed(GOOD[:4]),
    "a bad index": lambda _: sealed([1, "3", *GOOD[2:]]),
    "a state that is no state": lambda _: sealed([*GOOD[:4], b"\x93\x01\x02\x03"]),
    "a state of another type": lambda _: sealed([*GOOD[:4], 7]),
    "trailing bytes": lambda _: crypto.Sealer(KEY).seal(
        msgpack.packb(GOOD, use_bin_type=True) + b"\x00",
        crypto.AAD_WORKER_VIEW + NODE.encode(),
    ),
}


@pytest.mark.parametrize("damage", [*DAMAGE, "another node's", "another key's", "too large"])
def test_a_view_that_cannot_be_read_is_set_aside_and_counted(
    tmp_path: Path, damage: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    s, counters = store(tmp_path)
    if damage == "another node's":
        save(store(tmp_path, node="w2")[0], view())
    elif damage == "another key's":
        save(store(tmp_path, key=bytes(32))[0], view())
    elif damage == "too large":
        save(s, view())
        monkeypatch.setattr(view_store, "MAX_BYTES", s.path.stat().st_size - 1)
    else:
        s.path.write_bytes(DAMAGE[damage](sealed(GOOD)))
    with pytest.raises(UnreadableView):
        s.read()  # reading alone touches nothing
    assert s.path.exists()
    assert s.load() is None
    assert counters["worker_view_unreadable"] == 1
    assert not s.path.exists() and s.path.with_name("view.sealed.unreadable").exists()
    assert s.load() is None and counters["worker_view_unreadable"] == 1  # set aside once


def test_a_view_the_disk_cannot_give_back_is_counted_and_does_not_stop_the_agent(
    tmp_path: Path,
) -> None:
    s, counters = store(tmp_path)
    s.path.mkdir()  # EISDIR on read (as an I/O error would be): not a crash
    assert s.load() is None and counters["worker_view_unreadable"] == 1


async def test_a_view_too_large_to_load_is_not_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s, counters = store(tmp_path)
    monkeypatch.setattr(view_store, "MAX_BYTES", 100)
    # Counted by `write`, on the event loop, once the thread that encoded it has returned.
    await s.write(ViewStore.take(view(), 3, "m1", True))
    assert not s.path.exists() and counters["worker_view_too_large"] == 1
