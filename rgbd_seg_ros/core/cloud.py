"""Byte layout of the semantic point cloud (PointCloud2 fields), built without Python loops.

Layout per point (24 bytes, little-endian): x, y, z float32; rgb float32 packed the PCL way;
label uint32; confidence float32. RViz colours by ``rgb`` or ``label``, mapping stacks read
``label``/``confidence``. ``label`` is UINT32 because PCL's ``PointXYZRGBL`` holds a
``uint32_t`` label and ``pcl::fromROSMsg`` only fills a field whose datatype matches.
"""

from __future__ import annotations

import numpy as np

# name, byte offset, numpy dtype, PointField datatype code (sensor_msgs/PointField)
CLOUD_FIELDS: tuple[tuple[str, int, str, int], ...] = (
    ('x', 0, '<f4', 7),
    ('y', 4, '<f4', 7),
    ('z', 8, '<f4', 7),
    ('rgb', 12, '<f4', 7),
    ('label', 16, '<u4', 6),
    ('confidence', 20, '<f4', 7),
)
POINT_STEP = 24

CLOUD_DTYPE = np.dtype(
    {
        'names': [f[0] for f in CLOUD_FIELDS],
        'formats': [f[2] for f in CLOUD_FIELDS],
        'offsets': [f[1] for f in CLOUD_FIELDS],
        'itemsize': POINT_STEP,
    }
)


def pack_cloud(
    xyz: np.ndarray, rgb_packed: np.ndarray, labels: np.ndarray, confidence: np.ndarray
) -> np.ndarray:
    """Interleave per-point arrays (any shape, same leading shape) into CLOUD_DTYPE records."""
    out = np.zeros(labels.shape, dtype=CLOUD_DTYPE)
    out['x'] = xyz[..., 0]
    out['y'] = xyz[..., 1]
    out['z'] = xyz[..., 2]
    out['rgb'] = rgb_packed
    out['label'] = labels
    out['confidence'] = confidence
    return out


def unpack_cloud(data: bytes | memoryview, count: int) -> np.ndarray:
    """View raw PointCloud2 bytes as CLOUD_DTYPE records (tests and consumers)."""
    return np.frombuffer(data, dtype=CLOUD_DTYPE, count=count)
