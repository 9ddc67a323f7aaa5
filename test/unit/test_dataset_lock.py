"""The dataset lock: one owner, writers only while their owner holds it, and a new owner that
waits for (and is refused by) the writers of an interrupted run, then clears their leftovers.

The stale writer is a real process: it owns the dataset, starts writing, and loses its owner
lock the way a worker does when its main process is killed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from rgbd_seg_ros.core.atomic_files import temporary_path
from rgbd_seg_ros.data import layout as L
from rgbd_seg_ros.data.dataset_lock import LOCK_FILE, DatasetLock, WriterLock, owner_pid
from rgbd_seg_ros.errors import DatasetError

STALE_WRITER = """
import sys, time
from rgbd_seg_ros.data.dataset_lock import DatasetLock, WriterLock
root = sys.argv[1]
owner = DatasetLock(root)
writer = WriterLock(root, owner=__import__('os').getpid())
owner.close()  # its owner is gone (killed); the writer is still running
print('writing', flush=True)
time.sleep(120)
"""


def _meta() -> L.DatasetMeta:
    return L.DatasetMeta(classes=[L.ClassInfo(0, 'floor')])


def test_the_owner_names_itself_while_it_holds_the_lock(tmp_path: Path) -> None:
    assert owner_pid(tmp_path) is None
    with DatasetLock(tmp_path):
        assert owner_pid(tmp_path) == os.getpid()
        with pytest.raises(DatasetError, match=rf'another process \(pid {os.getpid()}\)'):
            DatasetLock(tmp_path)
    assert owner_pid(tmp_path) is None
    assert (tmp_path / LOCK_FILE).exists()


def test_a_writer_needs_its_owner(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match='nobody owns it'):
        L.DatasetWriter(tmp_path, _meta(), finalize=False)
    with DatasetLock(tmp_path):
        with pytest.raises(DatasetError, match=f'pid {os.getpid()} owns it'):
            WriterLock(tmp_path, owner=os.getpid() + 1)
        with L.DatasetWriter(tmp_path, _meta(), finalize=False, owner_pid=os.getpid()):
            pass


def test_a_new_owner_waits_for_live_writers_then_is_refused(tmp_path: Path) -> None:
    stale = subprocess.Popen(
        [sys.executable, '-c', STALE_WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert stale.stdout.readline().strip() == 'writing'
        with pytest.raises(DatasetError, match='still writing'):
            DatasetLock(tmp_path, writers_wait_s=0.2)
        with pytest.raises(DatasetError, match='still writing'):
            L.DatasetWriter(tmp_path, _meta())  # an import or any finalising writer as well
        assert owner_pid(tmp_path) is None  # a refused owner leaves the lock free
    finally:
        stale.send_signal(signal.SIGKILL)
        stale.wait()
    with DatasetLock(tmp_path, writers_wait_s=0.2):  # its writers gone, the dataset is free
        pass


def test_taking_the_lock_removes_what_killed_writers_left(tmp_path: Path) -> None:
    (tmp_path / 'rgb').mkdir()
    left = [
        temporary_path(tmp_path / 'rgb' / 'f.png'),  # names this live process: no matter
        temporary_path(tmp_path / 'index.csv'),
    ]
    for path in left:
        path.write_bytes(b'half a file')
    (tmp_path / 'rgb' / 'f.png').write_bytes(b'a frame')
    with DatasetLock(tmp_path) as lock:
        assert lock.removed_temporaries == 2
    assert not any(p.exists() for p in left)
    assert (tmp_path / 'rgb' / 'f.png').exists()
