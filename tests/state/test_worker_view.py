"""state.worker_view: a worker's view, sent whole or kept current by changes, always equals what a
computation from scratch says it holds (every node; its own tasks and, in full, their services
with the configs those use; every other routed service redacted, with its running tasks and
their statuses); no other service's spec ever reaches the worker; a change costs a worker what
concerns it; and `updates` cuts the records as documented."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterable

import pytest

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
    ReportTasks,
    UpdateService,
)
from swarmlet.state.machine import ClusterState
from swarmlet.state.model import (
    FileRef,
    Mount,
    NetworkAttachment,
    Node,
    PortConfig,
    Role,
    Secret,
    Service,
    ServiceSpec,
    Task,
    TaskState,
)
from swarmlet.state.observed import Endpoint, TaskObservation
from swarmlet.state.worker_view import (
    BYTES_PER_UPDATE,
    ViewBuilder,
    ViewChanges,
    ViewCluster,
    ViewUpdate,
    apply_update,
    is_routed,
    route_view,
    updates,
)
from swarmlet.wire import codec as wire

W = "w"  # the worker whose view is under test


# ------------------------------------------------------------------------ the view, from scratch


@dataclasses.dataclass(frozen=True)
class View:
    cluster: ViewCluster
    port_errors: dict[str, dict[str, str]]  # the worker's own only
    nodes: dict[str, Node]
    services: dict[str, Service]
    tasks: dict[str, Task]
    statuses: dict[str, TaskObservation]
    secrets: dict[str, Secret]


def expected_view(state: ClusterState, worker: str) -> View:
    """What `worker`'s view of `state` holds, computed from the records alone."""
    own = {t.service_id for t in state.tasks.values() if t.node_id == worker}
    services: dict[str, Service] = {}
    for service_id, record in state.services.items():
        if service_id in own:
            services[service_id] = record
        elif is_routed(record):
            services[service_id] = route_view(record)
    tasks: dict[str, Task] = {}
    for task_id, one in state.tasks.items():
        owner = state.services.get(one.service_id)
        routed_running = (
            owner is not None and is_routed(owner) and one.desired_state is TaskState.RUNNING
        )
        if one.node_id == worker or routed_running:
            tasks[task_id] = one
    statuses = {k: v for k, v in state.task_status.items() if k in tasks}
    used = {
        ref.name
        for service_id in own
        if service_id in state.services
        for ref in state.services[service_id].spec.configs
    }
    secrets = {k: s for k, s in state.secrets.items() if s.is_config and s.name in used}
    cluster = ViewCluster(
        state.cluster_id, state.created_at, state.managers_public_key, dict(state.removed_nodes)
    )
    errors = state.port_errors.get(worker, {})
    port_errors = {worker: dict(errors)} if errors else {}
    return View(cluster, port_errors, dict(state.nodes), services, tasks, statuses, secrets)


def held_view(worker_state: ClusterState) -> View:
    """What a worker's `ClusterState` holds, in the same shape."""
    s = worker_state
    return View(
        ViewCluster(s.cluster_id, s.created_at, s.managers_public_key, dict(s.removed_nodes)),
        dict(s.port_errors),
        dict(s.nodes),
        dict(s.services),
        dict(s.tasks),
        dict(s.task_status),
        dict(s.secrets),
    )


def assert_view(worker_state: ClusterState, state: ClusterState, worker: str, when: str) -> None:
    held, want = held_view(worker_state), expected_view(state, worker)
    # Field by field, the configs last: the first difference names what is wrong.
    assert held.cluster == want.cluster, f"cluster, {when}"
    assert held.port_errors == want.port_errors, f"port errors, {when}"
    assert held.nodes == want.nodes, f"nodes, {when}"
    assert held.services == want.services, f"services, {when}"
    assert held.tasks == want.tasks, f"tasks, {when}"
    assert held.statuses == want.statuses, f"statuses, {when}"
    assert held.secrets == want.secrets, f"configs, {when}"


def over_the_wire(update: ViewUpdate) -> ViewUpdate:
    decoded = wire.decode(wire.encode(update), expect=(ViewUpdate,))
    assert isinstance(decoded, ViewUpdate)
    return decoded


