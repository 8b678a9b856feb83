"""security.secret_access: which secrets a node may receive for a task; and the state machine's
handling of keys (the managers' key follows the role, comes only with a promotion; a node id
keeps its public key; the managers' public key is recorded at init)."""

from __future__ import annotations

import dataclasses

import pytest

from swarmlet.security.secret_access import SecretGrant, grant_secrets
from swarmlet.state.commands import (
    AddNode,
    Command,
    CreateSecret,
    CreateService,
    InitCluster,
    PutTasks,
    RemoveService,
    UpdateNode,
)
from swarmlet.state.machine import ClusterState
from swarmlet.state.model import FileRef, Node, Role, Secret, Service, ServiceSpec, Task, TaskState

PUBLIC = bytes(range(32))


def apply_ok(state: ClusterState, *commands: Command) -> None:
    for command in commands:
        result = state.apply(command)
        assert result.ok, result.error


def task(task_id: str, node_id: str, service_id: str = "s-api", **kw: object) -> Task:
    return Task(task_id, service_id, 1, 1, node_id=node_id, **kw)  # type: ignore[arg-type]


@pytest.fixture
def state() -> ClusterState:
    """m1 (manager), w1 (worker), w2 (a worker without a public key); api uses two secrets
    (one of them twice), web none."""
    s = ClusterState()
    apply_ok(
        s,
        InitCluster("c", 0.0, b"w", b"m", managers_public_key=b"managers-public"),
        AddNode(
            Node("m1", "m1", "m1:1", "m1", Role.MANAGER, public_key=PUBLIC, sealed_manager_key=b"b")
        ),
        AddNode(Node("w1", "w1", "w1:1", "w1", Role.WORKER, public_key=PUBLIC)),
        AddNode(Node("w2", "w2", "w2:1", "w2", Role.WORKER)),
        CreateSecret(Secret("x1", "db_password", b"sealed-1")),
        CreateSecret(Secret("x2", "api_key", b"sealed-2")),
        CreateSecret(Secret("x3", "unused", b"sealed-3")),
        CreateSecret(Secret("x4", "db_password", b"a config", is_config=True)),
    )
    refs = (FileRef("api_key", "api_key"), FileRef("db_password", "db"), FileRef("api_key", "k2"))
    api = ServiceSpec("api", "img", secrets=refs, configs=(FileRef("db_password", "/c"),))
    apply_ok(
        s,
        CreateService(Service("s-api", api)),
        CreateService(Service("s-web", ServiceSpec("web", "img"))),
        PutTasks(
            (
                task("t-w1", "w1"),
                task("t-m1", "m1"),
                task("t-w2", "w2"),
                task("t-web", "w1", service_id="s-web"),
                task("t-done", "w1", state=TaskState.FAILED),
                task("t-stop", "w1", desired_state=TaskState.SHUTDOWN),
                task("t-new", ""),
            )
        ),
    )
    return s


@pytest.mark.parametrize(
    ("node_id", "task_id", "expected"),
    [
        ("w1", "t-w1", SecretGrant(("api_key", "db_password"))),  # in spec order, once each
        ("m1", "t-m1", SecretGrant(("api_key", "db_password"))),
        ("w1", "t-web", SecretGrant(())),  # a service without secrets gets none
        ("w1", "t-nope", SecretGrant(refusal="no task t-nope")),
        ("w1", "t-m1", SecretGrant(refusal="task t-m1 is not assigned to node w1")),
        ("w1", "t-new", SecretGrant(refusal="task t-new is not assigned to node w1")),
        ("nope", "t-w1", SecretGrant(refusal="task t-w1 is not assigned to node nope")),
        ("w1", "t-done", SecretGrant(refusal="task t-done is not meant to run")),
        ("w1", "t-stop", SecretGrant(refusal="task t-stop is not meant to run")),
        ("w2", "t-w2", SecretGrant(refusal="node w2 has no public key to seal secrets to")),
    ],
)
def test_the_grant_names_the_secrets_of_the_nodes_own_running_task_only(
    state: ClusterState, node_id: str, task_id: str, expected: SecretGrant
) -> None:
    grant = grant_secrets(state, node_id, task_id)
    assert grant == expected
    assert grant.ok == (not expected.refusal)


