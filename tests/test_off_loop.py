"""While a thread of any agent computes, the GIL's switch interval is short and the cyclic
collector paused; both come back to what they were when the last of them ends, however their
work overlaps (both are the process's, and tests and simulations run several agents in one
process)."""

from __future__ import annotations

import gc
import sys

from swarmlet.off_loop import THREAD_SWITCH_INTERVAL_S, gil_handed_back_quickly


def test_overlapping_reads_of_two_agents_restore_the_interval_the_process_had() -> None:
    before = sys.getswitchinterval()
    assert before != THREAD_SWITCH_INTERVAL_S
    assert gc.isenabled()
    first, second = gil_handed_back_quickly(), gil_handed_back_quickly()
    first.__enter__()
    second.__enter__()  # another agent's read begins while the first runs
    first.__exit__(None, None, None)
    assert sys.getswitchinterval() == THREAD_SWITCH_INTERVAL_S  # the second still reads
    assert not gc.isenabled()
    second.__exit__(None, None, None)
    assert sys.getswitchinterval() == before
    assert gc.isenabled()
