"""Host resources and load, read with psutil (the only module that imports it).

psutil calls are quick but blocking (they read /proc), so the async functions run them in a
worker thread.
"""

from __future__ import annotations

from dataclasses import dataclass

import psutil
import trio


@dataclass(frozen=True, slots=True)
class HostInfo:
    nano_cpus: int  # capacity: logical CPUs * 1e9
    memory_bytes: int  # capacity: total RAM
    cpu_percent: float  # load since the previous reading, percent of all cores
    memory_used_bytes: int


def read_host_info() -> HostInfo:
    vm = psutil.virtual_memory()
    return HostInfo(
        nano_cpus=(psutil.cpu_count() or 1) * 1_000_000_000,
        memory_bytes=int(vm.total),
        cpu_percent=float(psutil.cpu_percent(interval=None)),
        memory_used_bytes=int(vm.total - vm.available),
    )


async def host_info() -> HostInfo:
    return await trio.to_thread.run_sync(read_host_info)