def send(
    changes: ViewChanges,
    worker_state: ClusterState,
    *,
    worker: str = W,
    index: int = 1,
    reset: bool = False,
    per_update: int = 3,
) -> list[bytes]:
    """Apply `changes` to the worker as it would travel; the frames sent."""
    frames = []
    for update in updates(
        changes, index=index, leader_id="", in_raft=False, reset=reset, per_update=per_update
    ):
        frames.append(wire.encode(update))
        apply_update(worker_state, over_the_wire(update), worker)
    return frames


def send_full(builder: ViewBuilder, state: ClusterState, worker_state: ClusterState) -> list[bytes]:
    return send(builder.full(state), worker_state, worker=builder.node_id, reset=True)


def send_changes(
    builder: ViewBuilder, state: ClusterState, worker_state: ClusterState, *, index: int = 1
) -> list[bytes]:
    changes = builder.changes(state)
    assert changes is not None
    return send(changes, worker_state, worker=builder.node_id, index=index)


# ------------------------------------------------------------------------------------ records


def node(node_id: str, **changes: object) -> Node:
    n = Node(
        node_id, f"host-{node_id}", f"{node_id}.example:7946", f"{node_id}.example", Role.WORKER
    )
    return dataclasses.replace(n, **changes)  # type: ignore[arg-type]


def service(
    service_id: str,
    *,
    ports: Iterable[PortConfig] = (),
    vip: dict[str, int] | None = None,
    configs: Iterable[str] = (),
    version: int = 1,
) -> Service:
    vip = vip or {}
    spec = ServiceSpec(
        name=f"svc-{service_id}",
        image="img",
        env={"V": str(version)},
        ports=tuple(ports),
        networks=tuple(NetworkAttachment(name) for name in vip),
        configs=tuple(FileRef(name, f"/{name}") for name in configs),
    )
    return Service(service_id, spec, version=version, vip_indexes=dict(vip))


def task(
    task_id: str,
    service_id: str,
    node_id: str = "",
    desired: TaskState = TaskState.RUNNING,
    state: TaskState = TaskState.RUNNING,
) -> Task:
    return Task(task_id, service_id, 1, 1, desired_state=desired, state=state, node_id=node_id)


def status(task_id: str, n: int = 0) -> TaskObservation:
    return TaskObservation(
        task_id, TaskState.RUNNING, container_id=f"ctr-{task_id}-{n}", since=float(n)
    )


def config(config_id: str, name: str, data: bytes = b"conf") -> Secret:
    return Secret(config_id, name, data, is_config=True)


def cluster(*nodes: str) -> ClusterState:
    state = ClusterState()
    state.cluster_id, state.created_at, state.managers_public_key = "c1", 1.0, b"managers-pk"
    for node_id in (W, *nodes):
        state.nodes[node_id] = node(node_id)
    return state


INGRESS = (PortConfig(8080, 80),)
HOST_ONLY = (PortConfig(9090, 90, mode="host"),)


# ------------------------------------------------------------------------------ the reference


def test_full_view_holds_own_services_in_full_and_other_routed_ones_redacted() -> None:
    state = cluster("n1", "n2")
    state.secrets["c-app"] = config("c-app", "app")
    state.secrets["c-other"] = config("c-other", "other")
    state.secrets["s-app"] = Secret("s-app", "app", b"sealed")  # a secret, never in a view
    state.services["mine"] = service("mine", configs=["app"])  # not routed, but has a task on W
    state.services["web"] = service("web", ports=INGRESS, configs=["other"])
    state.services["mesh"] = service("mesh", vip={"net": 2})
    state.services["hostport"] = service("hostport", ports=HOST_ONLY)  # not routed
    state.services["idle"] = service("idle")
    state.tasks["m1"] = task("m1", "mine", W, desired=TaskState.SHUTDOWN)
    state.tasks["w1"] = task("w1", "web", "n1")
    state.tasks["w2"] = task("w2", "web", "n2", desired=TaskState.SHUTDOWN)
    state.tasks["w3"] = task("w3", "web", "", state=TaskState.PENDING)
    state.tasks["x1"] = task("x1", "mesh", "n2")
    state.tasks["h1"] = task("h1", "hostport", "n1")
    state.tasks["i1"] = task("i1", "idle", "n1")
    state.tasks["orphan"] = task("orphan", "gone", W)  # its service was removed
    for task_id in state.tasks:
        state.task_status[task_id] = status(task_id)
    state.task_status["nobody"] = status("nobody")

    worker = ClusterState()
    send_full(ViewBuilder(W), state, worker)

    assert_view(worker, state, W, "after a full view")
    assert set(worker.services) == {"mine", "web", "mesh"}
    assert worker.services["mine"] == state.services["mine"]
    assert worker.services["web"] == route_view(state.services["web"])
    assert set(worker.tasks) == {"m1", "w1", "w3", "x1", "orphan"}
    assert set(worker.secrets) == {"c-app"}


