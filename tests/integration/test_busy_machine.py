"""The opt-in busy machine of the integration tests (`conftest.busy_machine`): what
`SWARMLET_TEST_UNDER_LOAD` accepts, and that the processes it asks for really spin."""

from __future__ import annotations

import os
import time

import psutil
import pytest

from tests.integration.conftest import LOAD_SWITCH, load_processes


@pytest.mark.parametrize(("value", "count"), [("", 0), ("0", 0), ("2", 2), ("64", 64)])
def test_the_switch_gives_a_number_of_processes(value: str, count: int) -> None:
    assert load_processes(value) == count


@pytest.mark.parametrize("value", ["yes", "-1", "1.5", "65", " 2", "\u00b2"])
def test_anything_else_is_refused_naming_the_switch(value: str) -> None:
    with pytest.raises(ValueError, match=LOAD_SWITCH):
        load_processes(value)


def test_the_busy_processes_run_while_the_tests_do(busy_machine: int) -> None:
    assert busy_machine == load_processes(os.environ.get(LOAD_SWITCH, ""))
    spinning = [
        p for p in psutil.Process().children() if p.cmdline()[-2:] == ["-c", "while True: pass"]
    ]
    assert len(spinning) == busy_machine
    for p in spinning:
        p.cpu_percent()  # starts the measurement
    time.sleep(0.5)
    # Each spins (a share of a core at least, however many share the machine's cores).
    assert all(
        p.cpu_percent() > 100 / (2 * max(os.cpu_count() or 1, busy_machine)) for p in spinning
    )
