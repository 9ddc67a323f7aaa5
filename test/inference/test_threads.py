"""Thread-count choice: leave a core to the rest of the robot."""

from __future__ import annotations

import pytest
import torch

from rgbd_seg_ros.inference.threads import auto_threads, available_cores, configure_cpu_threads


def test_auto_leaves_one_core_and_never_goes_below_one():
    assert auto_threads(1) == 1
    assert auto_threads(2) == 1
    assert auto_threads(16) == 15


def test_configure_applies_and_restores():
    before = torch.get_num_threads()
    try:
        assert configure_cpu_threads(1) == 1
        assert torch.get_num_threads() == 1
        assert configure_cpu_threads(0) == auto_threads(available_cores())
    finally:
        torch.set_num_threads(before)
    with pytest.raises(ValueError):
        configure_cpu_threads(-1)
