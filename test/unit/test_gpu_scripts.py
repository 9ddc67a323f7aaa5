"""The GPU check's scripts, on a machine without CUDA: what they refuse, and the wrapper that runs
them in a GPU image's own python (a venv itself, whose packages the made env must see)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run_script(
    name: str, *args: str, env=None, timeout: float = 60
) -> subprocess.CompletedProcess:
    """``bash bench/NAME ARGS...``, its output captured as text."""
    return subprocess.run(
        ['bash', str(ROOT / 'bench' / name), *args],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


def test_gpu_check_stops_at_once_without_cuda(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip('this machine has CUDA: the script would run the whole check')
    env = {**os.environ, 'GPU_CHECK_RUN': str(ROOT / 'run')}
    done = run_script('gpu_check.sh', str(tmp_path / 'out'), env=env, timeout=300)
    assert done.returncode == 2
    assert 'CUDA is not available' in done.stderr
    # Nothing ran: only the log of the check itself (the environment's start) is there.
    assert [p.name for p in (tmp_path / 'out').iterdir()] == ['setup.log']


def test_gpu_check_refuses_an_unknown_step_before_anything_runs(tmp_path):
    done = run_script('gpu_check.sh', str(tmp_path / 'out'), 'no_such_step')
    assert done.returncode == 64
    assert "unknown step 'no_such_step'" in done.stderr
    assert not (tmp_path / 'out').exists()


def test_a_named_only_step_runs_when_named_and_not_by_default(tmp_path):
    """Step selection, with a wrapper that says CUDA is there and prints what it would run
    (the real steps need a GPU): node_gpu_threads only when named, each of its two runs."""
    wrapper = tmp_path / 'wrapper.sh'
    wrapper.write_text('#!/bin/bash\necho "would run: $*"\n')
    wrapper.chmod(0o755)
    env = {**os.environ, 'GPU_CHECK_RUN': str(wrapper)}
    named = run_script('gpu_check.sh', str(tmp_path / 'named'), 'node_gpu_threads', env=env)
    assert named.returncode == 0, named.stderr
    for threads in (1, 2):
        assert f'--cpu-threads {threads} --seconds 20' in named.stdout
    assert '== node_gpu (' not in named.stdout and 'engine_check' not in named.stdout
    default = run_script('gpu_check.sh', str(tmp_path / 'default'), env=env)
    assert default.returncode == 0, default.stderr
    assert '== node_gpu (' in default.stdout and '--cpu-threads' not in default.stdout


@pytest.mark.slow
def test_the_image_python_wrapper_sees_the_images_packages_and_this_checkout(tmp_path):
    """This test's python stands in for the image's: a venv holding torch, which a venv made
    with --system-site-packages alone would not see."""
    assert sys.prefix != sys.base_prefix, "the test runs in ./run's venv"
    env = {
        **os.environ,
        'RGBD_SEG_IMAGE_PYTHON': sys.executable,
        'RGBD_SEG_IMAGE_ENV': str(tmp_path / 'env'),
    }
    env.pop('RGBD_SEG_WHEELS', None)
    probe = (
        'import sys, torch, rgbd_seg_ros; '
        'print(sys.prefix); print(torch.__file__); print(rgbd_seg_ros.__file__)'
    )
    for _ in range(2):  # made on the first call, reused on the second
        done = run_script('with_image_python.sh', 'python', '-c', probe, env=env, timeout=300)
        assert done.returncode == 0, done.stderr
        prefix, torch_file, package_file = done.stdout.split()
        assert Path(prefix) == tmp_path / 'env'
        assert Path(torch_file).is_relative_to(sys.prefix)  # the image's torch
        assert Path(package_file).is_relative_to(ROOT)  # this checkout, editable
    assert (tmp_path / 'env' / '.rgbd_seg_ros-image-env').exists()
