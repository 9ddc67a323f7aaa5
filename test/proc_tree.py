"""Process trees read from /proc: what a test's processes started, and whether it is gone.

A pid is identified together with its start time, so a pid the kernel reuses for another
process is never taken for the one the test saw. Waiting polls with a deadline; the deadline is
a bound on a failure, never a time the test relies on.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    start_ticks: int  # field 22 of /proc/<pid>/stat
    name: str


def _stat(pid: int) -> tuple[str, int, int, str] | None:
    """(state, ppid, start time, name) of ``pid``, or None when there is no such process."""
    try:
        text = Path(f'/proc/{pid}/stat').read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    name = text[text.index('(') + 1 : text.rindex(')')]
    fields = text[text.rindex(')') + 2 :].split()
    return fields[0], int(fields[1]), int(fields[19]), name


def descendants(pid: int) -> list[Proc]:
    """Every live process below ``pid`` (children, grandchildren, ...)."""
    children: dict[int, list[Proc]] = {}
    for entry in os.listdir('/proc'):
        if not entry.isdigit():
            continue
        stat = _stat(int(entry))
        if stat is None or stat[0] in 'ZX':
            continue
        children.setdefault(stat[1], []).append(Proc(int(entry), stat[1], stat[2], stat[3]))
    found: list[Proc] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child.pid)
    return found


def alive(proc: Proc) -> bool:
    stat = _stat(proc.pid)
    return stat is not None and stat[2] == proc.start_ticks and stat[0] not in 'ZX'


def wait_gone(procs: list[Proc], timeout: float = 60.0) -> list[Proc]:
    """Poll until none of ``procs`` lives or ``timeout`` passes; returns the survivors."""
    deadline = time.monotonic() + timeout
    while True:
        left = [p for p in procs if alive(p)]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.02)


def kill(procs: list[Proc]) -> None:
    """SIGKILL what is left of ``procs`` (clean-up after a failed test)."""
    for proc in procs:
        if alive(proc):
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)


def wait_until(predicate, timeout: float, what: str, process=None) -> None:
    """Poll ``predicate`` until true; AssertionError naming ``what`` after ``timeout``, or as
    soon as ``process`` (a Popen) has exited."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if process is not None and process.poll() is not None:
            raise AssertionError(f'process exited ({process.returncode}) before {what}')
        if time.monotonic() > deadline:
            raise AssertionError(f'timed out after {timeout:.0f} s waiting for {what}')
        time.sleep(0.005)
