"""One frame's semantic cloud, written in two parts that may run on different threads.

The geometry (x y z, the class colour, the label) needs only the depth and the labels; the
confidence column needs the softmax, the dearest output after the forward. Split so, a CPU
engine writes the geometry on its side thread while the worker computes the confidence
(``Engine._outputs``); run one after the other, the two parts give the same records, since
each writes columns the other does not touch and the keep mask is decided in ``finish``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from rgbd_seg_ros.core.cloud import CLOUD_DTYPE
from rgbd_seg_ros.inference.postprocess import RayCache, cloud_columns, compact_rows

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
    """The cloud of one frame: ``write_geometry()`` (any thread, in parts of its rows if
    wanted), then ``finish(confidence)``.

    The records' buffer is taken from ``cloud_buffer`` at construction, on the caller's thread,
    whenever the cloud's size does not depend on the confidence (an organised cloud, or no
    ``min_confidence``); the geometry is then written straight into it on the CPU. Otherwise
    the geometry goes to a scratch image and ``finish`` compacts the kept rows into the buffer.
    """

    def __init__(
        self,
        labels: torch.Tensor,
        palette_index: torch.Tensor,
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
        labels, palette_index = labels[::s, ::s], palette_index[::s, ::s]
        self._columns = (z, ray_x, ray_y, labels, palette_index, palette_packed)
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
        """Rows of the cloud's grid (the depth's rows at the stride), for splitting
        ``write_geometry`` between threads."""
        return int(self._image.shape[0])

    @property
    def seconds(self) -> float:
        """Time spent writing this cloud so far, all parts and threads together."""
        return sum(self._spent)

    def write_geometry(self, rows: slice | None = None) -> None:
        """x y z rgb label of the grid's ``rows`` (all when None); the confidence column is
        ``finish``'s. Disjoint row ranges may be written on different threads."""
        start = time.perf_counter()
        part = rows or slice(None)
        z, ray_x, ray_y, labels, palette_index, palette_packed = self._columns
        cloud_columns(
            z[part],
            ray_x,
            ray_y[part],
            labels[part],
            palette_index[part],
            palette_packed,
            out=self._image[part],
        )
        self._spent.append(time.perf_counter() - start)

    def finish(self, confidence: torch.Tensor) -> np.ndarray:
        """The records, once ``write_geometry`` has returned: ``confidence`` (``[H, W]`` at
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
