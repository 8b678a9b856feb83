"""The generic resources a task was given reach its container as swarmkit puts them there:
`DOCKER_RESOURCE_<KIND>` = the ids of a named kind, the count of a discrete one."""

from __future__ import annotations

from swarmlet.executor.task_container import container_spec
from swarmlet.state.model import GenericResource, NamedResource, Service, ServiceSpec, Task


def _env(spec: ServiceSpec, task: Task) -> dict[str, str]:
    made = container_spec(
        Service(id="s1", spec=spec), task, cluster_id="c1", node_id="n1", host_ip=""
    )
    return dict(made.env)


def test_the_container_gets_its_ids_and_counts_in_dockers_variables() -> None:
    spec = ServiceSpec(
        name="train",
        image="img:1",
        env={"DOCKER_RESOURCE_GPU": "forged", "MODE": "x"},
        generic_resources=(GenericResource("gpu", 2), GenericResource("ssd", 1)),
    )
    task = Task(
        id="t1",
        service_id="s1",
        slot=1,
        spec_version=1,
        node_id="n1",
        assigned_resources=(NamedResource("gpu", "g2"), NamedResource("gpu", "g3")),
    )
    assert _env(spec, task) == {
        "MODE": "x",
        "DOCKER_RESOURCE_GPU": "g2,g3",  # the scheduler's, not the spec's: they win
        "DOCKER_RESOURCE_SSD": "1",
    }


def test_a_task_without_generic_resources_gets_no_variable() -> None:
    spec = ServiceSpec(name="web", image="img:1", env={"A": "1"})
    task = Task(id="t1", service_id="s1", slot=1, spec_version=1, node_id="n1")
    assert _env(spec, task) == {"A": "1"}
