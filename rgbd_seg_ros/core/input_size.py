"""How large a frame the node works on: the bound, and the size a larger frame is scaled to.

Everything the node builds per frame (the decoded colour, the depth resampled to it, the
labels, confidence, colour and overlay images and the cloud, all at the input's size) grows
with the input, while the network sees a fixed size under most resolution policies. A frame
far larger than the network's input buys nothing but memory and time: a 4000 x 3000 frame
costs hundreds of megabytes of outputs, and the allocator keeps much of that after the frame.

The bound, ``max_input_pixels``, is a node parameter; 0 asks for the automatic one:

* a model with a fixed input size (the checkpoint's, or resolution_policy 'fixed') gets
  :data:`AUTO_FACTOR` times its input pixels (twice each side: enough detail for the outputs
  that are upsampled to the camera's size), and never less than :data:`AUTO_FLOOR` (VGA, the
  smallest size every RGB-D camera delivers, is never scaled down);
* a model that runs at the camera's size (resolution_policy 'native') gets
  :data:`NATIVE_AUTO` (1920 x 1200), since there every pixel is also network work.

Neither ever exceeds the package's own bound on any image, ``image_header.MAX_PIXELS``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from rgbd_seg_ros.core.image_header import MAX_PIXELS
from rgbd_seg_ros.modes import OversizePolicy

AUTO_FACTOR = 4
AUTO_FLOOR = 640 * 480
NATIVE_AUTO = 1920 * 1200


@dataclass(frozen=True)
class InputBound:
    """The bound a frame is held to, and what happens beyond it."""

    max_pixels: int = MAX_PIXELS
    policy: OversizePolicy = 'downscale'


def max_input_pixels(setting: int, network_size: tuple[int, int] | None) -> int:
    """The bound in pixels for parameter value ``setting`` (0: automatic) and a model whose
    fixed input size is ``network_size`` (height, width; None: it runs at the camera's)."""
    if setting > 0:
        bound = setting
    elif network_size is None:
        bound = NATIVE_AUTO
    else:
        bound = max(AUTO_FACTOR * network_size[0] * network_size[1], AUTO_FLOOR)
    return min(bound, MAX_PIXELS)


def fitted_size(height: int, width: int, max_pixels: int) -> tuple[int, int]:
    """``(height, width)`` scaled down, aspect kept, to at most ``max_pixels``; unchanged when
    it fits. Each side stays at least one pixel."""
    if max_pixels < 1:
        raise ValueError(f'max_pixels must be positive, got {max_pixels}')
    if height * width <= max_pixels:
        return height, width
    scale = math.sqrt(max_pixels / (height * width))
    new_h, new_w = max(1, int(height * scale)), max(1, int(width * scale))
    while new_h * new_w > max_pixels:  # rounding of a side of one can still overshoot
        if new_w >= new_h:
            new_w -= 1
        else:
            new_h -= 1
    return new_h, new_w
