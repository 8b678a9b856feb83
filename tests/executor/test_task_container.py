"""swarmlet.executor.task_container: the container that runs a task, and what the container's
outcome means for the task."""

from __future__ import annotations

import pytest

from swarmlet.errors import RuntimeAdapterError, SecretsUnavailableError
from swarmlet.executor.labels import LABEL_CLUSTER, LABEL_NODE, LABEL_SLOT, LABEL_TASK
from swarmlet.executor.runtime_types import ContainerInfo, MountSpec, PortBinding, UlimitSpec
from swarmlet.executor.task_container import (
    container_spec,
    exit_state,
    start_error,
    task_endpoints,
)
from swarmlet.state.model import (
    Mount,
    PortConfig,
    Service,
    ServiceSpec,
    Task,
    TaskState,
    Ulimit,
)
from swarmlet.state.observed import MAX_EXPOSED_PORTS, Endpoint


@pytest.mark.parametrize(
    ("exc", "message"),
    [
        (KeyError(("db", False)), "missing secret db"),  # `secretfiles.materialize`
        (KeyError(("settings", True)), "missing config settings"),
        (KeyError("other"), "'other'"),
        (RuntimeAdapterError("no such image"), "no such image"),
        (SecretsUnavailableError("m1 refused: no task t9"), "m1 refused: no task t9"),
    ],
)
def test_a_failed_start_says_what_is_missing(exc: Exception, message: str) -> None:
    assert start_error(exc) == message


@pytest.mark.parametrize(
    ("exit_code", "state", "error"),
    [
        (0, TaskState.COMPLETE, ""),
        (1, TaskState.FAILED, "task: non-zero exit (1)"),
        (None, TaskState.FAILED, "task: non-zero exit (None)"),
    ],
)
def test_only_exit_code_zero_completes_a_task(
    exit_code: int | None, state: TaskState, error: str
) -> None:
    assert exit_state(exit_code) == (state, error)


def _service(spec: ServiceSpec) -> Service:
    return Service(id="s1", spec=spec)


def test_container_spec_names_and_labels_the_container_after_its_task() -> None:
    service = _service(
        ServiceSpec(name="web", image="img:1", container_labels={LABEL_TASK: "forged", "team": "a"})
    )
    spec = container_spec(
        service,
        Task(id="t1", service_id="s1", slot=2, spec_version=1, node_id="n1"),
        cluster_id="c1",
        node_id="n1",
        host_ip="127.0.0.2",
    )
    assert spec.name == "web.2.t1"
    assert spec.labels[LABEL_TASK] == "t1"  # ours win over the user's
    assert spec.labels["team"] == "a"
    assert (spec.labels[LABEL_CLUSTER], spec.labels[LABEL_NODE], spec.labels[LABEL_SLOT]) == (
        "c1",
        "n1",
        "2",
    )
    global_task = Task(id="t2", service_id="s1", slot=0, spec_version=1, node_id="n1")
    global_spec = container_spec(service, global_task, cluster_id="c1", node_id="n1", host_ip="")
    assert global_spec.name == "web.n1.t2"  # a global task's slot is its node


def test_container_spec_publishes_ports_once_binds_files_and_lets_user_hosts_win() -> None:
    service = _service(
        ServiceSpec(
            name="web",
            image="img:1",
            ports=(PortConfig(published=8080, target=80),),
            mounts=(Mount(type="volume", target="/data", source="data"),),
            extra_hosts=("db:10.0.0.9",),
        )
    )
    spec = container_spec(
        service,
        Task(id="t1", service_id="s1", slot=1, spec_version=1, node_id="n1"),
        cluster_id="c1",
        node_id="n1",
        host_ip="127.0.0.2",
        files=(("/var/lib/x/db", "/run/secrets/db"),),
        networks=("net-a", "net-b"),
        service_hosts={"db": "10.9.0.2", "api": "10.9.0.3"},
        exposed=((80, "tcp"), (53, "udp")),
    )
    assert spec.ports == (PortBinding(80), PortBinding(53, "udp"))
    assert spec.host_ip == "127.0.0.2"

    assert spec.mounts == (
        MountSpec(target="/data", source="data"),
        MountSpec(target="/run/secrets/db", source="/var/lib/x/db", type="bind", read_only=True),
    )
    assert spec.extra_hosts == {"db": "10.0.0.9", "api": "10.9.0.3"}
    assert spec.networks == ("net-a", "net-b")


