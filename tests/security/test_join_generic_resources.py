"""A joining node advertises its generic resources in its join request; the manager that admits
it parses them (refusing the join if they are malformed or too many) and records them in the
node's record. Real loopback connections, the real `JoinAcceptor` (see `test_join`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import trio

from swarmlet.errors import UsageError
from swarmlet.security.datadir import DataDir
from swarmlet.security.join import join_cluster
from swarmlet.state.commands import AddNode
from swarmlet.state.model import GenericResource, NamedResource
from swarmlet.wire.transport import Address, TlsConfig
from tests.security.test_join import HOST, TIMEOUT_S, TOKEN, Manager, serving

if TYPE_CHECKING:
    from tests.conftest import TestCA


@pytest.fixture
def tls(test_ca: TestCA) -> TlsConfig:
    return test_ca.tls("m1")


async def join_advertising(addr: Address, datadir: DataDir, *advertised: str) -> object:
    return await join_cluster(
        f"{addr[0]}:{addr[1]}",
        TOKEN,
        name="n2",
        name_is_explicit=False,
        advertise_host=HOST,
        port=1,
        publish_host=HOST,
        datadir=datadir,
        generic_resources=advertised,
    )


async def test_the_joiners_generic_resources_are_recorded_in_its_node(
    tmp_path: Path, tls: TlsConfig
) -> None:
    manager = Manager()
    with trio.fail_after(TIMEOUT_S):
        async with serving(manager, tls) as addr:
            await join_advertising(addr, DataDir(tmp_path / "n2"), "gpu=g1,g2", "ssd=3")
    [command] = manager.written
    assert isinstance(command, AddNode)
    assert command.node.resources.named == (NamedResource("gpu", "g1"), NamedResource("gpu", "g2"))
    assert command.node.resources.generic == (GenericResource("ssd", 3),)
    assert command.node.resources.nano_cpus > 0  # the host's capacity is still there


@pytest.mark.parametrize(
    ("advertised", "reason"),
    [
        (("gpu=g1", "gpu=2"), "gpu is given both as a count and by name"),
        ((",".join(f"k{i}=1" for i in range(300)),), "more than 256 resources"),
        (("gpu=" + "x" * 4096,), "at most 128 characters"),
    ],
)
async def test_a_malformed_advertisement_refuses_the_join_saying_why(
    tmp_path: Path, tls: TlsConfig, advertised: tuple[str, ...], reason: str
) -> None:
    # what a joiner that skips the CLI's checks sends: the manager checks it again
    manager = Manager()
    d = DataDir(tmp_path / "n2")
    with trio.fail_after(TIMEOUT_S):
        async with serving(manager, tls) as addr:
            with pytest.raises(UsageError, match=reason):
                await join_advertising(addr, d, *advertised)
    assert manager.written == []
    assert not d.identity_file.exists()