def test_route_view_keeps_what_routes_read_and_nothing_else() -> None:
    spec = ServiceSpec(
        name="api",
        image="img",
        command=("serve",),
        env={"A": "1"},
        ports=INGRESS,
        networks=(NetworkAttachment("web", aliases=("api.internal",)),),
        stack="shop",
    )
    full = Service("s1", spec, version=7, vip_indexes={"web": 4}, registry_auth=b"auth")
    routed = route_view(full)
    assert routed.id == "s1" and routed.version == 7 and routed.vip_indexes == {"web": 4}
    kept = ("name", "mode", "ports", "networks", "stack")
    assert {f: getattr(routed.spec, f) for f in kept} == {f: getattr(spec, f) for f in kept}
    assert routed.spec == ServiceSpec(
        name="api", image="", ports=INGRESS, networks=spec.networks, stack="shop"
    )
    assert routed.registry_auth == b"" and routed.previous_spec is None
    assert is_routed(full) and is_routed(service("m", vip={"n": 1}))
    assert not is_routed(service("h", ports=HOST_ONLY)) and not is_routed(service("p"))


# ------------------------------------------------------------------- random changes, step by step


TASK_STATES = list(TaskState)
NODE_IDS = [W, "n1", "n2", "n3"]
SERVICE_IDS = [f"s{i}" for i in range(5)]
TASK_IDS = [f"t{i}" for i in range(14)]
CONFIG_NAMES = ["cfg0", "cfg1", "cfg2"]


def random_service(rng: random.Random, state: ClusterState, service_id: str) -> Service:
    old = state.services.get(service_id)
    ports = rng.choice([(), (), INGRESS, HOST_ONLY, (*HOST_ONLY, *INGRESS)])
    vip = rng.choice([{}, {}, {"net": 1}, {"net": 1, "back": 3}])
    existing = sorted({s.name for s in state.secrets.values() if s.is_config})
    configs = rng.sample(existing, rng.randint(0, len(existing)))  # as `_check_spec` requires
    version = old.version + 1 if old is not None else 1
    return service(service_id, ports=ports, vip=vip, configs=configs, version=version)


def random_task(rng: random.Random, state: ClusterState, task_id: str, step: int) -> Task:
    old = state.tasks.get(task_id)
    desired = rng.choice([TaskState.RUNNING, TaskState.SHUTDOWN])
    if old is None:
        # A task id belongs to one service for good, even reaped and written again (Swarm's
        # task model; the journal names a task's service as of its last write).
        service_id = SERVICE_IDS[int(task_id[1:]) % len(SERVICE_IDS)]
        node_id = rng.choice(["", "", *NODE_IDS])
        return task(task_id, service_id, node_id, desired, rng.choice(TASK_STATES))
    return dataclasses.replace(
        old,
        node_id=rng.choice([old.node_id, old.node_id, "", *NODE_IDS]),
        desired_state=desired,
        state=rng.choice(TASK_STATES),
        message=f"step {step}",
    )


def config_in_use(state: ClusterState, name: str) -> bool:
    return any(ref.name == name for s in state.services.values() for ref in s.spec.configs)


