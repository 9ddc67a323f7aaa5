"""Pseudo-labels from a checkpoint, for the dataset converter and the trainer's jobs.

The converter labels frames through any callable ``(rgb, depth_mm, K) -> (labels,
confidence)`` it is given (it does not load models itself). :class:`CheckpointLabeller` is that
callable for a checkpoint: only its path and device are pickled, and the :class:`Engine` is
built on the first call in each process, so one labeller can be handed to a pool of worker
processes and every worker loads the model once.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rgbd_seg_ros.backends.checkpoint import read_checkpoint_meta
from rgbd_seg_ros.data.layout import ClassInfo
from rgbd_seg_ros.inference.engine import Engine


class CheckpointLabeller:
    """Labels and confidence of a checkpoint's model, loaded lazily (see the module doc)."""

    def __init__(self, checkpoint: str, device: str = 'cpu') -> None:
        self.checkpoint = str(checkpoint)
        self.device = device
        self._engine: Engine | None = None

    def __repr__(self) -> str:
        return f'CheckpointLabeller(checkpoint={self.checkpoint!r}, device={self.device!r})'

    def __getstate__(self) -> dict[str, Any]:
        return {'checkpoint': self.checkpoint, 'device': self.device}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.checkpoint, self.device = state['checkpoint'], state['device']
        self._engine = None

    def classes(self) -> tuple[list[ClassInfo], int]:
        """The dataset classes the checkpoint predicts and its ignore index (metadata only)."""
        meta = read_checkpoint_meta(self.checkpoint)
        classes = [
            ClassInfo(label_id, name, (int(r), int(g), int(b)))
            for label_id, name, (r, g, b) in zip(
                meta.label_ids, meta.class_names, meta.palette, strict=True
            )
        ]
        return classes, int(meta.ignore_index)

    def __call__(
        self, rgb: np.ndarray, depth_mm: np.ndarray, K: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        if self._engine is None:
            self._engine = Engine.from_checkpoint(self.checkpoint, device=self.device)
        # torch.from_numpy warns on read-only arrays (zero-copy views of message buffers).
        rgb = rgb if rgb.flags.writeable else rgb.copy()
        depth_mm = depth_mm if depth_mm.flags.writeable else depth_mm.copy()
        pred = self._engine.predict(rgb, depth_mm, K, outputs=('labels', 'confidence'))
        return np.asarray(pred.labels), np.asarray(pred.confidence, np.float32)
