"""Test-session setup shared by every test.

The loopback-only ROS environment is applied at import time, before any test module can
import rclpy, so even in-process participants never leave 127.0.0.1/shared memory and never
meet another run (random non-zero ROS_DOMAIN_ID per session).
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from rgbd_seg_ros.ros.dds_env import apply_loopback_environment

_SESSION_DIR = Path(tempfile.mkdtemp(prefix='rgbd_seg_test_'))
DOMAIN_ID = apply_loopback_environment(_SESSION_DIR / 'ros_log')

from harness import launch_node, ros_peer  # noqa: E402, F401  (fixtures)


def pytest_report_header(config: pytest.Config) -> list[str]:
    return [f'ROS_DOMAIN_ID={DOMAIN_ID} (loopback only), ROS logs in {_SESSION_DIR}']


@pytest.fixture(scope='session')
def session_dir() -> Path:
    """Per-session scratch folder (ROS logs, shared fixtures)."""
    return _SESSION_DIR


@pytest.fixture
def ros_env() -> dict[str, str]:
    """Environment for node subprocesses: ours, with the loopback ROS settings."""
    return dict(os.environ)
