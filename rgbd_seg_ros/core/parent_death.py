"""Child processes that end when the process that started them ends.

A process killed with SIGKILL runs no clean-up, so whatever it started (a node started by the
test harness, the conversion's pool workers, the trainer's job and that job's data-loader
workers) would keep running, and keep writing, with nobody waiting for it. Linux's
``PR_SET_PDEATHSIG`` makes the kernel send a signal to a child when its parent goes;
:func:`die_with_parent` arms it from inside the child, which is safe in a threaded starter
(a ``preexec_fn`` is not).

Two details of the kernel rule matter to callers:

* the "parent" is the *thread* that started the child: start long-lived children from a thread
  that lives as long as the process (the main thread, or a pool thread that is never retired);
* a parent that died before the child armed the signal sends nothing, so the child compares
  its parent with the pid the starter gave it and exits at once when they differ.

Standard library only: it sits in ``core`` so every layer may use it.
"""

from __future__ import annotations

import os
import signal
import sys

#: The starter of a node names itself here (``NodeProcess`` does); nodes read it at start.
PARENT_PID_VARIABLE = 'RGBD_SEG_PARENT_PID'
_PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int | None = None, sig: int = signal.SIGTERM) -> bool:
    """Arrange for ``sig`` when the parent ``parent_pid`` exits; returns True when armed.

    Without ``parent_pid`` the pid comes from ``RGBD_SEG_PARENT_PID``; when neither is set
    (a node started by hand or by ``ros2 launch``) nothing is armed. Raises SystemExit when
    the parent has already exited. Does nothing outside Linux.
    """
    if parent_pid is None:
        named = os.environ.get(PARENT_PID_VARIABLE)
        if not named:
            return False
        parent_pid = int(named)
    if not sys.platform.startswith('linux'):
        return False
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(sig))
    except (OSError, AttributeError):  # pragma: no cover - no prctl in this libc
        return False
    if os.getppid() != parent_pid:
        raise SystemExit(f'the process that started this one ({parent_pid}) has already exited')
    return True
