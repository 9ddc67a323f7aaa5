"""A second thread for the outputs that do not wait on the confidence.

After the forward, the CPU engine's remaining work is memory-bound passes over image-sized
buffers, most of it independent: the cloud's geometry and the colour images need the labels,
not the softmax. torch's intra-op pool is kept at one thread in the node (inference/threads.py:
its barriers stall when the other core is busy), and spreading these passes over two pool
threads made the node slower (README, Performance). Whole tasks on a thread of their own need
no barrier: the worker computes the confidence while this thread writes the geometry and the
colour images, each op releasing the GIL as torch, numpy and OpenCV ops do.

``SideTasks(threaded=False)`` runs each task in the caller's thread when its result is asked
for, so a sequential engine (CUDA, or the side thread switched off) keeps the outputs' order.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import torch


class SideTask:
    """One submitted task: ``result()`` waits for it (or runs it, when not threaded)."""

    def __init__(self, future: Future[Any] | None, call: Callable[[], Any] | None) -> None:
        self._future = future
        self._call = call
        self._done = False
        self._value: Any = None

    def result(self) -> Any:
        """The task's value; its exception re-raised here."""
        if self._future is not None:
            return self._future.result()
        if not self._done:
            assert self._call is not None
            self._done = True
            self._value = self._call()
        return self._value

    def settle(self) -> None:
        """Wait for a task already running on the side thread, without raising; a task that
        would run in the caller's thread is dropped (its caller is unwinding)."""
        if self._future is not None:
            self._future.exception()
        self._done = True


class SideTasks:
    """Tasks run in order on one thread, each in torch's inference mode, or inline."""

    def __init__(self, threaded: bool) -> None:
        self._pool: ThreadPoolExecutor | None = None
        self._threaded = threaded
        self._lock = threading.Lock()
        self._pid = os.getpid()

    @property
    def threaded(self) -> bool:
        return self._threaded

    def submit(self, function: Callable[..., Any], *args: Any) -> SideTask:
        """Run ``function(*args)`` on the side thread, or later in the caller's (not threaded)."""
        if not self._threaded:
            return SideTask(None, lambda: function(*args))
        return SideTask(self._executor().submit(_inference_mode_call, function, args), None)

    def close(self) -> None:
        """Let the thread end once its queued tasks are done (the engine is being dropped)."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False)

    def _executor(self) -> ThreadPoolExecutor:
        with self._lock:
            # A forked child inherits the pool but not its thread: tasks given to it would
            # wait for ever, so the child makes its own.
            if self._pool is None or self._pid != os.getpid():
                # made on first use: an engine that only loads costs no thread
                self._pool = ThreadPoolExecutor(1, thread_name_prefix='engine_side')
                self._pid = os.getpid()
            return self._pool


def _inference_mode_call(function: Callable[..., Any], args: tuple[Any, ...]) -> Any:
    """Inference mode is per thread: the engine's tensors are inference tensors, which a thread
    outside it may not update in place."""
    with torch.inference_mode():
        return function(*args)
