"""The managers' key is replaced when a manager leaves the managers (`security.
managers_key_rotation`): one command, committed with the demotion or removal, gives each
remaining manager a new key and seals every value again under it (secrets, join tokens, registry
credentials, autolock's unlock key, the CA seed); the old key opens none of them; the remaining
managers' key rings replace their copy; the CA stays the same; the state refuses a rotation that
does not cover exactly what it holds, or that was built on a replaced key; and the leader refuses
a forwarded write under a key that is not the current one."""

from __future__ import annotations

import dataclasses
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from swarmlet import certs, crypto
from swarmlet.api.nodes import Control
from swarmlet.errors import RemoteProtocolError, UsageError
from swarmlet.executor.registry_auth import RegistryCredential
from swarmlet.security import propose_auth
from swarmlet.security.at_rest import open_unlock_key, seal_unlock_key
from swarmlet.security.datadir import DataDir, Identity
from swarmlet.security.keyring import KeyRing
from swarmlet.security.managers_key_rotation import ca_key, rotation
from swarmlet.security.registry_auth import open_sealed_credential, seal_credential
from swarmlet.state.commands import (
    AddNode,
    Batch,
    Command,
    CreateSecret,
    CreateService,
    InitCluster,
    RemoveNode,
    RotateManagersKey,
    SetAutolock,
    UpdateNode,
)
from swarmlet.state.machine import ApplyResult, ClusterState
from swarmlet.state.model import FileRef, Node, Role, Secret, Service, ServiceSpec
from swarmlet.wire import codec as wire
from swarmlet.wire.peer_rpc import ProposeRequest

OLD = crypto.ManagerKeys(crypto.new_key())
CLUSTER = crypto.ClusterKeys(crypto.new_key())
WORKER_TOKEN = str(crypto.JoinToken.new(CLUSTER))
MANAGER_TOKEN = str(crypto.JoinToken.new(CLUSTER))
CREDENTIAL = RegistryCredential("127.0.0.1:5000", "puller", "pw")
UNLOCK_KEY = "SWLU-unlock-key-for-the-test"
MANAGER_IDS = ("m1", "m2", "m3")


class World:
    """Managers m1-m3 (each with its data dir and key ring holding OLD) and worker w1, over one
    replica; a secret, a config, a service with a registry credential, autolock on."""

    def __init__(self, root: Path) -> None:
        self.state = ClusterState()
        self.dirs: dict[str, DataDir] = {}
        init = InitCluster(
            "c",
            0.0,
            OLD.seal_token("worker", WORKER_TOKEN),
            OLD.seal_token("manager", MANAGER_TOKEN),
            managers_public_key=OLD.public_key,
        )
        assert self.state.apply(init).ok
        for node_id in (*MANAGER_IDS, "w1"):
            d = self.dirs[node_id] = DataDir(root / node_id)
            identity = Identity(node_id, "c", node_id, "127.0.0.1", 1, "127.0.0.1", "worker")
            d.write_identity(identity, CLUSTER.master, crypto.new_node_key())
            public = crypto.public_key_of(d.read_node_key())
            manager = node_id != "w1"
            if manager:
                d.write_manager_key(OLD.master)
            node = Node(
                node_id,
                node_id,
                f"{node_id}:1",
                "127.0.0.1",
                Role.MANAGER if manager else Role.WORKER,
                public_key=public,
                sealed_manager_key=OLD.seal_to_node(node_id, public) if manager else b"",
            )
            assert self.state.apply(AddNode(node)).ok
        spec = ServiceSpec("api", "img", secrets=(FileRef("api_key", "api_key"),))
        for command in (
            CreateSecret(Secret("x1", "api_key", OLD.seal_secret("x1", b"s3cret"))),
            CreateSecret(Secret("x2", "settings", b"debug=1", is_config=True)),
            CreateService(
                Service("s1", spec, registry_auth=seal_credential(OLD, "s1", CREDENTIAL))
            ),
            SetAutolock(True, seal_unlock_key(OLD, UNLOCK_KEY)),
        ):
            assert self.state.apply(command).ok, command
        self.keyrings = {
            node_id: KeyRing(d, node_id, lambda: self.state, cluster_id="c")
            for node_id, d in self.dirs.items()
        }

    def demote(self, node_id: str, **kwargs: object) -> RotateManagersKey:
        """Demote `node_id` with a rotation built by m1; asserts that the state takes it."""
        remaining = [n.id for n in self.state.managers() if n.id != node_id]
        rotate = rotation(self.state, self.keyrings["m1"].require_managers(), managers=remaining)
        rotate = dataclasses.replace(rotate, **kwargs)  # type: ignore[arg-type]
        result = self.state.apply(Batch((UpdateNode(node_id, role=Role.WORKER), rotate)))
        assert result.ok, result.error
        for keyring in self.keyrings.values():
            keyring.sync()
        return rotate


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


