"""The mmap threshold is fixed once at node start; a user's own setting is left alone."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from rgbd_seg_ros.core import large_blocks

_PROBE = (
    'from rgbd_seg_ros.core.large_blocks import return_large_blocks; print(return_large_blocks())'
)


def _run(env_extra: dict[str, str]) -> str:
    env = {k: v for k, v in os.environ.items() if k != 'MALLOC_MMAP_THRESHOLD_'}
    env.update(env_extra)
    out = subprocess.run(
        [sys.executable, '-c', _PROBE], env=env, capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='glibc only')
def test_the_threshold_is_set_on_glibc_and_a_user_setting_wins():
    # In child processes: the setting is process-wide and must not leak into the test run.
    assert _run({}) == str(platform.libc_ver()[0] == 'glibc')
    assert _run({'MALLOC_MMAP_THRESHOLD_': '1048576'}) == 'False'


def test_the_threshold_keeps_a_bounded_frame_on_the_heap():
    # Every per-frame buffer of a 640 x 480 frame (the cloud, 16 bytes a point, is the largest)
    # is below the threshold; a 4000 x 3000 colour frame is above it.
    assert 640 * 480 * 16 < large_blocks.LARGE_BLOCK_BYTES < 4000 * 3000 * 3
