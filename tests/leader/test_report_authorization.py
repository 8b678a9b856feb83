"""A node is believed only about its own tasks (the state machine keeps other statuses out of a
`ReportTasks`; `node.status_reports` refuses them before), with endpoints on its own address
(`leader.observation`; issue #15, item 4), and what is refused is counted. The routes every proxy
serves come from `observe`, so they are checked here too."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import pytest

from swarmlet.gossip.messages import MemberState
from swarmlet.leader.observation import (
    REFUSED_FOREIGN_HOST,
    REFUSED_LOOPBACK,
    REFUSED_MALFORMED,
    REFUSED_OTHER_NODES_TASK,
    REFUSED_SPECIAL_ADDRESS,
    REFUSED_UNKNOWN_TASK,
    endpoint_refusal,
    observe,
    report_refusal,
)
from swarmlet.proxy.routes import routes_from
from swarmlet.state.commands import ReportTasks
from swarmlet.state.machine import ClusterState
from swarmlet.state.model import (
    Node,
    PortConfig,
    Role,
    Service,
    ServiceSpec,
    Task,
    TaskState,
)
from swarmlet.state.observed import MAX_EXPOSED_PORTS, Endpoint, NodeMeta, TaskObservation

ME, DB_NODE, WORKER = "me", "db-node", "worker"
ADDRS = {ME: "10.0.0.1:7946", DB_NODE: "10.0.0.2:7946", WORKER: "10.0.0.3:7946"}


@dataclass
class Source:
    node_id: str = ME
    state: ClusterState = field(default_factory=ClusterState)
    down_since: dict[str, float] = field(default_factory=dict)
    local: tuple[TaskObservation, ...] = ()

    def member_state(self, node_id: str) -> MemberState | None:
        return MemberState.ALIVE if node_id in self.state.nodes else None

    def node_meta(self, node_id: str) -> NodeMeta | None:
        return None

    def local_observations(self) -> tuple[TaskObservation, ...]:
        return self.local


def _report(source: Source, node_id: str, *statuses: TaskObservation) -> int:
    """Commit `node_id`'s report as the leader would; how many statuses the state took."""
    result = source.state.apply(ReportTasks(node_id, statuses))
    assert result.ok, result.error
    return int(result.value)


def _running(task_id: str, host: str, port: int, target: int = 5432) -> TaskObservation:
    return TaskObservation(
        task_id,
        TaskState.RUNNING,
        container_id="c",
        endpoints=(Endpoint(target, "tcp", host, port),),
    )


def _cluster(addrs: dict[str, str] = ADDRS) -> Source:
    """`db` runs on db-node, `web` on worker; the worker is the one that lies. It comes last in
    the state's nodes, so without the checks its reports would overwrite the owner's."""
    source = Source()
    for node_id, addr in addrs.items():
        source.state.nodes[node_id] = Node(
            node_id, node_id, addr, addr.rpartition(":")[0], Role.WORKER
        )
    for name, node_id, port in (("db", DB_NODE, 5432), ("web", WORKER, 80)):
        spec = ServiceSpec(name=name, image="x", ports=(PortConfig(port + 10000, port),))
        source.state.services[name] = Service(id=name, spec=spec)
        source.state.tasks[f"t-{name}"] = Task(
            f"t-{name}", name, 1, 1, state=TaskState.RUNNING, node_id=node_id
        )
    return source


DB_REPORT = _running("t-db", "10.0.0.2", 30001)
WEB_REPORT = _running("t-web", "10.0.0.3", 30002, target=80)


def _honest() -> Source:
    source = _cluster()
    _report(source, DB_NODE, DB_REPORT)
    _report(source, WORKER, WEB_REPORT)
    return source


def test_honest_reports_are_taken_as_they_are() -> None:
    observed = observe(_honest())
    assert observed.tasks == {"t-db": DB_REPORT, "t-web": WEB_REPORT}
    assert observed.tasks["t-db"] is DB_REPORT  # not rebuilt
    assert observed.refused == {}


