"""Which executor runs the segmentation node (ros/runtime.py make_executor): rclpy's
EventsExecutor where this rclpy has one, the SingleThreadedExecutor otherwise or when asked,
a pool for more than one thread. Each case runs in a fresh interpreter: the executors use the
default context, which this test process does not own."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.ros

_PROBE = r"""
import json, sys
if sys.argv[1] == 'without_events':  # an rclpy from before the EventsExecutor (Humble)
    sys.modules['rclpy.experimental'] = None
import rclpy
from rgbd_seg_ros.ros.runtime import make_executor
rclpy.init()
warnings = []
kinds = {}
for kind, threads in (('auto', 1), ('events', 1), ('single', 1), ('auto', 4)):
    executor = make_executor(kind, threads, warnings.append)
    kinds[f'{kind}/{threads}'] = type(executor).__name__
    executor.shutdown()
rclpy.shutdown()
print(json.dumps({'kinds': kinds, 'warnings': warnings}))
"""


def _probe(case: str) -> dict:
    done = subprocess.run(
        [sys.executable, '-c', _PROBE, case],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_auto_and_events_take_the_events_executor_single_and_pools_keep_rclpys():
    import rclpy.experimental

    if not hasattr(rclpy.experimental, 'EventsExecutor'):
        pytest.skip('this rclpy has no EventsExecutor')
    got = _probe('installed')
    assert got['kinds'] == {
        'auto/1': 'EventsExecutor',
        'events/1': 'EventsExecutor',
        'single/1': 'SingleThreadedExecutor',
        'auto/4': 'MultiThreadedExecutor',
    }
    assert got['warnings'] == []


def test_without_an_events_executor_auto_is_quiet_and_events_warns():
    got = _probe('without_events')
    assert got['kinds'] == {
        'auto/1': 'SingleThreadedExecutor',
        'events/1': 'SingleThreadedExecutor',
        'single/1': 'SingleThreadedExecutor',
        'auto/4': 'MultiThreadedExecutor',
    }
    (warning,) = got['warnings']
    assert "executor 'events'" in warning and 'SingleThreadedExecutor' in warning