def mutate(rng: random.Random, state: ClusterState, step: int) -> None:
    """One direct write to the manager's records, of a kind picked at random."""
    roll = rng.random()
    if roll < 0.22:
        task_id = rng.choice(TASK_IDS)
        state.tasks[task_id] = random_task(rng, state, task_id, step)
    elif roll < 0.30:
        state.tasks.pop(rng.choice(TASK_IDS), None)
    elif roll < 0.45:
        task_id = rng.choice(TASK_IDS)
        state.task_status[task_id] = status(task_id, step)
    elif roll < 0.50:
        state.task_status.pop(rng.choice(TASK_IDS), None)
    elif roll < 0.62:
        service_id = rng.choice(SERVICE_IDS)
        state.services[service_id] = random_service(rng, state, service_id)
    elif roll < 0.66:
        state.services.pop(rng.choice(SERVICE_IDS), None)
    elif roll < 0.70 and state.services:
        # Routing alone changes: a port or a virtual address comes or goes.
        old = state.services[rng.choice(sorted(state.services))]
        if rng.random() < 0.5:
            ports = () if old.spec.ports else INGRESS
            state.services[old.id] = dataclasses.replace(
                old, spec=dataclasses.replace(old.spec, ports=ports)
            )
        else:
            state.services[old.id] = dataclasses.replace(
                old, vip_indexes={} if old.vip_indexes else {"net": 5}
            )
    elif roll < 0.75:
        node_id = rng.choice(NODE_IDS)
        state.nodes[node_id] = node(node_id, labels={"step": str(step)})
    elif roll < 0.78:
        state.nodes.pop(rng.choice(NODE_IDS), None)
    elif roll < 0.81:
        # As `_remove_node`: the revocation list only grows, each id once.
        state.removed_nodes.setdefault(rng.choice([*NODE_IDS, f"old{step}"]), float(step))
    elif roll < 0.84:
        node_id = rng.choice(NODE_IDS)
        if node_id in state.port_errors and rng.random() < 0.4:
            del state.port_errors[node_id]
        else:  # as `_report_tasks`: a node's errors are replaced whole
            state.port_errors[node_id] = {f"{8000 + step % 3}/tcp": f"in use ({step})"}
    elif roll < 0.90:
        name = rng.choice(CONFIG_NAMES)
        if state.secret_by_name(name, is_config=True) is None:
            state.secrets[f"c{step}"] = config(f"c{step}", name, f"data {step}".encode())
        else:
            state.secrets[f"x{step}"] = Secret(f"x{step}", name, b"sealed")  # a secret
    elif roll < 0.95:
        # As `_remove_secret`: only a config no service uses.
        free = [
            s.id
            for s in state.secrets.values()
            if not (s.is_config and config_in_use(state, s.name))
        ]
        if free:
            del state.secrets[rng.choice(sorted(free))]
    elif roll < 0.97:
        state.managers_public_key = f"managers-pk-{step}".encode()
    elif state.services:
        service_id = rng.choice(sorted(state.services))
        state.services[service_id] = state.services[service_id]  # rewritten unchanged


def random_cluster(rng: random.Random) -> ClusterState:
    state = cluster("n1", "n2")
    for step in range(25):
        mutate(rng, state, -step)
    return state


@pytest.mark.parametrize("seed", range(30))
def test_view_kept_by_changes_always_equals_a_fresh_computation(seed: int) -> None:
    rng = random.Random(seed)
    state = random_cluster(rng)
    workers = {W: ClusterState(), "n1": ClusterState()}  # two sessions on one journal
    builders = {worker: ViewBuilder(worker) for worker in workers}
    for worker, worker_state in workers.items():
        send_full(builders[worker], state, worker_state)
        assert_view(worker_state, state, worker, "after the first full view")
    for step in range(1, 250):
        if rng.random() < 0.02:
            # A snapshot was installed: the builder cannot tell what changed; a full view with
            # `reset` replaces whatever the worker held.
            state = ClusterState.restore(state.snapshot())
            for worker, worker_state in workers.items():
                assert builders[worker].changes(state) is None
                send_full(builders[worker], state, worker_state)
                assert_view(worker_state, state, worker, f"after a restore at step {step}")
            continue
        for _ in range(rng.randint(1, 3)):
            mutate(rng, state, step)
        for worker, worker_state in workers.items():
            changes = builders[worker].changes(state)
            assert changes is not None
            for update in updates(
                changes,
                index=step,
                leader_id="",
                in_raft=False,
                reset=False,
                per_update=rng.randint(1, 4),
            ):
                apply_update(worker_state, over_the_wire(update), worker)
            assert_view(worker_state, state, worker, f"seed {seed}, step {step}")
        fresh = ClusterState()
        send_full(ViewBuilder(W), state, fresh)  # and a full view computed now agrees
        assert_view(fresh, state, W, f"a fresh full view at step {step}")