def test_a_claim_on_another_nodes_task_is_not_recorded_and_the_owner_wins() -> None:
    source = _honest()
    mitm = _running("t-db", "10.0.0.3", 40000)  # the worker's own address: a man in the middle
    assert _report(source, WORKER, WEB_REPORT, mitm) == 1
    observed = observe(source)
    assert observed.tasks["t-db"] is DB_REPORT
    assert routes_from(source.state, observed.tasks) == routes_from(
        source.state, observe(_honest()).tasks
    )


def test_a_claim_on_a_task_whose_owner_is_silent_is_not_recorded() -> None:
    source = _cluster()
    assert _report(source, WORKER, _running("t-db", "10.0.0.3", 40000)) == 0
    observed = observe(source)
    assert "t-db" not in observed.tasks
    db_route = next(r for r in routes_from(source.state, observed.tasks) if r.service == "db")
    assert db_route.endpoints == ()


def test_a_report_of_an_unassigned_or_unknown_task_is_not_recorded() -> None:
    source = _cluster()
    source.state.tasks["t-pending"] = Task("t-pending", "db", 2, 1)  # no node yet
    pending = _running("t-pending", "10.0.0.3", 40000)
    assert _report(source, WORKER, pending, _running("t-ghost", "10.0.0.3", 40001)) == 0
    assert source.state.task_status == {}
    assert "t-pending" not in observe(source).tasks


def test_a_report_that_moves_a_task_back_is_not_recorded() -> None:
    source = _honest()
    assert _report(source, DB_NODE, TaskObservation("t-db", TaskState.STARTING)) == 0
    assert source.state.task_status["t-db"] is DB_REPORT


def test_a_removed_task_or_node_takes_its_statuses_along() -> None:
    from swarmlet.state.commands import RemoveNode, RemoveTasks

    source = _honest()
    assert source.state.apply(RemoveTasks(("t-web",))).ok
    assert set(source.state.task_status) == {"t-db"}
    assert source.state.apply(RemoveNode(DB_NODE)).ok
    assert source.state.task_status == {}


def test_statuses_survive_a_snapshot() -> None:
    source = _honest()
    source.state.apply(ReportTasks(WORKER, (), port_errors={"80/tcp": "address in use"}))
    restored = ClusterState.restore(source.state.snapshot())
    assert restored.task_status == source.state.task_status
    assert restored.port_errors == {WORKER: {"80/tcp": "address in use"}}


@pytest.mark.parametrize(
    ("task_id", "reporter", "reason"),
    [
        ("t-web", WORKER, None),
        ("t-db", DB_NODE, None),
        ("t-db", WORKER, REFUSED_OTHER_NODES_TASK),
        ("t-web", ME, REFUSED_OTHER_NODES_TASK),
        ("t-ghost", WORKER, REFUSED_UNKNOWN_TASK),
    ],
)
def test_report_refusal(task_id: str, reporter: str, reason: str | None) -> None:
    assert report_refusal(_cluster().state, reporter, task_id) == reason


def test_only_endpoints_on_the_nodes_own_address_are_kept() -> None:
    source = _honest()
    report = TaskObservation(
        "t-web",
        TaskState.RUNNING,
        container_id="c",
        healthy=True,
        endpoints=(
            Endpoint(80, "tcp", "127.0.0.1", 30003),  # each proxy's own loopback
            Endpoint(80, "tcp", "10.0.0.2", 5432),  # another node's address
            Endpoint(80, "tcp", "10.0.0.3", 30002),  # its own: the only one kept
            Endpoint(81, "udp", "0.0.0.0", 30004),
        ),
    )
    _report(source, WORKER, report)
    observed = observe(source)
    kept = observed.tasks["t-web"]
    assert kept.endpoints == (Endpoint(80, "tcp", "10.0.0.3", 30002),)
    assert (kept.state, kept.healthy, kept.container_id) == (TaskState.RUNNING, True, "c")
    assert observed.refused == {REFUSED_FOREIGN_HOST: 2, REFUSED_SPECIAL_ADDRESS: 1}
    assert routes_from(source.state, observed.tasks) == routes_from(
        source.state, observe(_honest()).tasks
    )


