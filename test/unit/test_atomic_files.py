"""Atomic writes: file modes follow the umask (0644 under 022), failures leave nothing, and the
temporaries a killed writer leaves can be told apart and removed."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from rgbd_seg_ros.core import atomic_files as af
from rgbd_seg_ros.data import layout as L


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_every_helper_writes_0644_under_umask_022(tmp_path: Path, umask_022: None) -> None:
    af.atomic_write_bytes(tmp_path / 'a.bin', b'a')
    with af.atomic_output(tmp_path / 'b.bin') as stream:
        stream.write(b'b')
    with af.atomic_path(tmp_path / 'c.bin') as tmp:
        tmp.write_bytes(b'c')
    for name in ('a.bin', 'b.bin', 'c.bin'):
        assert _mode(tmp_path / name) == 0o644, name
    assert sorted(p.name for p in tmp_path.iterdir()) == ['a.bin', 'b.bin', 'c.bin']


def test_a_stricter_umask_is_honoured(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        af.atomic_write_bytes(tmp_path / 'private.bin', b'x')
    finally:
        os.umask(old)
    assert _mode(tmp_path / 'private.bin') == 0o600


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / 'keep.bin'
    target.write_bytes(b'old')
    with pytest.raises(KeyboardInterrupt), af.atomic_output(target) as stream:
        stream.write(b'partial')
        raise KeyboardInterrupt
    assert target.read_bytes() == b'old'
    assert [p.name for p in tmp_path.iterdir()] == ['keep.bin']


def test_dataset_files_are_0644(tmp_path: Path, umask_022: None) -> None:
    meta = L.DatasetMeta(classes=[L.ClassInfo(0, 'floor'), L.ClassInfo(1, 'wall')])
    record = L.FrameRecord('f0', 1, 'train', 'rec', 'rgb=/c', 8, 6, 5.0, 5.0, 4.0, 3.0)
    rgb = np.zeros((6, 8, 3), np.uint8)
    depth = np.ones((6, 8), np.uint16)
    labels = np.zeros((6, 8), np.uint8)
    confidence = np.ones((6, 8), np.float32)
    with L.DatasetWriter(tmp_path, meta) as writer:
        writer.write_frame(record, rgb, depth, labels, confidence)
    files = [p for p in tmp_path.rglob('*') if p.is_file()]
    names = {p.relative_to(tmp_path).as_posix() for p in files}
    assert {'dataset.yaml', 'index.csv', 'rgb/f0.png', 'depth/f0.png'} <= names
    assert {'labels/f0.png', 'confidence/f0.png'} <= names
    assert {p.relative_to(tmp_path).as_posix(): _mode(p) for p in files} == dict.fromkeys(
        names, 0o644
    )


def test_training_state_and_config_are_0644(tmp_path: Path, umask_022: None) -> None:
    import torch

    from rgbd_seg_ros.training.checkpointing import atomic_torch_save
    from rgbd_seg_ros.training.config import TrainConfig, save_config

    atomic_torch_save({'step': torch.tensor(3)}, tmp_path / 'train_state.pt')
    save_config(TrainConfig(), tmp_path / 'config.yaml')
    assert _mode(tmp_path / 'train_state.pt') == 0o644
    assert _mode(tmp_path / 'config.yaml') == 0o644


def _dead_pid() -> int:
    done = subprocess.run(
        [sys.executable, '-c', 'import os; print(os.getpid())'],
        check=True,
        capture_output=True,
        text=True,
    )
    return int(done.stdout)


def test_temporaries_of_dead_writers_are_removed(tmp_path: Path) -> None:
    dead = tmp_path / f'.x.png.{_dead_pid()}.0123abcd.tmp'
    live = af.temporary_path(tmp_path / 'y.png')  # names this (live) process
    legacy = tmp_path / '.last.safetensors.k2_9xq1z.tmp'  # tempfile.mkstemp's naming
    kept = [tmp_path / 'z.png', tmp_path / 'notes.tmp']
    for path in (dead, live, legacy, *kept):
        path.write_bytes(b'.')
    assert af.remove_temporaries(tmp_path) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in (live, *kept))
    assert af.remove_temporaries(tmp_path, keep_live_writers=False) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in kept)