def test_changes_through_commands_keep_the_view_equal_to_a_fresh_computation() -> None:
    state = ClusterState()
    worker = ClusterState()
    builder = ViewBuilder(W)
    send_full(builder, state, worker)

    def step(*commands: Command, when: str) -> None:
        for command in commands:
            assert state.apply(command).ok, when
        send_changes(builder, state, worker)
        assert_view(worker, state, W, when)

    step(InitCluster("c1", 2.0, b"wt", b"mt", managers_public_key=b"pk"), when="init")
    step(*(AddNode(node(n)) for n in (W, "n1", "n2")), when="nodes join")
    step(CreateSecret(config("c-app", "app")), when="a config")
    web = service("web", ports=INGRESS, vip={"front": 9}, configs=["app"])  # the index: ignored
    step(CreateService(web), CreateService(service("batch")), when="two services")
    assert worker.services["web"].vip_indexes == {"front": 1}
    step(
        PutTasks((task("a", "web", "n1"), task("b", "web", "n2"), task("c", "batch", "n1"))),
        when="tasks elsewhere",
    )
    step(ReportTasks("n1", (status("a"), status("c"))), when="statuses")
    assert set(worker.task_status) == {"a"}
    step(PutTasks((task("d", "web", W),)), when="a task of web on the worker")
    assert worker.services["web"] == state.services["web"]
    step(
        Batch((PutTasks((task("e", "batch", W),)), ReportTasks(W, (status("e"),)))),
        when="a batch",
    )
    spec = dataclasses.replace(state.services["web"].spec, env={"V": "2"})
    step(UpdateService("web", spec, 3.0), when="web updated")
    step(RemoveTasks(("d",)), when="the worker's web task reaped")
    assert worker.services["web"] == route_view(state.services["web"])
    step(RemoveNode("n1", 4.0), when="n1 removed")
    step(RemoveService("web", 5.0), when="web removed")
    step(RemoveService("batch", 5.0), when="batch removed")
    step(RemoveTasks(("a", "b", "c", "e")), when="all reaped")


# ---------------------------------------------------------------------------------- configs


def test_a_config_leaves_the_view_with_the_last_own_task_of_its_service() -> None:
    state = cluster("n1")
    state.secrets["c-app"] = config("c-app", "app", b"v1")
    state.services["s"] = service("s", configs=["app"])
    state.tasks["t"] = task("t", "s", W)
    worker, builder = ClusterState(), ViewBuilder(W)
    send_full(builder, state, worker)
    assert set(worker.secrets) == {"c-app"}

    del state.tasks["t"]  # the service no longer runs here: neither it nor its config concern W
    send_changes(builder, state, worker)

    assert "s" not in worker.services
    assert worker.secrets == {}


def test_a_config_no_longer_used_by_an_own_service_leaves_the_view() -> None:
    state = cluster()
    state.secrets["c-app"] = config("c-app", "app", b"v1")
    state.services["s"] = service("s", configs=["app"])
    state.tasks["t"] = task("t", "s", W)
    worker, builder = ClusterState(), ViewBuilder(W)
    send_full(builder, state, worker)

    state.services["s"] = service("s", configs=[], version=2)
    del state.secrets["c-app"]
    send_changes(builder, state, worker)

    assert worker.secrets == {}


