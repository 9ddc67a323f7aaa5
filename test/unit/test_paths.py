"""The embedded default model is looked up in one place, and every fallback uses it."""

from __future__ import annotations

from pathlib import Path

from rgbd_seg_ros.paths import DEFAULT_MODEL, default_model
from rgbd_seg_ros.training.job import base_checkpoint

PACKAGE_DIR = Path(__file__).resolve().parents[2] / 'rgbd_seg_ros'


def make_share(prefix: Path, with_model: bool) -> Path:
    """An installed share folder below ``prefix`` (what AMENT_PREFIX_PATH points at)."""
    share = prefix / 'share' / 'rgbd_seg_ros'
    (share / 'config').mkdir(parents=True)
    (share / 'config' / 'segment.yaml').write_text('{}\n')
    if with_model:
        (share / DEFAULT_MODEL).parent.mkdir(parents=True)
        (share / DEFAULT_MODEL).write_bytes(b'not read here')
    return share


def test_the_default_model_is_found_in_the_share_folder(tmp_path, monkeypatch):
    share = make_share(tmp_path, with_model=True)
    monkeypatch.setenv('AMENT_PREFIX_PATH', str(tmp_path))
    assert default_model() == share / DEFAULT_MODEL
    # the trainer's fine-tuning job falls back to the same file
    assert base_checkpoint({}) == str(share / DEFAULT_MODEL)
    assert base_checkpoint({'base_checkpoint': 'mine.pt'}) == 'mine.pt'


def test_no_default_model_when_the_share_folder_has_none(tmp_path, monkeypatch):
    make_share(tmp_path, with_model=False)
    monkeypatch.setenv('AMENT_PREFIX_PATH', str(tmp_path))
    assert default_model() is None
    assert base_checkpoint({}) is None


def test_the_default_model_path_is_written_once():
    holders = sorted(
        str(path.relative_to(PACKAGE_DIR))
        for path in PACKAGE_DIR.rglob('*.py')
        if DEFAULT_MODEL.name in path.read_text(encoding='utf-8')
    )
    assert holders == ['paths.py']
