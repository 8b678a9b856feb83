"""While a thread of any agent reads the state, the GIL's switch interval is short; it comes back
to what it was when the last of them ends, however their reads overlap (the interval is the
process's, and tests and simulations run several agents in one process)."""

from __future__ import annotations

import sys

from swarmlet.off_loop import THREAD_SWITCH_INTERVAL_S, gil_handed_back_quickly


def test_overlapping_reads_of_two_agents_restore_the_interval_the_process_had() -> None:
    before = sys.getswitchinterval()
    assert before != THREAD_SWITCH_INTERVAL_S
    first, second = gil_handed_back_quickly(), gil_handed_back_quickly()
    first.__enter__()
    second.__enter__()  # another agent's read begins while the first runs
    first.__exit__(None, None, None)
    assert sys.getswitchinterval() == THREAD_SWITCH_INTERVAL_S  # the second still reads
    second.__exit__(None, None, None)
    assert sys.getswitchinterval() == before