def test_a_config_removed_and_created_anew_reaches_the_worker_as_the_only_one_by_its_name() -> None:
    # Through commands, as a user would: stop using "app", remove it, create it with new
    # content, use it again. The worker's task must get the new content.
    state = ClusterState()
    assert state.apply(InitCluster("c1", 1.0, b"wt", b"mt")).ok
    assert state.apply(AddNode(node(W))).ok
    assert state.apply(CreateSecret(config("c-v1", "app", b"old content"))).ok
    assert state.apply(CreateService(service("s", configs=["app"]))).ok
    assert state.apply(PutTasks((task("t", "s", W),))).ok
    worker, builder = ClusterState(), ViewBuilder(W)
    send_full(builder, state, worker)

    for command in (
        UpdateService("s", service("s", configs=[]).spec, 2.0),
        RemoveSecret("c-v1"),
        CreateSecret(config("c-v2", "app", b"new content")),
        UpdateService("s", service("s", configs=["app"]).spec, 3.0),
    ):
        assert state.apply(command).ok
        send_changes(builder, state, worker)

    held = worker.secret_by_name("app", is_config=True)
    assert held is not None and held.data == b"new content"
    assert set(worker.secrets) == {"c-v2"}


# -------------------------------------------------------------------------------- redaction

MARK = "s3cr3t"


def sensitive_service() -> Service:
    spec = ServiceSpec(
        name="api",
        image=f"registry.example/{MARK}:1",
        command=("serve", f"--token={MARK}"),
        env={"MARKER": MARK},
        labels={"owner": MARK},
        container_labels={"c": MARK},
        ports=INGRESS,
        mounts=(Mount("bind", "/data", source=f"/srv/{MARK}"),),
        secrets=(FileRef(f"db-{MARK}", "db"),),
        configs=(FileRef(f"app-{MARK}", "/etc/app"),),
        networks=(NetworkAttachment("front", aliases=("api",)),),
    )
    return Service(
        "api",
        spec,
        version=3,
        previous_spec=spec,
        vip_indexes={"front": 2},
        registry_auth=f"auth-{MARK}".encode(),
    )


def test_a_service_without_a_task_on_the_worker_reaches_it_only_redacted() -> None:
    state = cluster("n1", "n2")
    state.secrets["sec"] = Secret("sec", f"db-{MARK}", f"sealed-{MARK}".encode())
    state.secrets["cfg"] = config("cfg", f"app-{MARK}", f"conf-{MARK}".encode())
    state.services["api"] = sensitive_service()
    for task_id, node_id in (("t1", "n1"), ("t2", "n2")):
        state.tasks[task_id] = task(task_id, "api", node_id)
        state.task_status[task_id] = TaskObservation(
            task_id, TaskState.RUNNING, endpoints=(Endpoint(80, "tcp", f"{node_id}.example", 3),)
        )
    worker, builder = ClusterState(), ViewBuilder(W)

    frames = send_full(builder, state, worker)
    assert worker.services["api"] == route_view(state.services["api"])
    assert set(worker.tasks) == {"t1", "t2"} and set(worker.task_status) == {"t1", "t2"}
    assert worker.secrets == {}
    assert MARK not in repr(held_view(worker))
    assert not [f for f in frames if MARK.encode() in f]

    # A change of the spec while it runs elsewhere: still only the route form travels.
    old = state.services["api"]
    state.services["api"] = dataclasses.replace(
        old, spec=dataclasses.replace(old.spec, env={"MARKER": MARK, "MORE": MARK}), version=4
    )
    frames = send_changes(builder, state, worker)
    assert frames and not [f for f in frames if MARK.encode() in f]
    assert worker.services["api"] == route_view(state.services["api"])
    assert MARK not in repr(held_view(worker))

    # A task lands on the worker: the full record arrives, with its config, never a secret.
    state.tasks["t3"] = task("t3", "api", W, state=TaskState.ASSIGNED)
    send_changes(builder, state, worker)
    assert worker.services["api"] == state.services["api"]
    assert set(worker.secrets) == {"cfg"}
    assert_view(worker, state, W, "with a task on the worker")

    # It is reaped: back to the route form.
    del state.tasks["t3"]
    frames = send_changes(builder, state, worker)
    assert worker.services["api"] == route_view(state.services["api"])
    assert "t3" not in worker.tasks
    assert MARK not in repr(worker.services) and MARK not in repr(worker.tasks)
    assert not [f for f in frames if MARK.encode() in f]


