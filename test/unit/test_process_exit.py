"""process_exit: a process whose daemon thread is inside torch when the main thread ends.

The failure it prevents is real and deterministic: Python's teardown unwinds a daemon thread
inside PyTorch's C++ frames and the C++ runtime aborts (status -6). Each case runs in a fresh
interpreter so the abort, when it happens, is the child's.
"""

from __future__ import annotations

import itertools
import subprocess
import sys
import textwrap
import threading

from rgbd_seg_ros.core.process_exit import wait_for_threads

# A daemon thread that stays inside torch's C++ code (matmuls release the GIL) for minutes.
BUSY_IN_TORCH = """
import threading, time, torch
started = threading.Event()
def busy():
    a = torch.randn(1500, 1500)
    started.set()
    for _ in range(100000):
        a @ a
threading.Thread(target=busy, name='model-loader', daemon=True).start()
started.wait()
time.sleep(0.3)
print('main done', flush=False)
"""


def run_child(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, '-c', textwrap.dedent(code)],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_plain_exit_with_a_daemon_thread_in_torch_aborts():
    """The hazard itself: without exit_process the interpreter's teardown aborts."""
    done = run_child(BUSY_IN_TORCH + 'raise SystemExit(0)\n')
    assert done.returncode == -6, (done.returncode, done.stderr)
    assert 'terminate called' in done.stderr


def test_exit_process_ends_with_the_code_and_keeps_what_was_written():
    code = BUSY_IN_TORCH + (
        'from rgbd_seg_ros.core.process_exit import exit_process\n'
        'raise SystemExit(exit_process(0, grace_s=0.5))\n'
    )
    done = run_child(code)
    assert done.returncode == 0, (done.returncode, done.stderr)
    assert 'main done' in done.stdout  # flushed before os._exit
    assert 'model-loader' in done.stderr and 'without interpreter teardown' in done.stderr
    assert 'terminate called' not in done.stderr


def test_exit_process_passes_a_non_zero_code_through():
    code = BUSY_IN_TORCH + (
        'from rgbd_seg_ros.core.process_exit import exit_process\n'
        'raise SystemExit(exit_process(3, grace_s=0.1))\n'
    )
    assert run_child(code).returncode == 3


def test_threads_that_end_within_the_grace_are_waited_for_and_the_exit_is_normal():
    code = """
import threading, time
from rgbd_seg_ros.core.process_exit import exit_process, wait_for_threads
release = threading.Event()
thread = threading.Thread(target=release.wait, name='short-lived', daemon=True)
thread.start()
threading.Timer(0.2, release.set).start()
assert wait_for_threads(5.0) == [], 'waited'
assert not thread.is_alive()
print('returned', exit_process(0, grace_s=0.0))  # nothing lingers: no os._exit
"""
    done = run_child(code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == 'returned 0'
    assert 'without interpreter teardown' not in done.stderr


def test_the_grace_is_shared_not_per_thread():
    stop = threading.Event()
    threads = [
        threading.Thread(target=stop.wait, name=f'stuck-{i}', daemon=True) for i in range(3)
    ]
    for thread in threads:
        thread.start()
    try:
        # the deadline (1.0) passes after the first join: the others get no time of their own
        ticks = itertools.chain([0.0, 0.0], itertools.repeat(10.0))
        still = wait_for_threads(1.0, clock=lambda: next(ticks))
        assert {'stuck-0', 'stuck-1', 'stuck-2'} <= set(still)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
