"""rgbd_seg_ros.data.layout: dataset writer/reader, atomicity, resume and id safety."""

from __future__ import annotations

import csv
import dataclasses

import numpy as np
import pytest
import yaml

from rgbd_seg_ros.data import layout as L
from rgbd_seg_ros.data.dataset_lock import DatasetLock
from rgbd_seg_ros.errors import DatasetError

H, W = 48, 64


def _meta() -> L.DatasetMeta:
    return L.DatasetMeta(
        classes=[L.ClassInfo(0, 'floor', (10, 20, 30)), L.ClassInfo(1, 'wall', (200, 0, 0))],
        provenance={'source': 'test', 'count': np.int64(3)},
    )


def _record(i: int, split: str = 'train') -> L.FrameRecord:
    return L.FrameRecord(
        frame_id=f'rec_{i:06d}',
        stamp_ns=1_000_000_000 + i,
        split=split,
        source='rec.mcap',
        topics='rgb=/c;depth=/d',
        width=W,
        height=H,
        fx=525.5,
        fy=525.25,
        cx=31.5,
        cy=23.5,
    )


def _arrays(i: int):
    rng = np.random.default_rng(i)
    rgb = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    depth = rng.integers(0, 65536, (H, W), dtype=np.uint16)
    labels = rng.integers(0, 2, (H, W), dtype=np.uint8)
    labels[0, :5] = 255
    conf = rng.uniform(0, 1, (H, W)).astype(np.float32)
    return rgb, depth, labels, conf


def test_roundtrip_pixel_exact(tmp_path):
    with L.DatasetWriter(tmp_path, _meta()) as writer:
        for i in range(3):
            rgb, depth, labels, conf = _arrays(i)
            writer.write_frame(_record(i, L.SPLITS[i]), rgb, depth, labels, conf)
        writer.write_frame(_record(3), *_arrays(3)[:2])  # no labels
    reader = L.DatasetReader(tmp_path)
    assert reader.meta == L.DatasetMeta.from_dict(_meta().to_dict())
    assert reader.meta.class_names == ['floor', 'wall']
    assert reader.meta.palette.tolist() == [[10, 20, 30], [200, 0, 0]]
    assert len(reader) == 4
    assert [r.frame_id for r in reader.frames('val')] == ['rec_000001']
    for i in range(3):
        rgb, depth, labels, conf = _arrays(i)
        sample = reader.load(f'rec_{i:06d}')
        np.testing.assert_array_equal(sample.rgb, rgb)
        np.testing.assert_array_equal(sample.depth_mm, depth)
        np.testing.assert_array_equal(sample.labels, labels)
        assert sample.labels.dtype == np.uint8
        np.testing.assert_allclose(sample.confidence, conf, atol=1 / 65535)
        assert sample.record == _record(i, L.SPLITS[i])
    sample = reader.load('rec_000003')
    assert sample.labels is None and sample.confidence is None
    np.testing.assert_array_equal(
        sample.record.K, [[525.5, 0, 31.5], [0, 525.25, 23.5], [0, 0, 1]]
    )
    # Index and yaml on disk follow the contract.
    with open(tmp_path / 'index.csv', newline='') as stream:
        rows = list(csv.DictReader(stream))
    assert tuple(rows[0]) == L.INDEX_COLUMNS
    assert rows[0]['fx'] == '525.5'
    data = yaml.safe_load((tmp_path / 'dataset.yaml').read_text())
    assert data['classes'][1] == {'id': 1, 'name': 'wall', 'color': [200, 0, 0]}
    assert data['ignore_index'] == 255 and data['depth_unit'] == 'mm'
    assert data['provenance']['count'] == 3
    assert not list((tmp_path / L.JOURNAL_DIR).glob('*'))


def test_uint16_labels(tmp_path):
    labels = np.random.default_rng(0).integers(0, 900, (H, W), dtype=np.uint16)
    labels[3, 3] = 65535
    meta = L.DatasetMeta([L.ClassInfo(i, f'c{i}') for i in range(900)], ignore_index=65535)
    with L.DatasetWriter(tmp_path, meta) as writer:
        writer.write_frame(_record(0), *_arrays(0)[:2], labels=labels)
    out = L.DatasetReader(tmp_path).load('rec_000000').labels
    assert out.dtype == np.uint16
    np.testing.assert_array_equal(out, labels)


def test_resume_after_crash_uses_journal(tmp_path):
    writer = L.DatasetWriter(tmp_path, _meta())
    writer.write_frame(_record(0), *_arrays(0))
    writer.write_frame(_record(1), *_arrays(1))
    # Simulate a crash: no close(); a torn half line at the end of the journal.
    writer._journal.write('{"frame_id": "rec_0000')
    writer._journal.flush()
    writer._lock.close()  # the crashed process's lock went with it
    assert not (tmp_path / 'index.csv').exists()
    reader = L.DatasetReader(tmp_path)  # readable mid-run
    assert len(reader) == 2
    again = L.DatasetWriter(tmp_path, _meta(), resume=True)
    assert again.has_frame('rec_000000') and again.has_frame('rec_000001')
    assert not again.has_frame('rec_000002')
    again.write_frame(_record(2), *_arrays(2))
    again.close()
    reader = L.DatasetReader(tmp_path)
    assert [r.frame_id for r in reader.frames()] == ['rec_000000', 'rec_000001', 'rec_000002']
    assert not list((tmp_path / L.JOURNAL_DIR).glob('*.jsonl'))


def test_no_resume_refuses_existing(tmp_path):
    with L.DatasetWriter(tmp_path, _meta()) as writer:
        writer.write_frame(_record(0), *_arrays(0))
    with pytest.raises(DatasetError, match='already holds'):
        L.DatasetWriter(tmp_path, _meta(), resume=False)


