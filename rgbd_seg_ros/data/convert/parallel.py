"""Running planning and chunks in worker processes (``--jobs``), or inline for one job.

Workers come from a spawn-context pool (torch and OpenCV threads make fork unsafe). Each
worker receives the labeller once, at start-up, and keeps it for every chunk it converts, so a
labeller that loads a model on first use loads it once per worker. Workers report frames done
on a queue that a thread in the parent pumps into the progress bar.

No worker outlives the run:

* a worker dies with the process that started it (``die_with_parent``, armed first thing in
  the worker), so a main process killed with SIGKILL takes its workers with it;
* a run that stops on an exception (SIGTERM, Ctrl-C, an error) sets a stop event the workers
  poll between frames, waits for them to finish the frame in hand (at most
  :data:`STOP_GRACE_S`), and terminates the ones that have not;
* workers ignore SIGINT: Ctrl-C in a terminal reaches the whole process group, and the main
  process stops them through the event instead, so each ends at a frame boundary.
"""

from __future__ import annotations

import os
import queue as queue_module
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from rgbd_seg_ros.core.parent_death import die_with_parent
from rgbd_seg_ros.data.convert.chunk import ChunkJob, ChunkResult, Progress, convert_chunk
from rgbd_seg_ros.data.convert.labelling import Labeller

R = TypeVar('R')

#: How long a stopping run waits for its workers to finish the frame in hand.
STOP_GRACE_S = 10.0

# A worker process's state, set once by _init_worker.
_PROGRESS: Any = None
_LABELLER: Labeller | None = None
_STOP: Any = None


def _init_worker(progress: Any, labeller: Labeller | None, stop: Any, parent_pid: int) -> None:
    global _PROGRESS, _LABELLER, _STOP
    die_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _PROGRESS, _LABELLER, _STOP = progress, labeller, stop


def _convert_chunk_in_worker(job: ChunkJob) -> ChunkResult:
    return convert_chunk(job, _PROGRESS, _LABELLER, _STOP.is_set)


class _BarProgress:
    def __init__(self, bar: Any) -> None:
        self.bar = bar

    def put(self, n: int) -> None:
        self.bar.update(n)


class WorkerPool:
    """``workers`` processes, or none (everything inline) for ``workers <= 1``.

    Leaving the ``with`` block on an exception stops the workers (see the module docstring);
    :meth:`close` with ``stop=True`` does the same where the caller must be sure no worker
    writes any more (before it releases the dataset lock).
    """

    def __init__(self, workers: int, labeller: Labeller | None) -> None:
        self.labeller = labeller
        self._executor: Any = None
        self._queue: Any = None
        self._stop: Any = None
        if workers <= 1:
            return
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        context = multiprocessing.get_context('spawn')
        self._queue = context.Queue()
        self._stop = context.Event()
        # Workers are started by the thread that submits work (this process's caller, which
        # lives as long as the run): the thread the kernel watches for die_with_parent.
        self._executor = ProcessPoolExecutor(
            max_workers=workers,
            mp_context=context,
            initializer=_init_worker,
            initargs=(self._queue, labeller, self._stop, os.getpid()),
        )

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self.close(stop=exc_type is not None)

    def close(self, stop: bool = False) -> None:
        """Shut the workers down: after their work (default), or at once (``stop``)."""
        executor, self._executor = self._executor, None
        if executor is None:
            return
        if not stop:
            executor.shutdown(wait=True, cancel_futures=True)
            return
        self._stop.set()
        # The worker processes, to bound the wait; public API for this only from Python 3.14.
        processes = list((getattr(executor, '_processes', None) or {}).values())
        executor.shutdown(wait=False, cancel_futures=True)
        deadline = time.monotonic() + STOP_GRACE_S
        for process in processes:
            process.join(timeout=max(0.0, deadline - time.monotonic()))
        for process in processes:
            if process.is_alive():
                process.terminate()
                process.join(timeout=5.0)

    def map(self, fn: Callable[..., R], args: Iterable[tuple[Any, ...]]) -> list[R]:
        """``fn(*a)`` for each ``a`` of ``args``, in order (``fn`` must be importable)."""
        items = list(args)
        if self._executor is None or not items:
            return [fn(*a) for a in items]
        return list(self._executor.map(fn, *zip(*items, strict=True)))

    def convert_chunks(self, jobs: list[ChunkJob], total: int, show: bool) -> list[ChunkResult]:
        """Convert every chunk, showing a progress bar of ``total`` frames when ``show``."""
        from tqdm import tqdm

        bar = tqdm(
            total=total, unit='frame', file=sys.stderr, disable=not show, dynamic_ncols=True
        )
        try:
            if self._executor is None:
                inline: Progress = _BarProgress(bar)
                return [convert_chunk(job, inline, self.labeller) for job in jobs]
            return self._convert_in_workers(jobs, bar)
        finally:
            bar.close()

    def _convert_in_workers(self, jobs: list[ChunkJob], bar: Any) -> list[ChunkResult]:
        stop = threading.Event()

        def pump() -> None:
            while not stop.is_set():
                try:
                    bar.update(self._queue.get(timeout=0.1))
                except queue_module.Empty:
                    continue

        thread = threading.Thread(target=pump, daemon=True)
        thread.start()
        try:
            futures = [self._executor.submit(_convert_chunk_in_worker, job) for job in jobs]
            return [f.result() for f in futures]
        finally:
            stop.set()
            thread.join(timeout=5)
