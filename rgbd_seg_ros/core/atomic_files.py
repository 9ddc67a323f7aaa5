"""Files written atomically: a temporary file beside the destination, flushed, then renamed.

A reader never sees half a file. A writer killed mid-write leaves at most a temporary named
``.<name>.<pid>.<8 hex>.tmp`` in the destination folder; :func:`remove_temporaries` lets the
next writer of that folder clear them.

Temporaries are created with mode ``0666`` less the umask, as any file opened for writing is
(``0644`` under the usual umask 022), not ``0600`` as ``tempfile.mkstemp`` makes them: a
checkpoint or a dataset written by the trainer must be readable by a node running as another
user, and the rename keeps the temporary's mode.

Standard library only: it sits in ``core`` so every layer may use it.
"""

from __future__ import annotations

import contextlib
import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

_TEMPORARY_RE = re.compile(r'^\..+\.(?P<pid>\d+)\.[0-9a-f]{8}\.tmp$')


def temporary_path(path: Path) -> Path:
    """A new temporary name for ``path``, in its folder, naming this process."""
    return path.with_name(f'.{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp')


def create_temporary(path: Path) -> tuple[int, Path]:
    """Create and open a new temporary file for ``path``: (descriptor, temporary path)."""
    tmp = temporary_path(path)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, 'O_CLOEXEC', 0)
    return os.open(tmp, flags, 0o666), tmp


def fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (where the platform allows opening folders)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str], fsync: bool = True) -> Iterator[BinaryIO]:
    """A binary stream whose contents replace ``path`` when the block ends without error.

    On an error the temporary is removed and ``path`` is untouched.
    """
    path = Path(path)
    fd, tmp = create_temporary(path)
    try:
        with os.fdopen(fd, 'wb') as stream:
            yield stream
            stream.flush()
            if fsync:
                os.fsync(stream.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], fsync: bool = True) -> Iterator[Path]:
    """A temporary path for writers that want a file name (safetensors, matplotlib); it
    replaces ``path`` when the block ends without error, and is removed otherwise.

    A writer may replace the temporary with a file of its own (safetensors writes its own
    0600 temporary and renames it over the name it was given): the mode the temporary was
    created with is put back.
    """
    path = Path(path)
    fd, tmp = create_temporary(path)
    mode = os.fstat(fd).st_mode & 0o777
    os.close(fd)
    try:
        yield tmp
        if tmp.stat().st_mode & 0o777 != mode:
            os.chmod(tmp, mode)
        if fsync:
            sync_fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(sync_fd)
            finally:
                os.close(sync_fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, fsync: bool = True) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename."""
    with atomic_output(path, fsync=fsync) as stream:
        stream.write(data)


def is_temporary(name: str) -> bool:
    """True for the name of a temporary file this module (or an earlier mkstemp) made."""
    return name.startswith('.') and name.endswith('.tmp')


def _writer_alive(name: str) -> bool:
    match = _TEMPORARY_RE.match(name)
    if match is None:
        return False
    pid = int(match['pid'])
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_temporaries(folder: Path, *, keep_live_writers: bool = True) -> int:
    """Remove the temporaries a killed writer left in ``folder``; returns how many.

    With ``keep_live_writers`` a temporary whose writer (the pid in its name) still runs is
    kept; without, every temporary goes, for callers that know no writer lives (a dataset
    under its lock).
    """
    if not folder.is_dir():
        return 0
    removed = 0
    for entry in folder.iterdir():
        if not is_temporary(entry.name) or not entry.is_file():
            continue
        if keep_live_writers and _writer_alive(entry.name):
            continue
        with contextlib.suppress(FileNotFoundError):
            entry.unlink()
            removed += 1
    return removed
