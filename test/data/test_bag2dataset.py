"""bag2dataset end to end: recordings written here, the dataset read back pixel for pixel."""

from __future__ import annotations

import itertools
import json
import os

import numpy as np
import pytest
from bag_fixtures import DEPTH, INFO, LABELS, H, K, W

from rgbd_seg_ros.cli.main import main
from rgbd_seg_ros.core import image_codec as ic
from rgbd_seg_ros.data.convert import ConvertOptions, choose_topics, convert, format_report
from rgbd_seg_ros.data.layout import ClassInfo, DatasetReader
from rgbd_seg_ros.data.recordings import Recording
from rgbd_seg_ros.errors import ConfigError, DatasetError


def _options(**kw) -> ConvertOptions:
    base = {'guard_s': 0.0, 'block_s': 0.2, 'progress': False, 'fsync': False}
    base.update(kw)
    return ConvertOptions(**base)


def _check_dataset(out, recorded, *, labels=True, rgb_exact=True, count=None):
    reader = DatasetReader(out)
    frames = reader.frames()
    assert len(frames) == (len(recorded.stamps) if count is None else count)
    for record in frames:
        sample = reader.load(record.frame_id)
        stamp = record.stamp_ns
        want = recorded.rgb[stamp]
        if not rgb_exact:  # jpeg: what the same encoder and decoder make of the recorded image
            want = ic.decode_compressed(*ic.encode_compressed(want, 'jpeg'))
        np.testing.assert_array_equal(sample.rgb, want)
        np.testing.assert_array_equal(sample.depth_mm, recorded.depth_mm[stamp])
        if labels:
            np.testing.assert_array_equal(sample.labels, recorded.labels[stamp])
        else:
            assert sample.labels is None
        np.testing.assert_allclose(record.K, K)
        assert (record.width, record.height) == (W, H)
    return reader


@pytest.mark.parametrize('storage', ['mcap', 'sqlite3', 'ros1'])
def test_roundtrip_every_storage_with_label_topic(tmp_path, recording, storage):
    recorded = recording(storage=storage, frames=20, shuffle=True)
    out = tmp_path / 'ds'
    report = convert([recorded.path], out, _options(label_topic=LABELS))
    reader = _check_dataset(out, recorded)
    entry = report.recordings[0]
    assert entry.pairing.pairs == 20
    assert entry.pairing.out_of_order > 0
    assert entry.pairing.slop_ms['max'] == pytest.approx(3.0)
    assert entry.topics.colour == '/camera/color/image_raw'  # picked automatically
    assert entry.frames.written == 20
    # Contiguous time blocks: the split changes only a few times along the recording.
    splits = [r.split for r in reader.frames()]
    changes = sum(a != b for a, b in itertools.pairwise(splits))
    assert set(splits) == {'train', 'val', 'test'} and changes <= 4
    saved = json.loads((out / 'conversion_report.json').read_text())
    assert saved == json.loads(report.to_json())
    assert saved['recordings'][0]['frames']['written'] == 20
    assert saved['recordings'][0]['pairing']['out_of_order_stamps'] > 0
    assert saved['totals']['written'] == 20 and saved['label_source'] == 'topic'
    assert not list((out / '.journal').glob('*'))


@pytest.mark.parametrize(
    ('colour', 'depth', 'rgb_exact'),
    [
        ('png', '32FC1', True),
        ('jpeg', 'compressedDepth', False),
        ('bgr8', '32FC1', True),
        ('mono8', '16UC1', True),
    ],
)
def test_encodings(tmp_path, recording, colour, depth, rgb_exact):
    recorded = recording(colour=colour, depth=depth, labels=False, frames=6)
    out = tmp_path / 'ds'
    convert([recorded.path], out, _options())
    _check_dataset(out, recorded, labels=False, rgb_exact=rgb_exact)


