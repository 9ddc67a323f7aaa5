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


_CHURN = """
import resource, sys
from rgbd_seg_ros.core.large_blocks import return_large_blocks
return_large_blocks()
blocks = [bytearray(2 << 20) for _ in range(3)]  # a frame's buffers, 6 MB, touched
del blocks
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(40):
    blocks = [bytearray(2 << 20) for _ in range(3)]
    del blocks
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(platform.libc_ver()[0] != 'glibc', reason='glibc only')
def test_a_frames_buffers_are_reused_not_given_back_and_faulted_in_again():
    """Each frame allocates and frees the same few megabytes: with the trim threshold at its
    128 KB default glibc gives them back every time and the next frame faults all of them in
    again (1536 faults a frame here); kept, they cost nothing after the first frame."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ('MALLOC_MMAP_THRESHOLD_', 'MALLOC_TRIM_THRESHOLD_')
    }
    out = subprocess.run(
        [sys.executable, '-c', _CHURN], env=env, capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stderr
    faults_per_frame = int(out.stdout) / 40
    assert faults_per_frame < 100, faults_per_frame
    given_back = subprocess.run(
        [sys.executable, '-c', _CHURN],
        env={**env, 'MALLOC_TRIM_THRESHOLD_': str(128 << 10)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert int(given_back.stdout) / 40 > 1000  # the default's cost, so the check can fail