# ------------------------------------------------------------------------------------- cost


def test_one_status_or_task_costs_a_worker_one_oneor_nothing() -> None:
    state = cluster("n1", "n2")
    state.services["web"] = service("web", ports=INGRESS)
    state.services["batch"] = service("batch")
    for i in range(2000):
        task_id = f"t{i:04}"
        state.tasks[task_id] = task(task_id, "web", "n1" if i % 2 else "n2")
        state.task_status[task_id] = status(task_id)
    state.tasks["b"] = task("b", "batch", "n2", state=TaskState.ASSIGNED)
    state.task_status["b"] = status("b")
    builder = ViewBuilder(W)
    full = builder.full(state)
    assert len(full.tasks) == 2000 and len(full.statuses) == 2000

    state.task_status["t0007"] = new = status("t0007", 1)
    changes = builder.changes(state)
    assert changes == ViewChanges(statuses={"t0007": new})
    sent = list(updates(changes, index=2, leader_id="", in_raft=False, reset=False))
    assert [u.records() for u in sent] == [1]

    state.tasks["t0008"] = moved = dataclasses.replace(state.tasks["t0008"], message="x")
    assert builder.changes(state) == ViewChanges(tasks={"t0008": moved})

    state.tasks["b"] = dataclasses.replace(state.tasks["b"], state=TaskState.RUNNING)
    state.task_status["b"] = status("b", 1)
    changes = builder.changes(state)
    assert changes == ViewChanges()
    assert not changes

    assert builder.changes(state) == ViewChanges()  # nothing since

    state.port_errors["n1"] = {"8080/tcp": "in use"}  # another node's: not in this view
    assert builder.changes(state) == ViewChanges()
    state.port_errors[W] = {"8080/tcp": "in use"}
    changes = builder.changes(state)
    assert changes is not None and changes.cluster is not None
    assert changes.cluster.port_errors == {"8080/tcp": "in use"}
    assert changes == ViewChanges(cluster=changes.cluster)

    state.nodes["n2"] = moved_node = node("n2", labels={"zone": "b"})
    assert builder.changes(state) == ViewChanges(nodes={"n2": moved_node})


# ---------------------------------------------------------------------- when it cannot tell


def test_changes_is_none_when_the_journal_forgot() -> None:
    state = cluster("n1")
    state.services["web"] = service("web", ports=INGRESS)
    for i in range(20):
        state.tasks[f"t{i}"] = task(f"t{i}", "web", "n1")
    state.journal.max_keys = 8
    builder, worker = ViewBuilder(W), ClusterState()
    send_full(builder, state, worker)

    for i in range(3):
        state.task_status[f"t{i}"] = status(f"t{i}")
    send_changes(builder, state, worker)  # a few: still known
    assert_view(worker, state, W, "after a few changes")

    for i in range(20):
        state.task_status[f"t{i}"] = status(f"t{i}", 1)
    assert builder.changes(state) is None

    send_full(builder, state, worker)
    assert_view(worker, state, W, "after the full view that followed")


def test_changes_is_none_for_another_state_object_or_before_a_full_view() -> None:
    state = cluster("n1")
    builder = ViewBuilder(W)
    assert builder.changes(state) is None
    builder.full(state)
    assert builder.changes(ClusterState.restore(state.snapshot())) is None
    assert builder.changes(state) == ViewChanges()


# ------------------------------------------------------------------------------- updates()


