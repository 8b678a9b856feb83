"""security.propose_auth: the leader commits only writes authenticated by a manager, fresh and
not replayed. Pure: times and nonces are given."""

from __future__ import annotations

import dataclasses

import pytest

from swarmlet import crypto
from swarmlet.security.propose_auth import MAX_SKEW_S, NONCE_BYTES, ProposeGuard, sign
from swarmlet.wire.peer_rpc import ProposeRequest

MANAGERS = crypto.ManagerKeys(crypto.new_key())
NOW = 1_800_000_000.0


def nonce(i: int) -> bytes:
    return i.to_bytes(NONCE_BYTES, "big")


def request(i: int = 1, *, now: float = NOW, leader: str = "m1") -> ProposeRequest:
    return sign(MANAGERS, b"command", proposer="m2", leader=leader, nonce=nonce(i), now=now)


def test_a_managers_request_is_accepted_once() -> None:
    guard = ProposeGuard()
    assert guard.check(MANAGERS, request(), leader="m1", now=NOW) == ""
    assert guard.check(MANAGERS, request(), leader="m1", now=NOW + 1) == "replayed"
    assert guard.check(MANAGERS, request(2), leader="m1", now=NOW + 1) == ""


@pytest.mark.parametrize(
    "forged",
    [
        pytest.param(ProposeRequest(b"command"), id="unauthenticated"),  # what a worker can send
        pytest.param(
            sign(
                crypto.ManagerKeys(crypto.new_key()),
                b"command",
                proposer="w1",
                leader="m1",
                nonce=nonce(1),
                now=NOW,
            ),
            id="another-key",
        ),
        *(
            pytest.param(dataclasses.replace(request(), **{name: value}), id=f"changed-{name}")
            for name, value in (
                ("command", b"other command"),
                ("proposer", "w1"),
                ("leader", "m3"),
                ("nonce", nonce(9)),
                ("sent_at", NOW + 1),
                ("mac", b""),
            )
        ),
    ],
)
def test_anything_not_signed_as_it_is_by_a_manager_is_refused(forged: ProposeRequest) -> None:
    guard = ProposeGuard()
    refusal = guard.check(MANAGERS, forged, leader="m1", now=NOW)
    assert refusal == "not authenticated with the managers' key: only managers may write"
    assert guard.check(MANAGERS, request(), leader="m1", now=NOW) == ""  # nothing remembered


def test_a_request_for_another_leader_is_refused() -> None:
    refusal = ProposeGuard().check(MANAGERS, request(leader="m3"), leader="m1", now=NOW)
    assert refusal == "addressed to another leader (m3)"


@pytest.mark.parametrize(
    ("sent_at", "accepted"),
    [
        (NOW, True),
        (NOW - MAX_SKEW_S, True),
        (NOW + MAX_SKEW_S, True),
        (NOW - MAX_SKEW_S - 1, False),
        (NOW + MAX_SKEW_S + 1, False),
        (float("nan"), False),
    ],
)
def test_only_requests_within_the_clock_skew_are_accepted(sent_at: float, accepted: bool) -> None:
    refusal = ProposeGuard().check(MANAGERS, request(now=sent_at), leader="m1", now=NOW)
    assert (refusal == "") == accepted
    assert accepted or refusal.startswith("stale")


def test_a_leader_without_the_managers_key_accepts_nothing() -> None:
    refusal = ProposeGuard().check(None, request(), leader="m1", now=NOW)
    assert refusal == "this node does not hold the managers' key"


def test_a_nonce_of_the_wrong_size_is_refused() -> None:
    short = sign(MANAGERS, b"c", proposer="m2", leader="m1", nonce=b"1", now=NOW)
    assert ProposeGuard().check(MANAGERS, short, leader="m1", now=NOW).startswith("the nonce")


def test_the_memory_is_bounded_and_a_forgotten_request_is_still_refused() -> None:
    guard = ProposeGuard(max_seen=2)
    for i in range(1, 4):  # sent at NOW+1, NOW+2, NOW+3: the first one is forgotten
        assert guard.check(MANAGERS, request(i, now=NOW + i), leader="m1", now=NOW + i) == ""
    assert len(guard._seen) == 2
    assert guard.check(MANAGERS, request(1, now=NOW + 1), leader="m1", now=NOW + 4) == "replayed"
    # A request sent before the forgotten one is refused too; a fresh one is accepted.
    assert guard.check(MANAGERS, request(7, now=NOW), leader="m1", now=NOW + 4) == "replayed"
    assert guard.check(MANAGERS, request(8, now=NOW + 4), leader="m1", now=NOW + 4) == ""


def test_nonces_leave_the_memory_with_the_window_and_stay_refused() -> None:
    guard = ProposeGuard()
    assert guard.check(MANAGERS, request(1), leader="m1", now=NOW) == ""
    later = NOW + MAX_SKEW_S + 1
    assert guard.check(MANAGERS, request(2, now=later), leader="m1", now=later) == ""
    assert len(guard._seen) == 1  # the first one's time left the window
    # Even if the leader's clock stepped back, the first request stays refused.
    assert guard.check(MANAGERS, request(1), leader="m1", now=NOW) == "replayed"
