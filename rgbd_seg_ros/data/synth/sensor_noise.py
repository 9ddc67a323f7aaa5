"""Sensor models: a structured-light depth camera and a colour camera.

Depth follows how an active-stereo / structured-light sensor (Kinect, RealSense) measures:
it triangulates a disparity ``d = f * b / z`` between projector and camera, so

- the disparity is estimated to 1/8 pixel: depth quantisation ``dz = z^2 / (f b) / 8`` grows
  with the square of the distance (about 3 mm at 1 m, 5 cm at 4 m for the default sensor);
- disparity noise (Gaussian, in pixels) likewise gives depth noise growing with z^2;
- where the projector cannot see the surface the camera sees (the "shadow" beside every
  foreground edge, on the projector's side) there is no depth;
- depth edges are ragged (lateral jitter) and loose pixels along them are lost;
- dark surfaces, far ones and glancing ones return too little light: missing, in blobs;
- glass (windows) mostly returns nothing;
- beyond the working range there is nothing.

All of it is parametrised in the 640-pixel-wide sensor's pixels, so a 160x120 rendering gets
the same metric behaviour as a 640x480 one.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import cv2
import numpy as np

from rgbd_seg_ros.data.synth.render import Renderer, RenderOutput


@dataclass(frozen=True)
class StructuredLightModel:
    """Parameters of the simulated depth sensor (defaults: a Kinect-like 640x480 device)."""

    focal_px: float = 580.0  # focal length of the 640-wide sensor, pixels
    baseline_m: float = 0.075  # projector-camera baseline (projector on the camera's +x side)
    subpixel: float = 1.0 / 8.0  # disparity quantisation step, pixels
    disparity_sigma_px: float = 0.06  # disparity noise, pixels
    lateral_sigma_px: float = 0.45  # edge raggedness, pixels of the 640-wide sensor
    min_range_m: float = 0.4
    max_range_m: float = 7.0
    edge_jump: float = 0.04  # relative depth jump that marks a depth edge
    edge_drop: float = 0.55  # chance a pixel on a depth edge is lost
    glancing_cos: float = 0.22  # below this |cos| of incidence pixels start to go missing
    signal_floor: float = 0.003  # albedo * cos / z^2 below which returns get unreliable
    dark_albedo: float = 0.08  # surfaces darker than this (linear albedo) start to go missing
    speckle: float = 0.002  # rate of isolated random holes

    @property
    def fb(self) -> float:
        """Focal length times baseline (pixel metres): disparity = fb / z."""
        return self.focal_px * self.baseline_m


def quantise_depth(
    depth_m: np.ndarray, model: StructuredLightModel, rng: np.random.Generator | None = None
) -> np.ndarray:
    """Depth through the disparity domain: add disparity noise (when ``rng``), round to the
    sub-pixel step, convert back. Zeros stay zero."""
    f32 = np.float32
    z = np.asarray(depth_m, f32)
    valid = z > 0
    disp = f32(model.fb / model.subpixel) / np.where(valid, z, f32(1.0))  # in sub-pixel steps
    if rng is not None:
        disp += rng.standard_normal(disp.shape, dtype=f32) * f32(
            model.disparity_sigma_px / model.subpixel
        )
    disp = np.rint(disp)
    ok = valid & (disp > 0)
    return np.where(
        ok, f32(model.fb / model.subpixel) / np.where(ok, disp, f32(1.0)), f32(0.0)
    ).astype(f32)


def _blobby_uniform(rng: np.random.Generator, shape: tuple[int, int], cell: int) -> np.ndarray:
    """Spatially correlated values in [0, 1): uniform noise on a coarse grid, upsampled."""
    h, w = shape
    coarse = rng.random((h // cell + 2, w // cell + 2)).astype(np.float32)
    up = cv2.resize(coarse, (w + 2 * cell, h + 2 * cell), interpolation=cv2.INTER_LINEAR)
    return up[cell : cell + h, cell : cell + w]


def _neighbour_extremes(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    kernel = np.ones((3, 3), np.uint8)
    big = np.where(z > 0, z, np.float32(1e4)).astype(np.float32)
    lo = cv2.erode(big, kernel, borderType=cv2.BORDER_REPLICATE)
    hi = cv2.dilate(z.astype(np.float32), kernel, borderType=cv2.BORDER_REPLICATE)
    return lo, hi


def simulate_depth(
    render: RenderOutput,
    pose: np.ndarray,
    K: np.ndarray,
    renderer: Renderer,
    rng: np.random.Generator,
    model: StructuredLightModel | None = None,
) -> np.ndarray:
    """Noisy depth (H, W) float32 metres, 0 where the sensor returns nothing."""
    model = model or StructuredLightModel()
    z = render.depth_m.astype(np.float32)
    H, W = z.shape
    px = W / 640.0  # output pixels per sensor pixel
    valid = render.hit & (z > 0)

    # projector shadow: the projector must see the point the camera sees
    projector = pose[:3, 3] + pose[:3, :3] @ np.array([model.baseline_m, 0.0, 0.0])
    idx = np.flatnonzero(valid)
    if len(idx):
        occ = renderer.occluded(projector, render.points.reshape(-1, 3)[idx])
        valid.reshape(-1)[idx[occ]] = False

    # ragged edges: each pixel reads the depth of a jittered neighbour
    f32 = np.float32
    sigma = model.lateral_sigma_px * px
    if sigma > 0.05:
        dv = np.rint(rng.standard_normal((H, W), dtype=f32) * f32(sigma)).astype(np.int32)
        du = np.rint(rng.standard_normal((H, W), dtype=f32) * f32(sigma)).astype(np.int32)
        rows = np.clip(np.arange(H, dtype=np.int32)[:, None] + dv, 0, H - 1)
        cols = np.clip(np.arange(W, dtype=np.int32)[None, :] + du, 0, W - 1)
        flat = rows * W + cols
        z = z.reshape(-1)[flat]
        valid = valid.reshape(-1)[flat]
        albedo = render.albedo.reshape(-1)[flat]
        cos_inc = render.cos_incidence.reshape(-1)[flat]
        ir_drop = render.ir_dropout.reshape(-1)[flat]
    else:
        albedo, cos_inc, ir_drop = render.albedo, render.cos_incidence, render.ir_dropout

    z_valid = np.where(valid, z, f32(0.0))
    lo, hi = _neighbour_extremes(z_valid)
    edge = valid & ((hi - lo) > f32(model.edge_jump) * np.maximum(z, f32(1e-3)))
    edge |= valid & (lo >= 1e4 - 1)  # next to a hole (projector shadow)
    drop = edge & (rng.random((H, W), dtype=f32) < model.edge_drop)

    # weak returns: dark, far and glancing surfaces, in blobs
    blob = _blobby_uniform(rng, (H, W), max(2, round(6 * px)))
    signal = albedo * np.maximum(cos_inc, f32(1e-3)) / np.maximum(z, f32(0.1)) ** 2
    # logistic in log(signal): 1 / (1 + (signal / floor) ** (1 / 0.35))
    p_weak = 1.0 / (
        1.0 + np.power(np.maximum(signal, f32(1e-9)) / f32(model.signal_floor), f32(1.0 / 0.35))
    )
    p_glance = np.clip(
        (f32(model.glancing_cos) - cos_inc) / f32(0.6 * model.glancing_cos), 0.0, 1.0
    )
    p_far = np.clip((z - f32(0.8 * model.max_range_m)) / f32(0.2 * model.max_range_m), 0.0, 1.0)
    p_dark = f32(0.9) * np.clip(
        (f32(model.dark_albedo) - albedo) / f32(0.75 * model.dark_albedo), 0.0, 1.0
    )
    p_miss = 1.0 - (
        (1.0 - p_weak) * (1.0 - p_glance) * (1.0 - p_far) * (1.0 - ir_drop) * (1.0 - p_dark)
    )
    drop |= blob < p_miss
    drop |= rng.random((H, W), dtype=f32) < model.speckle
    valid &= ~drop
    valid &= (z >= model.min_range_m) & (z <= model.max_range_m)

    # disparity noise and quantisation, in the sensor's own pixels (model.focal_px)
    noisy = quantise_depth(np.where(valid, z, f32(0.0)), model, rng)
    return np.where(valid, noisy, f32(0.0))


def depth_to_mm(depth_m: np.ndarray) -> np.ndarray:
    """Metres -> uint16 millimetres (0 stays 0 = invalid)."""
    return np.clip(np.rint(depth_m * 1000.0), 0, 65535).astype(np.uint16)


def simulate_colour(radiance: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Linear radiance -> 8-bit sRGB-like image with vignetting, shot and read noise."""
    H, W, _ = radiance.shape
    img = radiance * _vignette(H, W)
    img /= 1.0 + 0.15 * img  # soft shoulder instead of hard clipping
    noise = rng.standard_normal(img.shape, dtype=np.float32)
    img += noise * np.sqrt(np.float32(0.00012) + np.float32(0.0006) * np.maximum(img, 0))
    np.clip(img, 0.0, 1.0, out=img)
    return _GAMMA_LUT[(img * 4095.0 + 0.5).astype(np.int32)]


_GAMMA_LUT = np.rint(np.linspace(0.0, 1.0, 4096) ** (1.0 / 2.2) * 255.0).astype(np.uint8)


@functools.lru_cache(maxsize=4)
def _vignette(H: int, W: int) -> np.ndarray:
    y, x = np.mgrid[0:H, 0:W].astype(np.float32)
    r2 = ((x - W / 2) / (W / 2)) ** 2 + ((y - H / 2) / (H / 2)) ** 2
    return (1.0 - 0.12 * r2)[..., None].astype(np.float32)
