"""Headless ray casting of a ``Scene`` (open3d RaycastingScene, Embree on the CPU).

One primary ray per pixel gives exact depth (z along the optical axis), labels, surface
normals and material; colour is shaded from the interpolated normals with the room's lights
(ambient + diffuse + a little specular, shadows from the main light) and the procedural
textures. All per-pixel work is vectorised numpy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rgbd_seg_ros.data.synth.classes import IGNORE_INDEX
from rgbd_seg_ros.data.synth.scene import Scene


def intrinsics(width: int, height: int) -> np.ndarray:
    """Camera matrix of the simulated sensor at ``width`` x ``height`` (square pixels).

    The 640x480 sensor has a focal length of 580 px (about 58 x 45 degrees field of view);
    other sizes scale it with the width, principal point at the image centre.
    """
    f = 580.0 * width / 640.0
    return np.array([[f, 0.0, (width - 1) / 2.0], [0.0, f, (height - 1) / 2.0], [0.0, 0.0, 1.0]])


@dataclass
class RenderOutput:
    """Exact per-pixel render of one view (no sensor effects yet)."""

    depth_m: np.ndarray  # (H, W) float32, z along the optical axis, 0 where nothing was hit
    labels: np.ndarray  # (H, W) uint8
    radiance: np.ndarray  # (H, W, 3) float32 linear RGB reaching the camera
    albedo: np.ndarray  # (H, W) float32 luminance of the surface colour (IR reflectivity proxy)
    cos_incidence: np.ndarray  # (H, W) float32 |cos| of the view ray to the surface normal
    ir_dropout: np.ndarray  # (H, W) float32 material's extra chance of missing depth
    points: np.ndarray  # (H, W, 3) float32 world coordinates of the hits
    hit: np.ndarray  # (H, W) bool


class Renderer:
    """Ray caster for one scene; reusable for every frame of a sequence."""

    def __init__(self, scene: Scene, nthreads: int = 0) -> None:
        import open3d as o3d

        self._o3d = o3d
        self.scene = scene
        self.nthreads = int(nthreads)
        mesh = scene.mesh
        self._rs = o3d.t.geometry.RaycastingScene(nthreads=self.nthreads)
        # open3d's stubs drop the defaults of Tensor(ndarray, dtype=None, device=None)
        vertices = o3d.core.Tensor(mesh.vertices)  # type: ignore[call-overload]
        triangles = o3d.core.Tensor(mesh.triangles.astype(np.uint32))  # type: ignore[call-overload]
        self._rs.add_triangles(vertices, triangles)
        tex = scene.atlas.shape[1]
        if tex & (tex - 1):
            raise ValueError('texture size must be a power of two')
        self._tex = tex
        self._atlas = np.ascontiguousarray(scene.atlas.reshape(-1, 3), np.float32)
        self._tex_per_m = (tex / scene.mat_scale).astype(np.float32)
        self._tri_mat_base = mesh.tri_material.astype(np.int64) * tex * tex
        # triangles whose vertex normals differ from their face normal are shaded smoothly
        v = mesh.vertices[mesh.triangles].astype(np.float64)
        face = np.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0])
        face /= np.maximum(np.linalg.norm(face, axis=1, keepdims=True), 1e-12)
        vn = mesh.normals[mesh.triangles]
        self._smooth = np.any(np.abs(vn - face[:, None]).sum(-1) > 1e-3, axis=1)
        self._dirs_cache: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}

    def _camera_dirs(self, K: np.ndarray, width: int, height: int):
        """Per-pixel ray directions in the camera frame (z = 1) and their inverse lengths."""
        key = (width, height, *np.asarray(K, np.float64).ravel().tolist())
        cached = self._dirs_cache.get(key)
        if cached is None:
            u, v = np.meshgrid(
                np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64)
            )
            dirs = np.stack(
                [(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], -1
            )
            inv_len = (1.0 / np.linalg.norm(dirs, axis=-1)).astype(np.float32)
            cached = (dirs.astype(np.float32), inv_len)
            self._dirs_cache = {key: cached}
        return cached

    def occluded(self, origin: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """True where the segment from ``origin`` to each target (N, 3) is blocked on the way
        (the last centimetre before the target does not count)."""
        d = targets.astype(np.float32) - origin.astype(np.float32)[None]
        length = np.sqrt(np.einsum('ij,ij->i', d, d))
        d *= np.clip(1.0 - 0.01 / np.maximum(length, 1e-6), 0.0, 1.0)[:, None]
        rays = np.empty((len(d), 6), np.float32)
        rays[:, :3] = origin
        rays[:, 3:] = d
        occ = self._rs.test_occlusions(
            self._o3d.core.Tensor(rays),  # type: ignore[call-overload]  # as in __init__
            tnear=0.0,
            tfar=1.0,
            nthreads=self.nthreads,
        )
        return occ.numpy().astype(bool)

    def _shadow(self, px, py, pz, light: np.ndarray) -> np.ndarray:
        """True where the way from a surface point to the light is blocked."""
        rays = np.empty((len(px), 6), np.float32)
        rays[:, 0], rays[:, 1], rays[:, 2] = px, py, pz
        rays[:, 3], rays[:, 4], rays[:, 5] = light[0] - px, light[1] - py, light[2] - pz
        occ = self._rs.test_occlusions(
            self._o3d.core.Tensor(rays),  # type: ignore[call-overload]  # as in __init__
            tnear=0.0,
            tfar=0.999,
            nthreads=self.nthreads,
        )
        return occ.numpy().astype(bool)

    def render(self, pose: np.ndarray, K: np.ndarray, width: int, height: int) -> RenderOutput:
        """Render the view of camera ``pose`` (world-from-camera 4x4, optical frame)."""
        sc = self.scene
        rot, origin = pose[:3, :3], pose[:3, 3]
        dirs_cam, inv_len = self._camera_dirs(K, width, height)
        H, W = height, width
        rays = np.empty((H, W, 6), np.float32)
        rays[..., :3] = origin
        rays[..., 3:] = dirs_cam @ rot.T.astype(np.float32)  # camera z = 1 -> t_hit = depth
        res = {
            k: v.numpy()
            for k, v in self._rs.cast_rays(
                self._o3d.core.Tensor(rays),  # type: ignore[call-overload]  # as in __init__
                nthreads=self.nthreads,
            ).items()
        }
        t_all = res['t_hit'].reshape(-1)
        hit = np.isfinite(t_all)
        idx: slice | np.ndarray
        if hit.all():
            idx = slice(None)
            count = H * W
        else:
            idx = np.flatnonzero(hit)
            count = len(idx)
        f32 = np.float32
        t = t_all[idx]
        prim = res['primitive_ids'].reshape(-1)[idx].astype(np.int64)
        dflat = np.ascontiguousarray(rays[..., 3:].reshape(-1, 3)[idx].T)  # (3, N)
        il = inv_len.reshape(-1)[idx]
        dx, dy, dz = dflat[0] * il, dflat[1] * il, dflat[2] * il  # unit view rays
        o = origin.astype(f32)
        px, py, pz = o[0] + t * dflat[0], o[1] + t * dflat[1], o[2] + t * dflat[2]
        gx, gy, gz = np.ascontiguousarray(res['primitive_normals'].reshape(-1, 3)[idx].T)
        cos_v = gx * dx + gy * dy + gz * dz
        sign = np.where(cos_v > 0, f32(-1), f32(1))
        gx, gy, gz = gx * sign, gy * sign, gz * sign  # face the camera
        nx, ny, nz = gx, gy, gz
        smooth = self._smooth[prim]
        if smooth.any():
            sel = np.flatnonzero(smooth)
            tri = sc.mesh.triangles[prim[sel]]
            bary = res['primitive_uvs'].reshape(-1, 2)[idx][sel]
            vn = sc.mesh.normals
            w0 = (1.0 - bary[:, 0] - bary[:, 1])[:, None]
            n_s = w0 * vn[tri[:, 0]] + bary[:, :1] * vn[tri[:, 1]] + bary[:, 1:] * vn[tri[:, 2]]
            n_s /= np.maximum(np.linalg.norm(n_s, axis=1, keepdims=True), 1e-9)
            n_s *= sign[sel, None]
            nx, ny, nz = nx.copy(), ny.copy(), nz.copy()
            nx[sel], ny[sel], nz[sel] = n_s[:, 0], n_s[:, 1], n_s[:, 2]

        mat = sc.mesh.tri_material[prim]
        # texture: planar projection on the dominant axis of the face normal
        ax_, ay_, az_ = np.abs(gx), np.abs(gy), np.abs(gz)
        use_x = (ax_ >= ay_) & (ax_ >= az_)
        use_z = ~use_x & (az_ >= ay_)
        a_coord = np.where(use_x, py, px)
        b_coord = np.where(use_z, py, pz)
        tpm = self._tex_per_m[mat]
        T = self._tex
        iu = ((a_coord + f32(512.0)) * tpm).astype(np.int64) & (T - 1)
        iv = ((b_coord + f32(512.0)) * tpm).astype(np.int64) & (T - 1)
        alb = self._atlas[self._tri_mat_base[prim] + iv * T + iu]

        light = np.full(count, sc.ambient, f32) * (f32(0.8) + f32(0.2) * nz)
        spec = None
        for k, lt in enumerate(sc.lights):
            lx, ly, lz = (
                f32(lt.position[0]) - px,
                f32(lt.position[1]) - py,
                f32(lt.position[2]) - pz,
            )
            dist2 = lx * lx + ly * ly + lz * lz
            inv = 1.0 / np.sqrt(dist2)
            ndl = np.maximum((nx * lx + ny * ly + nz * lz) * inv, f32(0.0))
            irr = f32(lt.intensity) * ndl / (dist2 + f32(0.25))
            if lt.shadows:
                lit = np.flatnonzero(ndl > 0)
                if len(lit):
                    off = f32(2e-3)
                    blocked = self._shadow(
                        px[lit] + gx[lit] * off,
                        py[lit] + gy[lit] * off,
                        pz[lit] + gz[lit] * off,
                        lt.position,
                    )
                    irr[lit[blocked]] = 0.0
            light += irr
            if k == 0:
                hx, hy, hz = lx * inv - dx, ly * inv - dy, lz * inv - dz
                hn = 1.0 / np.maximum(np.sqrt(hx * hx + hy * hy + hz * hz), f32(1e-9))
                nh = np.maximum((nx * hx + ny * hy + nz * hz) * hn, f32(0.0))
                nh2 = nh * nh
                nh4 = nh2 * nh2
                nh8 = nh4 * nh4
                spec = (
                    sc.mat_specular[mat]
                    * f32(lt.intensity)
                    / (dist2 + f32(0.25))
                    * (nh8 * nh8 * nh8)
                    * (ndl > 0)
                )
        rad = alb * light[:, None]
        if spec is not None:
            rad += spec[:, None]
        emit = sc.mat_emissive[mat]
        glow = np.flatnonzero(emit > 0)
        if len(glow):
            rad[glow] = alb[glow] * emit[glow, None]
        rad *= f32(sc.exposure)

        def full(values: np.ndarray, fill, dtype) -> np.ndarray:
            if count == H * W:
                return values.astype(dtype, copy=False).reshape(H, W, *values.shape[1:])
            out = np.full((H * W, *values.shape[1:]), fill, dtype)
            out[idx] = values
            return out.reshape(H, W, *values.shape[1:])

        return RenderOutput(
            depth_m=full(t, 0.0, f32),
            labels=full(sc.mesh.tri_class[prim], IGNORE_INDEX, np.uint8),
            radiance=full(rad, 0.0, f32),
            albedo=full(alb @ np.array([0.2126, 0.7152, 0.0722], f32), 0.0, f32),
            cos_incidence=full(np.abs(cos_v), 0.0, f32),
            ir_dropout=full(sc.mat_ir_dropout[mat], 0.0, f32),
            points=full(np.stack([px, py, pz], 1), 0.0, f32),
            hit=hit.reshape(H, W),
        )