def test_big_endian_and_padded_rows(tmp_path, recording):
    recorded = recording(frames=4, big_endian_depth=True, labels=False, row_padding=6)
    convert([recorded.path], tmp_path / 'ds', _options())
    _check_dataset(tmp_path / 'ds', recorded, labels=False)


def test_compressed_32fc1_depth_is_close(tmp_path, recording):
    recorded = recording(depth='32FC1-compressedDepth', labels=False, frames=3)
    convert([recorded.path], tmp_path / 'ds', _options())
    reader = DatasetReader(tmp_path / 'ds')
    for record in reader.frames():
        got = reader.load(record.frame_id).depth_mm.astype(int)
        want = recorded.depth_mm[record.stamp_ns].astype(int)
        assert ((got == 0) == (want == 0)).all()
        assert np.abs(got - want).max() <= 10  # the transport quantises inverse depth


def test_truncated_recording_keeps_readable_part(tmp_path, recording):
    recorded = recording(frames=40, labels=False)
    mcap_file = next(recorded.path.glob('*.mcap'))
    size = mcap_file.stat().st_size
    os.truncate(mcap_file, size * 6 // 10)
    out = tmp_path / 'ds'
    report = convert([recorded.path], out, _options())
    entry = report.recordings[0]
    assert entry.damage, 'damage must be reported'
    written = entry.frames.written
    assert 5 < written < 40
    reader = DatasetReader(out)
    for record in reader.frames():
        sample = reader.load(record.frame_id)
        np.testing.assert_array_equal(sample.rgb, recorded.rgb[record.stamp_ns])
        np.testing.assert_array_equal(sample.depth_mm, recorded.depth_mm[record.stamp_ns])


@pytest.mark.parametrize('storage', ['sqlite3', 'ros1'])
def test_truncated_other_storages(tmp_path, recording, storage):
    recorded = recording(storage=storage, frames=40, labels=False)
    target = recorded.path if storage == 'ros1' else next(recorded.path.glob('*.db3'))
    os.truncate(target, target.stat().st_size * 6 // 10)
    report = convert([recorded.path], tmp_path / 'ds', _options())
    entry = report.recordings[0]
    assert entry.damage
    assert entry.frames.written > 5
    _check_dataset(tmp_path / 'ds', recorded, labels=False, count=entry.frames.written)


def test_misspelled_topic_lists_available(recording):
    recorded = recording(frames=2)
    with Recording(recorded.path) as rec:
        with pytest.raises(DatasetError, match='did you mean') as info:
            choose_topics(
                rec, ConvertOptions(depth_topic='/camera/aligned_depth_to_colr/image_raw')
            )
        assert INFO in str(info.value) and DEPTH in str(info.value)


def test_missing_topic_fails_that_recording_only(tmp_path, recording):
    good = recording('good', frames=3, labels=True)
    bad = recording('bad', frames=3, labels=False)
    report = convert([good.path.parent], tmp_path / 'ds', _options(label_topic=LABELS))
    by_name = {r.recording: r for r in report.recordings}
    assert 'no topic' in by_name['bad'].error
    assert by_name['good'].frames.written == 3
    assert report.totals.failed_recordings == 1
    assert bad.path.exists()


def test_ambiguous_topics_need_a_choice(tmp_path):
    from bag_fixtures import frame_arrays

    from rgbd_seg_ros.data.rosbag_messages import IMAGE, RecordingWriter

    path = tmp_path / 'two_cams'
    with RecordingWriter(path) as rec:
        for name in ('/cam_a/color/image_raw', '/cam_b/color/image_raw'):
            rec.add_topic(name, IMAGE)
            rec.write(name, 1, rec.image(frame_arrays(0)[0], 'rgb8', 1))
    with Recording(path) as rec, pytest.raises(DatasetError, match='several colour'):
        choose_topics(rec, ConvertOptions())


def test_bad_frames_are_counted_not_fatal(tmp_path, recording):
    recorded = recording(
        frames=12, labels=False, info_missing=range(4, 8), depth_size_mismatch={1}
    )
    report = convert([recorded.path], tmp_path / 'ds', _options(info_slop_s=0.05))
    entry = report.recordings[0]
    assert entry.pairing.dropped['no_camera_info_within_slop'] == 4
    gap_start_ns, _, gap_frames = entry.pairing.info_gaps[0]
    assert gap_frames == 4 and gap_start_ns == recorded.stamps[4]
    assert entry.frames.errors == {'size_mismatch': 1}
    assert entry.frames.written == 7
    assert report.totals.dropped == {'no_camera_info_within_slop': 4}
    _check_dataset(tmp_path / 'ds', recorded, labels=False, count=7)


def test_unusable_camera_info_is_counted(tmp_path, recording):
    """The node's camera_info rule: a zero size (accepted here before) or a NaN focal."""
    recorded = recording(frames=6, labels=False, bad_info={1: 'zero_size', 4: 'nan_focal'})
    report = convert([recorded.path], tmp_path / 'ds', _options())
    frames = report.recordings[0].frames
    assert frames.errors == {'camera_info_invalid': 2}
    assert frames.written == 4
    examples = ' '.join(frames.error_examples)
    assert 'no image size' in examples and 'NaN' in examples


def test_unknown_colour_encoding_is_reported(tmp_path, recording):
    recorded = recording(frames=3, colour='yuv422', labels=False)
    report = convert([recorded.path], tmp_path / 'ds', _options())
    frames = report.recordings[0].frames
    assert frames.errors == {'colour_undecodable': 3}
    assert 'yuv422' in frames.error_examples[0]


def test_resume_skips_finished_frames(tmp_path, recording):
    recorded = recording(frames=10)
    out = tmp_path / 'ds'
    convert([recorded.path], out, _options(label_topic=LABELS))
    first = sorted(out.glob('rgb/*.png'))
    mtimes = {p: p.stat().st_mtime_ns for p in first}
    # Forget three frames, as if the first run had died before committing them.
    index = (out / 'index.csv').read_text().splitlines()
    (out / 'index.csv').write_text('\n'.join(index[:-3]) + '\n')
    report = convert([recorded.path], out, _options(label_topic=LABELS))
    frames = report.recordings[0].frames
    assert frames.written == 3 and frames.skipped_existing == 7
    unchanged = [p for p in first if p.stat().st_mtime_ns == mtimes[p]]
    assert len(unchanged) == 7
    _check_dataset(out, recorded)


def test_label_sources_are_exclusive_and_a_labeller_needs_classes():
    def labeller(rgb, depth_mm, K):
        return np.zeros(depth_mm.shape, np.uint8), np.ones(depth_mm.shape, np.float32)

    with pytest.raises(ConfigError, match='choose one label source'):
        ConvertOptions(label_topic=LABELS, labeller=labeller, classes=[]).check()
    with pytest.raises(ConfigError, match='class list'):
        ConvertOptions(labeller=labeller).check()
    ConvertOptions(labeller=labeller, classes=[ClassInfo(0, 'floor', (1, 2, 3))]).check()


def test_no_resume_refuses(tmp_path, recording):
    recorded = recording(frames=2)
    convert([recorded.path], tmp_path / 'ds', _options())
    with pytest.raises(DatasetError, match='already holds'):
        convert([recorded.path], tmp_path / 'ds', _options(resume=False))


def test_label_map_and_classes(tmp_path, recording):
    recorded = recording(frames=4)
    classes = [ClassInfo(0, 'floor', (1, 2, 3)), ClassInfo(1, 'wall', (4, 5, 6))]
    options = _options(label_topic=LABELS, label_map={0: 1, 1: 0, 2: 0}, classes=classes)
    report = convert([recorded.path], tmp_path / 'ds', options)
    reader = DatasetReader(tmp_path / 'ds')
    assert reader.meta.class_names == ['floor', 'wall']
    lut = np.full(256, 255, np.uint8)
    lut[[0, 1, 2]] = [1, 0, 0]
    unmapped = 0
    for record in reader.frames():
        want = lut[recorded.labels[record.stamp_ns]]
        np.testing.assert_array_equal(reader.load(record.frame_id).labels, want)
        unmapped += int((recorded.labels[record.stamp_ns] == 3).sum())
    assert report.recordings[0].frames.unmapped_label_pixels == unmapped


def test_auto_classes_from_observed_ids(tmp_path, recording):
    recorded = recording(frames=3)
    convert([recorded.path], tmp_path / 'ds', _options(label_topic=LABELS))
    meta = DatasetReader(tmp_path / 'ds').meta
    assert [c.name for c in meta.classes] == ['class_0', 'class_1', 'class_2', 'class_3']


def test_selection_min_gap_max_frames_and_dedup(tmp_path, recording):
    recorded = recording(frames=20, labels=False)
    report = convert([recorded.path], tmp_path / 'a', _options(min_gap_s=0.25))
    sel = report.recordings[0].selection
    assert sel.planned == 7 and sel.dropped_min_gap == 13
    report = convert([recorded.path], tmp_path / 'b', _options(max_frames=5))
    assert report.recordings[0].frames.written == 5
    # Random frames differ by ~85 grey levels on average: a huge threshold drops all but one.
    report = convert([recorded.path], tmp_path / 'c', _options(duplicate_threshold=200))
    frames = report.recordings[0].frames
    assert frames.written == 1 and frames.near_duplicate == 19


def test_parallel_jobs_match_serial(tmp_path, recording):
    a = recording('a', frames=8)
    recording('b', frames=8, storage='sqlite3')
    serial = tmp_path / 'serial'
    parallel = tmp_path / 'parallel'
    convert([a.path.parent], serial, _options(label_topic=LABELS))
    report = convert(
        [a.path.parent], parallel, _options(label_topic=LABELS, jobs=2, chunk_frames=3)
    )
    assert report.totals.written == 16
    r1, r2 = DatasetReader(serial), DatasetReader(parallel)
    assert [r.frame_id for r in r1.frames()] == [r.frame_id for r in r2.frames()]
    for record in r1.frames():
        s1, s2 = r1.load(record.frame_id), r2.load(record.frame_id)
        np.testing.assert_array_equal(s1.rgb, s2.rgb)
        np.testing.assert_array_equal(s1.labels, s2.labels)
        assert s1.record == s2.record


def test_recording_names_never_escape(tmp_path, recording):
    recorded = recording('we ird;..name', frames=2, labels=False)
    out = tmp_path / 'ds'
    convert([recorded.path], out, _options())
    ids = [r.frame_id for r in DatasetReader(out).frames()]
    assert all(i.startswith('we_ird_..name_') for i in ids)
    written = {p.resolve() for p in out.rglob('*') if p.is_file()}
    assert all(str(p).startswith(str(out.resolve())) for p in written)


def test_cli_list_and_convert(tmp_path, recording, capsys):
    recorded = recording(frames=4)
    assert main(['bag2dataset', '--list', str(recorded.path)]) == 0
    text = capsys.readouterr().out
    assert '/sim/labels' in text and 'sensor_msgs/msg/CameraInfo' in text and 'Hz' in text
    assert 'would convert: rgb=/camera/color/image_raw' in text
    out = tmp_path / 'ds'
    rc = main(
        [
            'bag2dataset',
            str(recorded.path),
            '-o',
            str(out),
            '--label-topic',
            LABELS,
            '--split-guard',
            '0',
            '--no-progress',
            '--json',
        ]
    )
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    assert report['totals']['written'] == 4
    rc = main(['bag2dataset', str(recorded.path), '-o', str(out), '--depth-topic', '/nope'])
    assert rc == 1
    assert 'FAILED: ' in capsys.readouterr().out
    assert main(['bag2dataset', str(tmp_path / 'missing.mcap'), '-o', str(out)]) == 2
    # The summary of a rerun: everything is already there.
    args = ['bag2dataset', str(recorded.path), '-o', str(out), '--label-topic', LABELS]
    assert main([*args, '--split-guard', '0', '--no-progress']) == 0
    text = capsys.readouterr().out
    assert 'messages: colour 4, depth 4, camera_info 4, labels 4' in text
    assert 'frames: written 0, already there 4, near-duplicates 0' in text
    assert 'total: 0 written, 4 already there, 0 frame errors, 0 failed' in text


def test_pseudo_labels_from_checkpoint(tmp_path, recording):
    """(b) pseudo-labels: a checkpoint whose logits are a known function of depth."""
    pytest.importorskip('torch')
    from pseudo_backend import write_depth_bins_checkpoint

    from rgbd_seg_ros.inference.labeller import CheckpointLabeller

    recorded = recording(frames=3, labels=False)
    ckpt = tmp_path / 'bins.safetensors'
    write_depth_bins_checkpoint(ckpt)
    out = tmp_path / 'ds'
    labeller = CheckpointLabeller(str(ckpt))
    classes, ignore = labeller.classes()
    options = _options(
        labeller=labeller, classes=classes, ignore_index=ignore, confidence_threshold=0.9
    )
    report = convert([recorded.path], out, options)
    frames = report.recordings[0].frames
    assert frames.written == 3 and frames.low_confidence_pixels > 0
    assert report.label_source == 'pseudo'
    reader = DatasetReader(out)
    assert reader.meta.class_names == ['near', 'middle', 'far']
    for record in reader.frames():
        sample = reader.load(record.frame_id)
        x = sample.depth_mm.astype(np.float64) / 1000.0 / 10.0
        logits = np.stack([np.zeros_like(x), 10 * x - 1, 20 * x - 4])
        prob = np.exp(logits - logits.max(0)) / np.exp(logits - logits.max(0)).sum(0)
        conf = prob.max(0)
        want = np.where(conf < 0.9, 255, logits.argmax(0))
        clear = np.abs(conf - 0.9) > 1e-3  # pixels not on the threshold
        np.testing.assert_array_equal(sample.labels[clear], want[clear])
        np.testing.assert_allclose(sample.confidence, conf, atol=2e-3)


def test_pseudo_labeller_pickles_without_its_model(tmp_path):
    pytest.importorskip('torch')
    import pickle

    from pseudo_backend import write_depth_bins_checkpoint

    from rgbd_seg_ros.inference.labeller import CheckpointLabeller

    ckpt = tmp_path / 'bins.safetensors'
    write_depth_bins_checkpoint(ckpt)
    labeller = CheckpointLabeller(str(ckpt))
    rgb = np.zeros((8, 8, 3), np.uint8)
    depth = np.full((8, 8), 2000, np.uint16)
    labels, confidence = labeller(rgb, depth, K)
    assert labels.shape == confidence.shape == (8, 8) and (labels == 1).all()
    copy = pickle.loads(pickle.dumps(labeller))
    assert copy._engine is None and labeller._engine is not None
    assert len(pickle.dumps(labeller)) < 1000  # the model stays behind
    np.testing.assert_array_equal(copy(rgb, depth, K)[0], labels)


@pytest.mark.slow
def test_pseudo_labels_with_worker_processes_match_inline(tmp_path, recording, capsys):
    """--checkpoint through the CLI: with --jobs 2 each worker loads the labeller's model."""
    pytest.importorskip('torch')
    from rgbd_seg_ros.paths import default_model

    model = default_model()
    if model is None:
        pytest.skip('no embedded default model')
    recorded = recording(frames=4, labels=False)
    common = ['--checkpoint', str(model), '--split-guard', '0', '--no-progress', '--json']
    outs = {}
    for jobs in ('1', '2'):
        outs[jobs] = tmp_path / f'jobs{jobs}'
        args = [str(recorded.path), '-o', str(outs[jobs]), '--jobs', jobs, '--chunk-frames', '2']
        assert main(['bag2dataset', *args, *common]) == 0
        report = json.loads(capsys.readouterr().out)
        assert report['totals']['written'] == 4 and report['label_source'] == 'pseudo'
    inline, workers = DatasetReader(outs['1']), DatasetReader(outs['2'])
    assert workers.meta.class_names == inline.meta.class_names
    assert inline.meta.class_names[:3] == ['floor', 'wall', 'ceiling']
    assert [r.frame_id for r in workers.frames()] == [r.frame_id for r in inline.frames()]
    for record in inline.frames():
        a, b = inline.load(record.frame_id), workers.load(record.frame_id)
        np.testing.assert_allclose(b.confidence, a.confidence, atol=1e-3)
        clear = np.abs(a.confidence - 0.5) > 1e-3  # pixels not on the threshold
        np.testing.assert_array_equal(b.labels[clear], a.labels[clear])


def test_prefers_raw_over_transport_topics(tmp_path):
    from bag_fixtures import frame_arrays

    from rgbd_seg_ros.data.rosbag_messages import (
        CAMERA_INFO,
        COMPRESSED_IMAGE,
        IMAGE,
        RecordingWriter,
    )

    path = tmp_path / 'transport'
    rgb = frame_arrays(0)[0]
    topics = {
        '/cam/color/image_raw': IMAGE,
        '/cam/color/image_raw/compressed': COMPRESSED_IMAGE,
        '/cam/depth/image_rect_raw': IMAGE,
        '/cam/depth/image_rect_raw/compressedDepth': COMPRESSED_IMAGE,
        '/cam/color/camera_info': CAMERA_INFO,
        '/cam/depth/camera_info': CAMERA_INFO,
    }
    with RecordingWriter(path) as rec:
        for name, msgtype in topics.items():
            rec.add_topic(name, msgtype)
        rec.write('/cam/color/image_raw', 1, rec.image(rgb, 'rgb8', 1))
    with Recording(path) as rec:
        choice = choose_topics(rec, ConvertOptions())
    assert (choice.colour, choice.depth, choice.info) == (
        '/cam/color/image_raw',
        '/cam/depth/image_rect_raw',
        '/cam/color/camera_info',
    )


def test_corrupt_middle_of_recording(tmp_path, recording):
    """Garbage inside the data: what is intact is converted, nothing corrupt is written."""
    recorded = recording(frames=40, labels=False)
    mcap_file = next(recorded.path.glob('*.mcap'))
    size = mcap_file.stat().st_size
    with open(mcap_file, 'r+b') as stream:
        stream.seek(size // 2)
        stream.write(b'\xde\xad\xbe\xef' * 10_000)  # 40 KB: hits several record headers
    report = convert([recorded.path], tmp_path / 'ds', _options())
    entry = report.recordings[0]
    assert entry.damage
    assert 5 < entry.frames.written < 40
    _check_dataset(tmp_path / 'ds', recorded, labels=False, count=entry.frames.written)


def _tree(root):
    """Every file's bytes and mtime, the lock files aside (their content names the last
    process that tried to own the dataset)."""
    return {
        p.relative_to(root).as_posix(): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in root.rglob('*')
        if p.is_file() and p.name not in ('.lock', '.writers')
    }


def test_a_run_where_every_recording_fails_writes_nothing(tmp_path, recording, capsys):
    recorded = recording(frames=3, labels=False)
    out = tmp_path / 'new' / 'ds'
    args = ['bag2dataset', str(recorded.path), '-o', str(out), '--no-progress']
    assert main([*args, '--depth-topic', '/nope']) == 1
    captured = capsys.readouterr()
    assert 'FAILED' in captured.out and 'annotate' not in captured.out
    assert 'could not be converted' in captured.err
    assert 'no dataset frame' in captured.err
    assert not (tmp_path / 'new').exists()
    # Into an existing dataset: nothing is touched, not even the report.
    assert main([*args, '--split-guard', '0']) == 0
    capsys.readouterr()
    before = _tree(out)
    assert main([*args, '--depth-topic', '/nope']) == 1
    assert _tree(out) == before
    assert 'could not be converted' in capsys.readouterr().err


def test_a_run_where_every_frame_fails_exits_non_zero(tmp_path, recording, capsys):
    """The colour topic given as the depth topic: planned, but no frame decodes."""
    recorded = recording(frames=4, labels=False)
    out = tmp_path / 'ds'
    args = ['bag2dataset', str(recorded.path), '-o', str(out), '--no-progress', '--json']
    assert main([*args, '--rgb-topic', DEPTH, '--depth-topic', DEPTH]) == 1
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert report['recordings'][0]['frames']['errors'] == {'colour_undecodable': 4}
    assert report['totals']['written'] == 0 and report['dataset_frames'] == 0
    assert 'every frame failed (4); nothing was written' in captured.err
    assert len(DatasetReader(out)) == 0


def test_a_rerun_is_refused_while_writers_of_a_killed_run_live(tmp_path, recording):
    """A pool worker of a killed run (its owner gone, still writing) keeps a rerun out."""
    import signal
    import subprocess
    import sys

    recorded = recording(frames=3, labels=False)
    out = tmp_path / 'ds'
    convert([recorded.path], out, _options(max_frames=1))
    stale = subprocess.Popen(
        [
            sys.executable,
            '-c',
            'import os, sys, time\n'
            'from rgbd_seg_ros.data.dataset_lock import DatasetLock, WriterLock\n'
            'owner = DatasetLock(sys.argv[1]); writer = WriterLock(sys.argv[1], os.getpid())\n'
            'owner.close(); print("writing", flush=True); time.sleep(120)\n',
            str(out),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert stale.stdout.readline().strip() == 'writing'
        before = _tree(out)
        with pytest.raises(DatasetError, match='still writing'):
            convert([recorded.path], out, _options(writers_wait_s=0.2))
        assert _tree(out) == before
    finally:
        stale.send_signal(signal.SIGKILL)
        stale.wait()
    report = convert([recorded.path], out, _options(writers_wait_s=0.2))
    assert report.totals.written == 2 and report.dataset_frames == 3


def test_colour_only_on_compressed_is_used_raw_preferred(tmp_path, recording, capsys):
    """A fifth of the frames exist only on /compressed: they are converted too; where both
    topics have a frame the raw one is used, and --list and the report give the counts."""
    from bag_fixtures import COLOUR, COLOUR_COMPRESSED

    only, both = {3, 7, 8, 15}, {0, 1, 2}
    recorded = recording(frames=20, compressed_only=only, compressed_too=both)
    assert main(['bag2dataset', '--list', str(recorded.path)]) == 0
    listing = capsys.readouterr().out
    assert f'would convert: rgb={COLOUR}+{COLOUR_COMPRESSED};' in listing
    assert (
        f'colour stamps: 16 on {COLOUR}, 4 only on {COLOUR_COMPRESSED} (used), 3 on both '
        '(raw used)' in listing
    )
    out = tmp_path / 'ds'
    report = convert([recorded.path], out, _options(label_topic=LABELS))
    reader = _check_dataset(out, recorded)  # every frame, pixel-exact, raw where both
    entry = report.recordings[0]
    assert entry.frames.colour_topics == {COLOUR: 16, COLOUR_COMPRESSED: 4}
    assert entry.colour_sources.to_dict() == {
        'raw_topic': COLOUR,
        'compressed_topic': COLOUR_COMPRESSED,
        'raw': 16,
        'compressed_only': 4,
        'both': 3,
    }
    from_compressed = {
        r.stamp_ns for r in reader.frames() if f'rgb={COLOUR_COMPRESSED};' in r.topics
    }
    assert from_compressed == {recorded.stamps[i] for i in only}
    text = format_report(report)
    assert f'colour of the frames written: 16 from {COLOUR}, 4 from {COLOUR_COMPRESSED}' in text
    saved = json.loads((out / 'conversion_report.json').read_text())
    assert saved['recordings'][0]['frames']['colour_topics'] == {COLOUR: 16, COLOUR_COMPRESSED: 4}


def _with_label_like_topics(path, topics: dict[str, str]):
    """A one-frame recording: colour, depth, camera_info and ``topics`` {name: encoding}."""
    from bag_fixtures import COLOUR, frame_arrays

    from rgbd_seg_ros.data.rosbag_messages import CAMERA_INFO, IMAGE, RecordingWriter

    rgb, depth, labels = frame_arrays(0)
    with RecordingWriter(path) as rec:
        for name in (COLOUR, DEPTH, *topics):
            rec.add_topic(name, IMAGE)
        rec.add_topic(INFO, CAMERA_INFO)
        rec.write(COLOUR, 1, rec.image(rgb, 'rgb8', 1))
        rec.write(DEPTH, 1, rec.image(depth, '16UC1', 1))
        rec.write(INFO, 1, rec.camera_info(K, W, H, 1))
        for name, encoding in topics.items():
            image = {'rgb8': rgb, 'mono8': labels}.get(encoding, labels.astype(np.uint16))
            rec.write(name, 1, rec.image(image, encoding, 1))
    return path


def test_label_topic_auto_is_detected(tmp_path, recording, capsys):
    recorded = recording(frames=6)
    assert main(['bag2dataset', '--list', str(recorded.path)]) == 0
    assert f'label topic found: {LABELS} (convert it with --label-topic auto)' in (
        capsys.readouterr().out
    )
    out = tmp_path / 'ds'
    args = ['bag2dataset', str(recorded.path), '-o', str(out), '--label-topic', 'auto']
    assert main([*args, '--split-guard', '0', '--no-progress', '--json']) == 0
    report = json.loads(capsys.readouterr().out)
    assert report['label_source'] == 'topic'
    assert report['recordings'][0]['topics']['label'] == LABELS
    _check_dataset(out, recorded)  # the recorded labels, pixel for pixel
    options = ConvertOptions(detect_label_topic=True)
    assert options.label_source == 'topic'


def test_label_topic_detection_names_what_it_found(tmp_path):
    def detect(name, topics):
        path = _with_label_like_topics(tmp_path / name, topics)
        with Recording(path) as rec:
            return choose_topics(rec, ConvertOptions(detect_label_topic=True)).label

    # One label-like name with a class-id encoding; the node's own output is not it.
    assert (
        detect(
            'one',
            {
                '/cam/semantic': 'mono16',
                '/segmentation/labels': 'mono8',
                '/cam/label_overlay': 'rgb8',
            },
        )
        == '/cam/semantic'
    )
    with pytest.raises(DatasetError, match='several label topics') as several:
        detect('two', {'/a/labels': 'mono8', '/b/class_ids': '16UC1'})
    assert '/a/labels (mono8)' in str(several.value) and '/b/class_ids (16UC1)' in str(
        several.value
    )
    with pytest.raises(DatasetError, match='no label topic found') as none:
        detect('none', {'/segmentation/labels': 'mono8', '/cam/label_overlay': 'rgb8'})
    text = str(none.value)
    assert "/segmentation/labels (mono8): the segmentation node's own output" in text
    assert '/cam/label_overlay (rgb8): not a class-id encoding' in text
    assert '--label-topic' in text and 'label_topic' in text
    with pytest.raises(DatasetError, match='no image topic is named like labels'):
        detect('nothing', {})


def test_a_failed_detection_fails_the_recording_with_its_reason(tmp_path, recording, capsys):
    recorded = recording(frames=3, labels=False)
    out = tmp_path / 'ds'
    args = ['bag2dataset', str(recorded.path), '-o', str(out), '--label-topic', 'auto']
    assert main([*args, '--no-progress']) == 1
    assert 'FAILED: ' in capsys.readouterr().out and not out.exists()
