"""Triangle-mesh primitives (boxes, cylinders, spheres, cones, quads) and a builder that tags
every triangle with its class, material and object instance.

World frame: z up, floor at z = 0. Vertex normals are stored so that the renderer can shade
curved surfaces smoothly (barycentric interpolation); flat parts repeat their face normal.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Mesh:
    """All triangles of a scene, with per-triangle tags."""

    vertices: np.ndarray  # (N, 3) float32
    normals: np.ndarray  # (N, 3) float32, unit vertex normals
    triangles: np.ndarray  # (M, 3) int32
    tri_class: np.ndarray  # (M,) uint8
    tri_material: np.ndarray  # (M,) int32
    tri_instance: np.ndarray  # (M,) int32


def _rot_z(yaw: float) -> np.ndarray:
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


# Unit box faces: (normal, the four corners counter-clockwise seen from outside).
_BOX_FACES = []
for _axis in range(3):
    for _sign in (-1.0, 1.0):
        _n = np.zeros(3)
        _n[_axis] = _sign
        _a, _b = [(i) for i in range(3) if i != _axis]
        _corner_list = []
        for _ua, _ub in ((-1, -1), (1, -1), (1, 1), (-1, 1)):
            _c = np.zeros(3)
            _c[_axis] = _sign
            _c[_a], _c[_b] = _ua, _ub
            _corner_list.append(_c)
        _corners = np.array(_corner_list) * 0.5
        # make the winding counter-clockwise around the outward normal
        if np.dot(np.cross(_corners[1] - _corners[0], _corners[2] - _corners[0]), _n) < 0:
            _corners = _corners[::-1]
        _BOX_FACES.append((_n, _corners))


class MeshBuilder:
    """Accumulates primitives; each call tags its triangles with (class, material, instance)."""

    def __init__(self) -> None:
        self._verts: list[np.ndarray] = []
        self._norms: list[np.ndarray] = []
        self._tris: list[np.ndarray] = []
        self._cls: list[np.ndarray] = []
        self._mat: list[np.ndarray] = []
        self._inst: list[np.ndarray] = []
        self._count = 0

    def add(self, verts, norms, tris, cls: int, material: int, instance: int) -> None:
        """Add raw triangles (vertex indices local to ``verts``)."""
        verts = np.asarray(verts, np.float64)
        norms = np.asarray(norms, np.float64)
        norms = norms / np.maximum(np.linalg.norm(norms, axis=1, keepdims=True), 1e-12)
        tris = np.asarray(tris, np.int64) + self._count
        self._verts.append(verts)
        self._norms.append(norms)
        self._tris.append(tris)
        m = len(tris)
        self._cls.append(np.full(m, cls, np.uint8))
        self._mat.append(np.full(m, material, np.int32))
        self._inst.append(np.full(m, instance, np.int32))
        self._count += len(verts)

    def box(
        self,
        center,
        size,
        yaw: float,
        cls: int,
        material: int,
        instance: int,
        skip_bottom: bool = False,
    ) -> None:
        """Axis-aligned box of ``size`` (sx, sy, sz) rotated by ``yaw`` about z."""
        rot = _rot_z(yaw)
        size = np.asarray(size, np.float64)
        center = np.asarray(center, np.float64)
        verts: list[np.ndarray] = []
        norms: list[np.ndarray] = []
        tris: list[np.ndarray] = []
        for n, corners in _BOX_FACES:
            if skip_bottom and n[2] < 0:
                continue
            base = len(verts) * 4
            verts.append(corners * size @ rot.T + center)
            norms.append(np.repeat((rot @ n)[None], 4, axis=0))
            tris.append(np.array([[0, 1, 2], [0, 2, 3]]) + base)
        self.add(
            np.concatenate(verts),
            np.concatenate(norms),
            np.concatenate(tris),
            cls,
            material,
            instance,
        )

    def quad(self, corners, cls: int, material: int, instance: int) -> None:
        """A planar quad from four corners in order (either winding)."""
        corners = np.asarray(corners, np.float64)
        n = np.cross(corners[1] - corners[0], corners[2] - corners[0])
        self.add(
            corners, np.repeat(n[None], 4, axis=0), [[0, 1, 2], [0, 2, 3]], cls, material, instance
        )

    def frustum(
        self,
        center_bottom,
        r_bottom: float,
        r_top: float,
        height: float,
        cls: int,
        material: int,
        instance: int,
        segments: int = 20,
        caps: bool = True,
    ) -> None:
        """Vertical cylinder (r_bottom == r_top) or cone frustum standing on ``center_bottom``."""
        c = np.asarray(center_bottom, np.float64)
        ang = np.linspace(0.0, 2 * np.pi, segments, endpoint=False)
        ca, sa = np.cos(ang), np.sin(ang)
        slope = (r_bottom - r_top) / max(height, 1e-9)
        ring_n = np.stack([ca, sa, np.full_like(ca, slope)], 1)
        bot = np.stack([c[0] + r_bottom * ca, c[1] + r_bottom * sa, np.full_like(ca, c[2])], 1)
        top = np.stack([c[0] + r_top * ca, c[1] + r_top * sa, np.full_like(ca, c[2] + height)], 1)
        i = np.arange(segments)
        j = (i + 1) % segments
        side = np.concatenate(
            [np.stack([i, j, segments + j], 1), np.stack([i, segments + j, segments + i], 1)]
        )
        self.add(
            np.concatenate([bot, top]),
            np.concatenate([ring_n, ring_n]),
            side,
            cls,
            material,
            instance,
        )
        if caps:
            ends = ((bot, c[2], -1.0, r_bottom), (top, c[2] + height, 1.0, r_top))
            for ring, z, sign, r in ends:
                if r <= 1e-6:
                    continue
                verts = np.concatenate([ring, [[c[0], c[1], z]]])
                norms = np.repeat([[0.0, 0.0, sign]], segments + 1, axis=0)
                fan = np.stack([i, j, np.full(segments, segments)], 1)
                self.add(verts, norms, fan, cls, material, instance)

    def sphere(
        self,
        center,
        radius: float,
        cls: int,
        material: int,
        instance: int,
        segments: int = 24,
        rings: int = 12,
    ) -> None:
        """UV sphere with smooth normals."""
        c = np.asarray(center, np.float64)
        theta = np.linspace(0.0, np.pi, rings + 1)
        phi = np.linspace(0.0, 2 * np.pi, segments, endpoint=False)
        st, ct = np.sin(theta)[:, None], np.cos(theta)[:, None]
        n = np.stack(
            [
                st * np.cos(phi)[None],
                st * np.sin(phi)[None],
                np.broadcast_to(ct, (rings + 1, segments)),
            ],
            -1,
        ).reshape(-1, 3)
        verts = c + radius * n
        r = np.arange(rings)[:, None]
        s = np.arange(segments)[None]
        a = r * segments + s
        b = r * segments + (s + 1) % segments
        a2, b2 = a + segments, b + segments
        tris = np.concatenate(
            [np.stack([a, a2, b2], -1).reshape(-1, 3), np.stack([a, b2, b], -1).reshape(-1, 3)]
        )
        self.add(verts, n, tris, cls, material, instance)

    def build(self) -> Mesh:
        """Concatenate everything added so far."""
        return Mesh(
            vertices=np.concatenate(self._verts).astype(np.float32),
            normals=np.concatenate(self._norms).astype(np.float32),
            triangles=np.concatenate(self._tris).astype(np.int32),
            tri_class=np.concatenate(self._cls),
            tri_material=np.concatenate(self._mat),
            tri_instance=np.concatenate(self._inst),
        )