def new_keys(world: World) -> crypto.ManagerKeys:
    keys = world.keyrings["m1"].managers
    assert keys is not None
    return keys


def test_every_sealed_value_opens_with_the_new_key_and_not_with_the_old(world: World) -> None:
    world.demote("m3")
    state, new = world.state, new_keys(world)
    assert new != OLD and state.managers_public_key == new.public_key
    secret = state.secrets["x1"].data
    assert new.open_secret("x1", secret) == b"s3cret"
    assert state.secrets["x2"].data == b"debug=1"  # a config is not sealed: left alone
    assert new.open_token("worker", state.sealed_worker_token) == WORKER_TOKEN
    assert new.open_token("manager", state.sealed_manager_token) == MANAGER_TOKEN
    credential = state.services["s1"].registry_auth
    assert open_sealed_credential(new, "s1", credential) == CREDENTIAL.to_bytes()
    assert open_unlock_key(new, state.sealed_unlock_key) == UNLOCK_KEY
    for opening in (
        lambda: OLD.open_secret("x1", secret),
        lambda: OLD.open_token("worker", state.sealed_worker_token),
        lambda: OLD.open_token("manager", state.sealed_manager_token),
        lambda: OLD.open_secret("registry-auth/s1", credential),
        lambda: open_unlock_key(OLD, state.sealed_unlock_key),
        lambda: OLD.open_secret("ca-seed/1", state.sealed_ca_seed),
    ):
        with pytest.raises(RemoteProtocolError):
            opening()


def test_the_remaining_managers_replace_their_key_and_the_demoted_one_drops_it(
    world: World,
) -> None:
    world.demote("m3")
    new = new_keys(world)
    for node_id in ("m1", "m2"):
        d = world.dirs[node_id]
        assert world.keyrings[node_id].managers == new
        assert d.read_manager_key() == new.master  # the file itself was replaced
        assert stat.S_IMODE(d.manager_key_file.stat().st_mode) == 0o600
        # A restart reads the new key back.
        assert KeyRing(d, node_id, lambda: world.state, cluster_id="c").managers == new
    assert world.keyrings["m3"].managers is None
    assert not world.dirs["m3"].manager_key_file.exists()
    assert world.state.nodes["m3"].sealed_manager_key == b""


def test_removing_a_manager_rotates_the_key_with_the_removal(world: World) -> None:
    rotate = rotation(world.state, OLD, managers=["m1", "m2"])
    assert world.state.apply(Batch((RemoveNode("m3", removed_at=1.0), rotate))).ok
    world.keyrings["m1"].sync()
    assert world.state.managers_public_key == rotate.public_key == new_keys(world).public_key


def test_the_ca_stays_the_same_across_rotations_and_a_backup(world: World) -> None:
    ca_before = world.keyrings["m1"].ca_certificate()
    assert ca_before == certs.ca_certificate(OLD.ca_key)  # before any rotation: derived
    world.demote("m3")
    assert world.keyrings["m1"].ca_certificate() == ca_before
    assert new_keys(world).ca_key.private_bytes_raw() != OLD.ca_key.private_bytes_raw()
    world.demote("m2")  # a second rotation seals the same seed again
    assert world.keyrings["m1"].ca_certificate() == ca_before
    # A backup is the state's snapshot with the managers' key of that state.
    restored = ClusterState.restore(world.state.snapshot())
    assert certs.ca_certificate(ca_key(restored, new_keys(world))) == ca_before
    # The old key opens no CA seed: the demoted managers' copies are stuck with what they had.
    with pytest.raises(RemoteProtocolError):
        ca_key(restored, OLD)


def test_a_rotation_for_other_managers_than_the_state_has_is_refused(world: World) -> None:
    snapshot = world.state.snapshot()
    # Sealed for the demoted one too, or for fewer than remain: refused, demotion included.
    for managers in (MANAGER_IDS, ("m1",)):
        rotate = rotation(world.state, OLD, managers=managers)
        result = world.state.apply(Batch((UpdateNode("m3", role=Role.WORKER), rotate)))
        assert "the managers changed" in result.error
    # Sealed to a worker: refused when built, and by the state if forged.
    with pytest.raises(UsageError, match="node w1 is not a manager"):
        rotation(world.state, OLD, managers=["m1", "m2", "w1"])
    forged = dataclasses.replace(
        rotation(world.state, OLD, managers=["m1", "m2"]),
        sealed={"m1": b"x", "m2": b"x", "w1": b"x"},
    )
    result = world.state.apply(Batch((UpdateNode("m3", role=Role.WORKER), forged)))
    assert "the managers changed" in result.error
    assert world.state.snapshot() == snapshot  # all or nothing


