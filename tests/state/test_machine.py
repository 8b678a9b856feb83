"""swarmlet.state.machine: ClusterState.apply, the only mutator of the replicated state.

Every rejected command must leave the state byte-for-byte unchanged (compared via snapshots), and
two replicas fed the same commands must end identical.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from swarmlet.state.commands import (
    AddNode,
    Batch,
    Command,
    CreateSecret,
    CreateService,
    InitCluster,
    PutTasks,
    RemoveNode,
    RemoveSecret,
    RemoveService,
    RemoveTasks,
    RotateToken,
    SetTargetVoters,
    SetUpdateStatus,
    UpdateNode,
    UpdateService,
)
from swarmlet.state.machine import ApplyResult, ClusterState
from swarmlet.state.model import (
    Availability,
    FileRef,
    Node,
    PortConfig,
    Resources,
    Role,
    Secret,
    Service,
    ServiceSpec,
    Task,
    TaskState,
    UpdateState,
    UpdateStatus,
)
from swarmlet.wire import codec as wire

INIT = InitCluster("cluster-1", 100.0, b"wtok", b"mtok")


def node(node_id: str, name: str = "", role: Role = Role.WORKER) -> Node:
    # A manager's record carries the managers' key sealed to it (opaque to the state).
    blob = b"blob-" + node_id.encode() if role is Role.MANAGER else b""
    return Node(node_id, name or node_id, f"{node_id}:7946", node_id, role, sealed_manager_key=blob)


def spec(
    name: str = "web", *, image: str = "nginx", ports: tuple[int, ...] = (), **kw: Any
) -> ServiceSpec:
    return ServiceSpec(name, image, ports=tuple(PortConfig(p, 80) for p in ports), **kw)


def task(task_id: str, service_id: str = "s1", slot: int = 1, **kw: Any) -> Task:
    return Task(task_id, service_id, slot, 1, **kw)


def apply_ok(state: ClusterState, *commands: Command) -> list[ApplyResult]:
    results = [state.apply(c) for c in commands]
    assert all(r.ok for r in results), results
    return results


def assert_rejected(state: ClusterState, command: Command, match: str) -> None:
    before = state.snapshot()
    result = state.apply(command)
    assert not result.ok
    assert match in result.error
    assert state.snapshot() == before, "a rejected command changed the state"


@pytest.fixture
def cluster() -> ClusterState:
    state = ClusterState()
    apply_ok(state, INIT, AddNode(node("m1", "h1", Role.MANAGER)), AddNode(node("w1", "h2")))
    apply_ok(state, CreateService(Service("s1", spec("web", ports=(8080,)))))
    return state


# ------------------------------------------------------------------------------- cluster, nodes


def test_init_sets_the_cluster_once_only() -> None:
    state = ClusterState()
    assert state.apply(INIT) == ApplyResult(True, value="cluster-1")
    assert (state.cluster_id, state.sealed_worker_token, state.sealed_manager_token) == (
        "cluster-1",
        b"wtok",
        b"mtok",
    )
    assert_rejected(state, InitCluster("cluster-2", 1.0, b"a", b"b"), "already initialised")


@pytest.mark.parametrize("target", [0, 2, 4, 9, -1])
def test_init_and_set_target_voters_refuse_even_or_out_of_range_targets(target: int) -> None:
    assert_rejected(ClusterState(), InitCluster("c", 1.0, b"w", b"m", target), "target voters")
    state = ClusterState()
    apply_ok(state, INIT)
    assert_rejected(state, SetTargetVoters(target), "target voters")


def test_set_target_voters_accepts_odd_targets() -> None:
    state = ClusterState()
    apply_ok(state, INIT, SetTargetVoters(5))
    assert state.target_voters == 5


def test_a_taken_host_name_gets_a_numeric_suffix() -> None:
    state = ClusterState()
    results = apply_ok(
        state, AddNode(node("a", "h")), AddNode(node("b", "h")), AddNode(node("c", "h"))
    )
    assert [r.value for r in results] == ["h", "h-2", "h-3"]
    assert [state.nodes[i].name for i in "abc"] == ["h", "h-2", "h-3"]


def test_suffix_skips_names_already_taken() -> None:
    state = ClusterState()
    apply_ok(state, AddNode(node("a", "h")), AddNode(node("b", "h-2")))
    assert apply_ok(state, AddNode(node("c", "h")))[0].value == "h-3"


def test_an_explicit_name_that_is_taken_is_refused() -> None:
    state = ClusterState()
    apply_ok(state, AddNode(node("a", "h")))
    assert_rejected(state, AddNode(node("b", "h"), name_is_explicit=True), "already in the cluster")
    assert apply_ok(state, AddNode(node("b", "other"), name_is_explicit=True))[0].value == "other"


def test_a_node_rejoining_with_its_id_keeps_name_role_and_labels_but_takes_new_addresses() -> None:
    state = ClusterState()
    apply_ok(state, AddNode(node("a", "h")), UpdateNode("a", labels_add={"zone": "x"}))
    rejoin = dataclasses.replace(
        node("a", "other", Role.MANAGER), addr="10.9.9.9:1", publish_addr="p"
    )
    assert apply_ok(state, AddNode(rejoin))[0].value == "h"
    got = state.nodes["a"]
    assert (got.name, got.role, got.labels) == ("h", Role.WORKER, {"zone": "x"})
    assert (got.addr, got.publish_addr) == ("10.9.9.9:1", "p")
    assert len(state.nodes) == 1


def test_update_node_changes_only_what_it_names(cluster: ClusterState) -> None:
    apply_ok(cluster, UpdateNode("w1", labels_add={"a": "1", "b": "2"}))
    apply_ok(cluster, UpdateNode("w1", availability=Availability.DRAIN, labels_rm=("a",)))
    got = cluster.nodes["w1"]
    assert got.availability is Availability.DRAIN
    assert got.labels == {"b": "2"}
    assert got.role is Role.WORKER
    assert got.addr == "w1:7946"
    apply_ok(
        cluster,
        UpdateNode("w1", role=Role.MANAGER, resources=Resources(2, 3), sealed_manager_key=b"b"),
    )
    assert cluster.nodes["w1"].role is Role.MANAGER
    assert cluster.nodes["w1"].resources == Resources(2, 3)
    assert cluster.nodes["w1"].availability is Availability.DRAIN


def test_update_or_remove_of_an_unknown_node_is_rejected(cluster: ClusterState) -> None:
    assert_rejected(cluster, UpdateNode("nope", role=Role.MANAGER), "no node")
    assert_rejected(cluster, RemoveNode("nope"), "no node")


def test_removing_a_node_orphans_its_live_tasks_and_leaves_finished_ones(
    cluster: ClusterState,
) -> None:
    apply_ok(
        cluster,
        PutTasks(
            (
                task("t1", node_id="w1", state=TaskState.RUNNING),
                task("t2", slot=2, node_id="w1", state=TaskState.COMPLETE),
                task("t3", slot=3, node_id="m1", state=TaskState.RUNNING),
            )
        ),
    )
    apply_ok(cluster, RemoveNode("w1"))
    assert "w1" not in cluster.nodes
    t1 = cluster.tasks["t1"]
    assert (t1.state, t1.desired_state) == (TaskState.ORPHANED, TaskState.SHUTDOWN)
    assert cluster.tasks["t2"].state is TaskState.COMPLETE
    assert cluster.tasks["t3"].state is TaskState.RUNNING


def test_rotate_token_replaces_the_token_of_that_role_only(cluster: ClusterState) -> None:
    apply_ok(cluster, RotateToken(Role.WORKER, b"w2"))
    assert (cluster.sealed_token(Role.WORKER), cluster.sealed_token(Role.MANAGER)) == (
        b"w2",
        b"mtok",
    )
    apply_ok(cluster, RotateToken(Role.MANAGER, b"m2"))
    assert (cluster.sealed_worker_token, cluster.sealed_manager_token) == (b"w2", b"m2")


# ------------------------------------------------------------------------------- services


def test_a_second_service_with_the_same_name_is_rejected(cluster: ClusterState) -> None:
    assert_rejected(cluster, CreateService(Service("s2", spec("web"))), "already exists")
    assert_rejected(cluster, CreateService(Service("s1", spec("api"))), "already exists")


def test_a_published_port_in_use_by_another_service_is_rejected(cluster: ClusterState) -> None:
    assert_rejected(cluster, CreateService(Service("s2", spec("api", ports=(8080,)))), "8080/tcp")
    # the same number over udp is a different port
    udp = ServiceSpec("dns", "coredns", ports=(PortConfig(8080, 53, protocol="udp"),))
    apply_ok(cluster, CreateService(Service("s3", udp)))


def test_host_mode_ports_do_not_conflict_across_services(cluster: ClusterState) -> None:
    host = (PortConfig(9000, 80, mode="host"),)
    apply_ok(cluster, CreateService(Service("s2", ServiceSpec("a", "i", ports=host))))
    apply_ok(cluster, CreateService(Service("s3", ServiceSpec("b", "i", ports=host))))


def test_ports_without_a_published_number_do_not_conflict(cluster: ClusterState) -> None:
    unpublished = (PortConfig(0, 80),)
    apply_ok(cluster, CreateService(Service("s2", ServiceSpec("a", "i", ports=unpublished))))
    apply_ok(cluster, CreateService(Service("s3", ServiceSpec("b", "i", ports=unpublished))))


def test_updating_a_service_keeps_its_own_ports(cluster: ClusterState) -> None:
    apply_ok(cluster, UpdateService("s1", spec("web", image="nginx:2", ports=(8080,)), 200.0))
    assert cluster.services["s1"].version == 2


def test_an_update_onto_another_services_name_or_port_is_rejected(cluster: ClusterState) -> None:
    apply_ok(cluster, CreateService(Service("s2", spec("api", ports=(9090,)))))
    assert_rejected(cluster, UpdateService("s2", spec("web"), 1.0), "already exists")
    assert_rejected(cluster, UpdateService("s2", spec("api", ports=(8080,)), 1.0), "8080")


def test_a_service_using_a_missing_secret_or_config_is_rejected(cluster: ClusterState) -> None:
    with_secret = spec("db", secrets=(FileRef("pw", "pw"),))
    assert_rejected(cluster, CreateService(Service("s2", with_secret)), "secret 'pw' not found")
    with_config = spec("db", configs=(FileRef("conf", "/etc/conf"),))
    assert_rejected(cluster, CreateService(Service("s2", with_config)), "config 'conf' not found")
    # a config of that name does not stand in for a secret
    apply_ok(cluster, CreateSecret(Secret("c1", "pw", b"x", is_config=True)))
    assert_rejected(cluster, CreateService(Service("s2", with_secret)), "secret 'pw' not found")
    apply_ok(cluster, CreateSecret(Secret("x1", "pw", b"sealed")))
    apply_ok(cluster, CreateService(Service("s2", with_secret)))


def test_re_deploying_an_unchanged_spec_is_a_no_op(cluster: ClusterState) -> None:
    before = cluster.snapshot()
    result = cluster.apply(UpdateService("s1", spec("web", ports=(8080,)), 999.0))
    assert result.ok
    assert cluster.snapshot() == before
    assert cluster.services["s1"].version == 1


def test_an_update_bumps_the_version_and_remembers_the_previous_spec(cluster: ClusterState) -> None:
    old = cluster.services["s1"].spec
    new = spec("web", image="nginx:2", ports=(8080,))
    status = UpdateStatus(UpdateState.UPDATING, 5.0)
    apply_ok(cluster, UpdateService("s1", new, 200.0, update_status=status))
    got = cluster.services["s1"]
    assert (got.spec, got.previous_spec, got.version) == (new, old, 2)
    assert (got.updated_at, got.update_status) == (200.0, status)


def test_a_rollback_restores_the_previous_spec_and_clears_it(cluster: ClusterState) -> None:
    old = cluster.services["s1"].spec
    apply_ok(cluster, UpdateService("s1", spec("web", image="nginx:2", ports=(8080,)), 200.0))
    apply_ok(cluster, UpdateService("s1", old, 300.0, is_rollback=True))
    got = cluster.services["s1"]
    assert (got.spec, got.previous_spec, got.version) == (old, None, 3)


def test_update_or_remove_of_an_unknown_service_is_rejected(cluster: ClusterState) -> None:
    assert_rejected(cluster, UpdateService("nope", spec("x"), 1.0), "no service")
    assert_rejected(cluster, RemoveService("nope", 1.0), "no service")
    assert_rejected(cluster, SetUpdateStatus("nope", UpdateStatus()), "no service")


def test_set_update_status_changes_only_the_status(cluster: ClusterState) -> None:
    status = UpdateStatus(UpdateState.PAUSED, 1.0, 0.0, "task failed")
    apply_ok(cluster, SetUpdateStatus("s1", status))
    assert cluster.services["s1"].update_status == status
    assert cluster.services["s1"].version == 1


def test_removing_a_service_shuts_down_its_tasks(cluster: ClusterState) -> None:
    apply_ok(cluster, PutTasks((task("t1", node_id="w1", state=TaskState.RUNNING),)))
    apply_ok(cluster, RemoveService("s1", 500.0))
    assert "s1" not in cluster.services
    t1 = cluster.tasks["t1"]
    assert (t1.desired_state, t1.updated_at) == (TaskState.SHUTDOWN, 500.0)
    # its name and port are free again
    apply_ok(cluster, CreateService(Service("s9", spec("web", ports=(8080,)))))


# ------------------------------------------------------------------------------- tasks


def test_tasks_move_forward(cluster: ClusterState) -> None:
    apply_ok(cluster, PutTasks((task("t1"),)))
    for s in (TaskState.PENDING, TaskState.ASSIGNED, TaskState.RUNNING, TaskState.FAILED):
        apply_ok(cluster, PutTasks((task("t1", node_id="w1", state=s),)))
    assert cluster.tasks["t1"].state is TaskState.FAILED


def test_a_task_state_never_goes_back(cluster: ClusterState) -> None:
    apply_ok(cluster, PutTasks((task("t1", node_id="w1", state=TaskState.RUNNING),)))
    assert_rejected(
        cluster, PutTasks((task("t1", node_id="w1", state=TaskState.STARTING),)), "cannot go back"
    )


def test_a_desired_state_never_goes_back(cluster: ClusterState) -> None:
    apply_ok(cluster, PutTasks((task("t1", desired_state=TaskState.SHUTDOWN),)))
    assert_rejected(cluster, PutTasks((task("t1"),)), "desired state cannot go back")


def test_a_tasks_service_slot_and_assigned_node_are_immutable(cluster: ClusterState) -> None:
    apply_ok(cluster, CreateService(Service("s2", spec("api"))))
    apply_ok(cluster, PutTasks((task("t1", node_id="w1"),)))
    assert_rejected(cluster, PutTasks((task("t1", slot=2, node_id="w1"),)), "immutable")
    assert_rejected(cluster, PutTasks((task("t1", "s2", node_id="w1"),)), "immutable")
    assert_rejected(cluster, PutTasks((task("t1", node_id="m1"),)), "already assigned")


def test_an_unassigned_task_may_be_assigned_once(cluster: ClusterState) -> None:
    apply_ok(cluster, PutTasks((task("t1", state=TaskState.PENDING),)))
    apply_ok(cluster, PutTasks((task("t1", node_id="w1", state=TaskState.ASSIGNED),)))
    assert cluster.tasks["t1"].node_id == "w1"


def test_a_new_task_needs_an_existing_service_and_node(cluster: ClusterState) -> None:
    assert_rejected(cluster, PutTasks((task("t1", "nope"),)), "no service")
    assert_rejected(cluster, PutTasks((task("t1", node_id="ghost"),)), "no node")


def test_put_tasks_is_all_or_nothing(cluster: ClusterState) -> None:
    assert_rejected(cluster, PutTasks((task("t1"), task("t2", "nope"))), "no service")
    assert "t1" not in cluster.tasks


def test_put_tasks_checks_later_entries_against_earlier_ones(cluster: ClusterState) -> None:
    going_back = PutTasks(
        (task("t1", state=TaskState.RUNNING, node_id="w1"), task("t1", state=TaskState.NEW))
    )
    assert_rejected(cluster, going_back, "cannot go back")


def test_remove_tasks_ignores_unknown_ids(cluster: ClusterState) -> None:
    apply_ok(cluster, PutTasks((task("t1"), task("t2", slot=2))))
    apply_ok(cluster, RemoveTasks(("t1", "unknown")))
    assert set(cluster.tasks) == {"t2"}


# ------------------------------------------------------------------------------- secrets


def test_secret_and_config_names_are_unique_per_kind(cluster: ClusterState) -> None:
    apply_ok(cluster, CreateSecret(Secret("x1", "pw", b"a")))
    assert_rejected(cluster, CreateSecret(Secret("x2", "pw", b"b")), "secret 'pw' already exists")
    assert_rejected(cluster, CreateSecret(Secret("x1", "other", b"b")), "already exists")
    apply_ok(cluster, CreateSecret(Secret("c1", "pw", b"cfg", is_config=True)))


def test_a_secret_in_use_cannot_be_removed(cluster: ClusterState) -> None:
    apply_ok(cluster, CreateSecret(Secret("x1", "pw", b"a")))
    apply_ok(cluster, CreateService(Service("s2", spec("db", secrets=(FileRef("pw", "pw"),)))))
    assert_rejected(cluster, RemoveSecret("x1"), "in use by db")
    apply_ok(cluster, RemoveService("s2", 1.0), RemoveSecret("x1"))
    assert_rejected(cluster, RemoveSecret("x1"), "no secret")


# ------------------------------------------------------------------------------- batch, snapshots


def test_a_batch_applies_every_command(cluster: ClusterState) -> None:
    apply_ok(
        cluster,
        Batch((CreateSecret(Secret("x1", "pw", b"a")), CreateService(Service("s2", spec("api"))))),
    )
    assert "x1" in cluster.secrets
    assert "s2" in cluster.services


def test_a_batch_with_one_bad_command_changes_nothing(cluster: ClusterState) -> None:
    batch = Batch(
        (
            CreateService(Service("s2", spec("api"))),
            UpdateNode("w1", labels_add={"x": "y"}),
            CreateService(Service("s3", spec("api"))),  # name taken by the first command
        )
    )
    assert_rejected(cluster, batch, "already exists")
    assert "s2" not in cluster.services


def test_a_nested_batch_is_rejected_deterministically(cluster: ClusterState) -> None:
    assert_rejected(cluster, Batch((Batch(()),)), "unknown command Batch")


def test_snapshot_and_restore_give_an_equal_state(cluster: ClusterState) -> None:
    apply_ok(
        cluster,
        CreateSecret(Secret("x1", "pw", b"\x00\xff")),
        PutTasks((task("t1", node_id="w1", state=TaskState.RUNNING),)),
        UpdateNode("w1", labels_add={"zone": "a"}),
        SetTargetVoters(5),
    )
    restored = ClusterState.restore(cluster.snapshot())
    assert restored.snapshot() == cluster.snapshot()
    assert restored.nodes == cluster.nodes
    assert restored.services == cluster.services
    assert restored.tasks == cluster.tasks
    assert restored.secrets == cluster.secrets
    assert (restored.cluster_id, restored.target_voters) == ("cluster-1", 5)


def test_a_state_past_64_mib_is_restored(cluster: ClusterState) -> None:
    # Past the limit of any one message: a snapshot is the node's own, or a leader's that the
    # transport took (only on a Raft stream from a manager). A bound here made every restart
    # after the compaction of such a state fail.
    env = {f"K{j}": "x" * 1000 for j in range(14_000)}
    for i in range(5):
        apply_ok(cluster, CreateService(Service(f"b{i}", spec(f"big{i}", env=env))))
    data = cluster.snapshot()
    assert len(data) > wire.MAX_MESSAGE_BYTES
    restored = ClusterState.restore(data)
    assert restored.services == cluster.services


def test_restoring_nothing_gives_an_empty_state() -> None:
    assert ClusterState.restore(b"").snapshot() == ClusterState().snapshot()


def test_reads_find_nodes_and_services_by_id_name_or_prefix(cluster: ClusterState) -> None:
    assert cluster.find_node("h2") == cluster.nodes["w1"]
    assert cluster.find_node("w1") == cluster.nodes["w1"]
    assert cluster.find_node("w") == cluster.nodes["w1"]  # unique prefix
    assert cluster.find_node("zz") is None
    assert cluster.find_service("web") == cluster.services["s1"]
    assert [n.id for n in cluster.managers()] == ["m1"]


# ------------------------------------------------------------------------------- properties

_NODE_IDS = ("n1", "n2", "n3")
_SERVICE_IDS = ("s1", "s2")
_TASK_IDS = ("t1", "t2", "t3")
_names = st.sampled_from(("a", "b", "a-2"))
_nodes = st.builds(
    Node,
    id=st.sampled_from(_NODE_IDS),
    name=_names,
    addr=st.sampled_from(("x:1", "y:2")),
    publish_addr=st.just("p"),
    role=st.sampled_from(list(Role)),
)
_specs = st.builds(
    ServiceSpec,
    name=_names,
    image=st.sampled_from(("i1", "i2")),
    ports=st.lists(st.builds(PortConfig, st.sampled_from((80, 81)), st.just(80)), max_size=1).map(
        tuple
    ),
    secrets=st.lists(st.builds(FileRef, _names, st.just("f")), max_size=1).map(tuple),
)
_tasks = st.builds(
    Task,
    id=st.sampled_from(_TASK_IDS),
    service_id=st.sampled_from(_SERVICE_IDS),
    slot=st.integers(1, 2),
    spec_version=st.just(1),
    desired_state=st.sampled_from((TaskState.RUNNING, TaskState.SHUTDOWN)),
    state=st.sampled_from(list(TaskState)),
    node_id=st.sampled_from(("", *_NODE_IDS)),
)
_times = st.floats(0, 1000, allow_nan=False)
_simple_commands: st.SearchStrategy[Command] = st.one_of(
    st.builds(InitCluster, st.sampled_from(("c1", "c2")), _times, st.just(b"w"), st.just(b"m")),
    st.builds(AddNode, _nodes, st.booleans()),
    st.builds(RemoveNode, st.sampled_from(_NODE_IDS)),
    st.builds(
        UpdateNode,
        st.sampled_from(_NODE_IDS),
        availability=st.none() | st.sampled_from(list(Availability)),
        role=st.none() | st.sampled_from(list(Role)),
        labels_add=st.dictionaries(_names, _names, max_size=1),
        labels_rm=st.lists(_names, max_size=1).map(tuple),
    ),
    st.builds(SetTargetVoters, st.integers(0, 6)),
    st.builds(CreateService, st.builds(Service, st.sampled_from(_SERVICE_IDS), _specs)),
    st.builds(UpdateService, st.sampled_from(_SERVICE_IDS), _specs, _times, st.booleans()),
    st.builds(RemoveService, st.sampled_from(_SERVICE_IDS), _times),
    st.builds(PutTasks, st.lists(_tasks, max_size=2).map(tuple)),
    st.builds(RemoveTasks, st.lists(st.sampled_from(_TASK_IDS), max_size=2).map(tuple)),
    st.builds(
        CreateSecret,
        st.builds(
            Secret, st.sampled_from(("x1", "x2")), _names, st.just(b"d"), is_config=st.booleans()
        ),
    ),
    st.builds(RemoveSecret, st.sampled_from(("x1", "x2"))),
)
_commands: st.SearchStrategy[Command] = st.one_of(
    _simple_commands, st.builds(Batch, st.lists(_simple_commands, max_size=3).map(tuple))
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_commands, max_size=25))
def test_apply_is_deterministic_and_rejections_change_nothing(commands: list[Command]) -> None:
    a, b = ClusterState(), ClusterState()
    for command in commands:
        before = a.snapshot()
        result_a, result_b = a.apply(command), b.apply(command)
        assert result_a == result_b
        if not result_a.ok:
            assert result_a.error
            assert a.snapshot() == before
        assert a.snapshot() == b.snapshot()
    assert ClusterState.restore(a.snapshot()).snapshot() == a.snapshot()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_commands, max_size=20), st.lists(_commands, max_size=20))
def test_a_replica_restored_from_a_snapshot_stays_in_step(
    head: list[Command], tail: list[Command]
) -> None:
    live = ClusterState()
    for command in head:
        live.apply(command)
    restored = ClusterState.restore(live.snapshot())
    for command in tail:
        assert live.apply(command) == restored.apply(command)
    assert live.snapshot() == restored.snapshot()


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_commands, max_size=25))
def test_task_states_never_move_backwards(commands: list[Command]) -> None:
    state = ClusterState()
    seen: dict[str, tuple[TaskState, TaskState]] = {}
    for command in commands:
        state.apply(command)
        for t in state.tasks.values():
            if t.id in seen:
                old_state, old_desired = seen[t.id]
                assert t.state >= old_state
                assert t.desired_state >= old_desired
            seen[t.id] = (t.state, t.desired_state)
        for t_id in list(seen):
            if t_id not in state.tasks:
                del seen[t_id]  # removed tasks may be re-created
