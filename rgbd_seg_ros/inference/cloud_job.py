"""One frame's semantic cloud, written in three parts that may run on different threads.

x y z need only the depth and the camera, the rgb and label columns the labels, the
confidence column the softmax, the dearest output after the forward. A CPU engine writes the
x y z on its side thread while the forward runs, and the classes there and on the worker
while the confidence is computed (``Engine._outputs``); run one after the other, the parts
give the same records, since each writes columns the others do not touch and the keep mask
is decided from the depth, or in ``finish`` where it needs the confidence.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from rgbd_seg_ros.core.cloud import CLOUD_DTYPE
from rgbd_seg_ros.inference.postprocess import RayCache, cloud_classes, cloud_xyz, compact_rows

# Where the cloud's records go: given the cloud's shape, a writable CLOUD_DTYPE array of it (a
# node hands out the point data of the message it will publish, so nothing is copied after).
CloudBuffer = Callable[[tuple[int, ...]], np.ndarray]


@dataclass(frozen=True)
class CloudOptions:
    """Which pixels become points."""

    stride: int = 1
    max_range: float = 10.0
    min_confidence: float = 0.0
    organized: bool = False


class CloudJob:
    """The cloud of one frame: ``write_xyz()`` (from construction on) and
    ``write_classes(...)`` (once the labels exist), on any thread and in parts of the rows if
    wanted, then ``finish(confidence)``.

    The records' buffer is taken from ``cloud_buffer`` at construction, on the constructing
    thread (a CPU engine's side thread), whenever the cloud's size does not depend on the
    confidence (an organised cloud, or no ``min_confidence``); the columns are then written
    straight into it on the CPU. Otherwise they go to a scratch image and ``finish`` compacts
    the kept rows into the buffer.
    """

    def __init__(
        self,
        depth_m: torch.Tensor,
        K: torch.Tensor,
        options: CloudOptions,
        rays: RayCache,
        palette_packed: torch.Tensor,
        cloud_buffer: CloudBuffer,
    ) -> None:
        s = options.stride
        height, width = depth_m.shape
        self._stride = s
        self._organized = options.organized
        self._min_confidence = options.min_confidence
        self._cloud_buffer = cloud_buffer
        z = depth_m[::s, ::s]
        ray_x, ray_y = rays.rays(K, height, width, s)
        self._geometry = (z, ray_x, ray_y)
        self._palette_packed = palette_packed
        self._keep = (z > 0) & (z <= options.max_range)
        self._host: np.ndarray | None = None
        self._every = False
        if self._organized:  # the image grid whatever is kept: no count needed
            self._every = True
            self._host = self._buffer(tuple(z.shape))
        elif self._min_confidence <= 0:
            kept = int(self._keep.sum())
            self._every = kept == self._keep.numel()
            self._host = self._buffer((kept,))
        # Straight into the records when every pixel is a point and they live on this device.
        self._direct = self._host is not None and self._every and z.device.type == 'cpu'
        if self._direct:
            assert self._host is not None
            self._image = _rows(self._host).view(*z.shape, 6)
        else:
            self._image = torch.empty(*z.shape, 6, device=z.device)
        self._spent: list[float] = []  # seconds of each part, whichever thread ran it

    @property
    def rows(self) -> int:
        """Rows of the cloud's grid (the depth's rows at the stride), for splitting the writes
        between threads."""
        return int(self._image.shape[0])

    @property
    def seconds(self) -> float:
        """Time spent writing this cloud so far, all parts and threads together."""
        return sum(self._spent)

    def write_xyz(self, rows: slice | None = None) -> None:
        """x y z of the grid's ``rows`` (all when None). Disjoint row ranges may be written
        on different threads."""
        start = time.perf_counter()
        part = rows or slice(None)
        z, ray_x, ray_y = self._geometry
        cloud_xyz(z[part], ray_x, ray_y[part], out=self._image[part])
        self._spent.append(time.perf_counter() - start)

    def write_classes(
        self, labels: torch.Tensor, palette_index: torch.Tensor, rows: slice | None = None
    ) -> None:
        """rgb and label of the grid's ``rows`` (all when None) from the ``[H, W]`` labels and
        their palette rows, at the depth's size. Disjoint row ranges may be written on
        different threads."""
        start = time.perf_counter()
        part = rows or slice(None)
        s = self._stride
        cloud_classes(
            labels[::s, ::s][part],
            palette_index[::s, ::s][part],
            self._palette_packed,
            out=self._image[part],
        )
        self._spent.append(time.perf_counter() - start)

    def finish(self, confidence: torch.Tensor) -> np.ndarray:
        """The records, once every write has returned: ``confidence`` (``[H, W]`` at
        the depth's size) written in, points dropped (dense) or set to NaN (organised)."""
        start = time.perf_counter()
        s = self._stride
        cf = confidence[::s, ::s]
        self._image[..., 5] = cf
        keep = self._keep
        if self._min_confidence > 0:
            keep = keep & (cf >= self._min_confidence)
        if self._organized:
            self._image[..., :3].masked_fill_(~keep[..., None], float('nan'))
        host = self._host
        if host is None:
            kept = int(keep.sum())
            self._every = kept == keep.numel()
            host = self._buffer((kept,))
        if not self._direct:
            rows = _rows(host)
            if self._every:
                rows.copy_(self._image.view(-1, 6))
            elif rows.device == self._image.device:
                compact_rows(self._image, keep, out=rows)
            else:
                rows.copy_(compact_rows(self._image, keep))
        self._spent.append(time.perf_counter() - start)
        return host

    def _buffer(self, shape: tuple[int, ...]) -> np.ndarray:
        host = self._cloud_buffer(shape)
        if host.shape != shape or host.dtype != CLOUD_DTYPE:
            raise ValueError(f'cloud buffer is {host.dtype} {host.shape}, expected {shape}')
        return host


def _rows(host: np.ndarray) -> torch.Tensor:
    """The records' bytes as float32 rows x y z rgb label confidence, one row a point."""
    return torch.from_numpy(host.reshape(-1).view(np.float32)).view(-1, 6)
