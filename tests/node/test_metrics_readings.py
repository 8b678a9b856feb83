"""The families of issue #18 that read timings and failures (Raft proposals, gossip bytes, task
starts, Docker calls, the leader's passes): first how the collector exposes known readings
(fakes from test_metrics.py), then that the real parts record them (a Raft driver on real
storage, the Docker runtime against the real engine)."""

from __future__ import annotations

import contextlib
import math
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import pytest
import trio
import trio.testing

from swarmlet.errors import NotLeaderError, RuntimeAdapterError, SecretsUnavailableError
from swarmlet.executor.docker_runtime import DOCKER_OPERATIONS, open_docker_runtime, operation_kind
from swarmlet.executor.driver import START_FAILURE_REASONS, start_failure_reason
from swarmlet.executor.runtime_types import ContainerEvent, DockerError
from swarmlet.raft.driver import PROPOSAL_OUTCOMES
from swarmlet.raft.messages import Role
from swarmlet.state.model import TaskState
from swarmlet.wire.histogram import PROPOSAL_BUCKETS_S
from tests.executor.test_secretfiles import FakeRuntime, Harness, _settle, _state, _task
from tests.node.test_metrics import (
    FakeLeaderDuties,
    a_busy_agent,
    collect,
    histogram,
    samples,
    value,
)
from tests.raft.test_driver import Journal, _driver, _lead, _seeded

TIMEOUT_S = 30


def family_type(name: str) -> str:
    agent = a_busy_agent()
    return next(f.type for f in collect(agent) if f.name == name)


# ---------------------------------------------------------------------------- Raft


def test_proposals_by_outcome_and_their_latency_as_a_histogram() -> None:
    agent = a_busy_agent()
    assert family_type("swarmlet_raft_proposals") == "counter"
    assert family_type("swarmlet_raft_proposal_duration_seconds") == "histogram"
    assert value(agent, "swarmlet_raft_proposals_total", outcome="committed") == 4
    assert value(agent, "swarmlet_raft_proposals_total", outcome="not_leader") == 1
    assert value(agent, "swarmlet_raft_proposals_total", outcome="lost") == 0
    name = "swarmlet_raft_proposal_duration_seconds"
    # Observed: 0.4 ms, 1 ms (on the first bound: counted in it), 3 ms, 20 s (above them all).
    assert value(agent, f"{name}_bucket", le="0.001") == 2
    assert value(agent, f"{name}_bucket", le="0.0025") == 2
    assert value(agent, f"{name}_bucket", le="0.005") == 3
    assert value(agent, f"{name}_bucket", le="10.0") == 3
    assert value(agent, f"{name}_bucket", le="+Inf") == 4
    assert value(agent, f"{name}_count") == 4
    assert value(agent, f"{name}_sum") == pytest.approx(20.0044)
    assert value(agent, "swarmlet_raft_leader_changes_seen_total") == 2


def test_every_proposal_bucket_is_exposed_even_when_empty() -> None:
    agent = a_busy_agent()
    agent.raft.proposal_latency = histogram(PROPOSAL_BUCKETS_S)
    name = "swarmlet_raft_proposal_duration_seconds_bucket"
    les = {dict(labels)["le"] for n, labels in samples(agent) if n == name}
    assert len(les) == len(PROPOSAL_BUCKETS_S) + 1
    assert value(agent, name, le="+Inf") == 0


async def test_a_real_driver_counts_its_proposals_and_times_the_committed_ones(
    tmp_path: Path,
) -> None:
    driver = _driver(_seeded(tmp_path), Journal())
    assert set(driver.proposal_outcomes) == set(PROPOSAL_OUTCOMES)
    with pytest.raises(NotLeaderError):  # not yet elected
        await driver.propose(b"early")
    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            await nursery.start(driver.run)
            await _lead(driver)
            await driver.propose(b"a")
            await driver.propose(b"b")
            with trio.CancelScope() as scope:
                scope.cancel()  # the caller gives up at once; its entry is still proposed
                await driver.propose(b"c")
            nursery.cancel_scope.cancel()
    assert driver.proposal_outcomes == {
        "committed": 2,
        "not_leader": 1,
        "lost": 0,
        "abandoned": 1,
    }
    latency = driver.proposal_latency
    assert latency.count == 2
    assert 0 < latency.sum < math.inf
    # The lone voter saw one leader: itself.
    assert driver.soft_state.role is Role.LEADER
    assert driver.leader_changes_seen == 1