def test_malformed_endpoints_committed_before_the_intake_refused_them_are_not_routed() -> None:
    source = _honest()
    report = dataclasses.replace(
        WEB_REPORT,
        endpoints=(
            Endpoint(80, "tcp", "10.0.0.3", 70000),  # OverflowError in the proxy's connect
            Endpoint(80, "bogus", "10.0.0.3", 30003),
            *WEB_REPORT.endpoints,
        ),
    )
    _report(source, WORKER, report)
    observed = observe(source)
    assert observed.tasks["t-web"].endpoints == WEB_REPORT.endpoints
    assert observed.refused == {REFUSED_MALFORMED: 2}


def test_a_task_left_without_endpoints_stays_observed() -> None:
    source = _honest()
    _report(source, WORKER, _running("t-web", "127.0.0.1", 30003, target=80))
    observed = observe(source)
    assert observed.tasks["t-web"].state is TaskState.RUNNING  # the orchestrator still sees it
    assert observed.tasks["t-web"].endpoints == ()
    assert observed.refused == {REFUSED_FOREIGN_HOST: 1}


def test_loopback_endpoints_work_in_a_cluster_on_one_host() -> None:
    addrs = {ME: "127.0.0.1:7946", DB_NODE: "127.0.0.2:7946", WORKER: "127.0.0.3:7946"}
    source = _cluster(addrs)
    _report(source, WORKER, _running("t-web", "127.0.0.3", 30002, target=80))
    observed = observe(source)
    assert observed.tasks["t-web"].endpoints == (Endpoint(80, "tcp", "127.0.0.3", 30002),)
    assert observed.refused == {}


def test_a_node_on_loopback_is_not_routed_to_from_another_host() -> None:
    source = _cluster({**ADDRS, WORKER: "127.0.0.3:7946"})
    _report(source, WORKER, _running("t-web", "127.0.0.3", 30002, target=80))
    observed = observe(source)
    assert observed.tasks["t-web"].endpoints == ()
    assert observed.refused == {REFUSED_LOOPBACK: 1}


def test_this_nodes_own_executor_is_not_second_guessed() -> None:
    source = _cluster()
    own = _running("t-local", "10.0.0.1", 30009)  # not in this replica yet
    source.local = (own,)
    assert observe(source).tasks["t-local"] is own


OWN = "10.0.0.3:7946"


