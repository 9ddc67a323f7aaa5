"""The node's current model and how it is replaced (hot-swap).

A new checkpoint is loaded beside the running model while the worker keeps serving with the
old one; only a fully loaded and warmed-up engine replaces it, in one reference assignment
that the worker reads once per frame. A checkpoint that fails to load is refused with the
loader's message and the old model keeps serving.
"""

from __future__ import annotations

import json
import threading
from typing import TYPE_CHECKING, Any

from std_msgs.msg import String

from rgbd_seg_ros.errors import RgbdSegError
from rgbd_seg_ros.paths import DEFAULT_MODEL, default_model

if TYPE_CHECKING:
    from rgbd_seg_ros.inference.engine import Engine
    from rgbd_seg_ros.ros.segmentation_node import SegmentationNode


class ModelSlot:
    """Holds the engine the worker uses; swaps it atomically."""

    def __init__(self, node: SegmentationNode) -> None:
        self._node = node
        self._engine: Engine | None = None
        self._load_lock = threading.Lock()
        self.last_size: tuple[int, int] | None = None
        self.generation = 0

    @property
    def engine(self) -> Engine | None:
        return self._engine

    def describe(self) -> str:
        engine = self._engine
        if engine is None:
            return 'no model loaded'
        return (
            f'{engine.meta.backend} ({engine.num_classes} classes) from {engine.source} '
            f'on {engine.device} {engine.precision} ({engine.runtime})'
        )

    def load_initial(self) -> None:
        """Load the configured (or embedded default) model; a bad explicit path is fatal."""
        explicit = bool(self._node.params['checkpoint'])
        reason = self.swap(self._node.params)
        if reason and explicit:
            raise RuntimeError(reason)
        if reason:
            self._node.get_logger().warn(reason)

    def swap(self, params: dict[str, Any]) -> str | None:
        """Load the model ``params`` describe and make it current; return a refusal reason."""
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
                if self.last_size:
                    engine.warmup(*self.last_size)
            except (RgbdSegError, OSError, RuntimeError, ValueError) as err:
                message = f'refused checkpoint {path}: {err}'
                self._node.get_logger().error(message)
                return message
            self._engine = engine
            self.generation += 1
        self._publish_classes(engine)
        self._node.get_logger().info('model now ' + self.describe())
        return None

    def _publish_classes(self, engine: Engine) -> None:
        meta = engine.meta
        classes = [
            {'id': i, 'name': name, 'color': [int(c) for c in meta.palette[i]]}
            for i, name in enumerate(meta.class_names)
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
        self._node.classes_pub.publish(msg)
