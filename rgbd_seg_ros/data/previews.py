"""Pictures of what the node produced: frame strips and a point-cloud snapshot (PNG).

They let a person check a run at a glance (the demo writes them) without RViz or Foxglove.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from rgbd_seg_ros.core.depth import jet_uint8


def confidence_image(confidence: np.ndarray) -> np.ndarray:
    """Confidence in [0, 1] as a dark-to-bright RGB image (inferno-like ramp)."""
    c = np.clip(np.nan_to_num(confidence), 0.0, 1.0)
    rgb = np.stack([np.sqrt(c), c**1.5, 0.4 * (1 - c) * c * 4], axis=-1)
    return np.rint(np.clip(rgb, 0, 1) * 255).astype(np.uint8)


def frame_strip(
    rgb: np.ndarray,
    depth_m: np.ndarray,
    overlay: np.ndarray,
    confidence: np.ndarray,
    max_depth_m: float = 8.0,
) -> np.ndarray:
    """colour | depth | overlay | confidence, side by side (RGB uint8)."""
    panels = [rgb, jet_uint8(depth_m, 0.0, max_depth_m), overlay, confidence_image(confidence)]
    height = rgb.shape[0]
    panels = [
        p
        if p.shape[0] == height
        else cv2.resize(
            p, (p.shape[1] * height // p.shape[0], height), interpolation=cv2.INTER_NEAREST
        )
        for p in panels
    ]
    return np.concatenate(panels, axis=1)


def cloud_snapshot(
    xyz: np.ndarray,
    rgb: np.ndarray,
    size: tuple[int, int] = (480, 640),
    yaw_deg: float = 35.0,
    pitch_deg: float = 25.0,
) -> np.ndarray:
    """Render coloured points (camera optical frame) from a virtual camera orbiting them.

    A z-buffer by sorting far-to-near makes nearer points overwrite farther ones; no Python
    loop over points.
    """
    height, width = size
    image = np.full((height, width, 3), 32, np.uint8)
    keep = np.all(np.isfinite(xyz), axis=1)
    xyz, rgb = xyz[keep], rgb[keep]
    if len(xyz) == 0:
        return image
    centre = np.median(xyz, axis=0)
    yaw, pitch = np.radians(yaw_deg), np.radians(pitch_deg)
    rot_y = np.array([[np.cos(yaw), 0, np.sin(yaw)], [0, 1, 0], [-np.sin(yaw), 0, np.cos(yaw)]])
    rot_x = np.array(
        [[1, 0, 0], [0, np.cos(pitch), -np.sin(pitch)], [0, np.sin(pitch), np.cos(pitch)]]
    )
    spread = np.percentile(np.linalg.norm(xyz - centre, axis=1), 95) + 1e-6
    view = (xyz - centre) @ (rot_x @ rot_y).T
    view[:, 2] += 2.5 * spread
    front = view[:, 2] > 1e-3
    view, rgb = view[front], rgb[front]
    focal = 0.9 * width
    u = np.rint(view[:, 0] / view[:, 2] * focal + width / 2).astype(int)
    v = np.rint(view[:, 1] / view[:, 2] * focal + height / 2).astype(int)
    inside = (u >= 0) & (u < width - 1) & (v >= 0) & (v < height - 1)
    order = np.argsort(-view[inside, 2])
    u, v, colours = u[inside][order], v[inside][order], rgb[inside][order]
    for du in (0, 1):  # 2x2 splats so sparse clouds still read as surfaces
        for dv in (0, 1):
            image[v + dv, u + du] = colours
    return image


def write_png(path: str | Path, rgb: np.ndarray) -> Path:
    """Write an RGB image as PNG (atomically, so a viewer never sees half a file)."""
    path = Path(path)
    ok, data = cv2.imencode('.png', cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise OSError(f'cannot encode {path}')
    tmp = path.with_name(path.name + '.tmp')
    tmp.write_bytes(data.tobytes())
    tmp.replace(path)
    return path