def test_a_removed_service_grants_nothing_any_more(state: ClusterState) -> None:
    apply_ok(state, RemoveService("s-api", 1.0))
    assert grant_secrets(state, "w1", "t-w1").refusal == "task t-w1 is not meant to run"


def test_a_node_record_keeps_its_public_key_and_a_demotion_drops_the_managers_key(
    state: ClusterState,
) -> None:
    apply_ok(state, UpdateNode("w1", role=Role.MANAGER, sealed_manager_key=b"blob-w1"))
    assert state.nodes["w1"].sealed_manager_key == b"blob-w1"
    apply_ok(state, UpdateNode("w1", labels_add={"zone": "a"}))  # other changes keep it
    assert state.nodes["w1"].sealed_manager_key == b"blob-w1"
    apply_ok(state, UpdateNode("w1", role=Role.WORKER))
    assert state.nodes["w1"] == dataclasses.replace(
        state.nodes["w1"], role=Role.WORKER, sealed_manager_key=b""
    )
    assert state.nodes["w1"].public_key == PUBLIC


def reject(state: ClusterState, command: Command, match: str) -> None:
    before = state.snapshot()
    result = state.apply(command)
    assert not result.ok and match in result.error, result
    assert state.snapshot() == before


@pytest.mark.parametrize(
    ("command", "match"),
    [
        (UpdateNode("w1", role=Role.MANAGER), "needs the managers' key"),
        (UpdateNode("w2", sealed_manager_key=b"forged"), "only with a promotion"),  # a worker
        (UpdateNode("m1", sealed_manager_key=b"forged"), "only with a promotion"),  # replaced
        (UpdateNode("m1", role=Role.MANAGER, sealed_manager_key=b"x"), "only with a promotion"),
        (UpdateNode("m1", role=Role.WORKER, sealed_manager_key=b"x"), "only with a promotion"),
        (AddNode(Node("m2", "m2", "m2:1", "m2", Role.MANAGER, public_key=PUBLIC)), "without"),
    ],
)
def test_the_managers_key_comes_only_with_a_promotion_and_every_manager_has_it(
    state: ClusterState, command: Command, match: str
) -> None:
    reject(state, command, match)


def test_a_join_cannot_take_over_a_node_id_under_another_public_key(state: ClusterState) -> None:
    other_key = bytes(32 - i for i in range(32))
    impostor = Node("m1", "evil", "6.6.6.6:1", "6.6.6.6", Role.WORKER, public_key=other_key)
    reject(state, AddNode(impostor), "already in the cluster with another key")
    keyless = Node("w1", "evil", "6.6.6.6:1", "6.6.6.6", Role.WORKER)
    reject(state, AddNode(keyless), "another key")
    # The node itself, with its own key, re-joins: its addresses are refreshed, nothing else.
    again = Node("w1", "w1-new", "10.0.0.9:1", "10.0.0.9", Role.MANAGER, public_key=PUBLIC)
    apply_ok(state, AddNode(again))
    got = state.nodes["w1"]
    assert (got.name, got.role, got.addr, got.publish_addr) == (
        "w1",
        Role.WORKER,
        "10.0.0.9:1",
        "10.0.0.9",
    )


def test_the_tokens_are_stored_as_given_and_survive_a_snapshot(state: ClusterState) -> None:
    again = ClusterState.restore(state.snapshot())
    assert again.sealed_token(Role.WORKER) == b"w"
    assert again.sealed_token(Role.MANAGER) == b"m"
    assert again.nodes["m1"].public_key == PUBLIC
    assert again.managers_public_key == state.managers_public_key == b"managers-public"
