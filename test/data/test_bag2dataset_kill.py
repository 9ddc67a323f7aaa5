"""Killing ``rgbd-seg bag2dataset --jobs 2``: no process left behind, no half-written output.

Real processes on a real recording written here. The main process is signalled once its
journals hold a few frames (the files are polled, no fixed sleep); then every process it had
started must be gone within a bounded wait (read from /proc), a rerun must be refused or safe,
and resuming must give, byte for byte, the dataset an uninterrupted conversion writes.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import proc_tree
import pytest
import yaml
from bag_fixtures import LABELS

from rgbd_seg_ros.core.atomic_files import is_temporary
from rgbd_seg_ros.data.dataset_lock import LOCK_FILE, WRITERS_FILE, DatasetLock
from rgbd_seg_ros.data.layout import DatasetReader, frame_paths

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith('linux'), reason='reads /proc; parent-death signal is Linux'
)

FRAMES = 400
SIGNAL_AFTER = 8  # journalled frames
CLASSES = {'classes': [{'id': i, 'name': f'c{i}', 'color': [i, i, i]} for i in range(4)]}
RGBD_SEG = str(Path(sys.executable).with_name('rgbd-seg'))
NOT_COMPARED = {LOCK_FILE, WRITERS_FILE, 'conversion_report.json', 'dataset.yaml'}


def _command(recording: Path, out: Path, classes: Path) -> list[str]:
    return [
        RGBD_SEG,
        'bag2dataset',
        str(recording),
        '-o',
        str(out),
        '--label-topic',
        LABELS,
        '--classes',
        str(classes),
        '--jobs',
        '2',
        '--chunk-frames',
        '10',
        '--split-guard',
        '0',
        '--no-progress',
    ]


def _run(command: list[str], log: Path) -> subprocess.CompletedProcess[str]:
    with open(log, 'w') as stream:
        return subprocess.run(
            command, stdout=stream, stderr=subprocess.STDOUT, text=True, timeout=600, check=False
        )


def _journalled(out: Path) -> int:
    folder = out / '.journal'
    if not folder.is_dir():
        return 0
    count = 0
    for path in folder.glob('*.jsonl'):
        try:
            count += path.read_text().count('\n')
        except FileNotFoundError:
            continue
    return count


def _files(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob('*'))
        if p.is_file() and p.name not in NOT_COMPARED
    }


def _meta_without_time(root: Path) -> dict:
    data = yaml.safe_load((root / 'dataset.yaml').read_text())
    data['provenance'].pop('created_utc')
    return data


def _assert_same_dataset(got: Path, want: Path) -> None:
    got_files, want_files = _files(got), _files(want)
    assert sorted(got_files) == sorted(want_files)
    different = [name for name in want_files if got_files[name] != want_files[name]]
    assert not different, different[:5]
    assert _meta_without_time(got) == _meta_without_time(want)
    assert not [p for p in got.rglob('*') if is_temporary(p.name)]


@pytest.fixture(scope='module')
def conversion(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The recording, the class list and the dataset an uninterrupted run makes of it."""
    from bag_fixtures import write_recording

    base = tmp_path_factory.mktemp('kill')
    recorded = write_recording(base / 'rec', frames=FRAMES)
    classes = base / 'classes.yaml'
    classes.write_text(yaml.safe_dump(CLASSES))
    reference = base / 'reference'
    done = _run(_command(recorded.path, reference, classes), base / 'reference.log')
    assert done.returncode == 0, (base / 'reference.log').read_text()
    assert len(DatasetReader(reference)) == FRAMES
    return {'recording': recorded.path, 'classes': classes, 'reference': reference}


def _start_and_signal(
    conversion: dict[str, Path], out: Path, sig: signal.Signals
) -> tuple[subprocess.Popen[str], list[proc_tree.Proc], Path]:
    """Start a conversion, signal it once its journals hold SIGNAL_AFTER frames."""
    log = out.with_suffix('.log')
    with open(log, 'w') as stream:
        main = subprocess.Popen(
            _command(conversion['recording'], out, conversion['classes']),
            stdout=stream,
            stderr=subprocess.STDOUT,
            text=True,
        )
    started: list[proc_tree.Proc] = []
    try:
        proc_tree.wait_until(
            lambda: _journalled(out) >= SIGNAL_AFTER, 300, f'{SIGNAL_AFTER} frames', main
        )
        started = proc_tree.descendants(main.pid)
        workers = [p for p in started if _is_pool_worker(p)]
        assert len(workers) == 2, started
        main.send_signal(sig)
        main.wait(timeout=120)
    except BaseException:
        main.kill()
        main.wait()
        proc_tree.kill(started)
        raise
    return main, started, log


def _is_pool_worker(proc: proc_tree.Proc) -> bool:
    try:
        cmdline = Path(f'/proc/{proc.pid}/cmdline').read_bytes()
    except FileNotFoundError:
        return False
    return b'multiprocessing.spawn' in cmdline and b'resource_tracker' not in cmdline


def test_sigkill_leaves_no_worker_and_the_resume_is_exact(conversion, tmp_path):
    out = tmp_path / 'ds'
    main, started, _ = _start_and_signal(conversion, out, signal.SIGKILL)
    try:
        assert main.returncode == -signal.SIGKILL
        assert _journalled(out) < FRAMES, 'the run finished before it was killed'
        # A rerun right away, while the killed run's workers may still be exiting: it waits
        # for them (a few seconds at most) and is refused if they outlive that, never mixed in.
        rerun = _run(
            _command(conversion['recording'], out, conversion['classes']), tmp_path / 'rerun.log'
        )
        text = (tmp_path / 'rerun.log').read_text()
        assert rerun.returncode == 0 or (rerun.returncode == 2 and 'still writing' in text), text
        assert proc_tree.wait_gone(started) == [], 'processes of the killed run still live'
    finally:
        proc_tree.kill(started)
    resumed = _run(
        _command(conversion['recording'], out, conversion['classes']), tmp_path / 'resume.log'
    )
    assert resumed.returncode == 0, (tmp_path / 'resume.log').read_text()
    _assert_same_dataset(out, conversion['reference'])


def test_sigterm_stops_cleanly_and_the_resume_is_exact(conversion, tmp_path):
    out = tmp_path / 'ds'
    main, started, log = _start_and_signal(conversion, out, signal.SIGTERM)
    try:
        assert main.returncode == 143, log.read_text()
        # The main process stopped and reaped its workers before it exited.
        assert proc_tree.wait_gone(started) == []
    finally:
        proc_tree.kill(started)
    # A clean stop: the lock is free, every journalled frame is in index.csv with its files,
    # no journal and no temporary is left.
    with DatasetLock(out, writers_wait_s=0):
        pass
    assert not list((out / '.journal').glob('*.jsonl'))
    assert not [p for p in out.rglob('*') if is_temporary(p.name)]
    reader = DatasetReader(out)
    assert 0 < len(reader) < FRAMES
    for record in reader.frames():
        paths = frame_paths(out, record.frame_id)
        assert paths['rgb'].is_file() and paths['depth'].is_file() and paths['labels'].is_file()
    resumed = _run(
        _command(conversion['recording'], out, conversion['classes']), tmp_path / 'resume.log'
    )
    assert resumed.returncode == 0, (tmp_path / 'resume.log').read_text()
    _assert_same_dataset(out, conversion['reference'])