# ---------------------------------------------------------------------------- gossip


def test_gossip_bytes_in_and_out() -> None:
    agent = a_busy_agent()
    assert family_type("swarmlet_gossip_received_bytes") == "counter"
    assert value(agent, "swarmlet_gossip_received_bytes_total") == 12000
    assert value(agent, "swarmlet_gossip_sent_bytes_total") == 11000
    agent.counters.clear()  # nothing sent yet: named counters read 0, they are not missing
    assert value(agent, "swarmlet_gossip_sent_bytes_total") == 0
    assert value(agent, "swarmlet_gossip_datagrams_sent_total") == 0


# ---------------------------------------------------------------------------- executor


def test_task_starts_and_failures_by_reason() -> None:
    agent = a_busy_agent()
    assert value(agent, "swarmlet_executor_task_starts_total") == 3
    assert value(agent, "swarmlet_executor_task_start_failures_total", reason="pull") == 1
    assert value(agent, "swarmlet_executor_task_failures_total", reason="exit_code") == 1
    assert family_type("swarmlet_executor_task_start_failures") == "counter"


def test_docker_call_latency_per_operation() -> None:
    agent = a_busy_agent()
    name = "swarmlet_executor_docker_call_duration_seconds"
    assert family_type(name) == "histogram"
    assert value(agent, f"{name}_count", operation="run") == 2
    assert value(agent, f"{name}_sum", operation="run") == pytest.approx(0.5)
    assert value(agent, f"{name}_bucket", operation="run", le="0.25") == 1
    assert value(agent, f"{name}_bucket", operation="pull", le="60.0") == 0
    assert value(agent, f"{name}_bucket", operation="pull", le="+Inf") == 1
    assert value(agent, "swarmlet_executor_docker_call_failures_total", operation="pull") == 1


def test_executor_figures_vanish_while_docker_does_not_answer() -> None:
    agent = a_busy_agent()
    agent.executor = None
    names = {name for name, _ in samples(agent)}
    assert not {n for n in names if "task_start" in n or "docker_call" in n}
    assert "swarmlet_executor_up" in names


@pytest.mark.parametrize(
    ("operation", "kind"),
    [
        ("ping", "ping"),
        ("run web.1.abc", "run"),
        ("pull registry:5000/web:1@sha256:00", "pull"),
        ("image inspect busybox:1", "image_inspect"),
        ("network create swarmlet-x", "network_create"),
        ("network ls", "network_ls"),
        ("volume rm data", "volume_rm"),
        ("stop 0123456789ab", "stop"),
        ("something new", "other"),
        ("image", "other"),
    ],
)
def test_operation_kinds_are_a_closed_set(operation: str, kind: str) -> None:
    assert operation_kind(operation) == kind
    assert kind in (*DOCKER_OPERATIONS, "other")


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (DockerError("pull web:1", None, "pull access denied"), "pull"),
        (DockerError("run web.1", 500, "port is already allocated"), "run"),
        (DockerError("network create n", 409, "conflict"), "network_create"),
        (SecretsUnavailableError("no manager answered"), "secrets"),
        (KeyError(("db_password", False)), "secrets"),
        (OSError(28, "No space left on device"), "files"),
        (RuntimeAdapterError("something else"), "runtime"),
    ],
)
def test_start_failure_reasons(exc: Exception, reason: str) -> None:
    assert start_failure_reason(exc) == reason
    assert reason in START_FAILURE_REASONS


class UnreachableRegistry(FakeRuntime):
    async def ensure_image(self, image: str) -> None:
        raise DockerError(f"pull {image}", None, "pull access denied for nginx")