def test_resume_refuses_other_classes(tmp_path):
    with L.DatasetWriter(tmp_path, _meta()) as writer:
        writer.write_frame(_record(0), *_arrays(0))
    other = L.DatasetMeta([L.ClassInfo(0, 'sky')])
    with pytest.raises(DatasetError, match='different classes'):
        L.DatasetWriter(tmp_path, other)


def test_several_writers_share_a_root(tmp_path):
    with DatasetLock(tmp_path):  # the owner: per-process writers write under its lock
        workers = [L.DatasetWriter(tmp_path, _meta(), finalize=False) for _ in range(2)]
        for i in range(4):
            workers[i % 2].write_frame(_record(i), *_arrays(i)[:2])
        for worker in workers:
            worker.close()
        assert not (tmp_path / 'index.csv').exists()
        assert L.finalize_index(tmp_path) == 4
    assert len(L.DatasetReader(tmp_path)) == 4


def test_rewrite_removes_stale_optional_files(tmp_path):
    with L.DatasetWriter(tmp_path, _meta()) as writer:
        writer.write_frame(_record(0), *_arrays(0))
        writer.write_frame(_record(0), *_arrays(0)[:2])
    assert L.DatasetReader(tmp_path).load('rec_000000').labels is None


def test_no_temporary_files_left(tmp_path):
    with L.DatasetWriter(tmp_path, _meta()) as writer:
        writer.write_frame(_record(0), *_arrays(0))
    assert not [p for p in tmp_path.rglob('*.tmp')]


@pytest.mark.parametrize(
    'bad', ['../evil', '/abs', '.hidden', 'a/b', 'a\\b', '', 'x' * 161, 'sp ace', 'ü']
)
def test_unsafe_frame_ids_rejected(tmp_path, bad):
    record = _record(0)
    record.frame_id = bad
    with L.DatasetWriter(tmp_path, _meta()) as writer, pytest.raises(DatasetError):
        writer.write_frame(record, *_arrays(0))
    assert not (tmp_path.parent / 'evil.png').exists()


@pytest.mark.parametrize(
    ('text', 'expected'),
    [
        ('/camera/color/image_raw', 'camera_color_image_raw'),
        ('../../x', 'x'),
        ('ok-name_1.2', 'ok-name_1.2'),
        ('...', 'x'),
        ('a b', 'a_b'),
    ],
)
def test_safe_frame_id(text, expected):
    assert L.safe_frame_id(text) == expected
    assert L.is_valid_frame_id(L.safe_frame_id(text))


def test_safe_frame_id_long_names_stay_distinct():
    a, b = L.safe_frame_id('y' * 300 + 'a'), L.safe_frame_id('y' * 300 + 'b')
    assert a != b and len(a) <= 120 and L.is_valid_frame_id(a)


def test_write_frame_validates_shapes(tmp_path):
    rgb, depth, labels, _ = _arrays(0)
    with L.DatasetWriter(tmp_path, _meta()) as writer:
        with pytest.raises(DatasetError, match='rgb'):
            writer.write_frame(_record(0), rgb[:, :10], depth)
        with pytest.raises(DatasetError, match='depth'):
            writer.write_frame(_record(0), rgb, depth.astype(np.float32))
        with pytest.raises(DatasetError, match='labels'):
            writer.write_frame(_record(0), rgb, depth, labels[:10])
        with pytest.raises(DatasetError, match='split'):
            writer.write_frame(_record(0, 'holdout'), rgb, depth)
        assert not writer.has_frame('rec_000000')


def test_meta_validation():
    with pytest.raises(DatasetError, match='duplicate'):
        L.DatasetMeta([L.ClassInfo(0, 'a'), L.ClassInfo(0, 'b')])
    with pytest.raises(DatasetError, match='ignore_index'):
        L.DatasetMeta([L.ClassInfo(255, 'a')])
    with pytest.raises(DatasetError, match='colour'):
        L.ClassInfo(0, 'a', (0, 0, 300))


def test_reader_errors(tmp_path):
    with pytest.raises(DatasetError, match=r'dataset\.yaml'):
        L.DatasetReader(tmp_path)
    with L.DatasetWriter(tmp_path, _meta()) as writer:
        writer.write_frame(_record(0), *_arrays(0))
    (tmp_path / 'depth' / 'rec_000000.png').write_bytes(b'not a png')
    reader = L.DatasetReader(tmp_path)
    with pytest.raises(DatasetError, match='not a readable PNG'):
        reader.load('rec_000000')
    with pytest.raises(DatasetError, match='no frame'):
        reader.load('rec_000009')


def test_one_writer_at_a_time(tmp_path):
    writer = L.DatasetWriter(tmp_path, _meta())
    with pytest.raises(DatasetError, match='another process'):
        L.DatasetWriter(tmp_path, _meta())
    writer.close()
    L.DatasetWriter(tmp_path, _meta()).close()  # free again


def test_index_rows_convert_by_field_type():
    record = _record(3)
    row = record.to_row()
    back = L.FrameRecord.from_row(row)
    assert back == record
    assert isinstance(back.stamp_ns, int) and isinstance(back.fx, float)
    assert {str(f.type) for f in dataclasses.fields(L.FrameRecord)} <= set(L._ROW_TYPES)
    for key, text in (('width', 'wide'), ('fx', ''), ('stamp_ns', '1.5')):
        with pytest.raises(DatasetError, match='bad index row'):
            L.FrameRecord.from_row({**row, key: text})
    with pytest.raises(DatasetError, match='bad index row'):
        L.FrameRecord.from_row({k: v for k, v in row.items() if k != 'cy'})
