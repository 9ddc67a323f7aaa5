"""How many CPU threads torch may use, chosen for a process that shares the machine.

torch's intra-op pool defaults to one thread per core and its threads meet at a barrier after
every op, so a pool as large as the machine stalls whenever any other thread (the DDS receive
threads, the camera driver, a subscriber) holds a core: on a 2-core machine a forward that
takes 43 ms on one thread was measured at 420 ms on two with another process busy. Leaving one
core free keeps the node's latency steady at some cost in peak throughput.
"""

from __future__ import annotations

import os

import torch


def available_cores() -> int:
    """Cores this process may run on (its affinity mask, not the machine's total)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def auto_threads(cores: int | None = None) -> int:
    """One fewer than the usable cores, at least one."""
    return max(1, (cores if cores is not None else available_cores()) - 1)


def configure_cpu_threads(requested: int) -> int:
    """Apply ``requested`` intra-op threads (0: ``auto_threads()``); returns the count set."""
    if requested < 0:
        raise ValueError(f'thread count must be >= 0, got {requested}')
    count = requested or auto_threads()
    torch.set_num_threads(count)
    return count