class EngineEvents(FakeRuntime):
    """A fake engine whose events the test sends."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.send, self._receive = trio.open_memory_channel[ContainerEvent](10)

    @contextlib.asynccontextmanager
    async def events(  # type: ignore[override]
        self, labels: Mapping[str, str]
    ) -> AsyncIterator[trio.MemoryReceiveChannel[ContainerEvent]]:
        yield self._receive


def _event(task_id: str, action: str, exit_code: int | None = None) -> ContainerEvent:
    return ContainerEvent(action, f"c-{task_id}", {"swarmlet.task": task_id}, exit_code, 0)


async def test_the_executor_counts_its_starts_and_the_step_that_failed(
    secrets_root: Path, autojump_clock: trio.testing.MockClock
) -> None:
    harness = Harness(secrets_root, UnreachableRegistry(secrets_root), _state(_task("t1")))
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(harness.executor.run)
            await _settle()
            nursery.cancel_scope.cancel()
    assert harness.observations["t1"].state is TaskState.REJECTED
    assert harness.executor.task_starts == 1
    assert dict(harness.executor.start_failures) == {"pull": 1}
    assert not harness.executor.task_failures


async def test_a_started_task_that_fails_is_counted_once_by_reason(
    secrets_root: Path, autojump_clock: trio.testing.MockClock
) -> None:
    runtime = EngineEvents(secrets_root)
    harness = Harness(secrets_root, runtime, _state(_task("t1"), _task("t2")))
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(harness.executor.run)
            await _settle()
            assert harness.executor.task_starts == 2
            await runtime.send.send(_event("t1", "die", exit_code=3))
            await runtime.send.send(_event("t1", "die", exit_code=3))  # replayed: not news
            await runtime.send.send(_event("t2", "health_status: unhealthy"))
            await _settle()
            nursery.cancel_scope.cancel()
    assert harness.observations["t1"].state is TaskState.FAILED
    assert dict(harness.executor.task_failures) == {"exit_code": 1, "unhealthy": 1}
    assert not harness.executor.start_failures


@pytest.mark.docker
async def test_the_real_runtime_times_each_call_and_counts_refusals() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with open_docker_runtime() as runtime:
            assert runtime.call_latency["ping"].count == 1  # opening pings the engine
            assert await runtime.inspect("swarmlet-test-no-such-container") is None
            with pytest.raises(DockerError):
                await runtime.stop("swarmlet-test-no-such-container", 1.0)
    assert runtime.call_latency["inspect"].count == 1
    assert runtime.call_latency["stop"].count == 1  # refused calls are timed too
    assert 0 < runtime.call_latency["inspect"].sum < TIMEOUT_S
    # A missing container is an answer for inspect, a refusal for stop.
    assert dict(runtime.call_failures) == {"stop": 1}


# ---------------------------------------------------------------------------- leader


def test_reconcile_passes_are_read_when_the_duties_keep_them() -> None:
    agent = a_busy_agent()
    assert value(agent, "swarmlet_leader_reconcile_passes_total") == 17
    assert value(agent, "swarmlet_leader_reconcile_cpu_seconds_total") == 0.25
    agent.leader = FakeLeaderDuties()  # duties from before the pass counters
    names = {name for name, _ in samples(agent)}
    assert not {n for n in names if "reconcile" in n}
    assert "swarmlet_leader_services" in names  # the rest is unaffected


def test_autoscale_decisions_by_direction_when_the_duties_keep_them() -> None:
    agent = a_busy_agent()
    names = {name for name, _ in samples(agent)}
    assert "swarmlet_leader_autoscale_decisions_total" not in names
    agent.leader = FakeLeaderDuties(autoscale_decisions={"up": 3, "down": 1})
    name = "swarmlet_leader_autoscale_decisions_total"
    assert value(agent, name, direction="up") == 3
    assert value(agent, name, direction="down") == 1


def test_a_leader_counter_that_is_not_a_number_is_a_bug_of_ours() -> None:
    agent = a_busy_agent()
    agent.leader = FakeLeaderDuties(passes="17")
    with pytest.raises(TypeError, match="expected a number"):
        collect(agent)
