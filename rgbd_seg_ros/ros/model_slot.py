"""The node's current model and how it is replaced (hot-swap).

A new checkpoint is loaded beside the running model, on a loader thread, while the worker
keeps serving with the old one; only a fully loaded and warmed-up engine replaces it, in one
reference assignment that the worker reads once per frame. A checkpoint that fails to load,
whatever the failure, is refused with its reason and the old model keeps serving; a load that
takes longer than the timeout, or is still running at shutdown, is abandoned.

The slot knows nothing of the node: it logs through the logger it is given and tells
``on_loaded`` about each new engine (the node publishes the class list from there).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from std_msgs.msg import String

from rgbd_seg_ros.errors import RgbdSegError
from rgbd_seg_ros.paths import DEFAULT_MODEL, default_model

if TYPE_CHECKING:
    from rgbd_seg_ros.inference.engine import Engine

# How long a parameter set or ~/reload waits for its load before refusing it (the load is
# then abandoned). A cold CPU load and warm-up of the largest backend takes a few seconds.
LOAD_TIMEOUT_S = 60.0

# The node parameters that describe the model: changing any of them loads it again.
MODEL_PARAMS = frozenset(
    {
        'checkpoint',
        'device',
        'precision',
        'resolution_policy',
        'input_height',
        'input_width',
        'runtime',
    }
)


class Log(Protocol):
    """What the slot logs through (an rclpy logger)."""

    def info(self, message: str) -> Any: ...

    def warning(self, message: str) -> Any: ...

    def error(self, message: str) -> Any: ...


def describe(engine: Engine | None) -> str:
    """One line naming the model, where it came from and how it runs (logs, diagnostics)."""
    if engine is None:
        return 'no model loaded'
    return (
        f'{engine.meta.backend} ({engine.num_classes} classes) from {engine.source} '
        f'on {engine.device} {engine.precision} ({engine.runtime})'
    )


def classes_message(engine: Engine) -> String:
    """The latched segmentation/classes message: backend, checkpoint, ids, names, colours."""
    meta = engine.meta
    classes = [
        {'id': label_id, 'name': name, 'color': [int(c) for c in colour]}
        for label_id, name, colour in zip(
            meta.label_ids, meta.class_names, meta.palette, strict=True
        )
    ]
    msg = String()
    msg.data = json.dumps(
        {
            'backend': meta.backend,
            'checkpoint': engine.source,
            'ignore_index': meta.ignore_index,
            'classes': classes,
        }
    )
    return msg


def _ignore(_engine: Engine) -> None:
    """The default ``on_loaded``: nobody is told."""


def load_engine(path: str, params: Mapping[str, Any], warm_size: tuple[int, int] | None) -> Engine:
    """The engine ``params`` describe, loaded from ``path`` and warmed up at ``warm_size``."""
    from rgbd_seg_ros.inference.engine import Engine

    engine = Engine.from_checkpoint(
        path,
        device=params['device'],
        precision=params['precision'],
        resolution_policy=params['resolution_policy'],
        fixed_size=(params['input_height'], params['input_width']),
        runtime=params['runtime'],
    )
    if warm_size:
        engine.warmup(*warm_size)
    return engine


# What the slot loads with: (path, model parameters, warm-up size) -> engine.
Loader = Callable[[str, Mapping[str, Any], tuple[int, int] | None], 'Engine']


@dataclass
class _Load:
    """One candidate being loaded on the loader thread."""

    path: str
    params: dict[str, Any]
    wake: threading.Event = field(default_factory=threading.Event)
    finished: bool = False
    abandoned: bool = False
    engine: Engine | None = None
    reason: str | None = None


class ModelSlot:
    """Holds the engine the worker uses; swaps it atomically.

    Candidates load on a thread of their own. ``swap`` waits for its load at most
    ``timeout_s``, and ``close`` ends every wait at once: a load that outlives either is
    abandoned (its engine, if it ever arrives, is dropped) and the thread, a daemon, never
    holds up the process. One load runs at a time: another request meanwhile is refused, not
    queued, so nothing waits on a load that may never end.
    """

    def __init__(
        self,
        log: Log,
        on_loaded: Callable[[Engine], None] = _ignore,
        load: Loader = load_engine,
        timeout_s: float = LOAD_TIMEOUT_S,
    ) -> None:
        self._log = log
        self._on_loaded = on_loaded
        self._load = load
        self._timeout_s = timeout_s
        self._engine: Engine | None = None
        self._lock = threading.Lock()  # guards the fields below; never held during a load
        self._in_flight: _Load | None = None
        self._closed = False
        self._served: dict[str, Any] | None = None
        self._last_size: tuple[int, int] | None = None
        self.generation = 0

    @property
    def engine(self) -> Engine | None:
        """The current engine (None until a model loaded); read once per frame."""
        return self._engine

    @property
    def last_size(self) -> tuple[int, int] | None:
        """Size (height, width) of the last frame seen; a new model is warmed up at it."""
        return self._last_size

    @property
    def loading(self) -> bool:
        """True while a load runs (also one abandoned by its waiter)."""
        return self._in_flight is not None

    @property
    def served_params(self) -> dict[str, Any] | None:
        """The model parameters (MODEL_PARAMS) that produced the current engine."""
        return dict(self._served) if self._served is not None else None

    def frame_seen(self, height: int, width: int) -> None:
        """The worker decoded a frame of this size (the next model is warmed up for it)."""
        self._last_size = (height, width)

    def describe(self) -> str:
        return describe(self._engine)

    def load_initial(self, params: Mapping[str, Any]) -> None:
        """Load the configured (or embedded default) model; a bad explicit path is fatal."""
        explicit = bool(params['checkpoint'])
        reason = self.swap(params)
        if reason and explicit:
            raise RuntimeError(reason)
        if reason:
            self._log.warning(reason)

    def reload(self) -> str | None:
        """Load again what the last successful swap loaded (its checkpoint file re-read), not
        whatever a parameter names now: a set that failed or is still loading is not reloaded.
        Refused while a load is in flight, and when no model was ever loaded."""
        with self._lock:
            served = self._served
        if served is None:
            return 'nothing to reload: no model has been loaded'
        return self.swap(served)

    def swap(self, params: Mapping[str, Any]) -> str | None:
        """Load the model ``params`` (node parameters, see MODEL_PARAMS) describe and make it
        current; return a refusal reason instead when it cannot be loaded, whatever failed."""
        path = params['checkpoint'] or default_model()
        if not path:
            return (
                'no checkpoint set and no embedded default model '
                f'({DEFAULT_MODEL}); frames are counted but not segmented'
            )
        job = _Load(str(path), {name: params[name] for name in MODEL_PARAMS})
        with self._lock:
            busy = self._closed or self._in_flight is not None
            if not busy:
                self._in_flight = job
            reason = self._busy_reason(job.path) if busy else None
        if reason:
            self._log.error(reason)
            return reason
        threading.Thread(
            target=self._run, args=(job, self._last_size), name='model-loader', daemon=True
        ).start()
        job.wake.wait(self._timeout_s)
        with self._lock:
            if not job.finished:
                job.abandoned = True
        if job.abandoned:
            reason = (
                f'refused checkpoint {job.path}: node shutting down, load abandoned'
                if self._closed
                else f'refused checkpoint {job.path}: not loaded within {self._timeout_s:g} s; '
                'load abandoned (another load is refused until it ends)'
            )
            self._log.error(reason)
            return reason
        if job.engine is None:
            assert job.reason is not None
            self._log.error(job.reason)
            return job.reason
        self._engine = job.engine
        with self._lock:
            self._served = job.params
        self.generation += 1
        self._on_loaded(job.engine)
        self._log.info('model now ' + self.describe())
        return None

    def close(self) -> None:
        """Stop waiting for any load (shutdown): the waiting swap returns a refusal now and
        the loader thread's result, if it ever comes, is dropped."""
        with self._lock:
            self._closed = True
            job = self._in_flight
        if job is not None:
            job.wake.set()

    def _busy_reason(self, path: str) -> str:
        if self._closed:
            return f'refused checkpoint {path}: node shutting down'
        assert self._in_flight is not None
        return (
            f'refused checkpoint {path}: the load of {self._in_flight.path} is still running; '
            'try again when it has ended'
        )

    def _run(self, job: _Load, warm_size: tuple[int, int] | None) -> None:
        """The loader thread: any exception is a refusal with its reason, never an escape."""
        engine: Engine | None = None
        reason: str | None = None
        try:
            engine = self._load(job.path, job.params, warm_size)
        except RgbdSegError as err:
            reason = f'refused checkpoint {job.path}: {err}'
        except Exception as err:  # whatever the type: a refusal, the old model keeps serving
            reason = f'refused checkpoint {job.path}: {type(err).__name__}: {err}'
        with self._lock:
            self._in_flight = None
            job.finished = True
            if not job.abandoned:
                job.engine, job.reason = engine, reason
        if job.abandoned and not self._closed:  # after close the logger may be gone
            self._log.warning(
                f'abandoned load of {job.path} ended ({reason or "loaded"}); result dropped'
            )
        job.wake.set()