@pytest.mark.parametrize(
    ("host", "owner_addr", "observer_addr", "reason"),
    [
        ("10.0.0.3", OWN, "10.0.0.1:7946", None),
        ("10.0.0.2", OWN, "10.0.0.1:7946", REFUSED_FOREIGN_HOST),  # another node's
        ("10.0.0.1", OWN, "10.0.0.1:7946", REFUSED_FOREIGN_HOST),  # the observer's own
        ("127.0.0.1", OWN, "10.0.0.1:7946", REFUSED_FOREIGN_HOST),
        ("::1", OWN, "10.0.0.1:7946", REFUSED_FOREIGN_HOST),
        ("db.example", OWN, "10.0.0.1:7946", REFUSED_FOREIGN_HOST),
        ("", OWN, "10.0.0.1:7946", REFUSED_FOREIGN_HOST),
        ("10.0.0.3", "", "10.0.0.1:7946", REFUSED_FOREIGN_HOST),  # a node with no address
        ("0.0.0.0", OWN, "10.0.0.1:7946", REFUSED_SPECIAL_ADDRESS),
        ("::", OWN, "10.0.0.1:7946", REFUSED_SPECIAL_ADDRESS),
        ("169.254.169.254", OWN, "10.0.0.1:7946", REFUSED_SPECIAL_ADDRESS),
        ("fe80::1", OWN, "10.0.0.1:7946", REFUSED_SPECIAL_ADDRESS),
        ("224.0.0.1", OWN, "10.0.0.1:7946", REFUSED_SPECIAL_ADDRESS),
        # Even from a node that registered such an address as its own.
        ("0.0.0.0", "0.0.0.0:7946", "10.0.0.1:7946", REFUSED_SPECIAL_ADDRESS),
        ("169.254.1.1", "169.254.1.1:7946", "169.254.1.2:7946", REFUSED_SPECIAL_ADDRESS),
        # Loopback: only between nodes that are both on loopback, i.e. on one host.
        ("127.0.0.3", "127.0.0.3:7946", "127.0.0.1:7946", None),
        ("127.0.0.1", "127.0.0.3:7946", "127.0.0.1:7946", REFUSED_FOREIGN_HOST),
        ("127.0.0.3", "127.0.0.3:7946", "10.0.0.1:7946", REFUSED_LOOPBACK),
        ("127.0.0.3", "127.0.0.3:7946", "", REFUSED_LOOPBACK),  # observer not recorded yet
        ("localhost", "localhost:7946", "10.0.0.1:7946", REFUSED_LOOPBACK),
        ("localhost", "localhost:7946", "localhost:7947", None),
        ("0:0::1", "[::1]:7946", "::1:7947", None),
        # Same address, other spellings.
        ("2001:db8::3", "2001:db8:0::3:7946", "10.0.0.1:7946", None),
        ("2001:db8::3", "[2001:db8::3]:7946", "10.0.0.1:7946", None),
        ("NODE3.example", "node3.example:7946", "10.0.0.1:7946", None),
        ("node3.example", "node4.example:7946", "10.0.0.1:7946", REFUSED_FOREIGN_HOST),
        ("10.0.0.3", "node3.example:7946", "10.0.0.1:7946", REFUSED_FOREIGN_HOST),
    ],
)
def test_endpoint_refusal(
    host: str, owner_addr: str, observer_addr: str, reason: str | None
) -> None:
    assert endpoint_refusal(host, owner_addr=owner_addr, observer_addr=observer_addr) == reason


def test_a_worker_cannot_make_every_node_listen_on_more_ports_than_a_status_holds() -> None:
    # Each of its 40 replicas of `web` reports 1,024 ports of its own (a status holds no more):
    # merged, 40,960 listeners at the service's virtual address on every node, and every node
    # ran out of descriptors (review). The port that web's replica on another node serves stays.
    source = _honest()
    honest = TaskObservation(
        "t-web",
        TaskState.RUNNING,
        container_id="c",
        endpoints=(Endpoint(65000, "tcp", "10.0.0.2", 30080),),
    )
    source.state.tasks["t-web"] = Task("t-web", "web", 1, 1, TaskState.RUNNING, node_id=DB_NODE)
    assert _report(source, DB_NODE, honest) == 1
    for i in range(40):
        task_id = f"t-web-{i}"
        source.state.tasks[task_id] = Task(
            task_id, "web", i + 2, 1, TaskState.RUNNING, node_id=WORKER
        )
        ports = tuple(  # from 1 to 40,960: all below the other node's, none the same
            Endpoint(1 + i * MAX_EXPOSED_PORTS + p, "tcp", "10.0.0.3", 40_000 + p)
            for p in range(MAX_EXPOSED_PORTS)
        )
        lie = TaskObservation(task_id, TaskState.RUNNING, container_id="c", endpoints=ports)
        assert _report(source, WORKER, lie) == 1
    vips = {"web": [("10.1.0.2", "10.1.0.0/24")]}
    routes = [r for r in routes_from(source.state, observe(source).tasks, vips) if r.host]
    assert len(routes) == MAX_EXPOSED_PORTS
    assert any(r.published == 65000 for r in routes)  # the other node's one port
