"""Joint augmentation of an RGB-D frame and its labels (numpy + cv2, one warp per image).

Geometry: one 2x3 affine (flip, scale ``s``, skew (a shear) and rotation about the image
centre, then a crop window) is sampled per frame and applied with ``cv2.warpAffine`` to colour
(bilinear), depth (nearest: a blend of a valid and an invalid pixel is not a depth) and labels
(nearest), so the three stay aligned pixel for pixel. Pixels warped in from outside the image
get colour 0, depth 0 (invalid) and the ignore label.

Depth may follow the zoom (``depth_follows_scale``, Kong & Fowlkes' depth-aware gating):
zooming in by ``s`` makes the scene look ``s`` times closer, so depth values are divided by
``s``, and with the intrinsics following the warp (focal lengths times ``s``, principal point
moved) the augmented frame is the original scene scaled by ``1/s`` seen through ``K'``. The
other papers only resize, keeping the measured depth (and so the jet colours and HHA values).
Rotation and skew are left out of ``K'`` (it stays upper triangular), an approximation for the
small angles and shears the recipes draw.
The frame records that zoom (``Frame.depth_zoom``): a consumer that reads depth as apparent
size (the f/Z bins of depth-aware gating) must not count it twice through ``K'``.

Photometric changes (vignetting, contrast, brightness, saturation, noise) touch colour only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from rgbd_seg_ros.training.config import AugmentConfig


@dataclass
class Frame:
    """A training frame in transit: colour, metric depth, labels and intrinsics."""

    rgb: np.ndarray  # HxWx3, uint8 or float32 on the 0..255 scale
    depth_m: np.ndarray  # HxW float32 metres, 0 = invalid
    labels: np.ndarray | None  # HxW uint8/uint16 class ids
    K: np.ndarray  # 3x3 float64
    depth_zoom: float = 1.0  # zoom already divided into the depth values (1: none)


def sample_affine(
    rng: np.random.Generator,
    in_hw: tuple[int, int],
    out_hw: tuple[int, int],
    cfg: AugmentConfig,
    base_scale: tuple[float, float] = (1.0, 1.0),
) -> tuple[np.ndarray, float]:
    """A random 2x3 affine mapping input pixels to output pixels, and its zoom ``s``.

    ``base_scale`` (sy, sx) first resizes the image to the network resolution (no zoom, depth
    unchanged); ``s`` is the random zoom on top of it.
    """
    h, w = in_hw
    oh, ow = out_hw
    if cfg.scale_set:
        s = float(rng.choice(np.asarray(cfg.scale_set, dtype=np.float64)))
    else:
        s = float(rng.uniform(cfg.scale[0], cfg.scale[1]))
    angle = (
        math.radians(float(rng.uniform(-cfg.rotation_deg, cfg.rotation_deg)))
        if cfg.rotation_deg > 0
        else 0.0
    )
    flip = bool(cfg.hflip and rng.random() < 0.5)
    skew_m = sample_skew(rng, cfg.skew)
    sy, sx = base_scale[0] * s, base_scale[1] * s
    # Input pixel centres -> centred coordinates -> (flip) -> scale -> skew -> rotate -> crop.
    cx_in, cy_in = (w - 1) / 2.0, (h - 1) / 2.0
    flip_m = np.diag([-1.0 if flip else 1.0, 1.0])
    scale_m = np.diag([sx, sy])
    c, sn = math.cos(angle), math.sin(angle)
    rot_m = np.array([[c, -sn], [sn, c]])
    a = rot_m @ skew_m @ scale_m @ flip_m
    scaled_w, scaled_h = w * sx, h * sy
    # Position of the crop window inside the scaled image (negative: the window overhangs).
    lo_x, hi_x = sorted((0.0, scaled_w - ow))
    lo_y, hi_y = sorted((0.0, scaled_h - oh))
    ox = float(rng.uniform(lo_x, hi_x)) if hi_x > lo_x else lo_x
    oy = float(rng.uniform(lo_y, hi_y)) if hi_y > lo_y else lo_y
    centre_out = np.array([(scaled_w - 1) / 2.0 - ox, (scaled_h - 1) / 2.0 - oy])
    t = centre_out - a @ np.array([cx_in, cy_in])
    return np.hstack([a, t[:, None]]), s


def sample_skew(rng: np.random.Generator, bounds: list[float] | None) -> np.ndarray:
    """A 2x2 shear ``[[1, k], [0, 1]]`` or its transpose, ``|k|`` uniform in ``bounds`` with a
    random sign; the identity without ``bounds``. The draws happen only when skew is on, so
    recipes without it see the random stream they always saw."""
    if not bounds:
        return np.eye(2)
    k = float(rng.uniform(bounds[0], bounds[1])) * (1.0 if rng.random() < 0.5 else -1.0)
    shear = np.array([[1.0, k], [0.0, 1.0]])
    return shear if rng.random() < 0.5 else shear.T


def vignette(rgb: np.ndarray, sigma: float) -> np.ndarray:
    """Darken ``rgb`` (HxWx3 float32) away from the centre by ``exp(-r^2 / (2 sigma^2))``."""
    h, w = rgb.shape[:2]
    y = np.arange(h, dtype=np.float32) - np.float32((h - 1) / 2.0)
    x = np.arange(w, dtype=np.float32) - np.float32((w - 1) / 2.0)
    scale = np.float32(-0.5 / (sigma * sigma))
    mask = np.exp(y[:, None] ** 2 * scale) * np.exp(x[None, :] ** 2 * scale)
    return rgb * mask[..., None]


def warp_frame(
    frame: Frame,
    m: np.ndarray,
    out_hw: tuple[int, int],
    zoom: float,
    ignore_index: int,
    depth_follows_scale: bool = False,
) -> Frame:
    """Apply affine ``m`` to every modality; see the module docstring for the conventions."""
    oh, ow = out_hw
    size = (ow, oh)
    rgb = cv2.warpAffine(
        frame.rgb,
        m,
        size,
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=(0, 0, 0),
    )
    depth = cv2.warpAffine(
        frame.depth_m,
        m,
        size,
        flags=cv2.INTER_NEAREST,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0,
    )
    depth_zoom = frame.depth_zoom
    if depth_follows_scale and zoom != 1.0:
        depth = depth * np.float32(1.0 / zoom)
        depth_zoom *= zoom
    labels = None
    if frame.labels is not None:
        labels = cv2.warpAffine(
            frame.labels,
            m,
            size,
            flags=cv2.INTER_NEAREST,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=int(ignore_index),
        )
    # Intrinsics: focal lengths scale with the (axis) scale of the warp, the principal point
    # moves with it. A small rotation is ignored (K stays upper triangular).
    k = frame.K.astype(np.float64).copy()
    scale_x = math.hypot(m[0, 0], m[1, 0])
    scale_y = math.hypot(m[0, 1], m[1, 1])
    cx, cy = m @ np.array([frame.K[0, 2], frame.K[1, 2], 1.0])
    k[0, 0] *= scale_x
    k[1, 1] *= scale_y
    k[0, 2], k[1, 2] = cx, cy
    return Frame(rgb, depth, labels, k, depth_zoom)


def photometric(rgb: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """Colour-only jitter; returns float32 HxWx3 on the 0..255 scale (clipped)."""
    out = rgb.astype(np.float32, copy=True)
    changed = False
    if cfg.vignetting:
        out = vignette(out, float(rng.uniform(cfg.vignetting[0], cfg.vignetting[1])))
        changed = True
    if cfg.contrast:
        f = np.float32(rng.uniform(cfg.contrast[0], cfg.contrast[1]))
        mean = out.mean(dtype=np.float64)
        out = (out - np.float32(mean)) * f + np.float32(mean)
        changed = True
    if cfg.brightness > 0:
        out += np.float32(rng.uniform(-cfg.brightness, cfg.brightness))
        changed = True
    if cfg.saturation > 0:
        f = np.float32(rng.uniform(1.0 - cfg.saturation, 1.0 + cfg.saturation))
        grey = out @ np.array([0.299, 0.587, 0.114], np.float32)
        out = grey[..., None] + (out - grey[..., None]) * f
        changed = True
    if cfg.noise_std > 0:
        out += rng.standard_normal(out.shape, dtype=np.float32) * np.float32(cfg.noise_std)
        changed = True
    if changed:
        np.clip(out, 0.0, 255.0, out=out)
    return out


def augment_frame(
    frame: Frame,
    cfg: AugmentConfig,
    rng: np.random.Generator,
    ignore_index: int,
    out_hw: tuple[int, int] | None = None,
) -> Frame:
    """Random geometric (joint) and photometric (colour only) augmentation of one frame.

    ``out_hw``: output size (the training crop); None: ``cfg.crop`` or the input size. When
    ``out_hw`` differs from ``cfg.crop`` (a fixed network resolution), the frame is first
    resized to it without changing depth.
    """
    h, w = frame.depth_m.shape
    target = tuple(out_hw or cfg.crop or (h, w))
    base = (1.0, 1.0)
    if cfg.crop is None and out_hw is not None:
        base = (out_hw[0] / h, out_hw[1] / w)
    m, zoom = sample_affine(rng, (h, w), target, cfg, base)
    warped = warp_frame(frame, m, target, zoom, ignore_index, cfg.depth_follows_scale)
    warped.rgb = photometric(warped.rgb, cfg, rng)
    return warped


def resize_frame(frame: Frame, out_hw: tuple[int, int], ignore_index: int) -> Frame:
    """Deterministic resize to ``out_hw`` (no zoom semantics: depth values unchanged)."""
    h, w = frame.depth_m.shape
    if (h, w) == tuple(out_hw):
        return frame
    sy, sx = out_hw[0] / h, out_hw[1] / w
    m = np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5]])
    return warp_frame(frame, m, out_hw, 1.0, ignore_index, False)