def test_an_image_exposing_more_ports_than_a_status_may_hold_publishes_the_first() -> None:
    """The leader cuts a status to `MAX_EXPOSED_PORTS` endpoints besides the service's ports:
    what an image exposes beyond them is not published (it would not be routed)."""
    service = Service(
        id="s1", spec=ServiceSpec(name="rtp", image="x", ports=(PortConfig(8080, 80),))
    )
    exposed = tuple((p, "udp") for p in range(10000, 12001))
    spec = container_spec(
        service,
        Task(id="t1", service_id="s1", slot=1, spec_version=1, node_id="n1"),
        cluster_id="c1",
        node_id="n1",
        host_ip="127.0.0.2",
        networks=("net-a",),
        exposed=exposed,
    )
    first = [PortBinding(p, "udp") for p in range(10000, 10000 + MAX_EXPOSED_PORTS)]
    assert spec.ports == (PortBinding(80), *first)


def test_task_endpoints_list_each_published_port_on_the_node_address() -> None:
    info = ContainerInfo(
        id="c",
        name="web.1.t1",
        labels={},
        state="running",
        exit_code=None,
        health=None,
        host_ports={(80, "tcp"): 49153, (53, "udp"): 40000},
        started_at="",
        finished_at="",
        error="",
    )
    assert task_endpoints(info, "127.0.0.2") == (
        Endpoint(target=53, protocol="udp", host="127.0.0.2", port=40000),
        Endpoint(target=80, protocol="tcp", host="127.0.0.2", port=49153),
    )


def test_a_host_mode_port_is_published_at_its_number_on_the_publish_address() -> None:
    """As Swarm does: the task's node, at the published port, not through the mesh."""
    service = _service(
        ServiceSpec(
            name="web",
            image="img:1",
            ports=(
                PortConfig(9090, 80, mode="host"),
                PortConfig(0, 81, "udp", mode="host"),  # Docker picks the host port
                PortConfig(8080, 8080),
            ),
        )
    )
    task = Task(id="t1", service_id="s1", slot=1, spec_version=1, node_id="n1")
    spec = container_spec(
        service, task, cluster_id="c1", node_id="n1", host_ip="10.0.0.2", publish_ip="0.0.0.0"
    )
    assert spec.ports == (
        PortBinding(8080),  # the mesh's, on the advertise address
        PortBinding(80, host_port=9090, host_ip="0.0.0.0"),
        PortBinding(81, "udp", host_ip="0.0.0.0"),
    )


def test_the_container_settings_of_the_spec_reach_the_container() -> None:
    service = _service(
        ServiceSpec(
            name="web",
            image="img:1",
            ulimits=(Ulimit("nofile", 1024, 2048), Ulimit("nproc", -1, -1)),
            log_driver="local",
            log_options={"max-size": "10m"},
            dns_servers=("10.0.0.53",),
            dns_search=("example.com",),
            dns_options=("ndots:2",),
            read_only=True,
            tty=True,
            pids_limit=100,
        )
    )
    task = Task(id="t1", service_id="s1", slot=1, spec_version=1, node_id="n1")
    spec = container_spec(service, task, cluster_id="c1", node_id="n1", host_ip="10.0.0.2")
    assert spec.ulimits == (UlimitSpec("nofile", 1024, 2048), UlimitSpec("nproc", -1, -1))
    assert (spec.log_driver, spec.log_options) == ("local", {"max-size": "10m"})
    assert (spec.dns, spec.dns_search, spec.dns_options) == (
        ("10.0.0.53",),
        ("example.com",),
        ("ndots:2",),
    )
    assert (spec.read_only, spec.tty, spec.pids_limit) == (True, True, 100)


def test_unset_container_settings_leave_dockers_defaults() -> None:
    # "" driver: the node's default driver, still given the options; 0 pids: no limit
    service = _service(ServiceSpec(name="web", image="img:1", log_options={"max-size": "1m"}))
    task = Task(id="t1", service_id="s1", slot=1, spec_version=1, node_id="n1")
    spec = container_spec(service, task, cluster_id="c1", node_id="n1", host_ip="10.0.0.2")
    assert (spec.log_driver, spec.log_options) == (None, {"max-size": "1m"})
    assert (spec.ulimits, spec.dns, spec.dns_search, spec.dns_options) == ((), (), (), ())
    assert (spec.read_only, spec.tty, spec.pids_limit) == (False, False, None)
