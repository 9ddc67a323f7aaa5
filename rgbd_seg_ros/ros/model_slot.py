"""The node's current model and how it is replaced (hot-swap).

A new checkpoint is loaded beside the running model while the worker keeps serving with the
old one; only a fully loaded and warmed-up engine replaces it, in one reference assignment
that the worker reads once per frame. A checkpoint that fails to load is refused with the
loader's message and the old model keeps serving. Loading lives here only, so a load thread
with a timeout can replace ``swap``'s body without touching the node or the worker.

The slot knows nothing of the node: it logs through the logger it is given and tells
``on_loaded`` about each new engine (the node publishes the class list from there).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from std_msgs.msg import String

from rgbd_seg_ros.errors import RgbdSegError
from rgbd_seg_ros.paths import DEFAULT_MODEL, default_model

if TYPE_CHECKING:
    from rgbd_seg_ros.inference.engine import Engine

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


class ModelSlot:
    """Holds the engine the worker uses; swaps it atomically."""

    def __init__(self, log: Log, on_loaded: Callable[[Engine], None] = _ignore) -> None:
        self._log = log
        self._on_loaded = on_loaded
        self._engine: Engine | None = None
        self._load_lock = threading.Lock()
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

    def swap(self, params: Mapping[str, Any]) -> str | None:
        """Load the model ``params`` (node parameters, see MODEL_PARAMS) describe and make it
        current; return a refusal reason instead when it cannot be loaded."""
        from rgbd_seg_ros.inference.engine import Engine

        path = params['checkpoint'] or default_model()
        if not path:
            return (
                'no checkpoint set and no embedded default model '
                f'({DEFAULT_MODEL}); frames are counted but not segmented'
            )
        with self._load_lock:
            try:
                engine = Engine.from_checkpoint(
                    path,
                    device=params['device'],
                    precision=params['precision'],
                    resolution_policy=params['resolution_policy'],
                    fixed_size=(params['input_height'], params['input_width']),
                    runtime=params['runtime'],
                )
                if self._last_size:
                    engine.warmup(*self._last_size)
            except (RgbdSegError, OSError, RuntimeError, ValueError) as err:
                message = f'refused checkpoint {path}: {err}'
                self._log.error(message)
                return message
            self._engine = engine
            self.generation += 1
        self._on_loaded(engine)
        self._log.info('model now ' + self.describe())
        return None
