"""A locked node's start (`node.locked`, issue #18), on a real Unix control socket: it answers
`status` (locked) and refuses every other operation, refuses a wrong or malformed unlock key and
stays locked, and hands over the data key once the right key is given."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from swarmlet import crypto
from swarmlet.api.control_socket import ControlClient
from swarmlet.errors import UsageError
from swarmlet.node.locked import wait_until_unlocked
from swarmlet.security import at_rest
from swarmlet.security.datadir import DataDir, Identity


def locked_node(path: Path, key: str) -> DataDir:
    datadir = DataDir(path)
    datadir.create()
    at_rest.create_sealed_data_key(path, key)
    identity = Identity("node1", "cluster1", "n1", "127.0.0.1", 7946, "0.0.0.0", "manager")
    datadir.write_identity(identity, crypto.new_key(), crypto.new_node_key())
    return datadir


async def test_locked_node_serves_only_status_and_unlock(tmp_path: Path) -> None:
    key = at_rest.new_unlock_key()
    datadir = locked_node(tmp_path / "n1", key)
    sealed_file = at_rest.data_key_path(datadir.path).read_bytes()
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            result: list[tuple[bytes, str]] = []
            listening = trio.Event()

            async def run() -> None:
                result.append(await wait_until_unlocked(datadir, listening=listening))

            nursery.start_soon(run)
            client = ControlClient(datadir.socket_path)
            await listening.wait()
            status = await client.call("status")
            assert status["locked"] is True and status["node_id"] == "node1"
            with pytest.raises(UsageError, match="this node is locked"):
                await client.call("node.ls")
            with pytest.raises(UsageError, match="invalid unlock key"):
                await client.call("unlock", key=at_rest.new_unlock_key())
            with pytest.raises(UsageError, match="invalid unlock key: expected"):
                await client.call("unlock", key="not a key")
            assert (await client.call("status"))["locked"] is True
            assert await client.call("unlock", key=key) == {"unlocked": True}
    (dek, used) = result[0]
    assert used == key
    assert at_rest.unlock(datadir.path, key) == dek
    assert at_rest.data_key_path(datadir.path).read_bytes() == sealed_file  # nothing rewritten
