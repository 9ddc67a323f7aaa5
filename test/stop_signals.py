"""Signals sent to node subprocesses the way a terminal and ``ros2 launch`` send them.

The first wait of every test is for the node's own handlers (its SIGTERM disposition turns
"caught" in /proc/<pid>/status once the entry point has installed them): before that the
interpreter is still starting and the kernel's default applies, which no Python code can
change. Delays after that point only choose the phase a signal lands in; the outcome asserted
is the same in every phase, so no test depends on which phase it hit.
"""

from __future__ import annotations

import re
import signal
import subprocess
import time
from collections.abc import Callable, Sequence

# What a clean stop never prints.
DIRTY = (
    'Traceback',
    'KeyboardInterrupt',
    'internal_error',
    'context is invalid',
    'RCLError',
    'failed to initialize wait set',
)


def caught_signals(pid: int) -> int:
    """The SigCgt mask of ``pid`` (bit n-1: signal n has a handler); 0 once it is gone."""
    try:
        with open(f'/proc/{pid}/status') as status:
            text = status.read()
    except (FileNotFoundError, ProcessLookupError):
        return 0
    match = re.search(r'^SigCgt:\s*([0-9a-f]+)$', text, re.MULTILINE)
    return int(match.group(1), 16) if match else 0


def wait_handlers_installed(proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    """Poll until the process handles SIGTERM itself (Python leaves it at the default)."""
    deadline = time.monotonic() + timeout
    bit = 1 << (signal.SIGTERM - 1)
    while not caught_signals(proc.pid) & bit:
        if proc.poll() is not None:
            raise AssertionError(f'process exited ({proc.returncode}) before its handlers')
        if time.monotonic() > deadline:
            raise AssertionError(f'no SIGTERM handler after {timeout:.0f} s')
        time.sleep(0.002)


def send_burst(
    proc: subprocess.Popen[bytes],
    signals: Sequence[signal.Signals],
    gaps_s: Sequence[float],
    between: Callable[[float], None] = time.sleep,
) -> None:
    """``signals[0]``, then each next one ``gaps_s[i]`` later (``between`` spends the gap, so
    a caller can keep publishing frames meanwhile); stops early once the process is gone."""
    for i, sig in enumerate(signals):
        if i:
            between(gaps_s[i - 1])
        if proc.poll() is not None:
            return
        proc.send_signal(sig)


def assert_clean_exit(node, timeout: float = 60.0) -> None:
    """Exit status 0 and none of ``DIRTY`` in the log (``node``: a NodeProcess)."""
    try:
        code = node.proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        node.kill()
        raise AssertionError(f'still running {timeout:.0f} s after the signals') from None
    log = node.log()
    assert code == 0, f'exit code {code}\n{log[-4000:]}'
    found = [word for word in DIRTY if word in log]
    assert not found, f'{found} in the log\n{log[-4000:]}'