def test_a_rotation_that_misses_a_value_created_meanwhile_is_refused(world: World) -> None:
    rotate = rotation(world.state, OLD, managers=["m1", "m2"])
    assert world.state.apply(CreateSecret(Secret("x3", "db", OLD.seal_secret("x3", b"pw")))).ok
    result = world.state.apply(Batch((UpdateNode("m3", role=Role.WORKER), rotate)))
    assert "the secrets changed" in result.error
    assert world.state.managers_public_key == OLD.public_key


def test_a_rotation_built_on_a_replaced_key_is_refused(world: World) -> None:
    stale = rotation(world.state, OLD, managers=["m1", "m2"])
    world.demote("m3")
    result = world.state.apply(Batch((UpdateNode("m2", role=Role.WORKER), stale)))
    assert "the managers' key was replaced meanwhile" in result.error
    assert world.state.managers_public_key == new_keys(world).public_key


def test_a_rotation_from_a_non_manager_cannot_be_built_nor_proposed(world: World) -> None:
    # A worker, or anyone with a key of its own choosing, cannot open the values to seal again.
    with pytest.raises(UsageError, match="does not hold the current managers' key"):
        rotation(world.state, crypto.ManagerKeys(crypto.new_key()), managers=["m1", "m2"])
    # And the leader refuses its forwarded write: not authenticated with the managers' key.
    forged = Batch(
        (UpdateNode("m3", role=Role.WORKER), rotation(world.state, OLD, managers=["m1", "m2"]))
    )
    guard = propose_auth.ProposeGuard()
    request = propose_auth.sign(
        crypto.ManagerKeys(crypto.new_key()),
        wire.encode(forged),
        proposer="w1",
        leader="m1",
        nonce=os.urandom(propose_auth.NONCE_BYTES),
        now=100.0,
    )
    assert "only managers may write" in guard.check(OLD, request, leader="m1", now=100.0)


def test_the_leader_refuses_a_write_under_the_previous_key_saying_why(world: World) -> None:
    """No grace for the retired key (`propose_auth`): the write of a manager that has not applied
    the rotation may carry values sealed under it; it is refused with a reason to retry."""
    guard = propose_auth.ProposeGuard()

    def request(keys: crypto.ManagerKeys, now: float) -> ProposeRequest:
        nonce = os.urandom(propose_auth.NONCE_BYTES)
        command = wire.encode(UpdateNode("w1", labels_add={"a": "b"}))
        return propose_auth.sign(keys, command, proposer="m2", leader="m1", nonce=nonce, now=now)

    assert guard.check(OLD, request(OLD, 100.0), leader="m1", now=100.0) == ""
    world.demote("m3")
    new = new_keys(world)
    refusal = guard.check(new, request(OLD, 101.0), leader="m1", now=101.0)
    assert "made with the previous managers' key" in refusal and "retry" in refusal
    assert guard.check(new, request(new, 102.0), leader="m1", now=102.0) == ""


def test_a_manager_that_has_not_caught_up_cannot_build_a_rotation(world: World) -> None:
    world.demote("m3")
    with pytest.raises(UsageError, match="retry in a moment"):
        rotation(world.state, OLD, managers=["m1"])


@dataclass
class StandInAgent:
    """What `api.nodes.Control.node_rm` uses of the agent: m1's key ring over the world's
    replica, whose writes apply at once; `meanwhile` is applied just before the first write, as
    a write another manager commits between the read and the write."""

    world: World
    meanwhile: Command | None = None
    node_id: str = "m1"
    writes: list[ApplyResult] = field(default_factory=list)

    @property
    def state(self) -> ClusterState:
        return self.world.state

    @property
    def keyring(self) -> KeyRing:
        return self.world.keyrings["m1"]

    def is_ready(self, node_id: str) -> bool:
        return False

    async def read_barrier(self) -> bool:
        return True

    async def write(self, command: Command) -> ApplyResult:
        if self.meanwhile is not None:
            assert self.state.apply(self.meanwhile).ok
            self.meanwhile = None
        result = self.state.apply(command)
        self.writes.append(result)
        self.keyring.sync()
        return result


async def test_node_rm_of_a_manager_rotates_both_keys_and_builds_again_when_refused(
    world: World,
) -> None:
    late = CreateSecret(Secret("x3", "db", OLD.seal_secret("x3", b"late")))
    agent = StandInAgent(world, meanwhile=late)
    result = await Control(agent).node_rm({"node": "m3", "force": True})  # type: ignore[arg-type]
    assert result == {"removed": "m3", "cluster_key_epoch": 1}
    assert [r.ok for r in agent.writes] == [False, True]  # refused once: x3 was not sealed again
    assert "the secrets changed" in agent.writes[0].error
    new = new_keys(world)
    assert world.state.managers_public_key == new.public_key != OLD.public_key
    assert new.open_secret("x3", world.state.secrets["x3"].data) == b"late"
    assert "m3" not in world.state.nodes
