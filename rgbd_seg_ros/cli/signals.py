"""SIGTERM as a clean stop for commands that write (``bag2dataset``).

Python's default for SIGTERM ends the process on the spot: no ``finally`` runs, so worker
processes are not stopped, journals are not folded and locks are released only by the
kernel. Within :func:`sigterm_exits` a SIGTERM raises ``SystemExit(143)`` in the main thread
instead (128 + 15, the status a shell reports for a process SIGTERM ended), so the command's
clean-up runs and the process still exits with that status. A second SIGTERM during the
clean-up ends the process at once.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

EXIT_SIGTERM = 128 + signal.SIGTERM


def _raise_exit(signum: int, frame: FrameType | None) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    raise SystemExit(EXIT_SIGTERM)


@contextmanager
def sigterm_exits() -> Iterator[None]:
    """Turn SIGTERM into ``SystemExit(143)`` while the block runs (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_exit)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
