"""Running planning and chunks in worker processes (``--jobs``), or inline for one job.

Workers come from a spawn-context pool (torch and OpenCV threads make fork unsafe). Each
worker receives the labeller once, at start-up, and keeps it for every chunk it converts, so a
labeller that loads a model on first use loads it once per worker. Workers report frames done
on a queue that a thread in the parent pumps into the progress bar.
"""

from __future__ import annotations

import queue as queue_module
import sys
import threading
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from rgbd_seg_ros.data.convert.chunk import ChunkJob, ChunkResult, Progress, convert_chunk
from rgbd_seg_ros.data.convert.labelling import Labeller

R = TypeVar('R')

# A worker process's state, set once by _init_worker.
_PROGRESS: Any = None
_LABELLER: Labeller | None = None


def _init_worker(progress: Any, labeller: Labeller | None) -> None:
    global _PROGRESS, _LABELLER
    _PROGRESS, _LABELLER = progress, labeller


def _convert_chunk_in_worker(job: ChunkJob) -> ChunkResult:
    return convert_chunk(job, _PROGRESS, _LABELLER)


class _BarProgress:
    def __init__(self, bar: Any) -> None:
        self.bar = bar

    def put(self, n: int) -> None:
        self.bar.update(n)


class WorkerPool:
    """``workers`` processes, or none (everything inline) for ``workers <= 1``."""

    def __init__(self, workers: int, labeller: Labeller | None) -> None:
        self.labeller = labeller
        self._executor: Any = None
        self._queue: Any = None
        if workers <= 1:
            return
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        context = multiprocessing.get_context('spawn')
        self._queue = context.Queue()
        self._executor = ProcessPoolExecutor(
            max_workers=workers,
            mp_context=context,
            initializer=_init_worker,
            initargs=(self._queue, labeller),
        )

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(cancel_futures=True)
            self._executor = None

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
