"""The dashboard's view model: rates, connection states, which tasks the grid shows."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from swarmlet.dashboard.view import Connection, View, build_view, with_events

from .fixtures import EVENTS, NODES, SERVICES, STATUS, T0, TASKS, fixed_view, previous_view


def _with_proxy(connections: int, *, bytes_out: int = 0) -> dict[str, Any]:
    status = copy.deepcopy(STATUS)
    status["proxy"] = {
        "8080/tcp": {
            "service": "web",
            "connections": connections,
            "active": 2,
            "bytes_in": 0,
            "bytes_out": bytes_out,
            "errors": 0,
        }
    }
    return status


def _view(status: dict[str, Any] | None, previous: View | None, now: float, **kw: Any) -> View:
    return build_view(status, NODES, SERVICES, TASKS, [], previous, now, **kw)


def _rate(view: View, key: str = "8080/tcp") -> float | None:
    return next(p.connections_per_s for p in view.proxy if p.key == key)


def _service(view: View, name: str) -> Any:
    return next(s for s in view.services if s.name == name)


# ---------------------------------------------------------------------------- rates


def test_connection_rate_is_counter_difference_over_elapsed_time() -> None:
    first = _view(_with_proxy(100, bytes_out=1000), None, 10.0)
    second = _view(_with_proxy(130, bytes_out=4000), first, 12.0)
    assert _rate(second) == pytest.approx(15.0)
    assert second.proxy[0].bytes_per_s == pytest.approx(1500.0)
    assert _service(second, "web").connections_per_s == pytest.approx(15.0)
    assert _service(second, "web").active_connections == 2


def test_first_sample_has_no_rate() -> None:
    view = _view(_with_proxy(100), None, 10.0)
    assert _rate(view) is None
    assert _service(view, "web").connections_per_s is None


def test_counter_that_went_down_gives_unknown_rate_not_negative() -> None:
    first = _view(_with_proxy(100), None, 10.0)
    restarted = _view(_with_proxy(3), first, 12.0)
    assert _rate(restarted) is None
    then = _view(_with_proxy(9), restarted, 14.0)
    assert _rate(then) == pytest.approx(3.0)


def test_port_seen_for_the_first_time_has_no_rate() -> None:
    first = _view(_with_proxy(100), None, 10.0)
    status = _with_proxy(110)
    status["proxy"]["9000/tcp"] = dict(status["proxy"]["8080/tcp"], service="api")
    second = _view(status, first, 11.0)
    assert _rate(second, "8080/tcp") == pytest.approx(10.0)
    assert _rate(second, "9000/tcp") is None


def test_rate_after_an_unreachable_gap_spans_the_whole_gap() -> None:
    first = _view(_with_proxy(100), None, 10.0)
    gone = build_view(None, None, None, None, [], first, 12.0, error="refused")
    assert gone.proxy == first.proxy
    back = _view(_with_proxy(160), gone, 16.0)
    assert _rate(back) == pytest.approx(10.0)  # 60 connections over 6 s, not over 4 s


def test_status_without_proxy_key_gives_no_rates() -> None:
    status = copy.deepcopy(STATUS)
    del status["proxy"]
    view = _view(status, fixed_view(), T0 + 1)
    assert view.proxy == ()
    assert all(s.connections_per_s is None for s in view.services)
    assert view.connection is Connection.OK


def test_fixed_view_rates_from_previous_poll() -> None:
    view = fixed_view()
    assert _service(view, "web").connections_per_s == pytest.approx(10.0)
    assert _service(view, "api").connections_per_s == pytest.approx(0.5)
    assert _service(view, "cache").connections_per_s is None


# ---------------------------------------------------------------------------- connection


def test_all_answers_with_a_leader_is_ok() -> None:
    view = fixed_view()
    assert (view.connection, view.message, view.updated_at) == (Connection.OK, "", T0)
    assert view.cluster.leader_name == "n1"


def test_no_leader_is_stale_and_says_so() -> None:
    status = copy.deepcopy(STATUS)
    status["raft"].update(leader_id=None, role="candidate")
    view = _view(status, None, 5.0)
    assert view.connection is Connection.STALE
    assert "no leader answered" in view.message and "candidate" in view.message
    assert view.cluster.leader_name == ""


def test_stale_read_is_stale_even_with_a_leader_id() -> None:
    nodes = dict(NODES, stale=True)
    view = build_view(STATUS, nodes, SERVICES, TASKS, [], None, 5.0)
    assert view.connection is Connection.STALE


def test_unreachable_agent_keeps_last_known_state_and_says_how_old() -> None:
    before = fixed_view()
    view = build_view(None, None, None, None, EVENTS, before, T0 + 12, error="refused")
    assert view.connection is Connection.UNREACHABLE
    assert view.message == "agent unreachable, showing the state of 12 s ago: refused"
    assert (view.nodes, view.services, view.tasks, view.cluster) == (
        before.nodes,
        before.services,
        before.tasks,
        before.cluster,
    )
    assert view.updated_at == T0


def test_unreachable_from_the_start_shows_an_empty_cluster() -> None:
    view = build_view(None, None, None, None, [], None, 1.0, error="no agent answers")
    assert view.connection is Connection.UNREACHABLE
    assert view.message == "agent unreachable: no agent answers"
    assert (view.nodes, view.services, view.tasks) == ((), (), ())


def test_partial_answer_keeps_the_missing_part_and_is_stale() -> None:
    before = fixed_view()
    view = build_view(STATUS, NODES, None, None, [], before, T0 + 1, error="timed out")
    assert view.connection is Connection.STALE
    assert view.message == "partial update: timed out"
    assert view.services == before.services and view.tasks == before.tasks
    assert view.updated_at == T0


# ---------------------------------------------------------------------------- rows


def test_nodes_keep_leader_self_and_down_flags() -> None:
    rows = {n.name: n for n in fixed_view().nodes}
    assert rows["n1"].leader and rows["n1"].is_self and not rows["n1"].down
    assert rows["n3"].down and not rows["n3"].leader
    assert rows["n2"].availability == "drain"


def test_services_show_ports_update_state_and_updated_replicas() -> None:
    view = fixed_view()
    api, web = _service(view, "api"), _service(view, "web")
    assert api.paused and not api.updating and api.updated == 0  # api.2 still runs version 1
    assert api.ports == ("9000:90",)
    assert web.converging and web.ports == ("8080:80", "5353:53/udp")
    assert web.updated == 2


def test_task_grid_keeps_current_tasks_and_failed_slots_only() -> None:
    shown = {(t.service, t.slot, t.node_name, t.state) for t in fixed_view().tasks}
    assert shown == {
        ("api", 1, "n1", "running"),  # the old replica, being stopped
        ("api", 1, "n2", "starting"),  # its replacement; the failed attempt is history
        ("api", 2, "n2", "running"),
        ("cache", 0, "n1", "running"),
        ("cache", 0, "n2", "running"),
        ("cache", 0, "n3", "orphaned"),  # n3 is still a node: its slot needs attention
        ("web", 1, "n1", "running"),
        ("web", 2, "n2", "running"),
        ("web", 3, "", "pending"),  # the orphaned attempt is history
    }  # web.4 was shut down by a scale-down: not shown


def test_failed_slot_beyond_the_replica_count_is_not_shown() -> None:
    tasks = {
        "tasks": [
            dict(TASKS["tasks"][0], service="web", slot=9, desired_state="shutdown"),
        ]
    }
    view = build_view(STATUS, NODES, SERVICES, tasks, [], None, 1.0)
    assert view.tasks == ()


def test_events_keep_order_and_arrive_between_polls() -> None:
    view = build_view(STATUS, NODES, SERVICES, TASKS, EVENTS[:2], None, 1.0)
    assert [e.seq for e in view.events] == [1, 2]
    later = with_events(view, EVENTS)
    assert [e.seq for e in later.events] == list(range(1, 10))
    assert later.nodes == view.nodes and later.now == view.now


def test_malformed_results_give_defaults_not_errors() -> None:
    garbage_events: list[Any] = [{"seq": "x"}, 7]
    view = build_view(
        {"raft": "nonsense", "gossip": None, "proxy": {"1/tcp": 5}},
        {"nodes": [None, {"hostname": 3, "cpus": "x", "memory_bytes": float("inf")}]},
        {"services": "nope"},
        {"tasks": [{"slot": "1"}]},
        garbage_events,
        previous_view(),
        T0,
    )
    assert [n.name for n in view.nodes] == ["", "3"]
    assert view.nodes[1].memory_bytes == 0
    assert view.services == ()
    assert len(view.events) == 2


@pytest.mark.parametrize(
    ("task", "code"),
    [
        ({"state": "failed", "error": "task: non-zero exit (137)"}, 137),
        ({"state": "failed", "error": "exit code 1"}, 1),
        ({"state": "failed", "error": "task: unhealthy container"}, None),
        ({"state": "complete", "error": ""}, 0),
        ({"state": "running", "error": ""}, None),
        ({"state": "failed", "error": "task: non-zero exit (2)", "exit_code": 3}, 3),  # reported
        ({"state": "failed", "exit_code": True}, None),  # garbage
    ],
)
def test_exit_code_is_reported_or_read_from_the_error(
    task: dict[str, Any], code: int | None
) -> None:
    from swarmlet.dashboard.view import exit_code_of

    assert exit_code_of(task) == code
