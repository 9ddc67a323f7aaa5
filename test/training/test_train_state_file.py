"""The training-state file (exact resume) is read like a checkpoint: without running code, from
regular files only, any failure a CheckpointError naming the file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from rgbd_seg_ros.errors import CheckpointError
from rgbd_seg_ros.training import checkpointing as ck


def test_a_saved_state_reads_back(tmp_path: Path) -> None:
    path = tmp_path / ck.STATE_FILE
    ck.atomic_torch_save({'step': 3, 'w': torch.arange(4)}, path)
    state = ck.load_train_state(path)
    assert state['step'] == 3 and torch.equal(state['w'], torch.arange(4))


def test_damaged_or_odd_state_files_are_refused(tmp_path: Path) -> None:
    good = tmp_path / 'good.pt'
    ck.atomic_torch_save({'step': 3, 'w': torch.arange(1000)}, good)
    data = good.read_bytes()
    cut = tmp_path / 'cut.pt'
    cut.write_bytes(data[: len(data) // 2])
    named = tmp_path / 'state.safetensors'  # torch would hand this name to another reader
    named.write_bytes(data)
    assert ck.load_train_state(named)['step'] == 3
    listed = tmp_path / 'list.pt'
    torch.save([1, 2], listed)
    fifo = tmp_path / 'fifo.pt'
    os.mkfifo(fifo)
    for path, reason in (
        (cut, 'cannot read training state'),
        (listed, 'a training state is a dict'),
        (fifo, 'not a regular file'),
        (tmp_path / 'missing.pt', 'not found'),
    ):
        with pytest.raises(CheckpointError, match=reason) as info:
            ck.load_train_state(path)
        assert str(path) in str(info.value)
