"""The automatic class list comes from the whole dataset, not from the run that finishes.

A recording whose first frames hold label ids 1, 2 and 3 and whose later frames hold only 1
and 2: a conversion killed after it journalled the id-3 frames, then resumed, must still
list class 3, and so must a rerun that finds every frame already written.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from bag_fixtures import COLOUR, DEPTH, INFO, LABELS, H, K, W

from rgbd_seg_ros.data import layout
from rgbd_seg_ros.data.convert import ConvertOptions, convert
from rgbd_seg_ros.data.layout import DatasetMeta, DatasetReader
from rgbd_seg_ros.data.rosbag_messages import CAMERA_INFO, IMAGE, RecordingWriter

WITH_ID_3 = 10  # the first frames: ids 1, 2 and 3; the rest: 1 and 2 only
PERIOD_NS = 100_000_000


def labels_of(i: int) -> np.ndarray:
    labels = np.ones((H, W), np.uint8)
    labels[:, W // 2 :] = 2
    if i < WITH_ID_3:
        labels[: H // 3] = 3
    labels[-1, :4] = 255
    return labels


def write_recording(path: Path, frames: int, first: int = 0) -> None:
    """Colour, depth, camera_info and labels of frames ``first`` .. ``first + frames - 1``."""
    rng = np.random.default_rng(first)
    with RecordingWriter(path, 'mcap') as rec:
        for topic in (COLOUR, DEPTH, LABELS):
            rec.add_topic(topic, IMAGE)
        rec.add_topic(INFO, CAMERA_INFO)
        for i in range(first, first + frames):
            stamp = 1_000_000_000 + i * PERIOD_NS
            rgb = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
            depth = rng.integers(300, 9000, (H, W), dtype=np.uint16)
            rec.write(COLOUR, stamp, rec.image(rgb, 'rgb8', stamp))
            rec.write(DEPTH, stamp, rec.image(depth, '16UC1', stamp))
            rec.write(INFO, stamp, rec.camera_info(K, W, H, stamp))
            rec.write(LABELS, stamp + 1_000_000, rec.image(labels_of(i), 'mono8', stamp))


def journal_rows(root: Path) -> int:
    return sum(
        p.read_text(encoding='utf-8').count('\n')
        for p in (root / layout.JOURNAL_DIR).glob('*.jsonl')
    )


def class_ids(root: Path) -> list[int]:
    return [c.id for c in DatasetMeta.load(root / layout.META_FILE).classes]


def options(**kw) -> ConvertOptions:
    return ConvertOptions(label_topic=LABELS, guard_s=0.0, progress=False, fsync=False, **kw)


def test_killed_conversion_resumes_with_every_class(tmp_path):
    frames = 300
    recording = tmp_path / 'rec'
    write_recording(recording, frames)
    out = tmp_path / 'ds'
    command = [
        sys.executable,
        '-m',
        'rgbd_seg_ros.cli.main',
        'bag2dataset',
        str(recording),
        '--out',
        str(out),
        '--label-topic',
        LABELS,
        '--split-guard',
        '0',
        '--chunk-frames',
        '20',
        '--no-progress',
    ]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        # Kill once the journal shows every frame with id 3 (fsync'ed, in stamp order): the
        # point of the kill is a state of the dataset, not a moment in time.
        deadline = time.monotonic() + 120
        while journal_rows(out) < WITH_ID_3 if out.exists() else True:
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, 'the conversion journalled nothing'
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    done = journal_rows(out)
    assert WITH_ID_3 <= done < frames  # killed mid-way: unfinished, nothing named yet
    assert class_ids(out) == []

    report = convert([recording], out, options())
    assert report.totals.written == frames - done and report.totals.skipped_existing == done
    assert class_ids(out) == [1, 2, 3]  # id 3 is only in frames the killed run wrote
    reader = DatasetReader(out)
    assert len(reader.frames()) == frames
    first = reader.frames()[0]
    assert 3 in np.unique(reader.load(first.frame_id).labels)


def test_rerun_with_nothing_left_to_write_names_every_class(tmp_path):
    """Killed after every frame was journalled but before naming: the rerun writes nothing
    and still lists the classes (it once wrote ``classes: []``)."""
    recording = tmp_path / 'rec'
    write_recording(recording, 14)
    out = tmp_path / 'ds'
    convert([recording], out, options())
    assert class_ids(out) == [1, 2, 3]
    meta = DatasetMeta.load(out / layout.META_FILE)
    meta.classes = []  # the state such a kill leaves: frames on disk, no class named
    meta.save(out / layout.META_FILE)
    report = convert([recording], out, options())
    assert report.totals.written == 0 and report.totals.skipped_existing == 14
    assert class_ids(out) == [1, 2, 3]
    names = [c.name for c in DatasetMeta.load(out / layout.META_FILE).classes]
    assert names == ['class_1', 'class_2', 'class_3']


def test_new_ids_in_a_later_recording_become_classes(tmp_path):
    """A dataset named automatically takes a later recording's new ids as classes (they
    were mapped to the ignore id as 'unknown')."""
    out = tmp_path / 'ds'
    later = tmp_path / 'later'
    write_recording(later, 4, first=WITH_ID_3)  # ids 1 and 2 only
    convert([later], out, options())
    assert class_ids(out) == [1, 2]
    earlier = tmp_path / 'earlier'
    write_recording(earlier, 4)  # ids 1, 2 and 3
    convert([earlier], out, options())
    assert class_ids(out) == [1, 2, 3]
    reader = DatasetReader(out)
    ids = set()
    for record in reader.frames():
        ids |= set(np.unique(reader.load(record.frame_id).labels).tolist())
    assert ids == {1, 2, 3, 255}
