"""Ending a node process whose abandoned threads may still be inside native code.

The segmentation node abandons work by design when it stops: a model load that outlives its
wait, or a forward still running when the worker's join gives up, is left on a daemon thread.
Python's interpreter teardown then stops such a thread the moment it next asks for the GIL, by
unwinding it from inside whatever native frames it is in. PyTorch's C++ frames do not allow
that unwinding and the C++ runtime aborts the process ("terminate called without an active
exception", status -6 / 134), so a Ctrl-C during a model load ends in SIGABRT instead of 0.

:func:`exit_process` waits a bounded time for those threads to end on their own, and if any is
still running it ends the process without interpreter teardown (``os._exit``) after flushing
what the process has written. Nothing is lost by skipping teardown at that point: the node has
already been destroyed and the ROS context shut down, and the abandoned threads' results would
be dropped anyway.

Standard library only (it sits in ``core``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
from collections.abc import Callable

# How long the threads still running after the node stopped get to end on their own.
LINGER_GRACE_S = 2.0


def lingering_threads() -> list[threading.Thread]:
    """Threads other than the main one that are still alive."""
    main = threading.main_thread()
    return [t for t in threading.enumerate() if t is not main and t.is_alive()]


def wait_for_threads(grace_s: float, clock: Callable[[], float] = time.monotonic) -> list[str]:
    """Join the lingering threads within ``grace_s`` seconds in all; return the names of
    those still running after it."""
    deadline = clock() + grace_s
    for thread in lingering_threads():
        thread.join(timeout=max(0.0, deadline - clock()))
    return [t.name for t in lingering_threads()]


def exit_process(code: int, grace_s: float = LINGER_GRACE_S) -> int:
    """Return ``code`` for a normal exit when no thread lingers; otherwise flush and end the
    process now with ``code``, skipping the teardown that would abort it (module docstring)."""
    still = wait_for_threads(grace_s)
    if not still:
        return code
    print(
        f'exiting without interpreter teardown: thread(s) {", ".join(still)} still running '
        f'{grace_s:g} s after the node stopped (abandoned work; their results are dropped)',
        file=sys.stderr,
    )
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe: nothing more to say
            stream.flush()
    os._exit(code)
