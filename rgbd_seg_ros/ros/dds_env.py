"""Environment that keeps every ROS 2 process we start on loopback.

Tests, the demo and benchmarks start real nodes over real Fast DDS. They must never send
traffic beyond this machine nor meet foreign participants, so each run gets: the LOCALHOST
discovery range, a Fast DDS profile whose transports are shared memory and 127.0.0.1 only,
a random non-zero domain id, and its own log folder. Importing this module does not import
rclpy, so the environment can be prepared before rclpy loads.
"""

from __future__ import annotations

import os
import random
from collections.abc import Mapping
from pathlib import Path

from rgbd_seg_ros.paths import config_path

# Fast DDS derives its ports from the domain id; ids above 232 overflow the port range.
MAX_DOMAIN_ID = 232


def loopback_profile() -> Path:
    """The Fast DDS XML profile restricted to SHM and 127.0.0.1 (kept in config/dds/)."""
    return config_path('dds', 'fastdds_loopback.xml')


def random_domain_id(rng: random.Random | None = None) -> int:
    """A random non-zero domain id, so parallel runs and other programs never meet."""
    return (rng or random.SystemRandom()).randint(1, MAX_DOMAIN_ID)


def loopback_environment(
    log_dir: str | os.PathLike[str],
    domain_id: int | None = None,
    base: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Return ``base`` (default: os.environ) with the loopback-only ROS settings applied."""
    env = dict(os.environ if base is None else base)
    profile = str(loopback_profile())
    log_dir = str(log_dir)
    env.update(
        {
            'ROS_AUTOMATIC_DISCOVERY_RANGE': 'LOCALHOST',
            'ROS_DOMAIN_ID': str(domain_id if domain_id is not None else random_domain_id()),
            'FASTRTPS_DEFAULT_PROFILES_FILE': profile,
            'FASTDDS_DEFAULT_PROFILES_FILE': profile,
            'RMW_IMPLEMENTATION': 'rmw_fastrtps_cpp',
            'ROS_HOME': log_dir,
            'ROS_LOG_DIR': log_dir,
            'PYTHONUNBUFFERED': '1',
        }
    )
    # ROS_LOCALHOST_ONLY is deprecated and only adds warnings next to the discovery range.
    env.pop('ROS_LOCALHOST_ONLY', None)
    env.pop('ROS_STATIC_PEERS', None)
    return env


def apply_loopback_environment(
    log_dir: str | os.PathLike[str], domain_id: int | None = None
) -> int:
    """Set the loopback settings in this process (before rclpy is imported); return the domain."""
    env = loopback_environment(log_dir, domain_id)
    Path(log_dir).mkdir(parents=True, exist_ok=True)
    os.environ.update(env)
    for key in ('ROS_LOCALHOST_ONLY', 'ROS_STATIC_PEERS'):
        os.environ.pop(key, None)
    return int(env['ROS_DOMAIN_ID'])
