"""A node started through NodeProcess does not outlive a harness that dies without clean-up.

The node calls ``die_with_parent()`` first thing (ros/runtime.py); here a plain child does, so
the kernel's part is checked without starting ROS.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

PARENT = """
import os, subprocess, sys, time
from rgbd_seg_ros.ros.process import PARENT_PID_VARIABLE
code = "from rgbd_seg_ros.ros.process import die_with_parent; import time; "\\
       "die_with_parent(); print('armed', flush=True); time.sleep(120)"
env = {**os.environ, PARENT_PID_VARIABLE: str(os.getpid())}
child = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE,
                         text=True)
assert child.stdout.readline().strip() == "armed"
print(child.pid, flush=True)
time.sleep(120)
"""


def _alive(pid: int) -> bool:
    try:
        state = Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != 'Z'


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='PR_SET_PDEATHSIG is Linux')
def test_child_gets_sigterm_when_its_parent_is_killed():
    parent = subprocess.Popen([sys.executable, '-c', PARENT], stdout=subprocess.PIPE, text=True)
    child_pid = None
    try:
        child_pid = int(parent.stdout.readline())
        assert _alive(child_pid)
        parent.send_signal(signal.SIGKILL)  # no clean-up code runs in the parent
        parent.wait(timeout=10)
        deadline = time.monotonic() + 10
        while _alive(child_pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(child_pid)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        if child_pid is not None and _alive(child_pid):
            os.kill(child_pid, signal.SIGKILL)


def test_without_the_variable_nothing_is_armed(monkeypatch):
    from rgbd_seg_ros.ros.process import PARENT_PID_VARIABLE, die_with_parent

    monkeypatch.delenv(PARENT_PID_VARIABLE, raising=False)
    die_with_parent()  # a node started by hand or by ros2 launch: no effect, no exit


def test_a_starter_that_already_exited_ends_the_node():
    from rgbd_seg_ros.ros.process import PARENT_PID_VARIABLE

    # In a child: arming PR_SET_PDEATHSIG in the test process itself would outlive the test.
    env = {**os.environ, PARENT_PID_VARIABLE: '999999999'}
    code = 'from rgbd_seg_ros.ros.process import die_with_parent; die_with_parent()'
    done = subprocess.run(
        [sys.executable, '-c', code],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert 'already exited' in done.stderr