def test_updates_cut_records_into_chunks_with_reset_first_and_complete_last() -> None:
    cluster_fields = ViewCluster("c1", 1.0, b"pk", {"old": 2.0})
    changes = ViewChanges(
        cluster=cluster_fields,
        nodes={n: node(n) for n in ("a", "b", "c")},
        services={"s": service("s")},
        tasks={f"t{i}": task(f"t{i}", "s", W) for i in range(4)},
        statuses={"t0": status("t0")},
        configs={"cfg": config("cfg", "app")},
        gone_nodes={"z"},
        gone_services={"old"},
        gone_tasks={"t9"},
        gone_statuses={"t9"},
    )
    sent = list(updates(changes, index=7, leader_id="m1", in_raft=True, reset=True, per_update=5))

    assert [u.records() for u in sent] == [5, 5, 4]
    assert [u.reset for u in sent] == [True, False, False]
    assert [u.complete for u in sent] == [False, False, True]
    assert [u.cluster for u in sent] == [cluster_fields, None, None]
    assert {(u.index, u.leader_id, u.in_raft) for u in sent} == {(7, "m1", True)}
    joined = {
        name: [r for u in sent for r in getattr(u, name)]
        for name in (
            "nodes",
            "services",
            "tasks",
            "statuses",
            "configs",
            "gone_nodes",
            "gone_services",
            "gone_tasks",
            "gone_statuses",
        )
    }
    assert joined == {
        "nodes": list(changes.nodes.values()),
        "services": list(changes.services.values()),
        "tasks": list(changes.tasks.values()),
        "statuses": list(changes.statuses.values()),
        "configs": list(changes.configs.values()),
        "gone_nodes": ["z"],
        "gone_services": ["old"],
        "gone_tasks": ["t9"],
        "gone_statuses": ["t9"],
    }
    for per_update in (1, 2, 3, 4, 13, 14, 15, 500):
        chunks = list(
            updates(
                changes, index=7, leader_id="", in_raft=False, reset=False, per_update=per_update
            )
        )
        assert all(u.records() <= per_update for u in chunks)
        assert sum(u.records() for u in chunks) == 14
        assert len(chunks) == -(-14 // per_update)
        assert [u.complete for u in chunks] == [False] * (len(chunks) - 1) + [True]
        assert not any(u.reset for u in chunks)


def test_large_records_travel_in_frames_of_a_few_mebibytes_not_one_over_the_limit() -> None:
    """80 configs of 1 MB (Swarm's largest) and statuses of tasks publishing 3,000 ports each:
    500 records a frame made frames over the 64 MiB a worker takes, and its session broke at
    every attempt (review). Each frame now holds about BYTES_PER_UPDATE, one large record
    alone; none is lost, and the order is kept."""
    big = {f"c{i}": config(f"c{i}", f"cfg{i}", bytes(1000 * 1024)) for i in range(80)}
    ports = tuple(Endpoint(20000 + p, "tcp", "10.0.0.1", 30000 + p) for p in range(3000))
    wide = {f"t{i}": dataclasses.replace(status(f"t{i}"), endpoints=ports) for i in range(100)}
    changes = ViewChanges(configs=big, statuses=wide)
    sent = list(updates(changes, index=1, leader_id="", in_raft=False, reset=True))
    frames = [len(wire.encode(u)) for u in sent]
    assert max(frames) <= BYTES_PER_UPDATE + 1024 * 1024, max(frames)
    assert sum(len(u.configs) for u in sent) == 80 and sum(len(u.statuses) for u in sent) == 100
    assert [c for u in sent for c in u.configs] == list(big.values())
    one = list(
        updates(
            ViewChanges(configs={"c0": big["c0"]}),
            index=1,
            leader_id="",
            in_raft=False,
            reset=True,
            bytes_per_update=1,
        )
    )
    assert [len(u.configs) for u in one] == [1]  # a record larger than the bound goes alone


@pytest.mark.parametrize("reset", [True, False])
def test_updates_of_nothing_still_send_one_complete_update(reset: bool) -> None:
    sent = list(updates(ViewChanges(), index=3, leader_id="", in_raft=False, reset=reset))
    assert sent == [ViewUpdate(index=3, reset=reset, complete=True)]


def test_an_empty_full_view_with_reset_empties_what_the_worker_held() -> None:
    worker = cluster("n1")
    worker.services["s"] = service("s")
    worker.tasks["t"] = task("t", "s", W)
    worker.task_status["t"] = status("t")
    worker.secrets["c"] = config("c", "app")
    send(ViewBuilder(W).full(ClusterState()), worker, reset=True)
    assert held_view(worker) == View(ViewCluster("", 0.0, b""), {}, {}, {}, {}, {}, {})
