"""NYUDv2 import from small files with the structure of the real ones (written here)."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from rgbd_seg_ros.cli.main import main
from rgbd_seg_ros.data.layout import DatasetReader
from rgbd_seg_ros.data.matfile import load_mat, save_mat_v5
from rgbd_seg_ros.data.nyudv2 import NYU40_NAMES, import_nyudv2, load_mapping, load_splits
from rgbd_seg_ros.errors import DatasetError

N, H, W = 6, 12, 16


def _frames():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (N, H, W, 3), dtype=np.uint8)
    depth = rng.uniform(0.5, 9.5, (N, H, W)).astype(np.float32)
    depth[:, 0, 0] = 0.0
    labels = rng.integers(0, 895, (N, H, W)).astype(np.uint16)
    labels[:, 1, 1] = 0
    return rgb, depth, labels


def _write_labeled_mat(path):
    """MATLAB v7.3 layout: column-major arrays, so h5py sees the axes reversed."""
    rgb, depth, labels = _frames()
    with h5py.File(path, 'w', userblock_size=512) as f:
        f['images'] = rgb.transpose(0, 3, 2, 1)  # [N, 3, W, H]
        f['depths'] = depth.transpose(0, 2, 1)  # [N, W, H]
        f['labels'] = labels.transpose(0, 2, 1)
    return rgb, depth, labels


def _mapping():
    return (np.arange(1, 895) % 41).astype(np.float64)  # 894 raw ids -> 0..40


@pytest.fixture
def nyu(tmp_path):
    mat = tmp_path / 'nyu_depth_v2_labeled.mat'
    arrays = _write_labeled_mat(mat)
    # The official files are MATLAB v5: trainNdxs/testNdxs as column vectors (1-based).
    save_mat_v5(
        tmp_path / 'splits.mat',
        {'trainNdxs': np.array([[1], [2], [4], [6]]), 'testNdxs': np.array([[3], [5]])},
    )
    save_mat_v5(
        tmp_path / 'classMapping40.mat',
        {'mapClass': _mapping()[None, :], 'className': list(NYU40_NAMES)},
    )
    return mat, arrays


def test_import_with_official_style_files(tmp_path, nyu):
    mat, (rgb, depth, labels) = nyu
    report = import_nyudv2(mat, tmp_path / 'ds', progress=False)
    assert report['written'] == N and report['splits'] == {'train': 4, 'val': 0, 'test': 2}
    reader = DatasetReader(tmp_path / 'ds')
    assert reader.meta.class_names == list(NYU40_NAMES)
    assert reader.meta.ignore_index == 255
    mapped40 = np.concatenate([[0], _mapping()]).astype(np.int64)
    for i in range(N):
        sample = reader.load(f'nyudv2_{i + 1:04d}')
        np.testing.assert_array_equal(sample.rgb, rgb[i])
        want_mm = np.round(depth[i].astype(np.float64) * 1000).astype(np.uint16)
        np.testing.assert_array_equal(sample.depth_mm, want_mm)
        want = mapped40[labels[i]]
        want = np.where(want > 0, want - 1, 255)
        np.testing.assert_array_equal(sample.labels, want)
        assert sample.record.split == ('test' if i + 1 in (3, 5) else 'train')
        assert sample.record.K[0, 0] == pytest.approx(518.8579)
    # Resume: nothing rewritten.
    again = import_nyudv2(mat, tmp_path / 'ds', progress=False)
    assert again['written'] == 0 and again['skipped_existing'] == N


def test_yaml_splits_and_mapping_and_raw_labels(tmp_path, nyu):
    mat, (_, _, labels) = nyu
    (tmp_path / 's.yaml').write_text('train: [1, 2]\ntest: [3]\n')
    (tmp_path / 'm.yaml').write_text('map: {1: 1, 2: 2}\nnames: [wall, floor]\n')
    import_nyudv2(
        mat,
        tmp_path / 'a',
        splits=tmp_path / 's.yaml',
        mapping=tmp_path / 'm.yaml',
        progress=False,
    )
    reader = DatasetReader(tmp_path / 'a')
    assert len(reader) == 3 and reader.meta.class_names == ['wall', 'floor']
    got = reader.load('nyudv2_0001').labels
    want = np.select([labels[0] == 1, labels[0] == 2], [0, 1], 255)
    np.testing.assert_array_equal(got, want)
    import_nyudv2(mat, tmp_path / 'b', raw_labels=True, progress=False)
    reader = DatasetReader(tmp_path / 'b')
    assert reader.meta.ignore_index == 65535 and len(reader.meta.classes) == 894
    got = reader.load('nyudv2_0002').labels
    assert got.dtype == np.uint16
    np.testing.assert_array_equal(got, np.where(labels[1] == 0, 65535, labels[1]))


def test_hdf5_splits_file(tmp_path):
    path = tmp_path / 'splits73.mat'
    with h5py.File(path, 'w', userblock_size=512) as f:
        f['trainNdxs'] = np.array([[1.0, 2.0, 3.0]])  # MATLAB 3x1 seen transposed
        f['testNdxs'] = np.array([[4.0]])
        f['trainNdxs'].attrs['MATLAB_class'] = np.bytes_('double')
    splits = load_splits(path)
    assert splits['train'].tolist() == [1, 2, 3] and splits['test'].tolist() == [4]


def test_matfile_v5_roundtrip(tmp_path):
    save_mat_v5(
        tmp_path / 'x.mat', {'a': np.arange(6).reshape(2, 3), 's': 'hello', 'c': ['one', 'two']}
    )
    data = load_mat(tmp_path / 'x.mat')
    np.testing.assert_array_equal(data['a'], np.arange(6).reshape(2, 3))
    assert data['s'] == 'hello' and data['c'] == ['one', 'two']


def test_bad_inputs(tmp_path, nyu):
    mat, _ = nyu
    with pytest.raises(DatasetError, match='does not exist'):
        import_nyudv2(mat, tmp_path / 'x', splits=tmp_path / 'nope.mat', progress=False)
    (tmp_path / 'bad_map.yaml').write_text('map: [1, 2, 3]\n')
    with pytest.raises(DatasetError, match='894'):
        load_mapping(tmp_path / 'bad_map.yaml')
    mapping = ', '.join(str(v) for v in _mapping())
    for names, kind in (('5', 'int'), ('wall', 'str'), ('{a: 1}', 'dict')):
        (tmp_path / 'bad_names.yaml').write_text(f'map: [{mapping}]\nnames: {names}\n')
        with pytest.raises(DatasetError, match=f'class names must be a list, got {kind}'):
            load_mapping(tmp_path / 'bad_names.yaml')
    (tmp_path / 'bad_split.yaml').write_text('train: [0, 1]\n')
    with pytest.raises(DatasetError, match='1-based'):
        load_splits(tmp_path / 'bad_split.yaml')
    (tmp_path / 'far.yaml').write_text('train: [1, 99]\n')
    with pytest.raises(DatasetError, match='beyond'):
        import_nyudv2(mat, tmp_path / 'y', splits=tmp_path / 'far.yaml', progress=False)
    broken = tmp_path / 'broken.mat'
    with h5py.File(broken, 'w') as f:
        f['images'] = np.zeros((2, 3, 4, 5), np.uint8)
    with pytest.raises(DatasetError, match='depths'):
        import_nyudv2(broken, tmp_path / 'z', progress=False)
    (tmp_path / 'notmat.mat').write_bytes(b'garbage' * 30)
    with pytest.raises(DatasetError):
        import_nyudv2(tmp_path / 'notmat.mat', tmp_path / 'w', progress=False)


def test_cli(tmp_path, nyu):
    mat, _ = nyu
    rc = main(
        [
            'import-dataset',
            'nyudv2',
            str(mat),
            '-o',
            str(tmp_path / 'ds'),
            '--limit',
            '2',
            '--no-progress',
        ]
    )
    assert rc == 0
    assert len(DatasetReader(tmp_path / 'ds')) == 2
