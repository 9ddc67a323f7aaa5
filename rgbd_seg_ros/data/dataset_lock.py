"""Who may write a dataset folder: one owner process, and the writer processes it started.

* The **owner** (a conversion's main process, an import, a finalising :class:`DatasetWriter`)
  holds an exclusive flock on ``root/.lock`` for its whole run and writes its pid into the
  file. A second owner is refused while the lock is held.
* Every **writer** of frames that works for an owner (a conversion's pool workers, or the owner
  itself converting inline) holds a shared flock on ``root/.writers`` while it writes and,
  after taking it, checks that ``.lock`` is held by the owner that gave it the work
  (:class:`WriterLock`). A worker whose owner has gone therefore writes nothing.
* A new owner, once it holds ``.lock``, waits until no process holds ``.writers`` (the workers
  of a killed run, which die with their parent, may take a moment to go), at most
  ``writers_wait_s``, and is refused after that. Then nobody can be writing, so the
  temporaries a killed writer left are removed.

Why the order matters: a writer takes ``.writers`` *before* it checks the owner, so if the
check passes, the owner was alive while the writer already held ``.writers``; any later owner
acquires ``.lock`` only after that owner died, and then finds the writer in ``.writers`` and
waits for it.

Locks are ``flock``: released by the kernel when the process dies, on local file systems.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from pathlib import Path
from typing import TextIO

from rgbd_seg_ros.core.atomic_files import remove_temporaries
from rgbd_seg_ros.errors import DatasetError

LOCK_FILE = '.lock'
WRITERS_FILE = '.writers'
#: Folders of a dataset that hold files written atomically (hence, after a kill, temporaries).
WRITTEN_FOLDERS: tuple[str, ...] = ('', 'rgb', 'depth', 'labels', 'confidence')
#: How long a new owner waits for the writers of a killed run to exit.
WRITERS_WAIT_S = 10.0
_POLL_S = 0.02


def _try_flock(stream: TextIO, operation: int) -> bool:
    try:
        fcntl.flock(stream.fileno(), operation | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


def owner_pid(root: Path) -> int | None:
    """The pid of the process that owns the dataset in ``root`` now, or None when nobody does."""
    try:
        stream = open(root / LOCK_FILE, encoding='ascii')  # noqa: SIM115 - closed below
    except FileNotFoundError:
        return None
    with stream:
        if _try_flock(stream, fcntl.LOCK_SH):
            return None  # the lock was free: no owner
        text = stream.read().strip()
    return int(text) if text.isdigit() else None


class DatasetLock:
    """The owner's lock on a dataset folder (see the module docstring); a context manager.

    ``removed_temporaries`` counts the temporaries of killed writers removed on acquiring.
    """

    def __init__(self, root: str | os.PathLike[str], writers_wait_s: float = WRITERS_WAIT_S):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._stream: TextIO = open(self.root / LOCK_FILE, 'a+', encoding='ascii')  # noqa: SIM115
        if not _try_flock(self._stream, fcntl.LOCK_EX):
            self._stream.close()
            holder = owner_pid(self.root)
            by = f' (pid {holder})' if holder is not None else ''
            raise DatasetError(
                f'another process{by} is writing to the dataset in {self.root} (lock {LOCK_FILE})'
            )
        try:
            self._stream.seek(0)
            self._stream.truncate()
            self._stream.write(f'{os.getpid()}\n')
            self._stream.flush()
            self._wait_for_writers(writers_wait_s)
            self.removed_temporaries = sum(
                remove_temporaries(self.root / sub, keep_live_writers=False)
                for sub in WRITTEN_FOLDERS
            )
        except BaseException:
            self.close()
            raise

    def _wait_for_writers(self, wait_s: float) -> None:
        with open(self.root / WRITERS_FILE, 'a+', encoding='ascii') as writers:
            deadline = time.monotonic() + wait_s
            while not _try_flock(writers, fcntl.LOCK_EX):
                if time.monotonic() >= deadline:
                    raise DatasetError(
                        f'processes of an interrupted run are still writing to {self.root} '
                        f'(they hold {WRITERS_FILE}) after {wait_s:g} s; wait until they exit'
                    )
                time.sleep(_POLL_S)
            fcntl.flock(writers.fileno(), fcntl.LOCK_UN)

    def close(self) -> None:
        if not self._stream.closed:
            self._stream.close()  # closing the descriptor releases the flock

    def __enter__(self) -> DatasetLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class WriterLock:
    """A writer's shared hold on ``root/.writers``, taken only while ``owner`` owns the
    dataset (DatasetError otherwise); a context manager."""

    def __init__(self, root: str | os.PathLike[str], owner: int) -> None:
        self.root = Path(root)
        self._stream: TextIO = open(self.root / WRITERS_FILE, 'a+', encoding='ascii')  # noqa: SIM115
        try:
            fcntl.flock(self._stream.fileno(), fcntl.LOCK_SH)
            holder = owner_pid(self.root)
        except BaseException:
            self._stream.close()
            raise
        if holder != owner:
            self._stream.close()
            now = 'nobody owns it' if holder is None else f'pid {holder} owns it'
            raise DatasetError(
                f'not writing to {self.root}: this writer works for pid {owner}, but {now} '
                f'(lock {LOCK_FILE})'
            )

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._stream.close()

    def __enter__(self) -> WriterLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
