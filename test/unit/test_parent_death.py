"""A child that armed ``die_with_parent`` does not outlive a parent killed without clean-up.

Nodes arm it first thing (ros/runtime.py) from the pid NodeProcess names in the environment;
pool workers, the trainer's job and data-loader workers pass their parent's pid. Here plain
children do, so the kernel's part is checked without starting ROS.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import proc_tree
import pytest

PARENT = """
import os, subprocess, sys, time
from rgbd_seg_ros.core.parent_death import PARENT_PID_VARIABLE
how = sys.argv[1]
arm = "die_with_parent()" if how == "env" else f"die_with_parent({os.getpid()})"
code = "from rgbd_seg_ros.core.parent_death import die_with_parent; import time; "\\
       f"{arm}; print('armed', flush=True); time.sleep(120)"
env = dict(os.environ)
env.pop(PARENT_PID_VARIABLE, None)
if how == "env":
    env[PARENT_PID_VARIABLE] = str(os.getpid())
child = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE,
                         text=True)
assert child.stdout.readline().strip() == "armed"
print(child.pid, flush=True)
time.sleep(120)
"""


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='PR_SET_PDEATHSIG is Linux')
@pytest.mark.parametrize('how', ['env', 'argument'])
def test_child_gets_sigterm_when_its_parent_is_killed(how):
    """``env``: a node started by NodeProcess; ``argument``: a worker given its parent's pid."""
    parent = subprocess.Popen(
        [sys.executable, '-c', PARENT, how], stdout=subprocess.PIPE, text=True
    )
    child = None
    try:
        child_pid = int(parent.stdout.readline())
        child = next(p for p in proc_tree.descendants(parent.pid) if p.pid == child_pid)
        parent.send_signal(signal.SIGKILL)  # no clean-up code runs in the parent
        parent.wait(timeout=10)
        assert proc_tree.wait_gone([child]) == []
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        if child is not None:
            proc_tree.kill([child])


def test_without_the_variable_nothing_is_armed(monkeypatch):
    from rgbd_seg_ros.core.parent_death import PARENT_PID_VARIABLE, die_with_parent

    monkeypatch.delenv(PARENT_PID_VARIABLE, raising=False)
    assert die_with_parent() is False  # started by hand or by ros2 launch: nothing armed


def test_a_starter_that_already_exited_ends_the_node():
    from rgbd_seg_ros.core.parent_death import PARENT_PID_VARIABLE

    # In a child: arming PR_SET_PDEATHSIG in the test process itself would outlive the test.
    env = {**os.environ, PARENT_PID_VARIABLE: '999999999'}
    code = 'from rgbd_seg_ros.core.parent_death import die_with_parent; die_with_parent()'
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
