"""A second demo run replaces the first run's recording instead of failing on it."""

from __future__ import annotations

import pytest

from rgbd_seg_ros.errors import RgbdSegError
from rgbd_seg_ros.tools.demo import fresh_outputs_dir


def test_previous_recording_is_cleared(tmp_path):
    old = tmp_path / 'outputs'
    old.mkdir()
    (old / 'metadata.yaml').write_text('old')
    (old / 'outputs.mcap').write_bytes(b'old')
    path = fresh_outputs_dir(tmp_path)
    assert path == old and not path.exists()  # the mcap writer creates it anew
    assert fresh_outputs_dir(tmp_path) == old  # nothing there: nothing to do


def test_foreign_files_are_not_deleted(tmp_path):
    old = tmp_path / 'outputs'
    old.mkdir()
    (old / 'notes.txt').write_text('mine')
    with pytest.raises(RgbdSegError, match=r'notes\.txt'):
        fresh_outputs_dir(tmp_path)
    assert (old / 'notes.txt').exists()
