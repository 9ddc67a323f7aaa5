"""A real, tiny model for the node's parts: the depth-bins test backend written as a
checkpoint, and the node parameters (their defaults) that load it on the CPU."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from inference.tiny_backend import register, write_checkpoint

from rgbd_seg_ros.ros.node_params import PARAMS


@pytest.fixture
def tiny_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    register(monkeypatch)
    path = tmp_path / 'tiny.safetensors'
    write_checkpoint(path, num_classes=3)
    return path


@pytest.fixture
def model_params(tiny_checkpoint: Path) -> dict[str, Any]:
    """Every node parameter at its default, loading the tiny checkpoint on the CPU."""
    params = {spec.name: spec.default for spec in PARAMS}
    params.update(checkpoint=str(tiny_checkpoint), device='cpu')
    return params


@pytest.fixture
def installed_share(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An ament prefix whose share/rgbd_seg_ros is this checkout, laid out as colcon installs
    it, so ``get_package_share_directory`` (the launch file) finds the checkout's files."""
    prefix = tmp_path / 'ament_prefix'
    index = prefix / 'share' / 'ament_index' / 'resource_index' / 'packages'
    index.mkdir(parents=True)
    (index / 'rgbd_seg_ros').touch()
    (prefix / 'share' / 'rgbd_seg_ros').symlink_to(Path(__file__).resolve().parents[2])
    monkeypatch.setenv('AMENT_PREFIX_PATH', str(prefix))
    return prefix
